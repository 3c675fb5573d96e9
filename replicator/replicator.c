/* The replicator's lifecycle and the hooks the daemon calls: on every commit
 * (wake long polls, remember time and size for lag), on fsync in sync mode,
 * and when the checkpointer asks what slaves still need. */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <sodium.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GONE_MS 10000
/* How long after its snapshot's transfer a slave may take to install it (a
 * syncfs of the whole tree) before what follows the snapshot stops being
 * kept for it. */
#define SNAPSHOT_PIN_NS (300ull * 1000000000ull)

int repl_parse_listen(const char *s, struct repl_options *o)
{
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;
	size_t hl;

	if (!colon)
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || colon[1] == '\0' || port == 0 || port > 65535)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(o->listen_host))
		return -EINVAL;
	if (hl == 0)
		snprintf(o->listen_host, sizeof(o->listen_host), "0.0.0.0");
	else
		snprintf(o->listen_host, sizeof(o->listen_host), "%.*s", (int)hl, s);
	o->listen_port = (unsigned)port;
	return 0;
}

int repl_start(const struct repl_options *o, const struct repl_node *node,
	       struct replicator **out, char *err, size_t errlen)
{
	struct replicator *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	r->o = *o;
	r->node = *node;
	r->ctl_fd = -1;
	r->is_slave = o->master_url[0] != '\0';
	pthread_mutex_init(&r->task_lock, NULL);
	repl_state_init(&r->state, o->sync_count, o->sync_timeout_ms, GONE_MS);
	r->state.last_lsn = journal_appended_lsn(node->journal);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		snprintf(err, errlen, "cannot initialise libcurl");
		free(r);
		return -EIO;
	}
	if ((rc = repl_failover_start(r, err, errlen)) < 0) {
		curl_global_cleanup();
		free(r);
		return rc;
	}
	if ((rc = repl_master_start(r, err, errlen)) < 0) {
		repl_stop(r);
		return rc;
	}
	if (r->is_slave && (rc = repl_follower_start(r, err, errlen)) < 0) {
		repl_stop(r);
		return rc;
	}
	repl_failover_started(r);
	*out = r;
	return 0;
}

void repl_stop(struct replicator *r)
{
	if (!r)
		return;
	repl_follower_stop(r);
	repl_failover_stop(r);
	repl_master_stop(r);
	pthread_mutex_lock(&r->snap_lock);
	if (r->snap) {
		snapshot_put(r->snap);
		r->snap = NULL;
	}
	pthread_mutex_unlock(&r->snap_lock);
	if (r->verify_snap) {
		snapshot_put(r->verify_snap);
		r->verify_snap = NULL;
	}
	repl_state_destroy(&r->state);
	curl_global_cleanup();
	sodium_memzero(r->o.key, sizeof(r->o.key));
	free(r);
}

void repl_stop_following(struct replicator *r)
{
	if (r)
		repl_follower_stop(r);
}

int repl_is_slave(const struct replicator *r)
{
	return r && r->is_slave;
}

void repl_note_commit(struct replicator *r, uint64_t lsn, uint64_t bytes)
{
	repl_state_appended(&r->state, lsn, bytes, time_mono_ns());
}

int repl_wait_replicated(struct replicator *r, uint64_t lsn)
{
	return repl_state_wait(&r->state, lsn);
}

int repl_strict(const struct replicator *r)
{
	return r && r->o.strict && r->o.sync_count;
}

int repl_slave_needs(void *arg, struct retention_slave *out, int max, uint64_t *max_bytes)
{
	struct replicator *r = arg;
	struct repl_state *s = &r->state;
	uint64_t now = time_mono_ns();
	int n = 0;

	*max_bytes = r->o.retain_bytes;
	if (atomic_load(&r->is_slave))
		return 0;
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nslaves && n < max; i++) {
		struct repl_slave *sl = &s->slaves[i];
		uint64_t rec, bytes, ms;
		if (!sl->known)
			continue;
		repl_state_lag(s, sl, now, &rec, &bytes, &ms);
		out[n].next_lsn = sl->acked_lsn + 1;
		out[n].lag_bytes = bytes;
		/* A slave receiving or installing a snapshot needs what follows it,
		 * whatever the byte bound: trimming that would send it another
		 * snapshot, and another, for as long as the master writes fast. It
		 * stops counting once it acknowledges the snapshot or goes quiet. */
		if (sl->snap_lsn > sl->acked_lsn &&
		    (sl->in_snapshot || now - sl->seen_mono_ns < SNAPSHOT_PIN_NS)) {
			out[n].next_lsn = sl->snap_lsn + 1;
			out[n].lag_bytes = 0;
		}
		/* Slaves gone quiet still count, up to the byte bound: a restart
		 * should not cost a snapshot. */
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

int repl_task_begin(struct replicator *r, uint64_t total, const char *fmt, ...)
{
	va_list ap;
	int id = -1;

	pthread_mutex_lock(&r->task_lock);
	for (int i = 0; i < REPL_TASKS && id < 0; i++) {
		if (r->tasks[i].used)
			continue;
		id = i;
		r->tasks[i] = (struct repl_task){ .total = total, .start_ns = time_mono_ns(),
						  .used = 1 };
		va_start(ap, fmt);
		vsnprintf(r->tasks[i].what, sizeof(r->tasks[i].what), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&r->task_lock);
	return id;
}

void repl_task_add(struct replicator *r, int id, uint64_t bytes)
{
	if (id < 0)
		return;
	pthread_mutex_lock(&r->task_lock);
	r->tasks[id].done += bytes;
	pthread_mutex_unlock(&r->task_lock);
}

void repl_task_end(struct replicator *r, int id)
{
	if (id < 0)
		return;
	pthread_mutex_lock(&r->task_lock);
	r->tasks[id].used = 0;
	pthread_mutex_unlock(&r->task_lock);
}
