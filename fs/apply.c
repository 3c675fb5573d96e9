/* The apply step: the only code that changes a node's cache, shared by the
 * master (live), slaves (records received) and recovery (replay).
 *
 * Rules that make it safe to run on records from anywhere:
 *  - A path is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 *    RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no component may be a symlink
 *    and nothing outside the data directory can be reached. The last component
 *    is acted on with *at() calls that never follow it.
 *  - Every effect of one record becomes visible in one step: a new file is
 *    made as an O_TMPFILE in its directory, other new objects in STORE/staging;
 *    owner, mode and times are set, then it gets its name with linkat() or
 *    renameat2(RENAME_NOREPLACE). A crash mid-record leaves either the old
 *    tree or the new one, never a root-owned half-made file.
 *  - Records carry every value the outcome depends on (owner, mode, offsets
 *    after O_APPEND resolution, times), so applying the same records in the
 *    same order gives the same tree on every node, mtimes included: content
 *    changes set the file's mtime, name changes set the parents' mtimes, to the
 *    record's time.
 */
#include "fs.h"
#include "../utils/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define RESOLVE_STRICT (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | \
			RESOLVE_NO_XDEV)

/* Where openat2 is missing (kernels before 5.6, valgrind before 3.20) the
 * same resolution, one component at a time: record paths are relative and
 * have no "." or ".." (path_check), so refusing a symlink or another
 * filesystem at every step is what RESOLVE_STRICT does. */
static int open_beneath_by_steps(int datafd, const char *path, int flags)
{
	char comp[NAME_MAX + 1];
	struct stat top, st;
	int dir = datafd, fd;

	if (fstat(datafd, &top) < 0)
		return -errno;
	for (;;) {
		const char *slash = strchr(path, '/');
		size_t n = slash ? (size_t)(slash - path) : strlen(path);
		if (n > NAME_MAX) {
			fd = -ENAMETOOLONG;
			break;
		}
		memcpy(comp, path, n);
		comp[n] = '\0';
		fd = openat(dir, comp, slash ? O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
					     : flags | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			fd = -errno;
			break;
		}
		if (fstat(fd, &st) < 0 || st.st_dev != top.st_dev) {
			close(fd);
			fd = -EXDEV;
			break;
		}
		if (!slash)
			break;
		if (dir != datafd)
			close(dir);
		dir = fd;
		path = slash + 1;
	}
	if (dir != datafd)
		close(dir);
	return fd;
}

int apply_open_beneath(const struct apply_ctx *ac, const char *path, int flags)
{
	static _Atomic int no_openat2;
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_STRICT };
	long fd;

	if (!*path)
		path = ".";
	if (!atomic_load_explicit(&no_openat2, memory_order_relaxed)) {
		fd = syscall(SYS_openat2, ac->datafd, path, &how, sizeof(how));
		if (fd >= 0 || errno != ENOSYS)
			return fd < 0 ? -errno : (int)fd;
		atomic_store(&no_openat2, 1);
	}
	if (!strcmp(path, ".")) {
		int d = openat(ac->datafd, ".", flags | O_CLOEXEC);
		return d < 0 ? -errno : d;
	}
	return open_beneath_by_steps(ac->datafd, path, flags);
}

/* The parent directory of path, opened for *at() calls; *name gets the last
 * component. Returns the fd (ac->datafd itself for top-level names, which
 * the caller must not close: see put_parent) or -errno. */
static int get_parent(const struct apply_ctx *ac, const char *path, char *buf, const char **name)
{
	*name = path_split(path, buf, PATH_MAX);
	if (!buf[0])
		return ac->datafd;
	return apply_open_beneath(ac, buf, O_RDONLY | O_DIRECTORY);
}

static void put_parent(const struct apply_ctx *ac, int fd)
{
	if (fd >= 0 && fd != ac->datafd)
		close(fd);
}

static struct timespec rec_time(const struct rec *r)
{
	return (struct timespec){ .tv_sec = (time_t)(r->time_ns / 1000000000ull),
				  .tv_nsec = (long)(r->time_ns % 1000000000ull) };
}

static void touch_mtime_fd(int fd, const struct rec *r)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, rec_time(r) };

	futimens(fd, ts);
}

/* --------------------------------------------------------------------------
 * New objects: built in staging, then moved into place atomically.
 * ------------------------------------------------------------------------ */

/* Owner, set-id bits (chown clears them) and times of a new regular file. */
static int finish_new_file(int fd, const struct rec *r, const struct timespec ts[2])
{
	if (fchown(fd, r->uid, r->gid) < 0 || ((r->mode & 06000) && fchmod(fd, r->mode & 07777) < 0) ||
	    futimens(fd, ts) < 0)
		return -errno;
	return 0;
}

static int apply_new_object(const struct apply_ctx *ac, const struct rec *r, int *out_fd)
{
	char parent[PATH_MAX], tmp[32];
	struct timespec t = rec_time(r), ts[2] = { t, t };
	const char *name;
	int pfd, fd = -1, rc = 0;

	if (!*r->path)
		return -EEXIST; /* the root always exists */
	pfd = get_parent(ac, r->path, parent, &name);
	if (pfd < 0)
		return pfd;
	snprintf(tmp, sizeof(tmp), "n%" PRIu64, r->lsn);
	unlinkat(ac->stagingfd, tmp, 0); /* leftover of an interrupted attempt */
	unlinkat(ac->stagingfd, tmp, AT_REMOVEDIR);

	if (r->op == REC_CREATE) {
		/* Unnamed in the target directory (ext4 places the inode near its
		 * directory), made complete, then given its name in one step. */
		fd = openat(pfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, r->mode & 07777);
		if (fd >= 0) {
			rc = finish_new_file(fd, r, ts);
			if (rc == 0 && linkat(fd, "", pfd, name, AT_EMPTY_PATH) < 0)
				rc = -errno;
			if (rc < 0)
				goto out;
			touch_mtime_fd(pfd, r);
			if (out_fd) {
				*out_fd = fd;
				fd = -1;
			}
			goto out;
		}
		if (errno != EOPNOTSUPP && errno != EISDIR) {
			rc = -errno;
			goto out;
		}
		/* No O_TMPFILE here: build it in staging instead. */
	}
	switch (r->op) {
	case REC_CREATE:
		fd = openat(ac->stagingfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			    r->mode & 07777);
		if (fd < 0) {
			rc = -errno;
			goto out;
		}
		rc = finish_new_file(fd, r, ts);
		break;
	case REC_MKDIR:
	case REC_MKNOD:
		if (r->op == REC_MKDIR)
			rc = mkdirat(ac->stagingfd, tmp, r->mode & 07777);
		else
			rc = mknodat(ac->stagingfd, tmp, r->mode, (dev_t)r->rdev);
		if (rc < 0 || fchownat(ac->stagingfd, tmp, r->uid, r->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(ac->stagingfd, tmp, r->mode & 07777, 0) < 0 ||
		    utimensat(ac->stagingfd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
		break;
	case REC_SYMLINK:
		if (!r->path2) {
			rc = -EINVAL;
			goto out;
		}
		if (symlinkat(r->path2, ac->stagingfd, tmp) < 0 ||
		    fchownat(ac->stagingfd, tmp, r->uid, r->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    utimensat(ac->stagingfd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
		break;
	default:
		rc = -EINVAL;
		goto out;
	}
	if (rc == 0 && renameat2(ac->stagingfd, tmp, pfd, name, RENAME_NOREPLACE) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(ac->stagingfd, tmp, r->op == REC_MKDIR ? AT_REMOVEDIR : 0);
		goto out;
	}
	touch_mtime_fd(pfd, r);
	if (out_fd && fd >= 0) {
		*out_fd = fd;
		fd = -1;
	}
out:
	if (fd >= 0)
		close(fd);
	put_parent(ac, pfd);
	return rc;
}

/* --------------------------------------------------------------------------
 * Name changes
 * ------------------------------------------------------------------------ */

/* A slave applying a record whose names the kernel holds open files under
 * (fs/held.c) sets this thread's mount root: the unlink or rename itself then
 * goes through the mount, so libfuse and the kernel move their nodes with it
 * and an open file keeps its own inode. Everything else of the record (the
 * parents' mtimes) is still done here, on the cache. */
static __thread int apply_mntfd = -1;

void apply_through_mount(int mntfd)
{
	apply_mntfd = mntfd;
}

/* unlinkat() or renameat2() of names under the directory dirfd, each name's
 * parent resolved beneath it like any record path. */
static int names_change(int dirfd, int op, const char *from, const char *to, unsigned flags)
{
	const struct apply_ctx at = { .datafd = dirfd, .stagingfd = -1 };
	char p1[PATH_MAX], p2[PATH_MAX];
	const char *n1, *n2 = NULL;
	int fd1, fd2 = -1, rc = 0;

	fd1 = get_parent(&at, from, p1, &n1);
	if (fd1 < 0)
		return fd1;
	if (to && (fd2 = get_parent(&at, to, p2, &n2)) < 0) {
		put_parent(&at, fd1);
		return fd2;
	}
	if (op == REC_UNLINK || op == REC_RMDIR)
		rc = unlinkat(fd1, n1, op == REC_RMDIR ? AT_REMOVEDIR : 0);
	else
		rc = renameat2(fd1, n1, fd2, n2, flags);
	if (rc < 0)
		rc = -errno;
	put_parent(&at, fd2);
	put_parent(&at, fd1);
	return rc;
}

/* Through the mount; where the mount cannot do it (a FUSE connection gone,
 * a refusal the cache would not make) on the cache itself, whose answer is
 * the one every node gives. A rename either happened or did not. */
static int names_change_mounted(int datafd, int op, const char *from, const char *to,
				unsigned flags)
{
	int rc = names_change(apply_mntfd, op, from, to, flags);

	if (rc < 0 && rc != -ENOENT && rc != -EEXIST && rc != -ENOTEMPTY && rc != -ENOTDIR &&
	    rc != -EISDIR && rc != -EINVAL) {
		log_warn("%s of %s through the mount failed (%s): applied to the cache directly",
			 rec_op_name(op), from, strerror(-rc));
		rc = names_change(datafd, op, from, to, flags);
	}
	return rc;
}

int apply_name_move_out(const struct apply_ctx *ac, const char *from, int dirfd,
			const char *name)
{
	char parent[PATH_MAX];
	const char *n;
	int pfd, rc;

	if (!*from)
		return -EBUSY;
	if ((pfd = get_parent(ac, from, parent, &n)) < 0)
		return pfd;
	rc = renameat(pfd, n, dirfd, name) < 0 ? -errno : 0;
	put_parent(ac, pfd);
	return rc;
}

int apply_names_direct(const struct apply_ctx *ac, int op, const char *from, const char *to,
		       unsigned flags)
{
	if (!*from || (to && !*to))
		return -EBUSY;
	return names_change(ac->datafd, op, from, to, flags);
}

static int apply_remove(const struct apply_ctx *ac, const struct rec *r)
{
	char parent[PATH_MAX];
	const char *name;
	int pfd, rc = 0;

	if (!*r->path)
		return -EBUSY;
	pfd = get_parent(ac, r->path, parent, &name);
	if (pfd < 0)
		return pfd;
	if (apply_mntfd >= 0 && r->op == REC_UNLINK)
		rc = names_change_mounted(ac->datafd, r->op, r->path, NULL, 0);
	else if (unlinkat(pfd, name, r->op == REC_RMDIR ? AT_REMOVEDIR : 0) < 0)
		rc = -errno;
	if (rc == 0)
		touch_mtime_fd(pfd, r);
	put_parent(ac, pfd);
	return rc;
}

static int apply_two_names(const struct apply_ctx *ac, const struct rec *r)
{
	char p1[PATH_MAX], p2[PATH_MAX];
	const char *n1, *n2;
	int fd1, fd2, rc = 0;

	if (!r->path2 || !*r->path || !*r->path2)
		return r->path2 ? -EBUSY : -EINVAL;
	fd1 = get_parent(ac, r->path, p1, &n1);
	if (fd1 < 0)
		return fd1;
	fd2 = get_parent(ac, r->path2, p2, &n2);
	if (fd2 < 0) {
		put_parent(ac, fd1);
		return fd2;
	}
	if (r->op == REC_LINK)
		rc = linkat(fd1, n1, fd2, n2, 0) < 0 ? -errno : 0;
	else if (apply_mntfd >= 0)
		rc = names_change_mounted(ac->datafd, r->op, r->path, r->path2, r->arg);
	else
		rc = renameat2(fd1, n1, fd2, n2, r->arg) < 0 ? -errno : 0;
	if (rc == 0) {
		if (r->op == REC_RENAME)
			touch_mtime_fd(fd1, r);
		touch_mtime_fd(fd2, r);
	}
	put_parent(ac, fd2);
	put_parent(ac, fd1);
	return rc;
}

/* --------------------------------------------------------------------------
 * Content and attributes
 * ------------------------------------------------------------------------ */

static int open_for_content(const struct apply_ctx *ac, const struct rec *r, int hint_fd)
{
	struct stat st;
	int fd;

	if (hint_fd >= 0)
		return hint_fd;
	fd = apply_open_beneath(ac, r->path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK);
	if (fd == -EISDIR)
		return fd;
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

static int apply_content(const struct apply_ctx *ac, const struct rec *r, int hint_fd)
{
	int fd = open_for_content(ac, r, hint_fd), rc = 0;

	if (fd < 0)
		return fd;
	switch (r->op) {
	case REC_WRITE:
		if ((rc = fault_check("apply:write")) == 0)
			rc = io_pwrite_all(fd, r->data, r->data_len, (off_t)r->off);
		break;
	case REC_TRUNCATE:
		rc = ftruncate(fd, (off_t)r->off) < 0 ? -errno : 0;
		break;
	case REC_FALLOCATE:
		rc = fallocate(fd, (int)r->arg, (off_t)r->off, (off_t)r->len) < 0 ? -errno : 0;
		break;
	}
	if (rc == 0)
		touch_mtime_fd(fd, r);
	if (fd != hint_fd)
		close(fd);
	return rc;
}

/* An O_PATH handle on the record's object itself, symlinks not followed. */
static int open_object(const struct apply_ctx *ac, const char *path)
{
	return apply_open_beneath(ac, path, O_PATH | O_NOFOLLOW);
}

static int apply_attr(const struct apply_ctx *ac, const struct rec *r)
{
	char parent[PATH_MAX], proc[64];
	const char *name;
	struct stat st;
	int pfd, fd = -1, rc = 0, is_root = !*r->path;
	struct timespec ts[2] = {
		{ .tv_sec = (time_t)r->atime_sec, .tv_nsec = (long)r->atime_nsec },
		{ .tv_sec = (time_t)r->mtime_sec, .tv_nsec = (long)r->mtime_nsec },
	};

	pfd = is_root ? ac->datafd : get_parent(ac, r->path, parent, &name);
	if (pfd < 0)
		return pfd;
	if (is_root)
		name = "";
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW | (is_root ? AT_EMPTY_PATH : 0)) < 0) {
		rc = -errno;
		goto out;
	}
	/* The last component is known not to be a symlink below, and nothing but
	 * this thread changes the cache, so following it cannot leave the tree. */
	switch (r->op) {
	case REC_CHMOD:
		if (S_ISLNK(st.st_mode))
			rc = -EOPNOTSUPP;
		else if (fchmodat(pfd, is_root ? "." : name, r->mode & 07777, 0) < 0)
			rc = -errno;
		break;
	case REC_CHOWN:
		if (fchownat(pfd, name, r->uid, r->gid,
			     is_root ? AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
		break;
	case REC_UTIMENS:
		if (utimensat(pfd, is_root ? "." : name, ts, AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
		break;
	case REC_SETXATTR:
	case REC_REMOVEXATTR:
		if (!r->name) {
			rc = -EINVAL;
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			rc = -EPERM; /* ext4 allows no user xattrs on symlinks either */
			break;
		}
		fd = openat(pfd, is_root ? "." : name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (r->op == REC_SETXATTR)
			rc = setxattr(proc, r->name, r->data, r->data_len, (int)r->arg);
		else
			rc = removexattr(proc, r->name);
		if (rc < 0)
			rc = -errno;
		break;
	}
out:
	if (fd >= 0)
		close(fd);
	put_parent(ac, pfd);
	return rc;
}

int apply_record(const struct apply_ctx *ac, const struct rec *r, int hint_fd, int *out_fd)
{
	int rc = fault_check("apply:record");

	if (rc < 0)
		return rc;
	/* Decoded records were checked already; local ones are checked here. */
	if (path_check(r->path, strlen(r->path)) < 0)
		return -EINVAL;
	if (r->path2 && r->op != REC_SYMLINK && path_check(r->path2, strlen(r->path2)) < 0)
		return -EINVAL;

	switch (r->op) {
	case REC_NOOP:
		return 0;
	case REC_CREATE:
	case REC_MKNOD:
	case REC_MKDIR:
	case REC_SYMLINK:
		return apply_new_object(ac, r, out_fd);
	case REC_UNLINK:
	case REC_RMDIR:
		return apply_remove(ac, r);
	case REC_LINK:
	case REC_RENAME:
		return apply_two_names(ac, r);
	case REC_WRITE:
	case REC_TRUNCATE:
	case REC_FALLOCATE:
		return apply_content(ac, r, hint_fd);
	case REC_CHMOD:
	case REC_CHOWN:
	case REC_UTIMENS:
	case REC_SETXATTR:
	case REC_REMOVEXATTR:
		return apply_attr(ac, r);
	default:
		return -EINVAL;
	}
}

void apply_fdcache_init(struct apply_fdcache *fc)
{
	memset(fc, 0, sizeof(*fc));
	for (int i = 0; i < APPLY_FDCACHE_SLOTS; i++)
		fc->fd[i] = -1;
}

void apply_fdcache_clear(struct apply_fdcache *fc)
{
	for (int i = 0; i < APPLY_FDCACHE_SLOTS; i++) {
		if (fc->fd[i] >= 0)
			close(fc->fd[i]);
		free(fc->path[i]);
		fc->fd[i] = -1;
		fc->path[i] = NULL;
	}
}

static unsigned fdcache_slot(const char *path)
{
	return (unsigned)(hash64(path, strlen(path), 0) % APPLY_FDCACHE_SLOTS);
}

/* Takes ownership of fd. */
static int fdcache_put(struct apply_fdcache *fc, const char *path, int fd)
{
	unsigned slot = fdcache_slot(path);

	if (fc->fd[slot] >= 0)
		close(fc->fd[slot]);
	free(fc->path[slot]);
	fc->path[slot] = strdup(path);
	if (!fc->path[slot]) {
		close(fd);
		fc->fd[slot] = -1;
		return -ENOMEM;
	}
	fc->fd[slot] = fd;
	return fd;
}

static int fdcache_get(const struct apply_ctx *ac, struct apply_fdcache *fc, const char *path)
{
	unsigned slot = fdcache_slot(path);
	struct stat st;
	int fd;

	if (fc->fd[slot] >= 0 && !strcmp(fc->path[slot], path))
		return fc->fd[slot];
	fd = apply_open_beneath(ac, path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fdcache_put(fc, path, fd);
}

int apply_record_cached(const struct apply_ctx *ac, struct apply_fdcache *fc,
			const struct rec *r)
{
	int fd;

	switch (r->op) {
	case REC_WRITE:
	case REC_TRUNCATE:
	case REC_FALLOCATE:
		fd = fdcache_get(ac, fc, r->path);
		if (fd < 0)
			return fd;
		return apply_record(ac, r, fd, NULL);
	case REC_CREATE: {
		/* The new file's fd serves the writes that usually follow. */
		int rc = apply_record(ac, r, -1, &fd);
		if (rc == 0 && fdcache_put(fc, r->path, fd) < 0)
			rc = 0; /* only a cache miss later */
		return rc;
	}
	case REC_UNLINK:
	case REC_RMDIR:
	case REC_RENAME:
		/* These change what a name refers to. */
		apply_fdcache_clear(fc);
		return apply_record(ac, r, -1, NULL);
	default:
		/* New names, attributes: no cached name changes meaning. */
		return apply_record(ac, r, -1, NULL);
	}
}

int apply_error_is_deterministic(int err)
{
	switch (-err) {
	case ENOSPC:
	case EDQUOT:
	case EIO:
	case ENOMEM:
	case EROFS:
	case EBADF:
	case EMFILE:
	case ENFILE:
	case EINTR:
	case EAGAIN:
		return 0;
	default:
		return 1;
	}
}

/* --------------------------------------------------------------------------
 * Operations that are not idempotent
 * ------------------------------------------------------------------------ */

static int is_shift(const struct rec *r)
{
	return r->op == REC_FALLOCATE &&
	       (r->arg & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE));
}

static uint64_t ino_at(const struct apply_ctx *ac, const char *path)
{
	struct stat st;
	int fd = open_object(ac, path);
	uint64_t ino = 0;

	if (fd >= 0) {
		if (fstat(fd, &st) == 0)
			ino = st.st_ino;
		close(fd);
	}
	return ino;
}

void apply_capture(const struct apply_ctx *ac, const struct rec *r, uint64_t aux[4])
{
	struct stat st;
	int fd;

	aux[0] = aux[1] = aux[2] = aux[3] = 0;
	if (r->op == REC_RENAME && (r->arg & RENAME_EXCHANGE) && r->path2) {
		aux[0] = 1;
		aux[1] = ino_at(ac, r->path);
		aux[2] = ino_at(ac, r->path2);
	} else if (is_shift(r)) {
		fd = open_object(ac, r->path);
		if (fd >= 0) {
			if (fstat(fd, &st) == 0) {
				aux[0] = 2;
				aux[1] = (uint64_t)st.st_size;
			}
			close(fd);
		}
	}
}

int apply_already_done(const struct apply_ctx *ac, const struct rec *r, const uint64_t aux[4])
{
	struct stat st;
	int fd, done = 0;

	if (aux[0] == 1 && r->op == REC_RENAME) {
		/* Exchanged iff the names now hold each other's inodes. */
		return aux[1] && aux[2] && aux[1] != aux[2] && ino_at(ac, r->path) == aux[2] &&
		       ino_at(ac, r->path2) == aux[1];
	}
	if (aux[0] == 2 && is_shift(r)) {
		fd = open_object(ac, r->path);
		if (fd < 0)
			return 0;
		if (fstat(fd, &st) == 0) {
			uint64_t want = (r->arg & FALLOC_FL_COLLAPSE_RANGE) ? aux[1] - r->len
									    : aux[1] + r->len;
			done = (uint64_t)st.st_size == want;
		}
		close(fd);
	}
	return done;
}
