/* Journal: append and scan, segment rollover, torn tails, corruption,
 * retention, deliberate cuts, group commit under concurrency. */
#include "unit.h"

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>

static const uint8_t NODE[16] = { 1, 2, 3 };

struct jfix {
	char *dir;
	int jfd;
	struct journal *j;
};

static void jfix_open(struct jfix *f, uint64_t seg_bytes)
{
	assert_int_equal(journal_open(f->jfd, NODE, seg_bytes, &f->j), 0);
}

static int setup(void **state)
{
	struct jfix *f = calloc(1, sizeof(*f));
	f->dir = tmpdir_make();
	f->jfd = open(f->dir, O_RDONLY | O_DIRECTORY);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct jfix *f = *state;
	journal_close(f->j);
	close(f->jfd);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static void append_n(struct journal *j, uint64_t first, int n, size_t data_len)
{
	static char data[70000];
	memset(data, 'x', sizeof(data));
	for (int i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof(path), "f%llu", (unsigned long long)(first + (uint64_t)i));
		struct rec r = { .op = REC_WRITE, .lsn = first + (uint64_t)i, .epoch = 1,
				 .path = path, .data = data, .data_len = (uint32_t)data_len };
		assert_int_equal(journal_append(j, &r), 0);
	}
}

struct collect {
	uint64_t lsns[4096];
	int n;
};

static int collect_one(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	struct collect *c = arg;
	char want[64];
	(void)pos;
	snprintf(want, sizeof(want), "f%llu", (unsigned long long)r->lsn);
	assert_string_equal(r->path, want);
	c->lsns[c->n++] = r->lsn;
	return 0;
}

static void test_append_scan_rollover(void **state)
{
	struct jfix *f = *state;
	struct journal_scan s;
	struct collect c = { 0 };

	jfix_open(f, 64 * 1024);
	assert_int_equal(journal_start(f->j, 1, 1), 0);
	append_n(f->j, 1, 100, 3000); /* ~300 KiB: several 64 KiB segments */
	assert_true(journal_segment_count(f->j) >= 4);
	journal_close(f->j);

	jfix_open(f, 64 * 1024);
	assert_int_equal(journal_scan(f->j, 0, 0, collect_one, &c, &s), 0);
	assert_int_equal(c.n, 100);
	for (int i = 0; i < 100; i++)
		assert_int_equal(c.lsns[i], (uint64_t)i + 1);
	assert_int_equal(s.last_lsn, 100);
	assert_false(s.torn);

	/* Scanning from the middle visits only the rest. */
	c.n = 0;
	assert_int_equal(journal_scan(f->j, 61, 0, collect_one, &c, &s), 0);
	assert_int_equal(c.n, 40);
	assert_int_equal(c.lsns[0], 61);

	/* Appending continues after a reopen. */
	assert_int_equal(journal_start(f->j, 101, 1), 0);
	append_n(f->j, 101, 5, 10);
	c.n = 0;
	assert_int_equal(journal_scan(f->j, 0, 0, collect_one, &c, &s), 0);
	assert_int_equal(c.n, 105);
}

static const char *last_segment(struct jfix *f, char *name, size_t size)
{
	struct journal_scan s;
	assert_int_equal(journal_scan(f->j, 0, 0, NULL, NULL, &s), 0);
	/* The last segment is the one holding last_lsn; find its file by listing. */
	char best[64] = "";
	for (uint64_t l = s.last_lsn; l >= 1; l--) {
		char n[64];
		snprintf(n, sizeof(n), "%016llx.seg", (unsigned long long)l);
		if (faccessat(f->jfd, n, F_OK, 0) == 0) {
			snprintf(best, sizeof(best), "%s", n);
			break;
		}
	}
	snprintf(name, size, "%s", best);
	return name;
}

static void test_torn_tail_is_cut(void **state)
{
	struct jfix *f = *state;
	struct journal_scan s;
	struct collect c = { 0 };
	char seg[64];
	struct stat st;

	jfix_open(f, 1 << 20);
	assert_int_equal(journal_start(f->j, 1, 1), 0);
	append_n(f->j, 1, 10, 1000);
	last_segment(f, seg, sizeof(seg));
	int fd = openat(f->jfd, seg, O_RDWR);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(ftruncate(fd, st.st_size - 300), 0); /* tear record 10 */
	close(fd);
	journal_close(f->j);

	jfix_open(f, 1 << 20);
	assert_int_equal(journal_scan(f->j, 0, JOURNAL_SCAN_CUT_TORN, collect_one, &c, &s), 0);
	if (s.last_lsn != 9)
		fail_msg("last %llu torn %d at %s:%llu why %s", (unsigned long long)s.last_lsn, s.torn,
			 s.torn_at.segment, (unsigned long long)s.torn_at.offset, s.why);
	assert_true(s.torn);
	assert_int_equal(c.n, 9);
	/* Cut for good: the next scan is clean and appending resumes at 10. */
	assert_int_equal(journal_scan(f->j, 0, 0, NULL, NULL, &s), 0);
	assert_false(s.torn);
	assert_int_equal(journal_start(f->j, 10, 1), 0);
	append_n(f->j, 10, 1, 10);
	assert_int_equal(journal_scan(f->j, 0, 0, NULL, NULL, &s), 0);
	assert_int_equal(s.last_lsn, 10);
}

static void test_corruption_inside_is_refused(void **state)
{
	struct jfix *f = *state;
	struct journal_scan s;
	char seg[64];

	jfix_open(f, 1 << 20);
	assert_int_equal(journal_start(f->j, 1, 1), 0);
	append_n(f->j, 1, 10, 1000);
	last_segment(f, seg, sizeof(seg));
	/* Flip one byte inside record 3's data: valid records follow it. */
	int fd = openat(f->jfd, seg, O_RDWR);
	uint8_t b;
	off_t at = 64 + 2 * 1128 + 500;
	assert_int_equal(pread(fd, &b, 1, at), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, at), 1);
	close(fd);
	journal_close(f->j);

	jfix_open(f, 1 << 20);
	assert_int_equal(journal_scan(f->j, 0, JOURNAL_SCAN_CUT_TORN, NULL, NULL, &s), -EBADMSG);
	assert_string_equal(s.bad_at.segment, seg);
	assert_int_equal(s.bad_at.offset, 64 + 2 * 1128);
	assert_int_equal(s.last_lsn, 2);

	/* The deliberate way on: cut there, keep the cut bytes. */
	char *lf = tmpdir_make();
	int lfd = open(lf, O_RDONLY | O_DIRECTORY);
	assert_int_equal(journal_cut(f->j, &s.bad_at, lfd), 0);
	journal_close(f->j);
	jfix_open(f, 1 << 20);
	assert_int_equal(journal_scan(f->j, 0, 0, NULL, NULL, &s), 0);
	assert_int_equal(s.last_lsn, 2);
	char saved[128];
	snprintf(saved, sizeof(saved), "%s.cut-at-%d", seg, 64 + 2 * 1128);
	struct stat st;
	assert_int_equal(fstatat(lfd, saved, &st, 0), 0);
	assert_int_equal(st.st_size, 8 * 1128);
	close(lfd);
	tmpdir_remove(lf);
}

static void test_remove_below(void **state)
{
	struct jfix *f = *state;
	struct journal_scan s;

	jfix_open(f, 16 * 1024);
	assert_int_equal(journal_start(f->j, 1, 1), 0);
	append_n(f->j, 1, 60, 2000); /* ~8 records per segment */
	int before = journal_segment_count(f->j);
	assert_true(before >= 6);
	assert_true(journal_remove_below(f->j, 30) > 0);
	assert_int_equal(journal_scan(f->j, 30, 0, NULL, NULL, &s), 0);
	assert_true(s.first_lsn <= 30);
	assert_true(s.first_lsn > 1);
	/* Never the segment in use. */
	journal_remove_below(f->j, 1000);
	assert_int_equal(journal_segment_count(f->j), 1);
	assert_int_equal(journal_scan(f->j, 0, 0, NULL, NULL, &s), 0);
	assert_int_equal(s.last_lsn, 60);
}

struct syncer {
	struct journal *j;
	pthread_mutex_t *lock;
	uint64_t *next;
	int rc;
};

static void *sync_worker(void *arg)
{
	struct syncer *w = arg;
	for (int i = 0; i < 50; i++) {
		pthread_mutex_lock(w->lock);
		uint64_t lsn = (*w->next)++;
		struct rec r = { .op = REC_TRUNCATE, .lsn = lsn, .epoch = 1, .path = "f" };
		int rc = journal_append(w->j, &r);
		pthread_mutex_unlock(w->lock);
		if (rc == 0)
			rc = journal_sync(w->j, lsn);
		if (rc == 0 && journal_durable_lsn(w->j) < lsn)
			rc = -1;
		if (rc) {
			w->rc = rc;
			break;
		}
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	struct jfix *f = *state;
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t next = 1;
	pthread_t t[8];
	struct syncer w[8];

	jfix_open(f, 4096); /* tiny segments: syncs must cover rolled-over ones */
	assert_int_equal(journal_start(f->j, 1, 1), 0);
	for (int i = 0; i < 8; i++) {
		w[i] = (struct syncer){ .j = f->j, .lock = &lock, .next = &next };
		pthread_create(&t[i], NULL, sync_worker, &w[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].rc, 0);
	}
	assert_int_equal(journal_durable_lsn(f->j), 400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_scan_rollover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruption_inside_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_below, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
