/* Checkpoints: bound how much journal a restart must replay, and let the
 * journal shrink. A checkpoint at LSN C means: every record <= C is applied
 * and the cache is on disk (syncfs), and the journal is durable to C. */
#include "recovery.h"
#include "../utils/utils.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct checkpointer {
	struct store *st;
	struct journal *j;
	struct commit *c;
	struct checkpoint_opts o;
	pthread_t thread;
	pthread_mutex_t lock;  /* protects stop, due */
	pthread_cond_t cond;
	int stop, due;
	_Atomic uint64_t bytes_since;
};

#define RETENTION_SLAVES_MAX 64

int checkpoint_now(struct store *st, struct journal *j, struct commit *c,
		   const struct checkpoint_opts *o)
{
	struct store_checkpoint ck;
	struct retention_inputs ri = { 0 };
	struct retention_slave slaves[RETENTION_SLAVES_MAX];
	int rc;

	int fds[COMMIT_DIRTY_MAX], nfds, need_syncfs;

	nfds = commit_take_dirty(c, fds, &need_syncfs, &ck.lsn);
	ck.epoch = c->epoch;
	/* Only contents of a few files changed: syncing those files makes the
	 * cache durable through ck.lsn, and the journal segments that held the
	 * data can go before the kernel ever writes them. Anything else (names,
	 * attributes, many files): one syncfs of the whole store. */
	rc = 0;
	for (int i = 0; i < nfds; i++) {
		if (!need_syncfs && rc == 0 && fsync(fds[i]) < 0)
			rc = -errno;
		close(fds[i]);
	}
	if (rc < 0)
		return rc;
	if (need_syncfs && syncfs(st->datafd) < 0)
		return -errno;
	if ((rc = fault_check("checkpoint:write")) < 0 ||
	    (rc = store_checkpoint_write(st, &ck)) < 0)
		return rc;
	ri.checkpoint_lsn = ck.lsn;
	ri.keep_all = o->keep_journal;
	if (o->slave_needs) {
		ri.nslaves = o->slave_needs(o->slave_needs_arg, slaves, RETENTION_SLAVES_MAX,
					    &ri.max_slave_bytes);
		ri.slaves = slaves;
	}
	rc = journal_remove_below(j, retention_floor(&ri));
	if (rc > 0)
		log_debug("checkpoint at LSN %" PRIu64 ": removed %d journal segments", ck.lsn, rc);
	return rc < 0 ? rc : 0;
}

static void *checkpointer_main(void *arg)
{
	struct checkpointer *cp = arg;

	pthread_mutex_lock(&cp->lock);
	while (!cp->stop) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += cp->o.every_seconds ? cp->o.every_seconds : 30;
		while (!cp->stop && !cp->due)
			if (pthread_cond_timedwait(&cp->cond, &cp->lock, &until) != 0)
				break;
		if (cp->stop)
			break;
		cp->due = 0;
		pthread_mutex_unlock(&cp->lock);
		atomic_store(&cp->bytes_since, 0);
		if (cp->c->state->applied_lsn != 0) {
			int rc = checkpoint_now(cp->st, cp->j, cp->c, &cp->o);
			if (rc < 0)
				log_error("checkpoint failed: %s", strerror(-rc));
		}
		pthread_mutex_lock(&cp->lock);
	}
	pthread_mutex_unlock(&cp->lock);
	return NULL;
}

int checkpointer_start(struct store *st, struct journal *j, struct commit *c,
		       const struct checkpoint_opts *o, struct checkpointer **out)
{
	struct checkpointer *cp = calloc(1, sizeof(*cp));
	int rc;

	if (!cp)
		return -ENOMEM;
	cp->st = st;
	cp->j = j;
	cp->c = c;
	cp->o = *o;
	pthread_mutex_init(&cp->lock, NULL);
	pthread_cond_init(&cp->cond, NULL);
	if ((rc = pthread_create(&cp->thread, NULL, checkpointer_main, cp)) != 0) {
		free(cp);
		return -rc;
	}
	*out = cp;
	return 0;
}

void checkpointer_note(void *arg, uint64_t lsn, uint64_t bytes)
{
	struct checkpointer *cp = arg;
	uint64_t total = atomic_fetch_add(&cp->bytes_since, bytes) + bytes;

	(void)lsn;
	if (cp->o.every_bytes && total >= cp->o.every_bytes && total - bytes < cp->o.every_bytes) {
		pthread_mutex_lock(&cp->lock);
		cp->due = 1;
		pthread_cond_signal(&cp->cond);
		pthread_mutex_unlock(&cp->lock);
	}
}

void checkpointer_stop(struct checkpointer *cp)
{
	if (!cp)
		return;
	pthread_mutex_lock(&cp->lock);
	cp->stop = 1;
	pthread_cond_signal(&cp->cond);
	pthread_mutex_unlock(&cp->lock);
	pthread_join(cp->thread, NULL);
	pthread_mutex_destroy(&cp->lock);
	pthread_cond_destroy(&cp->cond);
	free(cp);
}
