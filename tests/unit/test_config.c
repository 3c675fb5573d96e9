/* The mount settings table (fs/mount_config.c) and the INI reader
 * (utils/config.c): every key from a file and from -o, errors with their
 * line, a key given twice, the command line over the file, print/reload. */
#include "unit.h"
#include "../../fs/mount_config.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/replfs-test-config-XXXXXX";

static const char *write_conf(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static const char full_conf[] =
	"# every key\n"
	"[mount]\n"
	"store = /srv/store\n"
	"mountpoint = /mnt/x\n"
	"foreground = yes\n"
	"debug = off\n"
	"read_only = true\n"
	"attr_timeout = 2.5\n"
	"entry_timeout = 0\n"
	"[journal]\n"
	"segment_mb = 8\n"
	"checkpoint_mb = 16\n"
	"checkpoint_s = 7\n"
	"keep_journal = 1\n"
	"replay = checkpoint\n"
	"[replication]\n"
	"listen = 127.0.0.1:7070\n"
	"advertise = http://10.0.0.1:17070\n"
	"slave_of =\n"
	"key = /etc/replfs/k\n"
	"sync = 2\n"
	"sync_timeout = 1500\n"
	"strict = yes\n"
	"retain_mb = 5\n"
	"[log]\n"
	"level = debug\n";

static void load_full(struct mount_config *c)
{
	char err[512];

	mount_config_defaults(c);
	assert_int_equal(mount_config_load(c, write_conf("full.conf", full_conf), err,
					   sizeof(err)), 0);
}

static void check_full(const struct mount_config *c)
{
	assert_string_equal(c->store, "/srv/store");
	assert_string_equal(c->mountpoint, "/mnt/x");
	assert_int_equal(c->o.foreground, 1);
	assert_int_equal(c->o.debug, 0);
	assert_int_equal(c->o.read_only, 1);
	assert_true(c->o.attr_timeout == 2.5);
	assert_true(c->o.entry_timeout == 0);
	assert_int_equal(c->o.segment_bytes, 8ull << 20);
	assert_int_equal(c->o.checkpoint_bytes, 16ull << 20);
	assert_int_equal(c->o.checkpoint_seconds, 7);
	assert_int_equal(c->o.keep_journal, 1);
	assert_int_equal(c->o.replay_full, 1);
	assert_string_equal(c->ro.listen_host, "127.0.0.1");
	assert_int_equal(c->ro.listen_port, 7070);
	assert_string_equal(c->ro.advertise_url, "http://10.0.0.1:17070");
	assert_string_equal(c->ro.master_url, "");
	assert_string_equal(c->key_path, "/etc/replfs/k");
	assert_int_equal(c->ro.sync_count, 2);
	assert_int_equal(c->ro.sync_timeout_ms, 1500);
	assert_int_equal(c->ro.strict, 1);
	assert_int_equal(c->ro.retain_bytes, 5ull << 20);
	assert_int_equal(c->log_level, LOG_LVL_DEBUG);
}

static void every_key_from_a_file(void **state)
{
	struct mount_config c;
	char err[512];

	(void)state;
	load_full(&c);
	check_full(&c);
	assert_int_equal(mount_config_check(&c, err, sizeof(err)), 0);
}

/* What --print-config prints reads back to the same settings. */
static void printed_config_reads_back(void **state)
{
	struct mount_config c, d;
	char err[512], *text = NULL;
	size_t len = 0;
	FILE *m;

	(void)state;
	load_full(&c);
	m = open_memstream(&text, &len);
	mount_config_print(&c, m);
	fclose(m);
	mount_config_defaults(&d);
	assert_int_equal(mount_config_load(&d, write_conf("printed.conf", text), err,
					   sizeof(err)), 0);
	check_full(&d);
	free(text);
}

static void every_key_as_an_option(void **state)
{
	static const char *const opts[][2] = {
		{ "store", "/srv/store" }, { "mountpoint", "/mnt/x" }, { "foreground", NULL },
		{ "debug", "no" }, { "ro", NULL }, { "attr_timeout", "2.5" },
		{ "entry_timeout", "0" }, { "segment_mb", "8" }, { "checkpoint_mb", "16" },
		{ "checkpoint_s", "7" }, { "keep_journal", NULL }, { "replay", "checkpoint" },
		{ "listen", "127.0.0.1:7070" }, { "advertise", "http://10.0.0.1:17070" },
		{ "slave_of", "" }, { "key", "/etc/replfs/k" }, { "sync", "2" },
		{ "sync_timeout", "1500" }, { "strict", NULL }, { "retain_mb", "5" },
		{ "log_level", "debug" },
	};
	struct mount_config c;
	char why[512];

	(void)state;
	mount_config_defaults(&c);
	for (size_t i = 0; i < sizeof(opts) / sizeof(*opts); i++)
		assert_int_equal(mount_config_set(&c, opts[i][0], opts[i][1], why, sizeof(why)), 0);
	check_full(&c);
	/* mount(8)'s own options are accepted and change nothing */
	const char *generic[] = { "rw", "_netdev", "nofail", "noauto", "defaults" };
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(mount_config_set(&c, generic[i], NULL, why, sizeof(why)), 1);
	assert_int_equal(mount_config_set(&c, "x-systemd.automount", NULL, why, sizeof(why)), 1);
	assert_int_equal(mount_config_set(&c, "comment", "x-gvfs-show", why, sizeof(why)), 1);
	check_full(&c);
}

static void command_line_over_file(void **state)
{
	struct mount_config c;
	char err[512];

	(void)state;
	load_full(&c);
	assert_int_equal(mount_config_set(&c, "sync", "off", err, sizeof(err)), 0);
	assert_int_equal(mount_config_set(&c, "strict", "no", err, sizeof(err)), 0);
	assert_int_equal(mount_config_set(&c, "checkpoint_s", "99", err, sizeof(err)), 0);
	assert_int_equal(mount_config_set(&c, "log_level", "warn", err, sizeof(err)), 0);
	assert_int_equal(c.ro.sync_count, 0);
	assert_int_equal(c.ro.strict, 0);
	assert_int_equal(c.o.checkpoint_seconds, 99);
	assert_int_equal(c.log_level, LOG_LVL_WARN);
	/* sync_timeout without sync is refused as a combination */
	assert_int_equal(mount_config_check(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "go with --sync"));
}

static void expect_file_error(const char *text, const char *want)
{
	struct mount_config c;
	char err[512];

	mount_config_defaults(&c);
	assert_int_equal(mount_config_load(&c, write_conf("bad.conf", text), err, sizeof(err)),
			 -EINVAL);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
}

static void bad_files(void **state)
{
	(void)state;
	expect_file_error("[mount]\nstore = /s\n\n[replication]\nbogus = 1\n",
			  "bad.conf:5: unknown key 'bogus' in [replication]");
	expect_file_error("# c\n[nosuch]\nx = 1\n", "bad.conf:2: unknown section [nosuch]");
	expect_file_error("[mount]\nstore = /s\n[nosuch]\n", "bad.conf:3: unknown section [nosuch]");
	expect_file_error("listen = :1\n", "bad.conf:1: 'listen' is outside any section");
	expect_file_error("[journal]\nsegment_mb = 8\nsegment_mb = 9\n",
			  "bad.conf:3: 'segment_mb' is given twice in [journal]");
	expect_file_error("[mount]\nthis line has no equals sign\n", "bad.conf:2: syntax error");
	expect_file_error("[journal]\nsegment_mb = 0\n", "bad.conf:2: bad value for segment_mb: '0'");
	expect_file_error("[journal]\nsegment_mb = 4097\n", "bad value for segment_mb");
	expect_file_error("[journal]\ncheckpoint_s = -1\n", "bad value for checkpoint_s");
	expect_file_error("[journal]\ncheckpoint_mb = 12abc\n", "bad value for checkpoint_mb");
	expect_file_error("[journal]\nkeep_journal = maybe\n",
			  "bad value for keep_journal: 'maybe' (yes or no)");
	expect_file_error("[journal]\nreplay = always\n", "bad value for replay");
	expect_file_error("[mount]\nattr_timeout = fast\n", "bad value for attr_timeout");
	expect_file_error("[mount]\nentry_timeout = -1\n", "bad value for entry_timeout");
	expect_file_error("[replication]\nlisten = nowhere\n", "bad value for listen");
	expect_file_error("[replication]\nlisten = :99999\n", "bad value for listen");
	expect_file_error("[replication]\nslave_of = ftp://x:1\n", "bad value for slave_of");
	expect_file_error("[replication]\nadvertise = http://\n", "bad value for advertise");
	expect_file_error("[replication]\nsync = 65\n", "bad value for sync");
	expect_file_error("[replication]\nsync_timeout = 0\n", "bad value for sync_timeout");
	expect_file_error("[replication]\nretain_mb = lots\n", "bad value for retain_mb");
	expect_file_error("[replication]\nstrict = 2\n", "bad value for strict");
	expect_file_error("[log]\nlevel = loud\n", "bad value for level");
}

static void bad_options(void **state)
{
	struct mount_config c;
	char why[512];

	(void)state;
	mount_config_defaults(&c);
	assert_int_equal(mount_config_set(&c, "no_such_option", "1", why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "unknown mount option: no_such_option=1");
	assert_int_equal(mount_config_set(&c, "segment_mb", NULL, why, sizeof(why)), -EINVAL);
	assert_int_equal(mount_config_set(&c, "rw", "1", why, sizeof(why)), -EINVAL);
	assert_int_equal(mount_config_set(&c, "sync", NULL, why, sizeof(why)), 0);
	assert_int_equal(c.ro.sync_count, 1);
	/* missing file */
	char err[512];
	assert_int_equal(mount_config_load(&c, "/nonexistent/replfs.conf", err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "cannot read /nonexistent/replfs.conf"));
}

static void combinations(void **state)
{
	struct mount_config c;
	char why[512];

	(void)state;
	mount_config_defaults(&c);
	assert_int_equal(mount_config_check(&c, why, sizeof(why)), 0);
	mount_config_set(&c, "slave_of", "http://m:7070", why, sizeof(why));
	assert_int_equal(mount_config_check(&c, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "cluster key"));
	mount_config_set(&c, "key", "/k", why, sizeof(why));
	assert_int_equal(mount_config_check(&c, why, sizeof(why)), 0);
	mount_config_set(&c, "sync", "1", why, sizeof(why));
	assert_int_equal(mount_config_check(&c, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "master's option"));
	mount_config_defaults(&c);
	mount_config_set(&c, "key", "/k", why, sizeof(why));
	mount_config_set(&c, "advertise", "http://h:1", why, sizeof(why));
	assert_int_equal(mount_config_check(&c, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "--listen"));
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_key_from_a_file),
		cmocka_unit_test(printed_config_reads_back),
		cmocka_unit_test(every_key_as_an_option),
		cmocka_unit_test(command_line_over_file),
		cmocka_unit_test(bad_files),
		cmocka_unit_test(bad_options),
		cmocka_unit_test(combinations),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
