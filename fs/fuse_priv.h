/* Private to fs/: what the FUSE operations share with the daemon. */
#ifndef REPLFS_FUSE_PRIV_H
#define REPLFS_FUSE_PRIV_H

#define FUSE_USE_VERSION 314
#include <fuse.h>

#include "fs.h"

#include <stdatomic.h>

struct replicator;

struct fs_ctx {
	struct store *st;
	struct journal *journal;
	struct commit *commit;
	_Atomic int datafd;          /* replaced when a slave installs a snapshot */
	const struct fs_options *opts;
	struct fuse *fuse;
	struct replicator *repl;     /* NULL until replication is up */
	_Atomic int readonly;        /* a slave: applications get EROFS */
	/* A slave's apply step holds it for writing; reads hold it for reading,
	 * so no reader sees half an operation. NULL on a master. */
	pthread_rwlock_t *apply_lock;
	_Atomic int guard_reads;     /* a slave: reads take apply_lock */
	/* held.c: a slave's name changes made through the mount */
	const char *mountpoint;
	_Atomic pid_t apply_tid;     /* the thread applying through the mount, 0 */
	const struct rec *applying;  /* its record (held.c's lock) */
};

extern const struct fuse_operations fs_operations;

/* links.c: names of multiply-linked files (kernel cache coherence). */
void links_note(ino_t ino, const char *path);
void links_forget_name(const char *path);
void links_changed(struct fuse *f, ino_t ino, const char *except);
/* A write through path is in flight (its pages are locked): a handle for
 * links_write_end, -1 when nothing is tracked. */
int links_write_begin(const char *path);
void links_write_end(int slot);
void links_stop(void);  /* before fuse_destroy: the invalidation thread ends */
void links_free(void);
int links_active(void); /* any multiply-linked file seen at all? */

/* held.c: open files on a slave whose names the master removes or replaces. */
void held_open_note(ino_t ino, int delta);      /* an open (+1) or release (-1) */
/* The slave's apply step for one record, under the apply lock or, for a
 * name change of an open file, through the mount: 1, *rc its result. */
int held_apply(void *arg, struct commit *cm, struct rec *r, int *rc);
int held_internal(struct fs_ctx *c);            /* this request is that apply */
int held_rename(struct fs_ctx *c, const char *from, const char *to, unsigned flags);
int held_unlink(struct fs_ctx *c, const char *path);
/* A name libfuse hid an open file under: its file in STORE/staging. */
int held_find(const char *path, char *name, size_t len);
int held_release(struct fs_ctx *c, const char *path); /* 0, or -ENOENT: not one */
void held_clean_stale(int stagingfd);
void held_free(void);

#endif
