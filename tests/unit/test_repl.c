/* Unit tests of the replicator's own logic: the sealed envelope, replay
 * protection, the sync/degrade rule, lag, the slave table, and the journal
 * retention rule with slaves. */
#include "unit.h"
#include "../../replicator/replicator.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/stat.h>

static uint8_t key[REPL_KEY_BYTES], other_key[REPL_KEY_BYTES];

static int setup(void **state)
{
	(void)state;
	assert_true(sodium_init() >= 0);
	randombytes_buf(key, sizeof(key));
	randombytes_buf(other_key, sizeof(other_key));
	return 0;
}

static size_t seal_msg(uint8_t *buf, const char *text, uint8_t type, uint64_t counter)
{
	struct repl_env e = { .type = type, .epoch = 7, .counter = counter };
	size_t n = strlen(text);

	memset(e.sender, 0xab, sizeof(e.sender));
	memset(e.session, 0x5a, sizeof(e.session));
	memcpy(buf + REPL_ENV_HEAD, text, n);
	return repl_seal(key, &e, buf, n);
}

static void test_envelope_round_trip(void **state)
{
	uint8_t buf[512], *plain;
	size_t n = seal_msg(buf, "{\"from\":42}", REPL_MSG_FETCH, 9), plen;
	struct repl_env e;

	(void)state;
	assert_int_equal(n, REPL_ENV_OVERHEAD + 11);
	/* Encrypted: the plaintext does not appear on the wire. */
	assert_null(memmem(buf, n, "from", 4));
	assert_int_equal(repl_open(key, buf, n, &e, &plain, &plen), 0);
	assert_int_equal(plen, 11);
	assert_memory_equal(plain, "{\"from\":42}", 11);
	assert_int_equal(e.type, REPL_MSG_FETCH);
	assert_int_equal(e.epoch, 7);
	assert_int_equal(e.counter, 9);
	assert_int_equal(e.sender[0], 0xab);
}

static void test_envelope_refuses_forgery(void **state)
{
	uint8_t orig[512], buf[512], *plain;
	size_t n = seal_msg(orig, "{\"acked\":1000}", REPL_MSG_ACK, 3), plen;
	struct repl_env e;

	(void)state;
	/* Every single-bit flip anywhere (header, nonce, ciphertext, tag). */
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(buf, orig, n);
			buf[i] ^= (uint8_t)(1u << bit);
			assert_int_not_equal(repl_open(key, buf, n, &e, &plain, &plen), 0);
		}
	}
	/* Truncated at every length. */
	for (size_t len = 0; len < n; len++) {
		memcpy(buf, orig, n);
		assert_int_not_equal(repl_open(key, buf, len, &e, &plain, &plen), 0);
	}
	/* Another cluster's key. */
	memcpy(buf, orig, n);
	assert_int_equal(repl_open(other_key, buf, n, &e, &plain, &plen), -EBADMSG);
}

static void test_replay_window(void **state)
{
	uint64_t hi = 0, win = 0;

	(void)state;
	assert_true(repl_replay_check(&hi, &win, 1));
	assert_false(repl_replay_check(&hi, &win, 1));   /* the same again */
	assert_true(repl_replay_check(&hi, &win, 5));
	assert_true(repl_replay_check(&hi, &win, 3));    /* overtaken, not seen yet */
	assert_false(repl_replay_check(&hi, &win, 3));
	assert_false(repl_replay_check(&hi, &win, 5));
	assert_true(repl_replay_check(&hi, &win, 1000));
	assert_false(repl_replay_check(&hi, &win, 4));   /* older than the window */
	assert_false(repl_replay_check(&hi, &win, 0));
	assert_true(repl_replay_check(&hi, &win, 999));
}

struct waiter {
	struct repl_state *s;
	uint64_t lsn;
	int done;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	repl_state_wait(w->s, w->lsn);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_sync_waits_for_ack(void **state)
{
	struct repl_state s;
	uint8_t id[REPL_ID_BYTES] = { 1 };
	struct waiter w = { .s = &s, .lsn = 10 };
	pthread_t t;

	(void)state;
	repl_state_init(&s, 1, 5000, 5000);
	for (uint64_t l = 1; l <= 10; l++)
		repl_state_appended(&s, l, 100, time_mono_ns());
	pthread_mutex_lock(&s.lock);
	struct repl_slave *sl = repl_state_slave(&s, id, 1);
	repl_state_ack(&s, sl, 9, time_mono_ns());
	pthread_mutex_unlock(&s.lock);
	pthread_create(&t, NULL, wait_thread, &w);
	usleep(100 * 1000);
	assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0); /* 9 < 10 */
	pthread_mutex_lock(&s.lock);
	repl_state_ack(&s, sl, 10, time_mono_ns());
	pthread_mutex_unlock(&s.lock);
	pthread_join(t, NULL);
	assert_int_equal(w.done, 1);
	assert_int_equal(s.degraded, 0);
	repl_state_destroy(&s);
}

static void test_sync_degrades_and_recovers(void **state)
{
	struct repl_state s;
	uint8_t id[REPL_ID_BYTES] = { 2 };
	uint64_t t0;

	(void)state;
	repl_state_init(&s, 1, 200, 5000);
	for (uint64_t l = 1; l <= 20; l++)
		repl_state_appended(&s, l, 10, time_mono_ns());
	pthread_mutex_lock(&s.lock);
	struct repl_slave *sl = repl_state_slave(&s, id, 1);
	pthread_mutex_unlock(&s.lock);
	t0 = time_mono_ns();
	repl_state_wait(&s, 20);
	assert_true(time_mono_ns() - t0 >= 190ull * 1000 * 1000);
	assert_int_equal(s.degraded, 1);
	assert_int_equal(s.degraded_total, 1);
	/* Degraded: the next waits return at once. */
	t0 = time_mono_ns();
	repl_state_wait(&s, 20);
	assert_true(time_mono_ns() - t0 < 50ull * 1000 * 1000);
	/* A partial catch-up is not enough to return to sync... */
	pthread_mutex_lock(&s.lock);
	repl_state_ack(&s, sl, 15, time_mono_ns());
	assert_int_equal(s.degraded, 1);
	/* ...having everything is. */
	repl_state_ack(&s, sl, 20, time_mono_ns());
	assert_int_equal(s.degraded, 0);
	/* Acknowledgements never move backwards. */
	repl_state_ack(&s, sl, 12, time_mono_ns());
	assert_int_equal(sl->acked_lsn, 20);
	pthread_mutex_unlock(&s.lock);
	repl_state_destroy(&s);
}

static void test_lag_and_states(void **state)
{
	struct repl_state s;
	uint8_t id[REPL_ID_BYTES] = { 3 };
	uint64_t rec, bytes, ms, now;

	(void)state;
	repl_state_init(&s, 0, 1000, 1000);
	now = time_mono_ns();
	for (uint64_t l = 1; l <= 100; l++)
		repl_state_appended(&s, l, 1000, now - (100 - l) * 1000000ull);
	pthread_mutex_lock(&s.lock);
	struct repl_slave *sl = repl_state_slave(&s, id, 1);
	assert_int_equal(repl_state_slave_state(&s, sl, now), REPL_SLAVE_GONE); /* never seen */
	repl_state_ack(&s, sl, 60, now);
	repl_state_lag(&s, sl, now, &rec, &bytes, &ms);
	assert_int_equal(rec, 40);
	assert_int_equal(bytes, 40 * 1000);
	assert_true(ms >= 39 && ms <= 41); /* LSN 61 was committed 39 ms "ago" */
	assert_int_equal(repl_state_slave_state(&s, sl, now), REPL_SLAVE_STREAMING);
	assert_int_equal(repl_state_slave_state(&s, sl, now + 2000ull * 1000000), REPL_SLAVE_GONE);
	repl_state_ack(&s, sl, 100, now);
	repl_state_lag(&s, sl, now, &rec, &bytes, &ms);
	assert_int_equal(rec + bytes + ms, 0);
	pthread_mutex_unlock(&s.lock);
	repl_state_destroy(&s);
}

static void test_slave_table_persists(void **state)
{
	char *dir = tmpdir_make();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	struct repl_state a, b;
	uint8_t id1[REPL_ID_BYTES], id2[REPL_ID_BYTES];

	(void)state;
	randombytes_buf(id1, sizeof(id1));
	randombytes_buf(id2, sizeof(id2));
	repl_state_init(&a, 0, 1000, 1000);
	repl_state_init(&b, 0, 1000, 1000);
	struct repl_slave *s1 = repl_state_slave(&a, id1, 1), *s2 = repl_state_slave(&a, id2, 1);
	s1->acked_lsn = 77;
	s2->acked_lsn = 5;
	snprintf(s2->addr, sizeof(s2->addr), "127.0.0.1:4000");
	assert_int_equal(repl_state_save(&a, dfd), 0);
	assert_int_equal(repl_state_load(&b, dfd), 0);
	assert_int_equal(b.nslaves, 2);
	assert_int_equal(repl_state_slave(&b, id1, 0)->acked_lsn, 77);
	assert_string_equal(repl_state_slave(&b, id2, 0)->addr, "127.0.0.1:4000");
	/* A damaged table is reported, not half-believed silently. */
	assert_int_equal(io_write_file_atomic(dfd, "slaves", "replfs-slaves 1\nzz 1 x\n", 22), 0);
	struct repl_state c;
	repl_state_init(&c, 0, 1000, 1000);
	assert_int_equal(repl_state_load(&c, dfd), -EBADMSG);
	repl_state_destroy(&a);
	repl_state_destroy(&b);
	repl_state_destroy(&c);
	close(dfd);
	tmpdir_remove(dir);
}

static void test_retention_with_slaves(void **state)
{
	struct retention_slave sl[2] = { { .next_lsn = 50, .lag_bytes = 1000 },
					 { .next_lsn = 10, .lag_bytes = 5000 } };
	struct retention_inputs in = { .checkpoint_lsn = 100 };

	(void)state;
	assert_int_equal(retention_floor(&in), 101);
	in.slaves = sl;
	in.nslaves = 2;
	assert_int_equal(retention_floor(&in), 10);
	/* The slave 5000 bytes behind is beyond a 4000-byte bound: it will get a
	 * snapshot, the other one still holds the journal. */
	in.max_slave_bytes = 4000;
	assert_int_equal(retention_floor(&in), 50);
	in.max_slave_bytes = 500;
	assert_int_equal(retention_floor(&in), 101);
	/* A slave ahead of the checkpoint never lowers the floor below it... */
	sl[0].next_lsn = 200;
	sl[1].next_lsn = 300;
	in.max_slave_bytes = 0;
	assert_int_equal(retention_floor(&in), 101);
	in.keep_all = 1;
	assert_int_equal(retention_floor(&in), 0);
}

static void test_key_file(void **state)
{
	char *dir = tmpdir_make(), path[512], err[256];
	uint8_t k[REPL_KEY_BYTES];
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/cluster.key", dir);
	f = fopen(path, "w");
	assert_int_equal(repl_keygen(f), 0);
	fclose(f);
	chmod(path, 0644);
	assert_int_equal(repl_key_load(path, k, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "chmod 600"));
	chmod(path, 0600);
	assert_int_equal(repl_key_load(path, k, err, sizeof(err)), 0);
	f = fopen(path, "w");
	fputs("not a key\n", f);
	fclose(f);
	assert_int_equal(repl_key_load(path, k, err, sizeof(err)), -EINVAL);
	tmpdir_remove(dir);
}

/* ---- epoch history: where two timelines fork ---- */

static void hist(struct epoch_history *h, int n, const uint64_t *pairs)
{
	h->n = 0;
	for (int i = 0; i < n; i++)
		assert_true(history_note(h, pairs[2 * i], pairs[2 * i + 1]) >= 0);
}

static void test_history_fork(void **state)
{
	(void)state;
	struct epoch_history a, b;
	/* new master promoted at LSN 100 (epoch 2 from 101); the old master
	 * went on in epoch 1 to LSN 150: the fork is after 100 */
	hist(&a, 2, (uint64_t[]){ 1, 1, 2, 101 });
	hist(&b, 1, (uint64_t[]){ 1, 1 });
	assert_int_equal(history_fork(&a, 130, &b, 150), 100);
	assert_int_equal(history_fork(&b, 150, &a, 130), 100);
	/* the new master wrote nothing yet: still a fork after 100 */
	assert_int_equal(history_fork(&a, 100, &b, 150), 100);
	/* a slave that never got past 90 shares everything it has */
	assert_int_equal(history_fork(&a, 130, &b, 90), 90);
	/* the same timeline */
	assert_int_equal(history_fork(&a, 130, &a, 120), 120);
	/* two promotes: 1 [1,50], 2 [51,80], 3 [81,..] against a node that was
	 * master of epoch 2 and went on to 95 */
	hist(&a, 3, (uint64_t[]){ 1, 1, 2, 51, 3, 81 });
	hist(&b, 2, (uint64_t[]){ 1, 1, 2, 51 });
	assert_int_equal(history_fork(&a, 200, &b, 95), 80);
	/* a node whose epoch 2 never got a record */
	hist(&b, 2, (uint64_t[]){ 1, 1, 3, 81 });
	assert_int_equal(history_epoch_at(&b, 60), 1);
	assert_int_equal(history_fork(&a, 200, &b, 95), 50);
	/* an epoch starting where the last one did replaces it */
	hist(&b, 2, (uint64_t[]){ 1, 1, 2, 1 });
	assert_int_equal(b.n, 1);
	assert_int_equal(b.epoch[0], 2);
	/* older epochs are refused */
	assert_int_equal(history_note(&a, 2, 300), -EINVAL);
	assert_int_equal(history_note(&a, 3, 300), 0);
}

static void test_history_text(void **state)
{
	(void)state;
	struct epoch_history a, b;
	char buf[256];
	hist(&a, 3, (uint64_t[]){ 1, 1, 4, 10, 7, 99 });
	int n = history_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(history_parse(buf, &b), 0);
	assert_int_equal(b.n, 3);
	assert_int_equal(b.first_lsn[2], 99);
	assert_int_equal(history_parse("replfs-history 1\n2 5\n1 9\n", &b), -EBADMSG);
	assert_int_equal(history_parse("replfs-history 1\n2 x\n", &b), -EBADMSG);
	assert_int_equal(history_parse("garbage", &b), -EBADMSG);
	assert_int_equal(history_parse("replfs-history 1\n", &b), -EBADMSG);
	history_cut(&a, 50);
	assert_int_equal(a.n, 2);
	history_cut(&a, 0);
	assert_int_equal(a.n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope_round_trip),
		cmocka_unit_test(test_envelope_refuses_forgery),
		cmocka_unit_test(test_replay_window),
		cmocka_unit_test(test_sync_waits_for_ack),
		cmocka_unit_test(test_sync_degrades_and_recovers),
		cmocka_unit_test(test_lag_and_states),
		cmocka_unit_test(test_slave_table_persists),
		cmocka_unit_test(test_retention_with_slaves),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_history_fork),
		cmocka_unit_test(test_history_text),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
