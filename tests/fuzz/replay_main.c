/* Replay driver: runs a fuzz target's LLVMFuzzerTestOneInput on every file
 * of the directories (or files) given, in name order, so that the corpus and
 * every input that once crashed a target are re-run by ctest in every build,
 * with or without sanitizers and without clang. A target reports a broken
 * property by aborting; this driver says which file it was on first.
 *
 *   <target>_replay DIR|FILE...     exit 0 when every input passed
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
	struct stat sb;
	uint8_t *buf;
	FILE *f;

	if (stat(path, &sb) < 0 || !(f = fopen(path, "rb"))) {
		fprintf(stderr, "fuzz replay: cannot read %s: %s\n", path, strerror(errno));
		return -1;
	}
	buf = malloc(sb.st_size ? (size_t)sb.st_size : 1);
	if (!buf || fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
		fprintf(stderr, "fuzz replay: cannot read %s\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	/* Named before it runs: an abort or a sanitizer report follows this line. */
	fprintf(stderr, "fuzz replay: %s (%lld bytes)\n", path, (long long)sb.st_size);
	/* An exact-size copy, so one byte read past the input is an overflow. */
	uint8_t *exact = fuzz_dup(buf, (size_t)sb.st_size);
	free(buf);
	LLVMFuzzerTestOneInput(exact, (size_t)sb.st_size);
	free(exact);
	return 0;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	int files = 0, bad = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct dirent **names;
		struct stat sb;
		int n;

		if (stat(argv[i], &sb) < 0) {
			fprintf(stderr, "fuzz replay: %s: %s\n", argv[i], strerror(errno));
			bad++;
			continue;
		}
		if (!S_ISDIR(sb.st_mode)) {
			bad += run_file(argv[i]) < 0;
			files++;
			continue;
		}
		if ((n = scandir(argv[i], &names, NULL, name_cmp)) < 0) {
			fprintf(stderr, "fuzz replay: %s: %s\n", argv[i], strerror(errno));
			bad++;
			continue;
		}
		for (int k = 0; k < n; k++) {
			char path[4096];
			if (names[k]->d_name[0] != '.') {
				snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
				bad += run_file(path) < 0;
				files++;
			}
			free(names[k]);
		}
		free(names);
	}
	printf("fuzz replay: %d inputs, %d unreadable\n", files, bad);
	/* A directory that lost its files would pass silently: refuse it. */
	return bad || files == 0 ? 1 : 0;
}
