/* The apply step: every operation type, determinism, idempotence of a
 * redone record, and confinement to the data directory. */
#include "unit.h"

#include <errno.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>

struct afix {
	char *dir;
	struct apply_ctx ac;
	uint64_t lsn;
};

static int setup(void **state)
{
	struct afix *f = calloc(1, sizeof(*f));
	f->dir = tmpdir_make();
	f->ac.datafd = open_dir(f->dir, "data");
	f->ac.stagingfd = open_dir(f->dir, "staging");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct afix *f = *state;
	close(f->ac.datafd);
	close(f->ac.stagingfd);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static int ap(struct afix *f, struct rec r)
{
	r.lsn = ++f->lsn;
	r.epoch = 1;
	if (!r.time_ns)
		r.time_ns = 1600000000000000000ull + r.lsn;
	return apply_record(&f->ac, &r, -1, NULL);
}

static void test_every_operation(void **state)
{
	struct afix *f = *state;
	struct stat st;
	char buf[256];

	assert_int_equal(ap(f, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 02750,
					     .uid = 1234, .gid = 567 }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "d", &st, 0), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 02750);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 567);

	assert_int_equal(ap(f, (struct rec){ .op = REC_CREATE, .path = "d/f", .mode = 0604,
					     .uid = 1000, .gid = 1000 }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_WRITE, .path = "d/f", .off = 0,
					     .data = "hello world", .data_len = 11 }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_WRITE, .path = "d/f", .off = 6,
					     .data = "WORLD", .data_len = 5 }), 0);
	assert_int_equal(slurp(f->ac.datafd, "d/f", buf, sizeof(buf)), 11);
	assert_string_equal(buf, "hello WORLD");
	assert_int_equal(fstatat(f->ac.datafd, "d/f", &st, 0), 0);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_mode & 07777, 0604);
	/* The content's mtime is the record's time, on every node. */
	assert_int_equal(st.st_mtim.tv_sec, 1600000000);
	assert_int_equal(st.st_mtim.tv_nsec, 4);

	assert_int_equal(ap(f, (struct rec){ .op = REC_TRUNCATE, .path = "d/f", .off = 5 }), 0);
	assert_int_equal(slurp(f->ac.datafd, "d/f", buf, sizeof(buf)), 5);
	assert_int_equal(ap(f, (struct rec){ .op = REC_FALLOCATE, .path = "d/f", .off = 0,
					     .len = 65536 }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "d/f", &st, 0), 0);
	assert_int_equal(st.st_size, 65536);
	assert_int_equal(ap(f, (struct rec){ .op = REC_FALLOCATE, .path = "d/f",
					     .arg = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					     .off = 0, .len = 4096 }), 0);
	assert_int_equal(slurp(f->ac.datafd, "d/f", buf, 6), 5);
	assert_memory_equal(buf, "\0\0\0\0\0", 5);

	assert_int_equal(ap(f, (struct rec){ .op = REC_CHMOD, .path = "d/f", .mode = 0640 }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_CHOWN, .path = "d/f", .uid = 7,
					     .gid = (uint32_t)-1 }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "d/f", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, 7);
	assert_int_equal(st.st_gid, 1000);

	assert_int_equal(ap(f, (struct rec){ .op = REC_UTIMENS, .path = "d/f", .atime_sec = 10,
					     .mtime_sec = 20, .mtime_nsec = 30 }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "d/f", &st, 0), 0);
	assert_int_equal(st.st_mtim.tv_sec, 20);
	assert_int_equal(st.st_mtim.tv_nsec, 30);
	assert_int_equal(st.st_atim.tv_sec, 10);

	assert_int_equal(ap(f, (struct rec){ .op = REC_SETXATTR, .path = "d/f",
					     .name = "user.k", .data = "v1", .data_len = 2 }), 0);
	char path[4200];
	snprintf(path, sizeof(path), "%s/data/d/f", f->dir);
	assert_int_equal(getxattr(path, "user.k", buf, sizeof(buf)), 2);
	assert_int_equal(ap(f, (struct rec){ .op = REC_SETXATTR, .path = "d/f", .name = "user.k",
					     .data = "v2", .data_len = 2,
					     .arg = XATTR_CREATE }), -EEXIST);
	assert_int_equal(ap(f, (struct rec){ .op = REC_REMOVEXATTR, .path = "d/f",
					     .name = "user.k" }), 0);
	assert_int_equal(getxattr(path, "user.k", buf, sizeof(buf)), -1);

	assert_int_equal(ap(f, (struct rec){ .op = REC_SYMLINK, .path = "s", .path2 = "d/f",
					     .uid = 5, .gid = 6 }), 0);
	assert_int_equal(readlinkat(f->ac.datafd, "s", buf, sizeof(buf)), 3);
	assert_int_equal(fstatat(f->ac.datafd, "s", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_uid, 5);

	assert_int_equal(ap(f, (struct rec){ .op = REC_LINK, .path = "d/f", .path2 = "hl" }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "hl", &st, 0), 0);
	assert_int_equal(st.st_nlink, 2);

	assert_int_equal(ap(f, (struct rec){ .op = REC_MKNOD, .path = "fifo",
					     .mode = S_IFIFO | 0600 }), 0);
	assert_int_equal(fstatat(f->ac.datafd, "fifo", &st, 0), 0);
	assert_true(S_ISFIFO(st.st_mode));

	assert_int_equal(ap(f, (struct rec){ .op = REC_RENAME, .path = "hl", .path2 = "d/f",
					     .arg = RENAME_NOREPLACE }), -EEXIST);
	assert_int_equal(ap(f, (struct rec){ .op = REC_RENAME, .path = "hl", .path2 = "d/g" }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_UNLINK, .path = "d/g" }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_RMDIR, .path = "d" }), -ENOTEMPTY);
	assert_int_equal(ap(f, (struct rec){ .op = REC_UNLINK, .path = "d/f" }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_RMDIR, .path = "d" }), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_UNLINK, .path = "d" }), -ENOENT);

	/* Failures leave nothing behind in staging. */
	assert_int_equal(ap(f, (struct rec){ .op = REC_CREATE, .path = "s", .mode = 0644 }), -EEXIST);
	assert_int_equal(ap(f, (struct rec){ .op = REC_CREATE, .path = "nodir/x", .mode = 0644 }),
			 -ENOENT);
	assert_int_equal(unlinkat(f->ac.stagingfd, "n1", 0), -1);
}

/* Nothing a record holds can touch anything outside the data directory. */
static void test_confinement(void **state)
{
	struct afix *f = *state;
	char outside[4200];
	struct stat st;

	snprintf(outside, sizeof(outside), "%s/outside", f->dir);
	mkdir(outside, 0700);
	assert_int_equal(symlinkat(outside, f->ac.datafd, "evil"), 0);
	assert_int_equal(ap(f, (struct rec){ .op = REC_CREATE, .path = "evil/x", .mode = 0644 }),
			 -ELOOP);
	assert_int_equal(ap(f, (struct rec){ .op = REC_MKDIR, .path = "evil/d", .mode = 0755 }),
			 -ELOOP);
	assert_int_equal(ap(f, (struct rec){ .op = REC_WRITE, .path = "evil", .data = "x",
					     .data_len = 1 }), -ELOOP);
	assert_int_equal(ap(f, (struct rec){ .op = REC_CHMOD, .path = "evil", .mode = 0777 }),
			 -EOPNOTSUPP);
	assert_int_equal(ap(f, (struct rec){ .op = REC_SETXATTR, .path = "evil", .name = "user.a",
					     .data = "1", .data_len = 1 }), -EPERM);
	assert_int_equal(ap(f, (struct rec){ .op = REC_RENAME, .path = "evil/a", .path2 = "b" }),
			 -ELOOP);
	assert_int_equal(ap(f, (struct rec){ .op = REC_UNLINK, .path = "../outside" }), -EINVAL);
	assert_int_equal(ap(f, (struct rec){ .op = REC_RMDIR, .path = "/tmp" }), -EINVAL);
	assert_int_equal(stat(outside, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	int dfd = open(outside, O_RDONLY | O_DIRECTORY);
	assert_int_equal(faccessat(dfd, "x", F_OK, 0), -1);
	assert_int_equal(faccessat(dfd, "d", F_OK, 0), -1);
	close(dfd);
	/* chown of the symlink itself is allowed and stays on the link. */
	assert_int_equal(ap(f, (struct rec){ .op = REC_CHOWN, .path = "evil", .uid = 99,
					     .gid = 99 }), 0);
	assert_int_equal(stat(outside, &st), 0);
	assert_int_equal(st.st_uid, 0);
}

/* A redone record (the in-flight one after a crash) gives the same tree. */
static void test_redo_is_harmless(void **state)
{
	struct afix *f = *state;
	char buf[64];
	struct stat st;
	struct rec seq[] = {
		{ .op = REC_CREATE, .path = "a", .mode = 0644, .uid = 1 },
		{ .op = REC_WRITE, .path = "a", .off = 0, .data = "abcdef", .data_len = 6 },
		{ .op = REC_TRUNCATE, .path = "a", .off = 3 },
		{ .op = REC_CHMOD, .path = "a", .mode = 0600 },
		{ .op = REC_SETXATTR, .path = "a", .name = "user.x", .data = "1", .data_len = 1 },
		{ .op = REC_MKDIR, .path = "d", .mode = 0755 },
		{ .op = REC_RENAME, .path = "a", .path2 = "d/a" },
		{ .op = REC_LINK, .path = "d/a", .path2 = "b" },
		{ .op = REC_UNLINK, .path = "b" },
	};
	for (size_t i = 0; i < sizeof(seq) / sizeof(*seq); i++) {
		assert_int_equal(ap(f, seq[i]), 0);
		f->lsn--;
		ap(f, seq[i]); /* the same record again: may fail, must not change */
	}
	assert_int_equal(slurp(f->ac.datafd, "d/a", buf, sizeof(buf)), 3);
	assert_string_equal(buf, "abc");
	assert_int_equal(fstatat(f->ac.datafd, "d/a", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_uid, 1);
	assert_int_equal(faccessat(f->ac.datafd, "b", F_OK, AT_SYMLINK_NOFOLLOW), -1);
}

/* RENAME_EXCHANGE and COLLAPSE/INSERT are not idempotent: captured state
 * tells whether they happened. */
static void test_non_idempotent_detection(void **state)
{
	struct afix *f = *state;
	uint64_t aux[4];
	char buf[64];

	ap(f, (struct rec){ .op = REC_CREATE, .path = "x", .mode = 0644 });
	ap(f, (struct rec){ .op = REC_WRITE, .path = "x", .data = "X", .data_len = 1 });
	ap(f, (struct rec){ .op = REC_CREATE, .path = "y", .mode = 0644 });
	ap(f, (struct rec){ .op = REC_WRITE, .path = "y", .data = "Y", .data_len = 1 });
	struct rec ex = { .op = REC_RENAME, .path = "x", .path2 = "y", .arg = RENAME_EXCHANGE,
			  .lsn = 100, .time_ns = 1 };
	apply_capture(&f->ac, &ex, aux);
	assert_false(apply_already_done(&f->ac, &ex, aux));
	assert_int_equal(apply_record(&f->ac, &ex, -1, NULL), 0);
	assert_true(apply_already_done(&f->ac, &ex, aux));
	slurp(f->ac.datafd, "x", buf, sizeof(buf));
	assert_string_equal(buf, "Y");

	char block[8192];
	memset(block, 'a', 4096);
	memset(block + 4096, 'b', 4096);
	ap(f, (struct rec){ .op = REC_WRITE, .path = "x", .data = block, .data_len = 8192 });
	struct rec col = { .op = REC_FALLOCATE, .path = "x", .arg = FALLOC_FL_COLLAPSE_RANGE,
			   .off = 0, .len = 4096, .lsn = 101, .time_ns = 1 };
	apply_capture(&f->ac, &col, aux);
	assert_false(apply_already_done(&f->ac, &col, aux));
	assert_int_equal(apply_record(&f->ac, &col, -1, NULL), 0); /* needs ext4/xfs */
	assert_true(apply_already_done(&f->ac, &col, aux));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_operation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confinement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redo_is_harmless, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_idempotent_detection, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
