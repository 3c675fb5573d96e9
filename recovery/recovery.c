/* Crash replay.
 *
 * RECOVERY INVARIANTS
 *  R1. The journal is the truth. The cache is trusted only as of the last
 *      checkpoint (STORE/checkpoint: the cache was synced to disk through that
 *      LSN) or, after a process crash, as of state->applied_lsn, which the page
 *      cache kept for us (same boot id).
 *  R2. Records are re-applied in LSN order with the same apply step as live
 *      operation (commit.c C2), so the result equals the live result; a record
 *      that failed live fails again the same way and is counted, not fatal.
 *  R3. After a process crash only the one in-flight record may be partly
 *      applied; creations are atomic (staging + rename) and the non-idempotent
 *      operations are recognised by apply_already_done(), so it is redone
 *      exactly once.
 *  R4. Nothing is applied before the whole journal from the checkpoint on has
 *      been validated: corruption stops the mount with its segment and offset
 *      and leaves the cache untouched.
 *  R5. Progress during recovery is recorded exactly as in live operation, so
 *      a crash during recovery is just another crash.
 *
 * KNOWN LIMIT (reboot/power loss): the cache may hold effects of records
 * after the checkpoint that were written back by the kernel before the power
 * went. Replaying those records again is harmless for content and attribute
 * records (absolute values) and for most name changes, but a name reused
 * within one checkpoint interval (rename A->B then create A) can be replayed
 * onto the wrong object. Checkpoints are frequent to keep that window small.
 */
#include "recovery.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct replay_ctx {
	struct store *st;
	struct apply_ctx ac;
	struct apply_fdcache fdc;
	struct recovery_report *rep;
	uint64_t start, orig_inflight;
	uint64_t orig_aux[4];
	int exact;
	char *err;
	size_t errlen;
	struct progress prog;     /* on the terminal `replfs mount` runs in */
};

static int replay_one(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	struct replay_ctx *x = arg;
	struct store_state *s = x->st->state;
	int rc;

	if (r->lsn < x->start)
		return 0;
	progress_update(&x->prog, r->lsn - x->start + 1);
	if (x->exact && r->lsn == x->orig_inflight &&
	    apply_already_done(&x->ac, r, x->orig_aux)) {
		s->applied_lsn = r->lsn;
		return 0;
	}
	fault_point("recovery:replay");
	apply_capture(&x->ac, r, s->aux);
	s->inflight_lsn = r->lsn;
	rc = apply_record_cached(&x->ac, &x->fdc, r);
	if (rc < 0 && !apply_error_is_deterministic(rc)) {
		snprintf(x->err, x->errlen, "replay of LSN %" PRIu64 " (%s %s, %s offset %" PRIu64
			 ") failed: %s", r->lsn, rec_op_name(r->op), *r->path ? r->path : "/",
			 pos->segment, pos->offset, strerror(-rc));
		return rc;
	}
	if (rc < 0) {
		x->rep->failed++;
		log_debug("replay: LSN %" PRIu64 " %s %s failed as it did live: %s", r->lsn,
			  rec_op_name(r->op), r->path, strerror(-rc));
	}
	s->applied_lsn = r->lsn;
	s->inflight_lsn = 0;
	if (!x->rep->first_lsn)
		x->rep->first_lsn = r->lsn;
	x->rep->last_lsn = r->lsn;
	x->rep->records++;
	return 0;
}

/* Leftovers of creations that never got their final name: never visible. */
static void staging_clear(int stagingfd)
{
	int fd = openat(stagingfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(stagingfd, de->d_name, 0) < 0 && errno == EISDIR)
			unlinkat(stagingfd, de->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

int recovery_run(struct store *st, struct journal *j, int flags, struct recovery_report *rep,
		 char *err, size_t errlen)
{
	struct store_state *s = st->state;
	struct store_checkpoint ck;
	struct journal_scan scan;
	struct replay_ctx x;
	char boot[37];
	uint64_t t0 = time_mono_ns();
	int rc;

	memset(rep, 0, sizeof(*rep));
	if ((rc = store_checkpoint_read(st, &ck)) < 0) {
		snprintf(err, errlen, "%s/checkpoint is missing or damaged: %s", st->path,
			 strerror(-rc));
		return rc;
	}
	rep->checkpoint_lsn = ck.lsn;

	/* R4: validate first; a torn tail is cut here. */
	rc = journal_scan(j, ck.lsn + 1, JOURNAL_SCAN_CUT_TORN, NULL, NULL, &scan);
	if (rc == -EBADMSG) {
		snprintf(err, errlen,
			 "journal corrupt in %s/journal/%s at offset %" PRIu64 " (%s); refusing to "
			 "mount. To discard the journal from there on (saved in lost+found/): "
			 "replfs journal truncate %s --at %s:%" PRIu64,
			 st->path, scan.bad_at.segment, scan.bad_at.offset, scan.why, st->path,
			 scan.bad_at.segment, scan.bad_at.offset);
		return rc;
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot read the journal of %s: %s", st->path, scan.why[0] ?
			 scan.why : strerror(-rc));
		return rc;
	}
	rep->torn = scan.torn;
	rep->torn_at = scan.torn_at;
	rep->torn_bytes = scan.torn_bytes;
	if (scan.records && scan.first_lsn > ck.lsn + 1) {
		snprintf(err, errlen, "journal of %s lacks LSN %" PRIu64 "..%" PRIu64
			 " after checkpoint %" PRIu64 "; cannot recover", st->path, ck.lsn + 1,
			 scan.first_lsn - 1, ck.lsn);
		return -EBADMSG;
	}
	rep->journal_last_lsn = scan.records ? scan.last_lsn : ck.lsn;
	rep->journal_last_epoch = scan.records ? scan.last_epoch : ck.epoch;
	if (rep->journal_last_lsn < ck.lsn)
		rep->journal_last_lsn = ck.lsn;

	memset(&x, 0, sizeof(x));
	x.st = st;
	x.ac = (struct apply_ctx){ .datafd = st->datafd, .stagingfd = st->stagingfd };
	x.rep = rep;
	x.err = err;
	x.errlen = errlen;
	boot_id_read(boot);
	/* Same boot, progress beyond the end of the journal: those records were
	 * applied but their journal bytes are gone (cut as torn). Their effects
	 * cannot be undone; they were never promised by fsync. Say so. */
	if (boot[0] && strcmp(boot, s->boot_id) == 0) {
		uint64_t seen = s->inflight_lsn > s->applied_lsn ? s->inflight_lsn : s->applied_lsn;
		if (seen > rep->journal_last_lsn) {
			rep->lost_first = rep->journal_last_lsn + 1;
			rep->lost_last = seen;
		}
	}
	if (!(flags & RECOVERY_FULL) && boot[0] && strcmp(boot, s->boot_id) == 0 &&
	    s->applied_lsn >= ck.lsn &&
	    s->applied_lsn <= rep->journal_last_lsn) {
		x.exact = 1;
		x.start = s->applied_lsn + 1;
		x.orig_inflight = s->inflight_lsn;
		memcpy(x.orig_aux, s->aux, sizeof(x.orig_aux));
		rep->mode = (s->clean && x.start > rep->journal_last_lsn) ? RECOVERY_CLEAN
									   : RECOVERY_PROCESS;
	} else {
		x.start = ck.lsn + 1;
		/* R5: the cache is trusted as of the checkpoint only; a crash before
		 * the first replayed record must not leave a stale, higher
		 * applied_lsn for the next mount to trust. */
		s->applied_lsn = ck.lsn;
		s->inflight_lsn = 0;
		rep->mode = ((s->clean || !s->boot_id[0] || (flags & RECOVERY_FULL)) &&
			     x.start > rep->journal_last_lsn)
				    ? RECOVERY_CLEAN
				    : RECOVERY_REBOOT;
	}

	staging_clear(st->stagingfd);
	if (x.start <= rep->journal_last_lsn) {
		apply_fdcache_init(&x.fdc);
		progress_begin(&x.prog, "replfs: replaying the journal (records)",
			       rep->journal_last_lsn - x.start + 1, 0, 2);
		rc = journal_scan(j, x.start, 0, replay_one, &x, &scan);
		progress_end(&x.prog);
		apply_fdcache_clear(&x.fdc);
		if (rc < 0) {
			if (!err[0])
				snprintf(err, errlen, "replay failed: %s", strerror(-rc));
			return rc;
		}
	}
	/* R1: make what was replayed durable before saying so. */
	if (syncfs(st->datafd) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot sync %s: %s", st->path, strerror(errno));
		return rc;
	}
	s->applied_lsn = rep->journal_last_lsn;
	s->inflight_lsn = 0;
	memcpy(s->boot_id, boot, sizeof(boot));
	s->clean = 0;
	ck.lsn = rep->journal_last_lsn;
	ck.epoch = st->epoch;
	if ((rc = store_checkpoint_write(st, &ck)) < 0) {
		snprintf(err, errlen, "cannot write %s/checkpoint: %s", st->path, strerror(-rc));
		return rc;
	}
	rep->elapsed_ms = (time_mono_ns() - t0) / 1000000;
	return 0;
}

void recovery_report_print(const struct recovery_report *rep, const char *store_path)
{
	static const char *mode[] = { "clean", "after a process crash", "after a restart" };

	if (rep->mode == RECOVERY_CLEAN && !rep->torn && !rep->lost_first)
		return;
	fprintf(stderr,
		"replfs: recovery: %s %s: replayed %" PRIu64 " records (LSN %" PRIu64 "-%" PRIu64
		", %" PRIu64 " without effect: already applied or failing as originally) from "
		"checkpoint %" PRIu64 " in %" PRIu64 " ms",
		store_path, mode[rep->mode], rep->records, rep->first_lsn, rep->last_lsn,
		rep->failed, rep->checkpoint_lsn, rep->elapsed_ms);
	if (rep->torn)
		fprintf(stderr, "; cut a torn tail of %" PRIu64 " bytes at %s offset %" PRIu64,
			rep->torn_bytes, rep->torn_at.segment, rep->torn_at.offset);
	if (rep->lost_first)
		fprintf(stderr, "; WARNING: the data directory keeps changes of LSN %" PRIu64
			"-%" PRIu64 " that the journal lost (never fsynced)",
			rep->lost_first, rep->lost_last);
	fputc('\n', stderr);
}
