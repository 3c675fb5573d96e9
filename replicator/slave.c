/* The slave side: follows a master with libcurl.
 *
 * Three threads, so that receiving, applying and acknowledging overlap:
 *   fetch  says hello, then long-polls the master for records after the last
 *          one received and queues the batches (bounded, REPL_QUEUE_BYTES);
 *   apply  takes batches in order, checks every record (checksum, LSN order,
 *          epoch, paths via rec_decode), logs and applies each through
 *          commit_op() — the same write-ahead path as the master's own
 *          operations — then makes the journal durable and tells the kernel
 *          to forget what it cached of the changed names;
 *   ack    reports the durable position as soon as it moves, which is what
 *          a master in sync mode waits for.
 * When the master no longer keeps what this slave needs, the fetch thread
 * waits for the queue to drain and installs a snapshot (recovery/snapshot.c),
 * then streams on from the snapshot's LSN.
 */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <curl/curl.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPL_QUEUE_BYTES (64u << 20)
#define POLL_MS 1000
/* An answer that stops coming (a partition that swallows packets, a lost
 * response on a connection that stays open) is given up after this many
 * seconds without a byte, whatever the request's own timeout: well within
 * the master's default sync timeout (10 s), so a lost answer does not cost a
 * degrade. A long poll is silent for POLL_MS only. */
#define STALL_S 5L
#define RESP_MAX (REC_MAX_SIZE + REPL_BATCH_BYTES + 4096)

struct batch {
	struct batch *next;
	uint8_t *buf;  /* the whole envelope (freed with the batch) */
	uint8_t *recs; /* records inside it */
	size_t len;
	struct repl_batch_head h;
};

struct repl_follower {
	struct replicator *r;
	pthread_t fetch_thread, apply_thread, ack_thread;
	int threads;
	char url[300];

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;
	int stop;
	struct batch *head, *tail;
	size_t queued_bytes;
	int applying;
	uint64_t durable, acked_sent;
	int reset;            /* apply refused a batch: refetch from the applied LSN */
	int no_fetch;         /* draining: the fetch thread is done, apply what is queued */
	int need_snapshot;    /* rejoin: the tree must be replaced before anything else */
	uint64_t url_epoch;   /* epoch the current URL was learned for */
	/* the master's timeline, from its WELCOME */
	struct epoch_history master_hist;
	int have_master_hist;
	uint64_t fail_since_ns; /* the master has not answered since */
	/* session */
	uint8_t session[REPL_ID_BYTES];
	int have_session;
	uint64_t counter;
	/* what status shows */
	char state[16];
	char last_error[256];
	uint64_t master_lsn, master_epoch, master_time_ns, batch_time_ns;
};

struct http_buf {
	uint8_t *data;
	size_t len, cap, max;
	char ctype[64];
	/* a snapshot streams into the installer instead */
	struct snapshot_install *install;
	int install_rc;
	struct replicator *task_r;   /* progress of the install, for status */
	int task;
};

static void set_state(struct repl_follower *f, const char *state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_state(struct repl_follower *f, const char *state, const char *fmt, ...)
{
	char msg[256] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_lock(&f->lock);
	int changed = !f->stop &&
		      (strcmp(f->state, state) != 0 || (fmt && strcmp(f->last_error, msg) != 0));
	snprintf(f->state, sizeof(f->state), "%s", state);
	if (fmt)
		snprintf(f->last_error, sizeof(f->last_error), "%s", msg);
	pthread_mutex_unlock(&f->lock);
	if (changed && fmt)
		log_warn("master %s: %s", f->url, msg);
	else if (changed)
		log_info("master %s: %s", f->url, state);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct http_buf *b = arg;
	size_t len = size * n;

	if (b->install) {
		int rc = fault_check("snapshot:recv");
		if (rc == 0)
			rc = snapshot_install_write(b->install, p, len);
		if (rc < 0) {
			b->install_rc = rc;
			return 0;
		}
		if (b->task_r)
			repl_task_add(b->task_r, b->task, len);
		return len;
	}
	if (b->len + len > b->max)
		return 0;
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		while (cap < b->len + len)
			cap *= 2;
		uint8_t *nd = realloc(b->data, cap);
		if (!nd)
			return 0;
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct http_buf *b = arg;
	size_t len = size * n;

	if (len > 13 && !strncasecmp(p, "content-type:", 13)) {
		const char *v = p + 13;
		while (*v == ' ')
			v++;
		size_t vl = strcspn(v, "\r\n");
		if (vl >= sizeof(b->ctype))
			vl = sizeof(b->ctype) - 1;
		memcpy(b->ctype, v, vl);
		b->ctype[vl] = '\0';
	}
	return len;
}

/* An unmount must not wait for a long poll (or a snapshot) to end. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct repl_follower *f = arg;
	int stop;

	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	pthread_mutex_lock(&f->lock);
	stop = f->stop || f->no_fetch;
	pthread_mutex_unlock(&f->lock);
	return stop;
}

static CURL *http_new(struct repl_follower *f, struct curl_slist **hdrs)
{
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	*hdrs = curl_slist_append(NULL, "Content-Type: application/octet-stream");
	*hdrs = curl_slist_append(*hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, f->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_S);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	return c;
}

/* Sends one sealed message and opens the sealed answer. On success *plain
 * points into resp->data. Returns 0, -EACCES (refused by the master, text in
 * err), -EBADMSG (an answer not sealed for this request: wrong key, forged or
 * replayed), -ECONNREFUSED/-ETIMEDOUT/-EIO (transport). */
static int exchange(struct repl_follower *f, CURL *c, uint8_t type, const char *body,
		    long timeout_ms, struct http_buf *resp, struct repl_env *renv, uint8_t **plain,
		    size_t *plen, char *err, size_t errlen)
{
	struct replicator *r = f->r;
	size_t blen = body ? strlen(body) : 0, n;
	struct repl_env e = { .type = type, .epoch = r->node.st->epoch };
	uint8_t *req = malloc(REPL_ENV_OVERHEAD + blen);
	long status = 0;
	CURLcode cc;
	int rc;

	if (!req)
		return -ENOMEM;
	char url[sizeof(f->url)];
	memcpy(e.sender, r->node.st->node_id, REPL_ID_BYTES);
	pthread_mutex_lock(&f->lock);
	snprintf(url, sizeof(url), "%s", f->url);
	if (type == REPL_MSG_HELLO)
		randombytes_buf(e.session, REPL_ID_BYTES);
	else
		memcpy(e.session, f->session, REPL_ID_BYTES);
	e.counter = ++f->counter;
	pthread_mutex_unlock(&f->lock);
	if (blen)
		memcpy(req + REPL_ENV_HEAD, body, blen);
	n = repl_seal(r->o.key, &e, req, blen);

	resp->len = 0;
	resp->ctype[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	cc = curl_easy_perform(c);
	free(req);
	if (cc != CURLE_OK) {
		if (resp->install && resp->install_rc < 0) {
			snprintf(err, errlen, "snapshot refused: %s", strerror(-resp->install_rc));
			return resp->install_rc;
		}
		snprintf(err, errlen, "%s", curl_easy_strerror(cc));
		return cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED
		       : cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status == 403) {
		/* The body is one line of text, not NUL-terminated. */
		const char *nl = resp->data ? memchr(resp->data, '\n', resp->len) : NULL;
		int n = resp->data ? (int)(nl ? (size_t)(nl - (char *)resp->data) : resp->len) : 0;
		/* libcurl resends a request whose connection broke before the
		 * answer; the master has seen that counter: a new session, not a
		 * key problem. */
		if (n >= 9 && resp->data && memmem(resp->data, (size_t)n, "replayed", 8)) {
			snprintf(err, errlen, "the connection broke mid-request; opening a new "
					      "session");
			return -EALREADY;
		}
		snprintf(err, errlen, "the master refused us (%.*s): is this the cluster's key?",
			 n > 200 ? 200 : n, resp->data ? (char *)resp->data : "");
		return -EACCES;
	}
	if (status != 200) {
		snprintf(err, errlen, "the master answered HTTP %ld", status);
		return -EPROTO;
	}
	if (resp->install)
		return 0;
	rc = repl_open(r->o.key, resp->data, resp->len, renv, plain, plen);
	if (rc < 0 || memcmp(renv->session, e.session, REPL_ID_BYTES) != 0 ||
	    renv->counter != e.counter) {
		pthread_mutex_lock(&r->state.lock);
		if (rc < 0)
			r->state.refused_auth++;
		else
			r->state.refused_replay++;
		pthread_mutex_unlock(&r->state.lock);
		snprintf(err, errlen, rc < 0 ? "an answer not sealed with this cluster's key was refused"
					     : "an answer that was not for this request (replayed?) was refused");
		return -EBADMSG;
	}
	if (renv->epoch < r->node.st->epoch) {
		pthread_mutex_lock(&r->state.lock);
		r->state.refused_epoch++;
		pthread_mutex_unlock(&r->state.lock);
		snprintf(err, errlen,
			 "the master is at epoch %" PRIu64 ", older than this node's %" PRIu64
			 ": refused (a deposed master?)",
			 renv->epoch, r->node.st->epoch);
		return -ESTALE;
	}
	return 0;
}

static uint64_t jget(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

/* An ERROR answer's code and message, or NULL when it is not one. */
static const char *answer_error(const struct repl_env *e, const uint8_t *plain, size_t plen,
				char *msg, size_t msglen)
{
	static __thread char code[32];
	json_t *o;

	if (e->type != REPL_MSG_ERROR)
		return NULL;
	o = json_loadb((const char *)plain, plen, 0, NULL);
	snprintf(code, sizeof(code), "%s", json_string_value(json_object_get(o, "error"))
						   ? json_string_value(json_object_get(o, "error"))
						   : "unknown");
	snprintf(msg, msglen, "%s", json_string_value(json_object_get(o, "message"))
					    ? json_string_value(json_object_get(o, "message"))
					    : code);
	json_decref(o);
	return code;
}

static void queue_drop(struct repl_follower *f);

/* Switches to url (a newer or equal epoch's master): what is queued from
 * the old one is dropped, a new session opens with a HELLO, which finds any
 * fork. */
static void follow_url(struct repl_follower *f, const char *url, uint64_t epoch)
{
	char full[sizeof(f->url)];
	size_t n = strlen(url);

	while (n && url[n - 1] == '/')
		n--;
	if (n >= 5 && !strncmp(url + n - 5, REPL_PATH, 5))
		n -= 5;
	snprintf(full, sizeof(full), "%.*s%s", (int)n, url, REPL_PATH);
	pthread_mutex_lock(&f->lock);
	if (strcmp(full, f->url) != 0) {
		snprintf(f->url, sizeof(f->url), "%s", full);
		f->url_epoch = epoch;
		f->have_session = 0;
		f->reset = 1;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
		log_info("following the master at %s (epoch %" PRIu64 ")", full, epoch);
		return;
	}
	pthread_mutex_unlock(&f->lock);
}

void repl_follower_redirect(struct replicator *r, const char *url, uint64_t epoch)
{
	if (r->follower && url && url[0])
		follow_url(r->follower, url, epoch);
}

const char *repl_follower_url(struct replicator *r, char *buf, size_t len)
{
	struct repl_follower *f = r->follower;

	buf[0] = '\0';
	if (!f)
		return buf;
	pthread_mutex_lock(&f->lock);
	snprintf(buf, len, "%.*s", (int)(strlen(f->url) - strlen(REPL_PATH)), f->url);
	pthread_mutex_unlock(&f->lock);
	return buf;
}

/* A node that is not the master named the one it knows: follow it when its
 * epoch is not older than ours. */
static void follow_hint(struct repl_follower *f, const uint8_t *plain, size_t plen,
			const char *msg)
{
	json_t *o = json_loadb((const char *)plain, plen, 0, NULL);
	const char *url = json_string_value(json_object_get(o, "master"));
	uint64_t epoch = jget(o, "epoch");

	if (url && url[0] && epoch >= f->r->node.st->epoch)
		follow_url(f, url, epoch);
	else
		set_state(f, "connecting", "%s", msg);
	json_decref(o);
}

static int say_hello(struct repl_follower *f, CURL *c, struct http_buf *resp)
{
	struct replicator *r = f->r;
	struct commit *cm = r->node.commit;
	struct repl_env re;
	uint8_t *plain, sid[REPL_ID_BYTES];
	size_t plen, sidlen = 0;
	char err[300], msg[256];
	const char *code;
	json_t *o;
	int rc;

	/* First hello: the master hands out a one-time challenge; the second
	 * hello, carrying it, opens the session. */
	char challenge[REPL_ID_BYTES * 2 + 1] = "";
	for (int round = 0; round < 2; round++) {
		/* Who we are: position, timeline (the master finds any fork from
		 * it) and where we listen (so the others can find us after a
		 * failover). */
		json_t *h = json_pack("{s:I, s:I}", "applied", (json_int_t)commit_last_lsn(cm),
				      "durable", (json_int_t)journal_durable_lsn(r->node.journal));
		pthread_mutex_lock(&r->hist_lock);
		json_object_set_new(h, "history", repl_history_json(&r->hist));
		pthread_mutex_unlock(&r->hist_lock);
		if (r->o.listen_host[0]) {
			char l[96];
			snprintf(l, sizeof(l), "%s:%u", r->o.listen_host, r->o.listen_port);
			json_object_set_new(h, "listen", json_string(l));
		}
		if (r->o.advertise_url[0])
			json_object_set_new(h, "url", json_string(r->o.advertise_url));
		if (challenge[0])
			json_object_set_new(h, "challenge", json_string(challenge));
		char *text = json_dumps(h, JSON_COMPACT);
		json_decref(h);
		if (!text)
			return -ENOMEM;
		rc = exchange(f, c, REPL_MSG_HELLO, text, 10000, resp, &re, &plain, &plen, err,
			      sizeof(err));
		free(text);
		if (rc < 0) {
			set_state(f,
				  rc == -EACCES || rc == -EBADMSG || rc == -ESTALE ? "refused"
										   : "connecting",
				  "%s", err);
			return rc;
		}
		if (!(code = answer_error(&re, plain, plen, msg, sizeof(msg))))
			break;
		if (!strcmp(code, "not_master")) {
			follow_hint(f, plain, plen, msg);
			return -EAGAIN;
		}
		if (strcmp(code, "challenge") != 0 || round == 1) {
			set_state(f, "refused", "%s", msg);
			return -EPROTO;
		}
		o = json_loadb((const char *)plain, plen, 0, NULL);
		snprintf(challenge, sizeof(challenge), "%s",
			 json_string_value(json_object_get(o, "challenge"))
				 ? json_string_value(json_object_get(o, "challenge"))
				 : "");
		json_decref(o);
		if (strlen(challenge) != REPL_ID_BYTES * 2) {
			set_state(f, "refused", "the master's challenge is malformed");
			return -EPROTO;
		}
	}
	o = json_loadb((const char *)plain, plen, 0, NULL);
	const char *hex = json_string_value(json_object_get(o, "session"));
	if (re.type != REPL_MSG_WELCOME || !hex ||
	    sodium_hex2bin(sid, sizeof(sid), hex, strlen(hex), NULL, &sidlen, NULL) != 0 ||
	    sidlen != REPL_ID_BYTES) {
		json_decref(o);
		set_state(f, "refused", "the master's welcome is malformed");
		return -EPROTO;
	}
	uint64_t epoch = jget(o, "epoch");
	struct epoch_history mh;
	int have_mh = repl_history_from_json(json_object_get(o, "history"), &mh) == 0;
	json_t *tr = json_object_get(o, "truncate_to");
	uint64_t truncate_to = json_is_integer(tr) ? (uint64_t)json_integer_value(tr) : UINT64_MAX;
	repl_peers_set(r, json_object_get(o, "peers"));
	json_decref(o);
	if (epoch < r->node.st->epoch) {
		set_state(f, "refused",
			  "the master is at epoch %" PRIu64 ", older than this node's %" PRIu64
			  ": refused (a deposed master?)",
			  epoch, r->node.st->epoch);
		return -ESTALE;
	}
	if (truncate_to != UINT64_MAX && truncate_to < commit_last_lsn(cm)) {
		/* Our timeline forked from the master's after truncate_to: what
		 * follows is set aside in STORE/recovery, and the tree is
		 * replaced by the master's (a snapshot) before anything else. */
		struct rejoin_info ri = { .fork_lsn = truncate_to, .master_epoch = epoch };
		char dir[256];
		pthread_mutex_lock(&r->hist_lock);
		ri.fork_epoch = history_epoch_at(&r->hist, truncate_to + 1);
		pthread_mutex_unlock(&r->hist_lock);
		repl_follower_url(r, ri.master, sizeof(ri.master));
		set_state(f, "rejoining", NULL);
		rc = rejoin_set_aside(r->node.st, r->node.journal, &ri, dir, sizeof(dir));
		if (rc < 0) {
			set_state(f, "failed", "cannot set aside the records after the fork: %s",
				  strerror(-rc));
			return rc;
		}
		log_warn("this node's LSNs %" PRIu64 "-%" PRIu64 " (epoch %" PRIu64
			 ") were never the master's: the files they changed are kept in %s; "
			 "replacing the tree with the master's",
			 truncate_to + 1, commit_last_lsn(cm), ri.fork_epoch, dir);
		pthread_mutex_lock(&f->lock);
		f->need_snapshot = 1;
		pthread_mutex_unlock(&f->lock);
	}
	if (epoch > r->node.st->epoch) {
		/* Following a newer master: remember its epoch before taking any of its
		 * records, so an older one is refused from now on. */
		pthread_mutex_lock(&cm->order_lock);
		rc = store_epoch_write(r->node.st, epoch);
		if (rc == 0)
			cm->epoch = epoch;
		pthread_mutex_unlock(&cm->order_lock);
		if (rc < 0) {
			set_state(f, "refused", "cannot record epoch %" PRIu64 ": %s", epoch,
				  strerror(-rc));
			return rc;
		}
	}
	/* A deposed master that follows a newer one is deposed no more. */
	if (atomic_load(&r->deposed) && epoch >= r->deposed_epoch) {
		unlinkat(r->node.st->dirfd, "deposed", 0);
		atomic_store(&r->deposed, 0);
	}
	pthread_mutex_lock(&f->lock);
	memcpy(f->session, sid, REPL_ID_BYTES);
	f->have_session = 1;
	f->master_epoch = epoch;
	if (have_mh) {
		f->master_hist = mh;
		f->have_master_hist = 1;
	}
	f->fail_since_ns = 0;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void queue_drop(struct repl_follower *f)
{
	while (f->head) {
		struct batch *b = f->head;
		f->head = b->next;
		free(b->buf);
		free(b);
	}
	f->tail = NULL;
	f->queued_bytes = 0;
}

/* ---- snapshot install ------------------------------------------------------ */

static int install_snapshot(struct repl_follower *f, CURL *c, struct http_buf *resp)
{
	struct replicator *r = f->r;
	struct commit *cm = r->node.commit;
	struct snapshot_install *in = NULL;
	uint8_t bind[REPL_ID_BYTES + 8];
	uint64_t lsn = 0, epoch = 0, next_counter;
	struct repl_env re;
	uint8_t *plain;
	size_t plen;
	char err[300];
	int rc, old_fd = -1;
	uint64_t t0 = time_mono_ns();

	/* Everything received before must be applied first: the snapshot
	 * replaces the tree those records were going to. */
	pthread_mutex_lock(&f->lock);
	while (!f->stop && (f->head || f->applying))
		pthread_cond_wait(&f->cond, &f->lock);
	next_counter = f->counter + 1;
	pthread_mutex_unlock(&f->lock);
	if (f->stop)
		return -EINTR;
	set_state(f, "snapshot", NULL);
	if (f->need_snapshot)
		log_info("rejoin: receiving the master's tree");
	else
		log_info("the master no longer keeps LSN %" PRIu64 ": receiving a snapshot",
			 commit_last_lsn(cm) + 1);
	next_counter = htole64(next_counter);
	memcpy(bind, f->session, REPL_ID_BYTES);
	memcpy(bind + REPL_ID_BYTES, &next_counter, 8);
	rc = snapshot_install_begin(r->node.st, r->o.key, bind, sizeof(bind), &in);
	if (rc < 0) {
		set_state(f, "snapshot", "cannot start a snapshot install: %s", strerror(-rc));
		return rc;
	}
	resp->install = in;
	resp->install_rc = 0;
	resp->task_r = r;
	resp->task = repl_task_begin(r, 0, "snapshot receive from %.*s",
				     (int)(strlen(f->url) - strlen(REPL_PATH)), f->url);
	/* The master may take a while to freeze its tree before the first byte. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
	rc = exchange(f, c, REPL_MSG_SNAPSHOT, NULL, 0, resp, &re, &plain, &plen, err,
		      sizeof(err));
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_S);
	resp->install = NULL;
	repl_task_end(r, resp->task);
	resp->task_r = NULL;
	if (rc == 0 && strncmp(resp->ctype, "application/x-replfs-snapshot", 29) != 0) {
		snprintf(err, sizeof(err), "the master did not send a snapshot");
		rc = -EPROTO;
	}
	if (rc == 0)
		rc = snapshot_install_end(in, &lsn, &epoch);
	else
		snapshot_install_abort(in);
	if (rc < 0) {
		set_state(f, "snapshot", "snapshot transfer failed: %s",
			  err[0] ? err : strerror(-rc));
		return rc;
	}
	/* Swap the trees with the apply step stopped and readers held off. */
	pthread_mutex_lock(&cm->order_lock);
	if (r->node.apply_lock)
		pthread_rwlock_wrlock(r->node.apply_lock);
	rc = snapshot_install_swap(r->node.st, r->node.journal, &old_fd);
	if (rc == 0) {
		cm->next_lsn = lsn + 1;
		cm->apply.datafd = r->node.st->datafd;
		if (epoch > cm->epoch)
			cm->epoch = epoch;
	}
	if (r->node.apply_lock)
		pthread_rwlock_unlock(r->node.apply_lock);
	pthread_mutex_unlock(&cm->order_lock);
	if (rc < 0) {
		/* Half swapped: only the next mount can finish it (from the marker). */
		set_state(f, "failed", "cannot install the snapshot: %s; remount to finish it",
			  strerror(-rc));
		pthread_mutex_lock(&f->lock);
		f->stop = 1;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
		return rc;
	}
	if (r->node.data_swapped)
		r->node.data_swapped(r->node.cb_arg, r->node.st->datafd, old_fd);
	atomic_fetch_add(&r->snapshots_received, 1);
	/* Our timeline is now the master's up to the snapshot. */
	pthread_mutex_lock(&f->lock);
	struct epoch_history mh = f->master_hist;
	int have_mh = f->have_master_hist;
	f->need_snapshot = 0;
	pthread_mutex_unlock(&f->lock);
	pthread_mutex_lock(&r->hist_lock);
	if (have_mh) {
		history_cut(&mh, lsn);
		r->hist = mh;
	} else {
		history_cut(&r->hist, 0);
		history_note(&r->hist, epoch, lsn ? lsn : 1);
	}
	rc = store_history_write(r->node.st, &r->hist);
	pthread_mutex_unlock(&r->hist_lock);
	if (rc < 0)
		log_error("cannot record the epoch history: %s", strerror(-rc));
	rejoin_finish(r->node.st);
	pthread_mutex_lock(&f->lock);
	f->durable = lsn;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	log_info("installed a snapshot at LSN %" PRIu64 " (epoch %" PRIu64 ") in %.1f s", lsn,
		 epoch, (double)(time_mono_ns() - t0) / 1e9);
	return 0;
}

/* ---- fetch thread ------------------------------------------------------------ */

/* A pause between retries that a stop, a drain (promote) or a redirect
 * ends at once. */
static void nap(struct repl_follower *f, unsigned ms)
{
	struct timespec until;

	time_deadline(&until, CLOCK_REALTIME, ms);
	pthread_mutex_lock(&f->lock);
	while (!f->stop && !f->no_fetch && !f->reset)
		if (pthread_cond_timedwait(&f->cond, &f->lock, &until) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&f->lock);
}

/* The master has not answered for a while: it may have been replaced while
 * this node was away from the announcement. Ask the nodes we know. */
static void find_master(struct repl_follower *f)
{
	uint64_t now = time_mono_ns(), epoch = 0;
	char url[128];

	pthread_mutex_lock(&f->lock);
	if (!f->fail_since_ns)
		f->fail_since_ns = now;
	int due = now - f->fail_since_ns > 3000000000ull;
	if (due)
		f->fail_since_ns = now; /* again in a while, not at every retry */
	pthread_mutex_unlock(&f->lock);
	if (due && repl_find_master(f->r, url, sizeof(url), &epoch) == 0)
		follow_url(f, url, epoch);
}

static void *fetch_main(void *arg)
{
	struct repl_follower *f = arg;
	struct replicator *r = f->r;
	struct http_buf resp = { .max = RESP_MAX };
	struct curl_slist *hdrs = NULL;
	CURL *c = http_new(f, &hdrs);
	uint64_t next = commit_last_lsn(r->node.commit) + 1;
	unsigned backoff_ms = 100;
	int resent = 0; /* a resend refused as a replay was retried at once */

	while (c) {
		struct repl_env re;
		uint8_t *plain;
		size_t plen;
		char err[300], msg[256], body[160];
		const char *code;
		int rc;

		pthread_mutex_lock(&f->lock);
		while (!f->stop && !f->no_fetch && f->queued_bytes >= REPL_QUEUE_BYTES)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->reset) {
			/* The applier refused a batch: forget what is queued and start
			 * again from what is applied, in a fresh session. */
			queue_drop(f);
			while (f->applying)
				pthread_cond_wait(&f->cond, &f->lock);
			f->reset = 0;
			f->have_session = 0;
			next = commit_last_lsn(r->node.commit) + 1;
		}
		int stop = f->stop || f->no_fetch, have = f->have_session;
		uint64_t durable = f->durable;
		pthread_mutex_unlock(&f->lock);
		if (stop)
			break;
		if (!have) {
			int hr = say_hello(f, c, &resp);
			if (hr == -EAGAIN)
				continue; /* redirected */
			if (hr < 0) {
				find_master(f);
				nap(f, backoff_ms);
				backoff_ms = backoff_ms < 2000 ? backoff_ms * 2 : 2000;
				continue;
			}
			backoff_ms = 100;
		}
		pthread_mutex_lock(&f->lock);
		int need_snap = f->need_snapshot;
		pthread_mutex_unlock(&f->lock);
		if (need_snap) {
			if (install_snapshot(f, c, &resp) == 0) {
				next = commit_last_lsn(r->node.commit) + 1;
				fault_point("rejoin:installed");
			} else {
				nap(f, 1000);
			}
			continue;
		}
		snprintf(body, sizeof(body),
			 "{\"from\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"wait_ms\":%d,"
			 "\"verifying\":%" PRIu64 "}",
			 next, durable, POLL_MS, atomic_load(&r->verify_serving));
		rc = exchange(f, c, REPL_MSG_FETCH, body, POLL_MS + 15000, &resp, &re, &plain,
			      &plen, err, sizeof(err));
		if (rc < 0) {
			pthread_mutex_lock(&f->lock);
			f->have_session = 0;
			pthread_mutex_unlock(&f->lock);
			if (rc == -EALREADY && !resent) {
				log_info("master %s: %s", f->url, err);
				resent = 1;
				continue; /* at once: nothing is wrong with the master */
			}
			set_state(f, rc == -EACCES || rc == -EBADMSG || rc == -ESTALE ? "refused"
											  : "connecting",
				  "%s", err);
			find_master(f);
			nap(f, backoff_ms);
			backoff_ms = backoff_ms < 2000 ? backoff_ms * 2 : 2000;
			continue;
		}
		if ((code = answer_error(&re, plain, plen, msg, sizeof(msg)))) {
			if (!strcmp(code, "session")) {
				pthread_mutex_lock(&f->lock);
				f->have_session = 0;
				pthread_mutex_unlock(&f->lock);
				continue;
			}
			if (!strcmp(code, "not_master")) {
				follow_hint(f, plain, plen, msg);
				pthread_mutex_lock(&f->lock);
				f->have_session = 0;
				pthread_mutex_unlock(&f->lock);
				nap(f, 200);
				continue;
			}
			if (!strcmp(code, "snapshot_needed")) {
				if (install_snapshot(f, c, &resp) == 0) {
					next = commit_last_lsn(r->node.commit) + 1;
					backoff_ms = 100;
				} else {
					nap(f, 1000);
				}
				continue;
			}
			set_state(f, "refused", "%s", msg);
			nap(f, 2000);
			continue;
		}
		struct repl_batch_head h;
		if (re.type != REPL_MSG_BATCH || repl_batch_head_get(plain, plen, &h) < 0 ||
		    h.first_lsn != next) {
			set_state(f, "refused", "the master sent a malformed batch");
			pthread_mutex_lock(&f->lock);
			f->have_session = 0;
			pthread_mutex_unlock(&f->lock);
			nap(f, backoff_ms);
			continue;
		}
		backoff_ms = 100;
		resent = 0;
		pthread_mutex_lock(&f->lock);
		f->master_lsn = h.master_lsn;
		f->master_epoch = h.master_epoch;
		f->master_time_ns = h.master_time_ns;
		pthread_mutex_unlock(&f->lock);
		set_state(f, h.master_lsn - (next + h.nrec - 1) > 4096 ? "catching_up" : "streaming",
			  NULL);
		if (!h.nrec)
			continue;
		struct batch *b = malloc(sizeof(*b));
		if (!b) {
			nap(f, 100);
			continue;
		}
		/* The batch keeps the response buffer; a new one is made for the next. */
		b->buf = resp.data;
		b->recs = plain + REPL_BATCH_HEAD;
		b->len = plen - REPL_BATCH_HEAD;
		b->h = h;
		b->next = NULL;
		resp.data = NULL;
		resp.cap = resp.len = 0;
		next += h.nrec;
		pthread_mutex_lock(&f->lock);
		if (f->tail)
			f->tail->next = b;
		else
			f->head = b;
		f->tail = b;
		f->queued_bytes += b->len;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
	}
	free(resp.data);
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	return NULL;
}

/* ---- apply thread -------------------------------------------------------------- */

static int apply_batch(struct repl_follower *f, struct batch *b)
{
	struct replicator *r = f->r;
	struct commit *cm = r->node.commit;
	size_t pos = 0;
	uint64_t last = 0, prev_epoch = 0;
	int not_logged = 0;
	int frc = fault_check("repl:recv");

	if (frc < 0)
		return frc; /* as if the batch had been lost: fetched again */
	for (uint32_t i = 0; i < b->h.nrec; i++) {
		struct rec rec;
		ssize_t n = rec_decode(b->recs + pos, b->len - pos, b->h.salt, &rec);
		int rc;

		if (n < 0) {
			pthread_mutex_lock(&r->state.lock);
			r->state.refused_path++;
			pthread_mutex_unlock(&r->state.lock);
			log_error("refused a batch from the master: its record %u (after LSN %" PRIu64
				  ") fails its checks (checksum, or a path outside the data "
				  "directory); the records before it were applied, nothing from it on",
				  i, b->h.first_lsn + i - 1);
			return -EBADMSG;
		}
		pos += (size_t)n;
		if (rec.lsn <= commit_last_lsn(cm))
			continue; /* already have it (a resent batch) */
		if (rec.epoch > b->h.master_epoch || rec.epoch < prev_epoch) {
			pthread_mutex_lock(&r->state.lock);
			r->state.refused_epoch++;
			pthread_mutex_unlock(&r->state.lock);
			log_error("refused LSN %" PRIu64 " of epoch %" PRIu64
				  ": out of order with the master's epoch %" PRIu64,
				  rec.lsn, rec.epoch, b->h.master_epoch);
			return -ESTALE;
		}
		prev_epoch = rec.epoch;
		/* The timeline is written before the first record of an epoch is
		 * logged: it must never miss an epoch the journal has. */
		if ((rc = repl_history_note(r, rec.epoch, rec.lsn)) < 0) {
			log_error("cannot record epoch %" PRIu64 " in the history: %s", rec.epoch,
				  strerror(-rc));
			return -EIO;
		}
		if (b->h.verify_lsn && b->h.verify_lsn == commit_last_lsn(cm))
			repl_verify_point(r, b->h.verify_lsn);
		if (!r->node.apply_record || !r->node.apply_record(r->node.cb_arg, cm, &rec, &rc)) {
			if (r->node.apply_lock)
				pthread_rwlock_wrlock(r->node.apply_lock);
			rc = commit_op(cm, &rec, -1, NULL);
			if (r->node.apply_lock)
				pthread_rwlock_unlock(r->node.apply_lock);
		}
		if (rc == -EPROTO) {
			log_error("LSN %" PRIu64 " arrived out of order (expected %" PRIu64 ")",
				  rec.lsn, commit_last_lsn(cm) + 1);
			return -EPROTO;
		}
		if (rc < 0 && cm->sticky_err) {
			log_error("cannot apply LSN %" PRIu64 ": %s; this slave stops following until "
				  "it is remounted",
				  rec.lsn, strerror(-rc));
			return -EIO;
		}
		if (rc < 0 && commit_last_lsn(cm) != rec.lsn) {
			/* Not logged (a full disk): what came before is made durable
			 * and acknowledged below, this record is fetched again. */
			log_warn("cannot log LSN %" PRIu64 ": %s; fetching it again", rec.lsn,
				 strerror(-rc));
			not_logged = 1;
			break;
		}
		last = rec.lsn;
		if (r->node.invalidate)
			r->node.invalidate(r->node.cb_arg, &rec);
	}
	if (last) {
		int rc = journal_sync(r->node.journal, last);
		if (rc < 0) {
			log_error("cannot make the journal durable: %s", strerror(-rc));
			return -EIO;
		}
		fault_point("repl:applied");
		pthread_mutex_lock(&f->lock);
		f->durable = last;
		f->batch_time_ns = b->h.master_time_ns;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
	}
	if (b->h.verify_lsn && b->h.verify_lsn == commit_last_lsn(cm))
		repl_verify_point(r, b->h.verify_lsn);
	if (not_logged) {
		sleep(1); /* the disk stays full a while: no hot loop of refetches */
		return -EAGAIN;
	}
	return 0;
}

static void *apply_main(void *arg)
{
	struct repl_follower *f = arg;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->stop && !f->head)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->stop)
			break;
		struct batch *b = f->head;
		f->head = b->next;
		if (!f->head)
			f->tail = NULL;
		f->queued_bytes -= b->len;
		f->applying = 1;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);

		int rc = apply_batch(f, b);
		free(b->buf);
		free(b);

		pthread_mutex_lock(&f->lock);
		f->applying = 0;
		if (rc == -EIO) {
			snprintf(f->state, sizeof(f->state), "failed");
			snprintf(f->last_error, sizeof(f->last_error),
				 "cannot apply records (see the log); remount to recover");
			queue_drop(f);
			f->stop = 1;
		} else if (rc == -EAGAIN) {
			snprintf(f->last_error, sizeof(f->last_error),
				 "could not log a record (see the log); fetching it again");
			f->reset = 1;
			queue_drop(f);
		} else if (rc < 0) {
			snprintf(f->state, sizeof(f->state), "refused");
			snprintf(f->last_error, sizeof(f->last_error),
				 "refused a batch that failed its checks (see the log)");
			f->reset = 1;
			queue_drop(f);
		}
		pthread_cond_broadcast(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* ---- ack thread ----------------------------------------------------------------- */

static void *ack_main(void *arg)
{
	struct repl_follower *f = arg;
	struct http_buf resp = { .max = 1 << 20 };
	struct curl_slist *hdrs = NULL;
	CURL *c = http_new(f, &hdrs);

	pthread_mutex_lock(&f->lock);
	while (c) {
		while (!f->stop && (!f->have_session || f->durable <= f->acked_sent))
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->stop)
			break;
		uint64_t durable = f->durable;
		pthread_mutex_unlock(&f->lock);

		char body[64], err[300];
		struct repl_env re;
		uint8_t *plain;
		size_t plen;
		snprintf(body, sizeof(body), "{\"acked\":%" PRIu64 "}", durable);
		int rc = exchange(f, c, REPL_MSG_ACK, body, 5000, &resp, &re, &plain, &plen, err,
				  sizeof(err));
		pthread_mutex_lock(&f->lock);
		if (rc == 0 && re.type == REPL_MSG_ACKED) {
			if (durable > f->acked_sent)
				f->acked_sent = durable;
			pthread_mutex_unlock(&f->lock);
			json_t *o = json_loadb((const char *)plain, plen, 0, NULL);
			repl_peers_set(f->r, json_object_get(o, "peers"));
			json_decref(o);
			pthread_mutex_lock(&f->lock);
		} else {
			/* The next fetch carries the acknowledgement too; retry soon. */
			pthread_mutex_unlock(&f->lock);
			usleep(100 * 1000);
			pthread_mutex_lock(&f->lock);
		}
	}
	pthread_mutex_unlock(&f->lock);
	free(resp.data);
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	return NULL;
}

/* ---- lifecycle and status -------------------------------------------------------- */

int repl_follower_start(struct replicator *r, char *err, size_t errlen)
{
	struct repl_follower *f = calloc(1, sizeof(*f));
	size_t n;

	if (!f)
		return -ENOMEM;
	f->r = r;
	n = strlen(r->o.master_url);
	while (n && r->o.master_url[n - 1] == '/')
		n--;
	snprintf(f->url, sizeof(f->url), "%.*s%s", (int)n, r->o.master_url, REPL_PATH);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	snprintf(f->state, sizeof(f->state), "connecting");
	f->durable = f->acked_sent = journal_durable_lsn(r->node.journal);
	/* A rejoin cut short after its files were set aside: the tree must be
	 * replaced before anything is applied to it. */
	struct rejoin_info ri;
	if (rejoin_pending(r->node.st, &ri) == 1) {
		f->need_snapshot = 1;
		log_warn("finishing a rejoin begun before a restart: fetching the master's tree");
	}
	r->follower = f;
	if (pthread_create(&f->apply_thread, NULL, apply_main, f) != 0)
		goto fail;
	f->threads = 1;
	if (pthread_create(&f->ack_thread, NULL, ack_main, f) != 0)
		goto fail;
	f->threads = 2;
	if (pthread_create(&f->fetch_thread, NULL, fetch_main, f) != 0)
		goto fail;
	f->threads = 3;
	return 0;
fail:
	snprintf(err, errlen, "cannot start the replication threads");
	repl_follower_stop(r);
	return -EAGAIN;
}

/* drain: stop fetching first and apply what is queued (a promote keeps
 * everything it received); else drop the queue. */
static void follower_stop(struct replicator *r, int drain)
{
	struct repl_follower *f = r->follower;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	if (drain) {
		f->no_fetch = 1;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
		if (f->threads >= 3) {
			pthread_join(f->fetch_thread, NULL);
			f->threads = 2;
		}
		pthread_mutex_lock(&f->lock);
		while (!f->stop && (f->head || f->applying))
			pthread_cond_wait(&f->cond, &f->lock);
	}
	f->stop = 1;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	/* A long poll in flight ends within POLL_MS. */
	if (f->threads >= 3)
		pthread_join(f->fetch_thread, NULL);
	if (f->threads >= 2)
		pthread_join(f->ack_thread, NULL);
	if (f->threads >= 1)
		pthread_join(f->apply_thread, NULL);
	queue_drop(f);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
	r->follower = NULL;
}

void repl_follower_stop(struct replicator *r)
{
	follower_stop(r, 0);
}

void repl_follower_drain_stop(struct replicator *r)
{
	follower_stop(r, 1);
}

void *repl_follower_status(struct replicator *r)
{
	struct repl_follower *f = r->follower;
	uint64_t applied = commit_last_lsn(r->node.commit), lag_ms = 0;
	json_t *o;

	if (!f)
		return json_null();
	pthread_mutex_lock(&f->lock);
	if (f->master_lsn > applied && f->batch_time_ns) {
		uint64_t now = time_now_ns();
		lag_ms = now > f->batch_time_ns ? (now - f->batch_time_ns) / 1000000 : 0;
	}
	char url[sizeof(f->url)];
	snprintf(url, sizeof(url), "%.*s", (int)(strlen(f->url) - strlen(REPL_PATH)), f->url);
	o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "url", url, "state",
		      f->state, "master_lsn", (json_int_t)f->master_lsn, "master_epoch",
		      (json_int_t)f->master_epoch, "lag_records",
		      (json_int_t)(f->master_lsn > applied ? f->master_lsn - applied : 0), "lag_ms",
		      (json_int_t)lag_ms, "last_error", f->last_error);
	pthread_mutex_unlock(&f->lock);
	return o;
}
