/* Fuzz target: the snapshot reader — the item framer every consumer of a
 * snapshot stream goes through (snapshot_items_new/feed/done,
 * recovery/snapshot.c), verify's manifest builder on top of it
 * (verify_builder_*, recovery/verify.c), the manifest decoder
 * (verify_manifest_decode), and the slave's real installer
 * (snapshot_install_*: a stream from the master, decrypted, framed and built
 * into a tree in a temporary store that is removed again).
 *
 * INPUT
 *   byte 0  mode   bits 0-1: 0 framer with model callbacks, 1 manifest
 *                  builder, 2 manifest decoder, 3 installer;
 *                  0x04 (decoder) give the manifest its BLAKE2b sum first
 *   byte 1  k = number of split bytes (0-15, low 4 bits)
 *   k bytes split sizes (fuzz_split_next): how the stream is cut into feeds
 *           (for the installer: into secretstream messages, then the
 *           ciphertext into writes)
 *   rest    the plaintext item stream (format at the top of snapshot.c), or
 *           for mode 2 an encoded manifest (format at the top of verify.c)
 *
 * WHAT MUST HOLD (else abort)
 *   - no memory error, undefined behaviour or leak (the sanitizers);
 *   - the framer keeps its promises to its callbacks: HEAD first, no entry
 *     inside a file, an entry's lengths add up to its body, no DATA beyond
 *     the room the file has left, no unknown item type;
 *   - feeding the stream whole or in pieces gives the same result;
 *   - a manifest the builder makes is one the decoder takes back (the bytes
 *     a slave sends are the bytes the master parses) and re-encodes
 *     identically; a decoded manifest re-encodes to its own bytes.
 */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* The stream format (snapshot.c). */
#define IT_HDR 8u
#define ENTRY_LEN 48u

/* The builder hashes holes block by block: keep files to a size whose
 * hashing stays fast (the builder only ever reads the node's own tree). */
#define BUILDER_FILE_MAX (64ull << 20)

static void die(const char *what)
{
	fuzz_die(what);
}

/* ---- the framer, against a model of what its callers expect ---------- */

struct model {
	int in_file;
	uint64_t room;
	uint64_t items, entries, files, data_bytes, max_file;
	uint8_t sum; /* touches every byte handed over */
};

static int model_room(void *arg, uint64_t *room)
{
	struct model *m = arg;

	*room = m->room;
	return m->in_file;
}

static int model_data(void *arg, const uint8_t *p, size_t n)
{
	struct model *m = arg;

	if (!m->in_file || n > m->room)
		die("the framer passed DATA beyond its file's room");
	for (size_t i = 0; i < n; i++)
		m->sum ^= p[i];
	m->room -= n;
	m->data_bytes += n;
	return 0;
}

static int model_item(void *arg, uint32_t type, const uint8_t *b, uint32_t len)
{
	struct model *m = arg;

	if (len && !b)
		die("the framer passed no body for a non-empty item");
	for (uint32_t i = 0; i < len; i++)
		m->sum ^= b[i];
	m->items++;
	switch (type) {
	case IT_DIR:
	case IT_FILE:
	case IT_HARDLINK:
	case IT_SYMLINK:
	case IT_NODE:
		if (m->in_file)
			die("the framer passed an entry inside a file");
		if (len < ENTRY_LEN || (uint64_t)ENTRY_LEN + le_get32(b + 32) + le_get32(b + 36) +
						  le_get32(b + 40) != len)
			die("the framer passed an entry whose lengths do not add up");
		m->entries++;
		if (type == IT_FILE) {
			m->in_file = 1;
			m->room = le_get64(b + 24);
			m->files++;
			if (m->room > m->max_file)
				m->max_file = m->room;
		}
		return 0;
	case IT_HOLE:
		if (!m->in_file)
			die("the framer passed a HOLE outside a file");
		if (len != 8 || le_get64(b) > m->room)
			return -EBADMSG;
		m->room -= le_get64(b);
		return 0;
	case IT_FXATTR:
		if (!m->in_file)
			die("the framer passed an FXATTR outside a file");
		if (m->room)
			return -EBADMSG;
		m->in_file = 0;
		return 0;
	}
	die("the framer passed an item of an unknown type");
	return -EBADMSG;
}

static const struct snapshot_items_ops model_ops = {
	.file_room = model_room,
	.data = model_data,
	.item = model_item,
};

struct framed {
	int rc, done;
	struct model m;
	struct snapshot_head head;
};

static void frame(const uint8_t *p, size_t len, struct fuzz_split *split, struct framed *out)
{
	struct snapshot_items *it;

	memset(out, 0, sizeof(*out));
	if (snapshot_items_new(&model_ops, &out->m, &it) < 0)
		abort();
	for (size_t pos = 0; pos < len && out->rc == 0;) {
		size_t k = split ? fuzz_split_next(split, len - pos) : len - pos;
		uint8_t *piece = fuzz_dup(p + pos, k);
		out->rc = snapshot_items_feed(it, piece, k);
		free(piece);
		pos += k;
	}
	if (out->rc > 0)
		die("snapshot_items_feed returned a positive value");
	out->done = snapshot_items_done(it);
	if (out->done && out->rc)
		die("the framer says done after an error");
	out->head = *snapshot_items_head(it);
	snapshot_items_free(it);
}

static void check_framer(const uint8_t *p, size_t len, struct fuzz_split *split, uint64_t *max_file)
{
	struct framed whole, pieces;

	frame(p, len, NULL, &whole);
	frame(p, len, split, &pieces);
	*max_file = whole.m.max_file;
	if (whole.rc != pieces.rc || whole.done != pieces.done)
		die("the framer answers differently when the stream comes in pieces");
	/* On success both consumed the same; on an error they stopped at the
	 * same item, though the pieces may have passed part of a DATA body. */
	if (whole.rc == 0 && (memcmp(&whole.m, &pieces.m, sizeof(whole.m)) ||
			      memcmp(&whole.head, &pieces.head, sizeof(whole.head))))
		die("the framer passed different items when the stream came in pieces");
	if (whole.done && (whole.head.entries != whole.m.entries || whole.head.files != whole.m.files))
		die("the framer accepted a stream whose HEAD does not match what came");
}

/* ---- the manifest builder --------------------------------------------- */

/* 0 and the encoded manifest, or the builder's error. */
static int build(const uint8_t *p, size_t len, struct fuzz_split *split, uint8_t **enc,
		 size_t *enclen)
{
	struct verify_builder *b;
	struct verify_manifest m;
	int rc = 0;

	*enc = NULL;
	if (verify_builder_new(&b) < 0)
		abort();
	for (size_t pos = 0; pos < len && rc == 0;) {
		size_t k = split ? fuzz_split_next(split, len - pos) : len - pos;
		uint8_t *piece = fuzz_dup(p + pos, k);
		rc = verify_builder_feed(b, piece, k);
		free(piece);
		pos += k;
	}
	if (rc == 0)
		rc = verify_builder_finish(b, &m);
	verify_builder_free(b);
	if (rc < 0)
		return rc;
	if (verify_manifest_encode(&m, enc, enclen) < 0)
		die("verify_manifest_encode failed on a built manifest");
	verify_manifest_free(&m);
	return 0;
}

static void check_builder(const uint8_t *p, size_t len, struct fuzz_split *split)
{
	uint8_t *e1, *e2;
	size_t l1, l2;
	struct verify_manifest m;
	uint64_t max_file;
	int r1, r2;

	/* The framer first: it also tells how large the files claim to be. */
	check_framer(p, len, split, &max_file);
	if (max_file > BUILDER_FILE_MAX)
		return;
	split->next = 0;
	r1 = build(p, len, NULL, &e1, &l1);
	r2 = build(p, len, split, &e2, &l2);
	if (r1 != r2)
		die("the builder answers differently when the stream comes in pieces");
	if (r1 == 0) {
		if (l1 != l2 || memcmp(e1, e2, l1))
			die("the builder makes another manifest when the stream comes in pieces");
		if (verify_manifest_decode(e1, l1, &m) < 0)
			die("a manifest the builder made does not decode");
		verify_manifest_free(&m);
		fuzz_check_manifest(e1, l1);
	}
	free(e1);
	free(e2);
}

/* ---- the installer ----------------------------------------------------- */

static const uint8_t key[32] = "replfs fuzz cluster key 32 bytes";
static const uint8_t bind[24] = "session+counter fuzzbind";
static char store_path[PATH_MAX];
static struct store st;
static int have_store;

static void store_remove(void)
{
	char cmd[PATH_MAX + 32];

	store_close(&st);
	/* Only the temporary directory made below; no shell metacharacters in it. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store_path);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_snapshot: cannot remove %s\n", store_path);
}

static void store_make(void)
{
	char err[256];
	const char *t = getenv("TMPDIR");

	snprintf(store_path, sizeof(store_path), "%s/replfs-fuzz-snap-XXXXXX", t ? t : "/tmp");
	if (!mkdtemp(store_path))
		die("cannot make a temporary directory");
	strcat(store_path, "/store");
	if (store_init(store_path, err, sizeof(err)) < 0 || store_open(store_path, 0, &st, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_snapshot: %s\n", err);
		abort();
	}
	store_path[strlen(store_path) - strlen("/store")] = '\0';
	have_store = 1;
	atexit(store_remove);
}

/* The master's side of the stream: secretstream messages of the split's
 * sizes, framed [u32 length][ciphertext], the first bound to bind. */
static uint8_t *seal_stream(const uint8_t *p, size_t len, struct fuzz_split *split, size_t *out_len)
{
	crypto_secretstream_xchacha20poly1305_state ss;
	size_t cap = crypto_secretstream_xchacha20poly1305_HEADERBYTES, off = 0, pos = 0;
	uint8_t *out;
	int first = 1;

	/* At most one message per byte, plus the final one. */
	cap += (len + 1) * (4 + crypto_secretstream_xchacha20poly1305_ABYTES) + len;
	if (!(out = malloc(cap)))
		abort();
	crypto_secretstream_xchacha20poly1305_init_push(&ss, out, key);
	off = crypto_secretstream_xchacha20poly1305_HEADERBYTES;
	do {
		size_t k = fuzz_split_next(split, len - pos);
		unsigned long long clen;
		if (k > (256u << 10))
			k = 256u << 10; /* a message's largest plaintext */
		uint8_t tag = pos + k == len ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
					     : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
		crypto_secretstream_xchacha20poly1305_push(&ss, out + off + 4, &clen, p + pos, k,
							   first ? bind : NULL, first ? sizeof(bind) : 0,
							   tag);
		le_put32(out + off, (uint32_t)clen);
		off += 4 + (size_t)clen;
		pos += k;
		first = 0;
	} while (pos < len);
	*out_len = off;
	return out;
}

static void check_install(const uint8_t *p, size_t len, struct fuzz_split *split)
{
	struct snapshot_install *in;
	size_t clen;
	uint8_t *c;
	int rc = 0;

	if (!have_store)
		store_make();
	c = seal_stream(p, len, split, &clen);
	if (snapshot_install_begin(&st, key, bind, sizeof(bind), &in) < 0)
		die("snapshot_install_begin failed");
	for (size_t pos = 0; pos < clen && rc == 0;) {
		size_t k = fuzz_split_next(split, clen - pos);
		uint8_t *piece = fuzz_dup(c + pos, k);
		rc = snapshot_install_write(in, piece, k);
		free(piece);
		pos += k;
	}
	if (rc == -EIO || rc > 0)
		die("snapshot_install_write failed with an unexpected error");
	/* Not _end: it syncs the store's filesystem (slow, and it is shared);
	 * abort removes the partial tree whatever it holds. */
	snapshot_install_abort(in);
	free(c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (sodium_init() < 0)
		abort();
	log_init("fuzz_snapshot", 0, LOG_LVL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct fuzz_split split = { 0 };
	uint64_t max_file;
	uint8_t mode;

	if (size < 2)
		return 0;
	mode = fuzz_u8(&in);
	split.n = fuzz_u8(&in) & 15;
	if (split.n > in.len)
		split.n = in.len;
	split.sizes = in.p;
	in.p += split.n;
	in.len -= split.n;

	switch (mode & 3) {
	case 0:
		check_framer(in.p, in.len, &split, &max_file);
		break;
	case 1:
		check_builder(in.p, in.len, &split);
		break;
	case 2: {
		uint8_t *m = fuzz_dup(in.p, in.len);
		if ((mode & 4) && in.len >= VERIFY_DIGEST)
			crypto_generichash(m + in.len - VERIFY_DIGEST, VERIFY_DIGEST, m,
					   in.len - VERIFY_DIGEST, NULL, 0);
		fuzz_check_manifest(m, in.len);
		free(m);
		break;
	}
	case 3:
		check_install(in.p, in.len, &split);
		break;
	}
	return 0;
}
