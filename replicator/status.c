/* Status and metrics: one JSON document (`replfs status --json`, GET /status
 * on STORE/control.sock), the same figures as Prometheus text (GET /metrics
 * on the control socket and on the replication port), and the `replfs
 * status` command that finds a mount's store and asks its daemon. */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum MHD_Result repl_serve_text(struct MHD_Connection *conn, unsigned code, const char *type,
				char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!body)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	ret = MHD_queue_response(conn, code, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result repl_serve_info(struct replicator *r, struct MHD_Connection *conn,
				const char *url)
{
	if (!strcmp(url, "/status"))
		return repl_serve_text(conn, MHD_HTTP_OK, "application/json", repl_status_json(r));
	if (!strcmp(url, "/metrics"))
		return repl_serve_text(conn, MHD_HTTP_OK, "text/plain; version=0.0.4",
				       repl_metrics_text(r));
	return repl_serve_text(conn, MHD_HTTP_NOT_FOUND, "text/plain", strdup("not found\n"));
}

static const char *mode_name(const struct repl_state *s)
{
	return !s->sync_count ? "async" : s->degraded ? "degraded" : "sync";
}

/* What rejoins set aside (recovery/rejoin.c): their report.json files. */
static json_t *recovery_list(struct replicator *r)
{
	json_t *a = json_array();
	int fd = openat(r->node.st->dirfd, "recovery", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return a;
	}
	while ((de = readdir(d))) {
		char p[NAME_MAX + 16], *text = NULL;
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/report.json", de->d_name);
		if (io_read_file(dirfd(d), p, &text, NULL, 16 << 20) < 0)
			continue;
		json_t *rep = json_loads(text, 0, NULL);
		free(text);
		if (!rep)
			continue;
		json_array_append_new(
			a, json_pack("{s:O?, s:O?, s:O?, s:O?, s:I, s:O?}", "dir",
				     json_object_get(rep, "dir"), "fork_epoch",
				     json_object_get(rep, "fork_epoch"), "fork_lsn",
				     json_object_get(rep, "fork_lsn"), "records",
				     json_object_get(rep, "records"), "files",
				     (json_int_t)json_array_size(json_object_get(rep, "files")),
				     "time", json_object_get(rep, "time")));
		json_decref(rep);
	}
	closedir(d);
	return a;
}

void *repl_tasks_json(struct replicator *r)
{
	json_t *a = json_array();
	uint64_t now = time_mono_ns();

	pthread_mutex_lock(&r->task_lock);
	for (int i = 0; i < REPL_TASKS; i++) {
		struct repl_task *t = &r->tasks[i];
		if (!t->used)
			continue;
		uint64_t ns = now - t->start_ns;
		json_array_append_new(
			a, json_pack("{s:s, s:I, s:I, s:I, s:I}", "what", t->what, "done_bytes",
				     (json_int_t)t->done, "total_bytes", (json_int_t)t->total,
				     "elapsed_ms", (json_int_t)(ns / 1000000), "rate_bps",
				     (json_int_t)(ns > 50000000 ? (double)t->done * 1e9 / (double)ns
								: 0)));
	}
	pthread_mutex_unlock(&r->task_lock);
	return a;
}

char *repl_status_json(struct replicator *r)
{
	struct repl_state *s = &r->state;
	char hex[REPL_ID_BYTES * 2 + 1];
	uint64_t now = time_mono_ns();
	json_t *o, *slaves;
	char *text;

	sodium_bin2hex(hex, sizeof(hex), r->node.st->node_id, REPL_ID_BYTES);
	o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "role",
		      r->is_slave ? "slave" : r->deposed ? "deposed" : "master", "node_id", hex, "store", r->node.st->path,
		      "mountpoint", r->node.mountpoint ? r->node.mountpoint : "", "epoch",
		      (json_int_t)r->node.st->epoch, "lsn",
		      (json_int_t)journal_appended_lsn(r->node.journal), "applied_lsn",
		      (json_int_t)r->node.st->state->applied_lsn, "durable_lsn",
		      (json_int_t)journal_durable_lsn(r->node.journal), "first_lsn",
		      (json_int_t)journal_first_lsn(r->node.journal));
	if (r->o.listen_host[0]) {
		char l[96];
		snprintf(l, sizeof(l), "%s:%u", r->o.listen_host, r->o.listen_port);
		json_object_set_new(o, "listen", json_string(l));
	} else {
		json_object_set_new(o, "listen", json_null());
	}
	json_object_set_new(o, "url", json_string(r->self_url));
	pthread_mutex_lock(&r->hist_lock);
	json_object_set_new(o, "history", repl_history_json(&r->hist));
	pthread_mutex_unlock(&r->hist_lock);
	pthread_mutex_lock(&s->lock);
	if (r->deposed && !r->is_slave)
		json_object_set_new(o, "deposed",
				    json_pack("{s:I, s:s}", "epoch", (json_int_t)r->deposed_epoch,
					      "by", r->deposed_by));
	else
		json_object_set_new(o, "deposed", json_null());
	pthread_mutex_unlock(&s->lock);
	json_object_set_new(o, "recovery", recovery_list(r));
	json_object_set_new(o, "tasks", repl_tasks_json(r));
	json_object_set_new(o, "snapshots_received",
			    json_integer((json_int_t)atomic_load(&r->snapshots_received)));
	pthread_mutex_lock(&s->lock);
	json_object_set_new(o, "mode", json_string(mode_name(s)));
	json_object_set_new(o, "sync_count", json_integer(s->sync_count));
	json_object_set_new(o, "strict", json_boolean(r->o.strict));
	json_object_set_new(o, "snapshots_sent", json_integer((json_int_t)s->snapshots_sent));
	json_object_set_new(o, "refused",
			    json_pack("{s:I, s:I, s:I, s:I}", "auth", (json_int_t)s->refused_auth,
				      "replay", (json_int_t)s->refused_replay, "epoch",
				      (json_int_t)s->refused_epoch, "record",
				      (json_int_t)s->refused_path));
	if (!r->is_slave) {
		slaves = json_array();
		for (int i = 0; i < s->nslaves; i++) {
			struct repl_slave *sl = &s->slaves[i];
			uint64_t rec, bytes, ms;
			if (!sl->known)
				continue;
			repl_state_lag(s, sl, now, &rec, &bytes, &ms);
			sodium_bin2hex(hex, sizeof(hex), sl->node_id, REPL_ID_BYTES);
			json_array_append_new(
				slaves,
				json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "node_id", hex,
					  "url", sl->url,
					  "addr", sl->addr, "acked_lsn", (json_int_t)sl->acked_lsn,
					  "sent_lsn", (json_int_t)sl->sent_lsn, "lag_records",
					  (json_int_t)rec, "lag_bytes", (json_int_t)bytes, "lag_ms",
					  (json_int_t)ms, "state",
					  repl_slave_state_name(repl_state_slave_state(s, sl, now)),
					  "snapshot_lsn", (json_int_t)sl->snap_lsn));
		}
		json_object_set_new(o, "slaves", slaves);
	}
	pthread_mutex_unlock(&s->lock);
	if (r->is_slave)
		json_object_set_new(o, "master", repl_follower_status(r));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text) {
		size_t n = strlen(text);
		char *t = realloc(text, n + 2);
		if (t) {
			t[n] = '\n';
			t[n + 1] = '\0';
			text = t;
		}
	}
	return text;
}

int repl_role_text(struct replicator *r, int mounted_ro, char *buf, size_t len)
{
	/* A master no slave can reach (no --listen) replicates nothing. */
	const char *role = r->is_slave ? "slave" : r->deposed ? "deposed"
				       : r->o.listen_host[0] ? "master" : "standalone";
	char master[256] = "-", follow[96] = "";

	if (r->is_slave) {
		json_t *f = repl_follower_status(r);
		const char *u = json_string_value(json_object_get(f, "url"));
		const char *state = json_string_value(json_object_get(f, "state"));
		if (u && *u)
			snprintf(master, sizeof(master), "%s", u);
		snprintf(follow, sizeof(follow), "state %s\n", state ? state : "-");
		json_decref(f);
	} else if (!r->deposed && r->self_url[0]) {
		snprintf(master, sizeof(master), "%s", r->self_url);
	}
	return snprintf(buf, len,
			"role %s\nepoch %" PRIu64 "\nlsn %" PRIu64 "\nmaster %s\nwritable %s\n%s",
			role, r->node.st->epoch, commit_last_lsn(r->node.commit), master,
			!r->is_slave && !r->deposed && !mounted_ro ? "yes" : "no", follow);
}

struct textbuf {
	char *p;
	size_t len, cap;
};

static void tb_printf(struct textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tb_printf(struct textbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np)
			return;
		b->p = np;
		b->cap = cap;
	}
}

char *repl_metrics_text(struct replicator *r)
{
	struct repl_state *s = &r->state;
	struct textbuf b = { 0 };
	uint64_t now = time_mono_ns();

	tb_printf(&b, "# HELP replfs_lsn Last LSN in this node's journal.\n# TYPE replfs_lsn gauge\n"
		      "replfs_lsn %" PRIu64 "\n",
		  journal_appended_lsn(r->node.journal));
	tb_printf(&b, "# HELP replfs_applied_lsn Last LSN applied to the cache.\n"
		      "# TYPE replfs_applied_lsn gauge\nreplfs_applied_lsn %" PRIu64 "\n",
		  r->node.st->state->applied_lsn);
	tb_printf(&b, "# HELP replfs_durable_lsn Last LSN durable in the journal.\n"
		      "# TYPE replfs_durable_lsn gauge\nreplfs_durable_lsn %" PRIu64 "\n",
		  journal_durable_lsn(r->node.journal));
	tb_printf(&b, "# HELP replfs_epoch Epoch of this node.\n# TYPE replfs_epoch gauge\n"
		      "replfs_epoch %" PRIu64 "\n",
		  r->node.st->epoch);
	tb_printf(&b, "# HELP replfs_is_master 1 on the master.\n# TYPE replfs_is_master gauge\n"
		      "replfs_is_master %d\n",
		  !r->is_slave);
	tb_printf(&b, "# HELP replfs_journal_bytes_total Journal bytes appended since start.\n"
		      "# TYPE replfs_journal_bytes_total counter\nreplfs_journal_bytes_total %" PRIu64
		      "\n",
		  journal_bytes_appended(r->node.journal));
	tb_printf(&b, "# HELP replfs_snapshots_received_total Snapshots installed.\n"
		      "# TYPE replfs_snapshots_received_total counter\n"
		      "replfs_snapshots_received_total %" PRIu64 "\n",
		  (uint64_t)atomic_load(&r->snapshots_received));
	pthread_mutex_lock(&s->lock);
	tb_printf(&b, "# HELP replfs_sync_degraded 1 while sync replication runs degraded (async).\n"
		      "# TYPE replfs_sync_degraded gauge\nreplfs_sync_degraded %d\n",
		  s->degraded);
	tb_printf(&b, "# HELP replfs_sync_degraded_total Times sync mode degraded to async.\n"
		      "# TYPE replfs_sync_degraded_total counter\nreplfs_sync_degraded_total %" PRIu64
		      "\n",
		  s->degraded_total);
	tb_printf(&b, "# HELP replfs_snapshots_sent_total Snapshots sent to slaves.\n"
		      "# TYPE replfs_snapshots_sent_total counter\nreplfs_snapshots_sent_total %" PRIu64
		      "\n",
		  s->snapshots_sent);
	tb_printf(&b, "# HELP replfs_repl_refused_total Replication messages refused.\n"
		      "# TYPE replfs_repl_refused_total counter\n"
		      "replfs_repl_refused_total{reason=\"auth\"} %" PRIu64 "\n"
		      "replfs_repl_refused_total{reason=\"replay\"} %" PRIu64 "\n"
		      "replfs_repl_refused_total{reason=\"epoch\"} %" PRIu64 "\n"
		      "replfs_repl_refused_total{reason=\"record\"} %" PRIu64 "\n",
		  s->refused_auth, s->refused_replay, s->refused_epoch, s->refused_path);
	static const char *const names[] = { "acked_lsn", "lag_records", "lag_bytes",
					     "lag_seconds", "up" };
	for (int m = 0; m < 5 && !r->is_slave; m++) {
		tb_printf(&b, "# TYPE replfs_slave_%s gauge\n", names[m]);
		for (int i = 0; i < s->nslaves; i++) {
			struct repl_slave *sl = &s->slaves[i];
			char hex[REPL_ID_BYTES * 2 + 1];
			uint64_t rec, bytes, ms;
			if (!sl->known)
				continue;
			repl_state_lag(s, sl, now, &rec, &bytes, &ms);
			sodium_bin2hex(hex, sizeof(hex), sl->node_id, REPL_ID_BYTES);
			if (m == 0)
				tb_printf(&b, "replfs_slave_acked_lsn{node=\"%s\"} %" PRIu64 "\n", hex,
					  sl->acked_lsn);
			else if (m == 1)
				tb_printf(&b, "replfs_slave_lag_records{node=\"%s\"} %" PRIu64 "\n",
					  hex, rec);
			else if (m == 2)
				tb_printf(&b, "replfs_slave_lag_bytes{node=\"%s\"} %" PRIu64 "\n", hex,
					  bytes);
			else if (m == 3)
				tb_printf(&b, "replfs_slave_lag_seconds{node=\"%s\"} %.3f\n", hex,
					  (double)ms / 1000.0);
			else
				tb_printf(&b, "replfs_slave_up{node=\"%s\"} %d\n", hex,
					  repl_state_slave_state(s, sl, now) != REPL_SLAVE_GONE);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return b.p ? b.p : strdup("");
}

/* ---- `replfs status MNT [--json]` --------------------------------------------- */

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void mountinfo_unescape(char *str)
{
	for (char *s = str, *d = str;; s++, d++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
			*d = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d = *s;
		}
		if (!*s)
			break;
	}
}

/* The store behind a mountpoint: the source field of its mountinfo line
 * (replfs mounts with fsname=STORE). */
static int store_of_mount(const char *mnt, char *store, size_t size)
{
	char real[PATH_MAX], line[3 * PATH_MAX];
	FILE *f;
	int found = -ENOENT;

	if (!realpath(mnt, real))
		return -errno;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX], fstype[64], src[PATH_MAX];
		char *dash = strstr(line, " - ");
		/* id parent maj:min root mountpoint opts... - fstype source superopts */
		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(dash + 3, "%63s %4095s", fstype, src) != 2)
			continue;
		mountinfo_unescape(mp);
		mountinfo_unescape(src);
		if (strcmp(mp, real) != 0)
			continue;
		if (strcmp(fstype, "fuse.replfs") != 0) {
			found = -EMEDIUMTYPE;
			continue; /* a later mount on top may be ours */
		}
		snprintf(store, size, "%s", src);
		found = 0;
	}
	fclose(f);
	return found;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct textbuf *b = arg;

	tb_printf(b, "%.*s", (int)(size * n), p);
	return size * n;
}

static const char *human_ms(uint64_t ms, char *buf, size_t size)
{
	if (ms < 1000)
		snprintf(buf, size, "%" PRIu64 " ms", ms);
	else if (ms < 120000)
		snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
	else if (ms < 7200000)
		snprintf(buf, size, "%.1f min", (double)ms / 60000.0);
	else
		snprintf(buf, size, "%.1f h", (double)ms / 3600000.0);
	return buf;
}

static json_int_t ji(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *js(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

static void print_human(json_t *o)
{
	char b1[32], b2[32];

	printf("role      %s\n", js(o, "role"));
	if (json_is_object(json_object_get(o, "deposed")))
		printf("DEPOSED   a newer master exists (epoch %" JSON_INTEGER_FORMAT ", %s): this "
		       "node is read-only; remount it with --slave-of that master to rejoin\n",
		       ji(json_object_get(o, "deposed"), "epoch"),
		       js(json_object_get(o, "deposed"), "by"));
	printf("store     %s\n", js(o, "store"));
	printf("node      %s\n", js(o, "node_id"));
	printf("epoch     %" JSON_INTEGER_FORMAT "\n", ji(o, "epoch"));
	printf("journal   LSN %" JSON_INTEGER_FORMAT " (applied %" JSON_INTEGER_FORMAT
	       ", durable %" JSON_INTEGER_FORMAT ", kept from %" JSON_INTEGER_FORMAT ")\n",
	       ji(o, "lsn"), ji(o, "applied_lsn"), ji(o, "durable_lsn"), ji(o, "first_lsn"));
	if (strcmp(js(o, "role"), "slave") != 0) {
		json_t *sl = json_object_get(o, "slaves"), *s;
		size_t i;
		const char *mode = js(o, "mode");
		printf("listen    %s\n", json_is_string(json_object_get(o, "listen"))
					     ? js(o, "listen") : "(none: no slaves can join)");
		if (!strcmp(mode, "degraded"))
			printf("mode      DEGRADED: sync replication is running async (no slave "
			       "acknowledged in time)\n");
		else if (!strcmp(mode, "sync"))
			printf("mode      sync (%" JSON_INTEGER_FORMAT " slave(s) per fsync%s)\n",
			       ji(o, "sync_count"),
			       json_is_true(json_object_get(o, "strict")) ? ", every operation" : "");
		else
			printf("mode      async\n");
		printf("slaves    %zu\n", json_array_size(sl));
		if (json_array_size(sl))
			printf("  %-32s  %-21s  %-11s  %12s  %10s  %10s  %10s\n", "NODE", "ADDRESS",
			       "STATE", "ACKED LSN", "LAG (REC)", "LAG", "LAG TIME");
		json_array_foreach(sl, i, s) {
			printf("  %-32s  %-21s  %-11s  %12" JSON_INTEGER_FORMAT
			       "  %10" JSON_INTEGER_FORMAT "  %10s  %10s\n",
			       js(s, "node_id"), js(s, "addr"), js(s, "state"), ji(s, "acked_lsn"),
			       ji(s, "lag_records"), fmt_bytes((uint64_t)ji(s, "lag_bytes"), b1, sizeof(b1)),
			       human_ms((uint64_t)ji(s, "lag_ms"), b2, sizeof(b2)));
			if (!strcmp(js(s, "state"), "gone"))
				printf("    warning: slave %s has not been heard from; it keeps up to "
				       "the retention bound of journal\n",
				       js(s, "node_id"));
		}
	} else {
		json_t *m = json_object_get(o, "master");
		printf("master    %s\n", js(m, "url"));
		printf("state     %s\n", js(m, "state"));
		printf("lag       %" JSON_INTEGER_FORMAT " records, %s (master at LSN %"
		       JSON_INTEGER_FORMAT ")\n",
		       ji(m, "lag_records"), human_ms((uint64_t)ji(m, "lag_ms"), b2, sizeof(b2)),
		       ji(m, "master_lsn"));
		if (*js(m, "last_error") && strcmp(js(m, "state"), "streaming") != 0)
			printf("warning   %s\n", js(m, "last_error"));
	}
	json_t *ref = json_object_get(o, "refused");
	json_int_t nref = ji(ref, "auth") + ji(ref, "replay") + ji(ref, "epoch") + ji(ref, "record");
	if (nref)
		printf("refused   %" JSON_INTEGER_FORMAT " message(s): %" JSON_INTEGER_FORMAT
		       " wrong key, %" JSON_INTEGER_FORMAT " replayed, %" JSON_INTEGER_FORMAT
		       " stale epoch, %" JSON_INTEGER_FORMAT " bad record\n",
		       nref, ji(ref, "auth"), ji(ref, "replay"), ji(ref, "epoch"), ji(ref, "record"));
	printf("snapshots %" JSON_INTEGER_FORMAT " sent, %" JSON_INTEGER_FORMAT " received\n",
	       ji(o, "snapshots_sent"), ji(o, "snapshots_received"));
	json_t *rec = json_object_get(o, "recovery"), *e;
	size_t k;
	json_array_foreach(json_object_get(o, "tasks"), k, e) {
		char line[256];
		progress_format(js(e, "what"), (uint64_t)ji(e, "done_bytes"),
				(uint64_t)ji(e, "total_bytes"), (uint64_t)ji(e, "elapsed_ms") * 1000000,
				1, line, sizeof(line));
		printf("working   %s\n", line);
	}
	json_array_foreach(rec, k, e)
		printf("recovery  %s: %" JSON_INTEGER_FORMAT " record(s) after LSN %" JSON_INTEGER_FORMAT
		       " never reached the master; %" JSON_INTEGER_FORMAT " file(s) kept (see REPORT)\n",
		       js(e, "dir"), ji(e, "records"), ji(e, "fork_lsn"), ji(e, "files"));
}

int repl_control_call(const char *mnt, const char *path, const char *post_body,
		      long timeout_s, char **out, long *code)
{
	char store[PATH_MAX], sock[PATH_MAX + 32], url[128];
	struct textbuf b = { 0 };
	struct curl_slist *hdrs = NULL;
	int rc;
	CURL *c;

	*out = NULL;
	*code = 0;
	if ((rc = store_of_mount(mnt, store, sizeof(store))) < 0) {
		if (rc == -EMEDIUMTYPE)
			log_error("%s is not a replfs mount", mnt);
		else if (rc == -ENOENT)
			log_error("nothing is mounted on %s", mnt);
		else
			log_error("%s: %s", mnt, strerror(-rc));
		return rc;
	}
	snprintf(sock, sizeof(sock), "%s/control.sock", store);
	snprintf(url, sizeof(url), "http://localhost%s", path);
	c = curl_easy_init();
	if (!c)
		return -ENOMEM;
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	if (post_body) {
		hdrs = curl_slist_append(NULL, "Content-Type: application/json");
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body);
	}
	CURLcode cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	if (cc != CURLE_OK || !b.p) {
		log_error("the daemon of %s does not answer on %s (%s)", mnt, sock,
			  cc != CURLE_OK ? curl_easy_strerror(cc) : "empty answer");
		free(b.p);
		return -EIO;
	}
	*out = b.p;
	return 0;
}

struct repl_watch {
	pthread_t t;
	char mnt[PATH_MAX];
	const char *prefix;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop, drawn;
};

/* The daemon's first task whose name starts with prefix, on stderr. */
static void *watch_main(void *arg)
{
	struct repl_watch *w = arg;
	struct timespec ts;

	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		time_deadline(&ts, CLOCK_MONOTONIC, 500);
		pthread_cond_timedwait(&w->cond, &w->lock, &ts);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->lock);
		char *text = NULL;
		long code = 0;
		int rc = repl_control_call(w->mnt, "/status", NULL, 5, &text, &code);
		json_t *o = rc == 0 ? json_loads(text, 0, NULL) : NULL, *t;
		size_t i;
		free(text);
		json_array_foreach(json_object_get(o, "tasks"), i, t) {
			if (strncmp(js(t, "what"), w->prefix, strlen(w->prefix)))
				continue;
			char line[256];
			progress_format(js(t, "what"), (uint64_t)ji(t, "done_bytes"),
					(uint64_t)ji(t, "total_bytes"),
					(uint64_t)ji(t, "elapsed_ms") * 1000000, 1, line, sizeof(line));
			pthread_mutex_lock(&w->lock);
			if (!w->stop) {
				fprintf(stderr, "\r%s\033[K", line);
				w->drawn = 1;
			}
			pthread_mutex_unlock(&w->lock);
			break;
		}
		json_decref(o);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

struct repl_watch *repl_watch_start(const char *mnt, const char *prefix)
{
	struct repl_watch *w;

	if (!isatty(2) || !(w = calloc(1, sizeof(*w))))
		return NULL;
	snprintf(w->mnt, sizeof(w->mnt), "%s", mnt);
	w->prefix = prefix;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&w->t, NULL, watch_main, w) != 0) {
		free(w);
		return NULL;
	}
	return w;
}

void repl_watch_stop(struct repl_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_cond_signal(&w->cond);
	if (w->drawn)
		fputs("\r\033[K", stderr);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->t, NULL);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

/* One answer of the daemon of mnt, as JSON or as the table. */
static int status_print(const char *mnt, int json)
{
	char *text = NULL;
	long code = 0;
	int rc = 0;

	if (repl_control_call(mnt, "/status", NULL, 10, &text, &code) < 0)
		return 1;
	if (code != 200) {
		log_error("the daemon of %s gave a bad answer", mnt);
		rc = 1;
	} else if (json) {
		fputs(text, stdout);
	} else {
		json_t *o = json_loads(text, 0, NULL);
		if (o)
			print_human(o);
		else
			log_error("the daemon's status is not JSON");
		rc = o ? 0 : 1;
		json_decref(o);
	}
	free(text);
	return rc;
}

int repl_status_main(int argc, char **argv)
{
	const char *mnt = NULL;
	int json = 0, watch = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--watch") || !strcmp(argv[i], "-w")) {
			watch = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			puts("usage: replfs status MOUNTPOINT [--json] [--watch]\n"
			     "  role, epoch, journal position, each slave's lag, sync/async/degraded,\n"
			     "  and the progress of long work (snapshot transfers, verify)\n"
			     "  --json    the same for machines\n"
			     "  --watch   redraw every second until interrupted\n"
			     "Exit 0, or 1 when the daemon cannot be asked.");
			return 0;
		} else if (argv[i][0] == '-' || mnt) {
			log_error("status: unexpected argument %s (see replfs status --help)", argv[i]);
			return 2;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt) {
		log_error("status needs a MOUNTPOINT (see replfs status --help)");
		return 2;
	}
	if (watch && json) {
		log_error("status: --watch draws for a person; --json is for one answer");
		return 2;
	}
	if (!watch)
		return status_print(mnt, json);
	for (;; sleep(1)) {
		int tty = isatty(1);
		if (tty)
			fputs("\033[H\033[J", stdout); /* home, clear */
		if (status_print(mnt, 0) != 0)
			return 1;
		if (!tty)
			puts("");
		fflush(stdout);
	}
}
