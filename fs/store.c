/* The store: one node's directory.
 *
 *   STORE/replfs.store   identity, text, written once by `replfs init`:
 *                            replfs-store 1
 *                            node_id <32 hex digits>
 *                            created <unix seconds>
 *   STORE/epoch          "<n>\n", the highest epoch this node has taken or
 *                        followed (written atomically, fsynced)
 *   STORE/history        "replfs-history 1\n" then "<epoch> <first lsn>\n" per
 *                        epoch this node's records belong to, oldest first
 *                        (written atomically, fsynced; before the first record
 *                        of a new epoch is logged)
 *   STORE/checkpoint     "lsn <n>\nepoch <n>\n": the data directory is durable
 *                        through this LSN; replay after a reboot starts after it
 *   STORE/state          4 KiB, mmap'ed (struct store_state): exact progress of
 *                        the apply step, valid after a process crash only
 *                        (it carries the boot id)
 *   STORE/data/          the cache: the tree the mount shows
 *   STORE/journal/       segment files (journal.c)
 *   STORE/staging/       new files are built here, then renamed into data/
 *   STORE/lost+found/    journal bytes cut away deliberately
 *   STORE/lock           flock()ed by the daemon that has the store mounted
 *   STORE/pid            the mounted daemon's PID
 *   STORE/mountpoint     where it is mounted (a second mount waits for a
 *                        daemon whose mount is gone: it is finishing up)
 *
 * The only durable truths are data/ as of the checkpoint and journal/; all
 * else is rebuilt or advisory.
 */
#include "fs.h"
#include "../utils/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_MAGIC "RPLFSST1"
#define STATE_SIZE 4096

static const char *const store_dirs[] = { "data", "journal", "staging", "lost+found" };

int store_init(const char *path, char *err, size_t errlen)
{
	char meta[256], hex[33];
	uint8_t id[16];
	struct stat st;
	int dirfd, rc;

	if (stat(path, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a directory", path);
			return -EEXIST;
		}
		dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0) {
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
			return -errno;
		}
		if (faccessat(dirfd, "replfs.store", F_OK, 0) == 0) {
			close(dirfd);
			snprintf(err, errlen, "%s is already a replfs store; refusing to overwrite it",
				 path);
			return -EEXIST;
		}
		for (size_t i = 0; i < sizeof(store_dirs) / sizeof(*store_dirs); i++) {
			if (faccessat(dirfd, store_dirs[i], F_OK, 0) == 0) {
				close(dirfd);
				snprintf(err, errlen,
					 "%s is not empty (it has %s/); choose a new directory", path,
					 store_dirs[i]);
				return -EEXIST;
			}
		}
	} else {
		if (mkdir(path, 0755) < 0) {
			snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
			return -errno;
		}
		dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0) {
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
			return -errno;
		}
	}
	for (size_t i = 0; i < sizeof(store_dirs) / sizeof(*store_dirs); i++) {
		if (mkdirat(dirfd, store_dirs[i], i == 0 ? 0755 : 0700) < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot create %s/%s: %s", path, store_dirs[i],
				 strerror(errno));
			goto out;
		}
	}
	randombytes_buf(id, sizeof(id));
	sodium_bin2hex(hex, sizeof(hex), id, sizeof(id));
	snprintf(meta, sizeof(meta), "replfs-store %d\nnode_id %s\ncreated %lld\n", STORE_FORMAT,
		 hex, (long long)time(NULL));
	if ((rc = io_write_file_atomic(dirfd, "epoch", "1\n", 2)) < 0 ||
	    (rc = io_write_file_atomic(dirfd, "checkpoint", "lsn 0\nepoch 1\n", 14)) < 0 ||
	    /* Identity last: a store is a store only once it is complete. */
	    (rc = io_write_file_atomic(dirfd, "replfs.store", meta, strlen(meta))) < 0) {
		snprintf(err, errlen, "cannot write store files in %s: %s", path, strerror(-rc));
		goto out;
	}
	rc = 0;
out:
	close(dirfd);
	return rc;
}

static int parse_meta(const char *text, uint8_t id[16], int *format)
{
	char hex[64];
	const char *p;

	if (sscanf(text, "replfs-store %d", format) != 1)
		return -EINVAL;
	p = strstr(text, "\nnode_id ");
	if (!p || sscanf(p + 9, "%63s", hex) != 1 || strlen(hex) != 32)
		return -EINVAL;
	if (sodium_hex2bin(id, 16, hex, 32, NULL, NULL, NULL) != 0)
		return -EINVAL;
	return 0;
}

static int state_map(struct store *st, char *err, size_t errlen)
{
	struct store_state *s;
	int fd, fresh = 0;
	struct stat sb;

	fd = openat(st->dirfd, "state", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		snprintf(err, errlen, "cannot open %s/state: %s", st->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	if (sb.st_size != STATE_SIZE) {
		if (ftruncate(fd, STATE_SIZE) < 0) {
			int rc = -errno;
			snprintf(err, errlen, "cannot size %s/state: %s", st->path, strerror(errno));
			close(fd);
			return rc;
		}
		fresh = 1;
	}
	s = mmap(NULL, STATE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (s == MAP_FAILED) {
		snprintf(err, errlen, "cannot map %s/state: %s", st->path, strerror(errno));
		return -errno;
	}
	if (fresh || memcmp(s->magic, STATE_MAGIC, 8) != 0) {
		memset(s, 0, sizeof(*s));
		memcpy(s->magic, STATE_MAGIC, 8);
		s->version = 1;
	}
	st->state = s;
	return 0;
}

/* Is mnt a mount point right now (a line of /proc/self/mountinfo)? */
static int is_mounted(const char *mnt)
{
	char line[8192], a[4096];
	int found = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return 1;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %4095s", a) == 1 && !strcmp(a, mnt))
			found = 1;
	fclose(f);
	return found;
}

/* The store lock. A daemon whose mount is already gone is finishing its
 * last checkpoint: wait for it (umount then mount right away must work).
 * A daemon still mounted is a real conflict: refuse at once. */
static int lock_wait(struct store *st, char *err, size_t errlen)
{
	for (int waited_ms = 0;; waited_ms += 50) {
		char *text = NULL, mnt[4096] = "";
		int pid = 0;

		if (flock(st->lockfd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK) {
			snprintf(err, errlen, "cannot lock %s: %s", st->path, strerror(errno));
			return -errno;
		}
		if (io_read_file(st->dirfd, "pid", &text, NULL, 64) == 0) {
			sscanf(text, "%d", &pid);
			free(text);
		}
		if (io_read_file(st->dirfd, "mountpoint", &text, NULL, 8192) == 0) {
			sscanf(text, "%4095[^\n]", mnt);
			free(text);
		}
		if ((mnt[0] && is_mounted(mnt)) || waited_ms >= 60000) {
			if (mnt[0])
				snprintf(err, errlen, "store %s is already mounted on %s (daemon pid %d)",
					 st->path, mnt, pid);
			else
				snprintf(err, errlen, "store %s is in use by another replfs process",
					 st->path);
			return -EBUSY;
		}
		usleep(50 * 1000);
	}
}

int store_open(const char *path, int flags, struct store *st, char *err, size_t errlen)
{
	char *text = NULL, *ep = NULL;
	int format = 0, rc;
	struct stat sb;

	memset(st, 0, sizeof(*st));
	st->dirfd = st->datafd = st->journalfd = st->stagingfd = st->lockfd = -1;
	if (stat(path, &sb) < 0) {
		rc = -errno;
		snprintf(err, errlen, "store %s: %s", path, strerror(errno));
		return rc;
	}
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "store %s is not a directory", path);
		return -ENOTDIR;
	}
	st->path = realpath(path, NULL);
	st->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!st->path || st->dirfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open store %s: %s", path, strerror(errno));
		goto fail;
	}
	rc = io_read_file(st->dirfd, "replfs.store", &text, NULL, 4096);
	if (rc == -ENOENT) {
		snprintf(err, errlen, "%s is not a replfs store (no replfs.store; create one with "
			 "`replfs init`)", path);
		goto fail;
	}
	if (rc < 0 || parse_meta(text, st->node_id, &format) < 0) {
		snprintf(err, errlen, "%s/replfs.store is unreadable or damaged", path);
		rc = rc < 0 ? rc : -EINVAL;
		goto fail;
	}
	if (format != STORE_FORMAT) {
		snprintf(err, errlen, "store %s has format %d; this replfs reads format %d", path,
			 format, STORE_FORMAT);
		rc = -EPROTO;
		goto fail;
	}
	rc = io_read_file(st->dirfd, "epoch", &ep, NULL, 64);
	if (rc < 0 || sscanf(ep, "%" SCNu64, &st->epoch) != 1 || st->epoch == 0) {
		snprintf(err, errlen, "%s/epoch is missing or damaged", path);
		rc = rc < 0 ? rc : -EINVAL;
		goto fail;
	}
	st->datafd = openat(st->dirfd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	st->journalfd = openat(st->dirfd, "journal", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	st->stagingfd = openat(st->dirfd, "staging", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->datafd < 0 || st->journalfd < 0 || st->stagingfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "store %s is incomplete (data/, journal/ or staging/: %s)",
			 path, strerror(errno));
		goto fail;
	}
	if (flags & STORE_OPEN_LOCK) {
		st->lockfd = openat(st->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (st->lockfd < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot open %s/lock: %s", path, strerror(errno));
			goto fail;
		}
		if ((rc = lock_wait(st, err, errlen)) < 0)
			goto fail;
	}
	if ((flags & STORE_OPEN_STATE) && (rc = state_map(st, err, errlen)) < 0)
		goto fail;
	free(text);
	free(ep);
	return 0;
fail:
	free(text);
	free(ep);
	store_close(st);
	return rc;
}

void store_close(struct store *st)
{
	if (st->state) {
		msync(st->state, STATE_SIZE, MS_SYNC);
		munmap(st->state, STATE_SIZE);
	}
	int *fds[] = { &st->datafd, &st->journalfd, &st->stagingfd, &st->lockfd, &st->dirfd };
	for (size_t i = 0; i < sizeof(fds) / sizeof(*fds); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	free(st->path);
	memset(st, 0, sizeof(*st));
	st->dirfd = st->datafd = st->journalfd = st->stagingfd = st->lockfd = -1;
}

int store_checkpoint_read(const struct store *st, struct store_checkpoint *ck)
{
	char *text = NULL;
	int rc = io_read_file(st->dirfd, "checkpoint", &text, NULL, 256);

	if (rc < 0)
		return rc;
	if (sscanf(text, "lsn %" SCNu64 "\nepoch %" SCNu64, &ck->lsn, &ck->epoch) != 2)
		rc = -EINVAL;
	free(text);
	return rc;
}

int store_checkpoint_write(const struct store *st, const struct store_checkpoint *ck)
{
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "lsn %" PRIu64 "\nepoch %" PRIu64 "\n", ck->lsn,
			 ck->epoch);

	return io_write_file_atomic(st->dirfd, "checkpoint", buf, (size_t)n);
}

int store_pid_write(const struct store *st, pid_t pid, const char *mnt)
{
	char buf[4200];
	int n = snprintf(buf, sizeof(buf), "%s\n", mnt), rc;

	if ((rc = io_write_file_atomic(st->dirfd, "mountpoint", buf, (size_t)n)) < 0)
		return rc;
	n = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	return io_write_file_atomic(st->dirfd, "pid", buf, (size_t)n);
}

void store_pid_remove(const struct store *st)
{
	unlinkat(st->dirfd, "pid", 0);
	unlinkat(st->dirfd, "mountpoint", 0);
}

int store_epoch_write(struct store *st, uint64_t epoch)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", epoch), rc;

	if ((rc = io_write_file_atomic(st->dirfd, "epoch", buf, (size_t)n)) < 0)
		return rc;
	st->epoch = epoch;
	return 0;
}

/* ---- epoch history ------------------------------------------------------ */

int history_format(const struct epoch_history *h, char *buf, size_t len)
{
	size_t off = 0;
	int n = snprintf(buf, len, "replfs-history 1\n");

	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	off = (size_t)n;
	for (int i = 0; i < h->n; i++) {
		n = snprintf(buf + off, len - off, "%" PRIu64 " %" PRIu64 "\n", h->epoch[i],
			     h->first_lsn[i]);
		if (n < 0 || (size_t)n >= len - off)
			return -ENOSPC;
		off += (size_t)n;
	}
	return (int)off;
}

int history_parse(const char *text, struct epoch_history *h)
{
	const char *p = text;

	h->n = 0;
	if (strncmp(p, "replfs-history 1\n", 17) != 0)
		return -EBADMSG;
	p += 17;
	while (*p) {
		uint64_t e, f;
		int used = 0;
		if (sscanf(p, "%" SCNu64 " %" SCNu64 "%n", &e, &f, &used) != 2 || p[used] != '\n')
			return -EBADMSG;
		p += used + 1;
		if (e == 0 || f == 0 || history_note(h, e, f) < 0)
			return -EBADMSG;
	}
	return h->n ? 0 : -EBADMSG;
}

int store_history_read(const struct store *st, struct epoch_history *h)
{
	char *text = NULL;
	int rc = io_read_file(st->dirfd, "history", &text, NULL, 64 * 1024);

	if (rc == -ENOENT) {
		h->n = 1;
		h->epoch[0] = 1;
		h->first_lsn[0] = 1;
		return 0;
	}
	if (rc < 0)
		return rc;
	rc = history_parse(text, h);
	free(text);
	return rc;
}

int store_history_write(const struct store *st, const struct epoch_history *h)
{
	char buf[HISTORY_MAX * 48 + 32];
	int n = history_format(h, buf, sizeof(buf));

	if (n < 0)
		return n;
	return io_write_file_atomic(st->dirfd, "history", buf, (size_t)n);
}

int history_note(struct epoch_history *h, uint64_t epoch, uint64_t first_lsn)
{
	if (h->n) {
		uint64_t last_e = h->epoch[h->n - 1], last_f = h->first_lsn[h->n - 1];
		if (epoch == last_e)
			return 0;
		if (epoch < last_e)
			return -EINVAL;
		if (first_lsn < last_f)
			return -EINVAL;
		if (first_lsn == last_f) {
			/* The earlier epoch never got a record: it is not part of
			 * this timeline. */
			h->epoch[h->n - 1] = epoch;
			return 1;
		}
	}
	if (h->n == HISTORY_MAX) {
		/* Only the recent past decides a fork: drop the oldest. */
		memmove(h->epoch, h->epoch + 1, sizeof(h->epoch[0]) * (HISTORY_MAX - 1));
		memmove(h->first_lsn, h->first_lsn + 1, sizeof(h->first_lsn[0]) * (HISTORY_MAX - 1));
		h->n--;
	}
	h->epoch[h->n] = epoch;
	h->first_lsn[h->n] = first_lsn;
	h->n++;
	return 1;
}

uint64_t history_epoch_at(const struct epoch_history *h, uint64_t lsn)
{
	uint64_t e = 0;

	for (int i = 0; i < h->n && h->first_lsn[i] <= lsn; i++)
		e = h->epoch[i];
	return e;
}

void history_cut(struct epoch_history *h, uint64_t last_lsn)
{
	while (h->n > 1 && h->first_lsn[h->n - 1] > last_lsn)
		h->n--;
}

uint64_t history_fork(const struct epoch_history *a, uint64_t a_last,
		      const struct epoch_history *b, uint64_t b_last)
{
	uint64_t m = a_last < b_last ? a_last : b_last, x = 1;

	/* Epochs are constant between breakpoints: check each run once. */
	while (x <= m) {
		uint64_t next = m + 1;
		if (history_epoch_at(a, x) != history_epoch_at(b, x))
			return x - 1;
		for (int i = 0; i < a->n; i++)
			if (a->first_lsn[i] > x && a->first_lsn[i] < next)
				next = a->first_lsn[i];
		for (int i = 0; i < b->n; i++)
			if (b->first_lsn[i] > x && b->first_lsn[i] < next)
				next = b->first_lsn[i];
		x = next;
	}
	return m;
}
