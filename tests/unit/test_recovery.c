/* Recovery on a real store: exact replay after a process crash (including a
 * non-idempotent in-flight record), full replay after a restart, corruption
 * refused with its position, torn tail cut. */
#include "unit.h"
#include "../../recovery/recovery.h"

#include <errno.h>
#include <linux/fs.h>
#include <sys/stat.h>

struct rfix {
	char *dir;
	char path[512];
	struct store st;
	struct journal *j;
	struct commit c;
};

static void rfix_open(struct rfix *f, struct recovery_report *rep, int expect_rc)
{
	char err[1024] = "";
	assert_int_equal(store_open(f->path, STORE_OPEN_LOCK | STORE_OPEN_STATE, &f->st, err,
				    sizeof(err)), 0);
	assert_int_equal(journal_open(f->st.journalfd, f->st.node_id, 1 << 20, &f->j), 0);
	int rc = recovery_run(&f->st, f->j, 0, rep, err, sizeof(err));
	if (rc != expect_rc)
		fail_msg("recovery_run returned %d (%s), expected %d", rc, err, expect_rc);
	if (rc == 0) {
		struct apply_ctx ac = { f->st.datafd, f->st.stagingfd };
		assert_int_equal(journal_start(f->j, rep->journal_last_lsn + 1, f->st.epoch), 0);
		commit_init(&f->c, f->j, &ac, f->st.state, rep->journal_last_lsn + 1, f->st.epoch);
	} else {
		/* keep the message for the caller */
		snprintf(f->path + strlen(f->path) + 1, sizeof(f->path) - strlen(f->path) - 1, "%s",
			 err);
	}
}

static void rfix_close(struct rfix *f, int committed)
{
	if (committed)
		commit_release(&f->c);
	journal_close(f->j);
	f->j = NULL;
	store_close(&f->st);
}

static int setup(void **state)
{
	struct rfix *f = calloc(1, sizeof(*f));
	char err[256];
	f->dir = tmpdir_make();
	snprintf(f->path, 256, "%s/store", f->dir);
	assert_int_equal(store_init(f->path, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct rfix *f = *state;
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static int op(struct rfix *f, struct rec r)
{
	return commit_op(&f->c, &r, -1, NULL);
}

static void test_process_crash_replays_inflight(void **state)
{
	struct rfix *f = *state;
	struct recovery_report rep;
	char buf[64];

	rfix_open(f, &rep, 0);
	assert_int_equal(rep.mode, RECOVERY_CLEAN);
	assert_int_equal(op(f, (struct rec){ .op = REC_CREATE, .path = "a", .mode = 0644 }), 0);
	assert_int_equal(op(f, (struct rec){ .op = REC_WRITE, .path = "a", .data = "one",
					     .data_len = 3 }), 0);
	/* A record logged but never applied: the daemon died in between. */
	struct rec r = { .op = REC_WRITE, .path = "a", .off = 3, .data = "two", .data_len = 3,
			 .lsn = 3, .epoch = 1, .time_ns = 5 };
	assert_int_equal(journal_append(f->j, &r), 0);
	f->st.state->inflight_lsn = 3;
	rfix_close(f, 1);

	rfix_open(f, &rep, 0);
	assert_int_equal(rep.mode, RECOVERY_PROCESS);
	assert_int_equal(rep.records, 1);
	assert_int_equal(rep.first_lsn, 3);
	assert_int_equal(slurp(f->st.datafd, "a", buf, sizeof(buf)), 6);
	assert_string_equal(buf, "onetwo");
	/* New records continue after it. */
	assert_int_equal(op(f, (struct rec){ .op = REC_UNLINK, .path = "a" }), 0);
	assert_int_equal(f->st.state->applied_lsn, 4);
	rfix_close(f, 1);
}

static void test_inflight_exchange_not_redone(void **state)
{
	struct rfix *f = *state;
	struct recovery_report rep;
	char buf[64];

	rfix_open(f, &rep, 0);
	op(f, (struct rec){ .op = REC_CREATE, .path = "x", .mode = 0644 });
	op(f, (struct rec){ .op = REC_WRITE, .path = "x", .data = "X", .data_len = 1 });
	op(f, (struct rec){ .op = REC_CREATE, .path = "y", .mode = 0644 });
	op(f, (struct rec){ .op = REC_WRITE, .path = "y", .data = "Y", .data_len = 1 });
	assert_int_equal(op(f, (struct rec){ .op = REC_RENAME, .path = "x", .path2 = "y",
					     .arg = RENAME_EXCHANGE }), 0);
	/* Died after the exchange, before marking it applied. */
	f->st.state->applied_lsn = 4;
	f->st.state->inflight_lsn = 5;
	rfix_close(f, 1);

	rfix_open(f, &rep, 0);
	assert_int_equal(rep.mode, RECOVERY_PROCESS);
	slurp(f->st.datafd, "x", buf, sizeof(buf));
	assert_string_equal(buf, "Y");
	slurp(f->st.datafd, "y", buf, sizeof(buf));
	assert_string_equal(buf, "X");
	rfix_close(f, 1);
}

static void test_restart_replays_from_checkpoint(void **state)
{
	struct rfix *f = *state;
	struct recovery_report rep;
	char buf[64];

	rfix_open(f, &rep, 0);
	op(f, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 0755 });
	op(f, (struct rec){ .op = REC_CREATE, .path = "d/f", .mode = 0600, .uid = 42 });
	op(f, (struct rec){ .op = REC_WRITE, .path = "d/f", .data = "data", .data_len = 4 });
	/* Lose the cache entirely and the exact progress with it (a new boot). */
	unlinkat(f->st.datafd, "d/f", 0);
	unlinkat(f->st.datafd, "d", AT_REMOVEDIR);
	memset(f->st.state->boot_id, 0, sizeof(f->st.state->boot_id));
	strcpy(f->st.state->boot_id, "another-boot");
	rfix_close(f, 1);

	rfix_open(f, &rep, 0);
	assert_int_equal(rep.mode, RECOVERY_REBOOT);
	assert_int_equal(rep.records, 3);
	assert_int_equal(slurp(f->st.datafd, "d/f", buf, sizeof(buf)), 4);
	struct stat st;
	assert_int_equal(fstatat(f->st.datafd, "d/f", &st, 0), 0);
	assert_int_equal(st.st_uid, 42);
	assert_int_equal(st.st_mode & 07777, 0600);
	rfix_close(f, 1);

	/* After that recovery the checkpoint moved: nothing more to replay. */
	rfix_open(f, &rep, 0);
	assert_int_equal(rep.records, 0);
	rfix_close(f, 1);
}

static void test_corruption_stops_mount(void **state)
{
	struct rfix *f = *state;
	struct recovery_report rep;

	rfix_open(f, &rep, 0);
	for (int i = 0; i < 5; i++)
		op(f, (struct rec){ .op = REC_MKDIR, .path = i ? (i == 1 ? "b" : i == 2 ? "c" : i == 3 ? "d" : "e") : "a", .mode = 0755 });
	/* Force replay from the start (as after a restart), then damage record 2. */
	f->st.state->boot_id[0] = 'x';
	struct store_checkpoint ck = { 0, 1 };
	store_checkpoint_write(&f->st, &ck);
	rfix_close(f, 1);
	char seg[600];
	snprintf(seg, sizeof(seg), "%s/journal/0000000000000001.seg", f->path);
	int fd = open(seg, O_RDWR);
	uint8_t b;
	off_t at = 64 + 128 + 20; /* inside record 2 (records are 128 bytes) */
	assert_int_equal(pread(fd, &b, 1, at), 1);
	b ^= 1;
	assert_int_equal(pwrite(fd, &b, 1, at), 1);
	close(fd);

	rfix_open(f, &rep, -EBADMSG);
	const char *err = f->path + strlen(f->path) + 1;
	assert_non_null(strstr(err, "0000000000000001.seg"));
	assert_non_null(strstr(err, "offset 192"));
	assert_non_null(strstr(err, "replfs journal truncate"));
	rfix_close(f, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_process_crash_replays_inflight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_exchange_not_redone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_replays_from_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruption_stops_mount, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
