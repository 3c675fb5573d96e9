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

#endif
