/* Journal records: the encoding of one mutating operation.
 *
 * RECORD FORMAT, version 1 (all integers little-endian)
 *
 *   off size field
 *     0    8 checksum   XXH3-64 of bytes [8, total_len), seeded with the
 *                       segment's salt (see journal.c)
 *     8    4 total_len  whole record including padding; multiple of 8
 *    12    2 op         enum rec_op
 *    14    2 flags      REC_F_*
 *    16    8 lsn        log sequence number, +1 per record, never reused
 *    24    8 epoch      the master epoch that produced the record
 *    32    8 time_ns    master wall clock at logging; becomes the mtime of
 *                       what the record changes, on every node
 *    40    4 mode       44 4 uid    48 4 gid    52 4 arg (rename/fallocate/
 *                                               xattr flags)
 *    56    8 rdev       64 8 off    72 8 len
 *    80    8 atime_sec  88 8 mtime_sec   96 4 atime_nsec  100 4 mtime_nsec
 *   104    2 path_len  106 2 path2_len  108 2 name_len  110 2 zero
 *   112    4 data_len  116 4 zero
 *   120      path, NUL; path2, NUL; name, NUL; data; zero padding to 8
 *
 * VALIDITY RULE: a record is valid iff total_len fits in what was read, is a
 * multiple of 8 and equals 120 + the three strings with their NULs + data_len
 * rounded up to 8; the checksum matches; op is known; every string ends at
 * its NUL and path/path2 pass path_check() (a symlink's target is shorter than
 * PATH_MAX instead), and an xattr name is shorter than 256 bytes: exactly
 * what rec_encode writes. The salt ties a record to its
 * segment, so bytes left over from an older file never pass as records.
 * A string whose length field is 0xFFFF is absent (NULL).
 *
 * Compatibility: a new field means a new version of the segment header
 * (journal.c), never a silent reinterpretation of these bytes.
 */
#include "fs.h"
#include "../utils/utils.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#define STR_ABSENT 0xFFFFu

static const char *const op_names[REC_OP_MAX] = {
	[REC_NOOP] = "noop",	       [REC_CREATE] = "create",
	[REC_MKNOD] = "mknod",	       [REC_MKDIR] = "mkdir",
	[REC_SYMLINK] = "symlink",     [REC_LINK] = "link",
	[REC_UNLINK] = "unlink",       [REC_RMDIR] = "rmdir",
	[REC_RENAME] = "rename",       [REC_WRITE] = "write",
	[REC_TRUNCATE] = "truncate",   [REC_FALLOCATE] = "fallocate",
	[REC_CHMOD] = "chmod",	       [REC_CHOWN] = "chown",
	[REC_UTIMENS] = "utimens",     [REC_SETXATTR] = "setxattr",
	[REC_REMOVEXATTR] = "removexattr",
};

const char *rec_op_name(unsigned op)
{
	return op < REC_OP_MAX ? op_names[op] : "?";
}

static size_t str_size(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

size_t rec_head_size(const struct rec *r)
{
	return REC_HEAD_FIXED + str_size(r->path) + str_size(r->path2) + str_size(r->name);
}

static size_t align_up(size_t n)
{
	return (n + REC_ALIGN - 1) & ~(size_t)(REC_ALIGN - 1);
}

size_t rec_size(const struct rec *r)
{
	return align_up(rec_head_size(r) + r->data_len);
}

static const uint8_t zero_pad[REC_ALIGN];

static uint64_t rec_checksum(const uint8_t *head, size_t head_len, const void *data,
			     size_t data_len, size_t pad, uint64_t salt)
{
	XXH3_state_t st;

	/* A state on the stack must be initialised before a seeded reset, or
	 * xxhash may reuse a stale secret left there (xxhash.h, XXH3_INITSTATE). */
	XXH3_INITSTATE(&st);
	XXH3_64bits_reset_withSeed(&st, salt);
	XXH3_64bits_update(&st, head + 8, head_len - 8);
	if (data_len)
		XXH3_64bits_update(&st, data, data_len);
	if (pad)
		XXH3_64bits_update(&st, zero_pad, pad);
	return XXH3_64bits_digest(&st);
}

/* kind: 1 = a path in the tree, 0 = an xattr name, 2 = a symlink target */
static int put_str(uint8_t *head, size_t *pos, uint8_t *lenp, const char *s, int is_path)
{
	size_t n;

	if (!s) {
		le_put16(lenp, STR_ABSENT);
		return 0;
	}
	n = strlen(s);
	if (is_path == 1) {
		int rc = path_check(s, n);
		if (rc < 0)
			return rc;
	} else if (is_path == 0 && n >= 256) {
		return -ERANGE;
	} else if (n >= PATH_MAX) {
		return -ENAMETOOLONG;
	}
	le_put16(lenp, (uint16_t)n);
	memcpy(head + *pos, s, n + 1);
	*pos += n + 1;
	return 0;
}

ssize_t rec_encode(const struct rec *r, uint64_t salt, uint8_t *head, size_t head_cap)
{
	size_t hlen = rec_head_size(r), total, pos = REC_HEAD_FIXED;
	int rc;

	if (r->op >= REC_OP_MAX || r->data_len > REC_MAX_DATA)
		return -E2BIG;
	if (head_cap < hlen)
		return -ENOBUFS;
	if (!r->path)
		return -EINVAL;
	total = align_up(hlen + r->data_len);
	memset(head, 0, REC_HEAD_FIXED);
	le_put32(head + 8, (uint32_t)total);
	le_put16(head + 12, r->op);
	le_put16(head + 14, r->flags);
	le_put64(head + 16, r->lsn);
	le_put64(head + 24, r->epoch);
	le_put64(head + 32, r->time_ns);
	le_put32(head + 40, r->mode);
	le_put32(head + 44, r->uid);
	le_put32(head + 48, r->gid);
	le_put32(head + 52, r->arg);
	le_put64(head + 56, r->rdev);
	le_put64(head + 64, r->off);
	le_put64(head + 72, r->len);
	le_put64(head + 80, (uint64_t)r->atime_sec);
	le_put64(head + 88, (uint64_t)r->mtime_sec);
	le_put32(head + 96, r->atime_nsec);
	le_put32(head + 100, r->mtime_nsec);
	le_put32(head + 112, r->data_len);
	if ((rc = put_str(head, &pos, head + 104, r->path, 1)) < 0 ||
	    (rc = put_str(head, &pos, head + 106, r->path2, r->op == REC_SYMLINK ? 2 : 1)) < 0 ||
	    (rc = put_str(head, &pos, head + 108, r->name, 0)) < 0)
		return rc;
	le_put64(head, rec_checksum(head, hlen, r->data, r->data_len, total - hlen - r->data_len,
				 salt));
	return (ssize_t)hlen;
}

/* Takes a string from the record; returns its encoded size or -EBADMSG.
 * kind as for put_str: what rec_encode refuses to write is refused here too,
 * so every record a node accepts (a slave's batch) it can log again. */
static ssize_t get_str(const uint8_t *buf, size_t pos, size_t end, uint16_t len,
		       const char **out, int kind)
{
	if (len == STR_ABSENT) {
		*out = NULL;
		return 0;
	}
	if (pos + len + 1 > end || buf[pos + len] != '\0')
		return -EBADMSG;
	if (memchr(buf + pos, '\0', len))
		return -EBADMSG;
	if (kind == 1 && path_check((const char *)buf + pos, len) < 0)
		return -EBADMSG;
	if ((kind == 0 && len >= 256) || (kind == 2 && len >= PATH_MAX))
		return -EBADMSG;
	*out = (const char *)buf + pos;
	return (ssize_t)len + 1;
}

ssize_t rec_decode(const uint8_t *buf, size_t avail, uint64_t salt, struct rec *r)
{
	uint32_t total, data_len;
	size_t pos = REC_HEAD_FIXED, expect;
	ssize_t n;
	uint16_t op;

	if (avail < 12)
		return -EAGAIN;
	total = le_get32(buf + 8);
	if (total < REC_HEAD_FIXED || total % REC_ALIGN ||
	    total > REC_MAX_DATA + REC_HEAD_FIXED + 3 * (PATH_MAX + 1) + REC_ALIGN)
		return -EBADMSG;
	if (total > avail)
		return -EAGAIN;
	if (XXH3_64bits_withSeed(buf + 8, total - 8, salt) != le_get64(buf))
		return -EBADMSG;
	op = le_get16(buf + 12);
	if (op >= REC_OP_MAX)
		return -EBADMSG;
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->flags = le_get16(buf + 14);
	r->lsn = le_get64(buf + 16);
	r->epoch = le_get64(buf + 24);
	r->time_ns = le_get64(buf + 32);
	r->mode = le_get32(buf + 40);
	r->uid = le_get32(buf + 44);
	r->gid = le_get32(buf + 48);
	r->arg = le_get32(buf + 52);
	r->rdev = le_get64(buf + 56);
	r->off = le_get64(buf + 64);
	r->len = le_get64(buf + 72);
	r->atime_sec = (int64_t)le_get64(buf + 80);
	r->mtime_sec = (int64_t)le_get64(buf + 88);
	r->atime_nsec = le_get32(buf + 96);
	r->mtime_nsec = le_get32(buf + 100);
	data_len = le_get32(buf + 112);
	if ((n = get_str(buf, pos, total, le_get16(buf + 104), &r->path, 1)) < 0 || !r->path)
		return -EBADMSG;
	pos += (size_t)n;
	if ((n = get_str(buf, pos, total, le_get16(buf + 106), &r->path2,
			 op == REC_SYMLINK ? 2 : 1)) < 0)
		return -EBADMSG;
	pos += (size_t)n;
	if ((n = get_str(buf, pos, total, le_get16(buf + 108), &r->name, 0)) < 0)
		return -EBADMSG;
	pos += (size_t)n;
	expect = align_up(pos + data_len);
	if (expect != total || data_len > REC_MAX_DATA)
		return -EBADMSG;
	r->data = data_len ? buf + pos : NULL;
	r->data_len = data_len;
	return (ssize_t)total;
}

int rec_format(const struct rec *r, char *buf, size_t size)
{
	int n = snprintf(buf, size, "lsn=%" PRIu64 " epoch=%" PRIu64 " %-11s %s", r->lsn,
			 r->epoch, rec_op_name(r->op), *r->path ? r->path : "/");
	size_t len;

	if (n < 0 || (size_t)n >= size)
		return n;
	len = (size_t)n;
#define ADD(...)                                                                  \
	do {                                                                      \
		int m = snprintf(buf + len, size - len, __VA_ARGS__);             \
		if (m > 0 && (size_t)m < size - len)                              \
			len += (size_t)m;                                         \
	} while (0)
	switch (r->op) {
	case REC_CREATE: case REC_MKDIR: case REC_MKNOD:
		ADD(" mode=%o uid=%u gid=%u", r->mode, r->uid, r->gid);
		if (r->op == REC_MKNOD)
			ADD(" rdev=%" PRIu64, r->rdev);
		break;
	case REC_SYMLINK:
		ADD(" -> %s uid=%u gid=%u", r->path2, r->uid, r->gid);
		break;
	case REC_LINK: case REC_RENAME:
		ADD(" to %s", r->path2 ? r->path2 : "?");
		if (r->arg)
			ADD(" flags=0x%x", r->arg);
		break;
	case REC_WRITE:
		ADD(" off=%" PRIu64 " len=%u", r->off, r->data_len);
		break;
	case REC_TRUNCATE:
		ADD(" size=%" PRIu64, r->off);
		break;
	case REC_FALLOCATE:
		ADD(" mode=0x%x off=%" PRIu64 " len=%" PRIu64, r->arg, r->off, r->len);
		break;
	case REC_CHMOD:
		ADD(" mode=%o", r->mode);
		break;
	case REC_CHOWN:
		ADD(" uid=%d gid=%d", (int)r->uid, (int)r->gid);
		break;
	case REC_UTIMENS:
		ADD(" atime=%" PRId64 ".%09u mtime=%" PRId64 ".%09u", r->atime_sec, r->atime_nsec,
		    r->mtime_sec, r->mtime_nsec);
		break;
	case REC_SETXATTR:
		ADD(" name=%s len=%u flags=%u", r->name ? r->name : "?", r->data_len, r->arg);
		break;
	case REC_REMOVEXATTR:
		ADD(" name=%s", r->name ? r->name : "?");
		break;
	default:
		break;
	}
#undef ADD
	return (int)len;
}
