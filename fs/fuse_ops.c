/* The FUSE operations. Reads go straight to the cache; every mutation is
 * turned into one record and handed to commit_op(), which logs it and then
 * applies it (commit.c). The kernel checks permissions (default_permissions)
 * against the attributes returned here; the daemon acts as root on the cache
 * and records the caller's uid/gid on what it creates.
 *
 * libfuse's high-level API hands each operation a path that stays valid for
 * the operation's duration (it locks the path against concurrent renames),
 * which is what makes path-addressed records correct.
 */
#include "fuse_priv.h"
#include "../replicator/replicator.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

struct fs_file {
	int fd;           /* -1 for the control file */
	int append;
	ino_t ino;        /* counted open in held.c when noted */
	int noted;
	char *text;       /* the control file's contents, fixed at open */
	size_t text_len;
};

struct fs_dir {
	DIR *dp;
	struct dirent *entry;
	off_t offset;
};

static struct fs_ctx *ctx(void)
{
	return fuse_get_context()->private_data;
}

static struct fs_file *fh(const struct fuse_file_info *fi)
{
	return (struct fs_file *)(uintptr_t)fi->fh;
}

/* Relative path for reads at the data directory ("." for the root). */
static const char *rel_at(const char *path)
{
	const char *r = path_rel(path);

	return *r ? r : ".";
}

/* The control file MNT/.replfs tells applications the node's role and its
 * master (LiteFS's .primary does this job there). It is not in the data
 * directory: looked up by name, left out of listings, never changed. */
#define CONTROL_NAME ".replfs"

static int is_control(const char *path)
{
	return !strcmp(path, "/" CONTROL_NAME);
}

static int control_text(char *buf, size_t len)
{
	struct fs_ctx *c = ctx();

	if (c->repl)
		return repl_role_text(c->repl, c->opts->read_only, buf, len);
	return snprintf(buf, len, "role standalone\nepoch %llu\nlsn %llu\nmaster -\nwritable %s\n",
			(unsigned long long)c->st->epoch,
			(unsigned long long)commit_last_lsn(c->commit),
			atomic_load(&c->readonly) || c->opts->read_only ? "no" : "yes");
}

static int control_getattr(struct stat *st)
{
	char text[1024];
	int n = control_text(text, sizeof(text));

	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = n > 0 ? n : 0;
	clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	st->st_atim = st->st_ctim = st->st_mtim;
	return 0;
}

static int control_open(struct fuse_file_info *fi)
{
	struct fs_file *f;
	char text[1024];
	int n;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EPERM;
	n = control_text(text, sizeof(text));
	if (n < 0 || !(f = calloc(1, sizeof(*f))))
		return -ENOMEM;
	f->fd = -1;
	f->text_len = (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
	if (!(f->text = malloc(f->text_len + 1))) {
		free(f);
		return -ENOMEM;
	}
	memcpy(f->text, text, f->text_len);
	fi->fh = (uintptr_t)f;
	fi->direct_io = 1; /* its size changes with every open */
	return 0;
}

/* Every mutation goes through here: refused on a slave, and in strict sync
 * mode held until a slave has the record. */
static int commit(struct rec *r, int hint_fd, int *out_fd)
{
	struct fs_ctx *c = ctx();
	int rc;

	if (!strcmp(r->path, CONTROL_NAME) ||
	    ((r->op == REC_RENAME || r->op == REC_LINK) && !strcmp(r->path2, CONTROL_NAME)))
		return -EPERM;
	if (atomic_load(&c->readonly))
		return -EROFS;
	rc = commit_op(c->commit, r, hint_fd, out_fd);
	if (rc == 0 && c->repl && repl_strict(c->repl))
		rc = repl_wait_replicated(c->repl, r->lsn);
	return rc;
}

/* A slave's reads exclude its apply step (fuse_priv.h). */
static int read_begin(void)
{
	struct fs_ctx *c = ctx();

	if (!c->apply_lock || !atomic_load(&c->guard_reads))
		return 0;
	pthread_rwlock_rdlock(c->apply_lock);
	return 1;
}

static void read_end(int locked)
{
	if (locked)
		pthread_rwlock_unlock(ctx()->apply_lock);
}

/* ---------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------- */

static int getattr_unguarded(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	int rc;

	char held[64];

	if (fi)
		rc = fstat(fh(fi)->fd, st);
	else if (held_find(path_rel(path), held, sizeof(held)))
		rc = fstatat(ctx()->st->stagingfd, held, st, AT_SYMLINK_NOFOLLOW);
	else
		rc = fstatat(ctx()->datafd, rel_at(path), st, AT_SYMLINK_NOFOLLOW);
	if (rc < 0)
		return -errno;
	if (st->st_nlink > 1 && !S_ISDIR(st->st_mode)) {
		/* A snapshot being sent to a slave holds extra links to files. */
		unsigned extra = repl_snapshot_links(ctx()->repl, st->st_ino);
		if (extra && st->st_nlink > extra)
			st->st_nlink -= extra;
		if (st->st_nlink > 1)
			links_note(st->st_ino, path);
	}
	return 0;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	int rc;

	if (is_control(path))
		return control_getattr(st);

	int guarded = read_begin();
	rc = getattr_unguarded(path, st, fi);
	read_end(guarded);
	return rc;
}

/* The object at path (or fd) changed: other names of it must not show the
 * kernel's cached attributes (links.c). */
static void after_change(const char *path, int fd)
{
	struct stat st;

	if (!links_active())
		return;
	if ((fd >= 0 ? fstat(fd, &st)
		     : fstatat(ctx()->datafd, rel_at(path), &st, AT_SYMLINK_NOFOLLOW)) == 0 &&
	    !S_ISDIR(st.st_mode) && st.st_nlink > 1)
		links_changed(fuse_get_context()->fuse, st.st_ino, path);
}

/* Inode and link count of what path names now (0 when nothing). */
static ino_t multi_linked(const char *path)
{
	struct stat st;

	if (fstatat(ctx()->datafd, rel_at(path), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !S_ISDIR(st.st_mode) && st.st_nlink > 1)
		return st.st_ino;
	return 0;
}

static int readlink_unguarded(const char *path, char *buf, size_t size)
{
	ssize_t n = readlinkat(ctx()->datafd, rel_at(path), buf, size - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int fs_readlink(const char *path, char *buf, size_t size)
{
	if (is_control(path))
		return -EINVAL;
	int rc;

	int guarded = read_begin();
	rc = readlink_unguarded(path, buf, size);
	read_end(guarded);
	return rc;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct fs_dir *d = calloc(1, sizeof(*d));
	int fd, rc;

	if (!d)
		return -ENOMEM;
	if (is_control(path)) {
		free(d);
		return -ENOTDIR;
	}
	fd = openat(ctx()->datafd, rel_at(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		free(d);
		return rc;
	}
	fi->fh = (uintptr_t)d;
	return 0;
}

static int readdir_unguarded(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct stat st;
		enum fuse_fill_dir_flags fill = 0;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				if (errno)
					return -errno;
				break;
			}
		}
		off_t next = telldir(d->dp);
		if (path[1] == '\0' && !strcmp(d->entry->d_name, CONTROL_NAME)) {
			d->entry = NULL; /* shadowed by the control file */
			d->offset = next;
			continue;
		}
		if ((flags & FUSE_READDIR_PLUS) &&
		    fstatat(dirfd(d->dp), d->entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			fill = FUSE_FILL_DIR_PLUS;
			unsigned extra = S_ISREG(st.st_mode)
						 ? repl_snapshot_links(ctx()->repl, st.st_ino) : 0;
			if (extra && st.st_nlink > extra)
				st.st_nlink -= extra;
		} else {
			memset(&st, 0, sizeof(st));
			st.st_ino = d->entry->d_ino;
			st.st_mode = (mode_t)(d->entry->d_type << 12);
		}
		if (filler(buf, d->entry->d_name, &st, next, fill))
			break;
		d->entry = NULL;
		d->offset = next;
	}
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	int rc;

	int guarded = read_begin();
	rc = readdir_unguarded(path, buf, filler, offset, fi, flags);
	read_end(guarded);
	return rc;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	(void)path;
	closedir(d->dp);
	free(d);
	return 0;
}

static int open_cache_file(const char *path, int flags, struct fuse_file_info *fi)
{
	struct fs_file *f = calloc(1, sizeof(*f));
	int acc = flags & O_ACCMODE;
	int fd;

	if (!f)
		return -ENOMEM;
	char held[64];
	int held_fd = held_find(path_rel(path), held, sizeof(held)) ? ctx()->st->stagingfd : -1;
	/* On a slave the open and its count are one step against the apply
	 * step: held.c decides how to apply a name change from the count. */
	int guarded = read_begin();
	/* Written files are opened read-write so the same fd serves the apply
	 * step; O_APPEND is resolved by commit (offsets are logged), O_DIRECT has
	 * no meaning for the cache copy. */
	fd = openat(held_fd >= 0 ? held_fd : ctx()->datafd, held_fd >= 0 ? held : rel_at(path),
		    (acc == O_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int rc = -errno;
		read_end(guarded);
		free(f);
		return rc;
	}
	f->fd = fd;
	/* A node that may be a slave counts its open files (held.c). */
	struct stat st;
	if (ctx()->apply_lock && fstat(fd, &st) == 0) {
		f->ino = st.st_ino;
		f->noted = 1;
		held_open_note(st.st_ino, 1);
	}
	read_end(guarded);
	f->append = !!(flags & O_APPEND);
	fi->fh = (uintptr_t)f;
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	int rc;

	if (is_control(path))
		return control_open(fi);
	if (atomic_load(&ctx()->readonly) &&
	    ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
		return -EROFS;
	rc = open_cache_file(path, fi->flags, fi);

	if (rc == 0 && (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
		struct rec r = { .op = REC_TRUNCATE, .path = path_rel(path), .off = 0 };
		rc = commit(&r, fh(fi)->fd, NULL);
		if (rc < 0) {
			close(fh(fi)->fd);
			free(fh(fi));
		}
	}
	return rc;
}

static int fs_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fuse_bufvec *src = malloc(sizeof(*src));

	(void)path;
	if (!src)
		return -ENOMEM;
	*src = FUSE_BUFVEC_INIT(size);
	if (fh(fi)->text) {
		struct fs_file *f = fh(fi);
		size_t from = off < 0 ? 0 : (size_t)off < f->text_len ? (size_t)off : f->text_len;
		size_t n = f->text_len - from < size ? f->text_len - from : size;
		void *mem = malloc(n ? n : 1);
		if (!mem) {
			free(src);
			return -ENOMEM;
		}
		memcpy(mem, f->text + from, n);
		src->buf[0].mem = mem;
		src->buf[0].size = n;
		src->buf[0].flags = 0;
		*bufp = src;
		return 0;
	}
	if (ctx()->apply_lock && atomic_load(&ctx()->guard_reads)) {
		/* A slave copies under the read lock: a splice after returning
		 * could see a record half-applied. */
		void *mem = malloc(size ? size : 1);
		ssize_t n;
		if (!mem) {
			free(src);
			return -ENOMEM;
		}
		int guarded = read_begin();
		n = pread(fh(fi)->fd, mem, size, off);
		read_end(guarded);
		if (n < 0) {
			int rc = -errno;
			free(mem);
			free(src);
			return rc;
		}
		src->buf[0].mem = mem;
		src->buf[0].size = (size_t)n;
		src->buf[0].flags = 0;
		*bufp = src;
		return 0;
	}
	src->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	src->buf[0].fd = fh(fi)->fd;
	src->buf[0].pos = off;
	*bufp = src;
	return 0;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (fh(fi)->noted)
		held_open_note(fh(fi)->ino, -1);
	if (fh(fi)->fd >= 0)
		close(fh(fi)->fd);
	free(fh(fi)->text);
	free(fh(fi));
	return 0;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	return fstatvfs(ctx()->datafd, sv) < 0 ? -errno : 0;
}

static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}

/* Durability comes from the journal: everything logged so far is made
 * durable, which covers this file's operations and all before them. */
static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	uint64_t lsn = commit_last_lsn(ctx()->commit);
	int rc = journal_sync(ctx()->journal, lsn);
	/* Sync replication: the fsync'd operations are on a slave's disk too. */
	if (rc == 0 && ctx()->repl)
		rc = repl_wait_replicated(ctx()->repl, lsn);
	return rc;
}

static int getxattr_unguarded(const char *path, const char *name, char *value, size_t size)
{
	char proc[64];
	int fd = openat(ctx()->datafd, rel_at(path), O_PATH | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
		close(fd);
		return -ENODATA;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = getxattr(proc, name, value, size);
	if (n < 0)
		n = -errno;
	close(fd);
	return (int)n;
}

static int fs_getxattr(const char *path, const char *name, char *value, size_t size)
{
	int rc;

	if (is_control(path))
		return -ENODATA;
	int guarded = read_begin();
	rc = getxattr_unguarded(path, name, value, size);
	read_end(guarded);
	return rc;
}

static int listxattr_unguarded(const char *path, char *list, size_t size)
{
	char proc[64];
	int fd = openat(ctx()->datafd, rel_at(path), O_PATH | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
		close(fd);
		return 0;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = listxattr(proc, list, size);
	if (n < 0)
		n = -errno;
	close(fd);
	return (int)n;
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
	int rc;

	if (is_control(path))
		return 0;
	int guarded = read_begin();
	rc = listxattr_unguarded(path, list, size);
	read_end(guarded);
	return rc;
}

static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r;

	(void)path;
	if (fh(fi)->fd < 0)
		return -ESPIPE;
	r = lseek(fh(fi)->fd, off, whence);
	return r < 0 ? -errno : r;
}

/* ---------------------------------------------------------------------------
 * Mutations: one record each
 * ------------------------------------------------------------------------- */

/* Owner of a new object: the caller, with the group of a setgid parent. */
static void new_owner(const char *path, struct rec *r, int is_dir)
{
	struct fuse_context *fc = fuse_get_context();
	char parent[PATH_MAX];
	struct stat st;

	r->uid = fc->uid;
	r->gid = fc->gid;
	path_split(path_rel(path), parent, sizeof(parent));
	if (fstatat(ctx()->datafd, parent[0] ? parent : ".", &st, 0) == 0 &&
	    (st.st_mode & S_ISGID)) {
		r->gid = st.st_gid;
		if (is_dir)
			r->mode |= S_ISGID;
	}
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_CREATE, .path = path_rel(path), .mode = mode & 07777 };
	struct fs_file *f;
	int fd = -1, rc;

	new_owner(path, &r, 0);
	rc = commit(&r, -1, &fd);
	if (rc == -EEXIST && !(fi->flags & O_EXCL))
		return fs_open(path, fi);
	if (rc < 0)
		return rc;
	if (!(f = calloc(1, sizeof(*f)))) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->append = !!(fi->flags & O_APPEND);
	struct stat st;
	if (ctx()->apply_lock && fstat(fd, &st) == 0) {
		f->ino = st.st_ino;
		f->noted = 1;
		held_open_note(st.st_ino, 1);
	}
	fi->fh = (uintptr_t)f;
	return 0;
}

static int fs_mknod(const char *path, mode_t mode, dev_t rdev)
{
	struct rec r = { .op = S_ISREG(mode) ? REC_CREATE : REC_MKNOD, .path = path_rel(path),
			 .mode = S_ISREG(mode) ? (mode & 07777) : mode, .rdev = rdev };

	new_owner(path, &r, 0);
	return commit(&r, -1, NULL);
}

static int fs_mkdir(const char *path, mode_t mode)
{
	struct rec r = { .op = REC_MKDIR, .path = path_rel(path), .mode = mode & 07777 };

	new_owner(path, &r, 1);
	return commit(&r, -1, NULL);
}

static int fs_symlink(const char *target, const char *path)
{
	struct rec r = { .op = REC_SYMLINK, .path = path_rel(path), .path2 = target,
			 .mode = 0777 };

	new_owner(path, &r, 0);
	return commit(&r, -1, NULL);
}

static int fs_unlink(const char *path)
{
	/* libfuse's last close of a file it hid on a slave (held.c) */
	if (held_release(ctx(), path_rel(path)) == 0)
		return 0;
	if (held_internal(ctx()))
		return held_unlink(ctx(), path_rel(path));

	struct rec r = { .op = REC_UNLINK, .path = path_rel(path) };
	ino_t ino = multi_linked(path);
	int rc = commit(&r, -1, NULL);

	if (rc == 0 && ino) {
		links_forget_name(path);
		links_changed(fuse_get_context()->fuse, ino, NULL); /* their nlink dropped */
	}
	return rc;
}

static int fs_rmdir(const char *path)
{
	struct rec r = { .op = REC_RMDIR, .path = path_rel(path) };

	return commit(&r, -1, NULL);
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	struct rec r = { .op = REC_RENAME, .path = path_rel(from), .path2 = path_rel(to),
			 .arg = flags };

	ino_t moved, replaced;
	int rc;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (held_internal(ctx()))
		return held_rename(ctx(), path_rel(from), path_rel(to), flags);
	moved = multi_linked(from);
	replaced = multi_linked(to);
	rc = commit(&r, -1, NULL);
	if (rc == 0 && (moved || replaced)) {
		links_forget_name(from);
		links_forget_name(to);
		if (moved)
			links_note(moved, to);
		if (replaced && (flags & RENAME_EXCHANGE))
			links_note(replaced, from);
		else if (replaced)
			links_changed(fuse_get_context()->fuse, replaced, NULL);
	}
	return rc;
}

static int fs_link(const char *from, const char *to)
{
	struct rec r = { .op = REC_LINK, .path = path_rel(from), .path2 = path_rel(to) };
	struct stat st;
	int rc = commit(&r, -1, NULL);

	if (rc == 0 && fstatat(ctx()->datafd, rel_at(to), &st, AT_SYMLINK_NOFOLLOW) == 0) {
		links_note(st.st_ino, from);
		links_note(st.st_ino, to);
		links_changed(fuse_get_context()->fuse, st.st_ino, to); /* nlink grew */
	}
	return rc;
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_CHMOD, .path = path_rel(path), .mode = mode & 07777 };
	int rc;

	(void)fi;
	if ((rc = commit(&r, -1, NULL)) == 0)
		after_change(path, -1);
	return rc;
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_CHOWN, .path = path_rel(path), .uid = uid, .gid = gid };
	int rc;

	(void)fi;
	if ((rc = commit(&r, -1, NULL)) == 0)
		after_change(path, -1);
	return rc;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_TRUNCATE, .path = path_rel(path), .off = (uint64_t)size };

	int rc;

	if (size < 0)
		return -EINVAL;
	if ((rc = commit(&r, fi ? fh(fi)->fd : -1, NULL)) == 0)
		after_change(path, fi ? fh(fi)->fd : -1);
	return rc;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_UTIMENS, .path = path_rel(path) };
	struct timespec now, ts[2];

	(void)fi;
	/* UTIME_NOW becomes a concrete time so every node sets the same one. */
	clock_gettime(CLOCK_REALTIME, &now);
	for (int i = 0; i < 2; i++)
		ts[i] = tv[i].tv_nsec == UTIME_NOW ? now : tv[i];
	r.atime_sec = ts[0].tv_sec;
	r.atime_nsec = (uint32_t)ts[0].tv_nsec;
	r.mtime_sec = ts[1].tv_sec;
	r.mtime_nsec = (uint32_t)ts[1].tv_nsec;
	int rc = commit(&r, -1, NULL);
	if (rc == 0)
		after_change(path, -1);
	return rc;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_WRITE, .path = path_rel(path), .off = (uint64_t)off,
			 .data = buf, .data_len = (uint32_t)size };
	int rc;

	if (size > REC_MAX_DATA)
		return -EFBIG;
	if (fh(fi)->append)
		r.flags |= REC_F_APPEND;
	/* One fstat, and only once a hard link was ever seen: the write path
	 * is hot, and a write never changes the link count. */
	struct stat st;
	ino_t multi = 0;
	int writing = -1;
	if (links_active() && fstat(fh(fi)->fd, &st) == 0 && st.st_nlink > 1) {
		multi = st.st_ino;
		writing = links_write_begin(path);
	}
	rc = commit(&r, fh(fi)->fd, NULL);
	if (rc == 0 && multi)
		links_changed(fuse_get_context()->fuse, multi, path);
	links_write_end(writing);
	return rc < 0 ? rc : (int)size;
}

static int fs_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	struct rec r = { .op = REC_FALLOCATE, .path = path_rel(path), .arg = (uint32_t)mode,
			 .off = (uint64_t)off, .len = (uint64_t)len };

	int rc;

	if (off < 0 || len <= 0)
		return -EINVAL;
	if ((rc = commit(&r, fi ? fh(fi)->fd : -1, NULL)) == 0)
		after_change(path, fi ? fh(fi)->fd : -1);
	return rc;
}

static int fs_setxattr(const char *path, const char *name, const char *value, size_t size,
		       int flags)
{
	struct rec r = { .op = REC_SETXATTR, .path = path_rel(path), .name = name, .data = value,
			 .data_len = (uint32_t)size, .arg = (uint32_t)flags };

	if (strlen(name) > 255)
		return -ERANGE;
	int rc;

	if (size > 65536)
		return -E2BIG;
	if ((rc = commit(&r, -1, NULL)) == 0)
		after_change(path, -1);
	return rc;
}

static int fs_removexattr(const char *path, const char *name)
{
	struct rec r = { .op = REC_REMOVEXATTR, .path = path_rel(path), .name = name };

	int rc;

	if (strlen(name) > 255)
		return -ERANGE;
	if ((rc = commit(&r, -1, NULL)) == 0)
		after_change(path, -1);
	return rc;
}

/* ---------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------- */

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_ctx *c = fuse_get_context()->private_data;

	/* Only this daemon changes the tree, so the kernel may cache names and
	 * attributes; page cache is dropped at open for hard-link coherence. */
	cfg->use_ino = 1;
	cfg->readdir_ino = 1;
	cfg->entry_timeout = c->opts->entry_timeout;
	cfg->attr_timeout = c->opts->attr_timeout;
	cfg->negative_timeout = c->opts->entry_timeout;
	cfg->hard_remove = 0;
	cfg->nullpath_ok = 0;
	cfg->kernel_cache = 0;
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* an acknowledged write must be logged */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	return c;
}

const struct fuse_operations fs_operations = {
	.init = fs_init,
	.getattr = fs_getattr,
	.readlink = fs_readlink,
	.mknod = fs_mknod,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.symlink = fs_symlink,
	.rename = fs_rename,
	.link = fs_link,
	.chmod = fs_chmod,
	.chown = fs_chown,
	.truncate = fs_truncate,
	.open = fs_open,
	.read_buf = fs_read_buf,
	.write = fs_write,
	.statfs = fs_statfs,
	.flush = fs_flush,
	.release = fs_release,
	.fsync = fs_fsync,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.removexattr = fs_removexattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.fsyncdir = fs_fsync,
	.create = fs_create,
	.utimens = fs_utimens,
	.fallocate = fs_fallocate,
	.lseek = fs_lseek,
};
