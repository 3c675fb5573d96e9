/* What the master knows about its slaves, and the sync-mode rule.
 *
 * SYNC MODE (guarantee 3): an fsync (or, strict, every operation) returns
 * once sync_count slaves hold its LSN durably in their journals. When the
 * wait exceeds sync_timeout_ms the master degrades to async — it logs it,
 * status shows it — rather than stop serving; it returns to sync as soon as
 * sync_count slaves have caught up with the whole journal again (MySQL
 * semi-sync, Alibaba's HBase sync replication). Degraded waiters return at
 * once, so a dead slave costs one timeout, not one per fsync.
 *
 * STORE/slaves (the slave table, rewritten atomically when it changes):
 *     replfs-slaves 1
 *     <32 hex node id> <acked lsn> <addr>
 */
#include "replicator.h"
#include "../utils/utils.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *repl_slave_state_name(enum repl_slave_state s)
{
	static const char *const names[] = { "streaming", "catching_up", "snapshot", "gone" };

	return (unsigned)s < 4 ? names[s] : "?";
}

void repl_state_init(struct repl_state *s, int sync_count, uint64_t sync_timeout_ms,
		     uint64_t gone_ms)
{
	pthread_condattr_t ca;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->acked, &ca);
	pthread_cond_init(&s->appended, &ca);
	pthread_condattr_destroy(&ca);
	s->sync_count = sync_count;
	s->sync_timeout_ms = sync_timeout_ms;
	s->gone_ms = gone_ms;
}

void repl_state_destroy(struct repl_state *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->acked);
	pthread_cond_destroy(&s->appended);
}

void repl_state_appended(struct repl_state *s, uint64_t lsn, uint64_t bytes, uint64_t now_mono)
{
	size_t i = lsn % REPL_LAG_RING;

	pthread_mutex_lock(&s->lock);
	s->total_bytes += bytes;
	s->ring_lsn[i] = lsn;
	s->ring_mono[i] = now_mono;
	s->ring_bytes[i] = s->total_bytes;
	s->last_lsn = lsn;
	pthread_cond_broadcast(&s->appended);
	pthread_mutex_unlock(&s->lock);
}

struct repl_slave *repl_state_slave(struct repl_state *s, const uint8_t node_id[REPL_ID_BYTES],
				    int create)
{
	for (int i = 0; i < s->nslaves; i++)
		if (s->slaves[i].known && !memcmp(s->slaves[i].node_id, node_id, REPL_ID_BYTES))
			return &s->slaves[i];
	if (!create)
		return NULL;
	for (int i = 0; i < REPL_SLAVES_MAX; i++) {
		if (s->slaves[i].known)
			continue;
		memset(&s->slaves[i], 0, sizeof(s->slaves[i]));
		memcpy(s->slaves[i].node_id, node_id, REPL_ID_BYTES);
		s->slaves[i].known = 1;
		if (i >= s->nslaves)
			s->nslaves = i + 1;
		s->dirty = 1;
		return &s->slaves[i];
	}
	return NULL;
}

int repl_state_holders(const struct repl_state *s, uint64_t lsn)
{
	int n = 0;

	for (int i = 0; i < s->nslaves; i++)
		if (s->slaves[i].known && s->slaves[i].acked_lsn >= lsn)
			n++;
	return n;
}

void repl_state_ack(struct repl_state *s, struct repl_slave *sl, uint64_t acked,
		    uint64_t now_mono)
{
	sl->seen_mono_ns = now_mono;
	if (acked <= sl->acked_lsn)
		return;
	sl->acked_lsn = acked;
	s->dirty = 1;
	if (s->degraded && s->sync_count && repl_state_holders(s, s->last_lsn) >= s->sync_count) {
		s->degraded = 0;
		log_warn("sync replication restored: %d slave(s) caught up at LSN %" PRIu64,
			 s->sync_count, s->last_lsn);
	}
	pthread_cond_broadcast(&s->acked);
}

int repl_state_wait(struct repl_state *s, uint64_t lsn)
{
	struct timespec until;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (s->fenced) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	if (!s->sync_count || s->degraded || repl_state_holders(s, lsn) >= s->sync_count) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	time_deadline(&until, CLOCK_MONOTONIC, s->sync_timeout_ms);
	while (!s->degraded && !s->fenced && repl_state_holders(s, lsn) < s->sync_count) {
		if (pthread_cond_timedwait(&s->acked, &s->lock, &until) != ETIMEDOUT)
			continue;
		if (repl_state_holders(s, lsn) >= s->sync_count || s->degraded || s->fenced)
			break;
		/* Silent slaves may be following a newer master: a deposed
		 * master must not acknowledge what it could not replicate, so
		 * ask them before degrading. */
		if (s->before_degrade) {
			int (*hook)(void *) = s->before_degrade;
			void *arg = s->before_degrade_arg;
			pthread_mutex_unlock(&s->lock);
			hook(arg);
			pthread_mutex_lock(&s->lock);
			if (s->fenced || s->degraded || repl_state_holders(s, lsn) >= s->sync_count)
				break;
		}
		s->degraded = 1;
		s->degraded_total++;
		s->degraded_since_ns = time_now_ns();
		log_error("SYNC REPLICATION DEGRADED TO ASYNC: no %d slave(s) acknowledged "
			  "LSN %" PRIu64 " within %" PRIu64 " ms; fsync no longer waits "
			  "for slaves until one catches up",
			  s->sync_count, lsn, s->sync_timeout_ms);
		pthread_cond_broadcast(&s->acked);
		break;
	}
	if (s->fenced && repl_state_holders(s, lsn) < s->sync_count)
		rc = -EIO;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void repl_state_fence(struct repl_state *s)
{
	pthread_mutex_lock(&s->lock);
	s->fenced = 1;
	pthread_cond_broadcast(&s->acked);
	pthread_mutex_unlock(&s->lock);
}

enum repl_slave_state repl_state_slave_state(const struct repl_state *s,
					     const struct repl_slave *sl, uint64_t now_mono)
{
	if (!sl->seen_mono_ns || now_mono - sl->seen_mono_ns > s->gone_ms * 1000000ull)
		return REPL_SLAVE_GONE;
	if (sl->in_snapshot)
		return REPL_SLAVE_SNAPSHOT;
	/* Within what one long poll ships: streaming. */
	if (s->last_lsn - sl->acked_lsn > 4096 && s->last_lsn > sl->acked_lsn)
		return REPL_SLAVE_CATCHING_UP;
	return REPL_SLAVE_STREAMING;
}

void repl_state_lag(const struct repl_state *s, const struct repl_slave *sl, uint64_t now_mono,
		    uint64_t *records, uint64_t *bytes, uint64_t *ms)
{
	uint64_t next = sl->acked_lsn + 1;

	*records = s->last_lsn > sl->acked_lsn ? s->last_lsn - sl->acked_lsn : 0;
	*bytes = 0;
	*ms = 0;
	if (!*records)
		return;
	size_t i = next % REPL_LAG_RING, last = s->last_lsn % REPL_LAG_RING;
	if (s->ring_lsn[i] == next && s->ring_lsn[last] == s->last_lsn) {
		/* ring_bytes is cumulative through each record, so what is
		 * unacknowledged is the total minus what preceded next. */
		size_t p = (next - 1) % REPL_LAG_RING;
		uint64_t before = next > 1 && s->ring_lsn[p] == next - 1 ? s->ring_bytes[p]
									 : s->ring_bytes[i];
		*bytes = s->total_bytes - before;
		*ms = (now_mono - s->ring_mono[i]) / 1000000ull;
	} else {
		/* Further behind than the ring remembers: at least this much. */
		size_t oldest = (s->last_lsn + 1) % REPL_LAG_RING;
		*bytes = s->total_bytes;
		if (s->ring_lsn[oldest])
			*ms = (now_mono - s->ring_mono[oldest]) / 1000000ull;
	}
}

int repl_state_save(struct repl_state *s, int dirfd)
{
	char *buf;
	size_t cap = 64 + (size_t)s->nslaves * 160, len;
	int rc;

	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "replfs-slaves 1\n");
	for (int i = 0; i < s->nslaves; i++) {
		char hex[REPL_ID_BYTES * 2 + 1];
		if (!s->slaves[i].known)
			continue;
		sodium_bin2hex(hex, sizeof(hex), s->slaves[i].node_id, REPL_ID_BYTES);
		len += (size_t)snprintf(buf + len, cap - len, "%s %" PRIu64 " %s\n", hex,
					s->slaves[i].acked_lsn,
					s->slaves[i].addr[0] ? s->slaves[i].addr : "-");
	}
	s->dirty = 0;
	rc = io_write_file_atomic(dirfd, "slaves", buf, len);
	free(buf);
	return rc;
}

int repl_state_load(struct repl_state *s, int dirfd)
{
	char *buf, *save = NULL, *line;
	size_t len;
	int rc, first = 1;

	rc = io_read_file(dirfd, "slaves", &buf, &len, 1 << 20);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char hex[64], addr[96];
		uint64_t acked;
		uint8_t id[REPL_ID_BYTES];
		size_t idlen = 0;
		struct repl_slave *sl;

		if (first) {
			first = 0;
			if (strcmp(line, "replfs-slaves 1") != 0) {
				rc = -EBADMSG;
				break;
			}
			continue;
		}
		if (sscanf(line, "%63s %" SCNu64 " %95s", hex, &acked, addr) != 3 ||
		    sodium_hex2bin(id, sizeof(id), hex, strlen(hex), NULL, &idlen, NULL) != 0 ||
		    idlen != REPL_ID_BYTES) {
			rc = -EBADMSG;
			break;
		}
		sl = repl_state_slave(s, id, 1);
		if (!sl)
			break;
		sl->acked_lsn = acked;
		if (strcmp(addr, "-") != 0)
			snprintf(sl->addr, sizeof(sl->addr), "%s", addr);
	}
	s->dirty = 0;
	free(buf);
	return rc;
}

/* A replay window as IPsec's: a counter is accepted once, if it is above the
 * highest seen or within the window below it and not seen yet (the fetch and
 * ack threads of a follower share a session, so their requests may overtake
 * each other). */
int repl_replay_check(uint64_t *highest, uint64_t *window, uint64_t counter)
{
	if (counter > *highest) {
		uint64_t shift = counter - *highest;
		*window = shift >= REPL_REPLAY_WINDOW ? 1 : (*window << shift) | 1;
		*highest = counter;
		return 1;
	}
	uint64_t back = *highest - counter;
	if (back >= REPL_REPLAY_WINDOW || (*window >> back) & 1)
		return 0;
	*window |= 1ull << back;
	return 1;
}
