/* The progress line (utils/progress.c): amount, percentage, rate, time left,
 * and nothing drawn when the stream is not a terminal. */
#include "unit.h"
#include "../../utils/utils.h"

static void line_with_total(void **state)
{
	char buf[256];

	(void)state;
	/* 100 MiB of 400 MiB in 2 s: 50 MiB/s, 300 MiB left = 6 s */
	progress_format("snapshot", 100ull << 20, 400ull << 20, 2000000000ull, 1, buf,
			sizeof(buf));
	assert_string_equal(buf, "snapshot: 100.0 MiB / 400.0 MiB (25%), 50.0 MiB/s, ETA 0:06");
	/* items: 3000 of 9000 records in 1.5 s = 2000/s, 3 s left */
	progress_format("replay", 3000, 9000, 1500000000ull, 0, buf, sizeof(buf));
	assert_string_equal(buf, "replay: 3000 / 9000 (33%), 2000/s, ETA 0:03");
	/* done past an estimated total caps at 100% and gives no ETA */
	progress_format("send", 12, 10, 1000000000ull, 0, buf, sizeof(buf));
	assert_string_equal(buf, "send: 12 / 10 (100%), 12/s");
}

static void line_without_total(void **state)
{
	char buf[256];

	(void)state;
	progress_format("receive", 5ull << 20, 0, 1000000000ull, 1, buf, sizeof(buf));
	assert_string_equal(buf, "receive: 5.0 MiB, 5.0 MiB/s");
	/* too early for a rate */
	progress_format("receive", 10, 0, 1000, 0, buf, sizeof(buf));
	assert_string_equal(buf, "receive: 10, 0/s");
}

static void quiet_when_not_a_terminal(void **state)
{
	struct progress p;
	char tmpl[] = "/tmp/replfs-progress-XXXXXX";
	int fd = mkstemp(tmpl);

	(void)state;
	assert_true(fd >= 0);
	unlink(tmpl);
	progress_begin(&p, "work", 100, 0, fd);
	assert_int_equal(p.fd, -1);
	for (uint64_t i = 0; i <= 100; i++)
		progress_update(&p, i);
	progress_end(&p);
	assert_int_equal(lseek(fd, 0, SEEK_END), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(line_with_total),
		cmocka_unit_test(line_without_total),
		cmocka_unit_test(quiet_when_not_a_terminal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
