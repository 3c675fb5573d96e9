/* Verify: manifests of hand-made item streams (holes hash as zeros, hard
 * links take their file's attributes), a strict encoding, a comparison that
 * names what differs, and on real stores a repair whose records make a
 * damaged slave match while leaving the master as it was. */
#include "unit.h"
#include "../../recovery/recovery.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define MIB (1u << 20)

/* ---- hand-made item streams (format at the top of recovery/snapshot.c) ---- */

struct stream {
	uint8_t *p;
	size_t len, cap;
	uint64_t entries, files, bytes;
};

static void put(struct stream *s, const void *d, size_t n)
{
	if (s->len + n > s->cap) {
		while (s->len + n > s->cap)
			s->cap = s->cap ? 2 * s->cap : 65536;
		s->p = realloc(s->p, s->cap);
		assert_non_null(s->p);
	}
	if (n)
		memcpy(s->p + s->len, d, n);
	s->len += n;
}

static void item(struct stream *s, uint32_t type, const void *body, uint32_t len)
{
	uint8_t h[8];

	le_put32(h, type);
	le_put32(h + 4, len);
	put(s, h, 8);
	put(s, body, len);
}

static void entry(struct stream *s, uint32_t type, uint32_t mode, uint32_t uid, uint32_t gid,
		  uint64_t aux, const char *path, const char *target, const uint8_t *xa, uint32_t xl)
{
	size_t pl = strlen(path), tl = target ? strlen(target) : 0;
	uint8_t b[48 + 8192] = { 0 };

	le_put32(b, mode);
	le_put32(b + 4, uid);
	le_put32(b + 8, gid);
	le_put64(b + 16, 1700000000);
	le_put64(b + 24, aux);
	le_put32(b + 32, (uint32_t)pl);
	le_put32(b + 36, (uint32_t)tl);
	le_put32(b + 40, xl);
	memcpy(b + 48, path, pl);
	if (tl)
		memcpy(b + 48 + pl, target, tl);
	if (xl)
		memcpy(b + 48 + pl + tl, xa, xl);
	item(s, type, b, (uint32_t)(48 + pl + tl + xl));
	s->entries++;
	if (type == 3) {
		s->files++;
		s->bytes += aux;
	}
}

static void data(struct stream *s, const uint8_t *d, uint32_t len)
{
	item(s, 7, d, len);
}

static void hole(struct stream *s, uint64_t len)
{
	uint8_t b[8];

	le_put64(b, len);
	item(s, 8, b, 8);
}

static uint32_t xa_add(uint8_t *blk, uint32_t at, const char *name, const char *val)
{
	uint32_t nl = (uint32_t)strlen(name), vl = (uint32_t)strlen(val);

	le_put32(blk + at, nl);
	le_put32(blk + at + 4, vl);
	memcpy(blk + at + 8, name, nl);
	memcpy(blk + at + 8 + nl, val, vl);
	return at + 8 + nl + vl;
}

/* HEAD, the entries, TRAILER. */
static uint8_t *stream_wrap(struct stream *body, uint64_t lsn, size_t *len)
{
	struct stream s = { 0 };
	uint8_t h[56] = "RPLFSNAP", t[24];

	le_put32(h + 8, 1);
	le_put64(h + 16, lsn);
	le_put64(h + 24, 3);
	le_put64(h + 32, body->entries);
	le_put64(h + 40, body->files);
	le_put64(h + 48, body->bytes);
	item(&s, 1, h, sizeof(h));
	put(&s, body->p, body->len);
	le_put64(t, body->entries);
	le_put64(t + 8, body->files);
	le_put64(t + 16, body->bytes);
	item(&s, 10, t, sizeof(t));
	free(body->p);
	*len = s.len;
	return s.p;
}

struct variant {
	int dense;          /* d/big's hole sent as zero DATA */
	int flip;           /* a byte of d/big's block 2 flipped */
	uint32_t fmode, fuid;
	int no_s, extra;
	const char *target;
	const char *xval;   /* user.a of d/big */
	int xreverse;       /* d/big's xattrs in the other order */
	uint64_t lsn;
};

static const struct variant base = { .fmode = 0644, .fuid = 1000, .target = "d/f", .xval = "1",
				     .lsn = 42 };

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 131 + (i >> 12));
}

/* "", d, d/big (block 0 data, block 1 hole, half a block 2 of data), d/f,
 * h (hard link of d/f), n (char device), s (symlink), maybe zz. */
static uint8_t *make_stream(const struct variant *v, size_t *len)
{
	struct stream s = { 0 };
	uint8_t xa[256], *buf = malloc(MIB);
	uint32_t xl = 0;

	assert_non_null(buf);
	xl = xa_add(xa, 0, "user.root", "r");
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, xa, xl);
	entry(&s, 2, S_IFDIR | 0750, 1000, 100, 0, "d", NULL, NULL, 0);
	entry(&s, 3, S_IFREG | 0644, 0, 0, 2 * MIB + MIB / 2, "d/big", NULL, NULL, 0);
	for (size_t i = 0; i < MIB; i++)
		buf[i] = pattern(i);
	data(&s, buf, MIB / 2);
	data(&s, buf + MIB / 2, MIB / 2);
	if (v->dense) {
		memset(buf, 0, MIB);
		data(&s, buf, MIB);
	} else {
		hole(&s, MIB);
	}
	for (size_t i = 0; i < MIB / 2; i++)
		buf[i] = pattern(i + 7);
	if (v->flip)
		buf[100] ^= 1;
	data(&s, buf, MIB / 2);
	xl = 0;
	if (v->xreverse) {
		xl = xa_add(xa, xl, "user.b", "2");
		xl = xa_add(xa, xl, "user.a", v->xval);
	} else {
		xl = xa_add(xa, xl, "user.a", v->xval);
		xl = xa_add(xa, xl, "user.b", "2");
	}
	item(&s, 9, xa, xl);
	entry(&s, 3, S_IFREG | v->fmode, v->fuid, 100, 100, "d/f", NULL, NULL, 0);
	data(&s, (const uint8_t *)"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", 100);
	item(&s, 9, NULL, 0);
	entry(&s, 4, 0, 0, 0, 0, "h", "d/f", NULL, 0);
	entry(&s, 6, S_IFCHR | 0600, 0, 0, makedev(1, 3), "n", NULL, NULL, 0);
	if (!v->no_s)
		entry(&s, 5, S_IFLNK | 0777, 0, 0, 0, "s", v->target, NULL, 0);
	if (v->extra) {
		entry(&s, 3, S_IFREG | 0600, 0, 0, 3, "zz", NULL, NULL, 0);
		data(&s, (const uint8_t *)"abc", 3);
		item(&s, 9, NULL, 0);
	}
	free(buf);
	return stream_wrap(&s, v->lsn, len);
}

static int build_split(const uint8_t *buf, size_t len, size_t split, struct verify_manifest *m)
{
	struct verify_builder *b;
	int rc = 0;

	assert_int_equal(verify_builder_new(&b), 0);
	for (size_t off = 0; off < len && rc == 0; off += split)
		rc = verify_builder_feed(b, buf + off, len - off < split ? len - off : split);
	if (rc == 0)
		rc = verify_builder_finish(b, m);
	verify_builder_free(b);
	return rc;
}

static void build_variant(const struct variant *v, struct verify_manifest *m)
{
	size_t len;
	uint8_t *buf = make_stream(v, &len);

	assert_int_equal(build_split(buf, len, len, m), 0);
	free(buf);
}

static void encode(const struct verify_manifest *m, uint8_t **out, size_t *len)
{
	assert_int_equal(verify_manifest_encode(m, out, len), 0);
}

/* ---- manifests from item streams ---- */

static void test_manifest_from_stream(void **state)
{
	struct verify_manifest m, m2, dense;
	const struct verify_entry *e, *f, *h;
	uint8_t zero_digest[32], whole[32], le[8], *buf, *enc1, *enc2;
	crypto_generichash_state gs;
	size_t len, l1, l2;
	(void)state;

	buf = make_stream(&base, &len);
	assert_int_equal(build_split(buf, len, len, &m), 0);
	assert_int_equal(m.n, 7);
	assert_int_equal(m.lsn, 42);
	assert_int_equal(m.epoch, 3);
	assert_int_equal(m.files, 2);
	assert_int_equal(m.file_bytes, 2 * MIB + MIB / 2 + 100);
	assert_int_equal(m.bytes_hashed, MIB + MIB / 2 + 100);
	for (size_t i = 1; i < m.n; i++)
		assert_true(strcmp(m.entries[i - 1].path, m.entries[i].path) < 0);
	assert_string_equal(m.entries[0].path, "");
	assert_int_equal(m.entries[0].xattr_count, 1);
	assert_memory_equal(m.entries[0].xattr_names, "user.root", 10);

	e = verify_manifest_find(&m, "d/big");
	assert_non_null(e);
	assert_int_equal(e->type, S_IFREG);
	assert_int_equal(e->size, 2 * MIB + MIB / 2);
	assert_int_equal(e->nblocks, 3);
	assert_int_equal(e->xattr_count, 2);
	assert_int_equal(e->xattr_names_len, 14);
	assert_memory_equal(e->xattr_names, "user.a\0user.b\0", 14);
	/* The hole hashes as a block of zeros; the whole digest is the tree. */
	uint8_t *zero = calloc(1, MIB);
	crypto_generichash(zero_digest, 32, zero, MIB, NULL, 0);
	free(zero);
	assert_memory_equal(e->blocks + 32, zero_digest, 32);
	le_put64(le, e->size);
	crypto_generichash_init(&gs, NULL, 0, 32);
	crypto_generichash_update(&gs, le, 8);
	crypto_generichash_update(&gs, e->blocks, 3 * 32);
	crypto_generichash_final(&gs, whole, 32);
	assert_memory_equal(e->digest, whole, 32);

	f = verify_manifest_find(&m, "d/f");
	h = verify_manifest_find(&m, "h");
	assert_non_null(f);
	assert_non_null(h);
	assert_string_equal(h->link, "d/f");
	assert_string_equal(f->link, "");
	assert_int_equal(h->type, S_IFREG);
	assert_int_equal(h->perm, 0644);
	assert_int_equal(h->uid, 1000);
	assert_int_equal(h->size, 100);
	assert_memory_equal(h->digest, f->digest, 32);
	e = verify_manifest_find(&m, "n");
	assert_int_equal(e->type, S_IFCHR);
	assert_int_equal(e->rdev, makedev(1, 3));
	e = verify_manifest_find(&m, "s");
	assert_int_equal(e->type, S_IFLNK);
	assert_string_equal(e->target, "d/f");
	assert_null(verify_manifest_find(&m, "nothing"));

	/* Any split gives the same manifest. */
	encode(&m, &enc1, &l1);
	for (size_t split = 1; split <= 65536; split *= 8) {
		if (split == 1) /* byte by byte: only the parts around the content */
			continue;
		assert_int_equal(build_split(buf, len, split, &m2), 0);
		encode(&m2, &enc2, &l2);
		assert_int_equal(l1, l2);
		assert_memory_equal(enc1, enc2, l1);
		free(enc2);
		verify_manifest_free(&m2);
	}
	free(buf);

	/* Sparse or dense, in any xattr order: the same bytes compare equal. */
	struct variant v = base;
	v.dense = 1;
	v.xreverse = 1;
	build_variant(&v, &dense);
	assert_int_equal(dense.bytes_hashed, 2 * MIB + MIB / 2 + 100);
	struct verify_diff *d;
	size_t n;
	assert_int_equal(verify_compare(&m, &dense, &d, &n), 0);
	assert_int_equal(n, 0);
	assert_null(d);
	free(enc1);
	verify_manifest_free(&dense);
	verify_manifest_free(&m);
}

static int build_bytes(const uint8_t *buf, size_t len)
{
	struct verify_manifest m;
	int rc = build_split(buf, len, len, &m);

	if (rc == 0)
		verify_manifest_free(&m);
	return rc;
}

static void test_builder_refuses(void **state)
{
	struct stream s = { 0 };
	uint8_t *buf, *bad;
	size_t len;
	(void)state;

	buf = make_stream(&base, &len);
	/* Cut anywhere: incomplete. */
	for (size_t cut = 0; cut < len; cut += cut < 4096 ? 1 : 65537)
		assert_int_not_equal(build_bytes(buf, cut), 0);
	/* Anything after the trailer. */
	bad = malloc(len + 8);
	memcpy(bad, buf, len);
	memset(bad + len, 0, 8);
	assert_int_equal(build_bytes(bad, len + 8), -EBADMSG);
	/* Unknown version. */
	memcpy(bad, buf, len);
	le_put32(bad + 8 + 8, 2);
	assert_int_equal(build_bytes(bad, len), -EPROTO);
	free(bad);
	free(buf);

	/* Paths that leave the tree; a root that is not first. */
	const char *paths[] = { "a/../b", "/abs", "a//b", "..", "a/" };
	for (size_t i = 0; i < sizeof(paths) / sizeof(*paths); i++) {
		memset(&s, 0, sizeof(s));
		entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
		entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, paths[i], NULL, NULL, 0);
		buf = stream_wrap(&s, 1, &len);
		assert_int_equal(build_bytes(buf, len), -EINVAL);
		free(buf);
	}
	memset(&s, 0, sizeof(s));
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "a", NULL, NULL, 0);
	buf = stream_wrap(&s, 1, &len);
	assert_int_equal(build_bytes(buf, len), -EINVAL);
	free(buf);
	/* More content than the size; a hard link to nothing; a path twice. */
	memset(&s, 0, sizeof(s));
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&s, 3, S_IFREG | 0644, 0, 0, 2, "f", NULL, NULL, 0);
	data(&s, (const uint8_t *)"abc", 3);
	item(&s, 9, NULL, 0);
	s.bytes++;
	buf = stream_wrap(&s, 1, &len);
	assert_int_equal(build_bytes(buf, len), -EBADMSG);
	free(buf);
	memset(&s, 0, sizeof(s));
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&s, 4, 0, 0, 0, 0, "h", "nofile", NULL, 0);
	buf = stream_wrap(&s, 1, &len);
	assert_int_equal(build_bytes(buf, len), -EBADMSG);
	free(buf);
	memset(&s, 0, sizeof(s));
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "x", NULL, NULL, 0);
	entry(&s, 6, S_IFIFO | 0644, 0, 0, 0, "x", NULL, NULL, 0);
	buf = stream_wrap(&s, 1, &len);
	assert_int_equal(build_bytes(buf, len), -EBADMSG);
	free(buf);
	/* One xattr name twice. */
	uint8_t xa[64];
	uint32_t xl = xa_add(xa, 0, "user.a", "1");
	xl = xa_add(xa, xl, "user.a", "2");
	memset(&s, 0, sizeof(s));
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, xa, xl);
	buf = stream_wrap(&s, 1, &len);
	assert_int_equal(build_bytes(buf, len), -EBADMSG);
	free(buf);
}

/* ---- the encoding ---- */

/* Recomputes the checksum after a deliberate change. */
static void reseal(uint8_t *buf, size_t len)
{
	crypto_generichash(buf + len - 32, 32, buf, len - 32, NULL, 0);
}

/* Offset of entry i's path in an encoding (layout at the top of verify.c). */
static size_t path_at(const uint8_t *buf, size_t i)
{
	size_t pos = 64;

	for (;; i--) {
		const uint8_t *q = buf + pos;
		uint32_t mode = le_get32(q);
		uint64_t size = le_get64(q + 16);
		size_t nb = S_ISREG(mode) ? (size + MIB - 1) / MIB : 0;
		if (i == 0)
			return pos + 112;
		pos += 112 + le_get32(q + 32) + le_get32(q + 36) + le_get32(q + 40) + 3 +
		       le_get32(q + 44) + nb * 32;
	}
}

static void test_encoding(void **state)
{
	struct verify_manifest m, d;
	uint8_t *enc, *enc2, *bad;
	size_t len, len2;
	(void)state;

	build_variant(&base, &m);
	encode(&m, &enc, &len);
	assert_int_equal(verify_manifest_decode(enc, len, &d), 0);
	assert_int_equal(d.n, m.n);
	assert_int_equal(d.lsn, m.lsn);
	assert_int_equal(d.epoch, m.epoch);
	assert_int_equal(d.files, m.files);
	assert_int_equal(d.file_bytes, m.file_bytes);
	assert_int_equal(d.bytes_hashed, m.bytes_hashed);
	for (size_t i = 0; i < m.n; i++) {
		const struct verify_entry *a = &m.entries[i], *b = &d.entries[i];
		assert_string_equal(a->path, b->path);
		assert_string_equal(a->target, b->target);
		assert_string_equal(a->link, b->link);
		assert_int_equal(a->type, b->type);
		assert_int_equal(a->perm, b->perm);
		assert_int_equal(a->uid, b->uid);
		assert_int_equal(a->gid, b->gid);
		assert_int_equal(a->size, b->size);
		assert_int_equal(a->rdev, b->rdev);
		assert_int_equal(a->nblocks, b->nblocks);
		assert_int_equal(a->xattr_count, b->xattr_count);
		assert_int_equal(a->xattr_names_len, b->xattr_names_len);
		assert_memory_equal(a->xattr_names, b->xattr_names, a->xattr_names_len);
		assert_memory_equal(a->xattr_digest, b->xattr_digest, 32);
		assert_memory_equal(a->digest, b->digest, 32);
		if (a->nblocks)
			assert_memory_equal(a->blocks, b->blocks, a->nblocks * 32);
	}
	struct verify_diff *diffs;
	size_t n;
	assert_int_equal(verify_compare(&m, &d, &diffs, &n), 0);
	assert_int_equal(n, 0);
	encode(&d, &enc2, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(enc, enc2, len);
	free(enc2);
	verify_manifest_free(&d);

	/* Truncated anywhere, any flipped bit, a byte more: refused, m untouched. */
	memset(&d, 0x5a, sizeof(d));
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(verify_manifest_decode(enc, cut, &d), -EBADMSG);
	bad = malloc(len + 1);
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, enc, len);
		bad[i] ^= (uint8_t)(1u << (i % 8));
		int rc = verify_manifest_decode(bad, len, &d);
		assert_true(rc == -EBADMSG || (i >= 8 && i < 12 && rc == -EPROTO));
	}
	assert_int_equal(((uint8_t *)&d)[0], 0x5a);
	memcpy(bad, enc, len - 32);
	bad[len - 32] = 0;
	memcpy(bad + len - 31, enc + len - 32, 32);
	reseal(bad, len + 1);
	assert_int_equal(verify_manifest_decode(bad, len + 1, &d), -EBADMSG);
	assert_int_equal(verify_manifest_decode(enc, 0, &d), -EBADMSG);

	/* Sealed but wrong: a path with an empty component, an order broken,
	 * a version from the future, an entry count too high. */
	size_t at = path_at(enc, 2); /* "d/big" */
	memcpy(bad, enc, len);
	assert_memory_equal(bad + at, "d/big", 6);
	memcpy(bad + at, "d//ig", 5);
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EBADMSG);
	memcpy(bad, enc, len);
	memcpy(bad + at, "d/..", 4);
	bad[at + 4] = 'x';
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), 0); /* "d/..x" is a name */
	verify_manifest_free(&d);
	memcpy(bad, enc, len);
	at = path_at(enc, 5); /* "n" -> "a": after "h" */
	assert_memory_equal(bad + at, "n", 2);
	bad[at] = 'a';
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EBADMSG);
	memcpy(bad, enc, len);
	le_put32(bad + 8, 3);
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EPROTO);
	memcpy(bad, enc, len);
	le_put64(bad + 32, m.n + 1);
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EBADMSG);
	memcpy(bad, enc, len);
	le_put64(bad + 40, m.files + 1);
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EBADMSG);
	memcpy(bad, enc, len);
	at = path_at(enc, 3); /* "d/f": a size that claims blocks nobody sent */
	le_put64(bad + at - 112 + 16, 1ull << 62);
	reseal(bad, len);
	assert_int_equal(verify_manifest_decode(bad, len, &d), -EBADMSG);
	free(bad);
	free(enc);
	verify_manifest_free(&m);
}

/* ---- comparing ---- */

static void compare_variant(const struct variant *v, struct verify_diff **d, size_t *n,
			    struct verify_manifest *m, struct verify_manifest *s)
{
	build_variant(&base, m);
	build_variant(v, s);
	assert_int_equal(verify_compare(m, s, d, n), 0);
}

static void expect_one(const struct variant *v, const char *path, unsigned what, const char *line)
{
	struct verify_manifest m, s;
	struct verify_diff *d;
	char buf[256];
	size_t n;

	compare_variant(v, &d, &n, &m, &s);
	assert_int_equal(n, 1);
	assert_string_equal(d[0].path, path);
	assert_int_equal(d[0].what, what);
	assert_int_equal(verify_diff_describe(&d[0], &m, &s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, line);
	/* The wrong manifests are noticed; a short buffer is cut, terminated. */
	assert_int_equal(verify_diff_describe(&d[0], &s, &m, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(verify_diff_describe(&d[0], &m, &s, buf, 8), -ENOBUFS);
	assert_int_equal(strlen(buf), 7);
	verify_diffs_free(d, n);
	verify_manifest_free(&m);
	verify_manifest_free(&s);
}

static void test_compare(void **state)
{
	struct verify_manifest m, s;
	struct verify_diff *d;
	struct variant v;
	char buf[256];
	size_t n;
	(void)state;

	compare_variant(&base, &d, &n, &m, &s);
	assert_int_equal(n, 0);
	verify_manifest_free(&m);
	verify_manifest_free(&s);

	v = base;
	v.flip = 1;
	expect_one(&v, "d/big", VERIFY_CONTENT, "d/big: content differs (block 2 of 3)");
	compare_variant(&v, &d, &n, &m, &s);
	assert_int_equal(d[0].nblocks, 1);
	assert_int_equal(d[0].blocks[0], 2);
	assert_true(verify_diff_repairable(&d[0]));
	verify_diffs_free(d, n);
	verify_manifest_free(&m);
	verify_manifest_free(&s);

	v = base;
	v.no_s = 1;
	expect_one(&v, "s", VERIFY_MISSING, "s: missing on slave (symlink)");
	v = base;
	v.extra = 1;
	expect_one(&v, "zz", VERIFY_EXTRA, "zz: extra on slave (file)");
	v = base;
	v.target = "elsewhere";
	expect_one(&v, "s", VERIFY_TARGET, "s: symlink target \"d/f\" vs \"elsewhere\"");
	v = base;
	v.xval = "changed";
	expect_one(&v, "d/big", VERIFY_XATTR, "d/big: xattrs differ (2 vs 2 names)");

	/* A hard link shows its file's difference under its own name too. */
	v = base;
	v.fmode = 0600;
	v.fuid = 7;
	compare_variant(&v, &d, &n, &m, &s);
	assert_int_equal(n, 2);
	assert_string_equal(d[0].path, "d/f");
	assert_string_equal(d[1].path, "h");
	assert_int_equal(d[0].what, VERIFY_MODE | VERIFY_OWNER);
	assert_int_equal(d[1].what, VERIFY_MODE | VERIFY_OWNER);
	assert_int_equal(verify_diff_describe(&d[0], &m, &s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "d/f: mode 0644 vs 0600, owner 1000:100 vs 7:100");
	verify_diffs_free(d, n);
	verify_manifest_free(&m);
	verify_manifest_free(&s);

	/* Not the same position in history. */
	v = base;
	v.lsn = 43;
	build_variant(&base, &m);
	build_variant(&v, &s);
	assert_int_equal(verify_compare(&m, &s, &d, &n), -ESTALE);
	verify_manifest_free(&m);
	verify_manifest_free(&s);
}

/* ---- hard-link groups ---- */

enum { L_BASE, L_REORDER, L_SPLIT_S, L_SPLIT_P, L_SPLIT_MIN, L_SPLIT_F };

/* "", d, f + g (file), s1 + s2 + d/s3 (symlink), p + q (fifo). L_REORDER
 * meets each group by another name first (another readdir order); the
 * L_SPLIT_* ones make one name an inode of its own. */
static uint8_t *link_stream(int v, size_t *len)
{
	struct stream s = { 0 };
	const char *s_first = v == L_REORDER ? "d/s3" : "s1";

	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&s, 2, S_IFDIR | 0755, 0, 0, 0, "d", NULL, NULL, 0);
	entry(&s, 3, S_IFREG | 0644, 0, 0, 3, v == L_REORDER ? "g" : "f", NULL, NULL, 0);
	data(&s, (const uint8_t *)"abc", 3);
	item(&s, 9, NULL, 0);
	if (v == L_SPLIT_F) {
		entry(&s, 3, S_IFREG | 0644, 0, 0, 3, "g", NULL, NULL, 0);
		data(&s, (const uint8_t *)"abc", 3);
		item(&s, 9, NULL, 0);
	} else {
		entry(&s, 4, 0, 0, 0, 0, v == L_REORDER ? "f" : "g", v == L_REORDER ? "g" : "f", NULL, 0);
	}
	entry(&s, 5, S_IFLNK | 0777, 0, 0, 0, s_first, "t", NULL, 0);
	const char *others[] = { "s1", "s2", "d/s3" };
	for (int i = 0; i < 3; i++) {
		if (!strcmp(others[i], s_first))
			continue;
		if ((v == L_SPLIT_S && i == 1) || (v == L_SPLIT_MIN && i == 2))
			entry(&s, 5, S_IFLNK | 0777, 0, 0, 0, others[i], "t", NULL, 0);
		else
			entry(&s, 4, 0, 0, 0, 0, others[i], s_first, NULL, 0);
	}
	entry(&s, 6, S_IFIFO | 0640, 0, 0, 0, v == L_REORDER ? "q" : "p", NULL, NULL, 0);
	if (v == L_SPLIT_P)
		entry(&s, 6, S_IFIFO | 0640, 0, 0, 0, "q", NULL, NULL, 0);
	else
		entry(&s, 4, 0, 0, 0, 0, v == L_REORDER ? "p" : "q", v == L_REORDER ? "q" : "p", NULL, 0);
	return stream_wrap(&s, 42, len);
}

static void link_manifest(int v, struct verify_manifest *m)
{
	size_t len;
	uint8_t *buf = link_stream(v, &len);

	assert_int_equal(build_split(buf, len, len, m), 0);
	free(buf);
}

/* The diffs of comparing base with variant v: exactly the paths given, each
 * a LINK difference, described as given. */
static void expect_link_diffs(int v, size_t k, const char *const *paths, const char *const *lines)
{
	struct verify_manifest m, s;
	struct verify_diff *d;
	char buf[256];
	size_t n;

	link_manifest(L_BASE, &m);
	link_manifest(v, &s);
	assert_int_equal(verify_compare(&m, &s, &d, &n), 0);
	for (size_t i = 0; i < n; i++) {
		verify_diff_describe(&d[i], &m, &s, buf, sizeof(buf));
		print_message("  variant %d: %s\n", v, buf);
	}
	assert_int_equal(n, k);
	for (size_t i = 0; i < k; i++) {
		assert_string_equal(d[i].path, paths[i]);
		assert_int_equal(d[i].what, VERIFY_LINK);
		assert_false(verify_diff_repairable(&d[i]));
		assert_int_equal(verify_diff_describe(&d[i], &m, &s, buf, sizeof(buf)), 0);
		assert_string_equal(buf, lines[i]);
	}
	verify_diffs_free(d, n);
	verify_manifest_free(&m);
	verify_manifest_free(&s);
}

static void test_link_groups(void **state)
{
	struct verify_manifest m, r, d;
	const struct verify_entry *e;
	struct verify_diff *diffs;
	uint8_t *enc, *enc2;
	size_t n, len, len2;
	(void)state;

	/* Every name of a group carries the group's smallest name. */
	link_manifest(L_BASE, &m);
	assert_int_equal(m.n, 9);
	assert_int_equal(m.files, 1);
	static const char *const want[][2] = { { "d/s3", "" },  { "s1", "d/s3" }, { "s2", "d/s3" },
					       { "f", "" },     { "g", "f" },     { "p", "" },
					       { "q", "p" },    { "d", "" } };
	for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
		e = verify_manifest_find(&m, want[i][0]);
		assert_non_null(e);
		assert_string_equal(e->link, want[i][1]);
	}
	e = verify_manifest_find(&m, "s2");
	assert_int_equal(e->type, S_IFLNK);
	assert_string_equal(e->target, "t");
	e = verify_manifest_find(&m, "q");
	assert_int_equal(e->type, S_IFIFO);
	assert_int_equal(e->perm, 0640);
	e = verify_manifest_find(&m, "g");
	assert_int_equal(e->size, 3);

	/* Which name the snapshot met first does not matter. */
	link_manifest(L_REORDER, &r);
	assert_int_equal(verify_compare(&m, &r, &diffs, &n), 0);
	assert_int_equal(n, 0);
	encode(&m, &enc, &len);
	encode(&r, &enc2, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(enc, enc2, len);
	free(enc2);
	verify_manifest_free(&r);

	/* A split group differs at the names that changed group. */
	expect_link_diffs(L_SPLIT_S, 1, (const char *[]){ "s2" },
			  (const char *[]){ "s2: hard links: smallest name of its inode \"d/s3\" vs \"s2\"" });
	expect_link_diffs(L_SPLIT_P, 1, (const char *[]){ "q" },
			  (const char *[]){ "q: hard links: smallest name of its inode \"p\" vs \"q\"" });
	expect_link_diffs(L_SPLIT_F, 1, (const char *[]){ "g" },
			  (const char *[]){ "g: hard links: smallest name of its inode \"f\" vs \"g\"" });
	expect_link_diffs(L_SPLIT_MIN, 2, (const char *[]){ "s1", "s2" },
			  (const char *[]){ "s1: hard links: smallest name of its inode \"d/s3\" vs \"s1\"",
					    "s2: hard links: smallest name of its inode \"d/s3\" vs \"s1\"" });

	/* The encoding keeps the groups; a link that is not a group's smallest
	 * earlier name of the same type is refused. */
	assert_int_equal(verify_manifest_decode(enc, len, &d), 0);
	assert_int_equal(verify_compare(&m, &d, &diffs, &n), 0);
	assert_int_equal(n, 0);
	verify_manifest_free(&d);
	free(enc);
	struct verify_entry *p = (struct verify_entry *)verify_manifest_find(&m, "p");
	struct verify_entry *q = (struct verify_entry *)verify_manifest_find(&m, "q");
	struct verify_entry *s2 = (struct verify_entry *)verify_manifest_find(&m, "s2");
	p->link = "q"; /* a later name */
	q->link = "";
	encode(&m, &enc, &len);
	assert_int_equal(verify_manifest_decode(enc, len, &d), -EBADMSG);
	free(enc);
	p->link = "";
	q->link = "p";
	s2->link = "p"; /* a fifo for a symlink */
	encode(&m, &enc, &len);
	assert_int_equal(verify_manifest_decode(enc, len, &d), -EBADMSG);
	free(enc);
	s2->link = "s1"; /* a name with a link itself */
	encode(&m, &enc, &len);
	assert_int_equal(verify_manifest_decode(enc, len, &d), -EBADMSG);
	free(enc);
	s2->link = "d/s3";
	((struct verify_entry *)verify_manifest_find(&m, "d"))->link = "";
	verify_manifest_free(&m);

	/* A HARDLINK to a directory or to another HARDLINK. */
	struct stream st = { 0 };
	entry(&st, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&st, 2, S_IFDIR | 0755, 0, 0, 0, "d", NULL, NULL, 0);
	entry(&st, 4, 0, 0, 0, 0, "h", "d", NULL, 0);
	enc = stream_wrap(&st, 1, &len);
	assert_int_equal(build_bytes(enc, len), -EBADMSG);
	free(enc);
	memset(&st, 0, sizeof(st));
	entry(&st, 2, S_IFDIR | 0755, 0, 0, 0, "", NULL, NULL, 0);
	entry(&st, 6, S_IFIFO | 0644, 0, 0, 0, "p", NULL, NULL, 0);
	entry(&st, 4, 0, 0, 0, 0, "h", "p", NULL, 0);
	entry(&st, 4, 0, 0, 0, 0, "h2", "h", NULL, 0);
	enc = stream_wrap(&st, 1, &len);
	assert_int_equal(build_bytes(enc, len), -EBADMSG);
	free(enc);
}

/* ---- real stores: the repair ---- */

struct node {
	char path[512];
	struct store st;
	struct journal *j;
	struct commit c;
};

static void node_open(struct node *n, const char *dir, const char *name)
{
	struct recovery_report rep;
	char err[1024] = "";

	snprintf(n->path, sizeof(n->path), "%s/%s", dir, name);
	assert_int_equal(store_init(n->path, err, sizeof(err)), 0);
	assert_int_equal(store_open(n->path, STORE_OPEN_LOCK | STORE_OPEN_STATE, &n->st, err,
				    sizeof(err)), 0);
	assert_int_equal(journal_open(n->st.journalfd, n->st.node_id, 1 << 20, &n->j), 0);
	if (recovery_run(&n->st, n->j, 0, &rep, err, sizeof(err)) != 0)
		fail_msg("recovery_run: %s", err);
	assert_int_equal(journal_start(n->j, rep.journal_last_lsn + 1, n->st.epoch), 0);
	struct apply_ctx ac = { n->st.datafd, n->st.stagingfd };
	commit_init(&n->c, n->j, &ac, n->st.state, rep.journal_last_lsn + 1, n->st.epoch);
}

static void node_close(struct node *n)
{
	commit_release(&n->c);
	journal_close(n->j);
	store_close(&n->st);
}

/* The same operation on both nodes: they stay at the same LSN. */
static void both(struct node *a, struct node *b, struct rec r)
{
	struct rec r2 = r;
	int rc = commit_op(&a->c, &r, -1, NULL);

	if (rc != 0)
		fail_msg("%s %s: %s", rec_op_name(r.op), r.path, strerror(-rc));
	assert_int_equal(commit_op(&b->c, &r2, -1, NULL), 0);
}

static void both_write(struct node *a, struct node *b, const char *path, uint64_t off,
		       size_t len, int seed)
{
	uint8_t *buf = malloc(len);

	for (size_t i = 0; i < len; i++)
		buf[i] = pattern(i * 3 + (size_t)seed);
	both(a, b, (struct rec){ .op = REC_WRITE, .path = path, .off = off, .data = buf,
				 .data_len = (uint32_t)len });
	free(buf);
}

static void manifest_of(struct node *n, struct verify_manifest *m)
{
	struct snapshot *s;

	assert_int_equal(snapshot_create(&n->st, &n->c, &s), 0);
	assert_int_equal(verify_manifest_build(s, m, NULL, NULL), 0);
	assert_int_equal(m->lsn, n->st.state->applied_lsn);
	snapshot_put(s);
}

/* What a slave does with the master's journal from its next LSN on. */
static void ship(struct node *m, struct node *s)
{
	size_t cap = REC_MAX_SIZE + 4096;
	uint8_t *buf = malloc(cap);
	uint64_t last = journal_appended_lsn(m->j);
	struct journal_cursor cur;

	journal_cursor_init(&cur, s->c.next_lsn);
	while (cur.next_lsn <= last) {
		uint64_t salt;
		uint32_t nrec;
		size_t len, pos = 0;
		assert_int_equal(journal_read(m->j, &cur, last, buf, cap, &len, &salt, &nrec), 0);
		for (uint32_t i = 0; i < nrec; i++) {
			struct rec r;
			ssize_t k = rec_decode(buf + pos, len - pos, salt, &r);
			assert_true(k > 0);
			pos += (size_t)k;
			commit_op(&s->c, &r, -1, NULL);
			assert_int_equal(s->c.sticky_err, 0);
		}
	}
	journal_cursor_close(&cur);
	free(buf);
	assert_int_equal(s->c.next_lsn, m->c.next_lsn);
}

static void at(struct node *n, const char *path, struct stat *sb)
{
	assert_int_equal(fstatat(n->st.datafd, *path ? path : ".", sb, AT_SYMLINK_NOFOLLOW), 0);
}

static void pwrite_at(struct node *n, const char *path, const void *d, size_t len, off_t off)
{
	int fd = openat(n->st.datafd, path, O_WRONLY | O_NOFOLLOW);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, d, len, off), (ssize_t)len);
	close(fd);
}

static const struct verify_diff *find_diff(struct verify_diff *d, size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(d[i].path, path))
			return &d[i];
	return NULL;
}

static int same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static void test_repair(void **state)
{
	char *dir = *state, xp[1024], line[256];
	struct node m = { 0 }, s = { 0 };
	struct verify_manifest mm, ms, mm2, mm3;
	struct verify_repair_stats st;
	struct verify_diff *d;
	struct stat sb, sb2;
	size_t n;

	node_open(&m, dir, "m");
	node_open(&s, dir, "s");
	both(&m, &s, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 0755 });
	both(&m, &s, (struct rec){ .op = REC_MKDIR, .path = "d/sub", .mode = 0700, .uid = 3 });
	both(&m, &s, (struct rec){ .op = REC_MKDIR, .path = "gone", .mode = 0750, .uid = 4, .gid = 4 });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "gone/g", .mode = 0640, .uid = 4 });
	both_write(&m, &s, "gone/g", 0, 3000, 1);
	both(&m, &s, (struct rec){ .op = REC_SETXATTR, .path = "gone/g", .name = "user.g",
				   .data = "gv", .data_len = 2 });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "big", .mode = 0644, .uid = 1000 });
	both_write(&m, &s, "big", 0, 3 * MIB, 2);
	both_write(&m, &s, "big", 5 * MIB, 1000, 3); /* blocks 3 and 4: holes */
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "d/f", .mode = 0640, .uid = 1000 });
	both_write(&m, &s, "d/f", 0, 5000, 4);
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "d/f", .path2 = "d/sub/hl" });
	both(&m, &s, (struct rec){ .op = REC_SYMLINK, .path = "sl", .path2 = "d/f", .uid = 9 });
	both(&m, &s, (struct rec){ .op = REC_MKNOD, .path = "p", .mode = S_IFIFO | 0640 });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "x", .mode = 0644 });
	both(&m, &s, (struct rec){ .op = REC_SETXATTR, .path = "x", .name = "user.a", .data = "1",
				   .data_len = 1 });
	both(&m, &s, (struct rec){ .op = REC_SETXATTR, .path = "x", .name = "user.b", .data = "2",
				   .data_len = 1 });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "suid", .mode = 0755, .uid = 1000 });
	both_write(&m, &s, "suid", 0, 4000, 5);
	both(&m, &s, (struct rec){ .op = REC_CHMOD, .path = "suid", .mode = 04755 });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "t", .mode = 0644 });
	both(&m, &s, (struct rec){ .op = REC_SYMLINK, .path = "s3", .path2 = "a" });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "gone2", .mode = 0644 });

	/* The slave's disk goes its own way. */
	pwrite_at(&s, "big", "X", 1, MIB + 5);            /* block 1 */
	pwrite_at(&s, "big", "junk", 4, 4 * MIB + 7);     /* block 4: a hole on the master */
	pwrite_at(&s, "d/f", "more", 4, 5000);            /* size and content */
	assert_int_equal(fchmodat(s.st.datafd, "d/f", 0600, 0), 0);
	assert_int_equal(fchownat(s.st.datafd, "d/sub", 5, 5, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(unlinkat(s.st.datafd, "d/sub/hl", 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "gone/g", 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "gone", AT_REMOVEDIR), 0);
	assert_int_equal(unlinkat(s.st.datafd, "gone2", 0), 0);
	assert_int_equal(mkdirat(s.st.datafd, "extra", 0755), 0);
	close(openat(s.st.datafd, "extra/e1", O_CREAT | O_WRONLY, 0644));
	close(openat(s.st.datafd, "zfile", O_CREAT | O_WRONLY, 0644));
	snprintf(xp, sizeof(xp), "%s/data/x", s.path);
	assert_int_equal(removexattr(xp, "user.b"), 0);
	assert_int_equal(setxattr(xp, "user.c", "3", 1, 0), 0);
	assert_int_equal(setxattr(xp, "user.a", "9", 1, 0), 0);
	snprintf(xp, sizeof(xp), "%s/data/suid", s.path);
	assert_int_equal(truncate(xp, 100), 0);
	assert_int_equal(fchmodat(s.st.datafd, "suid", 0755, 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "t", 0), 0);
	assert_int_equal(mkdirat(s.st.datafd, "t", 0755), 0);
	assert_int_equal(unlinkat(s.st.datafd, "s3", 0), 0);
	assert_int_equal(symlinkat("b", s.st.datafd, "s3"), 0);
	assert_int_equal(unlinkat(s.st.datafd, "sl", 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "p", 0), 0);

	manifest_of(&m, &mm);
	manifest_of(&s, &ms);
	assert_int_equal(mm.lsn, ms.lsn);
	assert_int_equal(verify_compare(&mm, &ms, &d, &n), 0);
	for (size_t i = 0; i < n; i++) {
		verify_diff_describe(&d[i], &mm, &ms, line, sizeof(line));
		print_message("  %s\n", line);
	}
	const struct verify_diff *e = find_diff(d, n, "big");
	assert_non_null(e);
	assert_int_equal(e->what, VERIFY_CONTENT);
	assert_int_equal(e->nblocks, 2);
	assert_int_equal(e->blocks[0], 1);
	assert_int_equal(e->blocks[1], 4);
	assert_int_equal(find_diff(d, n, "d/f")->what, VERIFY_CONTENT | VERIFY_SIZE | VERIFY_MODE);
	assert_int_equal(find_diff(d, n, "d/sub")->what, VERIFY_OWNER);
	assert_int_equal(find_diff(d, n, "d/sub/hl")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "gone")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "gone/g")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "gone2")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "extra")->what, VERIFY_EXTRA);
	assert_int_equal(find_diff(d, n, "extra/e1")->what, VERIFY_EXTRA);
	assert_int_equal(find_diff(d, n, "zfile")->what, VERIFY_EXTRA);
	assert_int_equal(find_diff(d, n, "x")->what, VERIFY_XATTR);
	assert_int_equal(find_diff(d, n, "suid")->what, VERIFY_CONTENT | VERIFY_SIZE | VERIFY_MODE);
	assert_int_equal(find_diff(d, n, "t")->what, VERIFY_TYPE);
	assert_int_equal(find_diff(d, n, "sl")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "p")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "s3")->what, VERIFY_TARGET);
	assert_null(find_diff(d, n, "")); /* its mtime changed, and that is not compared */
	assert_int_equal(n, 16);

	/* The master goes on after the snapshot (the slave gets these by ship
	 * below): the repair logs what the master has now. */
	assert_int_equal(commit_op(&m.c, &(struct rec){ .op = REC_WRITE, .path = "big", .off = 10,
						       .data = "after the snapshot",
						       .data_len = 18 }, -1, NULL), 0);
	assert_int_equal(commit_op(&m.c, &(struct rec){ .op = REC_UNLINK, .path = "gone2" }, -1, NULL), 0);

	assert_int_equal(verify_repair(&m.c, NULL, 0, &st), 0);
	assert_int_equal(st.records, 0);
	manifest_of(&m, &mm2);
	struct stat before[64];
	for (size_t i = 0; i < mm2.n; i++)
		at(&m, mm2.entries[i].path, &before[i]);

	assert_int_equal(verify_repair(&m.c, d, n, &st), 0);
	assert_int_equal(m.c.sticky_err, 0);
	assert_int_equal(st.unrepairable, 2);
	assert_int_equal(st.changed, 1); /* gone2 */
	assert_int_equal(st.failed, 0);
	assert_int_equal(st.repaired, n - 3);
	assert_true(st.records > 0);
	assert_int_equal(st.last_lsn - st.first_lsn + 1, st.records);
	assert_true(journal_durable_lsn(m.j) >= st.last_lsn);

	/* The master is as it was: same manifest, same times. */
	manifest_of(&m, &mm3);
	assert_int_equal(mm3.n, mm2.n);
	mm3.lsn = mm2.lsn;
	verify_diffs_free(d, n);
	assert_int_equal(verify_compare(&mm2, &mm3, &d, &n), 0);
	assert_int_equal(n, 0);
	for (size_t i = 0; i < mm2.n; i++) {
		at(&m, mm2.entries[i].path, &sb);
		if (!same_time(&sb.st_mtim, &before[i].st_mtim))
			fail_msg("the repair changed the master's mtime of \"%s\"", mm2.entries[i].path);
	}

	/* The slave applies the master's journal: only what cannot be repaired
	 * is left, and the repaired objects have the master's times. */
	ship(&m, &s);
	verify_manifest_free(&ms);
	manifest_of(&s, &ms);
	assert_int_equal(verify_compare(&mm3, &ms, &d, &n), -ESTALE);
	mm3.lsn = ms.lsn;
	assert_int_equal(verify_compare(&mm3, &ms, &d, &n), 0);
	for (size_t i = 0; i < n; i++) {
		verify_diff_describe(&d[i], &mm3, &ms, line, sizeof(line));
		print_message("  left: %s\n", line);
	}
	assert_int_equal(n, 2);
	assert_string_equal(d[0].path, "s3");
	assert_string_equal(d[1].path, "t");
	const char *same[] = { "", "big", "d/f", "d/sub", "gone", "gone/g", "suid", "sl", "p" };
	for (size_t i = 0; i < sizeof(same) / sizeof(*same); i++) {
		at(&m, same[i], &sb);
		at(&s, same[i], &sb2);
		if (!same_time(&sb.st_mtim, &sb2.st_mtim))
			fail_msg("\"%s\": slave mtime %ld.%09ld, master %ld.%09ld", same[i],
				 (long)sb2.st_mtim.tv_sec, sb2.st_mtim.tv_nsec,
				 (long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
	}
	/* The further name is a link again, the set-id bit is back. */
	at(&s, "d/f", &sb);
	at(&s, "d/sub/hl", &sb2);
	assert_int_equal(sb.st_ino, sb2.st_ino);
	at(&s, "suid", &sb);
	assert_int_equal(sb.st_mode & 07777, 04755);
	at(&s, "sl", &sb);
	assert_true(S_ISLNK(sb.st_mode));
	assert_int_equal(sb.st_uid, 9);
	at(&s, "p", &sb);
	assert_int_equal(sb.st_mode, S_IFIFO | 0640);

	verify_diffs_free(d, n);
	verify_manifest_free(&mm);
	verify_manifest_free(&ms);
	verify_manifest_free(&mm2);
	verify_manifest_free(&mm3);
	node_close(&m);
	node_close(&s);
}

/* On real stores: a group split by hand on the slave is seen; a lost name
 * of a group comes back as a link, not as an inode of its own. */
static void test_link_groups_real(void **state)
{
	char *dir = *state, line[256];
	struct node m = { 0 }, s = { 0 };
	struct verify_manifest mm, ms;
	struct verify_repair_stats st;
	struct verify_diff *d;
	struct stat sb, sb2;
	size_t n;

	node_open(&m, dir, "m");
	node_open(&s, dir, "s");
	both(&m, &s, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 0755 });
	both(&m, &s, (struct rec){ .op = REC_SYMLINK, .path = "s", .path2 = "t" });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "s", .path2 = "s2" });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "s", .path2 = "d/s3" });
	both(&m, &s, (struct rec){ .op = REC_MKNOD, .path = "p", .mode = S_IFIFO | 0640 });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "p", .path2 = "p2" });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "p", .path2 = "p3" });
	both(&m, &s, (struct rec){ .op = REC_CREATE, .path = "e", .mode = 0644 });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "e", .path2 = "e2" });
	both(&m, &s, (struct rec){ .op = REC_MKNOD, .path = "q", .mode = S_IFIFO | 0600 });
	both(&m, &s, (struct rec){ .op = REC_LINK, .path = "q", .path2 = "q2" });
	manifest_of(&m, &mm);
	manifest_of(&s, &ms);
	assert_int_equal(verify_compare(&mm, &ms, &d, &n), 0);
	assert_int_equal(n, 0);
	assert_string_equal(verify_manifest_find(&mm, "s2")->link, "d/s3");
	assert_string_equal(verify_manifest_find(&mm, "p3")->link, "p");
	verify_manifest_free(&ms);

	/* By hand on the slave: q2 and e2 become inodes of their own (same
	 * type, mode, owner, content), s2 is lost, and so is p, the smallest
	 * name of its group. */
	assert_int_equal(unlinkat(s.st.datafd, "q2", 0), 0);
	assert_int_equal(mknodat(s.st.datafd, "q2", S_IFIFO | 0600, 0), 0);
	assert_int_equal(fchmodat(s.st.datafd, "q2", 0600, 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "e2", 0), 0);
	close(openat(s.st.datafd, "e2", O_CREAT | O_WRONLY, 0644));
	assert_int_equal(fchmodat(s.st.datafd, "e2", 0644, 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "s2", 0), 0);
	assert_int_equal(unlinkat(s.st.datafd, "p", 0), 0);
	manifest_of(&s, &ms);
	assert_int_equal(verify_compare(&mm, &ms, &d, &n), 0);
	for (size_t i = 0; i < n; i++) {
		verify_diff_describe(&d[i], &mm, &ms, line, sizeof(line));
		print_message("  %s\n", line);
	}
	assert_int_equal(n, 6);
	assert_int_equal(find_diff(d, n, "e2")->what, VERIFY_LINK);
	assert_int_equal(find_diff(d, n, "q2")->what, VERIFY_LINK);
	assert_int_equal(find_diff(d, n, "s2")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "p")->what, VERIFY_MISSING);
	assert_int_equal(find_diff(d, n, "p2")->what, VERIFY_LINK);
	assert_int_equal(find_diff(d, n, "p3")->what, VERIFY_LINK);

	/* The repair links the lost names back; a split cannot be undone
	 * without changing the master. */
	assert_int_equal(verify_repair(&m.c, d, n, &st), 0);
	assert_int_equal(st.unrepairable, 4);
	assert_int_equal(st.repaired, 2);
	assert_int_equal(st.failed, 0);
	verify_diffs_free(d, n);
	ship(&m, &s);
	at(&s, "p", &sb);
	at(&s, "p3", &sb2);
	assert_true(S_ISFIFO(sb.st_mode));
	assert_int_equal(sb.st_ino, sb2.st_ino);
	assert_int_equal(sb.st_nlink, 3);
	at(&s, "s", &sb);
	at(&s, "s2", &sb2);
	assert_true(S_ISLNK(sb2.st_mode));
	assert_int_equal(sb.st_ino, sb2.st_ino);
	verify_manifest_free(&ms);
	verify_manifest_free(&mm);
	manifest_of(&m, &mm);
	manifest_of(&s, &ms);
	assert_int_equal(verify_compare(&mm, &ms, &d, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(d[0].path, "e2");
	assert_string_equal(d[1].path, "q2");
	verify_diffs_free(d, n);
	verify_manifest_free(&mm);
	verify_manifest_free(&ms);
	node_close(&m);
	node_close(&s);
}

static int setup(void **state)
{
	*state = tmpdir_make();
	return 0;
}

static int teardown(void **state)
{
	tmpdir_remove(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest_from_stream),
		cmocka_unit_test(test_builder_refuses),
		cmocka_unit_test(test_encoding),
		cmocka_unit_test(test_compare),
		cmocka_unit_test_setup_teardown(test_repair, setup, teardown),
		cmocka_unit_test(test_link_groups),
		cmocka_unit_test_setup_teardown(test_link_groups_real, setup, teardown),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
