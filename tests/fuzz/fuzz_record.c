/* Fuzz target: the journal record decoder (rec_decode, fs/record.c) and the
 * segment scanner (journal_scan, fs/journal.c) on arbitrary bytes — what a
 * corrupt disk or a hostile master's batch puts in front of them.
 *
 * INPUT
 *   byte 0  flags  0x01 give each record the checksum it would have
 *                       (fuzz_fix_records), so mutations reach the fields
 *                  0x02 number the records' LSNs 1, 2, 3... first (with
 *                       0x01: the scanner then sees a consistent journal)
 *                  0x04 also scan the bytes as the body of a journal segment
 *                       with a valid header, in a temporary directory
 *                  0x08 scan with JOURNAL_SCAN_CUT_TORN
 *   rest    records back to back (a segment body, a batch)
 *
 * WHAT MUST HOLD (else abort, which libFuzzer and the replay driver report)
 *   - no memory error, undefined behaviour or leak (the sanitizers);
 *   - rec_decode returns a length in (0, avail], -EAGAIN or -EBADMSG only;
 *   - a record it accepts obeys the validity rule of record.c, rec_format
 *     prints it, rec_encode re-encodes it to the same length and that
 *     encoding decodes to the same fields: whatever the decoder lets in, the
 *     node can log again (a slave logs every record it receives).
 */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define SALT 0x5eed5a17c0ffee11ull

#define F_FIX 0x01
#define F_RENUMBER 0x02
#define F_SCAN 0x04
#define F_CUT 0x08

static void die(const char *what)
{
	fuzz_die(what);
}

static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Re-encodes r under SALT and decodes it back: the same record. */
static void roundtrip(const struct rec *r, ssize_t total)
{
	size_t hlen = rec_head_size(r), size = rec_size(r);
	uint8_t *buf;
	struct rec back;
	ssize_t enc, n;

	if ((ssize_t)size != total)
		die("rec_size of a decoded record differs from its total_len");
	buf = calloc(1, size);
	if (!buf)
		abort();
	enc = rec_encode(r, SALT, buf, hlen);
	if (enc < 0) {
		char why[160];
		snprintf(why, sizeof(why), "rec_encode refuses a record rec_decode accepted: %s",
			 strerror((int)-enc));
		die(why);
	}
	if ((size_t)enc != hlen)
		die("rec_encode returned a head length other than rec_head_size");
	if (r->data_len)
		memcpy(buf + hlen, r->data, r->data_len);
	n = rec_decode(buf, size, SALT, &back);
	if (n != total)
		die("a re-encoded record does not decode to its length");
	if (back.op != r->op || back.flags != r->flags || back.lsn != r->lsn ||
	    back.epoch != r->epoch || back.time_ns != r->time_ns || back.mode != r->mode ||
	    back.uid != r->uid || back.gid != r->gid || back.arg != r->arg || back.rdev != r->rdev ||
	    back.off != r->off || back.len != r->len || back.atime_sec != r->atime_sec ||
	    back.mtime_sec != r->mtime_sec || back.atime_nsec != r->atime_nsec ||
	    back.mtime_nsec != r->mtime_nsec || back.data_len != r->data_len ||
	    !same_str(back.path, r->path) || !same_str(back.path2, r->path2) ||
	    !same_str(back.name, r->name) ||
	    (r->data_len && memcmp(back.data, r->data, r->data_len)))
		die("a re-encoded record decodes to other fields");
	free(buf);
}

/* The validity rule of record.c, checked from the outside. */
static void check_record(const uint8_t *buf, size_t avail, ssize_t n, const struct rec *r)
{
	char line[256], big[PATH_MAX * 3 + 512];
	const uint8_t *end = buf + n;

	if (n % REC_ALIGN || (size_t)n > avail || (size_t)n < REC_HEAD_FIXED)
		die("decoded length breaks the format");
	if (r->op >= REC_OP_MAX || !r->path || path_check(r->path, strlen(r->path)) < 0)
		die("decoded record has a bad op or path");
	if (r->path2 && r->op != REC_SYMLINK && path_check(r->path2, strlen(r->path2)) < 0)
		die("decoded record has a bad path2");
	if ((const uint8_t *)r->path < buf || (const uint8_t *)r->path + strlen(r->path) >= end ||
	    (r->path2 && (const uint8_t *)r->path2 + strlen(r->path2) >= end) ||
	    (r->name && (const uint8_t *)r->name + strlen(r->name) >= end) ||
	    (r->data_len && (const uint8_t *)r->data + r->data_len > end))
		die("a decoded string or the data lies outside the record");
	rec_format(r, line, sizeof(line));
	rec_format(r, big, sizeof(big));
	rec_format(r, line, 1);
	roundtrip(r, n);
}

/* Decodes records back to back, as the scanner and a slave do. */
static void decode_all(const uint8_t *buf, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		struct rec r;
		ssize_t n = rec_decode(buf + pos, len - pos, SALT, &r);

		if (n == -EAGAIN || n == -EBADMSG)
			return;
		if (n <= 0)
			die("rec_decode returned something other than a length, -EAGAIN or -EBADMSG");
		check_record(buf + pos, len - pos, n, &r);
		pos += (size_t)n;
	}
}

/* Gives records LSNs 1, 2, 3... where their lengths allow walking them. */
static void renumber(uint8_t *buf, size_t len)
{
	size_t pos = 0;
	uint64_t lsn = 1;

	while (len - pos >= REC_HEAD_FIXED) {
		uint32_t total = le_get32(buf + pos + 8);

		if (total < REC_HEAD_FIXED || total % REC_ALIGN || total > len - pos)
			break;
		le_put64(buf + pos + 16, lsn++);
		pos += total;
	}
}

/* ---- the segment scanner ------------------------------------------------ */

static char scan_dir[PATH_MAX];
static int scan_dirfd = -1;
#define SEG_NAME "0000000000000001.seg"

static void scan_dir_remove(void)
{
	if (scan_dirfd >= 0) {
		unlinkat(scan_dirfd, SEG_NAME, 0);
		close(scan_dirfd);
		rmdir(scan_dir);
	}
}

static int scan_visit(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	char line[256];

	(void)pos;
	(void)arg;
	rec_format(r, line, sizeof(line));
	return 0;
}

static void scan(const uint8_t *body, size_t len, int cut)
{
	static const uint8_t node_id[16] = { 1 };
	struct journal_scan res;
	struct journal *j;
	uint8_t h[64] = { 0 };
	int fd;

	if (scan_dirfd < 0) {
		const char *t = getenv("TMPDIR");
		snprintf(scan_dir, sizeof(scan_dir), "%s/replfs-fuzz-record-XXXXXX", t ? t : "/tmp");
		if (!mkdtemp(scan_dir) ||
		    (scan_dirfd = open(scan_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			die("cannot make a temporary directory");
		atexit(scan_dir_remove);
	}
	/* Segment header, version 1 (journal.c), valid. */
	memcpy(h, "RPLFSJNL", 8);
	le_put32(h + 8, 1);
	le_put32(h + 12, 64);
	le_put64(h + 16, SALT);
	le_put64(h + 24, 1);
	memcpy(h + 40, node_id, 16);
	le_put64(h + 56, hash64(h, 56, 0));
	fd = openat(scan_dirfd, SEG_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || io_write_all(fd, h, sizeof(h)) < 0 || (len && io_write_all(fd, body, len) < 0))
		die("cannot write the segment");
	close(fd);
	if (journal_open(scan_dirfd, node_id, 0, &j) < 0)
		die("journal_open failed on a directory with one segment");
	int rc = journal_scan(j, 1, cut ? JOURNAL_SCAN_CUT_TORN : 0, scan_visit, NULL, &res);
	if (rc != 0 && rc != -EBADMSG)
		die("journal_scan failed other than with -EBADMSG");
	if (rc == 0 && res.records && (res.first_lsn != 1 || res.last_lsn != res.records))
		die("journal_scan reports LSNs that do not match its record count");
	journal_close(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t flags, *buf;
	size_t len;

	if (size < 1)
		return 0;
	flags = data[0];
	len = size - 1;
	buf = fuzz_dup(data + 1, len);
	if (flags & F_RENUMBER)
		renumber(buf, len);
	if (flags & F_FIX)
		fuzz_fix_records(buf, len, SALT);
	decode_all(buf, len);
	if (flags & F_SCAN)
		scan(buf, len, flags & F_CUT);
	free(buf);
	return 0;
}
