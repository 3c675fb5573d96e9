/* Open files on a slave whose names the master removes or replaces.
 *
 * libfuse's high-level API keeps one node, so one kernel inode, per name. A
 * slave changes its cache directly, behind the kernel's back, so after the
 * master renames b over a, a reader that opened a before keeps the node of
 * "a" while a new lookup of "a" finds the same node again: the old and the
 * new file share one kernel inode, its size and its page cache, and the
 * reader can see the new file's size over the old file's bytes.
 *
 * So the few records that remove or replace a name of a file open on this
 * mount (UNLINK, RENAME, and any directory rename while files are open) are
 * applied through the mount itself (apply_through_mount): the kernel and
 * libfuse then move their nodes with the change, exactly as for a change an
 * application makes on a master. libfuse keeps an open file it must unlink
 * or rename over by renaming it to ".fuse_hiddenXXXXXXXXYYYYYYYY" in the same
 * directory and unlinking that name on the last close; those two steps are
 * not the master's record, so here they move the file out of the data
 * directory into STORE/staging/held.PID.N, where it lives until the last
 * close (and a crash leaves nothing in the tree: stale held.* files are
 * removed at mount). The reader goes on with the old file, whole; a new open
 * gets the new one.
 *
 * Requests made by the applying thread are told from an application's by the
 * caller's thread id in the FUSE request (fuse_get_context()->pid), and
 * checked against the record being applied: only its own unlink or rename,
 * and libfuse's hiding rename, are carried out on a slave.
 *
 * The apply thread holds no apply_lock while it goes through the mount: the
 * kernel locks the directories for the rename, while a reader in them may be
 * waiting for apply_lock inside a lookup. The kernel's directory locks give
 * the same atomicity for these records.
 */
#include "fuse_priv.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

#define HIDDEN_PREFIX ".fuse_hidden"
#define OPEN_BUCKETS 256

struct open_ino {
	ino_t ino;
	unsigned count;
	struct open_ino *next;
};

struct held_file {
	char *path;               /* the hidden name libfuse gave it (relative) */
	char name[48];            /* in STORE/staging */
	struct held_file *next;
};

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_ino *open_table[OPEN_BUCKETS]; /* held_lock */
static _Atomic unsigned open_total;
static struct held_file *held_list;                /* held_lock */
static _Atomic unsigned held_count;                /* files in held_list */
static uint64_t held_seq;                          /* held_lock */

void held_open_note(ino_t ino, int delta)
{
	struct open_ino **e;

	pthread_mutex_lock(&held_lock);
	for (e = &open_table[ino % OPEN_BUCKETS]; *e && (*e)->ino != ino; e = &(*e)->next)
		;
	if (delta > 0) {
		if (!*e && (*e = calloc(1, sizeof(**e))))
			(*e)->ino = ino;
		if (*e) {
			(*e)->count++;
			atomic_fetch_add(&open_total, 1);
		}
	} else if (*e) {
		atomic_fetch_sub(&open_total, 1);
		if (--(*e)->count == 0) {
			struct open_ino *gone = *e;
			*e = gone->next;
			free(gone);
		}
	}
	pthread_mutex_unlock(&held_lock);
}

static int ino_open(ino_t ino)
{
	struct open_ino *e;
	int open = 0;

	pthread_mutex_lock(&held_lock);
	for (e = open_table[ino % OPEN_BUCKETS]; e && !open; e = e->next)
		open = e->ino == ino;
	pthread_mutex_unlock(&held_lock);
	return open;
}

/* Whether what path names (in the cache) is open on this mount, or is a
 * directory while anything is open (files beneath it would lose their
 * path). */
static int name_in_use(struct fs_ctx *c, const char *path)
{
	struct stat st;

	if (!path || !*path || fstatat(atomic_load(&c->datafd), path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return S_ISDIR(st.st_mode) || ino_open(st.st_ino);
}

/* Opened for each such record, from the apply thread (the FUSE loop serves
 * it), and closed after: a descriptor kept open would make umount EBUSY. */
static int mount_root(struct fs_ctx *c)
{
	struct statfs sf;
	int fd;

	if (!c->mountpoint)
		return -ENOENT;
	fd = open(c->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Something else mounted over it, or a read-only mount (-o ro), where
	 * the kernel refuses every change: the record goes the usual way. */
	if (fstatfs(fd, &sf) < 0 || sf.f_type != FUSE_SUPER_MAGIC || (sf.f_flags & ST_RDONLY)) {
		close(fd);
		return -EXDEV;
	}
	return fd;
}

/* The usual way: under the apply lock, readers held off. */
static int apply_locked(struct fs_ctx *c, struct commit *cm, struct rec *r)
{
	int rc;

	if (c->apply_lock)
		pthread_rwlock_wrlock(c->apply_lock);
	rc = commit_op(cm, r, -1, NULL);
	if (c->apply_lock)
		pthread_rwlock_unlock(c->apply_lock);
	return rc;
}

int held_apply(void *arg, struct commit *cm, struct rec *r, int *rc)
{
	struct fs_ctx *c = arg;
	int via = 0, mfd;

	/* Decided under the apply lock: an open takes it for reading while it
	 * opens and counts (fuse_ops.c), so no open comes between this look
	 * and a direct apply. */
	if (c->apply_lock)
		pthread_rwlock_wrlock(c->apply_lock);
	if (atomic_load(&open_total)) {
		if (r->op == REC_UNLINK)
			via = name_in_use(c, r->path);
		else if (r->op == REC_RENAME)
			via = name_in_use(c, r->path) || name_in_use(c, r->path2);
	}
	if (!via) {
		*rc = commit_op(cm, r, -1, NULL);
		if (c->apply_lock)
			pthread_rwlock_unlock(c->apply_lock);
		return 1;
	}
	if (c->apply_lock)
		pthread_rwlock_unlock(c->apply_lock);
	/* Opens after this point go through libfuse's own counts, which its
	 * rename and unlink consult under its path locks. */
	if ((mfd = mount_root(c)) < 0) {
		*rc = apply_locked(c, cm, r);
		return 1;
	}
	pthread_mutex_lock(&held_lock);
	c->applying = r;
	pthread_mutex_unlock(&held_lock);
	atomic_store(&c->apply_tid, gettid());
	apply_through_mount(mfd);
	*rc = commit_op(cm, r, -1, NULL);
	apply_through_mount(-1);
	atomic_store(&c->apply_tid, 0);
	close(mfd);
	pthread_mutex_lock(&held_lock);
	c->applying = NULL;
	pthread_mutex_unlock(&held_lock);
	return 1;
}

int held_internal(struct fs_ctx *c)
{
	pid_t t = atomic_load(&c->apply_tid);

	return t && fuse_get_context()->pid == t;
}

static int is_hidden_name(const char *path)
{
	const char *base = strrchr(path, '/');

	return !strncmp(base ? base + 1 : path, HIDDEN_PREFIX, strlen(HIDDEN_PREFIX));
}

int held_rename(struct fs_ctx *c, const char *from, const char *to, unsigned flags)
{
	struct apply_ctx ac = { .datafd = atomic_load(&c->datafd), .stagingfd = -1 };
	struct held_file *h;
	int is_record, rc;

	pthread_mutex_lock(&held_lock);
	is_record = c->applying && c->applying->op == REC_RENAME &&
		    !strcmp(c->applying->path, from) && c->applying->path2 &&
		    !strcmp(c->applying->path2, to) && c->applying->arg == flags;
	pthread_mutex_unlock(&held_lock);
	if (is_record)
		return apply_names_direct(&ac, REC_RENAME, from, to, flags);
	if (flags || !is_hidden_name(to))
		return -EROFS; /* not the record being applied, nor libfuse hiding */
	/* libfuse hides an open file the record removes or renames over. */
	if (!(h = calloc(1, sizeof(*h))) || !(h->path = strdup(to))) {
		free(h);
		return -ENOMEM;
	}
	pthread_mutex_lock(&held_lock);
	snprintf(h->name, sizeof(h->name), "held.%d.%" PRIu64, (int)getpid(), ++held_seq);
	pthread_mutex_unlock(&held_lock);
	rc = apply_name_move_out(&ac, from, c->st->stagingfd, h->name);
	if (rc < 0) {
		free(h->path);
		free(h);
		return rc;
	}
	pthread_mutex_lock(&held_lock);
	h->next = held_list;
	held_list = h;
	atomic_fetch_add(&held_count, 1);
	pthread_mutex_unlock(&held_lock);
	log_debug("kept open file %s as staging/%s until its last close", from, h->name);
	return 0;
}

int held_unlink(struct fs_ctx *c, const char *path)
{
	struct apply_ctx ac = { .datafd = atomic_load(&c->datafd), .stagingfd = -1 };
	int is_record;

	pthread_mutex_lock(&held_lock);
	is_record = c->applying && c->applying->op == REC_UNLINK &&
		    !strcmp(c->applying->path, path);
	pthread_mutex_unlock(&held_lock);
	if (!is_record)
		return -EROFS;
	return apply_names_direct(&ac, REC_UNLINK, path, NULL, 0);
}

int held_find(const char *path, char *name, size_t len)
{
	struct held_file *h;
	int found = 0;

	if (!atomic_load(&held_count) || !is_hidden_name(path))
		return 0;
	pthread_mutex_lock(&held_lock);
	for (h = held_list; h && !found; h = h->next)
		if (!strcmp(h->path, path)) {
			snprintf(name, len, "%s", h->name);
			found = 1;
		}
	pthread_mutex_unlock(&held_lock);
	return found;
}

int held_release(struct fs_ctx *c, const char *path)
{
	struct held_file **p, *h = NULL;

	if (!atomic_load(&held_count) || !is_hidden_name(path))
		return -ENOENT;
	pthread_mutex_lock(&held_lock);
	for (p = &held_list; *p; p = &(*p)->next)
		if (!strcmp((*p)->path, path)) {
			h = *p;
			*p = h->next;
			atomic_fetch_sub(&held_count, 1);
			break;
		}
	pthread_mutex_unlock(&held_lock);
	if (!h)
		return -ENOENT;
	if (unlinkat(c->st->stagingfd, h->name, 0) < 0)
		log_warn("cannot remove staging/%s: %s", h->name, strerror(errno));
	free(h->path);
	free(h);
	return 0;
}

void held_clean_stale(int stagingfd)
{
	int fd = openat(stagingfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "held.", 5))
			unlinkat(stagingfd, e->d_name, 0);
	closedir(d);
}

void held_free(void)
{
	pthread_mutex_lock(&held_lock);
	while (held_list) {
		struct held_file *h = held_list;
		held_list = h->next;
		free(h->path);
		free(h);
	}
	atomic_store(&held_count, 0);
	for (int i = 0; i < OPEN_BUCKETS; i++)
		while (open_table[i]) {
			struct open_ino *e = open_table[i];
			open_table[i] = e->next;
			free(e);
		}
	atomic_store(&open_total, 0);
	pthread_mutex_unlock(&held_lock);
}
