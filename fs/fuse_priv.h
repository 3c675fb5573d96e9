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
};

extern const struct fuse_operations fs_operations;

/* links.c: names of multiply-linked files (kernel cache coherence). */
void links_note(ino_t ino, const char *path);
void links_forget_name(const char *path);
void links_changed(struct fuse *f, ino_t ino, const char *except);
void links_free(void);
int links_active(void); /* any multiply-linked file seen at all? */

#endif
