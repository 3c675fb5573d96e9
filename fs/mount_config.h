/* Private to fs/: the settings of `replfs mount`, from its configuration
 * file (STORE/replfs.conf or --config FILE), -o options and long options.
 * One table in mount_config.c names every setting once, for all three. */
#ifndef REPLFS_MOUNT_CONFIG_H
#define REPLFS_MOUNT_CONFIG_H

#include "fs.h"
#include "../replicator/replicator.h"

#include <limits.h>
#include <stdio.h>

struct mount_config {
	struct fs_options o;
	struct repl_options ro;
	char store[PATH_MAX], mountpoint[PATH_MAX];
	char key_path[PATH_MAX];
	int log_level;     /* enum log_level */
	int timeout_set;   /* sync_timeout given (it goes with sync) */
};

void mount_config_defaults(struct mount_config *c);
/* Sets the setting whose -o name is name (value NULL for a bare flag).
 * Returns 0, 1 when name is a generic mount(8) option that means nothing
 * here (rw, _netdev, nofail, x-systemd.*, ...), or -EINVAL with the reason
 * in why. */
int mount_config_set(struct mount_config *c, const char *name, const char *value, char *why,
		     size_t whylen);
/* Reads an INI file into c: "PATH:LINE: reason" in err on a bad line. */
int mount_config_load(struct mount_config *c, const char *path, char *err, size_t errlen);
/* The settings that only make sense together; 0 or -EINVAL with why. */
int mount_config_check(const struct mount_config *c, char *why, size_t whylen);
/* Every setting as INI, as it is in effect (--print-config). */
void mount_config_print(const struct mount_config *c, FILE *out);

#endif
