/* fs: the node's storage engine — journal records, the journal itself, the
 * apply step shared by master, slave and recovery, the store on disk, the
 * commit path that ties them together, and the FUSE daemon on top. */
#ifndef REPLFS_FS_H
#define REPLFS_FS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ======================================================================
 * Records (record.c) — one mutating operation each. Wire/disk format is
 * documented at the top of record.c.
 * ====================================================================== */

enum rec_op {
	REC_NOOP = 0,
	REC_CREATE = 1,     /* path, mode, uid, gid              regular file */
	REC_MKNOD = 2,      /* path, mode (with type), rdev, uid, gid */
	REC_MKDIR = 3,      /* path, mode, uid, gid */
	REC_SYMLINK = 4,    /* path (the link), path2 (target), uid, gid */
	REC_LINK = 5,       /* path (existing), path2 (new name) */
	REC_UNLINK = 6,     /* path */
	REC_RMDIR = 7,      /* path */
	REC_RENAME = 8,     /* path -> path2, arg = RENAME_* flags */
	REC_WRITE = 9,      /* path, off, data */
	REC_TRUNCATE = 10,  /* path, off = new size */
	REC_FALLOCATE = 11, /* path, arg = mode, off, len */
	REC_CHMOD = 12,     /* path, mode */
	REC_CHOWN = 13,     /* path, uid, gid ((uint32_t)-1 = unchanged) */
	REC_UTIMENS = 14,   /* path, atime, mtime (nsec may be UTIME_OMIT) */
	REC_SETXATTR = 15,  /* path, name, data = value, arg = XATTR_* flags */
	REC_REMOVEXATTR = 16, /* path, name */
	REC_OP_MAX
};

/* rec.flags */
#define REC_F_APPEND 0x1 /* WRITE at end of file: commit resolves off before logging */

#define REC_HEAD_FIXED 120u          /* bytes before the strings */
#define REC_MAX_DATA (16u << 20)     /* largest data payload of one record */
#define REC_ALIGN 8u
/* Largest encoded record: head, three strings of PATH_MAX, data, padding. */
#define REC_MAX_SIZE (REC_MAX_DATA + REC_HEAD_FIXED + 3u * 4097u + REC_ALIGN)

struct rec {
	uint16_t op, flags;
	uint64_t lsn, epoch, time_ns;
	uint32_t mode, uid, gid, arg;
	uint64_t rdev, off, len;
	int64_t atime_sec, mtime_sec;
	uint32_t atime_nsec, mtime_nsec;
	const char *path;   /* NUL-terminated, relative, "" = root */
	const char *path2;  /* may be NULL when unused */
	const char *name;   /* xattr name, may be NULL */
	const void *data;
	uint32_t data_len;
};

const char *rec_op_name(unsigned op);
/* Length of the encoded record (header + strings + data + padding). */
size_t rec_size(const struct rec *r);
/* Encodes everything but the data bytes and the padding into head (which must
 * hold rec_head_size(r) bytes); the checksum covers data too, so it is taken
 * from (head, data, padding) with the segment salt. Returns the head length or
 * a negative errno (-EINVAL for an invalid path, -E2BIG for oversize). */
size_t rec_head_size(const struct rec *r);
ssize_t rec_encode(const struct rec *r, uint64_t salt, uint8_t *head, size_t head_cap);
/* Decodes one record at buf. Returns its total length, -EAGAIN when buf ends
 * inside the record (a torn tail), -EBADMSG when it fails the validity rule.
 * String and data pointers in out point into buf. */
ssize_t rec_decode(const uint8_t *buf, size_t avail, uint64_t salt, struct rec *out);
/* Prints a one-line human-readable form. */
int rec_format(const struct rec *r, char *buf, size_t size);

/* ======================================================================
 * Journal (journal.c) — segment files of records, group commit. Format at
 * the top of journal.c.
 * ====================================================================== */

struct journal;

struct journal_pos {
	char segment[32]; /* file name inside the journal directory */
	uint64_t offset;
};

/* Opens the journal directory (creating nothing). Lists and checks segment
 * headers; records are read by journal_scan. */
int journal_open(int dirfd, const uint8_t node_id[16], uint64_t segment_bytes,
		 struct journal **out);
void journal_close(struct journal *j);

typedef int (*journal_visit_fn)(const struct rec *r, const struct journal_pos *pos, void *arg);

struct journal_scan {
	uint64_t first_lsn, last_lsn, last_epoch, records;
	int torn;                    /* a torn tail was found (and cut if asked) */
	struct journal_pos torn_at;  /* where the valid journal ends */
	uint64_t torn_bytes;
	struct journal_pos bad_at;   /* set when journal_scan returns -EBADMSG */
	uint64_t gap_first, gap_last; /* first gap met with JOURNAL_SCAN_ALLOW_GAPS */
	char why[160];
};

#define JOURNAL_SCAN_CUT_TORN 0x1   /* truncate a torn tail in place */
#define JOURNAL_SCAN_ALLOW_GAPS 0x2 /* a segment may start after a gap (records lost from an
				     * unsynced tail but covered by a checkpoint): report it */

/* Visits, in order, every valid record with lsn >= from_lsn. A bad record that
 * is not a torn tail stops the scan with -EBADMSG and res->bad_at. A visitor
 * returning non-zero stops the scan with that value. */
int journal_scan(struct journal *j, uint64_t from_lsn, int flags, journal_visit_fn fn,
		 void *arg, struct journal_scan *res);
/* Prepares appending: the next record gets LSN next_lsn under epoch. Must be
 * called after the last scan and before the first append. */
int journal_start(struct journal *j, uint64_t next_lsn, uint64_t epoch);
/* Appends r (r->lsn must be the next LSN). Never leaves a partial record:
 * on failure the segment is cut back and -errno returned. Not thread-safe
 * against itself: callers serialise appends (commit's order lock). */
int journal_append(struct journal *j, const struct rec *r);
/* Group commit: returns once every record up to lsn is durable. Concurrent
 * callers share one fdatasync. A failed sync is sticky (-EIO forever). */
int journal_sync(struct journal *j, uint64_t lsn);
uint64_t journal_appended_lsn(const struct journal *j);
uint64_t journal_durable_lsn(const struct journal *j);
uint64_t journal_bytes_appended(const struct journal *j);
/* Deletes whole segments whose every record has lsn < floor_lsn; never the
 * segment being appended to. Returns the number deleted or -errno. */
int journal_remove_below(struct journal *j, uint64_t floor_lsn);
/* Cuts the journal at pos deliberately (after corruption), saving the cut
 * bytes to save_dirfd/save_name. Later segments are moved aside too. */
int journal_cut(struct journal *j, const struct journal_pos *pos, int save_dirfd);
/* Number of segments and first LSN kept (for status/tests). */
int journal_segment_count(const struct journal *j);
/* LSN of the oldest record still kept (the first segment's first LSN). */
uint64_t journal_first_lsn(struct journal *j);
/* Replaces the whole journal by an empty one whose next record is next_lsn
 * (a slave that installed a snapshot at next_lsn - 1). Old segments are
 * deleted. The appender must be stopped (commit's order lock held). */
int journal_reset(struct journal *j, uint64_t next_lsn, uint64_t epoch);

/* Reading records back while the journal is being appended to (the
 * replicator shipping them). A cursor remembers where the previous read
 * ended so that a reader streaming forward never rescans a segment. */
struct journal_cursor {
	uint64_t next_lsn;  /* first LSN the next read returns */
	uint64_t seg_first; /* segment the cursor is in (0 = none yet) */
	uint64_t offset;    /* byte offset of next_lsn's record in it */
	uint64_t salt;      /* that segment's salt */
	int fd;             /* open segment, -1 when none */
};
void journal_cursor_init(struct journal_cursor *cur, uint64_t next_lsn);
void journal_cursor_close(struct journal_cursor *cur);
/* Copies whole records, exactly as stored, with LSNs from cur->next_lsn up
 * to upto_lsn (at most appended), from one segment into buf, and advances
 * the cursor. *salt receives the segment salt the records are checksummed
 * with, *nrec their number. At least one record is returned when any is
 * available and cap >= REC_MAX_SIZE. Returns 0, -ENOENT when next_lsn is no
 * longer kept (the reader needs a snapshot), -ERANGE when next_lsn is beyond
 * the journal's end, -EBADMSG on a record that fails its checksum. */
int journal_read(struct journal *j, struct journal_cursor *cur, uint64_t upto_lsn,
		 uint8_t *buf, size_t cap, size_t *len, uint64_t *salt, uint32_t *nrec);

/* ======================================================================
 * Apply (apply.c) — the one step that changes the cache, shared by the
 * master, slaves and recovery.
 * ====================================================================== */

struct apply_ctx {
	int datafd;    /* the data directory (O_RDONLY|O_DIRECTORY) */
	int stagingfd; /* STORE/staging: creations are built here, then moved in */
};

/* Applies r to the cache. hint_fd (or -1) is an open read-write fd of the
 * record's file, used instead of resolving the path (the master's fast path).
 * For CREATE, if out_fd is not NULL it receives a read-write fd of the new
 * file. Returns 0 or the operation's -errno; a failing record leaves the cache
 * as it was. */
int apply_record(const struct apply_ctx *ac, const struct rec *r, int hint_fd, int *out_fd);
/* Whether an error from apply_record is a function of the cache state alone
 * (so a replay in the same order fails the same way) rather than of the
 * machine (ENOSPC, EIO...). */
int apply_error_is_deterministic(int err);
/* For operations that are not idempotent (RENAME_EXCHANGE, COLLAPSE/INSERT
 * range), records the pre-state in aux[] before applying, and later tells
 * whether the operation already happened. Other ops: aux unused, 0 = redo. */
void apply_capture(const struct apply_ctx *ac, const struct rec *r, uint64_t aux[4]);
int apply_already_done(const struct apply_ctx *ac, const struct rec *r, const uint64_t aux[4]);
/* A few open files for streams of records without file handles (replay,
 * slaves): consecutive writes to one file resolve its path once. Any record
 * that changes names empties it, so a cached path always names the same file. */
#define APPLY_FDCACHE_SLOTS 256 /* direct-mapped by path hash */
struct apply_fdcache {
	int fd[APPLY_FDCACHE_SLOTS];
	char *path[APPLY_FDCACHE_SLOTS];
};
void apply_fdcache_init(struct apply_fdcache *fc);
void apply_fdcache_clear(struct apply_fdcache *fc);
/* apply_record() through the cache. */
int apply_record_cached(const struct apply_ctx *ac, struct apply_fdcache *fc,
			const struct rec *r);
/* Opens path beneath the data directory without following any symlink. */
int apply_open_beneath(const struct apply_ctx *ac, const char *path, int flags);
/* From now on in this thread, the unlink or rename of a record applied goes
 * through the mount whose root is mntfd (-1: back to the cache directly), so
 * the kernel's and libfuse's nodes follow the change (fs/held.c). */
void apply_through_mount(int mntfd);
/* Just the unlink (to NULL) or rename of op REC_UNLINK/REC_RMDIR/REC_RENAME
 * on the cache, paths resolved like a record's, nothing else touched: the
 * cache side of a change made through the mount. */
int apply_names_direct(const struct apply_ctx *ac, int op, const char *from, const char *to,
		       unsigned flags);
/* Moves the cache's from (resolved like a record's path) to dirfd/name,
 * outside the tree. */
int apply_name_move_out(const struct apply_ctx *ac, const char *from, int dirfd,
			const char *name);

/* ======================================================================
 * Store (store.c) — a node's directory: identity, data, journal, state.
 * Layout and file formats at the top of store.c.
 * ====================================================================== */

#define STORE_FORMAT 1

/* mmap'ed STORE/state: exact progress of the apply step. It survives a
 * process crash (page cache) but not a reboot; boot_id tells which. */
struct store_state {
	char magic[8];
	uint32_t version;
	uint32_t clean;         /* 1 after a clean unmount */
	char boot_id[40];
	uint64_t applied_lsn;   /* every record <= this is in the cache */
	uint64_t inflight_lsn;  /* being applied; may be partly in the cache */
	uint64_t aux[4];        /* apply_capture() of the in-flight record */
};

struct store {
	char *path;
	int dirfd, datafd, journalfd, stagingfd, lockfd;
	uint8_t node_id[16];
	uint64_t epoch;
	struct store_state *state;
};

struct store_checkpoint {
	uint64_t lsn;   /* the cache is durable through this LSN */
	uint64_t epoch;
};

int store_init(const char *path, char *err, size_t errlen);
#define STORE_OPEN_LOCK 0x1  /* take the exclusive lock (a mount) */
#define STORE_OPEN_STATE 0x2 /* map the state file */
int store_open(const char *path, int flags, struct store *st, char *err, size_t errlen);
void store_close(struct store *st);
int store_checkpoint_read(const struct store *st, struct store_checkpoint *ck);
int store_checkpoint_write(const struct store *st, const struct store_checkpoint *ck);
/* Records a higher epoch durably (STORE/epoch) and in st->epoch. */
int store_epoch_write(struct store *st, uint64_t epoch);
/* Epoch history (STORE/history): the LSN at which each epoch's records
 * begin on this node's timeline. Two nodes hold the same record at LSN x
 * exactly when their histories give x the same epoch (one master per epoch
 * writes each LSN once), so comparing histories finds where they forked. */
#define HISTORY_MAX 256
struct epoch_history {
	int n;
	uint64_t epoch[HISTORY_MAX];     /* strictly increasing */
	uint64_t first_lsn[HISTORY_MAX]; /* non-decreasing */
};
/* A store without the file (made before it existed) has [(1, 1)]. */
int store_history_read(const struct store *st, struct epoch_history *h);
int store_history_write(const struct store *st, const struct epoch_history *h);
/* Records that epoch begins at first_lsn: 1 when h changed, 0 when it
 * already knew, -EINVAL for an epoch older than its newest. */
int history_note(struct epoch_history *h, uint64_t epoch, uint64_t first_lsn);
/* The epoch of the record at lsn (0 before the first entry). */
uint64_t history_epoch_at(const struct epoch_history *h, uint64_t lsn);
/* Forgets epochs that begin after last_lsn (a journal cut back to it). */
void history_cut(struct epoch_history *h, uint64_t last_lsn);
/* The last LSN two timelines share: the largest L <= min(a_last, b_last)
 * such that every LSN up to L has the same epoch in both. */
uint64_t history_fork(const struct epoch_history *a, uint64_t a_last,
		      const struct epoch_history *b, uint64_t b_last);
int history_format(const struct epoch_history *h, char *buf, size_t len);
int history_parse(const char *text, struct epoch_history *h);

/* STORE/pid and STORE/mountpoint while mounted. */
int store_pid_write(const struct store *st, pid_t pid, const char *mnt);
void store_pid_remove(const struct store *st);

/* ======================================================================
 * Commit (commit.c) — the write-ahead rule in one place: LSN, journal
 * append, apply, progress mark, under one order lock.
 * ====================================================================== */

#define COMMIT_DIRTY_MAX 64

struct commit {
	pthread_mutex_t order_lock;
	struct journal *journal;     /* appends under order_lock */
	struct apply_ctx apply;
	struct store_state *state;   /* written under order_lock */
	uint64_t next_lsn;           /* order_lock */
	uint64_t epoch;              /* order_lock */
	int sticky_err;              /* order_lock; once set every mutation fails */
	uint64_t space_reserve;      /* bytes kept free on the store's filesystem */
	int64_t space_est;           /* order_lock: free-space estimate */
	uint64_t space_checked_ns;   /* order_lock */
	void (*on_commit)(void *arg, uint64_t lsn, uint64_t bytes); /* after each */
	void *on_commit_arg;
	/* Before each record is applied (order_lock held): a snapshot being sent
	 * saves what the record is about to change. */
	void (*before_apply)(void *arg, const struct rec *r, int hint_fd);
	void *before_apply_arg;
	/* What the next checkpoint must make durable (order_lock): while only
	 * file contents changed through open files, fsyncing those files is
	 * enough and the journal they were logged in need never reach the disk;
	 * anything else sets need_syncfs. */
	int dirty_fds[COMMIT_DIRTY_MAX];
	uint64_t dirty_inos[COMMIT_DIRTY_MAX];
	int ndirty;
	int need_syncfs;
};

/* Hands over (and resets) what changed since the last call: the fds the
 * caller must fsync and close, or *need_syncfs. Takes order_lock. */
int commit_take_dirty(struct commit *c, int *fds, int *need_syncfs, uint64_t *applied_lsn);

int commit_init(struct commit *c, struct journal *j, const struct apply_ctx *ac,
		struct store_state *state, uint64_t next_lsn, uint64_t epoch);
void commit_release(struct commit *c);
/* Logs r and applies it. r->lsn == 0: a local operation (LSN, epoch and time
 * assigned here). Returns the operation's result; -EIO once sticky. */
int commit_op(struct commit *c, struct rec *r, int hint_fd, int *out_fd);
/* commit_op() for a caller that already holds c->order_lock: one that must
 * read the cache and log what it read with nothing committed in between
 * (verify's repair). Same contract otherwise. */
int commit_op_locked(struct commit *c, struct rec *r, int hint_fd, int *out_fd);
uint64_t commit_last_lsn(struct commit *c);

/* ======================================================================
 * FUSE daemon (fuse_ops.c, daemon.c)
 * ====================================================================== */

struct fs_options {
	int foreground, debug;
	uint64_t checkpoint_bytes;
	unsigned checkpoint_seconds;
	uint64_t segment_bytes;
	int keep_journal;
	int replay_full;
	int read_only;          /* -o ro: the kernel refuses every write */
	double attr_timeout, entry_timeout;
};

int fs_mount_main(int argc, char **argv);

#endif
