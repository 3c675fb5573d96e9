/* Record codec: round trips, the validity rule, torn records, bad paths. */
#include "unit.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <linux/fs.h>
#include <xxhash.h>

static const uint64_t SALT = 0x1234abcd5678ef90ull;

static struct rec sample(unsigned op)
{
	static const char data[] = "hello, journal";
	struct rec r = { .op = (uint16_t)op, .lsn = 42, .epoch = 3, .time_ns = 1700000000123456789ull,
			 .mode = 0644, .uid = 1000, .gid = 100, .path = "dir/file name é" };

	switch (op) {
	case REC_WRITE:
		r.off = 1ull << 33;
		r.data = data;
		r.data_len = sizeof(data) - 1;
		break;
	case REC_RENAME:
	case REC_LINK:
		r.path2 = "other/target";
		r.arg = RENAME_EXCHANGE;
		break;
	case REC_SYMLINK:
		r.path2 = "../../anything/at/all";
		break;
	case REC_SETXATTR:
		r.name = "user.comment";
		r.data = data;
		r.data_len = 5;
		break;
	case REC_REMOVEXATTR:
		r.name = "user.comment";
		break;
	case REC_MKNOD:
		r.mode = 010644;
		r.rdev = 0x0801;
		break;
	case REC_FALLOCATE:
		r.arg = 0x8;
		r.off = 4096;
		r.len = 8192;
		break;
	case REC_UTIMENS:
		r.atime_sec = 1;
		r.atime_nsec = 2;
		r.mtime_sec = -5;
		r.mtime_nsec = 999999999;
		break;
	}
	return r;
}

static size_t encode(const struct rec *r, uint8_t *out, size_t cap)
{
	uint8_t head[8192];
	ssize_t h = rec_encode(r, SALT, head, sizeof(head));
	size_t total = rec_size(r);

	assert_true(h > 0);
	assert_true(total <= cap);
	memset(out, 0, total);
	memcpy(out, head, (size_t)h);
	if (r->data_len)
		memcpy(out + h, r->data, r->data_len);
	return total;
}

static void test_roundtrip_every_op(void **state)
{
	(void)state;
	for (unsigned op = 0; op < REC_OP_MAX; op++) {
		struct rec in = sample(op), out;
		uint8_t buf[16384];
		size_t n = encode(&in, buf, sizeof(buf));

		assert_int_equal(n % REC_ALIGN, 0);
		assert_int_equal(rec_decode(buf, n, SALT, &out), (ssize_t)n);
		assert_int_equal(out.op, in.op);
		assert_int_equal(out.lsn, in.lsn);
		assert_int_equal(out.epoch, in.epoch);
		assert_int_equal(out.time_ns, in.time_ns);
		assert_int_equal(out.mode, in.mode);
		assert_int_equal(out.uid, in.uid);
		assert_int_equal(out.gid, in.gid);
		assert_int_equal(out.arg, in.arg);
		assert_int_equal(out.rdev, in.rdev);
		assert_int_equal(out.off, in.off);
		assert_int_equal(out.len, in.len);
		assert_int_equal(out.atime_sec, in.atime_sec);
		assert_int_equal(out.mtime_sec, in.mtime_sec);
		assert_int_equal(out.atime_nsec, in.atime_nsec);
		assert_int_equal(out.mtime_nsec, in.mtime_nsec);
		assert_string_equal(out.path, in.path);
		if (in.path2)
			assert_string_equal(out.path2, in.path2);
		else
			assert_null(out.path2);
		if (in.name)
			assert_string_equal(out.name, in.name);
		else
			assert_null(out.name);
		assert_int_equal(out.data_len, in.data_len);
		if (in.data_len)
			assert_memory_equal(out.data, in.data, in.data_len);
	}
}

/* The checksum must catch every single-bit flip anywhere in the record. */
static void test_every_bit_flip_rejected(void **state)
{
	(void)state;
	for (unsigned op = 1; op < REC_OP_MAX; op++) {
		struct rec in = sample(op), out;
		uint8_t buf[16384];
		size_t n = encode(&in, buf, sizeof(buf));

		for (size_t bit = 0; bit < n * 8; bit++) {
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			ssize_t rc = rec_decode(buf, n, SALT, &out);
			if (rc > 0)
				fail_msg("op %u: flip of bit %zu accepted", op, bit);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
		assert_int_equal(rec_decode(buf, n, SALT, &out), (ssize_t)n);
	}
}

static void test_wrong_salt_rejected(void **state)
{
	struct rec in = sample(REC_WRITE), out;
	uint8_t buf[4096];
	size_t n = encode(&in, buf, sizeof(buf));

	(void)state;
	assert_int_equal(rec_decode(buf, n, SALT + 1, &out), -EBADMSG);
}

/* Every prefix of a record is incomplete, never valid. */
static void test_torn_prefixes(void **state)
{
	struct rec in = sample(REC_WRITE), out;
	uint8_t buf[4096];
	size_t n = encode(&in, buf, sizeof(buf));

	(void)state;
	for (size_t len = 0; len < n; len++) {
		ssize_t rc = rec_decode(buf, len, SALT, &out);
		assert_true(rc == -EAGAIN || rc == -EBADMSG);
	}
}

static void test_encode_refuses_bad_paths(void **state)
{
	static const char *bad[] = { "../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "a/",
				     ".", "a/./b", ".." };
	uint8_t head[8192];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct rec r = sample(REC_UNLINK);
		r.path = bad[i];
		assert_true(rec_encode(&r, SALT, head, sizeof(head)) < 0);
		r = sample(REC_RENAME);
		r.path2 = bad[i];
		assert_true(rec_encode(&r, SALT, head, sizeof(head)) < 0);
	}
}

/* A forged record with a valid checksum but a path leaving the tree. */
static void test_decode_refuses_forged_path(void **state)
{
	struct rec in = sample(REC_UNLINK), out;
	uint8_t buf[4096];
	size_t n;
	uint64_t sum;

	(void)state;
	in.path = "xx/etc";
	n = encode(&in, buf, sizeof(buf));
	memcpy(buf + REC_HEAD_FIXED, "..", 2); /* "../etc" */
	sum = XXH3_64bits_withSeed(buf + 8, n - 8, SALT);
	memcpy(buf, &sum, 8);
	assert_int_equal(rec_decode(buf, n, SALT, &out), -EBADMSG);
}

/* A symlink target is not a path in the tree: anything up to PATH_MAX-1. */
static void test_symlink_targets(void **state)
{
	static char longt[4001];
	const char *targets[] = { "/etc/passwd", "../../x", "a//b/./c", longt };
	uint8_t buf[16384];
	struct rec out;

	(void)state;
	memset(longt, 'a', 4000);
	for (size_t i = 0; i < sizeof(targets) / sizeof(*targets); i++) {
		struct rec in = sample(REC_SYMLINK);
		in.path2 = targets[i];
		size_t n = encode(&in, buf, sizeof(buf));
		assert_int_equal(rec_decode(buf, n, SALT, &out), (ssize_t)n);
		assert_string_equal(out.path2, targets[i]);
	}
}

static void test_path_check(void **state)
{
	char longname[300], longpath[5000];

	(void)state;
	assert_int_equal(path_check("", 0), 0);
	assert_int_equal(path_check("a", 1), 0);
	assert_int_equal(path_check("a b/ü/..x/.y", strlen("a b/ü/..x/.y")), 0);
	assert_int_equal(path_check("a/..", 4), -EINVAL);
	assert_int_equal(path_check("a\0b", 3), -EINVAL);
	memset(longname, 'n', 256);
	longname[256] = '\0';
	assert_int_equal(path_check(longname, 256), -ENAMETOOLONG);
	memset(longpath, 'p', sizeof(longpath));
	for (size_t i = 100; i < sizeof(longpath); i += 101)
		longpath[i] = '/';
	assert_int_equal(path_check(longpath, 4095), 0); /* PATH_MAX - 1 bytes */
	assert_int_equal(path_check(longpath, 4096), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_every_op),
		cmocka_unit_test(test_every_bit_flip_rejected),
		cmocka_unit_test(test_wrong_salt_rejected),
		cmocka_unit_test(test_torn_prefixes),
		cmocka_unit_test(test_encode_refuses_bad_paths),
		cmocka_unit_test(test_decode_refuses_forged_path),
		cmocka_unit_test(test_symlink_targets),
		cmocka_unit_test(test_path_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
