/* `replfs verify`: the master and every slave compared at the same journal
 * position, on a live system.
 *
 * THE POSITION. The master freezes its tree with a snapshot (copy-on-write,
 * recovery/snapshot.c) at LSN X and publishes X as verify_lsn. From then on
 * no batch it sends crosses X (master.c cuts them there and names X in the
 * batch head), so a slave learns of X before it could apply X+1; when it has
 * applied exactly X it freezes its own tree the same way (the apply step is
 * held off meanwhile). A slave that is idle at X learns of it from the
 * VERIFY request itself. Each side then hashes its frozen tree while writes
 * go on (recovery/verify.c), the slave sends its manifest back, and the
 * master compares. No write in flight can cause a false difference: both
 * trees are exactly the state after record X.
 *
 * Before the snapshot, the master holds the slaves at its last LSN X0 (a
 * gate makes sure no batch read earlier goes past it); the snapshot's X is
 * not before X0, so every slave can still stop at exactly X. A slave that
 * got past X anyway answers "stale" and the master starts over.
 *
 * REPAIR. The master drops its snapshot, then journals, path by path under
 * its order lock, records that turn any slave's copy into the master's
 * current state and leave the master unchanged (verify_repair). They reach
 * every slave in order like any other record. Then it verifies again.
 */
#include "repl_priv.h"
#include "../utils/utils.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VERIFY_TRIES 3
#define VERIFY_WAIT_NS (600ull * 1000000000ull) /* a slave may lag this long */
#define MANIFEST_MAX (1ull << 31)

/* ---- slave ------------------------------------------------------------------- */

/* Freezes this slave's tree if it has applied exactly the verify point.
 * Called by the apply thread between records, and by the VERIFY handler. */
struct verify_progress {
	struct replicator *r;
	int task;
};

static void verify_progressed(void *arg, uint64_t bytes)
{
	struct verify_progress *vp = arg;

	repl_task_add(vp->r, vp->task, bytes);
}

static void take_verify_snapshot(struct replicator *r, uint64_t lsn)
{
	struct snapshot *s = NULL, *unused = NULL;
	int rc, wanted;

	/* No other lock is held while the snapshot takes the order lock (nor
	 * while a snapshot is put, which takes it too): the apply step may hold
	 * the order lock while it goes through the mount (fs/held.c), and the
	 * FUSE requests that causes may need verify_lock. The order lock alone
	 * holds the apply step off while the tree is frozen. */
	pthread_mutex_lock(&r->verify_lock);
	wanted = r->verify_target == lsn && !r->verify_snap && !r->verify_taking &&
		 commit_last_lsn(r->node.commit) == lsn;
	if (wanted)
		r->verify_taking = 1;
	pthread_mutex_unlock(&r->verify_lock);
	if (!wanted)
		return;
	rc = snapshot_create(r->node.st, r->node.commit, &s);
	if (rc == 0 && snapshot_lsn(s) != lsn) {
		unused = s;
		s = NULL;
		rc = -ESTALE;
	}
	pthread_mutex_lock(&r->verify_lock);
	r->verify_taking = 0;
	if (r->verify_target == lsn && !r->verify_snap) {
		r->verify_snap = s;
		r->verify_snap_ns = time_mono_ns();
		atomic_store(&r->verify_live, s != NULL);
		r->verify_rc = rc;
	} else {
		unused = s; /* the point moved on meanwhile */
	}
	pthread_cond_broadcast(&r->verify_cond);
	pthread_mutex_unlock(&r->verify_lock);
	snapshot_put(unused);
}

void repl_verify_point(struct replicator *r, uint64_t lsn)
{
	pthread_mutex_lock(&r->verify_lock);
	/* Points only move forward: a batch read before the master fixed its
	 * point carries the provisional one, which is not after it. */
	if (lsn <= r->verify_done || lsn < r->verify_target) {
		pthread_mutex_unlock(&r->verify_lock);
		return;
	}
	struct snapshot *old = NULL;
	if (r->verify_target != lsn) {
		/* A new point: an older frozen tree is of no use any more. */
		old = r->verify_snap;
		r->verify_snap = NULL;
		atomic_store(&r->verify_live, 0);
		r->verify_rc = 0;
		r->verify_target = lsn;
	}
	pthread_mutex_unlock(&r->verify_lock);
	snapshot_put(old);
	take_verify_snapshot(r, lsn);
}

static enum MHD_Result verify_serve(struct replicator *r, struct MHD_Connection *conn,
				    const struct repl_env *e, uint64_t x);

enum MHD_Result repl_verify_request(struct replicator *r, struct MHD_Connection *conn,
				    const struct repl_env *e, void *msg)
{
	json_t *m = msg;
	uint64_t x = json_integer_value(json_object_get(m, "lsn"));

	if (!atomic_load(&r->is_slave))
		return repl_reply_error(r, conn, e, "not_slave", "this node is not a slave");
	if (!x)
		return repl_reply_error(r, conn, e, "bad_request", "verify without a position");
	atomic_store(&r->verify_serving, x);
	enum MHD_Result ret = verify_serve(r, conn, e, x);
	atomic_store(&r->verify_serving, 0);
	return ret;
}

/* Waits for the apply step to reach x, hashes the frozen tree and answers. */
static enum MHD_Result verify_serve(struct replicator *r, struct MHD_Connection *conn,
				    const struct repl_env *e, uint64_t x)
{
	uint64_t t0 = time_mono_ns();
	struct verify_manifest man;
	struct snapshot *s = NULL;
	uint8_t *enc = NULL;
	size_t enclen;
	int rc = 0;

	repl_verify_point(r, x);
	/* Wait for the apply step to reach x (it stops there by itself). */
	pthread_mutex_lock(&r->verify_lock);
	while (r->verify_target == x && !r->verify_snap && !r->verify_rc && !r->stop &&
	       time_mono_ns() - t0 < VERIFY_WAIT_NS) {
		if (commit_last_lsn(r->node.commit) > x) {
			rc = -ESTALE;
			break;
		}
		struct timespec ts;
		time_deadline(&ts, CLOCK_REALTIME, 50);
		pthread_cond_timedwait(&r->verify_cond, &r->verify_lock, &ts);
		if (!r->verify_snap && commit_last_lsn(r->node.commit) == x) {
			pthread_mutex_unlock(&r->verify_lock);
			take_verify_snapshot(r, x);
			pthread_mutex_lock(&r->verify_lock);
		}
	}
	if (r->verify_target == x && r->verify_snap) {
		s = snapshot_get(r->verify_snap);
	} else if (!rc) {
		rc = r->verify_rc ? r->verify_rc : -ETIMEDOUT;
	}
	pthread_mutex_unlock(&r->verify_lock);
	if (!s) {
		char why[160];
		snprintf(why, sizeof(why), "this slave could not freeze its tree at LSN %" PRIu64
			 ": %s", x, rc == -ESTALE ? "it was already past it" : strerror(-rc));
		return repl_reply_error(r, conn, e, rc == -ESTALE ? "stale" : "failed", why);
	}
	struct verify_progress vp = { r, repl_task_begin(r, snapshot_bytes(s),
							 "verify: hashing this slave's tree") };
	rc = fault_check("verify:hash");
	if (rc == 0)
		rc = verify_manifest_build(s, &man, verify_progressed, &vp);
	repl_task_end(r, vp.task);
	/* Once hashed, the frozen tree only costs copies: drop it. */
	struct snapshot *frozen = NULL;
	pthread_mutex_lock(&r->verify_lock);
	if (r->verify_snap == s) {
		frozen = r->verify_snap;
		r->verify_snap = NULL;
		atomic_store(&r->verify_live, 0);
	}
	if (x > r->verify_done)
		r->verify_done = x;
	pthread_mutex_unlock(&r->verify_lock);
	snapshot_put(frozen);
	snapshot_put(s);
	if (rc == 0) {
		rc = verify_manifest_encode(&man, &enc, &enclen);
		verify_manifest_free(&man);
	}
	if (rc < 0) {
		char why[160];
		snprintf(why, sizeof(why), "this slave could not hash its tree: %s", strerror(-rc));
		return repl_reply_error(r, conn, e, "failed", why);
	}
	enum MHD_Result ret = repl_reply_sealed(r, conn, REPL_MSG_MANIFEST, e, enc, enclen);
	free(enc);
	return ret;
}

/* ---- master -------------------------------------------------------------------- */

struct slave_job {
	struct replicator *r;
	char url[128];
	char id[REPL_ID_BYTES * 2 + 1];
	uint8_t node_id[REPL_ID_BYTES];
	uint64_t lsn;
	pthread_t t;
	int rc;
	char err[200];
	struct verify_manifest man;
	uint64_t got;             /* answer bytes received so far */
	uint64_t sign_ns;         /* last sign of work: start, a byte, or a FETCH saying so */
};

/* Hashing a big tree takes long and says nothing on the connection, so the
 * wait is not bounded by a timeout but by signs of work: the slave names the
 * point it works on in every FETCH (at least every REPL_POLL_MS_MAX), and the
 * answer's bytes count too. A request lost in a partition, a stopped slave or
 * a lost answer show none, and the verify goes on without that slave. */
#define VERIFY_QUIET_NS (15ull * 1000000000ull)

static int slave_job_alive(void *arg, uint64_t got)
{
	struct slave_job *j = arg;
	struct repl_state *st = &j->r->state;

	if (got > j->got) {
		j->got = got;
		j->sign_ns = time_mono_ns();
	}
	pthread_mutex_lock(&st->lock);
	for (int i = 0; i < st->nslaves; i++) {
		struct repl_slave *sl = &st->slaves[i];
		if (sl->known && !memcmp(sl->node_id, j->node_id, REPL_ID_BYTES) &&
		    sl->verifying_lsn == j->lsn && sl->verifying_mono_ns > j->sign_ns)
			j->sign_ns = sl->verifying_mono_ns;
	}
	pthread_mutex_unlock(&st->lock);
	/* Read after the signs: a FETCH that came in meanwhile is not "later
	 * than now" (an unsigned difference would wrap). */
	uint64_t now = time_mono_ns();
	return now < j->sign_ns || now - j->sign_ns < VERIFY_QUIET_NS;
}

static void *slave_job_main(void *arg)
{
	struct slave_job *j = arg;
	char body[64];
	struct repl_env re;
	uint8_t *plain, *keep = NULL;
	size_t plen;

	snprintf(body, sizeof(body), "{\"lsn\":%" PRIu64 "}", j->lsn);
	j->sign_ns = time_mono_ns();
	j->rc = repl_oneshot_watched(j->r, j->url, REPL_MSG_VERIFY, body, strlen(body),
				     3600L * 1000, MANIFEST_MAX, slave_job_alive, j, &re, &plain,
				     &plen, &keep);
	if (j->rc == -ETIMEDOUT) {
		snprintf(j->err, sizeof(j->err),
			 "no answer and no sign of work on it for %llu s (unreachable or stopped)",
			 VERIFY_QUIET_NS / 1000000000ull);
		log_warn("verify: %s gave no answer and no sign of work on it for %llu s: "
			 "not verified", j->url, VERIFY_QUIET_NS / 1000000000ull);
		return NULL;
	}
	if (j->rc < 0) {
		snprintf(j->err, sizeof(j->err), "no answer: %s", strerror(-j->rc));
		return NULL;
	}
	if (re.type == REPL_MSG_ERROR) {
		json_t *o = json_loadb((const char *)plain, plen, 0, NULL);
		const char *code = json_string_value(json_object_get(o, "error"));
		snprintf(j->err, sizeof(j->err), "%s",
			 json_string_value(json_object_get(o, "message"))
				 ? json_string_value(json_object_get(o, "message"))
				 : "refused");
		j->rc = code && !strcmp(code, "stale") ? -ESTALE : -EPROTO;
		json_decref(o);
	} else if (re.type != REPL_MSG_MANIFEST) {
		snprintf(j->err, sizeof(j->err), "unexpected answer");
		j->rc = -EPROTO;
	} else if ((j->rc = verify_manifest_decode(plain, plen, &j->man)) < 0) {
		snprintf(j->err, sizeof(j->err), "malformed manifest: %s", strerror(-j->rc));
	}
	free(keep);
	return NULL;
}

static void drop_master_snapshot(struct replicator *r)
{
	pthread_mutex_lock(&r->verify_lock);
	struct snapshot *s = r->verify_snap;
	r->verify_snap = NULL;
	atomic_store(&r->verify_live, 0);
	pthread_mutex_unlock(&r->verify_lock);
	snapshot_put(s);
}

/* One round: snapshot at X, every slave's manifest at X, compare. Fills
 * result; *diff_total counts differences; with repair, repairs them. */
static int verify_round(struct replicator *r, int repair, json_t *result, uint64_t *diff_total,
			uint64_t *unverified, char *msg, size_t msglen)
{
	struct repl_state *st = &r->state;
	struct slave_job *jobs = NULL;
	struct verify_manifest mm;
	struct snapshot *snap = NULL;
	int n = 0, rc;
	json_t *diffs = json_array(), *unv = json_array();
	uint64_t t0 = time_mono_ns();

	/* A snapshot being sent to a slave is of another LSN: wait for it. */
	for (int i = 0;; i++) {
		pthread_mutex_lock(&r->snap_lock);
		if (r->snap) {
			pthread_mutex_unlock(&r->snap_lock);
			if (i >= 600) {
				rc = -EBUSY;
				break;
			}
			usleep(100 * 1000);
			continue;
		}
		/* No batch may cross the point before the slaves hear of it:
		 * first hold them at the last LSN now (every batch read before
		 * ends there), then move the point to the snapshot's LSN, which
		 * is not before it. */
		pthread_rwlock_wrlock(&r->verify_gate);
		pthread_mutex_lock(&r->node.commit->order_lock);
		atomic_store(&r->verify_lsn, r->node.commit->next_lsn - 1);
		atomic_store(&r->verify_hold, 1);
		pthread_mutex_unlock(&r->node.commit->order_lock);
		pthread_rwlock_unlock(&r->verify_gate);
		rc = snapshot_create(r->node.st, r->node.commit, &snap);
		if (rc == 0)
			atomic_store(&r->verify_lsn, snapshot_lsn(snap));
		atomic_store(&r->verify_hold, 0);
		pthread_mutex_unlock(&r->snap_lock);
		if (rc == 0) {
			pthread_mutex_lock(&r->verify_lock);
			r->verify_snap = snapshot_get(snap);
			atomic_store(&r->verify_live, 1);
			pthread_mutex_unlock(&r->verify_lock);
		}
		break;
	}
	if (rc < 0) {
		atomic_store(&r->verify_lsn, 0);
		snprintf(msg, msglen, "cannot freeze the master's tree: %s", strerror(-rc));
		json_decref(diffs);
		json_decref(unv);
		return rc;
	}
	uint64_t x = snapshot_lsn(snap);

	jobs = calloc(REPL_SLAVES_MAX, sizeof(*jobs));
	if (!jobs) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&st->lock);
	uint64_t now = time_mono_ns();
	for (int i = 0; i < st->nslaves; i++) {
		struct repl_slave *sl = &st->slaves[i];
		char id[REPL_ID_BYTES * 2 + 1];
		if (!sl->known || repl_state_slave_state(st, sl, now) == REPL_SLAVE_GONE)
			continue;
		sodium_bin2hex(id, sizeof(id), sl->node_id, REPL_ID_BYTES);
		if (!sl->url[0]) {
			json_array_append_new(unv, json_pack("{s:s, s:s}", "node", id, "why",
							     "it has no --listen address"));
			continue;
		}
		jobs[n].r = r;
		jobs[n].lsn = x;
		snprintf(jobs[n].url, sizeof(jobs[n].url), "%s", sl->url);
		snprintf(jobs[n].id, sizeof(jobs[n].id), "%s", id);
		memcpy(jobs[n].node_id, sl->node_id, REPL_ID_BYTES);
		n++;
	}
	pthread_mutex_unlock(&st->lock);
	for (int i = 0; i < n; i++)
		if (pthread_create(&jobs[i].t, NULL, slave_job_main, &jobs[i]) != 0) {
			jobs[i].rc = -EAGAIN;
			jobs[i].t = 0;
			snprintf(jobs[i].err, sizeof(jobs[i].err), "cannot start a thread");
		}
	struct verify_progress vp = { r, repl_task_begin(r, snapshot_bytes(snap),
							 "verify: hashing the master's tree") };
	rc = verify_manifest_build(snap, &mm, verify_progressed, &vp);
	repl_task_end(r, vp.task);
	for (int i = 0; i < n; i++)
		if (jobs[i].t)
			pthread_join(jobs[i].t, NULL);
	atomic_store(&r->verify_lsn, 0);
	drop_master_snapshot(r);
	snapshot_put(snap);
	snap = NULL;
	if (rc < 0) {
		snprintf(msg, msglen, "cannot hash the master's tree: %s", strerror(-rc));
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (jobs[i].rc == -ESTALE) {
			rc = -ESTALE; /* start over at a new X */
			verify_manifest_free(&mm);
			goto out;
		}

	uint64_t total = 0, bytes = mm.bytes_hashed;
	struct verify_repair_stats rs = { 0 };
	for (int i = 0; i < n; i++) {
		struct verify_diff *d = NULL;
		size_t nd = 0;
		if (jobs[i].rc < 0) {
			json_array_append_new(unv, json_pack("{s:s, s:s}", "node", jobs[i].url, "why",
							     jobs[i].err));
			continue;
		}
		bytes += jobs[i].man.bytes_hashed;
		if ((rc = verify_compare(&mm, &jobs[i].man, &d, &nd)) < 0) {
			json_array_append_new(unv, json_pack("{s:s, s:s}", "node", jobs[i].url, "why",
							     "its manifest is of another LSN"));
			continue;
		}
		for (size_t k = 0; k < nd; k++) {
			char line[1024];
			verify_diff_describe(&d[k], &mm, &jobs[i].man, line, sizeof(line));
			json_array_append_new(diffs, json_pack("{s:s, s:s, s:s, s:b}", "node",
							       jobs[i].url, "path", d[k].path, "what",
							       line, "repairable",
							       verify_diff_repairable(&d[k])));
		}
		total += nd;
		if (repair && nd && !atomic_load(&r->deposed)) {
			struct verify_repair_stats one = { 0 };
			int rr = verify_repair(r->node.commit, d, nd, &one);
			rs.repaired += one.repaired;
			rs.unrepairable += one.unrepairable;
			rs.changed += one.changed;
			rs.failed += one.failed;
			rs.records += one.records;
			rs.bytes += one.bytes;
			if (rr < 0)
				log_error("verify: repair of %s stopped: %s", jobs[i].url, strerror(-rr));
		}
		verify_diffs_free(d, nd);
	}
	double secs = (double)(time_mono_ns() - t0) / 1e9;
	json_object_set_new(result, "lsn", json_integer((json_int_t)x));
	json_object_set_new(result, "slaves", json_integer(n));
	json_object_set_new(result, "differences", diffs);
	json_object_set_new(result, "unverified", unv);
	json_object_set_new(result, "entries", json_integer((json_int_t)mm.n));
	json_object_set_new(result, "bytes_hashed", json_integer((json_int_t)bytes));
	json_object_set_new(result, "seconds", json_real(secs));
	if (repair)
		json_object_set_new(result, "repair",
				    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "repaired",
					      (json_int_t)rs.repaired, "unrepairable",
					      (json_int_t)rs.unrepairable, "changed",
					      (json_int_t)rs.changed, "failed", (json_int_t)rs.failed,
					      "records", (json_int_t)rs.records, "bytes",
					      (json_int_t)rs.bytes));
	diffs = unv = NULL;
	*diff_total = total;
	*unverified = (uint64_t)json_array_size(json_object_get(result, "unverified"));
	snprintf(msg, msglen,
		 "verify at LSN %" PRIu64 ": the master and %d slave(s) compared, %zu entries, "
		 "%.1f MB hashed in %.2f s: %" PRIu64 " difference(s)%s",
		 x, n - (int)*unverified, mm.n, (double)bytes / 1e6, secs, total,
		 *unverified ? "; some slaves could not be verified" : "");
	verify_manifest_free(&mm);
	rc = 0;
out:
	if (snap) {
		atomic_store(&r->verify_lsn, 0);
		drop_master_snapshot(r);
		snapshot_put(snap);
	}
	for (int i = 0; jobs && i < n; i++)
		if (jobs[i].rc == 0)
			verify_manifest_free(&jobs[i].man);
	free(jobs);
	json_decref(diffs);
	json_decref(unv);
	return rc;
}

int repl_verify_run(struct replicator *r, int repair, char *msg, size_t msglen, void **result)
{
	json_t *res = NULL;
	uint64_t diffs = 0, unverified = 0;
	int rc = -ESTALE;

	*result = NULL;
	if (atomic_load(&r->is_slave) || atomic_load(&r->deposed)) {
		char url[160];
		uint64_t e;
		repl_master_hint(r, url, sizeof(url), &e);
		snprintf(msg, msglen, "verify runs on the master%s%s", url[0] ? " (" : "",
			 url[0] ? url : "");
		if (url[0])
			strncat(msg, ")", msglen - strlen(msg) - 1);
		return -EINVAL;
	}
	for (int t = 0; t < VERIFY_TRIES && rc == -ESTALE; t++) {
		json_decref(res);
		res = json_object();
		rc = verify_round(r, repair, res, &diffs, &unverified, msg, msglen);
	}
	if (rc == -ESTALE)
		snprintf(msg, msglen, "the slaves kept moving past the verify point; try again");
	if (rc < 0) {
		json_decref(res);
		return rc;
	}
	if (repair && diffs) {
		/* What the repair journaled is applied before the second look:
		 * the next round's point comes after it. */
		char msg2[512];
		json_t *again = NULL;
		uint64_t d2 = 0, u2 = 0;
		rc = -ESTALE;
		for (int t = 0; t < VERIFY_TRIES && rc == -ESTALE; t++) {
			json_decref(again);
			again = json_object();
			rc = verify_round(r, 0, again, &d2, &u2, msg2, sizeof(msg2));
		}
		if (rc == 0) {
			size_t l = strlen(msg);
			snprintf(msg + l, msglen - l, "; repaired, then %s", msg2);
			json_object_set(res, "after_repair", again);
			diffs = d2;
			unverified = u2;
		}
		json_decref(again);
		rc = 0;
	}
	json_object_set_new(res, "remaining", json_integer((json_int_t)diffs));
	json_object_set_new(res, "unverified_count", json_integer((json_int_t)unverified));
	*result = res;
	return 0;
}

void repl_verify_expire(struct replicator *r)
{
	/* A frozen tree no verify asked for (its master gave up, or it was a
	 * provisional point) costs a copy of every file changed: not for long. */
	if (!atomic_load(&r->verify_live) || !atomic_load(&r->is_slave))
		return;
	struct snapshot *old = NULL;
	pthread_mutex_lock(&r->verify_lock);
	if (r->verify_snap && time_mono_ns() - r->verify_snap_ns > 120ull * 1000000000ull) {
		old = r->verify_snap;
		r->verify_snap = NULL;
		atomic_store(&r->verify_live, 0);
		if (r->verify_target > r->verify_done)
			r->verify_done = r->verify_target;
		log_info("dropped a verify snapshot nobody asked for");
	}
	pthread_mutex_unlock(&r->verify_lock);
	snapshot_put(old);
}
