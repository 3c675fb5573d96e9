/* Fuzz target: the replication messages a peer controls — the sealed
 * envelope (repl_open, replicator/wire.c) and, behind it, the decoding of
 * every plaintext body: a BATCH (repl_batch_head_get, then the records with
 * rec_decode, as the slave's apply step walks them), a MANIFEST
 * (verify_manifest_decode, recovery/verify.c) and the JSON control messages
 * (the timeline with repl_history_from_json, the peer list with
 * repl_peers_set, a slave's listen address with repl_parse_listen).
 *
 * A fuzzer cannot forge an envelope, so the plaintext is sealed here with a
 * fixed cluster key (what a peer holding the key, or a bug in our own
 * sender, can send) and opened by the real code.
 *
 * INPUT
 *   byte 0  flags  0x01 the rest is a whole envelope, opened as received
 *                       (the unauthenticated path: anyone on the network)
 *                  0x02 fix-ups before sealing: records of a BATCH get their
 *                       checksum under the batch's salt, a MANIFEST its
 *                       BLAKE2b sum
 *                  0x04 flip one bit of the sealed envelope (at the offset
 *                       in bytes 2-3): repl_open must refuse it
 *   byte 1  message type (any value: unknown ones must be refused)
 *   byte 2-3 tamper offset
 *   rest    plaintext
 *
 * WHAT MUST HOLD (else abort)
 *   - no memory error, undefined behaviour or leak (the sanitizers);
 *   - a sealed message opens to the same header and plaintext, an unknown
 *     type is refused with -EPROTO, a flipped bit is refused;
 *   - a manifest that decodes encodes back to the very same bytes and
 *     compares equal to itself;
 *   - a timeline that decodes survives the STORE/history text form and the
 *     JSON form unchanged; a peer list that was taken is taken again from
 *     its own JSON form unchanged, without rewriting STORE/peers.
 */
#include "fuzz.h"
#include "../../replicator/repl_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define F_RAW 0x01
#define F_FIX 0x02
#define F_TAMPER 0x04

static const uint8_t key[REPL_KEY_BYTES] = "replfs fuzz cluster key 32 bytes";

static void die(const char *what)
{
	fuzz_die(what);
}

/* ---- BATCH ---------------------------------------------------------------- */

/* The slave's apply step (slave.c, apply_batch) without the applying: the
 * head, then nrec records checksummed with the head's salt. */
static void decode_batch(const uint8_t *plain, size_t plen)
{
	struct repl_batch_head h;
	size_t pos = 0, len;
	const uint8_t *recs;

	if (repl_batch_head_get(plain, plen, &h) < 0) {
		if (plen >= REPL_BATCH_HEAD)
			die("repl_batch_head_get refused a long enough head");
		return;
	}
	recs = plain + REPL_BATCH_HEAD;
	len = plen - REPL_BATCH_HEAD;
	for (uint32_t i = 0; i < h.nrec; i++) {
		char line[256];
		struct rec r;
		ssize_t n = rec_decode(recs + pos, len - pos, h.salt, &r);

		if (n < 0)
			return;
		if ((size_t)n > len - pos)
			die("rec_decode returned more than the batch holds");
		rec_format(&r, line, sizeof(line));
		pos += (size_t)n;
	}
}

/* ---- MANIFEST ------------------------------------------------------------- */

static void decode_manifest(const uint8_t *plain, size_t plen)
{
	fuzz_check_manifest(plain, plen);
}

/* ---- JSON control messages ---------------------------------------------- */

static struct replicator *peers_r;
static struct store peers_st;
static char peers_dir[PATH_MAX];

static void peers_dir_remove(void)
{
	unlinkat(peers_st.dirfd, "peers", 0);
	close(peers_st.dirfd);
	rmdir(peers_dir);
}

/* A replicator with only what repl_peers_set and repl_peers_json use: a slave
 * whose store is a temporary directory (STORE/peers is written there). */
static struct replicator *peers_replicator(void)
{
	if (peers_r)
		return peers_r;
	const char *t = getenv("TMPDIR");
	snprintf(peers_dir, sizeof(peers_dir), "%s/replfs-fuzz-wire-XXXXXX", t ? t : "/tmp");
	if (!mkdtemp(peers_dir) ||
	    (peers_st.dirfd = open(peers_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("cannot make a temporary directory");
	atexit(peers_dir_remove);
	peers_st.path = peers_dir;
	memset(peers_st.node_id, 0xab, sizeof(peers_st.node_id));
	if (!(peers_r = calloc(1, sizeof(*peers_r))))
		abort();
	repl_state_init(&peers_r->state, 0, 1000, 1000);
	peers_r->node.st = &peers_st;
	atomic_store(&peers_r->is_slave, 1);
	return peers_r;
}

static void check_history(json_t *j)
{
	struct epoch_history h, back, mine = { .n = 2, .epoch = { 1, 3 }, .first_lsn = { 1, 100 } };
	char text[HISTORY_MAX * 48 + 32];
	int n;

	if (repl_history_from_json(j, &h) < 0)
		return;
	if (h.n < 1 || h.n > HISTORY_MAX)
		die("repl_history_from_json accepted a timeline of impossible length");
	for (int i = 1; i < h.n; i++)
		if (h.epoch[i] <= h.epoch[i - 1] || h.first_lsn[i] < h.first_lsn[i - 1])
			die("repl_history_from_json accepted a timeline out of order");
	/* STORE/history's text form. */
	if ((n = history_format(&h, text, sizeof(text))) < 0)
		die("history_format cannot hold a timeline");
	if (history_parse(text, &back) < 0 || back.n != h.n ||
	    memcmp(back.epoch, h.epoch, sizeof(h.epoch[0]) * (size_t)h.n) ||
	    memcmp(back.first_lsn, h.first_lsn, sizeof(h.first_lsn[0]) * (size_t)h.n))
		die("a timeline does not survive its text form");
	/* The JSON form a node sends. */
	json_t *again = repl_history_json(&h);
	if (repl_history_from_json(again, &back) < 0 || back.n != h.n ||
	    memcmp(back.epoch, h.epoch, sizeof(h.epoch[0]) * (size_t)h.n) ||
	    memcmp(back.first_lsn, h.first_lsn, sizeof(h.first_lsn[0]) * (size_t)h.n))
		die("a timeline does not survive its JSON form");
	json_decref(again);
	/* What the master does with a slave's timeline (on_hello). */
	uint64_t last = h.first_lsn[h.n - 1] + 5;
	uint64_t fork = history_fork(&mine, 200, &h, last);
	if (fork > last || fork > 200)
		die("history_fork beyond the shorter timeline");
	history_epoch_at(&h, fork + 1);
	history_cut(&h, fork);
}

/* Leaves a pattern in the stack below the caller, where the next call's
 * locals will live: a function that reads a local it never wrote then sees
 * the pattern, not what an earlier call happened to leave there. */
static void __attribute__((noinline)) scribble_stack(uint8_t pattern)
{
	volatile uint8_t junk[32 << 10];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = pattern;
}

static uint64_t peers_file_ino(void)
{
	struct stat sb;

	return fstatat(peers_st.dirfd, "peers", &sb, 0) == 0 ? (uint64_t)sb.st_ino : 0;
}

static void check_peers(json_t *j)
{
	struct replicator *r = peers_replicator();
	struct repl_peer before[REPL_PEERS_MAX];
	int n;

	scribble_stack(0xa5);
	repl_peers_set(r, j);
	n = r->npeers;
	if (n < 0 || n > REPL_PEERS_MAX)
		die("repl_peers_set took an impossible number of peers");
	memcpy(before, r->peers, sizeof(before[0]) * (size_t)n);
	for (int i = 0; i < n; i++)
		if (strncmp(r->peers[i].url, "http://", 7) || !memchr(r->peers[i].url, '\0', 128))
			die("repl_peers_set took a bad URL");
	/* The same list again (every ACKED brings it): no change, so STORE/peers
	 * is not written again. */
	json_t *again = repl_peers_json(r);
	uint64_t ino = peers_file_ino();
	scribble_stack(0x5a);
	repl_peers_set(r, again);
	json_decref(again);
	if (r->npeers != n || memcmp(before, r->peers, sizeof(before[0]) * (size_t)n))
		die("a peer list does not survive its JSON form");
	if (peers_file_ino() != ino)
		die("repl_peers_set rewrote STORE/peers for an unchanged list");
}

static void check_listen(const char *listen)
{
	struct repl_options o = { 0 };
	char url[128];

	if (repl_parse_listen(listen, &o) < 0)
		return;
	if (!o.listen_port || o.listen_port > 65535 || !memchr(o.listen_host, '\0', sizeof(o.listen_host)))
		die("repl_parse_listen accepted a bad address");
	repl_advertised_url(o.listen_host, o.listen_port, "192.0.2.1", url, sizeof(url));
	repl_advertised_url(o.listen_host, o.listen_port, NULL, url, sizeof(url));
}

static void decode_json(const uint8_t *plain, size_t plen)
{
	json_t *o = json_loadb((const char *)plain, plen, 0, NULL);

	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	check_history(json_object_get(o, "history"));
	check_peers(json_object_get(o, "peers"));
	const char *listen = json_string_value(json_object_get(o, "listen"));
	if (listen)
		check_listen(listen);
	json_decref(o);
}

static void decode_body(uint8_t type, const uint8_t *plain, size_t plen)
{
	switch (type) {
	case REPL_MSG_BATCH:
		decode_batch(plain, plen);
		break;
	case REPL_MSG_MANIFEST:
		decode_manifest(plain, plen);
		break;
	default:
		decode_json(plain, plen);
	}
}

/* ---- envelopes ------------------------------------------------------------ */

static void fix_body(uint8_t type, uint8_t *p, size_t len)
{
	if (type == REPL_MSG_BATCH && len >= REPL_BATCH_HEAD)
		fuzz_fix_records(p + REPL_BATCH_HEAD, len - REPL_BATCH_HEAD, le_get64(p + 24));
	else if (type == REPL_MSG_MANIFEST && len >= VERIFY_DIGEST)
		crypto_generichash(p + len - VERIFY_DIGEST, VERIFY_DIGEST, p, len - VERIFY_DIGEST,
				   NULL, 0);
}

static void sealed(uint8_t flags, uint8_t type, uint16_t tamper, const uint8_t *body, size_t blen)
{
	struct repl_env e = { .type = type, .epoch = 7, .counter = 42 }, got;
	size_t cap = REPL_ENV_HEAD + blen + REPL_ENV_TAG, elen, plen;
	uint8_t *buf = malloc(cap), *env, *plain;
	int rc;

	if (!buf)
		abort();
	memset(e.sender, 0x11, sizeof(e.sender));
	memset(e.session, 0x22, sizeof(e.session));
	memcpy(buf + REPL_ENV_HEAD, body, blen);
	if (flags & F_FIX)
		fix_body(type, buf + REPL_ENV_HEAD, blen);
	uint8_t *want = fuzz_dup(buf + REPL_ENV_HEAD, blen);
	elen = repl_seal(key, &e, buf, blen);
	if (elen != cap)
		die("repl_seal made an envelope of an unexpected length");
	env = fuzz_dup(buf, elen);
	free(buf);
	if (flags & F_TAMPER) {
		env[tamper % elen] ^= (uint8_t)(1u << (tamper >> 13));
		/* Bytes 5-7 must be zero and 0-3 the magic: -EPROTO; anything
		 * else the tag catches. The type byte is covered by the tag too. */
		if ((rc = repl_open(key, env, elen, &got, &plain, &plen)) != -EBADMSG && rc != -EPROTO)
			die("repl_open accepted a tampered envelope");
		goto out;
	}
	rc = repl_open(key, env, elen, &got, &plain, &plen);
	if (type == 0 || type >= REPL_MSG_MAX) {
		if (rc != -EPROTO)
			die("repl_open accepted an unknown message type");
		goto out;
	}
	if (rc != 0)
		die("repl_open refused an envelope sealed with its key");
	if (got.type != e.type || got.epoch != e.epoch || got.counter != e.counter ||
	    memcmp(got.sender, e.sender, sizeof(e.sender)) ||
	    memcmp(got.session, e.session, sizeof(e.session)) || plen != blen ||
	    (blen && memcmp(plain, want, blen)))
		die("an envelope opens to something other than what was sealed");
	/* The body as the receiver has it, in a buffer of exactly its size. */
	uint8_t *exact = fuzz_dup(plain, plen);
	decode_body(got.type, exact, plen);
	free(exact);
out:
	free(want);
	free(env);
}

static void raw(const uint8_t *data, size_t size)
{
	struct repl_env got;
	uint8_t *env = fuzz_dup(data, size), *plain;
	size_t plen;
	int rc = repl_open(key, env, size, &got, &plain, &plen);

	if (rc == 0) {
		if (plain != env + REPL_ENV_HEAD || plen + REPL_ENV_OVERHEAD != size)
			die("repl_open's plaintext is not where the envelope holds it");
		decode_body(got.type, plain, plen);
	} else if (rc != -EBADMSG && rc != -EPROTO) {
		die("repl_open failed other than with -EBADMSG or -EPROTO");
	}
	free(env);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (sodium_init() < 0)
		abort();
	/* The code under test logs refusals; only errors are kept. */
	log_init("fuzz_wire", 0, LOG_LVL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags, type;
	uint16_t tamper;

	if (size < 1)
		return 0;
	flags = fuzz_u8(&in);
	if (flags & F_RAW) {
		raw(in.p, in.len);
		return 0;
	}
	type = fuzz_u8(&in);
	tamper = (uint16_t)(fuzz_u8(&in) | fuzz_u8(&in) << 8);
	sealed(flags, type, tamper, in.p, in.len);
	return 0;
}
