/* The replfs command: one binary, one subcommand per job. */
#include "fs.h"
#include "../recovery/recovery.h"
#include "../replicator/replicator.h"
#include "../utils/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef REPLFS_VERSION
#define REPLFS_VERSION "unknown"
#endif

static const char usage[] =
	"usage: replfs COMMAND [ARGS]\n"
	"  init STORE                       create a node's store\n"
	"  keygen                           print a new cluster key (save it, chmod 600)\n"
	"  mount STORE MOUNTPOINT [-f] [-d] [-o OPTIONS]   mount it (see mount --help)\n"
	"  mount --config FILE [OPTIONS]    mount what the configuration file names\n"
	"  status MOUNTPOINT [--json]       role, epoch, journal position, slaves' lag, sync mode\n"
	"  promote MOUNTPOINT [--force]     failover: this slave becomes the master\n"
	"  switchover MOUNTPOINT URL        planned handover from this master to the slave at URL\n"
	"  verify MOUNTPOINT [--repair]     compare master and slaves at one LSN; fix the slaves\n"
	"  journal dump STORE               print the journal, one record per line\n"
	"  journal replay STORE DIR         apply the whole journal to an empty DIR\n"
	"  journal truncate STORE --at SEGMENT:OFFSET   cut a corrupt journal deliberately\n"
	"  --version, --help\n"
	"Each command takes --help. Unmount with `umount MOUNTPOINT` or `fusermount3 -u MOUNTPOINT`.\n"
	"Also: mount -t fuse.replfs STORE MOUNTPOINT -o OPTIONS, or an /etc/fstab line.\n";

static int cmd_init(int argc, char **argv)
{
	char err[512];

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("usage: replfs init STORE\n  creates STORE (a new or empty directory) with "
		     "data/, journal/ and a fresh node identity");
		return 0;
	}
	if (argc != 2 || argv[1][0] == '-') {
		log_error(argc == 2 ? "unknown option for init: %s" : "init needs exactly one STORE",
			  argc == 2 ? argv[1] : "");
		return 2;
	}
	if (store_init(argv[1], err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	printf("initialised replfs store %s\n", argv[1]);
	return 0;
}

/* ---- journal subcommands ------------------------------------------------ */

static int open_offline(const char *path, int lock, struct store *st, struct journal **j)
{
	char err[512];
	int rc;

	/* The lock keeps a running daemon and a tool that writes apart; reading
	 * (dump) is safe while mounted: a record being written reads as a torn tail. */
	if ((rc = store_open(path, lock ? STORE_OPEN_LOCK : 0, st, err, sizeof(err))) < 0) {
		log_error("%s", err);
		return rc;
	}
	if ((rc = journal_open(st->journalfd, st->node_id, 0, j)) < 0) {
		log_error("cannot open the journal of %s: %s", path, strerror(-rc));
		store_close(st);
	}
	return rc;
}

static int dump_one(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	char line[PATH_MAX * 2 + 256];

	(void)arg;
	rec_format(r, line, sizeof(line));
	printf("%s:%-10" PRIu64 " %s\n", pos->segment, pos->offset, line);
	return ferror(stdout) ? -EIO : 0;
}

static void scan_error(const char *store, const struct journal_scan *s, int rc)
{
	if (rc == -EBADMSG)
		log_error("journal corrupt in %s/journal/%s at offset %" PRIu64 " (%s)", store,
			  s->bad_at.segment, s->bad_at.offset, s->why);
	else
		log_error("cannot read the journal: %s", strerror(-rc));
}

struct replay_into {
	struct apply_ctx ac;
	uint64_t expect;
	uint64_t failed;
};

static int replay_into_one(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	struct replay_into *x = arg;
	int rc;

	if (r->lsn != x->expect) {
		log_error("journal has no LSN %" PRIu64 " (next kept is %" PRIu64
			  "): it cannot be replayed from scratch", x->expect, r->lsn);
		return -ERANGE;
	}
	x->expect++;
	rc = apply_record(&x->ac, r, -1, NULL);
	if (rc < 0 && !apply_error_is_deterministic(rc)) {
		log_error("LSN %" PRIu64 " at %s:%" PRIu64 " could not be applied: %s", r->lsn,
			  pos->segment, pos->offset, strerror(-rc));
		return rc;
	}
	if (rc < 0)
		x->failed++;
	return 0;
}

static int cmd_journal(int argc, char **argv)
{
	struct journal_scan scan;
	struct journal *j = NULL;
	struct store st;
	int rc;

	static const char journal_usage[] =
		"usage: replfs journal dump STORE\n"
		"         print the journal, one record per line (safe while mounted)\n"
		"       replfs journal replay STORE DIR\n"
		"         apply the whole journal (it must start at LSN 1) to the empty DIR\n"
		"       replfs journal truncate STORE --at SEGMENT:OFFSET\n"
		"         cut a corrupt journal at SEGMENT:OFFSET (as the mount error names it);\n"
		"         the cut bytes are kept in STORE/lost+found/. The store must not be mounted.\n";

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(journal_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(journal_usage, stdout);
			return 0;
		}
		if (argv[i][0] == '-' && strcmp(argv[i], "--at")) {
			log_error("journal %s: unknown option %s (see replfs journal --help)", argv[1],
				  argv[i]);
			return 2;
		}
	}
	if (!strcmp(argv[1], "dump")) {
		if (argc != 3) {
			log_error("usage: replfs journal dump STORE");
			return 2;
		}
		if (open_offline(argv[2], strcmp(argv[1], "dump") != 0, &st, &j) < 0)
			return 1;
		rc = journal_scan(j, 0, JOURNAL_SCAN_ALLOW_GAPS, dump_one, NULL, &scan);
		if (rc < 0)
			scan_error(argv[2], &scan, rc);
		if (scan.gap_first)
			printf("# LSN %" PRIu64 "-%" PRIu64 " missing from the journal (lost from an "
			       "unsynced tail after a checkpoint had them in the data directory)\n",
			       scan.gap_first, scan.gap_last);
		else if (scan.torn)
			printf("# torn tail: %" PRIu64 " bytes at %s:%" PRIu64 " (cut at next mount)\n",
			       scan.torn_bytes, scan.torn_at.segment, scan.torn_at.offset);
		journal_close(j);
		store_close(&st);
		return rc < 0 ? 1 : 0;
	}
	if (!strcmp(argv[1], "replay")) {
		struct replay_into x = { .expect = 1 };
		char staging[PATH_MAX];

		if (argc != 4) {
			log_error("usage: replfs journal replay STORE DIR");
			return 2;
		}
		if (open_offline(argv[2], strcmp(argv[1], "dump") != 0, &st, &j) < 0)
			return 1;
		x.ac.datafd = open(argv[3], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		snprintf(staging, sizeof(staging), "%s/.replfs-replay-staging", argv[3]);
		if (x.ac.datafd < 0 || mkdir(staging, 0700) < 0) {
			log_error("cannot use %s as the target: %s", argv[3], strerror(errno));
			journal_close(j);
			store_close(&st);
			return 1;
		}
		x.ac.stagingfd = open(staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = journal_scan(j, 0, JOURNAL_SCAN_ALLOW_GAPS, replay_into_one, &x, &scan);
		if (rc == -EBADMSG)
			scan_error(argv[2], &scan, rc);
		close(x.ac.stagingfd);
		rmdir(staging);
		close(x.ac.datafd);
		journal_close(j);
		store_close(&st);
		return rc < 0 ? 1 : 0;
	}
	if (!strcmp(argv[1], "truncate")) {
		struct journal_pos pos = { 0 };
		char *colon;
		int lf;

		if (argc != 5 || strcmp(argv[3], "--at") || !(colon = strrchr(argv[4], ':')) ||
		    (size_t)(colon - argv[4]) >= sizeof(pos.segment)) {
			log_error("usage: replfs journal truncate STORE --at SEGMENT:OFFSET");
			return 2;
		}
		memcpy(pos.segment, argv[4], (size_t)(colon - argv[4]));
		char *end;
		pos.offset = strtoull(colon + 1, &end, 10);
		if (*end || !colon[1]) {
			log_error("bad offset in %s", argv[4]);
			return 2;
		}
		if (open_offline(argv[2], strcmp(argv[1], "dump") != 0, &st, &j) < 0)
			return 1;
		lf = openat(st.dirfd, "lost+found", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = lf < 0 ? -errno : journal_cut(j, &pos, lf);
		if (rc < 0)
			log_error("cannot cut the journal at %s:%" PRIu64 ": %s", pos.segment,
				  pos.offset, strerror(-rc));
		else
			printf("journal cut at %s:%" PRIu64 "; the removed bytes are in "
			       "%s/lost+found/\n", pos.segment, pos.offset, st.path);
		if (lf >= 0)
			close(lf);
		journal_close(j);
		store_close(&st);
		return rc < 0 ? 1 : 0;
	}
	log_error("unknown journal command: %s (dump, replay, truncate)", argv[1]);
	return 2;
}

/* mount(8) runs /sbin/mount.fuse.replfs SPEC DIR [-sfnv] [-o OPTIONS] for
 * `mount -t fuse.replfs` and fstab lines; mount.fuse3, when that helper is
 * missing, runs `replfs SPEC DIR -o OPTIONS`. Both become `replfs mount`.
 * SPEC "none" leaves the store to the configuration file (-o config=FILE). */
static int mount_helper_main(int argc, char **argv)
{
	char *margv[64];
	int n = 0, fake = 0;

	if (argc < 3 || argv[1][0] == '-' || argv[2][0] == '-') {
		log_error("usage: mount -t fuse.replfs STORE MOUNTPOINT [-o OPTIONS]");
		return 2;
	}
	margv[n++] = "mount";
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			if (n + 3 >= 64)
				break;
			margv[n++] = "-o";
			margv[n++] = argv[++i];
		} else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
			i++; /* the type: fuse.replfs */
		} else if (argv[i][0] == '-' && argv[i][1] && strspn(argv[i] + 1, "sfnv") ==
								      strlen(argv[i] + 1)) {
			/* -s sloppy, -n no mtab, -v verbose: nothing to do; -f fake */
			fake |= strchr(argv[i], 'f') != NULL;
		} else {
			log_error("mount helper: unexpected argument %s", argv[i]);
			return 2;
		}
	}
	if (!strcmp(argv[1], "none") || !strcmp(argv[1], "replfs")) {
		static char mp[PATH_MAX + 16];
		snprintf(mp, sizeof(mp), "mountpoint=%s", argv[2]);
		margv[n++] = "-o";
		margv[n++] = mp;
	} else {
		margv[n++] = argv[1];
		margv[n++] = argv[2];
	}
	if (fake) {
		/* Checked, not mounted. */
		margv[n++] = "--print-config";
		if (!freopen("/dev/null", "w", stdout))
			return 1;
	}
	margv[n] = NULL;
	return fs_mount_main(n, margv);
}

static int is_dir(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int main(int argc, char **argv)
{
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];

	log_init("replfs", 0, LOG_LVL_INFO);
	if (sodium_init() < 0) {
		log_error("libsodium failed to initialise");
		return 1;
	}
	umask(0); /* modes are taken from records, not from this process */
	if (!strncmp(self, "mount.", 6))
		return mount_helper_main(argc, argv);
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		puts("replfs " REPLFS_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "init"))
		return cmd_init(argc - 1, argv + 1);
	if (!strcmp(argv[1], "mount"))
		return fs_mount_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "journal"))
		return cmd_journal(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return repl_status_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "promote"))
		return repl_promote_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "switchover"))
		return repl_switchover_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "verify"))
		return repl_verify_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "keygen")) {
		if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
			puts("usage: replfs keygen > cluster.key\n  prints a new 256-bit cluster key "
			     "(64 hex digits); every node of a cluster needs the same key, readable "
			     "only by its owner (chmod 600)");
			return 0;
		}
		if (argc != 2) {
			log_error("keygen takes no arguments (see replfs keygen --help)");
			return 2;
		}
		return repl_keygen(stdout) == 0 ? 0 : 1;
	}
	if (argc >= 3 && argv[1][0] != '-' && is_dir(argv[1]) && is_dir(argv[2]))
		return mount_helper_main(argc, argv); /* from mount.fuse3 */
	if (argv[1][0] == '-')
		log_error("unknown option: %s (see replfs --help)", argv[1]);
	else
		log_error("unknown command: %s (see replfs --help)", argv[1]);
	return 2;
}
