/* Unit tests of the REPLFS_FAULT rules (utils/fault.c): which arrival fires,
 * which error it injects, and that bad rules and other names never fire.
 * Crash actions are not exercised here (they SIGKILL the process); the crash
 * sweep (tests/crash/test_crash_sweep.sh) does that. */
#include "unit.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <time.h>

static void set_rules(const char *spec)
{
	if (spec)
		setenv("REPLFS_FAULT", spec, 1);
	else
		unsetenv("REPLFS_FAULT");
	fault_reload();
}

static void test_off_without_env(void **state)
{
	(void)state;
	set_rules(NULL);
	assert_int_equal(fault_enabled, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(fault_check("journal:fsync"), 0);
}

static void test_nth_arrival_only(void **state)
{
	(void)state;
	set_rules("journal:fsync:3=eio");
	assert_int_equal(fault_enabled, 1);
	assert_int_equal(fault_check("journal:fsync"), 0);
	assert_int_equal(fault_check("journal:write"), 0); /* another point: not counted */
	assert_int_equal(fault_check("journal:fsync"), 0);
	assert_int_equal(fault_check("journal:fsync"), -EIO);
	assert_int_equal(fault_check("journal:fsync"), 0);
	set_rules(NULL);
}

static void test_nth_and_later(void **state)
{
	(void)state;
	set_rules("journal:write:2+=enospc");
	assert_int_equal(fault_check("journal:write"), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(fault_check("journal:write"), -ENOSPC);
	set_rules(NULL);
}

static void test_every_arrival_and_lists(void **state)
{
	(void)state;
	set_rules("repl:send=drop,apply:write:1=eio");
	assert_int_equal(fault_check("repl:send"), -ECONNABORTED);
	assert_int_equal(fault_check("repl:send"), -ECONNABORTED);
	assert_int_equal(fault_check("apply:write"), -EIO);
	assert_int_equal(fault_check("apply:write"), 0);
	assert_int_equal(fault_check("repl"), 0);       /* prefixes do not match */
	assert_int_equal(fault_check("repl:send:x"), 0);
	set_rules(NULL);
}

static void test_bad_rules_ignored(void **state)
{
	(void)state;
	/* unknown action, N of 0, empty name: all ignored; the good rule stays */
	set_rules("a:1=explode,b:0=eio,=eio,,c:2=eio");
	assert_int_equal(fault_check("a"), 0);
	assert_int_equal(fault_check("b"), 0);
	assert_int_equal(fault_check("c"), 0);
	assert_int_equal(fault_check("c"), -EIO);
	set_rules("only:bad=nope");
	assert_int_equal(fault_enabled, 0);
	set_rules(NULL);
}

static void test_names_with_digits(void **state)
{
	(void)state;
	/* A last field that is not all digits is part of the name. */
	set_rules("promote:epoch2=eio,x:12a=eio");
	assert_int_equal(fault_check("promote:epoch2"), -EIO);
	assert_int_equal(fault_check("x:12a"), -EIO);
	set_rules(NULL);
}

static void test_stall(void **state)
{
	struct timespec t0, t1;

	(void)state;
	/* bad stalls are ignored: no seconds, zero, not digits, too long */
	set_rules("a=stall,b=stall0,c=stallx,d=stall12345,e=stall1x");
	assert_int_equal(fault_enabled, 0);
	set_rules("s:2=stall1");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(fault_check("s"), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 1 || (t1.tv_sec - t0.tv_sec == 1 && t1.tv_nsec < t0.tv_nsec));
	assert_int_equal(fault_check("s"), 0); /* sleeps, then goes on: no error */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs >= 0.99 && secs < 5);
	set_rules(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off_without_env),
		cmocka_unit_test(test_nth_arrival_only),
		cmocka_unit_test(test_nth_and_later),
		cmocka_unit_test(test_every_arrival_and_lists),
		cmocka_unit_test(test_bad_rules_ignored),
		cmocka_unit_test(test_names_with_digits),
		cmocka_unit_test(test_stall),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
