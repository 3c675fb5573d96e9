/* Shared bits for the unit tests: temp directories and a few records. */
#ifndef REPLFS_TEST_UNIT_H
#define REPLFS_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../fs/fs.h"

static inline char *tmpdir_make(void)
{
	char *t = strdup("/var/tmp/replfs-unit-XXXXXX") /* ext4: collapse range */;
	assert_non_null(mkdtemp(t));
	return t;
}

static int tmpdir_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static inline void tmpdir_remove(char *t)
{
	nftw(t, tmpdir_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
}

static inline int open_dir(const char *base, const char *sub)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", base, sub);
	mkdir(p, 0755);
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* Reads a whole small file below dirfd into buf; returns its length or -1. */
static inline ssize_t slurp(int dirfd, const char *name, char *buf, size_t size)
{
	int fd = openat(dirfd, name, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

#endif
