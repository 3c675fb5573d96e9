/* The master side: an HTTP server (libmicrohttpd, a thread per connection so
 * a long poll may simply wait) that answers slaves' sealed requests.
 *
 *   POST /repl   one sealed envelope (wire.c); the answer is one sealed
 *                envelope, or for SNAPSHOT a sealed stream (recovery/snapshot.c)
 *   GET /metrics Prometheus text (status.c)
 *
 * Anything not sealed with the cluster key gets 403 and a log line; replays
 * (a request counter already seen in its session, a hello challenge already
 * used) likewise. Control request bodies are capped at REPL_REQ_MAX and slow
 * clients are dropped after the connection timeout.
 */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONN_TIMEOUT_S 30
#define CONN_LIMIT 128

struct req_body {
	uint8_t *data;
	size_t len, cap;
	int too_big;
};

/* libmicrohttpd hands a POST body over in pieces: 0 = more to come, 1 = the
 * body is complete (NUL-terminated; too_big when over limit, then dropped),
 * -ENOMEM. */
static int gather_body(void **con_cls, const char *data, size_t *size, size_t limit)
{
	struct req_body *b = *con_cls;

	if (!b) {
		if (!(b = calloc(1, sizeof(*b))))
			return -ENOMEM;
		*con_cls = b;
		return 0;
	}
	if (!*size)
		return 1;
	if (!b->too_big && b->len + *size > limit) {
		b->too_big = 1;
		free(b->data);
		b->data = NULL;
		b->len = b->cap = 0;
	}
	if (!b->too_big) {
		if (b->len + *size + 1 > b->cap) {
			size_t cap = b->cap ? b->cap : 4096;
			while (cap < b->len + *size + 1)
				cap *= 2;
			uint8_t *n = realloc(b->data, cap);
			if (!n)
				return -ENOMEM;
			b->data = n;
			b->cap = cap;
		}
		memcpy(b->data + b->len, data, *size);
		b->len += *size;
		b->data[b->len] = '\0';
	}
	*size = 0;
	return 0;
}

static void peer_name(struct MHD_Connection *conn, char *out, size_t size)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";

	if (ci && ci->client_addr) {
		socklen_t len = ci->client_addr->sa_family == AF_INET6
					? sizeof(struct sockaddr_in6)
					: sizeof(struct sockaddr_in);
		if (ci->client_addr->sa_family == AF_UNIX)
			snprintf(host, sizeof(host), "local");
		else
			getnameinfo(ci->client_addr, len, host, sizeof(host), serv, sizeof(serv),
				    NI_NUMERICHOST | NI_NUMERICSERV);
	}
	snprintf(out, size, "%s:%s", host, serv);
}

/* Seals buf in place (REPL_ENV_HEAD bytes of room, the plaintext, room for
 * the tag: no copy of a batch) as the answer to req, and queues it. Takes
 * buf. */
static enum MHD_Result send_sealed(struct replicator *r, struct MHD_Connection *conn,
				   uint8_t type, const struct repl_env *req, uint8_t *buf,
				   size_t plain_len)
{
	struct repl_env e = { .type = type, .epoch = r->node.st->epoch, .counter = req->counter };
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t n;

	memcpy(e.sender, r->node.st->node_id, REPL_ID_BYTES);
	memcpy(e.session, req->session, REPL_ID_BYTES);
	n = repl_seal(r->o.key, &e, buf, plain_len);
	resp = MHD_create_response_from_buffer(n, buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result repl_reply_sealed(struct replicator *r, struct MHD_Connection *conn,
				  uint8_t type, const struct repl_env *req, const void *plain,
				  size_t len)
{
	uint8_t *buf = malloc(REPL_ENV_OVERHEAD + len);

	if (!buf)
		return MHD_NO;
	memcpy(buf + REPL_ENV_HEAD, plain, len);
	return send_sealed(r, conn, type, req, buf, len);
}

enum MHD_Result repl_reply_json(struct replicator *r, struct MHD_Connection *conn,
				uint8_t type, const struct repl_env *req, void *json)
{
	json_t *obj = json;
	char *text = json_dumps(obj, JSON_COMPACT);
	enum MHD_Result ret;

	json_decref(obj);
	if (!text)
		return MHD_NO;
	ret = repl_reply_sealed(r, conn, type, req, text, strlen(text));
	free(text);
	return ret;
}

enum MHD_Result repl_reply_error(struct replicator *r, struct MHD_Connection *conn,
				 const struct repl_env *req, const char *code, const char *msg)
{
	return repl_reply_json(r, conn, REPL_MSG_ERROR, req,
			  json_pack("{s:s, s:s}", "error", code, "message", msg));
}

static enum MHD_Result refuse(struct MHD_Connection *conn, const char *why)
{
	char *body = strdup(why);

	return body ? repl_serve_text(conn, MHD_HTTP_FORBIDDEN, "text/plain", body) : MHD_NO;
}

static uint64_t jget(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

static enum MHD_Result on_hello(struct replicator *r, struct MHD_Connection *conn,
				const struct repl_env *e, json_t *msg, const char *peer)
{
	struct repl_state *s = &r->state;
	struct repl_slave *sl;
	char hex[REPL_ID_BYTES * 2 + 1];
	uint8_t session[REPL_ID_BYTES];
	uint64_t first = journal_first_lsn(r->node.journal);

	/* A session opens only with a challenge this process handed out and
	 * that was not used yet: a first HELLO gets one, the second spends it. */
	const char *chex = json_string_value(json_object_get(msg, "challenge"));
	uint8_t ch[REPL_ID_BYTES];
	size_t chlen = 0;
	uint64_t now_ns = time_mono_ns();
	if (!chex) {
		pthread_mutex_lock(&s->lock);
		int slot = r->challenge_next;
		r->challenge_next = (slot + 1) % REPL_CHALLENGES;
		randombytes_buf(r->challenge[slot], REPL_ID_BYTES);
		r->challenge_ns[slot] = now_ns;
		sodium_bin2hex(hex, sizeof(hex), r->challenge[slot], REPL_ID_BYTES);
		pthread_mutex_unlock(&s->lock);
		return repl_reply_json(r, conn, REPL_MSG_ERROR, e,
				  json_pack("{s:s, s:s, s:s}", "error", "challenge", "message",
					    "say hello with this challenge", "challenge", hex));
	}
	int found = 0;
	if (sodium_hex2bin(ch, sizeof(ch), chex, strlen(chex), NULL, &chlen, NULL) == 0 &&
	    chlen == REPL_ID_BYTES) {
		pthread_mutex_lock(&s->lock);
		for (int i = 0; i < REPL_CHALLENGES && !found; i++) {
			if (r->challenge_ns[i] && now_ns - r->challenge_ns[i] < REPL_CHALLENGE_NS &&
			    sodium_memcmp(r->challenge[i], ch, REPL_ID_BYTES) == 0) {
				r->challenge_ns[i] = 0; /* spent */
				found = 1;
			}
		}
		if (!found)
			s->refused_replay++;
		pthread_mutex_unlock(&s->lock);
	}
	if (!found) {
		log_warn("refused a hello from %s: its challenge is unknown, used or expired "
			 "(a replayed request?)", peer);
		return refuse(conn, "refused: replayed request\n");
	}
	randombytes_buf(session, sizeof(session));

	/* Where the two timelines fork: what the slave holds beyond it was
	 * never this master's; it must give it up (and keep it aside) first. */
	struct epoch_history sh;
	uint64_t applied = jget(msg, "applied"), durable = jget(msg, "durable"), fork;
	if (repl_history_from_json(json_object_get(msg, "history"), &sh) < 0) {
		sh.n = 1;
		sh.epoch[0] = 1;
		sh.first_lsn[0] = 1;
	}
	pthread_mutex_lock(&r->hist_lock);
	fork = history_fork(&r->hist, journal_appended_lsn(r->node.journal), &sh, applied);
	json_t *hist = repl_history_json(&r->hist);
	pthread_mutex_unlock(&r->hist_lock);
	int diverged = fork < applied;
	if (durable > fork)
		durable = fork;

	char url[128] = "", ip[NI_MAXHOST];
	const char *listen = json_string_value(json_object_get(msg, "listen"));
	const char *adv = json_string_value(json_object_get(msg, "url"));
	snprintf(ip, sizeof(ip), "%s", peer);
	if (strrchr(ip, ':'))
		*strrchr(ip, ':') = '\0';
	if (adv && (!strncmp(adv, "http://", 7) || !strncmp(adv, "https://", 8)) &&
	    strlen(adv) < sizeof(url)) {
		snprintf(url, sizeof(url), "%s", adv);
	} else if (listen) {
		struct repl_options lo = { 0 };
		if (repl_parse_listen(listen, &lo) == 0)
			repl_advertised_url(lo.listen_host, lo.listen_port, ip, url, sizeof(url));
	}

	pthread_mutex_lock(&s->lock);
	sl = repl_state_slave(s, e->sender, 1);
	if (!sl) {
		pthread_mutex_unlock(&s->lock);
		json_decref(hist);
		return repl_reply_error(r, conn, e, "full", "this master serves its maximum of slaves");
	}
	int idx = (int)(sl - s->slaves);
	int is_new = sl->seen_mono_ns == 0;
	memcpy(sl->session, session, REPL_ID_BYTES);
	sl->last_counter = 0;
	snprintf(sl->addr, sizeof(sl->addr), "%s", peer);
	snprintf(sl->url, sizeof(sl->url), "%s", url);
	/* Another identity at the same address is that node's old store (wiped
	 * and made again): what it needed must no longer hold the journal. */
	for (int i = 0; url[0] && i < s->nslaves; i++) {
		struct repl_slave *o = &s->slaves[i];
		if (o == sl || !o->known || strcmp(o->url, url) != 0)
			continue;
		sodium_bin2hex(hex, sizeof(hex), o->node_id, REPL_ID_BYTES);
		log_info("slave %s at %s was replaced by a new store there: forgotten", hex, url);
		memset(o, 0, sizeof(*o));
	}
	if (diverged || sl->acked_lsn > applied)
		sl->acked_lsn = durable; /* what it holds of this timeline, no more */
	repl_state_ack(s, sl, durable, time_mono_ns());
	s->dirty = 1;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&r->slots[idx].lock);
	r->slots[idx].window = 0;
	journal_cursor_close(&r->slots[idx].cur);
	pthread_mutex_unlock(&r->slots[idx].lock);

	sodium_bin2hex(hex, sizeof(hex), e->sender, REPL_ID_BYTES);
	log_info("slave %s %s from %s at LSN %" PRIu64, hex, is_new ? "joined" : "reconnected",
		 peer, applied);
	if (diverged)
		log_warn("slave %s holds LSNs %" PRIu64 "-%" PRIu64 " of another timeline (forked "
			 "after LSN %" PRIu64 "): it sets them aside and rejoins",
			 hex, fork + 1, applied, fork);
	sodium_bin2hex(hex, sizeof(hex), session, REPL_ID_BYTES);
	json_t *w = json_pack("{s:s, s:I, s:I, s:I, s:o, s:o}", "session", hex, "lsn",
			      (json_int_t)journal_appended_lsn(r->node.journal), "first_lsn",
			      (json_int_t)first, "epoch", (json_int_t)r->node.st->epoch, "history",
			      hist, "peers", repl_peers_json(r));
	if (diverged)
		json_object_set_new(w, "truncate_to", json_integer((json_int_t)fork));
	return repl_reply_json(r, conn, REPL_MSG_WELCOME, e, w);
}

/* Finds the request's slave and checks session and counter. */
static struct repl_slave *session_check(struct replicator *r, const struct repl_env *e,
					const char *peer, const char **why)
{
	struct repl_state *s = &r->state;
	struct repl_slave *sl;
	int ok;

	pthread_mutex_lock(&s->lock);
	sl = repl_state_slave(s, e->sender, 0);
	if (!sl || memcmp(sl->session, e->session, REPL_ID_BYTES) != 0) {
		pthread_mutex_unlock(&s->lock);
		*why = "session";
		return NULL;
	}
	pthread_mutex_unlock(&s->lock);
	struct repl_fetch_slot *fs = &r->slots[sl - s->slaves];
	pthread_mutex_lock(&s->lock);
	ok = repl_replay_check(&sl->last_counter, &fs->window, e->counter);
	if (!ok)
		s->refused_replay++;
	pthread_mutex_unlock(&s->lock);
	if (!ok) {
		log_warn("refused a replayed request from %s (counter %" PRIu64 ")", peer,
			 e->counter);
		*why = "replay";
		return NULL;
	}
	return sl;
}

static enum MHD_Result on_fetch(struct replicator *r, struct MHD_Connection *conn,
				const struct repl_env *e, json_t *msg, struct repl_slave *sl)
{
	struct repl_state *s = &r->state;
	struct journal *j = r->node.journal;
	struct repl_fetch_slot *fs = &r->slots[sl - s->slaves];
	uint64_t from = jget(msg, "from"), wait_ms = jget(msg, "wait_ms");
	uint64_t now = time_mono_ns();
	struct repl_batch_head h = { 0 };
	size_t cap = REPL_BATCH_BYTES, len = 0;
	uint8_t *buf = NULL;
	int rc;

	pthread_mutex_lock(&s->lock);
	repl_state_ack(s, sl, jget(msg, "acked"), now);
	sl->in_snapshot = 0;
	if (jget(msg, "verifying")) {
		sl->verifying_lsn = jget(msg, "verifying");
		sl->verifying_mono_ns = now;
	}
	pthread_mutex_unlock(&s->lock);
	if (from == 0)
		return repl_reply_error(r, conn, e, "bad_request", "fetch without a position");
	if (from > journal_appended_lsn(j) + 1) {
		char m[160];
		snprintf(m, sizeof(m),
			 "the slave is at LSN %" PRIu64 " but this master's journal ends at %" PRIu64,
			 from - 1, journal_appended_lsn(j));
		return repl_reply_error(r, conn, e, "diverged", m);
	}
	if (from < journal_first_lsn(j))
		return repl_reply_error(r, conn, e, "snapshot_needed",
				   "the records this slave needs are no longer kept");
	if (wait_ms > REPL_POLL_MS_MAX)
		wait_ms = REPL_POLL_MS_MAX;

	/* Long poll: wait for the journal to reach from. */
	if (journal_appended_lsn(j) < from && wait_ms) {
		struct timespec until;
		time_deadline(&until, CLOCK_MONOTONIC, wait_ms);
		pthread_mutex_lock(&s->lock);
		while (!r->stop && journal_appended_lsn(j) < from)
			if (pthread_cond_timedwait(&s->appended, &s->lock, &until) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&s->lock);
	}

	/* A verify compares the trees at verify_lsn: no batch crosses it, so a
	 * slave knows of it before it could apply past it. */
	uint64_t upto = UINT64_MAX;
	for (int i = 0; i < 400 && atomic_load(&r->verify_hold) &&
			from > atomic_load(&r->verify_lsn); i++)
		usleep(5000); /* the point is being fixed: a few ms */
	pthread_rwlock_rdlock(&r->verify_gate);
	h.verify_lsn = atomic_load(&r->verify_lsn);
	if (h.verify_lsn && (from <= h.verify_lsn || atomic_load(&r->verify_hold)))
		upto = h.verify_lsn;
	pthread_mutex_lock(&fs->lock);
	if (fs->cur.next_lsn != from) {
		journal_cursor_close(&fs->cur);
		journal_cursor_init(&fs->cur, from);
	}
	for (;;) {
		uint8_t *nb = realloc(buf, REPL_ENV_HEAD + REPL_BATCH_HEAD + cap + REPL_ENV_TAG);
		if (!nb) {
			rc = -ENOMEM;
			break;
		}
		buf = nb;
		rc = journal_read(j, &fs->cur, upto, buf + REPL_ENV_HEAD + REPL_BATCH_HEAD,
				  cap, &len, &h.salt, &h.nrec);
		/* A record bigger than the usual batch: once, with room for it. */
		if (rc == 0 && h.nrec == 0 && cap < REC_MAX_SIZE &&
		    journal_appended_lsn(j) >= fs->cur.next_lsn && fs->cur.next_lsn <= upto) {
			cap = REC_MAX_SIZE;
			continue;
		}
		break;
	}
	pthread_mutex_unlock(&fs->lock);
	pthread_rwlock_unlock(&r->verify_gate);
	if (rc == -ENOENT) {
		free(buf);
		return repl_reply_error(r, conn, e, "snapshot_needed",
				   "the records this slave needs are no longer kept");
	}
	if (rc < 0) {
		char m[128];
		free(buf);
		log_error("cannot read the journal for a slave at LSN %" PRIu64 ": %s", from,
			  strerror(-rc));
		snprintf(m, sizeof(m), "master cannot read its journal: %s", strerror(-rc));
		return repl_reply_error(r, conn, e, "internal", m);
	}
	h.master_lsn = journal_appended_lsn(j);
	h.master_epoch = r->node.st->epoch;
	h.first_lsn = from;
	h.master_time_ns = time_now_ns();
	repl_batch_head_put(buf + REPL_ENV_HEAD, &h);
	if (h.nrec && fault_check("repl:send") < 0) {
		free(buf);
		return MHD_NO; /* the batch is lost with the connection */
	}
	if (h.nrec) {
		pthread_mutex_lock(&s->lock);
		sl->sent_lsn = from + h.nrec - 1;
		pthread_mutex_unlock(&s->lock);
	}
	return send_sealed(r, conn, REPL_MSG_BATCH, e, buf, REPL_BATCH_HEAD + len);
}

/* ---- snapshots ------------------------------------------------------------- */

struct snap_send {
	struct replicator *r;
	struct snapshot_reader *rd;
	int slot;
	int done;
	int task;
};

static ssize_t snap_send_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct snap_send *ss = cls;
	ssize_t n;

	(void)pos;
	n = fault_check("snapshot:send");
	if (n == 0)
		n = snapshot_reader_read(ss->rd, (uint8_t *)buf, max);
	/* A slave receiving a snapshot is alive though it fetches nothing. */
	pthread_mutex_lock(&ss->r->state.lock);
	ss->r->state.slaves[ss->slot].seen_mono_ns = time_mono_ns();
	pthread_mutex_unlock(&ss->r->state.lock);
	if (n == 0) {
		ss->done = 1;
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (n < 0) {
		log_error("snapshot transfer failed: %s", strerror((int)-n));
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	repl_task_add(ss->r, ss->task, (uint64_t)n);
	return n;
}

static void snap_send_free(void *cls)
{
	struct snap_send *ss = cls;
	struct replicator *r = ss->r;

	snapshot_reader_close(ss->rd);
	repl_task_end(r, ss->task);
	pthread_mutex_lock(&r->state.lock);
	r->state.slaves[ss->slot].in_snapshot = 0;
	r->state.slaves[ss->slot].seen_mono_ns = time_mono_ns();
	if (ss->done)
		r->state.snapshots_sent++;
	pthread_mutex_unlock(&r->state.lock);
	pthread_mutex_lock(&r->snap_lock);
	if (--r->snap_users == 0) {
		atomic_store(&r->snap_live, 0);
		snapshot_put(r->snap);
		r->snap = NULL;
	}
	pthread_mutex_unlock(&r->snap_lock);
	free(ss);
}

static enum MHD_Result on_snapshot(struct replicator *r, struct MHD_Connection *conn,
				   const struct repl_env *e, struct repl_slave *sl)
{
	struct snap_send *ss = calloc(1, sizeof(*ss));

	if (ss)
		ss->task = -1;
	uint8_t bind[REPL_ID_BYTES + 8];
	struct MHD_Response *resp;
	enum MHD_Result ret;
	uint64_t c = htole64(e->counter);
	int rc = 0;

	if (!ss)
		return MHD_NO;
	pthread_mutex_lock(&r->snap_lock);
	if (!r->snap) {
		rc = snapshot_create(r->node.st, r->node.commit, &r->snap);
		if (rc == 0)
			log_info("snapshot taken at LSN %" PRIu64 " for a slave",
				 snapshot_lsn(r->snap));
	}
	if (rc == 0) {
		r->snap_users++;
		atomic_store(&r->snap_live, 1);
	}
	pthread_mutex_unlock(&r->snap_lock);
	if (rc < 0) {
		free(ss);
		log_error("cannot take a snapshot: %s", strerror(-rc));
		return repl_reply_error(r, conn, e, "internal", "the master cannot take a snapshot");
	}
	memcpy(bind, e->session, REPL_ID_BYTES);
	memcpy(bind + REPL_ID_BYTES, &c, 8);
	ss->r = r;
	ss->slot = (int)(sl - r->state.slaves);
	ss->task = repl_task_begin(r, snapshot_bytes(r->snap), "snapshot send to %s",
				   sl->url[0] ? sl->url : sl->addr);
	pthread_mutex_lock(&r->state.lock);
	sl->in_snapshot = 1;
	sl->snap_lsn = snapshot_lsn(r->snap);
	pthread_mutex_unlock(&r->state.lock);
	rc = snapshot_reader_open(r->snap, r->o.key, bind, sizeof(bind), &ss->rd);
	if (rc < 0) {
		snap_send_free(ss);
		return repl_reply_error(r, conn, e, "internal", "the master cannot read its snapshot");
	}
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 256 * 1024, snap_send_read, ss,
						 snap_send_free);
	if (!resp) {
		snap_send_free(ss);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/x-replfs-snapshot");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- dispatch ----------------------------------------------------------------- */

static enum MHD_Result on_repl(struct replicator *r, struct MHD_Connection *conn,
			       struct req_body *b)
{
	struct repl_state *s = &r->state;
	struct repl_env e;
	uint8_t *plain;
	size_t plen;
	char peer[96];
	const char *why = NULL;
	json_t *msg = NULL;
	enum MHD_Result ret;

	peer_name(conn, peer, sizeof(peer));
	if (repl_open(r->o.key, b->data, b->len, &e, &plain, &plen) < 0) {
		pthread_mutex_lock(&s->lock);
		s->refused_auth++;
		pthread_mutex_unlock(&s->lock);
		log_warn("refused a replication request from %s: not sealed with this cluster's key",
			 peer);
		return refuse(conn, "refused: not sealed with this cluster's key\n");
	}
	if (e.type == REPL_MSG_ANNOUNCE || e.type == REPL_MSG_PROBE || e.type == REPL_MSG_PROMOTE ||
	    e.type == REPL_MSG_VERIFY)
		return repl_failover_request(r, conn, &e, plain, plen, peer);
	if (!atomic_load(&r->is_slave) && !atomic_load(&r->deposed) &&
	    e.epoch > r->node.st->epoch) {
		/* Only a newer master gives out a newer epoch: this one was
		 * replaced. */
		char by[160];
		pthread_mutex_lock(&s->lock);
		s->refused_epoch++;
		pthread_mutex_unlock(&s->lock);
		snprintf(by, sizeof(by), "a node at %s with epoch %" PRIu64, peer, e.epoch);
		repl_fence(r, e.epoch, by);
	}
	if (atomic_load(&r->is_slave) || atomic_load(&r->deposed)) {
		char url[128], m[300];
		uint64_t epoch;
		repl_master_hint(r, url, sizeof(url), &epoch);
		snprintf(m, sizeof(m), "this node is not the master%s%s", url[0] ? "; the master is " : "",
			 url);
		return repl_reply_json(r, conn, REPL_MSG_ERROR, &e,
				       json_pack("{s:s, s:s, s:s, s:I}", "error", "not_master",
						 "message", m, "master", url,
						 "epoch", (json_int_t)epoch));
	}
	if (e.type != REPL_MSG_SNAPSHOT || plen) {
		msg = json_loadb((const char *)plain, plen, 0, NULL);
		if (!json_is_object(msg)) {
			json_decref(msg);
			return repl_reply_error(r, conn, &e, "bad_request", "malformed message");
		}
	}
	switch (e.type) {
	case REPL_MSG_HELLO:
		ret = on_hello(r, conn, &e, msg, peer);
		break;
	case REPL_MSG_FETCH:
	case REPL_MSG_ACK:
	case REPL_MSG_SNAPSHOT: {
		struct repl_slave *sl = session_check(r, &e, peer, &why);
		if (!sl) {
			ret = !strcmp(why, "replay") ? refuse(conn, "refused: replayed request\n")
						     : repl_reply_error(r, conn, &e, "session",
								   "unknown session: say hello");
		} else if (e.type == REPL_MSG_FETCH) {
			ret = on_fetch(r, conn, &e, msg, sl);
		} else if (e.type == REPL_MSG_ACK) {
			pthread_mutex_lock(&s->lock);
			repl_state_ack(s, sl, jget(msg, "acked"), time_mono_ns());
			pthread_mutex_unlock(&s->lock);
			ret = repl_reply_json(r, conn, REPL_MSG_ACKED, &e,
					      json_pack("{s:o}", "peers", repl_peers_json(r)));
		} else {
			ret = on_snapshot(r, conn, &e, sl);
		}
		break;
	}
	default:
		ret = repl_reply_error(r, conn, &e, "bad_request", "unexpected message type");
	}
	json_decref(msg);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct replicator *r = cls;
	struct req_body *b = *con_cls;

	(void)version;
	if (strcmp(url, REPL_PATH) != 0) {
		if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
			return repl_serve_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
					       strdup("method not allowed\n"));
		/* The TCP port shows metrics only; status is local (control.sock). */
		if (strcmp(url, "/metrics") != 0)
			return repl_serve_text(conn, MHD_HTTP_NOT_FOUND, "text/plain",
					       strdup("not found\n"));
		return repl_serve_info(r, conn, url);
	}
	if (strcmp(method, "POST") != 0)
		return repl_serve_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
				       strdup("POST a sealed message\n"));
	/* An announced body over the cap is refused before any of it is read. */
	const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_CONTENT_LENGTH);
	int too_big = !b && clen && strtoull(clen, NULL, 10) > REPL_REQ_MAX;
	if (!too_big) {
		switch (gather_body(con_cls, upload_data, upload_size, REPL_REQ_MAX)) {
		case 0:
			b = *con_cls;
			if (!b->too_big)
				return MHD_YES;
			break; /* refused now rather than after reading the rest */
		case -ENOMEM:
			return MHD_NO;
		}
		b = *con_cls;
		too_big = b->too_big;
	}
	if (too_big) {
		char peer[96];
		peer_name(conn, peer, sizeof(peer));
		log_warn("refused an oversized request from %s", peer);
		/* Mid-body (a chunked stream over the cap) no response can be
		 * queued any more: MHD_NO closes the connection. */
		return repl_serve_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain",
				       strdup("request too large\n"));
	}
	return on_repl(r, conn, b);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req_body *b = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (b) {
		free(b->data);
		free(b);
		*con_cls = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("http: %s", line);
}

/* ---- control socket (status for `replfs status`, any role) ------------- */

static enum MHD_Result on_control(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct replicator *r = cls;
	struct req_body *b = *con_cls;

	(void)version;
	if (!strcmp(method, "GET"))
		return repl_serve_info(cls, conn, url);
	if (strcmp(method, "POST") != 0)
		return repl_serve_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
				       strdup("method not allowed\n"));
	switch (gather_body(con_cls, upload_data, upload_size, 65536)) {
	case 0:
		return MHD_YES;
	case -ENOMEM:
		return MHD_NO;
	}
	b = *con_cls;
	if (b->too_big)
		return repl_serve_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain",
				       strdup("request too large\n"));
	return repl_control_post(r, conn, url, b->data ? (const char *)b->data : "", b->len);
}

static int control_start(struct replicator *r, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	/* Named through the store's open fd, never its path: the store may lie
	 * beneath the mountpoint, where a path lookup would ask this very daemon
	 * before it serves. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/control.sock",
		 r->node.st->dirfd);
	unlinkat(r->node.st->dirfd, "control.sock", 0); /* a crashed daemon's; the lock is ours */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    fchmodat(r->node.st->dirfd, "control.sock", 0600, 0) < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen, "cannot create %s/control.sock: %s", r->node.st->path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	r->ctl_fd = fd;
	r->ctl = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					  MHD_USE_ERROR_LOG,
				  0, NULL, NULL, on_control, r, MHD_OPTION_LISTEN_SOCKET, fd,
				  /* a verify of a big tree answers only when done */
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, r,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
	if (!r->ctl) {
		snprintf(err, errlen, "cannot serve %s/control.sock", r->node.st->path);
		close(fd);
		r->ctl_fd = -1;
		return -EIO;
	}
	return 0;
}

/* ---- housekeeping: persist the slave table ---------------------------------- */

static void *housekeeper_main(void *arg)
{
	struct replicator *r = arg;

	pthread_mutex_lock(&r->hk_lock);
	while (!r->stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&r->hk_cond, &r->hk_lock, &until);
		pthread_mutex_unlock(&r->hk_lock);
		repl_failover_tick(r);
		pthread_mutex_lock(&r->state.lock);
		if (r->state.dirty && !atomic_load(&r->is_slave)) {
			int rc = repl_state_save(&r->state, r->node.st->dirfd);
			if (rc < 0)
				log_warn("cannot save the slave table: %s", strerror(-rc));
		}
		pthread_mutex_unlock(&r->state.lock);
		pthread_mutex_lock(&r->hk_lock);
	}
	pthread_mutex_unlock(&r->hk_lock);
	return NULL;
}

int repl_master_start(struct replicator *r, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai = NULL;
	char port[16];
	int rc;

	for (int i = 0; i < REPL_SLAVES_MAX; i++) {
		pthread_mutex_init(&r->slots[i].lock, NULL);
		journal_cursor_init(&r->slots[i].cur, 0);
	}
	pthread_mutex_init(&r->snap_lock, NULL);
	pthread_mutex_init(&r->hk_lock, NULL);
	pthread_cond_init(&r->hk_cond, NULL);
	if ((rc = control_start(r, err, errlen)) < 0)
		return rc;
	if (!r->is_slave) {
		if ((rc = repl_state_load(&r->state, r->node.st->dirfd)) < 0)
			log_warn("%s/slaves is damaged (%s); slaves will introduce themselves again",
				 r->node.st->path, strerror(-rc));
	}
	if (pthread_create(&r->housekeeper, NULL, housekeeper_main, r) != 0) {
		snprintf(err, errlen, "cannot start the replicator");
		return -EAGAIN;
	}
	r->hk_started = 1;
	if (!r->o.listen_host[0])
		return 0;
	snprintf(port, sizeof(port), "%u", r->o.listen_port);
	rc = getaddrinfo(strcmp(r->o.listen_host, "*") ? r->o.listen_host : NULL, port, &hints,
			 &ai);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s:%u: %s", r->o.listen_host,
			 r->o.listen_port, gai_strerror(rc));
		return -EINVAL;
	}
	r->http = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					   MHD_USE_ERROR_LOG |
					   (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				   (uint16_t)r->o.listen_port, NULL, NULL, on_request, r,
				   MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT,
				   MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)32,
				   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, r,
				   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!r->http) {
		snprintf(err, errlen, "cannot listen on %s:%u (in use, or not an address of this machine)",
			 r->o.listen_host, r->o.listen_port);
		return -EADDRINUSE;
	}
	return 0;
}

void repl_master_stop(struct replicator *r)
{
	pthread_mutex_lock(&r->hk_lock);
	r->stop = 1;
	pthread_cond_broadcast(&r->hk_cond);
	pthread_mutex_unlock(&r->hk_lock);
	pthread_mutex_lock(&r->state.lock);
	pthread_cond_broadcast(&r->state.appended);
	pthread_cond_broadcast(&r->state.acked);
	pthread_mutex_unlock(&r->state.lock);
	if (r->http)
		MHD_stop_daemon(r->http);
	r->http = NULL;
	if (r->ctl)
		MHD_stop_daemon(r->ctl);
	r->ctl = NULL;
	if (r->ctl_fd >= 0) {
		unlinkat(r->node.st->dirfd, "control.sock", 0);
		close(r->ctl_fd);
		r->ctl_fd = -1;
	}
	if (r->hk_started) {
		pthread_join(r->housekeeper, NULL);
		r->hk_started = 0;
		pthread_mutex_lock(&r->state.lock);
		if (r->state.dirty && !atomic_load(&r->is_slave))
			repl_state_save(&r->state, r->node.st->dirfd);
		pthread_mutex_unlock(&r->state.lock);
	}
	for (int i = 0; i < REPL_SLAVES_MAX; i++)
		journal_cursor_close(&r->slots[i].cur);
}

int repl_master_role_start(struct replicator *r)
{
	struct repl_state *s = &r->state;

	/* A promoted slave's slaves introduce themselves anew: a table from an
	 * earlier time as master would count what they hold wrongly. */
	pthread_mutex_lock(&s->lock);
	s->nslaves = 0;
	memset(s->slaves, 0, sizeof(s->slaves));
	s->degraded = 0;
	s->fenced = 0;
	s->last_lsn = journal_appended_lsn(r->node.journal);
	s->dirty = 1;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < REPL_SLAVES_MAX; i++) {
		pthread_mutex_lock(&r->slots[i].lock);
		journal_cursor_close(&r->slots[i].cur);
		r->slots[i].window = 0;
		pthread_mutex_unlock(&r->slots[i].lock);
	}
	return 0;
}

unsigned repl_snapshot_links(struct replicator *r, uint64_t ino)
{
	unsigned n = 0;

	if (!r)
		return 0;
	if (atomic_load(&r->snap_live)) {
		pthread_mutex_lock(&r->snap_lock);
		if (r->snap)
			n = snapshot_extra_links(r->snap, ino);
		pthread_mutex_unlock(&r->snap_lock);
	}
	if (atomic_load(&r->verify_live)) {
		pthread_mutex_lock(&r->verify_lock);
		if (r->verify_snap)
			n += snapshot_extra_links(r->verify_snap, ino);
		pthread_mutex_unlock(&r->verify_lock);
	}
	return n;
}
