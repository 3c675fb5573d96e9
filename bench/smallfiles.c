/*
 * smallfiles - small-file and metadata micro-benchmark for bench/run.sh
 *
 *   smallfiles files DIR COUNT SIZE
 *       phase 1: COUNT x (open O_CREAT|O_EXCL, write SIZE bytes, close)
 *       phase 2: stat() every file
 *       phase 3: unlink() every file
 *       prints "create <s>", "stat <s>", "unlink <s>" (wall-clock seconds)
 *
 *   smallfiles meta DIR COUNT
 *       load for the crash-replay benchmark: about 4*COUNT metadata
 *       operations spread over COUNT/1000+1 subdirectories:
 *       mkdir, then per file: create (empty), chmod, utimensat, rename.
 *       Files are left in place (nothing is fsynced). Prints "ops <n>"
 *       (number of mutating system calls issued) and "seconds <s>".
 *
 * Files are named f<number> in DIR (meta: DIR/d<k>/f<number>). DIR must
 * exist. Exit status is non-zero on the first failing system call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "smallfiles: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static int do_files(const char *dir, long count, size_t size)
{
	char path[4096];
	char *buf = malloc(size ? size : 1);
	struct stat st;
	double t0, t1, t2, t3;
	long i;

	if (!buf) {
		perror("smallfiles: malloc");
		return 1;
	}
	for (size_t k = 0; k < size; k++)
		buf[k] = (char)('a' + k % 26);

	t0 = now();
	for (i = 0; i < count; i++) {
		snprintf(path, sizeof path, "%s/f%ld", dir, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0)
			die("open", path);
		size_t done = 0;
		while (done < size) {
			ssize_t n = write(fd, buf + done, size - done);
			if (n < 0)
				die("write", path);
			done += (size_t)n;
		}
		if (close(fd) < 0)
			die("close", path);
	}
	t1 = now();
	for (i = 0; i < count; i++) {
		snprintf(path, sizeof path, "%s/f%ld", dir, i);
		if (stat(path, &st) < 0)
			die("stat", path);
		if ((size_t)st.st_size != size) {
			fprintf(stderr, "smallfiles: %s: size %lld, expected %zu\n",
				path, (long long)st.st_size, size);
			return 1;
		}
	}
	t2 = now();
	for (i = 0; i < count; i++) {
		snprintf(path, sizeof path, "%s/f%ld", dir, i);
		if (unlink(path) < 0)
			die("unlink", path);
	}
	t3 = now();
	printf("create %.6f\nstat %.6f\nunlink %.6f\n", t1 - t0, t2 - t1, t3 - t2);
	free(buf);
	return 0;
}

static int do_meta(const char *dir, long count)
{
	char path[4096], path2[4096];
	long ops = 0, i, ndirs = count / 1000 + 1;
	double t0 = now();

	for (long d = 0; d < ndirs; d++) {
		snprintf(path, sizeof path, "%s/d%ld", dir, d);
		if (mkdir(path, 0755) < 0)
			die("mkdir", path);
		ops++;
	}
	for (i = 0; i < count; i++) {
		long d = i % ndirs;
		struct timespec ts[2] = { { 1000000 + i, 0 }, { 2000000 + i, 0 } };

		snprintf(path, sizeof path, "%s/d%ld/f%ld", dir, d, i);
		snprintf(path2, sizeof path2, "%s/d%ld/g%ld", dir, d, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0)
			die("open", path);
		if (close(fd) < 0)
			die("close", path);
		ops++;
		if (chmod(path, 0600) < 0)
			die("chmod", path);
		ops++;
		if (utimensat(AT_FDCWD, path, ts, 0) < 0)
			die("utimensat", path);
		ops++;
		if (rename(path, path2) < 0)
			die("rename", path);
		ops++;
	}
	printf("ops %ld\nseconds %.6f\n", ops, now() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "files") == 0)
		return do_files(argv[2], atol(argv[3]), (size_t)atol(argv[4]));
	if (argc == 4 && strcmp(argv[1], "meta") == 0)
		return do_meta(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: smallfiles files DIR COUNT SIZE\n"
			"       smallfiles meta DIR COUNT\n");
	return 2;
}
