/* Failover: promote, fencing, finding the master, switchover, verify.
 *
 * EPOCHS. Every record carries the epoch of the master that wrote it; a node
 * keeps the highest epoch it has taken or followed in STORE/epoch and its
 * timeline in STORE/history (fs/store.c). A promote takes an epoch higher
 * than any this node has seen from the nodes it can reach, writes it (and
 * the history entry "epoch E begins at LSN L+1") durably, and only then
 * opens the mount for writing. One master per epoch writes each LSN once, so
 * comparing histories finds where two timelines forked (history_fork).
 *
 * PROMOTE, step by step (each durable before the next; STORE/promote is the
 * marker that makes a crash in the middle complete or roll back at the next
 * start):
 *   1. stop fetching, apply everything received, sync the journal: L;
 *   2. unless forced, refuse when the old master answers as a live master
 *      (that is a switchover) or a reachable slave of this epoch holds more
 *      than L;
 *   3. STORE/promote "replfs-promote 1\nepoch E\nlsn L+1\nold <url>\n";
 *   4. history += (E, L+1); STORE/epoch = E           <- the commit point
 *   5. the mount turns read-write, this node serves slaves; marker removed;
 *   6. ANNOUNCE {epoch, master} to every node it knows and to the old
 *      master, in the background.
 * At start, a marker with STORE/epoch >= E means step 4 happened: the node
 * starts as the master of epoch E whatever its command line says, and
 * announces again; otherwise the history entry is dropped and it stays a
 * slave.
 *
 * FENCING. A master turns read-only for good ("deposed", STORE/deposed) when
 * it learns that a newer epoch exists: an ANNOUNCE, any request carrying a
 * newer epoch, or the answer of a slave it probes. It probes a slave that
 * has gone quiet for QUIET_NS (slaves poll every second, so a quiet one may
 * be following someone else), and, in sync mode, every slave before it
 * would degrade to async: a deposed master's fsync fails (EIO) instead of
 * being acknowledged without a slave. A deposed master remounted without
 * --slave-of stays read-only; with --slave-of it rejoins.
 *
 * FINDING THE MASTER. Slaves learn the other nodes' addresses from their
 * master (WELCOME, ACKED; STORE/peers). After an ANNOUNCE, a "not_master"
 * answer naming the master, or three seconds without an answer (then they
 * PROBE the nodes they know), they follow the master with the newest epoch.
 *
 * SWITCHOVER. The master stops taking writes, waits until the chosen slave
 * holds everything, sends it PROMOTE {epoch, lsn}, and follows it: no
 * record is lost and no timeline forks.
 */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 1500L
#define QUIET_NS (2500ull * 1000000ull)
#define PROMOTE_VALID_NS (60ull * 1000000000ull)

/* ---- small helpers --------------------------------------------------------- */

void repl_advertised_url(const char *host, unsigned port, const char *peer_ip, char *out,
			 size_t len)
{
	const char *h = host;

	if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "*") || !h[0])
		h = peer_ip && peer_ip[0] ? peer_ip : "127.0.0.1";
	if (strchr(h, ':'))
		snprintf(out, len, "http://[%s]:%u", h, port);
	else
		snprintf(out, len, "http://%s:%u", h, port);
}

/* "http://h:p/repl/" and "http://h:p" name the same node. */
static void url_base(const char *in, char *out, size_t len)
{
	size_t n = strlen(in);

	while (n && in[n - 1] == '/')
		n--;
	if (n >= strlen(REPL_PATH) && !strncmp(in + n - strlen(REPL_PATH), REPL_PATH, strlen(REPL_PATH)))
		n -= strlen(REPL_PATH);
	snprintf(out, len, "%.*s", (int)n, in);
}

static int same_url(const char *a, const char *b)
{
	char x[256], y[256];

	url_base(a, x, sizeof(x));
	url_base(b, y, sizeof(y));
	return x[0] && !strcmp(x, y);
}

static uint64_t jget(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

/* ---- history -------------------------------------------------------------- */

void *repl_history_json(const struct epoch_history *h)
{
	json_t *a = json_array();

	for (int i = 0; i < h->n; i++)
		json_array_append_new(a, json_pack("[I, I]", (json_int_t)h->epoch[i],
						   (json_int_t)h->first_lsn[i]));
	return a;
}

int repl_history_from_json(void *json, struct epoch_history *h)
{
	json_t *a = json, *e;
	size_t i;

	h->n = 0;
	if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > HISTORY_MAX)
		return -EINVAL;
	json_array_foreach(a, i, e) {
		json_t *ep = json_array_get(e, 0), *fl = json_array_get(e, 1);
		if (!json_is_integer(ep) || !json_is_integer(fl) || json_integer_value(ep) <= 0 ||
		    json_integer_value(fl) <= 0 ||
		    history_note(h, (uint64_t)json_integer_value(ep),
				 (uint64_t)json_integer_value(fl)) < 0)
			return -EINVAL;
	}
	return 0;
}

int repl_history_note(struct replicator *r, uint64_t epoch, uint64_t first_lsn)
{
	int rc = 0;

	pthread_mutex_lock(&r->hist_lock);
	if (!r->hist.n || epoch > r->hist.epoch[r->hist.n - 1]) {
		struct epoch_history h = r->hist;
		rc = history_note(&h, epoch, first_lsn);
		if (rc > 0 && (rc = store_history_write(r->node.st, &h)) == 0)
			r->hist = h;
	}
	pthread_mutex_unlock(&r->hist_lock);
	return rc < 0 ? rc : 0;
}

/* ---- peers ------------------------------------------------------------------ */

void *repl_peers_json(struct replicator *r)
{
	json_t *a = json_array();
	char hex[REPL_ID_BYTES * 2 + 1];

	pthread_mutex_lock(&r->state.lock);
	if (!atomic_load(&r->is_slave)) {
		if (r->self_url[0]) {
			sodium_bin2hex(hex, sizeof(hex), r->node.st->node_id, REPL_ID_BYTES);
			json_array_append_new(a, json_pack("{s:s, s:s}", "id", hex, "url",
							   r->self_url));
		}
		for (int i = 0; i < r->state.nslaves; i++) {
			struct repl_slave *sl = &r->state.slaves[i];
			if (!sl->known || !sl->url[0])
				continue;
			sodium_bin2hex(hex, sizeof(hex), sl->node_id, REPL_ID_BYTES);
			json_array_append_new(a, json_pack("{s:s, s:s}", "id", hex, "url", sl->url));
		}
	} else {
		for (int i = 0; i < r->npeers; i++) {
			sodium_bin2hex(hex, sizeof(hex), r->peers[i].node_id, REPL_ID_BYTES);
			json_array_append_new(a, json_pack("{s:s, s:s}", "id", hex, "url",
							   r->peers[i].url));
		}
	}
	pthread_mutex_unlock(&r->state.lock);
	return a;
}

/* STORE/peers: "replfs-peers 1\n" then "<node id hex> <url>\n" per node. */
int repl_peers_save(struct replicator *r)
{
	char buf[REPL_PEERS_MAX * 180 + 32], hex[REPL_ID_BYTES * 2 + 1];
	size_t off;

	pthread_mutex_lock(&r->state.lock);
	off = (size_t)snprintf(buf, sizeof(buf), "replfs-peers 1\n");
	for (int i = 0; i < r->npeers && off < sizeof(buf); i++) {
		sodium_bin2hex(hex, sizeof(hex), r->peers[i].node_id, REPL_ID_BYTES);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s %s\n", hex,
					r->peers[i].url);
	}
	pthread_mutex_unlock(&r->state.lock);
	if (off >= sizeof(buf))
		return -ENOSPC;
	return io_write_file_atomic(r->node.st->dirfd, "peers", buf, off);
}

static int peer_url_ok(const char *u)
{
	return !strncmp(u, "http://", 7) && strlen(u) < 128 && !strpbrk(u, " \n\r\t");
}

static void peers_load(struct replicator *r)
{
	char *text = NULL, *line, *save = NULL;

	if (io_read_file(r->node.st->dirfd, "peers", &text, NULL, 64 * 1024) < 0)
		return;
	line = strtok_r(text, "\n", &save);
	if (!line || strcmp(line, "replfs-peers 1") != 0) {
		free(text);
		return;
	}
	while ((line = strtok_r(NULL, "\n", &save)) && r->npeers < REPL_PEERS_MAX) {
		char hex[64], url[160];
		size_t bl = 0;
		struct repl_peer *p = &r->peers[r->npeers];
		if (sscanf(line, "%63s %159s", hex, url) != 2 || !peer_url_ok(url) ||
		    sodium_hex2bin(p->node_id, REPL_ID_BYTES, hex, strlen(hex), NULL, &bl, NULL) != 0 ||
		    bl != REPL_ID_BYTES)
			continue;
		snprintf(p->url, sizeof(p->url), "%.127s", url);
		r->npeers++;
	}
	free(text);
}

void repl_peers_set(struct replicator *r, void *json)
{
	json_t *a = json, *e;
	size_t i;
	/* Zeroed: the change test below compares whole entries, bytes after
	 * each URL's NUL included. */
	struct repl_peer np[REPL_PEERS_MAX] = { 0 };
	int n = 0, changed;

	if (!json_is_array(a))
		return;
	json_array_foreach(a, i, e) {
		const char *hex = json_string_value(json_object_get(e, "id"));
		const char *url = json_string_value(json_object_get(e, "url"));
		size_t bl = 0;
		if (n == REPL_PEERS_MAX || !hex || !url || !peer_url_ok(url))
			continue;
		if (sodium_hex2bin(np[n].node_id, REPL_ID_BYTES, hex, strlen(hex), NULL, &bl, NULL) != 0 ||
		    bl != REPL_ID_BYTES ||
		    !memcmp(np[n].node_id, r->node.st->node_id, REPL_ID_BYTES))
			continue;
		snprintf(np[n].url, sizeof(np[n].url), "%s", url);
		n++;
	}
	pthread_mutex_lock(&r->state.lock);
	changed = n != r->npeers || memcmp(np, r->peers, sizeof(np[0]) * (size_t)n) != 0;
	if (changed) {
		memcpy(r->peers, np, sizeof(np[0]) * (size_t)n);
		r->npeers = n;
	}
	pthread_mutex_unlock(&r->state.lock);
	if (changed) {
		int rc = repl_peers_save(r);
		if (rc < 0)
			log_warn("cannot save %s/peers: %s", r->node.st->path, strerror(-rc));
	}
}

/* ---- one-shot requests ----------------------------------------------------- */

struct oneshot_buf {
	struct bytebuf b;
	size_t max;
};

static size_t oneshot_body(char *p, size_t size, size_t n, void *arg)
{
	struct oneshot_buf *ob = arg;
	size_t len = size * n;

	if (ob->b.len + len > ob->max || bytebuf_put(&ob->b, p, len) < 0)
		return 0;
	return len;
}

struct oneshot_watch {
	int (*alive)(void *arg, uint64_t got);
	void *arg;
};

static int oneshot_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			    curl_off_t ulnow)
{
	struct oneshot_watch *w = arg;

	(void)dltotal;
	(void)ultotal;
	(void)ulnow;
	return w->alive(w->arg, dlnow > 0 ? (uint64_t)dlnow : 0) ? 0 : 1;
}

int repl_oneshot(struct replicator *r, const char *base, uint8_t type, const void *body,
		 size_t blen, long timeout_ms, size_t max, struct repl_env *renv, uint8_t **plain,
		 size_t *plen, uint8_t **keep)
{
	return repl_oneshot_watched(r, base, type, body, blen, timeout_ms, max, NULL, NULL, renv,
				    plain, plen, keep);
}

/* Sends one sealed message of type to the node at base (http://HOST:PORT)
 * and opens its sealed answer: *plain points into *keep (free it). */
int repl_oneshot_watched(struct replicator *r, const char *base, uint8_t type,
			 const void *body, size_t blen, long timeout_ms, size_t max,
			 int (*alive)(void *arg, uint64_t got), void *alive_arg,
			 struct repl_env *renv, uint8_t **plain, size_t *plen, uint8_t **keep)
{
	struct oneshot_watch watch = { alive, alive_arg };
	struct repl_env e = { .type = type, .epoch = r->node.st->epoch, .counter = 1 };
	struct oneshot_buf b = { .max = max };
	struct curl_slist *hdrs = NULL;
	char url[300], b2[256];
	long status = 0;
	uint8_t *req;
	CURL *c;
	int rc;

	*keep = NULL;
	url_base(base, b2, sizeof(b2));
	snprintf(url, sizeof(url), "%s%s", b2, REPL_PATH);
	memcpy(e.sender, r->node.st->node_id, REPL_ID_BYTES);
	randombytes_buf(e.session, REPL_ID_BYTES);
	req = malloc(REPL_ENV_OVERHEAD + blen);
	if (!req)
		return -ENOMEM;
	if (blen)
		memcpy(req + REPL_ENV_HEAD, body, blen);
	size_t n = repl_seal(r->o.key, &e, req, blen);
	c = curl_easy_init();
	if (!c) {
		free(req);
		return -ENOMEM;
	}
	hdrs = curl_slist_append(NULL, "Content-Type: application/octet-stream");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, oneshot_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (alive) {
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, oneshot_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, &watch);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	}
	CURLcode cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	free(req);
	if (cc != CURLE_OK || status != 200) {
		bytebuf_free(&b.b);
		return cc == CURLE_OK ? -EACCES
		       : cc == CURLE_ABORTED_BY_CALLBACK || cc == CURLE_OPERATION_TIMEDOUT
			       ? -ETIMEDOUT
			       : -EHOSTUNREACH;
	}
	rc = repl_open(r->o.key, b.b.p, b.b.len, renv, plain, plen);
	if (rc < 0 || memcmp(renv->session, e.session, REPL_ID_BYTES) != 0 || renv->counter != 1) {
		bytebuf_free(&b.b);
		return -EBADMSG;
	}
	*keep = b.b.p;
	return 0;
}

/* A JSON one-shot: *answer is the parsed answer (INFO or ERROR). */
static int oneshot_json(struct replicator *r, const char *base, uint8_t type, json_t *body,
			long timeout_ms, struct repl_env *renv, json_t **answer)
{
	char *text = json_dumps(body, JSON_COMPACT);
	uint8_t *plain, *keep;
	size_t plen;
	int rc;

	json_decref(body);
	*answer = NULL;
	if (!text)
		return -ENOMEM;
	rc = repl_oneshot(r, base, type, text, strlen(text), timeout_ms, 1 << 20, renv, &plain,
			  &plen, &keep);
	free(text);
	if (rc < 0)
		return rc;
	*answer = json_loadb((const char *)plain, plen, 0, NULL);
	free(keep);
	return *answer ? 0 : -EBADMSG;
}

static const char *role_name(struct replicator *r)
{
	return atomic_load(&r->is_slave) ? "slave" : atomic_load(&r->deposed) ? "deposed" : "master";
}

void repl_master_hint(struct replicator *r, char *url, size_t len, uint64_t *epoch)
{
	url[0] = '\0';
	*epoch = r->node.st->epoch;
	if (atomic_load(&r->is_slave)) {
		repl_follower_url(r, url, len);
	} else if (atomic_load(&r->deposed)) {
		pthread_mutex_lock(&r->state.lock);
		if (!strncmp(r->deposed_by, "http://", 7))
			snprintf(url, len, "%s", r->deposed_by);
		*epoch = r->deposed_epoch;
		pthread_mutex_unlock(&r->state.lock);
	} else {
		snprintf(url, len, "%s", r->self_url);
	}
}

static json_t *info_json(struct replicator *r)
{
	char url[160];
	uint64_t epoch;

	repl_master_hint(r, url, sizeof(url), &epoch);
	return json_pack("{s:s, s:I, s:I, s:I, s:s, s:I, s:s}", "role", role_name(r), "epoch",
			 (json_int_t)r->node.st->epoch, "applied",
			 (json_int_t)commit_last_lsn(r->node.commit), "durable",
			 (json_int_t)journal_durable_lsn(r->node.journal), "master", url,
			 "master_epoch", (json_int_t)epoch, "url", r->self_url);
}

/* ---- fencing ------------------------------------------------------------------ */

void repl_fence(struct replicator *r, uint64_t epoch, const char *by)
{
	char buf[256];
	int n;

	if (atomic_load(&r->is_slave))
		return;
	pthread_mutex_lock(&r->state.lock);
	if (atomic_load(&r->deposed) && epoch <= r->deposed_epoch) {
		pthread_mutex_unlock(&r->state.lock);
		return;
	}
	r->deposed_epoch = epoch;
	snprintf(r->deposed_by, sizeof(r->deposed_by), "%s", by);
	atomic_store(&r->deposed, 1);
	pthread_mutex_unlock(&r->state.lock);
	repl_state_fence(&r->state);
	if (r->node.role_changed)
		r->node.role_changed(r->node.cb_arg, 0);
	n = snprintf(buf, sizeof(buf), "replfs-deposed 1\nepoch %" PRIu64 "\nby %s\n", epoch, by);
	if (n > 0 && (size_t)n < sizeof(buf))
		io_write_file_atomic(r->node.st->dirfd, "deposed", buf, (size_t)n);
	log_error("DEPOSED: %s has epoch %" PRIu64 ", newer than this master's %" PRIu64
		  ": this node was replaced as master and is read-only from now on; remount it "
		  "with --slave-of the new master to rejoin (what it wrote that the new master "
		  "lacks is kept in %s/recovery)",
		  by, epoch, r->node.st->epoch, r->node.st->path);
}

/* Asks the node at url who it is; fences this master when it knows a newer
 * epoch. Returns 1 when fenced. */
static int probe_one(struct replicator *r, const char *url)
{
	struct repl_env re;
	json_t *a = NULL;
	int fenced = 0;

	if (oneshot_json(r, url, REPL_MSG_PROBE, json_object(), PROBE_TIMEOUT_MS, &re, &a) < 0)
		return 0;
	uint64_t epoch = jget(a, "epoch"), mepoch = jget(a, "master_epoch");
	const char *murl = json_string_value(json_object_get(a, "master"));
	if (re.epoch > epoch)
		epoch = re.epoch;
	if (mepoch > epoch)
		epoch = mepoch;
	if (epoch > r->node.st->epoch) {
		char by[200];
		snprintf(by, sizeof(by), "%s", murl && murl[0] && !same_url(murl, r->self_url) ? murl : url);
		repl_fence(r, epoch, by);
		fenced = 1;
	}
	json_decref(a);
	return fenced;
}

/* Sync mode, before degrading: are the silent slaves following a newer
 * master? */
static int before_degrade(void *arg)
{
	struct replicator *r = arg;
	char urls[REPL_SLAVES_MAX][128];
	int n = 0, fenced = 0;

	if (atomic_load(&r->is_slave) || atomic_load(&r->deposed))
		return atomic_load(&r->deposed);
	pthread_mutex_lock(&r->probe_lock);
	pthread_mutex_lock(&r->state.lock);
	for (int i = 0; i < r->state.nslaves; i++)
		if (r->state.slaves[i].known && r->state.slaves[i].url[0])
			snprintf(urls[n++], sizeof(urls[0]), "%s", r->state.slaves[i].url);
	pthread_mutex_unlock(&r->state.lock);
	for (int i = 0; i < n && !fenced; i++)
		fenced = probe_one(r, urls[i]);
	pthread_mutex_unlock(&r->probe_lock);
	return fenced;
}

void repl_failover_tick(struct replicator *r)
{
	char urls[REPL_SLAVES_MAX][128];
	int idx[REPL_SLAVES_MAX], n = 0;
	uint64_t now = time_mono_ns();

	repl_verify_expire(r);
	if (atomic_load(&r->is_slave) || atomic_load(&r->deposed))
		return;
	pthread_mutex_lock(&r->state.lock);
	for (int i = 0; i < r->state.nslaves; i++) {
		struct repl_slave *sl = &r->state.slaves[i];
		if (!sl->known || !sl->url[0] || sl->in_snapshot || !sl->seen_mono_ns ||
		    now - sl->seen_mono_ns < QUIET_NS || now - r->probe_ns[i] < 2 * QUIET_NS)
			continue;
		r->probe_ns[i] = now;
		idx[n] = i;
		snprintf(urls[n++], sizeof(urls[0]), "%s", sl->url);
	}
	pthread_mutex_unlock(&r->state.lock);
	(void)idx;
	if (!n)
		return;
	pthread_mutex_lock(&r->probe_lock);
	for (int i = 0; i < n; i++)
		if (probe_one(r, urls[i]))
			break;
	pthread_mutex_unlock(&r->probe_lock);
}

/* ---- finding the master (slave) --------------------------------------------- */

int repl_find_master(struct replicator *r, char *out, size_t len, uint64_t *out_epoch)
{
	struct repl_peer peers[REPL_PEERS_MAX];
	char cur[160], best[160] = "";
	uint64_t best_epoch = r->node.st->epoch;
	int n;

	repl_follower_url(r, cur, sizeof(cur));
	pthread_mutex_lock(&r->state.lock);
	n = r->npeers;
	memcpy(peers, r->peers, sizeof(peers[0]) * (size_t)n);
	pthread_mutex_unlock(&r->state.lock);
	for (int i = 0; i < n; i++) {
		struct repl_env re;
		json_t *a = NULL;
		if (same_url(peers[i].url, cur) || same_url(peers[i].url, r->self_url))
			continue;
		if (oneshot_json(r, peers[i].url, REPL_MSG_PROBE, json_object(), PROBE_TIMEOUT_MS,
				 &re, &a) < 0)
			continue;
		const char *role = json_string_value(json_object_get(a, "role"));
		const char *murl = json_string_value(json_object_get(a, "master"));
		uint64_t me = jget(a, "master_epoch");
		if (role && !strcmp(role, "master") && jget(a, "epoch") >= best_epoch) {
			best_epoch = jget(a, "epoch");
			snprintf(best, sizeof(best), "%s", peers[i].url);
		} else if (murl && murl[0] && me > best_epoch && !same_url(murl, r->self_url)) {
			best_epoch = me;
			snprintf(best, sizeof(best), "%s", murl);
		}
		json_decref(a);
	}
	if (!best[0] || same_url(best, cur))
		return -ENOENT;
	url_base(best, out, len);
	*out_epoch = best_epoch;
	return 0;
}

/* ---- promote ------------------------------------------------------------------ */

struct announce_job {
	struct replicator *r;
	uint64_t epoch;
	int n;
	char urls[REPL_PEERS_MAX + 1][128];
};

static void *announce_main(void *arg)
{
	struct announce_job *j = arg;
	int done[REPL_PEERS_MAX + 1] = { 0 }, left = j->n;

	/* A few rounds: a node restarting right now still hears of it (and
	 * one that missed it finds us by probing). */
	for (int round = 0; round < 5 && left && !j->r->stop; round++) {
		for (int i = 0; i < j->n; i++) {
			struct repl_env re;
			json_t *a = NULL;
			if (done[i])
				continue;
			if (oneshot_json(j->r, j->urls[i], REPL_MSG_ANNOUNCE,
					 json_pack("{s:I, s:s}", "epoch", (json_int_t)j->epoch,
						   "master", j->r->self_url),
					 PROBE_TIMEOUT_MS, &re, &a) == 0) {
				done[i] = 1;
				left--;
			}
			json_decref(a);
		}
		if (left)
			sleep(1);
	}
	for (int i = 0; i < j->n; i++)
		if (!done[i])
			log_info("could not tell %s about the new master (epoch %" PRIu64 ")",
				 j->urls[i], j->epoch);
	pthread_mutex_lock(&j->r->verify_lock);
	j->r->announcers--;
	pthread_mutex_unlock(&j->r->verify_lock);
	free(j);
	return NULL;
}

static void announce(struct replicator *r, const char *old_master)
{
	struct announce_job *j = calloc(1, sizeof(*j));
	pthread_t t;

	if (!j)
		return;
	j->r = r;
	j->epoch = r->node.st->epoch;
	pthread_mutex_lock(&r->state.lock);
	for (int i = 0; i < r->npeers; i++)
		if (!same_url(r->peers[i].url, r->self_url))
			snprintf(j->urls[j->n++], sizeof(j->urls[0]), "%s", r->peers[i].url);
	pthread_mutex_unlock(&r->state.lock);
	if (old_master && old_master[0]) {
		int dup = 0;
		for (int i = 0; i < j->n; i++)
			dup |= same_url(j->urls[i], old_master);
		if (!dup)
			url_base(old_master, j->urls[j->n++], sizeof(j->urls[0]));
	}
	/* The node keeps a reference until it stops: a detached thread that
	 * outlives the replicator would use it after free, so wait for it in
	 * repl_failover_stop. */
	pthread_mutex_lock(&r->verify_lock);
	if (pthread_create(&t, NULL, announce_main, j) != 0) {
		pthread_mutex_unlock(&r->verify_lock);
		free(j);
		return;
	}
	pthread_detach(t);
	r->announcers++;
	pthread_mutex_unlock(&r->verify_lock);
}

/* STORE/promote */
static int promote_marker_read(struct replicator *r, uint64_t *epoch, uint64_t *lsn, char *old,
			       size_t oldlen)
{
	char *text = NULL, o[200];
	int rc = io_read_file(r->node.st->dirfd, "promote", &text, NULL, 4096);

	if (rc < 0)
		return rc;
	if (sscanf(text, "replfs-promote 1\nepoch %" SCNu64 "\nlsn %" SCNu64 "\nold %199s", epoch,
		   lsn, o) != 3) {
		free(text);
		return -EBADMSG;
	}
	free(text);
	snprintf(old, oldlen, "%s", strcmp(o, "-") ? o : "");
	return 0;
}

/* Steps 5 and 6: the epoch is durable; become the master. */
static void promote_finish(struct replicator *r, const char *old_master)
{
	struct commit *c = r->node.commit;

	pthread_mutex_lock(&c->order_lock);
	c->epoch = r->node.st->epoch;
	pthread_mutex_unlock(&c->order_lock);
	repl_master_role_start(r);
	atomic_store(&r->deposed, 0);
	unlinkat(r->node.st->dirfd, "deposed", 0);
	atomic_store(&r->is_slave, 0);
	fault_point("promote:switch");
	if (r->node.role_changed)
		r->node.role_changed(r->node.cb_arg, 1);
	unlinkat(r->node.st->dirfd, "promote", 0);
	announce(r, old_master);
}

/* Steps 1 to 6. Returns 0, or -errno with the reason in msg. */
static int promote(struct replicator *r, int force, char *msg, size_t msglen)
{
	struct repl_peer peers[REPL_PEERS_MAX];
	char old[160];
	uint64_t lsn, maxep = r->node.st->epoch;
	int n, rc;

	if (!atomic_load(&r->is_slave)) {
		snprintf(msg, msglen, atomic_load(&r->deposed)
				      ? "this node is a deposed master; remount it with --slave-of "
					"the new master to rejoin"
				      : "this node is already the master");
		return -EALREADY;
	}
	if (!r->self_url[0]) {
		snprintf(msg, msglen, "this node has no --listen address: slaves could not reach "
				      "it as their master");
		return -EINVAL;
	}
	repl_follower_url(r, old, sizeof(old));
	uint64_t t0 = time_mono_ns();

	/* 1. Apply everything received; it is all this node will have. */
	repl_follower_drain_stop(r);
	lsn = commit_last_lsn(r->node.commit);
	if ((rc = journal_sync(r->node.journal, lsn)) < 0) {
		snprintf(msg, msglen, "cannot make the journal durable: %s", strerror(-rc));
		goto resume;
	}

	/* 2. Would this lose what another node has? */
	pthread_mutex_lock(&r->state.lock);
	n = r->npeers;
	memcpy(peers, r->peers, sizeof(peers[0]) * (size_t)n);
	pthread_mutex_unlock(&r->state.lock);
	int have_old = 0;
	for (int i = 0; i < n; i++)
		have_old |= same_url(peers[i].url, old);
	if (!have_old && old[0] && n < REPL_PEERS_MAX)
		snprintf(peers[n++].url, sizeof(peers[0].url), "%.127s", old);
	for (int i = 0; i < n; i++) {
		struct repl_env re;
		json_t *a = NULL;
		if (same_url(peers[i].url, r->self_url))
			continue;
		if (oneshot_json(r, peers[i].url, REPL_MSG_PROBE, json_object(), PROBE_TIMEOUT_MS,
				 &re, &a) < 0)
			continue;
		const char *role = json_string_value(json_object_get(a, "role"));
		uint64_t ep = jget(a, "epoch"), durable = jget(a, "durable");
		if (ep > maxep)
			maxep = ep;
		if (jget(a, "master_epoch") > maxep)
			maxep = jget(a, "master_epoch");
		if (!force && role && !strcmp(role, "master") && ep >= r->node.st->epoch) {
			snprintf(msg, msglen,
				 "the master at %s is alive (epoch %" PRIu64 ", LSN %" PRIu64
				 "): hand over with `replfs switchover` on it, or promote with "
				 "--force (it will be fenced)",
				 peers[i].url, ep, jget(a, "applied"));
			json_decref(a);
			rc = -EBUSY;
			goto resume;
		}
		if (!force && role && !strcmp(role, "slave") && ep == r->node.st->epoch &&
		    durable > lsn) {
			snprintf(msg, msglen,
				 "the slave at %s holds LSN %" PRIu64 ", more than this node's %" PRIu64
				 ": promote that one, or use --force (what only it holds is then "
				 "set aside when it follows)",
				 peers[i].url, durable, lsn);
			json_decref(a);
			rc = -EBUSY;
			goto resume;
		}
		json_decref(a);
	}

	/* 3, 4. The new epoch, durable before any write. */
	uint64_t epoch = maxep + 1;
	char buf[320];
	int len = snprintf(buf, sizeof(buf), "replfs-promote 1\nepoch %" PRIu64 "\nlsn %" PRIu64
			   "\nold %s\n", epoch, lsn + 1, old[0] ? old : "-");
	if ((rc = io_write_file_atomic(r->node.st->dirfd, "promote", buf, (size_t)len)) < 0) {
		snprintf(msg, msglen, "cannot write %s/promote: %s", r->node.st->path,
			 strerror(-rc));
		goto resume;
	}
	fault_point("promote:marker");
	pthread_mutex_lock(&r->hist_lock);
	struct epoch_history h = r->hist;
	history_note(&h, epoch, lsn + 1);
	rc = store_history_write(r->node.st, &h);
	if (rc == 0)
		r->hist = h;
	pthread_mutex_unlock(&r->hist_lock);
	if (rc == 0)
		rc = store_epoch_write(r->node.st, epoch);
	if (rc < 0) {
		snprintf(msg, msglen, "cannot record epoch %" PRIu64 ": %s", epoch, strerror(-rc));
		unlinkat(r->node.st->dirfd, "promote", 0);
		goto resume;
	}
	fault_point("promote:epoch");

	/* 5, 6. */
	promote_finish(r, old);
	snprintf(msg, msglen, "promoted: %s is the master at epoch %" PRIu64 " (from LSN %" PRIu64
		 ") in %.0f ms",
		 r->node.mountpoint ? r->node.mountpoint : r->node.st->path, epoch, lsn + 1,
		 (double)(time_mono_ns() - t0) / 1e6);
	log_warn("%s", msg);
	return 0;

resume:
	/* Refused: follow on as before. */
	{
		char err[256];
		url_base(old, r->o.master_url, sizeof(r->o.master_url));
		if (repl_follower_start(r, err, sizeof(err)) < 0)
			log_error("cannot follow %s again: %s", old, err);
	}
	return rc;
}

/* ---- switchover ---------------------------------------------------------------- */

static int switchover(struct replicator *r, const char *to, char *msg, size_t msglen)
{
	struct repl_state *s = &r->state;
	struct commit *c = r->node.commit;
	int idx = -1, rc;
	uint64_t lsn;

	if (atomic_load(&r->is_slave) || atomic_load(&r->deposed)) {
		snprintf(msg, msglen, "only the master hands over");
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nslaves; i++)
		if (s->slaves[i].known && same_url(s->slaves[i].url, to))
			idx = i;
	pthread_mutex_unlock(&s->lock);
	if (idx < 0) {
		snprintf(msg, msglen, "no slave of this master listens at %s", to);
		return -ENOENT;
	}
	/* No more writes; what is in flight finishes under the order lock. */
	if (r->node.role_changed)
		r->node.role_changed(r->node.cb_arg, 0);
	pthread_mutex_lock(&c->order_lock);
	lsn = c->next_lsn - 1;
	pthread_mutex_unlock(&c->order_lock);
	if ((rc = journal_sync(r->node.journal, lsn)) < 0) {
		snprintf(msg, msglen, "cannot make the journal durable: %s", strerror(-rc));
		goto undo;
	}
	uint64_t until = time_mono_ns() + 30000000000ull;
	pthread_mutex_lock(&s->lock);
	while (s->slaves[idx].acked_lsn < lsn && time_mono_ns() < until) {
		struct timespec ts;
		time_deadline(&ts, CLOCK_MONOTONIC, 100);
		pthread_cond_timedwait(&s->acked, &s->lock, &ts);
	}
	uint64_t acked = s->slaves[idx].acked_lsn;
	pthread_mutex_unlock(&s->lock);
	if (acked < lsn) {
		snprintf(msg, msglen, "%s holds LSN %" PRIu64 " of %" PRIu64 " after 30 s; not handed over",
			 to, acked, lsn);
		rc = -ETIMEDOUT;
		goto undo;
	}
	struct repl_env re;
	json_t *a = NULL;
	rc = oneshot_json(r, to, REPL_MSG_PROMOTE,
			  json_pack("{s:I, s:I, s:I}", "epoch", (json_int_t)r->node.st->epoch, "lsn",
				    (json_int_t)lsn, "time", (json_int_t)time_now_ns()),
			  30000, &re, &a);
	if (rc < 0 || re.type != REPL_MSG_INFO) {
		const char *m = json_string_value(json_object_get(a, "message"));
		snprintf(msg, msglen, "%s did not take over: %s", to,
			 m ? m : rc < 0 ? strerror(-rc) : "refused");
		json_decref(a);
		rc = rc < 0 ? rc : -EPROTO;
		goto undo;
	}
	uint64_t epoch = jget(a, "epoch");
	json_decref(a);
	/* Follow the new master: same timeline up to lsn, no fork. */
	char err[256];
	url_base(to, r->o.master_url, sizeof(r->o.master_url));
	atomic_store(&r->is_slave, 1);
	if ((rc = repl_follower_start(r, err, sizeof(err))) < 0)
		log_error("handed over to %s but cannot follow it: %s", to, err);
	snprintf(msg, msglen, "handed over: %s is the master at epoch %" PRIu64
		 " (from LSN %" PRIu64 "); this node follows it", to, epoch, lsn + 1);
	log_warn("%s", msg);
	return 0;
undo:
	if (r->node.role_changed)
		r->node.role_changed(r->node.cb_arg, 1);
	return rc;
}

/* ---- requests from other nodes ------------------------------------------------ */

static enum MHD_Result on_announce(struct replicator *r, struct MHD_Connection *conn,
				   const struct repl_env *e, json_t *m)
{
	uint64_t epoch = jget(m, "epoch");
	const char *url = json_string_value(json_object_get(m, "master"));

	if (!epoch || !url || !peer_url_ok(url))
		return repl_reply_error(r, conn, e, "bad_request", "malformed announcement");
	if (epoch < r->node.st->epoch)
		return repl_reply_error(r, conn, e, "stale_epoch",
					"this node knows a newer epoch than yours");
	if (same_url(url, r->self_url))
		return repl_reply_json(r, conn, REPL_MSG_INFO, e, info_json(r));
	if (atomic_load(&r->is_slave)) {
		repl_follower_redirect(r, url, epoch);
	} else if (epoch > r->node.st->epoch) {
		repl_fence(r, epoch, url);
	} else if (!atomic_load(&r->deposed)) {
		log_error("%s claims to be the master of epoch %" PRIu64 ", this node's own epoch: "
			  "ignored", url, epoch);
		return repl_reply_error(r, conn, e, "conflict", "this node is the master of that epoch");
	}
	return repl_reply_json(r, conn, REPL_MSG_INFO, e, info_json(r));
}

static enum MHD_Result on_promote_request(struct replicator *r, struct MHD_Connection *conn,
					  const struct repl_env *e, json_t *m)
{
	uint64_t lsn = jget(m, "lsn"), t = jget(m, "time"), now = time_now_ns();
	char msg[300];
	int rc;

	if (!atomic_load(&r->is_slave))
		return repl_reply_error(r, conn, e, "not_slave", "this node is not a slave");
	if (e->epoch != r->node.st->epoch || jget(m, "epoch") != e->epoch ||
	    (t > now ? t - now : now - t) > PROMOTE_VALID_NS)
		return repl_reply_error(r, conn, e, "stale", "a handover request of another time");
	/* The master stopped at lsn: wait until it is applied here. */
	for (int i = 0; i < 300 && commit_last_lsn(r->node.commit) < lsn; i++)
		usleep(100 * 1000);
	if (commit_last_lsn(r->node.commit) != lsn) {
		snprintf(msg, sizeof(msg), "this node is at LSN %" PRIu64 ", not %" PRIu64,
			 commit_last_lsn(r->node.commit), lsn);
		return repl_reply_error(r, conn, e, "behind", msg);
	}
	pthread_mutex_lock(&r->role_lock);
	rc = promote(r, 1, msg, sizeof(msg));
	pthread_mutex_unlock(&r->role_lock);
	if (rc < 0)
		return repl_reply_error(r, conn, e, "refused", msg);
	return repl_reply_json(r, conn, REPL_MSG_INFO, e, info_json(r));
}

enum MHD_Result repl_failover_request(struct replicator *r, struct MHD_Connection *conn,
				      const struct repl_env *e, const uint8_t *plain,
				      size_t plen, const char *peer)
{
	json_t *m = json_loadb((const char *)plain, plen, 0, NULL);
	enum MHD_Result ret;

	(void)peer;
	if (!json_is_object(m)) {
		json_decref(m);
		return repl_reply_error(r, conn, e, "bad_request", "malformed message");
	}
	switch (e->type) {
	case REPL_MSG_PROBE:
		/* A newer epoch asking: this master was replaced. */
		if (!atomic_load(&r->is_slave) && e->epoch > r->node.st->epoch) {
			char by[160];
			snprintf(by, sizeof(by), "a node at %s with epoch %" PRIu64, peer, e->epoch);
			repl_fence(r, e->epoch, by);
		}
		ret = repl_reply_json(r, conn, REPL_MSG_INFO, e, info_json(r));
		break;
	case REPL_MSG_ANNOUNCE:
		ret = on_announce(r, conn, e, m);
		break;
	case REPL_MSG_PROMOTE:
		ret = on_promote_request(r, conn, e, m);
		break;
	case REPL_MSG_VERIFY:
		ret = repl_verify_request(r, conn, e, m);
		break;
	default:
		ret = repl_reply_error(r, conn, e, "bad_request", "unexpected message type");
	}
	json_decref(m);
	return ret;
}

/* ---- control socket ---------------------------------------------------------- */

static enum MHD_Result control_answer(struct MHD_Connection *conn, int rc, const char *msg,
				      json_t *extra)
{
	json_t *o = extra ? extra : json_object();
	json_object_set_new(o, "ok", json_boolean(rc == 0));
	json_object_set_new(o, "message", json_string(msg));
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return repl_serve_text(conn, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_CONFLICT,
			       "application/json", text);
}

enum MHD_Result repl_control_post(struct replicator *r, struct MHD_Connection *conn,
				  const char *url, const char *body, size_t len)
{
	json_t *m = json_loadb(body, len, 0, NULL);
	char msg[1024];
	int rc;

	if (!json_is_object(m)) {
		json_decref(m);
		m = json_object();
	}
	if (!strcmp(url, "/promote")) {
		pthread_mutex_lock(&r->role_lock);
		rc = promote(r, json_is_true(json_object_get(m, "force")), msg, sizeof(msg));
		pthread_mutex_unlock(&r->role_lock);
		json_decref(m);
		return control_answer(conn, rc, msg,
				      json_pack("{s:I}", "epoch", (json_int_t)r->node.st->epoch));
	}
	if (!strcmp(url, "/switchover")) {
		const char *to = json_string_value(json_object_get(m, "to"));
		if (!to || !peer_url_ok(to)) {
			json_decref(m);
			return control_answer(conn, -EINVAL, "switchover needs the URL of a slave "
						      "(http://HOST:PORT)", NULL);
		}
		pthread_mutex_lock(&r->role_lock);
		rc = switchover(r, to, msg, sizeof(msg));
		pthread_mutex_unlock(&r->role_lock);
		json_decref(m);
		return control_answer(conn, rc, msg, NULL);
	}
	if (!strcmp(url, "/verify")) {
		void *result = NULL;
		rc = repl_verify_run(r, json_is_true(json_object_get(m, "repair")), msg, sizeof(msg),
				     &result);
		json_decref(m);
		return control_answer(conn, rc, msg, result);
	}
	json_decref(m);
	return repl_serve_text(conn, MHD_HTTP_NOT_FOUND, "text/plain", strdup("not found\n"));
}

/* ---- lifecycle ---------------------------------------------------------------- */

int repl_failover_start(struct replicator *r, char *err, size_t errlen)
{
	uint64_t pe, plsn;
	char old[200];
	int rc;

	pthread_mutex_init(&r->role_lock, NULL);
	pthread_mutex_init(&r->hist_lock, NULL);
	pthread_mutex_init(&r->probe_lock, NULL);
	pthread_mutex_init(&r->verify_lock, NULL);
	pthread_cond_init(&r->verify_cond, NULL);
	pthread_rwlock_init(&r->verify_gate, NULL);
	if ((rc = store_history_read(r->node.st, &r->hist)) < 0) {
		snprintf(err, errlen, "%s/history is damaged: %s", r->node.st->path, strerror(-rc));
		return rc;
	}
	if (r->o.advertise_url[0])
		snprintf(r->self_url, sizeof(r->self_url), "%s", r->o.advertise_url);
	else if (r->o.listen_host[0])
		repl_advertised_url(r->o.listen_host, r->o.listen_port, NULL, r->self_url,
				    sizeof(r->self_url));
	peers_load(r);
	r->state.before_degrade = before_degrade;
	r->state.before_degrade_arg = r;

	/* A promote cut short: finished if its epoch is durable, else undone. */
	rc = promote_marker_read(r, &pe, &plsn, old, sizeof(old));
	if (rc == 0 && r->node.st->epoch >= pe) {
		log_warn("completing the promote to master of epoch %" PRIu64
			 " begun before a restart%s", pe,
			 atomic_load(&r->is_slave) ? " (--slave-of is ignored)" : "");
		atomic_store(&r->is_slave, 0);
		r->promote_pending = 1;
		snprintf(r->promote_old, sizeof(r->promote_old), "%s", old);
	} else if (rc == 0) {
		struct epoch_history h = r->hist;
		while (h.n > 1 && h.epoch[h.n - 1] >= pe)
			h.n--;
		if ((rc = store_history_write(r->node.st, &h)) == 0)
			r->hist = h;
		unlinkat(r->node.st->dirfd, "promote", 0);
		log_warn("undid a promote to epoch %" PRIu64 " cut short before its epoch was "
			 "recorded: still a slave", pe);
	} else if (rc != -ENOENT) {
		log_warn("%s/promote is damaged (%s): ignored", r->node.st->path, strerror(-rc));
	}

	/* A deposed master stays read-only until it follows the new one. */
	char *text = NULL;
	if (!atomic_load(&r->is_slave) &&
	    io_read_file(r->node.st->dirfd, "deposed", &text, NULL, 4096) == 0) {
		char by[160] = "";
		uint64_t e = 0;
		if (sscanf(text, "replfs-deposed 1\nepoch %" SCNu64 "\nby %159[^\n]", &e, by) >= 1) {
			r->deposed_epoch = e;
			snprintf(r->deposed_by, sizeof(r->deposed_by), "%s", by);
			atomic_store(&r->deposed, 1);
			r->state.fenced = 1;
			log_error("this node was deposed as master by epoch %" PRIu64 " (%s): it stays "
				  "read-only; remount it with --slave-of the new master to rejoin",
				  e, by);
		}
	} else if (atomic_load(&r->is_slave) &&
		   io_read_file(r->node.st->dirfd, "deposed", &text, NULL, 4096) == 0) {
		uint64_t e = 0;
		if (sscanf(text, "replfs-deposed 1\nepoch %" SCNu64, &e) == 1)
			r->deposed_epoch = e;
		atomic_store(&r->deposed, 1); /* cleared by the first welcome */
	}
	free(text);
	return 0;
}

/* After the servers are up: the rest of a promote that was cut short. */
void repl_failover_started(struct replicator *r)
{
	if (r->promote_pending) {
		r->promote_pending = 0;
		promote_finish(r, r->promote_old);
	}
}

void repl_failover_stop(struct replicator *r)
{
	/* Announcers hold no lock for long; give them their last round. */
	for (int i = 0; i < 100; i++) {
		pthread_mutex_lock(&r->verify_lock);
		int n = r->announcers;
		pthread_mutex_unlock(&r->verify_lock);
		if (!n)
			break;
		usleep(100 * 1000);
	}
}

int repl_starts_readonly(const struct replicator *r)
{
	return atomic_load(&r->is_slave) || atomic_load(&r->deposed);
}

/* ---- command line ------------------------------------------------------------ */

/* Posts body to the daemon of mnt and prints its answer's message. */
static int control_command(const char *mnt, const char *path, json_t *body, long timeout_s,
			   const char *what, json_t **answer)
{
	char *text = json_dumps(body, JSON_COMPACT), *out = NULL;
	long code = 0;
	int rc;

	json_decref(body);
	if (answer)
		*answer = NULL;
	if (!text)
		return 1;
	rc = repl_control_call(mnt, path, text, timeout_s, &out, &code);
	free(text);
	if (rc < 0)
		return 1;
	json_t *a = json_loads(out, 0, NULL);
	free(out);
	const char *m = json_string_value(json_object_get(a, "message"));
	if (code == 200 && json_is_true(json_object_get(a, "ok"))) {
		if (m && !answer)
			printf("%s\n", m);
		if (answer)
			*answer = a;
		else
			json_decref(a);
		return 0;
	}
	log_error("%s refused: %s", what, m ? m : "the daemon gave no reason");
	if (answer)
		*answer = a;
	else
		json_decref(a);
	return 1;
}

int repl_promote_main(int argc, char **argv)
{
	const char *mnt = NULL;
	int force = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--force")) {
			force = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			puts("usage: replfs promote MOUNTPOINT [--force]\n"
			     "  makes this slave the master: it applies what it received, takes a new\n"
			     "  epoch (durable before any write) and turns the mount read-write; the\n"
			     "  other slaves follow it. Refused while the master answers (use\n"
			     "  `replfs switchover` on it) or another slave holds more, unless --force.");
			return 0;
		} else if (argv[i][0] == '-' || mnt) {
			log_error("promote: unexpected argument %s (see replfs promote --help)", argv[i]);
			return 2;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt) {
		log_error("promote needs a MOUNTPOINT (see replfs promote --help)");
		return 2;
	}
	return control_command(mnt, "/promote", json_pack("{s:b}", "force", force), 120, "promote",
			       NULL);
}

int repl_switchover_main(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("usage: replfs switchover MOUNTPOINT URL\n"
		     "  on the master: stops taking writes, waits until the slave listening at URL\n"
		     "  (http://HOST:PORT) holds everything, makes it the master and follows it.");
		return 0;
	}
	if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
		log_error("switchover needs MOUNTPOINT and the URL of a slave (see replfs switchover "
			  "--help)");
		return 2;
	}
	if (!peer_url_ok(argv[2])) {
		log_error("switchover: %s is not a slave's URL (http://HOST:PORT)", argv[2]);
		return 2;
	}
	return control_command(argv[1], "/switchover", json_pack("{s:s}", "to", argv[2]), 120,
			       "switchover", NULL);
}

int repl_verify_main(int argc, char **argv)
{
	const char *mnt = NULL;
	int repair = 0, json = 0;
	json_t *a = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--repair")) {
			repair = 1;
		} else if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			puts("usage: replfs verify MOUNTPOINT [--repair] [--json]\n"
			     "  on the master: compares the master and every slave at the same journal\n"
			     "  position (content, mode, owner, size, symlink target, xattrs) while\n"
			     "  writes go on, and lists every difference; --repair makes the slaves\n"
			     "  match. Exit 0: identical, 1: differences, 2: could not verify.");
			return 0;
		} else if (argv[i][0] == '-' || mnt) {
			log_error("verify: unexpected argument %s (see replfs verify --help)", argv[i]);
			return 2;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt) {
		log_error("verify needs a MOUNTPOINT (see replfs verify --help)");
		return 2;
	}
	struct repl_watch *w = repl_watch_start(mnt, "verify:");
	int vrc = control_command(mnt, "/verify", json_pack("{s:b}", "repair", repair), 24 * 3600,
				  "verify", &a);
	repl_watch_stop(w);
	if (vrc != 0) {
		json_decref(a);
		return 2;
	}
	if (json) {
		char *t = json_dumps(a, JSON_INDENT(1));
		if (t)
			puts(t);
		free(t);
	} else {
		json_t *d, *diffs = json_object_get(a, "differences");
		size_t i;
		printf("%s\n", json_string_value(json_object_get(a, "message")));
		json_array_foreach(diffs, i, d)
			printf("  %s: %s\n", json_string_value(json_object_get(d, "node")),
			       json_string_value(json_object_get(d, "what")));
	}
	int remaining = (int)json_integer_value(json_object_get(a, "remaining"));
	int unverified = (int)json_integer_value(json_object_get(a, "unverified_count"));
	json_t *u;
	size_t i;
	json_array_foreach(json_object_get(a, "unverified"), i, u)
		if (!json)
			printf("  not verified: %s: %s\n", json_string_value(json_object_get(u, "node")),
		       json_string_value(json_object_get(u, "why")));
	json_decref(a);
	return remaining ? 1 : unverified ? 2 : 0;
}
