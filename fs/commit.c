/* The commit path: where the write-ahead rule is enforced, once, for every
 * mutation the node makes — local operations on the master, records received
 * by a slave, records replayed by recovery.
 *
 * INVARIANTS (held under order_lock)
 *  C1. A record is in the journal (written to the kernel) before any of its
 *      effects reach the cache.
 *  C2. Records are applied in LSN order, one at a time: journal order is apply
 *      order, so replaying the journal reproduces the cache exactly — failed
 *      operations included, since their failure depends only on the tree.
 *  C3. state->inflight_lsn is set before a record is logged and
 *      state->applied_lsn after it is applied, so after a process crash at
 *      most one record (inflight) is of unknown effect; apply_capture() keeps
 *      what is needed to tell for the operations that are not idempotent.
 *  C4. An apply failure that does not come from the tree itself (ENOSPC, EIO)
 *      leaves journal and cache disagreeing; the node then refuses every
 *      mutation (sticky) until a remount replays the record.
 */
#include "fs.h"
#include "../utils/utils.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <fcntl.h>
#include <unistd.h>

#define SPACE_RECHECK_NS (100ull * 1000 * 1000)
#define SPACE_SLACK (8ull << 20)

int commit_init(struct commit *c, struct journal *j, const struct apply_ctx *ac,
		struct store_state *state, uint64_t next_lsn, uint64_t epoch)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->order_lock, NULL);
	c->journal = j;
	c->apply = *ac;
	c->state = state;
	c->next_lsn = next_lsn;
	c->epoch = epoch;
	c->space_reserve = 16ull << 20;
	c->space_est = -1;
	return 0;
}

void commit_release(struct commit *c)
{
	for (int i = 0; i < c->ndirty; i++)
		close(c->dirty_fds[i]);
	pthread_mutex_destroy(&c->order_lock);
}

/* Called under order_lock after a record changed the cache. */
static void dirty_note(struct commit *c, const struct rec *r, int hint_fd)
{
	struct stat st;
	int fd;

	if (c->need_syncfs)
		return;
	if (hint_fd < 0 || (r->op != REC_WRITE && r->op != REC_TRUNCATE && r->op != REC_FALLOCATE) ||
	    fstat(hint_fd, &st) < 0) {
		c->need_syncfs = 1;
		return;
	}
	for (int i = 0; i < c->ndirty; i++)
		if (c->dirty_inos[i] == st.st_ino)
			return;
	if (c->ndirty == COMMIT_DIRTY_MAX || (fd = fcntl(hint_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		c->need_syncfs = 1;
		return;
	}
	c->dirty_fds[c->ndirty] = fd;
	c->dirty_inos[c->ndirty++] = st.st_ino;
}

int commit_take_dirty(struct commit *c, int *fds, int *need_syncfs, uint64_t *applied_lsn)
{
	int n;

	pthread_mutex_lock(&c->order_lock);
	n = c->ndirty;
	memcpy(fds, c->dirty_fds, (size_t)n * sizeof(int));
	*need_syncfs = c->need_syncfs;
	*applied_lsn = c->state->applied_lsn;
	c->ndirty = 0;
	c->need_syncfs = 0;
	pthread_mutex_unlock(&c->order_lock);
	return n;
}

uint64_t commit_last_lsn(struct commit *c)
{
	return journal_appended_lsn(c->journal);
}

/* Operations that can make the filesystem grow. Removals always pass, so a
 * full disk can be emptied through the mount. */
static int rec_allocates(const struct rec *r)
{
	switch (r->op) {
	case REC_UNLINK:
	case REC_RMDIR:
	case REC_REMOVEXATTR:
	case REC_CHMOD:
	case REC_CHOWN:
	case REC_UTIMENS:
	case REC_RENAME:
		return 0;
	default:
		return 1;
	}
}

/* Keeps space_reserve bytes free so that a record that made it into the
 * journal also fits in the cache (C4 is then only for real I/O errors). */
static int space_check(struct commit *c, const struct rec *r)
{
	uint64_t need = 2 * (rec_size(r) + (r->op == REC_FALLOCATE ? r->len : 0)) + SPACE_SLACK;
	uint64_t now = time_mono_ns();
	struct statvfs sv;

	if (!rec_allocates(r))
		return 0;
	if (c->space_est < 0 || (uint64_t)c->space_est < need + c->space_reserve + (64ull << 20) ||
	    now - c->space_checked_ns > SPACE_RECHECK_NS) {
		if (fstatvfs(c->apply.datafd, &sv) < 0)
			return 0;
		c->space_est = (int64_t)((uint64_t)sv.f_bavail * sv.f_frsize);
		c->space_checked_ns = now;
	}
	if ((uint64_t)c->space_est < need + c->space_reserve)
		return -ENOSPC;
	c->space_est -= (int64_t)need / 2;
	return 0;
}

int commit_op_locked(struct commit *c, struct rec *r, int hint_fd, int *out_fd)
{
	struct store_state *s = c->state;
	int rc;

	if (c->sticky_err) {
		rc = c->sticky_err;
		goto out;
	}
	if (r->lsn == 0) {
		if ((rc = space_check(c, r)) < 0)
			goto out;
		r->lsn = c->next_lsn;
		r->epoch = c->epoch;
		r->time_ns = time_now_ns();
	} else if (r->lsn != c->next_lsn) {
		rc = -EPROTO;
		goto out;
	}
	if (r->flags & REC_F_APPEND) {
		struct stat st;
		if (hint_fd < 0 || fstat(hint_fd, &st) < 0) {
			rc = -EBADF;
			goto out;
		}
		r->off = (uint64_t)st.st_size;
		r->flags &= (uint16_t)~REC_F_APPEND;
	}
	if (c->before_apply)
		c->before_apply(c->before_apply_arg, r, hint_fd);
	apply_capture(&c->apply, r, s->aux);
	s->inflight_lsn = r->lsn;
	rc = journal_append(c->journal, r);
	if (rc < 0) {
		s->inflight_lsn = 0;
		goto out;
	}
	c->next_lsn++;
	rc = apply_record(&c->apply, r, hint_fd, out_fd);
	fault_point("apply:done");
	if (rc < 0 && !apply_error_is_deterministic(rc)) {
		log_error("LSN %" PRIu64 " (%s %s) is in the journal but could not be applied: %s; "
			  "refusing further changes until remount replays it",
			  r->lsn, rec_op_name(r->op), r->path, strerror(-rc));
		c->sticky_err = -EIO;
		goto out;
	}
	if (rc == 0)
		dirty_note(c, r, hint_fd);
	s->applied_lsn = r->lsn;
	s->inflight_lsn = 0;
	s->clean = 0;
	fault_point("commit:done");
	if (c->on_commit)
		c->on_commit(c->on_commit_arg, r->lsn, rec_size(r));
out:
	return rc;
}

int commit_op(struct commit *c, struct rec *r, int hint_fd, int *out_fd)
{
	int rc;

	pthread_mutex_lock(&c->order_lock);
	rc = commit_op_locked(c, r, hint_fd, out_fd);
	pthread_mutex_unlock(&c->order_lock);
	return rc;
}
