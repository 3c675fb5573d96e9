/* `replfs mount`: check the inputs, open the store, recover, mount, detach,
 * serve, and stop cleanly (umount, fusermount3 -u, SIGTERM/SIGINT/SIGHUP).
 *
 * Order matters: everything that can fail with a useful message (bad option,
 * missing store, store in use, busy mountpoint, no /dev/fuse, corrupt
 * journal) is checked and reported on the terminal before the daemon detaches;
 * the parent exits 0 only once the mount is usable.
 */
#include "fuse_priv.h"
#include "mount_config.h"
#include "../recovery/recovery.h"
#include "../replicator/replicator.h"
#include "../utils/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static const char mount_usage[] =
	"usage: replfs mount STORE MOUNTPOINT [OPTIONS]\n"
	"       replfs mount --config FILE [OPTIONS]   (STORE and MOUNTPOINT from the file)\n"
	"  -f                  stay in the foreground, log to stderr (for systemd: Type=notify)\n"
	"  -d                  debug logging (implies -f)\n"
	"  -o OPT[,OPT...]     settings as key[=value]; every key of the configuration file\n"
	"  --config FILE       read settings from FILE (default: STORE/replfs.conf if it exists);\n"
	"                      the command line overrides the file\n"
	"  --print-config      print the settings in effect, as a configuration file, and exit\n"
	"replication:\n"
	"  --listen [HOST]:PORT   serve slaves (and /metrics) on this address\n"
	"  --slave-of URL         follow the master at URL (http://HOST:PORT); read-only mount\n"
	"  --advertise URL        the URL other nodes reach this one at, when it is not the\n"
	"                         --listen address (NAT, a proxy, a wildcard bind)\n"
	"  --key FILE             the cluster key (replfs keygen); needed by both\n"
	"  --sync[=N]             fsync returns once N slaves (default 1) hold the records\n"
	"  --sync-timeout MS      degrade to async when no slave answers for MS (default 10000)\n"
	"  --strict               with --sync: every operation waits, not only fsync\n"
	"-o settings (replfs.conf(5) has them all, with their sections):\n"
	"  ro                   read-only mount (writes get EROFS)\n"
	"  retain_mb=N          journal kept for a lagging slave (default 1024); beyond, a snapshot\n"
	"  checkpoint_mb=N      checkpoint after N MiB of journal (default 64)\n"
	"  checkpoint_s=N       checkpoint at least every N seconds (default 30)\n"
	"  segment_mb=N         journal segment size (default 64)\n"
	"  keep_journal         never delete journal segments\n"
	"  replay=checkpoint    replay everything after the checkpoint, as after a restart\n"
	"  attr_timeout=S,entry_timeout=S   kernel cache lifetimes (default 1.0)\n"
	"  log_level=L          error, warn, info (default) or debug\n"
	"  listen=,advertise=,slave_of=,key=,sync=N|off,sync_timeout=MS,strict  as above\n"
	"  rw, _netdev, nofail, noauto, x-systemd.* and other mount(8) options are accepted\n";

/* Settings from the command line, kept until the configuration file has been
 * read: the command line wins. */
struct cli_setting {
	char *name, *value;
};

#define MAX_CLI_SETTINGS 128

static int cli_add(struct cli_setting *cs, int *n, const char *name, const char *value)
{
	if (*n == MAX_CLI_SETTINGS) {
		log_error("mount: too many options");
		return -E2BIG;
	}
	cs[*n].name = strdup(name);
	cs[*n].value = value ? strdup(value) : NULL;
	(*n)++;
	return 0;
}

/* -o a,b=c: libfuse-style, a backslash escapes a comma. */
static int cli_add_list(struct cli_setting *cs, int *n, const char *list, char *config)
{
	char buf[PATH_MAX * 2];
	size_t o = 0;

	for (const char *p = list;; p++) {
		if (*p == '\\' && p[1]) {
			p++;
		} else if (*p == ',' || !*p) {
			buf[o] = '\0';
			char *v = strchr(buf, '=');
			if (v)
				*v++ = '\0';
			if (!strcmp(buf, "config") && v) {
				snprintf(config, PATH_MAX, "%s", v);
			} else if (*buf && cli_add(cs, n, buf, v) < 0) {
				return -E2BIG;
			}
			o = 0;
			if (!*p)
				return 0;
			continue;
		}
		if (o + 1 >= sizeof(buf)) {
			log_error("mount: option too long in -o %.40s...", list);
			return -E2BIG;
		}
		buf[o++] = *p;
	}
}

static void cli_free(struct cli_setting *cs, int n)
{
	for (int i = 0; i < n; i++) {
		free(cs[i].name);
		free(cs[i].value);
	}
}

/* Fills c from the configuration file and the command line. Returns 0 to
 * mount, 1 when done (--help, --print-config) or 2 on a bad argument
 * (reported). */
static int mount_settings(int argc, char **argv, struct mount_config *c)
{
	static const struct option longopts[] = { { "help", no_argument, NULL, 'h' },
						  { "config", required_argument, NULL, 'C' },
						  { "print-config", no_argument, NULL, 'P' },
						  { "listen", required_argument, NULL, 'L' },
						  { "slave-of", required_argument, NULL, 'S' },
						  { "advertise", required_argument, NULL, 'A' },
						  { "key", required_argument, NULL, 'K' },
						  { "sync", optional_argument, NULL, 'Y' },
						  { "sync-timeout", required_argument, NULL, 'T' },
						  { "strict", no_argument, NULL, 'X' },
						  { NULL, 0, NULL, 0 } };
	static const char *const long_names[] = { ['f'] = "foreground", ['d'] = "debug",
						  ['L'] = "listen", ['S'] = "slave_of",
						  ['A'] = "advertise", ['K'] = "key", ['Y'] = "sync",
						  ['T'] = "sync_timeout", ['X'] = "strict" };
	struct cli_setting cs[MAX_CLI_SETTINGS];
	char config[PATH_MAX] = "", why[1024];
	int n = 0, opt, print = 0, rc = 2;

	mount_config_defaults(c);
	optind = 1;
	opterr = 0; /* one line of our own instead of getopt's */
	while ((opt = getopt_long(argc, argv, "fdo:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'o':
			if (cli_add_list(cs, &n, optarg, config) < 0)
				goto out;
			break;
		case 'C':
			snprintf(config, sizeof(config), "%s", optarg);
			break;
		case 'P':
			print = 1;
			break;
		case 'h':
			fputs(mount_usage, stdout);
			rc = 1;
			goto out;
		case 'f': case 'd': case 'L': case 'S': case 'A': case 'K': case 'Y': case 'T':
		case 'X':
			if (cli_add(cs, &n, long_names[opt], optarg) < 0)
				goto out;
			break;
		default:
			if (optopt == 'o')
				log_error("mount: -o needs a value (see replfs mount --help)");
			else if (optopt && optopt != '?')
				log_error("mount: unknown option -%c (see replfs mount --help)", optopt);
			else
				log_error("mount: unknown option %s (see replfs mount --help)",
					  argv[optind - 1]);
			goto out;
		}
	}
	if (argc - optind != 2 && argc - optind != 0) {
		log_error("mount needs STORE and MOUNTPOINT (see replfs mount --help)");
		goto out;
	}
	if (argc - optind == 0 && !config[0]) {
		log_error("mount needs STORE and MOUNTPOINT, or --config FILE that names them");
		goto out;
	}
	if (!config[0]) {
		/* The store's own file, when it has one. */
		snprintf(config, sizeof(config), "%s/replfs.conf", argv[optind]);
		if (access(config, F_OK) < 0)
			config[0] = '\0';
	}
	if (config[0] && mount_config_load(c, config, why, sizeof(why)) < 0) {
		log_error("%s", why);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (mount_config_set(c, cs[i].name, cs[i].value, why, sizeof(why)) < 0) {
			log_error("%s", why);
			goto out;
		}
	}
	if (argc - optind == 2) {
		snprintf(c->store, sizeof(c->store), "%s", argv[optind]);
		snprintf(c->mountpoint, sizeof(c->mountpoint), "%s", argv[optind + 1]);
	}
	if (c->o.debug) {
		c->o.foreground = 1;
		c->log_level = LOG_LVL_DEBUG;
	}
	if (!c->store[0] || !c->mountpoint[0]) {
		log_error("%s names no %s (add `%s = ...` to [mount])", config,
			  c->store[0] ? "mountpoint" : "store", c->store[0] ? "mountpoint" : "store");
		goto out;
	}
	if (mount_config_check(c, why, sizeof(why)) < 0) {
		log_error("%s", why);
		goto out;
	}
	if (print) {
		mount_config_print(c, stdout);
		rc = 1;
		goto out;
	}
	rc = 0;
out:
	cli_free(cs, n);
	return rc;
}

static int check_mountpoint(const char *mnt)
{
	char parent[PATH_MAX + 4];
	struct stat st, pst;

	/* The dead FUSE mount a crashed daemon leaves behind: cleared, so that a
	 * restart (systemd's Restart=on-failure, a script) mounts again. */
	if (stat(mnt, &st) < 0 && errno == ENOTCONN && umount2(mnt, MNT_DETACH) == 0)
		log_warn("cleared the dead mount a stopped daemon left on %s", mnt);
	if (stat(mnt, &st) < 0) {
		if (errno == ENOTCONN)
			log_error("mountpoint %s is a dead FUSE mount; run `fusermount3 -u %s` first",
				  mnt, mnt);
		else
			log_error("mountpoint %s: %s", mnt, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("mountpoint %s is not a directory", mnt);
		return -ENOTDIR;
	}
	snprintf(parent, sizeof(parent), "%s/..", mnt);
	if (stat(parent, &pst) == 0 && (pst.st_dev != st.st_dev || pst.st_ino == st.st_ino)) {
		log_error("mountpoint %s is busy: something is already mounted there", mnt);
		return -EBUSY;
	}
	return 0;
}

/* libfuse splits -o values at commas; escape them in a path. */
static void opt_escape(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in && o + 2 < size; in++) {
		if (*in == ',' || *in == '\\')
			out[o++] = '\\';
		out[o++] = *in;
	}
	out[o] = '\0';
}

/* Forks; the parent waits until the child reports the mount usable. Returns
 * in the child only. */
static int detach(int *ready_fd)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		char c = 1;
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			c = 1;
		_exit(c == 0 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	if (chdir("/") < 0)
		return -errno;
	int nul = open("/dev/null", O_RDWR);
	if (nul >= 0) {
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		if (nul > 2)
			close(nul);
	}
	*ready_fd = p[1];
	return 0;
}

/* commit->on_commit: the checkpointer counts bytes, the replicator wakes the
 * slaves' long polls. Either may not be there yet. */
struct commit_hooks {
	struct checkpointer *_Atomic cp;
	struct replicator *_Atomic repl;
};

static void on_commit_hooks(void *arg, uint64_t lsn, uint64_t bytes)
{
	struct commit_hooks *h = arg;
	struct checkpointer *cp = atomic_load(&h->cp);
	struct replicator *r = atomic_load(&h->repl);

	if (cp)
		checkpointer_note(cp, lsn, bytes);
	if (r)
		repl_note_commit(r, lsn, bytes);
}

static void invalidate_one(struct fs_ctx *fc, const char *rel, int parent_too)
{
	char p[PATH_MAX + 2], parent[PATH_MAX + 1];
	struct stat st;

	snprintf(p, sizeof(p), "/%s", rel);
	fuse_invalidate_path(fc->fuse, p);
	/* Other names of a hard-linked file: only once any has been seen, so the
	 * common case costs no extra stat per applied record. */
	if (links_active() && fstatat(fc->datafd, *rel ? rel : ".", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !S_ISDIR(st.st_mode) && st.st_nlink > 1)
		links_changed(fc->fuse, st.st_ino, p);
	if (parent_too && *rel) {
		path_split(rel, parent, sizeof(parent));
		snprintf(p, sizeof(p), "/%s", parent);
		fuse_invalidate_path(fc->fuse, p);
	}
}

/* A slave applied r: the kernel must not go on showing what it cached of
 * the names and objects r changed (names themselves are never cached on a
 * slave: entry_timeout is 0). */
static void slave_invalidate(void *arg, const struct rec *r)
{
	struct fs_ctx *fc = arg;
	int names = r->op == REC_CREATE || r->op == REC_MKNOD || r->op == REC_MKDIR ||
		    r->op == REC_SYMLINK || r->op == REC_LINK || r->op == REC_UNLINK ||
		    r->op == REC_RMDIR || r->op == REC_RENAME;

	invalidate_one(fc, r->path, names);
	if (r->path2 && (r->op == REC_RENAME || r->op == REC_LINK))
		invalidate_one(fc, r->path2, 1);
}

/* A promote made this node the master (writable), or a fence or a
 * switchover made it read-only. */
static void role_changed(void *arg, int writable)
{
	struct fs_ctx *fc = arg;

	atomic_store(&fc->guard_reads, !writable);
	atomic_store(&fc->readonly, !writable);
}

#define OLD_DATAFDS 64
static int old_datafds[OLD_DATAFDS], n_old_datafds;

static void slave_data_swapped(void *arg, int new_datafd, int old_datafd)
{
	struct fs_ctx *fc = arg;

	atomic_store(&fc->datafd, new_datafd);
	/* FUSE operations may still be using the old tree's fd: kept open until
	 * unmount (a bounded number; beyond it, the oldest is closed). */
	if (old_datafd >= 0) {
		if (n_old_datafds == OLD_DATAFDS) {
			close(old_datafds[0]);
			memmove(old_datafds, old_datafds + 1, sizeof(int) * (OLD_DATAFDS - 1));
			n_old_datafds--;
		}
		old_datafds[n_old_datafds++] = old_datafd;
	}
	fuse_invalidate_path(fc->fuse, "/");
}

int fs_mount_main(int argc, char **argv)
{
	static struct mount_config cfg; /* big (paths); one mount per process */
	struct fs_options *op = &cfg.o;
	struct commit_hooks hooks = { 0 };
	struct replicator *repl = NULL;
	pthread_rwlock_t apply_lock;
	int tty_fd = -1, is_slave;
	struct store st;
	struct journal *j = NULL;
	struct commit c;
	struct checkpointer *cp = NULL;
	struct recovery_report rep;
	struct fs_ctx fc;
	struct fuse *f = NULL;
	struct fuse_loop_config *lc = NULL;
	char err[1024] = "", fsopt[PATH_MAX * 2 + 256], esc[PATH_MAX * 2];
	const char *store_path, *mnt;
	char *mnt_abs = NULL;
	int rc, ready_fd = -1, commit_ready = 0;

	rc = mount_settings(argc, argv, &cfg);
	if (rc)
		return rc == 1 ? 0 : 2;
	store_path = cfg.store;
	mnt = cfg.mountpoint;
	log_init("replfs", 0, cfg.log_level);
	is_slave = cfg.ro.master_url[0] != '\0';
	if (cfg.key_path[0]) {
		char kerr[512];
		if (repl_key_load(cfg.key_path, cfg.ro.key, kerr, sizeof(kerr)) < 0) {
			log_error("%s", kerr);
			return 2;
		}
		cfg.ro.have_key = 1;
	}
	/* Names and sizes change under a slave's readers: the kernel asks each
	 * time (under the apply lock) rather than trusting what it cached, or a
	 * file renamed over another would show the new data at the old size
	 * until the invalidation that follows the apply arrives. */
	if (is_slave)
		op->entry_timeout = op->attr_timeout = 0;

	if (access("/dev/fuse", R_OK | W_OK) < 0) {
		log_error("/dev/fuse is not available (%s): load the fuse module or run where FUSE "
			  "is allowed", strerror(errno));
		return 1;
	}
	if (check_mountpoint(mnt) < 0)
		return 1;
	mnt_abs = realpath(mnt, NULL);
	if ((rc = store_open(store_path, STORE_OPEN_LOCK | STORE_OPEN_STATE, &st, err,
			     sizeof(err))) < 0) {
		log_error("%s", err);
		free(mnt_abs);
		return 1;
	}
	if ((rc = journal_open(st.journalfd, st.node_id, op->segment_bytes, &j)) < 0) {
		log_error("cannot open the journal of %s: %s", st.path, strerror(-rc));
		goto fail;
	}
	/* A snapshot install cut short is finished (or undone) before replay: it
	 * decides which tree and journal recovery works on. */
	if ((rc = snapshot_install_recover(&st, j)) < 0) {
		log_error("cannot finish the interrupted snapshot install in %s: %s", st.path,
			  strerror(-rc));
		goto fail;
	}
	snapshot_cleanup_stale(&st);
	sd_notify(0, "STATUS=recovering the journal");
	if ((rc = recovery_run(&st, j, op->replay_full ? RECOVERY_FULL : 0, &rep, err,
			       sizeof(err))) < 0) {
		log_error("%s", err);
		goto fail;
	}
	recovery_report_print(&rep, st.path);
	if ((rc = journal_start(j, rep.journal_last_lsn + 1, st.epoch)) < 0) {
		log_error("cannot open the journal for writing: %s", strerror(-rc));
		goto fail;
	}
	struct apply_ctx ac = { .datafd = st.datafd, .stagingfd = st.stagingfd };
	commit_init(&c, j, &ac, st.state, rep.journal_last_lsn + 1, st.epoch);
	commit_ready = 1;

	fc = (struct fs_ctx){ .st = &st, .journal = j, .commit = &c, .datafd = st.datafd,
			      .opts = op, .readonly = 1, .guard_reads = is_slave };
	/* Any replicated node may become a slave (switchover) or a master
	 * (promote): the apply lock exists from the start, reads take it while
	 * the node is a slave. Writes wait for the replicator to say the role. */
	if (is_slave || cfg.ro.listen_host[0]) {
		pthread_rwlockattr_t ra;
		pthread_rwlockattr_init(&ra);
		/* The apply step must not starve behind a stream of readers. */
		pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&apply_lock, &ra);
		pthread_rwlockattr_destroy(&ra);
		fc.apply_lock = &apply_lock;
	}
	opt_escape(st.path, esc, sizeof(esc));
	snprintf(fsopt, sizeof(fsopt),
		 "allow_other,default_permissions,fsname=%s,subtype=replfs%s",
		 esc, cfg.o.read_only ? ",ro" : "");
	char *fargv[] = { "replfs", "-o", fsopt, op->debug ? "-d" : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(op->debug ? 4 : 3, fargv);
	f = fuse_new(&args, &fs_operations, sizeof(fs_operations), &fc);
	fuse_opt_free_args(&args);
	if (!f) {
		log_error("cannot set up FUSE");
		rc = -EIO;
		goto fail;
	}
	fc.fuse = f;
	fc.mountpoint = mnt_abs ? mnt_abs : mnt;
	held_clean_stale(st.stagingfd); /* open files a crash left held */
	if (fuse_mount(f, mnt_abs ? mnt_abs : mnt) != 0) {
		log_error("cannot mount on %s (see the message above)", mnt);
		rc = -EIO;
		goto fail;
	}
	if (!op->foreground) {
		tty_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
		if ((rc = detach(&ready_fd)) < 0)
			goto fail_unmount;
		log_init("replfs", 1, cfg.log_level);
		log_mirror_fd(tty_fd);
	}
	store_pid_write(&st, getpid(), mnt_abs ? mnt_abs : mnt);
	c.on_commit = on_commit_hooks;
	c.on_commit_arg = &hooks;
	/* Threads start here, after the fork of detach(). */
	struct repl_node node = { .st = &st, .journal = j, .commit = &c,
				  .mountpoint = mnt_abs ? mnt_abs : mnt,
				  .invalidate = slave_invalidate, .data_swapped = slave_data_swapped,
				  .apply_record = held_apply,
				  .cb_arg = &fc, .apply_lock = fc.apply_lock,
				  .role_changed = role_changed };
	if ((rc = repl_start(&cfg.ro, &node, &repl, err, sizeof(err))) < 0) {
		log_error("%s", err);
		goto fail_unmount;
	}
	fc.repl = repl;
	is_slave = repl_is_slave(repl);
	atomic_store(&fc.guard_reads, is_slave);
	atomic_store(&fc.readonly, repl_starts_readonly(repl));
	atomic_store(&hooks.repl, repl);
	struct checkpoint_opts co = { .every_bytes = op->checkpoint_bytes,
				      .every_seconds = op->checkpoint_seconds,
				      .keep_journal = op->keep_journal };
	if (cfg.ro.listen_host[0]) {
		co.slave_needs = repl_slave_needs;
		co.slave_needs_arg = repl;
	}
	if ((rc = checkpointer_start(&st, j, &c, &co, &cp)) < 0) {
		log_error("cannot start the checkpoint thread: %s", strerror(-rc));
		goto fail_unmount;
	}
	atomic_store(&hooks.cp, cp);
	if (fuse_set_signal_handlers(fuse_get_session(f)) != 0) {
		rc = -EIO;
		goto fail_unmount;
	}
	if (is_slave)
		log_info("mounted %s on %s read-only as a slave of %s (LSN %" PRIu64
			 ", epoch %" PRIu64 ")",
			 st.path, mnt_abs ? mnt_abs : mnt, cfg.ro.master_url, rep.journal_last_lsn,
			 st.epoch);
	else
		log_info("mounted %s on %s (LSN %" PRIu64 ", epoch %" PRIu64 ")%s%s", st.path,
			 mnt_abs ? mnt_abs : mnt, rep.journal_last_lsn, st.epoch,
			 cfg.ro.listen_host[0] ? ", serving slaves" : "",
			 cfg.ro.sync_count ? " in sync mode" : "");
	log_mirror_fd(-1);
	if (tty_fd >= 0)
		close(tty_fd);
	tty_fd = -1;
	if (ready_fd >= 0) {
		char ok = 0;
		if (write(ready_fd, &ok, 1) != 1)
			log_warn("lost the parent process");
		close(ready_fd);
		ready_fd = -1;
	}
	/* systemd (Type=notify): started only now that the mount answers. */
	sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=%s %s on %s", (int)getpid(),
		   is_slave ? "slave of" : "master", is_slave ? cfg.ro.master_url : st.path,
		   mnt_abs ? mnt_abs : mnt);

	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, 1);
	fuse_loop_cfg_set_max_threads(lc, 16);
	fuse_loop_cfg_set_idle_threads(lc, 8);
	rc = fuse_loop_mt(f, lc);
	fuse_loop_cfg_destroy(lc);
	links_stop();
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: final checkpoint");
	fuse_remove_signal_handlers(fuse_get_session(f));
	fuse_unmount(f);

	/* Clean stop: everything applied is on disk and marked as such. The
	 * follower stops first (no more commits); the server answers until the
	 * last checkpoint has asked what the slaves still need. */
	repl_stop_following(repl);
	checkpointer_stop(cp);
	atomic_store(&hooks.cp, NULL);
	int ck = checkpoint_now(&st, j, &c, &co);
	atomic_store(&hooks.repl, NULL);
	repl_stop(repl);
	if (ck == 0)
		st.state->clean = 1;
	else
		log_error("final checkpoint failed (%s); the next mount will replay", strerror(-ck));
	log_info("unmounted %s (LSN %" PRIu64 ")", mnt_abs ? mnt_abs : mnt,
		 journal_appended_lsn(j));
	fuse_destroy(f);
	links_free();
	held_free();
	store_pid_remove(&st);
	commit_release(&c);
	for (int i = 0; i < n_old_datafds; i++)
		close(old_datafds[i]);
	if (fc.apply_lock)
		pthread_rwlock_destroy(&apply_lock);
	journal_close(j);
	store_close(&st);
	free(mnt_abs);
	return rc == 0 && ck == 0 ? 0 : 1;

fail_unmount:
	atomic_store(&hooks.repl, NULL);
	atomic_store(&hooks.cp, NULL);
	repl_stop(repl);
	checkpointer_stop(cp);
	fuse_unmount(f);
	if (tty_fd >= 0) {
		log_mirror_fd(-1);
		close(tty_fd);
	}
fail:
	if (f) {
		links_stop();
		fuse_destroy(f);
	}
	if (commit_ready)
		commit_release(&c);
	journal_close(j);
	store_close(&st);
	free(mnt_abs);
	if (ready_fd >= 0)
		close(ready_fd); /* the parent sees EOF and exits 1 */
	return 1;
}
