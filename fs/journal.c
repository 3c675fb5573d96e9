/* The write-ahead journal: one shared log per node, split into segments.
 *
 * SEGMENT FILES live in STORE/journal/ and are named by the LSN of their
 * first record, 16 hex digits: "00000000000004d2.seg". A segment is a 64-byte
 * header followed by records (record.c) back to back.
 *
 *   SEGMENT HEADER, version 1 (little-endian)
 *     0  8 magic       "RPLFSJNL"
 *     8  4 version     1
 *    12  4 hdr_size    64
 *    16  8 salt        random, fresh for every segment; seeds every record's
 *                      checksum so stale bytes never validate
 *    24  8 first_lsn   LSN of the first record (equals the file name)
 *    32  8 epoch       epoch when the segment was opened (informational)
 *    40 16 node_id     the store that wrote it
 *    56  8 checksum    XXH3-64 of bytes [0, 56), seed 0
 *
 * VALIDITY: the journal is the sequence of valid records (record.c) read from
 * the segments in LSN order, LSNs consecutive, epochs non-decreasing. It ends
 * at the first record that is not valid. If that record is in the last
 * segment and no valid record of that segment follows it, it is a TORN TAIL:
 * a write cut short by a crash, never acknowledged by fsync; it is cut off.
 * Anything else — a bad record with valid ones after it, a bad record in an
 * earlier segment, a gap in LSNs — is CORRUPTION: the scan reports the
 * segment and offset and the node refuses to start until an operator cuts
 * the journal deliberately (journal_cut, `replfs journal truncate`).
 *
 * DURABILITY: records are write()n under the commit order lock, so they are
 * in the kernel before they are applied (a process crash loses nothing that
 * was applied). journal_sync() makes them durable: one thread fdatasyncs on
 * behalf of every waiter (group commit). New segment files are made durable
 * by an fsync of the directory in the same sync. A failed fdatasync is
 * sticky: the pages it failed to write may be gone, so nothing after it can
 * be promised either (PostgreSQL's "fsyncgate"). From then on appends fail
 * with EIO too, so every mutation is refused (the application sees EIO, reads
 * still work) until a remount replays the journal from what the disk holds.
 */
#include "fs.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#define SEG_MAGIC "RPLFSJNL"
#define SEG_VERSION 1u
#define SEG_HDR_SIZE 64u
#define SEG_SUFFIX ".seg"

struct segment {
	uint64_t first_lsn;
	uint64_t salt;
	char name[32];
};

struct journal {
	int dirfd;
	uint8_t node_id[16];
	uint64_t segment_bytes;

	pthread_mutex_t seg_lock;  /* protects segs, nsegs, pending_fds, dir_dirty */
	struct segment *segs;
	int nsegs, segs_cap;
	int *pending_fds;          /* older segments written but not yet synced */
	uint64_t *pending_lsns;    /* first LSN of each of them */
	int npending, pending_cap;
	int dir_dirty;

	/* Append side: owned by the single appender (commit's order lock). */
	int cur_fd;
	uint64_t cur_off, cur_salt, cur_epoch, cur_first_lsn;
	uint64_t next_lsn;
	uint8_t *head_buf;
	size_t head_cap;

	_Atomic uint64_t appended_lsn;
	_Atomic uint64_t durable_lsn;
	_Atomic uint64_t bytes_appended;

	pthread_mutex_t sync_lock; /* protects sync_running, sticky_err */
	pthread_cond_t sync_cond;
	int sync_running;
	_Atomic int sticky_err;   /* written under sync_lock; read lock-free by the appender */
};

static void seg_name(uint64_t first_lsn, char *out, size_t size)
{
	snprintf(out, size, "%016" PRIx64 SEG_SUFFIX, first_lsn);
}

static int seg_cmp(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;

	return x->first_lsn < y->first_lsn ? -1 : x->first_lsn > y->first_lsn;
}

static int seg_header_check(const uint8_t *h, struct segment *s)
{
	uint64_t v;

	if (memcmp(h, SEG_MAGIC, 8) != 0)
		return -EBADMSG;
	memcpy(&v, h + 56, 8);
	if (le64toh(v) != XXH3_64bits_withSeed(h, 56, 0))
		return -EBADMSG;
	uint32_t ver, hs;
	memcpy(&ver, h + 8, 4);
	memcpy(&hs, h + 12, 4);
	if (le32toh(ver) != SEG_VERSION || le32toh(hs) != SEG_HDR_SIZE)
		return -EPROTO;
	memcpy(&v, h + 16, 8);
	s->salt = le64toh(v);
	memcpy(&v, h + 24, 8);
	if (le64toh(v) != s->first_lsn)
		return -EBADMSG;
	return 0;
}

static int seg_push(struct journal *j, const struct segment *s)
{
	if (j->nsegs == j->segs_cap) {
		int cap = j->segs_cap ? j->segs_cap * 2 : 16;
		struct segment *n = realloc(j->segs, (size_t)cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		j->segs = n;
		j->segs_cap = cap;
	}
	j->segs[j->nsegs++] = *s;
	return 0;
}

int journal_open(int dirfd, const uint8_t node_id[16], uint64_t segment_bytes,
		 struct journal **out)
{
	struct journal *j = calloc(1, sizeof(*j));
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (!j)
		return -ENOMEM;
	j->dirfd = dirfd;
	memcpy(j->node_id, node_id, 16);
	j->segment_bytes = segment_bytes ? segment_bytes : (64u << 20);
	j->cur_fd = -1;
	pthread_mutex_init(&j->seg_lock, NULL);
	pthread_mutex_init(&j->sync_lock, NULL);
	pthread_cond_init(&j->sync_cond, NULL);

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	while ((de = readdir(d))) {
		struct segment s = { 0 };
		size_t n = strlen(de->d_name);
		char *end;

		if (n != 16 + strlen(SEG_SUFFIX) || strcmp(de->d_name + 16, SEG_SUFFIX) != 0)
			continue;
		s.first_lsn = strtoull(de->d_name, &end, 16);
		if (end != de->d_name + 16)
			continue;
		memcpy(s.name, de->d_name, n + 1); /* n is 20, checked above */
		if ((rc = seg_push(j, &s)) < 0)
			break;
	}
	closedir(d);
	if (rc < 0)
		goto fail;
	if (j->nsegs)
		qsort(j->segs, (size_t)j->nsegs, sizeof(*j->segs), seg_cmp);
	*out = j;
	return 0;
fail:
	journal_close(j);
	return rc;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	for (int i = 0; i < j->npending; i++)
		close(j->pending_fds[i]);
	if (j->cur_fd >= 0)
		close(j->cur_fd);
	free(j->pending_fds);
	free(j->pending_lsns);
	free(j->segs);
	free(j->head_buf);
	pthread_mutex_destroy(&j->seg_lock);
	pthread_mutex_destroy(&j->sync_lock);
	pthread_cond_destroy(&j->sync_cond);
	free(j);
}

/* ---------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------- */

/* Is there any valid record at an aligned offset in [from, len)? */
static int valid_record_after(const uint8_t *map, size_t len, size_t from, uint64_t salt,
			      uint64_t min_lsn)
{
	struct rec r;

	from = (from + REC_ALIGN - 1) & ~(size_t)(REC_ALIGN - 1);
	for (size_t o = from; o + REC_HEAD_FIXED <= len; o += REC_ALIGN) {
		if (rec_decode(map + o, len - o, salt, &r) > 0 && r.lsn >= min_lsn)
			return 1;
	}
	return 0;
}

int journal_scan(struct journal *j, uint64_t from_lsn, int flags, journal_visit_fn fn,
		 void *arg, struct journal_scan *res)
{
	uint64_t expect = 0, last_epoch = 0;
	int start = 0, rc = 0;

	memset(res, 0, sizeof(*res));
	/* Start at the last segment whose first LSN is <= from_lsn. */
	for (int i = 0; i < j->nsegs; i++)
		if (j->segs[i].first_lsn <= from_lsn)
			start = i;

	for (int i = start; i < j->nsegs && rc == 0; i++) {
		struct segment *s = &j->segs[i];
		int last = (i == j->nsegs - 1);
		struct journal_pos pos;
		struct stat st;
		uint8_t *map = NULL;
		size_t len, off;
		int fd;

		snprintf(pos.segment, sizeof(pos.segment), "%s", s->name);
		fd = openat(j->dirfd, s->name, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
			snprintf(res->why, sizeof(res->why), "cannot read segment %s: %s", s->name,
				 strerror(-rc));
			break;
		}
		len = (size_t)st.st_size;
		if (i > start && s->first_lsn > expect && (flags & JOURNAL_SCAN_ALLOW_GAPS)) {
			if (!res->gap_first) {
				res->gap_first = expect;
				res->gap_last = s->first_lsn - 1;
			}
		} else if (i > start && s->first_lsn != expect) {
			close(fd);
			pos.offset = 0;
			res->bad_at = pos;
			snprintf(res->why, sizeof(res->why),
				 "segment starts at LSN %" PRIu64 " but LSN %" PRIu64 " was expected",
				 s->first_lsn, expect);
			rc = -EBADMSG;
			break;
		}
		expect = s->first_lsn;
		if (len < SEG_HDR_SIZE) {
			close(fd);
			if (last && len < SEG_HDR_SIZE) {
				/* A crash while creating the segment: nothing in it. */
				res->torn = 1;
				pos.offset = 0;
				res->torn_at = pos;
				res->torn_bytes = len;
				if (flags & JOURNAL_SCAN_CUT_TORN) {
					unlinkat(j->dirfd, s->name, 0);
					j->nsegs--;
				}
				break;
			}
			pos.offset = 0;
			res->bad_at = pos;
			snprintf(res->why, sizeof(res->why), "segment header missing");
			rc = -EBADMSG;
			break;
		}
		map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		close(fd);
		if (map == MAP_FAILED) {
			rc = -errno;
			break;
		}
		if ((rc = seg_header_check(map, s)) < 0) {
			munmap(map, len);
			pos.offset = 0;
			res->bad_at = pos;
			snprintf(res->why, sizeof(res->why), "bad segment header");
			rc = -EBADMSG;
			break;
		}
		off = SEG_HDR_SIZE;
		while (off < len) {
			struct rec r;
			ssize_t n = rec_decode(map + off, len - off, s->salt, &r);

			pos.offset = off;
			if (n > 0 && r.lsn != expect) {
				snprintf(res->why, sizeof(res->why),
					 "record has LSN %" PRIu64 ", expected %" PRIu64, r.lsn, expect);
				n = -EBADMSG;
			} else if (n > 0 && r.epoch < last_epoch) {
				snprintf(res->why, sizeof(res->why),
					 "record epoch %" PRIu64 " after epoch %" PRIu64, r.epoch,
					 last_epoch);
				n = -EBADMSG;
			}
			if (n <= 0) {
				if (last && !valid_record_after(map, len, off + REC_ALIGN, s->salt,
								expect)) {
					res->torn = 1;
					res->torn_at = pos;
					res->torn_bytes = len - off;
					if ((flags & JOURNAL_SCAN_CUT_TORN)) {
						int wfd = openat(j->dirfd, s->name, O_WRONLY | O_CLOEXEC);
						if (wfd < 0 || ftruncate(wfd, (off_t)off) < 0 ||
						    fsync(wfd) < 0)
							rc = -errno;
						if (wfd >= 0)
							close(wfd);
					}
				} else {
					res->bad_at = pos;
					if (!res->why[0])
						snprintf(res->why, sizeof(res->why),
							 "checksum or format mismatch");
					rc = -EBADMSG;
				}
				break;
			}
			if (!res->first_lsn)
				res->first_lsn = r.lsn;
			expect = r.lsn + 1;
			last_epoch = r.epoch;
			res->last_lsn = r.lsn;
			res->last_epoch = r.epoch;
			if (r.lsn >= from_lsn) {
				res->records++;
				if (fn && (rc = fn(&r, &pos, arg)) != 0)
					break;
			}
			off += (size_t)n;
		}
		munmap(map, len);
	}
	return rc;
}

/* ---------------------------------------------------------------------------
 * Appending
 * ------------------------------------------------------------------------- */

static int seg_create(struct journal *j, uint64_t first_lsn)
{
	uint8_t h[SEG_HDR_SIZE] = { 0 };
	struct segment s = { .first_lsn = first_lsn };
	uint64_t v;
	uint32_t w;
	int fd, rc;

	seg_name(first_lsn, s.name, sizeof(s.name));
	randombytes_buf(&s.salt, sizeof(s.salt));
	memcpy(h, SEG_MAGIC, 8);
	w = htole32(SEG_VERSION);
	memcpy(h + 8, &w, 4);
	w = htole32(SEG_HDR_SIZE);
	memcpy(h + 12, &w, 4);
	v = htole64(s.salt);
	memcpy(h + 16, &v, 8);
	v = htole64(first_lsn);
	memcpy(h + 24, &v, 8);
	v = htole64(j->cur_epoch);
	memcpy(h + 32, &v, 8);
	memcpy(h + 40, j->node_id, 16);
	v = htole64(XXH3_64bits_withSeed(h, 56, 0));
	memcpy(h + 56, &v, 8);

	if ((rc = fault_check("journal:segment")) < 0)
		return rc;
	/* A leftover file of that name holds nothing valid (its records would
	 * have been scanned), so it is replaced. */
	fd = openat(j->dirfd, s.name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if ((rc = io_write_all(fd, h, sizeof(h))) < 0) {
		close(fd);
		unlinkat(j->dirfd, s.name, 0);
		return rc;
	}
	pthread_mutex_lock(&j->seg_lock);
	rc = seg_push(j, &s);
	if (rc == 0 && j->cur_fd >= 0) {
		if (j->npending == j->pending_cap) {
			int cap = j->pending_cap ? j->pending_cap * 2 : 8;
			int *n = realloc(j->pending_fds, (size_t)cap * sizeof(int));
			uint64_t *l = n ? realloc(j->pending_lsns, (size_t)cap * sizeof(uint64_t)) : NULL;
			if (n)
				j->pending_fds = n;
			if (l)
				j->pending_lsns = l;
			if (!n || !l)
				rc = -ENOMEM;
			else
				j->pending_cap = cap;
		}
		if (rc == 0) {
			j->pending_lsns[j->npending] = j->cur_first_lsn;
			j->pending_fds[j->npending++] = j->cur_fd;
		}
	}
	if (rc == 0) {
		j->dir_dirty = 1;
		j->cur_fd = fd;
		j->cur_off = SEG_HDR_SIZE;
		j->cur_salt = s.salt;
		j->cur_first_lsn = first_lsn;
	}
	pthread_mutex_unlock(&j->seg_lock);
	if (rc < 0) {
		close(fd);
		unlinkat(j->dirfd, s.name, 0);
	}
	return rc;
}

int journal_start(struct journal *j, uint64_t next_lsn, uint64_t epoch)
{
	struct segment *s;
	int fd;

	j->next_lsn = next_lsn;
	j->cur_epoch = epoch;
	atomic_store(&j->appended_lsn, next_lsn - 1);
	atomic_store(&j->durable_lsn, next_lsn - 1);
	/* Each mount appends to a segment of its own, named by its first LSN, so
	 * the file names always tell where a record is, even when the journal
	 * ended before the checkpoint (the cache was durable, the tail was not). */
	s = j->nsegs ? &j->segs[j->nsegs - 1] : NULL;
	if (!s || s->first_lsn != next_lsn)
		return seg_create(j, next_lsn);
	fd = openat(j->dirfd, s->name, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	off_t end = lseek(fd, 0, SEEK_END);
	if (end < (off_t)SEG_HDR_SIZE) {
		close(fd);
		return -EBADMSG;
	}
	j->cur_fd = fd;
	j->cur_off = (uint64_t)end;
	j->cur_salt = s->salt;
	j->cur_first_lsn = s->first_lsn;
	return 0;
}

int journal_append(struct journal *j, const struct rec *r)
{
	size_t hlen = rec_head_size(r), total = rec_size(r);
	static const uint8_t pad[REC_ALIGN];
	struct iovec iov[3];
	ssize_t enc;
	int rc, n = 0;

	if (r->lsn != j->next_lsn)
		return -EINVAL;
	if (j->cur_fd < 0)
		return -EBADF;
	/* After a failed sync nothing more can be made durable: refuse to log
	 * (so to make) changes rather than accept ones that no fsync can cover. */
	if ((rc = atomic_load(&j->sticky_err)) < 0)
		return rc;
	if (j->cur_off > SEG_HDR_SIZE && j->cur_off + total > j->segment_bytes) {
		if ((rc = seg_create(j, r->lsn)) < 0)
			return rc;
	}
	if (j->head_cap < hlen) {
		uint8_t *b = realloc(j->head_buf, hlen);
		if (!b)
			return -ENOMEM;
		j->head_buf = b;
		j->head_cap = hlen;
	}
	enc = rec_encode(r, j->cur_salt, j->head_buf, j->head_cap);
	if (enc < 0)
		return (int)enc;
	iov[n++] = (struct iovec){ j->head_buf, hlen };
	if (r->data_len)
		iov[n++] = (struct iovec){ (void *)r->data, r->data_len };
	if (total > hlen + r->data_len)
		iov[n++] = (struct iovec){ (void *)pad, total - hlen - r->data_len };

	ssize_t w;
	if ((rc = fault_check("journal:write")) < 0) {
		errno = -rc;
		w = -1;
	} else {
		w = pwritev(j->cur_fd, iov, n, (off_t)j->cur_off);
	}
	if (w != (ssize_t)total) {
		/* Retry a short write once from where it stopped, via a flat copy. */
		rc = w < 0 ? -errno : -EIO;
		if (w >= 0 && rc == -EIO) {
			uint8_t *flat = malloc(total);
			if (flat) {
				memcpy(flat, j->head_buf, hlen);
				if (r->data_len)
					memcpy(flat + hlen, r->data, r->data_len);
				memset(flat + hlen + r->data_len, 0, total - hlen - r->data_len);
				rc = io_pwrite_all(j->cur_fd, flat + w, total - (size_t)w,
						   (off_t)(j->cur_off + (uint64_t)w));
				free(flat);
			} else {
				rc = -ENOMEM;
			}
		}
		if (rc < 0) {
			/* Never leave half a record behind. */
			if (ftruncate(j->cur_fd, (off_t)j->cur_off) < 0) {
				pthread_mutex_lock(&j->sync_lock);
				j->sticky_err = -EIO;
				pthread_mutex_unlock(&j->sync_lock);
				log_error("journal: cannot cut a partial record (%s); journal is now "
					  "read-only", strerror(errno));
			}
			return rc;
		}
	}
	j->cur_off += total;
	j->next_lsn++;
	atomic_fetch_add(&j->bytes_appended, total);
	atomic_store_explicit(&j->appended_lsn, r->lsn, memory_order_release);
	return 0;
}

/* ---------------------------------------------------------------------------
 * Group commit
 * ------------------------------------------------------------------------- */

int journal_sync(struct journal *j, uint64_t lsn)
{
	int rc = 0;

	pthread_mutex_lock(&j->sync_lock);
	while (atomic_load(&j->durable_lsn) < lsn) {
		if (j->sticky_err) {
			rc = j->sticky_err;
			break;
		}
		if (j->sync_running) {
			pthread_cond_wait(&j->sync_cond, &j->sync_lock);
			continue;
		}
		j->sync_running = 1;
		pthread_mutex_unlock(&j->sync_lock);

		/* Everything appended before this point is covered by this sync. */
		uint64_t target = atomic_load_explicit(&j->appended_lsn, memory_order_acquire);
		int *old = NULL, nold = 0, dir_dirty, fd;

		pthread_mutex_lock(&j->seg_lock);
		if (j->npending) {
			old = j->pending_fds;
			nold = j->npending;
			free(j->pending_lsns);
			j->pending_fds = NULL;
			j->pending_lsns = NULL;
			j->npending = j->pending_cap = 0;
		}
		dir_dirty = j->dir_dirty;
		j->dir_dirty = 0;
		fd = dup(j->cur_fd);
		pthread_mutex_unlock(&j->seg_lock);

		int err = 0;
		for (int i = 0; i < nold; i++) {
			if (!err && fdatasync(old[i]) < 0)
				err = -errno;
			close(old[i]);
		}
		free(old);
		if (fd < 0 && !err)
			err = -errno;
		if (!err)
			err = fault_check("journal:fsync");
		if (!err && fdatasync(fd) < 0)
			err = -errno;
		if (fd >= 0)
			close(fd);
		if (!err && dir_dirty && fsync(j->dirfd) < 0)
			err = -errno;

		pthread_mutex_lock(&j->sync_lock);
		j->sync_running = 0;
		if (err) {
			log_error("journal: fdatasync failed (%s): no further write can be made "
				  "durable; remount to recover", strerror(-err));
			j->sticky_err = -EIO;
		} else if (atomic_load(&j->durable_lsn) < target) {
			atomic_store(&j->durable_lsn, target);
		}
		pthread_cond_broadcast(&j->sync_cond);
	}
	pthread_mutex_unlock(&j->sync_lock);
	return rc;
}

uint64_t journal_appended_lsn(const struct journal *j)
{
	return atomic_load(&((struct journal *)j)->appended_lsn);
}

uint64_t journal_durable_lsn(const struct journal *j)
{
	return atomic_load(&((struct journal *)j)->durable_lsn);
}

uint64_t journal_bytes_appended(const struct journal *j)
{
	return atomic_load(&((struct journal *)j)->bytes_appended);
}

int journal_segment_count(const struct journal *j)
{
	return j->nsegs;
}

/* ---------------------------------------------------------------------------
 * Retention and deliberate cuts
 * ------------------------------------------------------------------------- */

int journal_remove_below(struct journal *j, uint64_t floor_lsn)
{
	int removed = 0, rc = 0;

	pthread_mutex_lock(&j->seg_lock);
	/* Segment i holds [first_i, first_{i+1}); it may go when first_{i+1} <=
	 * floor. The last segment always stays. */
	while (j->nsegs > 1 && j->segs[1].first_lsn <= floor_lsn) {
		if (unlinkat(j->dirfd, j->segs[0].name, 0) < 0 && errno != ENOENT) {
			rc = -errno;
			break;
		}
		/* Its unsynced pages need never be written now. */
		for (int p = 0; p < j->npending; p++) {
			if (j->pending_lsns[p] != j->segs[0].first_lsn)
				continue;
			close(j->pending_fds[p]);
			j->npending--;
			j->pending_fds[p] = j->pending_fds[j->npending];
			j->pending_lsns[p] = j->pending_lsns[j->npending];
			break;
		}
		memmove(j->segs, j->segs + 1, (size_t)(j->nsegs - 1) * sizeof(*j->segs));
		j->nsegs--;
		removed++;
	}
	if (removed)
		j->dir_dirty = 1;
	pthread_mutex_unlock(&j->seg_lock);
	return rc < 0 ? rc : removed;
}

static int save_range(int fromdir, const char *name, uint64_t off, int save_dirfd)
{
	char out[96];
	int in, o, rc = 0;
	char buf[65536];

	snprintf(out, sizeof(out), "%s.cut-at-%" PRIu64, name, off);
	in = openat(fromdir, name, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	o = openat(save_dirfd, out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (o < 0) {
		rc = -errno;
		close(in);
		return rc;
	}
	for (;;) {
		ssize_t n = pread(in, buf, sizeof(buf), (off_t)off);
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		if ((rc = io_write_all(o, buf, (size_t)n)) < 0)
			break;
		off += (uint64_t)n;
	}
	if (rc == 0 && fsync(o) < 0)
		rc = -errno;
	close(in);
	close(o);
	return rc;
}

int journal_cut(struct journal *j, const struct journal_pos *pos, int save_dirfd)
{
	int idx = -1, rc;

	for (int i = 0; i < j->nsegs; i++)
		if (strcmp(j->segs[i].name, pos->segment) == 0)
			idx = i;
	if (idx < 0)
		return -ENOENT;
	/* Later segments are saved whole, then removed; the cut one is saved from
	 * the offset and truncated. The header is never cut. */
	for (int i = j->nsegs - 1; i > idx; i--) {
		if ((rc = save_range(j->dirfd, j->segs[i].name, 0, save_dirfd)) < 0)
			return rc;
		if (unlinkat(j->dirfd, j->segs[i].name, 0) < 0)
			return -errno;
		j->nsegs--;
	}
	uint64_t off = pos->offset < SEG_HDR_SIZE ? SEG_HDR_SIZE : pos->offset;
	if ((rc = save_range(j->dirfd, pos->segment, off, save_dirfd)) < 0)
		return rc;
	int fd = openat(j->dirfd, pos->segment, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) ? -errno : 0;
	close(fd);
	if (rc == 0 && fsync(j->dirfd) < 0)
		rc = -errno;
	return rc;
}

/* ---------------------------------------------------------------------------
 * Reset (slave snapshot install) and reading back (replication)
 * ------------------------------------------------------------------------- */

uint64_t journal_first_lsn(struct journal *j)
{
	uint64_t first;

	pthread_mutex_lock(&j->seg_lock);
	first = j->nsegs ? j->segs[0].first_lsn : j->next_lsn;
	pthread_mutex_unlock(&j->seg_lock);
	return first;
}

int journal_reset(struct journal *j, uint64_t next_lsn, uint64_t epoch)
{
	int rc = 0;

	pthread_mutex_lock(&j->seg_lock);
	for (int p = 0; p < j->npending; p++)
		close(j->pending_fds[p]);
	j->npending = 0;
	if (j->cur_fd >= 0)
		close(j->cur_fd);
	j->cur_fd = -1;
	for (int i = 0; i < j->nsegs; i++)
		if (unlinkat(j->dirfd, j->segs[i].name, 0) < 0 && errno != ENOENT && rc == 0)
			rc = -errno;
	j->nsegs = 0;
	j->dir_dirty = 1;
	pthread_mutex_unlock(&j->seg_lock);
	if (rc < 0)
		return rc;
	/* Nothing before next_lsn exists any more; the new segment must be durable
	 * before anything relies on it, which the next journal_sync ensures. */
	if ((rc = journal_start(j, next_lsn, epoch)) < 0)
		return rc;
	if (fsync(j->dirfd) < 0)
		return -errno;
	return 0;
}

void journal_cursor_init(struct journal_cursor *cur, uint64_t next_lsn)
{
	memset(cur, 0, sizeof(*cur));
	cur->next_lsn = next_lsn;
	cur->fd = -1;
}

void journal_cursor_close(struct journal_cursor *cur)
{
	if (cur->fd >= 0)
		close(cur->fd);
	cur->fd = -1;
	cur->seg_first = 0;
}

int journal_read(struct journal *j, struct journal_cursor *cur, uint64_t upto_lsn,
		 uint8_t *buf, size_t cap, size_t *len, uint64_t *salt, uint32_t *nrec)
{
	uint64_t appended = atomic_load(&j->appended_lsn), seg_first = 0, seg_salt = 0;
	uint64_t next_seg_first = UINT64_MAX;
	char name[32] = "";
	size_t used = 0, pos = 0;
	ssize_t got;
	struct rec r;

	*len = 0;
	*nrec = 0;
	if (upto_lsn > appended)
		upto_lsn = appended;
	if (cur->next_lsn > appended + 1)
		return -ERANGE;
	if (cur->next_lsn > upto_lsn)
		return 0;
	pthread_mutex_lock(&j->seg_lock);
	for (int i = j->nsegs - 1; i >= 0; i--) {
		if (j->segs[i].first_lsn <= cur->next_lsn) {
			seg_first = j->segs[i].first_lsn;
			seg_salt = j->segs[i].salt;
			memcpy(name, j->segs[i].name, sizeof(name));
			if (i + 1 < j->nsegs)
				next_seg_first = j->segs[i + 1].first_lsn;
			break;
		}
	}
	pthread_mutex_unlock(&j->seg_lock);
	if (!seg_first)
		return -ENOENT;
	if (cur->fd < 0 || cur->seg_first != seg_first) {
		journal_cursor_close(cur);
		cur->fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
		if (cur->fd < 0)
			return errno == ENOENT ? -ENOENT : -errno;
		cur->seg_first = seg_first;
		cur->offset = SEG_HDR_SIZE;
		cur->salt = seg_salt;
	}
	/* A segment ends where the next one begins: records past that point of a
	 * segment that ended early (a mount's last, torn) are not the journal. */
	if (upto_lsn >= next_seg_first)
		upto_lsn = next_seg_first - 1;
	/* Position: records before next_lsn (first read in a segment reached by
	 * LSN) are stepped over; afterwards the cursor sits on next_lsn. */
	for (;;) {
		got = pread(cur->fd, buf, cap, (off_t)cur->offset);
		if (got < 0)
			return -errno;
		used = (size_t)got;
		pos = 0;
		while (pos < used) {
			ssize_t n = rec_decode(buf + pos, used - pos, cur->salt, &r);
			if (n == -EAGAIN)
				break;
			if (n < 0)
				return -EBADMSG;
			if (r.lsn >= cur->next_lsn)
				break;
			pos += (size_t)n;
		}
		if (pos == 0)
			break;
		cur->offset += pos;
		if (pos < used && r.lsn >= cur->next_lsn) {
			memmove(buf, buf + pos, used - pos);
			used -= pos;
			break;
		}
	}
	pos = 0;
	while (pos < used) {
		ssize_t n = rec_decode(buf + pos, used - pos, cur->salt, &r);
		if (n == -EAGAIN)
			break;
		if (n < 0)
			return -EBADMSG;
		if (r.lsn > upto_lsn)
			break;
		if (r.lsn != cur->next_lsn + *nrec)
			return -EBADMSG;
		pos += (size_t)n;
		(*nrec)++;
	}
	*len = pos;
	*salt = cur->salt;
	cur->offset += pos;
	cur->next_lsn += *nrec;
	return 0;
}
