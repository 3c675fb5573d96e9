/* Writes the seed corpus of the fuzz targets: small VALID inputs of every
 * kind each target takes (records of every op, a journal segment, batches,
 * every control message, a manifest, a snapshot stream with every item
 * type), made with the project's own encoders, so the fuzzer starts from
 * what real nodes produce.
 *
 *   build/fuzz_gen_corpus tests/fuzz/corpus     (rewrites the seed files)
 *
 * The keys and salts here are the fixed ones of the targets (fuzz_record.c,
 * fuzz_wire.c, fuzz_snapshot.c). Sealed envelopes and snapshot streams
 * carry random nonces, so a rerun rewrites those files with other bytes of
 * the same meaning.
 */
#include "fuzz.h"
#include "../../replicator/replicator.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define REC_SALT 0x5eed5a17c0ffee11ull /* fuzz_record.c */
static const uint8_t key[32] = "replfs fuzz cluster key 32 bytes"; /* fuzz_wire/snapshot */

static const char *outdir;

static void put_file(const char *target, const char *name, const void *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	if (!(f = fopen(path, "wb")) || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "fuzz_gen_corpus: cannot write %s\n", path);
		exit(1);
	}
}

/* ---- records ---------------------------------------------------------- */

static struct rec sample(unsigned op, uint64_t lsn)
{
	static const char data[] = "hello, journal";
	struct rec r = { .op = (uint16_t)op, .lsn = lsn, .epoch = 2, .time_ns = 1700000000123456789ull,
			 .mode = 0100644, .uid = 1000, .gid = 100, .path = "dir/file" };

	switch (op) {
	case REC_MKDIR: r.mode = 040755; break;
	case REC_MKNOD: r.mode = 020644; r.rdev = makedev(1, 3); break;
	case REC_SYMLINK: r.path2 = "../target/x"; break;
	case REC_LINK: r.path2 = "dir/other"; break;
	case REC_RENAME: r.path2 = "dir/renamed"; r.arg = RENAME_NOREPLACE; break;
	case REC_WRITE: r.off = 4096; r.data = data; r.data_len = sizeof(data) - 1; break;
	case REC_TRUNCATE: r.off = 100; break;
	case REC_FALLOCATE: r.arg = 3; r.off = 0; r.len = 8192; break;
	case REC_CHMOD: r.mode = 04755; break;
	case REC_CHOWN: r.uid = 0; r.gid = (uint32_t)-1; break;
	case REC_UTIMENS:
		r.atime_sec = 1; r.atime_nsec = (1 << 30) - 2; r.mtime_sec = -5; r.mtime_nsec = 999999999;
		break;
	case REC_SETXATTR: r.name = "user.comment"; r.data = data; r.data_len = 5; r.arg = 1; break;
	case REC_REMOVEXATTR: r.name = "user.comment"; break;
	case REC_NOOP: r.path = ""; break;
	}
	return r;
}

/* Appends the encoding of r under salt to b. */
static void rec_put(struct bytebuf *b, const struct rec *r, uint64_t salt)
{
	size_t hlen = rec_head_size(r), total = rec_size(r);
	uint8_t *head = malloc(hlen);

	if (!head || rec_encode(r, salt, head, hlen) < 0 || bytebuf_reserve(b, total) < 0) {
		fprintf(stderr, "fuzz_gen_corpus: cannot encode a %s record\n", rec_op_name(r->op));
		exit(1);
	}
	bytebuf_put(b, head, hlen);
	bytebuf_put(b, r->data, r->data_len);
	while (b->len % REC_ALIGN)
		bytebuf_put(b, "", 1);
	free(head);
	(void)total;
}

static void gen_record(void)
{
	struct bytebuf all = { 0 };
	char name[64];

	for (unsigned op = 0; op < REC_OP_MAX; op++) {
		struct bytebuf b = { 0 };
		struct rec r = sample(op, 1);
		uint8_t flags = 0;

		bytebuf_put(&b, &flags, 1);
		rec_put(&b, &r, REC_SALT);
		snprintf(name, sizeof(name), "rec_%s", rec_op_name(op));
		put_file("fuzz_record", name, b.p, b.len);
		bytebuf_free(&b);
	}
	/* A segment body: every op once, LSNs 1..n; scanned (0x04), and with a
	 * torn tail cut (0x0c). */
	uint8_t flags = 0x04;
	bytebuf_put(&all, &flags, 1);
	for (unsigned op = 0; op < REC_OP_MAX; op++) {
		struct rec r = sample(op, op + 1);
		rec_put(&all, &r, REC_SALT);
	}
	put_file("fuzz_record", "segment", all.p, all.len);
	all.p[0] = 0x0c;
	put_file("fuzz_record", "segment_torn", all.p, all.len - 13);
	/* The same bytes with every checksum to be fixed and LSNs renumbered. */
	all.p[0] = 0x07;
	for (size_t pos = 1; pos + 8 <= all.len; pos += 8)
		if (pos % 24 == 1)
			all.p[pos] ^= 0x5a;
	put_file("fuzz_record", "segment_fixup", all.p, all.len);
	bytebuf_free(&all);
}

/* ---- snapshot item streams ---------------------------------------------- */

static void item(struct bytebuf *b, uint32_t type, const void *body, uint32_t len)
{
	uint8_t h[8];

	le_put32(h, type);
	le_put32(h + 4, len);
	bytebuf_put(b, h, 8);
	bytebuf_put(b, body, len);
}

static void xattr(struct bytebuf *x, const char *name, const char *val)
{
	uint8_t h[8];

	le_put32(h, (uint32_t)strlen(name));
	le_put32(h + 4, (uint32_t)strlen(val));
	bytebuf_put(x, h, 8);
	bytebuf_put(x, name, strlen(name));
	bytebuf_put(x, val, strlen(val));
}

static void entry(struct bytebuf *b, uint32_t type, uint32_t mode, uint64_t aux, const char *path,
		  const char *target, const struct bytebuf *xa)
{
	struct bytebuf e = { 0 };
	uint8_t f[48] = { 0 };
	uint32_t pl = (uint32_t)strlen(path), tl = (uint32_t)strlen(target);
	uint32_t xl = xa ? (uint32_t)xa->len : 0;

	le_put32(f, mode);
	le_put32(f + 4, 1000);
	le_put32(f + 8, 100);
	le_put32(f + 12, 123456789);
	le_put64(f + 16, 1700000000);
	le_put64(f + 24, aux);
	le_put32(f + 32, pl);
	le_put32(f + 36, tl);
	le_put32(f + 40, xl);
	bytebuf_put(&e, f, sizeof(f));
	bytebuf_put(&e, path, pl);
	bytebuf_put(&e, target, tl);
	if (xl)
		bytebuf_put(&e, xa->p, xl);
	item(b, type, e.p, (uint32_t)e.len);
	bytebuf_free(&e);
}

/* A tree with every kind of item: root with an xattr, a directory, a file
 * of data + hole + data with an xattr, a hard link, a symlink, a fifo. */
static void snap_stream(struct bytebuf *b)
{
	struct bytebuf xa = { 0 };
	uint8_t head[56] = { 0 }, trailer[24], hole[8];
	static const char d1[] = "first part of the file";
	static const char d2[] = "after the hole";
	uint64_t size = sizeof(d1) - 1 + 5000 + sizeof(d2) - 1;

	memcpy(head, "RPLFSNAP", 8);
	le_put32(head + 8, 1);
	le_put64(head + 16, 41);   /* lsn */
	le_put64(head + 24, 2);    /* epoch */
	le_put64(head + 32, 6);    /* entries */
	le_put64(head + 40, 1);    /* files */
	le_put64(head + 48, size); /* file bytes */
	item(b, 1, head, sizeof(head));
	xattr(&xa, "user.root", "r");
	entry(b, 2, 040755, 0, "", "", &xa);
	entry(b, 2, 040700, 0, "a", "", NULL);
	entry(b, 3, 0100644, size, "a/f", "", NULL);
	item(b, 7, d1, sizeof(d1) - 1);
	le_put64(hole, 5000);
	item(b, 8, hole, 8);
	item(b, 7, d2, sizeof(d2) - 1);
	xa.len = 0;
	xattr(&xa, "user.b", "2");
	xattr(&xa, "user.a", "1");
	item(b, 9, xa.p, (uint32_t)xa.len);
	entry(b, 4, 0100644, 0, "a/g", "a/f", NULL);
	entry(b, 6, 010644, 0, "fifo", "", NULL);
	entry(b, 5, 0120777, 0, "s", "a/f", NULL);
	le_put64(trailer, 6);
	le_put64(trailer + 8, 1);
	le_put64(trailer + 16, size);
	item(b, 10, trailer, sizeof(trailer));
	bytebuf_free(&xa);
}

static void manifest_of(const struct bytebuf *stream, uint8_t **enc, size_t *len)
{
	struct verify_builder *vb;
	struct verify_manifest m;

	if (verify_builder_new(&vb) < 0 || verify_builder_feed(vb, stream->p, stream->len) < 0 ||
	    verify_builder_finish(vb, &m) < 0 || verify_manifest_encode(&m, enc, len) < 0) {
		fprintf(stderr, "fuzz_gen_corpus: the sample stream does not build a manifest\n");
		exit(1);
	}
	verify_builder_free(vb);
	verify_manifest_free(&m);
}

static void gen_snapshot(void)
{
	/* mode, split count, split sizes */
	static const struct { const char *name; uint8_t pre[8]; size_t n; } v[] = {
		{ "framer_whole", { 0, 0 }, 2 },
		{ "framer_split", { 0, 3, 1, 7, 50 }, 5 },
		{ "builder_whole", { 1, 0 }, 2 },
		{ "builder_split", { 1, 3, 5, 13, 60 }, 5 },
		{ "install_whole", { 3, 0 }, 2 },
		{ "install_split", { 3, 3, 100, 9, 130 }, 5 },
	};
	struct bytebuf s = { 0 };
	uint8_t *enc;
	size_t len;

	snap_stream(&s);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct bytebuf b = { 0 };
		bytebuf_put(&b, v[i].pre, v[i].n);
		bytebuf_put(&b, s.p, s.len);
		put_file("fuzz_snapshot", v[i].name, b.p, b.len);
		bytebuf_free(&b);
	}
	manifest_of(&s, &enc, &len);
	struct bytebuf b = { 0 };
	uint8_t pre[2] = { 2 | 4, 0 };
	bytebuf_put(&b, pre, 2);
	bytebuf_put(&b, enc, len);
	put_file("fuzz_snapshot", "manifest", b.p, b.len);
	bytebuf_free(&b);
	free(enc);
	bytebuf_free(&s);
}

/* ---- replication messages ------------------------------------------------ */

/* A sealed-mode input of fuzz_wire: flags, type, tamper offset, plaintext. */
static void wire_seed(const char *name, uint8_t flags, uint8_t type, const void *p, size_t len)
{
	struct bytebuf b = { 0 };
	uint8_t pre[4] = { flags, type, 0x45, 0x23 };

	bytebuf_put(&b, pre, 4);
	bytebuf_put(&b, p, len);
	put_file("fuzz_wire", name, b.p, b.len);
	bytebuf_free(&b);
}

static void wire_json(const char *name, uint8_t type, const char *json)
{
	wire_seed(name, 0, type, json, strlen(json));
}

static void gen_wire(void)
{
	static const char *peers =
		"[{\"id\":\"00112233445566778899aabbccddeeff\",\"url\":\"http://127.0.0.1:7071\"},"
		"{\"id\":\"ffeeddccbbaa99887766554433221100\",\"url\":\"http://[::1]:7072\"}]";
	char json[2048];
	struct bytebuf batch = { 0 };
	struct repl_batch_head h = { .master_lsn = 20, .master_epoch = 2, .first_lsn = 1,
				     .salt = 0x0123456789abcdefull, .nrec = REC_OP_MAX,
				     .master_time_ns = 1700000000000000000ull, .verify_lsn = 5 };
	uint8_t hb[REPL_BATCH_HEAD];

	wire_json("hello_first", REPL_MSG_HELLO,
		  "{\"applied\":12,\"durable\":10,\"history\":[[1,1],[3,7]],\"listen\":\"0.0.0.0:7071\"}");
	wire_json("hello_second", REPL_MSG_HELLO,
		  "{\"applied\":12,\"durable\":12,\"history\":[[1,1]],\"listen\":\"[::1]:7071\","
		  "\"url\":\"http://node1:7071\",\"challenge\":\"00112233445566778899aabbccddeeff\"}");
	snprintf(json, sizeof(json),
		 "{\"session\":\"00112233445566778899aabbccddeeff\",\"lsn\":30,\"first_lsn\":1,"
		 "\"epoch\":3,\"history\":[[1,1],[2,10],[3,20]],\"peers\":%s,\"truncate_to\":9}",
		 peers);
	wire_json("welcome", REPL_MSG_WELCOME, json);
	wire_json("fetch", REPL_MSG_FETCH, "{\"from\":13,\"acked\":12,\"wait_ms\":1000,\"verifying\":0}");
	wire_json("ack", REPL_MSG_ACK, "{\"acked\":12}");
	snprintf(json, sizeof(json), "{\"peers\":%s}", peers);
	wire_json("acked", REPL_MSG_ACKED, json);
	wire_json("error_challenge", REPL_MSG_ERROR,
		  "{\"error\":\"challenge\",\"message\":\"say hello with this challenge\","
		  "\"challenge\":\"00112233445566778899aabbccddeeff\"}");
	wire_json("error_not_master", REPL_MSG_ERROR,
		  "{\"error\":\"not_master\",\"message\":\"m\",\"master\":\"http://h:1\",\"epoch\":4}");
	wire_json("announce", REPL_MSG_ANNOUNCE, "{\"epoch\":5,\"master\":\"http://10.0.0.2:7070\"}");
	wire_json("probe", REPL_MSG_PROBE, "{}");
	wire_json("info", REPL_MSG_INFO,
		  "{\"role\":\"slave\",\"epoch\":5,\"lsn\":99,\"master\":\"http://10.0.0.2:7070\"}");
	wire_json("promote", REPL_MSG_PROMOTE, "{\"epoch\":5,\"lsn\":99,\"time\":1700000000000000000}");
	wire_json("verify", REPL_MSG_VERIFY, "{\"lsn\":99}");
	wire_json("snapshot", REPL_MSG_SNAPSHOT, "");

	/* A batch of every op, LSNs 1.. under the head's salt. */
	repl_batch_head_put(hb, &h);
	bytebuf_put(&batch, hb, sizeof(hb));
	for (unsigned op = 0; op < REC_OP_MAX; op++) {
		struct rec r = sample(op, op + 1);
		rec_put(&batch, &r, h.salt);
	}
	wire_seed("batch", 0, REPL_MSG_BATCH, batch.p, batch.len);
	wire_seed("batch_fixup", 0x02, REPL_MSG_BATCH, batch.p, batch.len);
	wire_seed("batch_tamper", 0x04, REPL_MSG_BATCH, batch.p, batch.len);

	/* A manifest, as a slave answers a VERIFY. */
	struct bytebuf s = { 0 };
	uint8_t *enc;
	size_t len;
	snap_stream(&s);
	manifest_of(&s, &enc, &len);
	wire_seed("manifest", 0, REPL_MSG_MANIFEST, enc, len);
	wire_seed("manifest_fixup", 0x02, REPL_MSG_MANIFEST, enc, len);
	free(enc);
	bytebuf_free(&s);

	/* Whole envelopes sealed with the key, opened as received (0x01). */
	struct repl_env e = { .type = REPL_MSG_BATCH, .epoch = 2, .counter = 9 };
	uint8_t *env = malloc(1 + REPL_ENV_HEAD + batch.len + REPL_ENV_TAG);
	memcpy(env + 1 + REPL_ENV_HEAD, batch.p, batch.len);
	env[0] = 0x01;
	len = repl_seal(key, &e, env + 1, batch.len);
	put_file("fuzz_wire", "raw_batch", env, 1 + len);
	const char *ack = "{\"acked\":12}";
	e.type = REPL_MSG_ACK;
	memcpy(env + 1 + REPL_ENV_HEAD, ack, strlen(ack));
	len = repl_seal(key, &e, env + 1, strlen(ack));
	put_file("fuzz_wire", "raw_ack", env, 1 + len);
	free(env);
	bytebuf_free(&batch);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_gen_corpus CORPUS_DIR\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	outdir = argv[1];
	mkdir(outdir, 0755);
	gen_record();
	gen_snapshot();
	gen_wire();
	return 0;
}
