/* Private to fs/: what the FUSE operations share with the daemon. */
#ifndef REPLFS_FUSE_PRIV_H
#define REPLFS_FUSE_PRIV_H

#define FUSE_USE_VERSION 314
#include <fuse.h>

#include "fs.h"

struct fs_ctx {
	struct store *st;
	struct journal *journal;
	struct commit *commit;
	int datafd;
	const struct fs_options *opts;
};

extern const struct fuse_operations fs_operations;

/* links.c: names of multiply-linked files (kernel cache coherence). */
void links_note(ino_t ino, const char *path);
void links_forget_name(const char *path);
void links_changed(struct fuse *f, ino_t ino, const char *except);
void links_free(void);
int links_active(void); /* any multiply-linked file seen at all? */

#endif
