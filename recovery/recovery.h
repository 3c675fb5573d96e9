/* recovery: bringing a node's cache back in line with its journal after a
 * crash, checkpoints, and the rule for which journal may be deleted. */
#ifndef REPLFS_RECOVERY_H
#define REPLFS_RECOVERY_H

#include "../fs/fs.h"

#include <stdint.h>

/* ---- retention: THE rule for which journal records are still needed ---- */

/* What one known slave still needs from this node's journal. */
struct retention_slave {
	uint64_t next_lsn;  /* first LSN it has not durably acknowledged */
	uint64_t lag_bytes; /* journal bytes between that LSN and the end */
};

struct retention_inputs {
	uint64_t checkpoint_lsn; /* the cache is durable through this LSN */
	int keep_all;            /* operator asked to keep the whole journal */
	const struct retention_slave *slaves; /* known slaves (gone ones excluded) */
	int nslaves;
	uint64_t max_slave_bytes; /* a slave further behind than this gets a
				    * snapshot instead: its needs stop counting */
};

/* Lowest LSN the journal must keep; records below it may be deleted. */
uint64_t retention_floor(const struct retention_inputs *in);

/* ---- rejoin: a node whose timeline forked from its new master's ---- */

/* What the node holds after the fork was never the master's. Before the
 * node takes the master's tree (a snapshot), rejoin_set_aside() keeps every
 * file those records changed, as it is now, in STORE/recovery/<dir>/files/,
 * and lists the records and files in STORE/recovery/<dir>/REPORT and
 * report.json. STORE/rejoin marks the rejoin in progress (format in
 * rejoin.c), so that a restart finishes it. */
struct rejoin_info {
	uint64_t fork_lsn;     /* last LSN both timelines share */
	uint64_t fork_epoch;   /* epoch of this node's records after it */
	uint64_t master_epoch; /* the master it rejoins */
	char master[256];      /* its URL */
};
int rejoin_set_aside(struct store *st, struct journal *j, const struct rejoin_info *ri,
		     char *dir, size_t dirlen);
/* 1 when a rejoin set its files aside but the tree is not replaced yet (the
 * follower must install a snapshot before anything else), 0 when none. */
int rejoin_pending(struct store *st, struct rejoin_info *ri);
/* The tree was replaced: the rejoin is complete. */
int rejoin_finish(struct store *st);

/* ---- crash replay ---- */

enum recovery_mode {
	RECOVERY_CLEAN = 0,  /* clean unmount: nothing to replay */
	RECOVERY_PROCESS,    /* process crash: page cache intact, exact progress known */
	RECOVERY_REBOOT,     /* machine restart: replay everything after the checkpoint */
};

struct recovery_report {
	enum recovery_mode mode;
	uint64_t checkpoint_lsn;
	uint64_t first_lsn, last_lsn;   /* replayed range */
	uint64_t records;               /* records re-applied */
	uint64_t failed;                /* of which failed as they did originally */
	uint64_t journal_last_lsn, journal_last_epoch;
	uint64_t elapsed_ms;
	int torn;
	struct journal_pos torn_at;
	uint64_t torn_bytes;
	/* The cache holds effects of records the journal no longer has (they
	 * were applied, then lost from an unsynced journal tail): reported. */
	uint64_t lost_first, lost_last;
};

/* Checks the journal from the checkpoint on (torn tail cut, corruption
 * refused with its position in err), re-applies what the cache lacks, then
 * records a new checkpoint. On success the journal is ready to append after
 * rep->journal_last_lsn. */
#define RECOVERY_FULL 0x1 /* replay everything after the checkpoint, as after a restart */
int recovery_run(struct store *st, struct journal *j, int flags, struct recovery_report *rep,
		 char *err, size_t errlen);
/* Prints the one-line summary ("replfs: recovery: ...") for a report. */
void recovery_report_print(const struct recovery_report *rep, const char *store_path);

/* ---- checkpoints ---- */

struct checkpointer;

struct checkpoint_opts {
	uint64_t every_bytes;    /* journal bytes between checkpoints */
	unsigned every_seconds;
	int keep_journal;
	/* Replication: fills what each slave still needs (returns how many, at
	 * most max) and the byte bound; NULL on a node without slaves. */
	int (*slave_needs)(void *arg, struct retention_slave *out, int max, uint64_t *max_bytes);
	void *slave_needs_arg;
};

/* Starts a thread that checkpoints in the background: the cache is synced
 * (syncfs), the journal made durable to the same LSN, the checkpoint file
 * written, and segments below retention_floor() removed. */
int checkpointer_start(struct store *st, struct journal *j, struct commit *c,
		       const struct checkpoint_opts *o, struct checkpointer **out);
/* Hook for commit->on_commit: counts bytes, wakes the thread when due. */
void checkpointer_note(void *arg, uint64_t lsn, uint64_t bytes);
/* Takes one checkpoint now (also used at clean unmount). */
int checkpoint_now(struct store *st, struct journal *j, struct commit *c,
		   const struct checkpoint_opts *o);
void checkpointer_stop(struct checkpointer *cp);

/* ---- snapshots ---- */

/* A consistent copy of the master's tree at one LSN for a slave that is new or
 * too far behind the retained journal; the slave then follows the journal
 * from LSN + 1. Design, the sender/copy-on-write protocol, the stream format
 * and the install marker are documented at the top of snapshot.c. */

struct snapshot;

/* Master. Freezes the tree at L = the last applied LSN (takes c->order_lock
 * itself: call without it) under STORE/snapshots/<id>/ and hooks
 * c->before_apply so that files the snapshot shares are saved before the
 * master changes them. Returns 0 with one reference in *out; -EBUSY when a
 * snapshot is already live (share it with snapshot_get), the commit's sticky
 * error, or -errno. */
int snapshot_create(struct store *st, struct commit *c, struct snapshot **out);
/* The commit hook snapshot_create installs (order_lock held); never fails the
 * record: a copy that cannot be made fails the snapshot instead. */
void snapshot_before_apply(void *arg, const struct rec *r, int hint_fd);
struct snapshot *snapshot_get(struct snapshot *s);
/* The last reference detaches the hook (takes order_lock) and deletes
 * STORE/snapshots/<id>. */
void snapshot_put(struct snapshot *s);
/* Removes leftovers of snapshots of an earlier run (at mount, before the
 * first snapshot; their hard links inflate live files' link counts). */
int snapshot_cleanup_stale(struct store *st);
uint64_t snapshot_lsn(const struct snapshot *s);
uint64_t snapshot_epoch(const struct snapshot *s);
uint64_t snapshot_bytes(const struct snapshot *s); /* total file bytes (progress) */

struct snapshot_stats {
	uint64_t entries, files, bytes;  /* frozen at L */
	uint64_t copied_files, copied_bytes; /* saved before the master changed them */
	uint64_t released_files;         /* changed after every reader had sent them */
	uint64_t reader_switches;        /* a reader moved to a copy in mid-file */
	int failed;                      /* -errno once the snapshot failed, else 0 */
};
void snapshot_stats(const struct snapshot *s, struct snapshot_stats *out);
/* 1 while the snapshot holds a hard link to live inode ino (its st_nlink then
 * counts one link that is not in data/), else 0. Lock-free. */
unsigned snapshot_extra_links(const struct snapshot *s, uint64_t ino);

/* The encrypted stream of a snapshot, pulled by the HTTP server. bind (the
 * session id and request counter) is authenticated with it: the receiver must
 * pass the same bytes. Open takes a reference on s; -ESTALE when s can no
 * longer be sent whole (a file changed after every earlier reader had sent it:
 * put s and make a new snapshot), the snapshot's failure, or -errno. */
struct snapshot_reader;
int snapshot_reader_open(struct snapshot *s, const uint8_t key[32], const uint8_t *bind,
			 size_t bindlen, struct snapshot_reader **out);
/* Up to max bytes of the stream; 0 = end of stream, <0 = -errno (the
 * snapshot failed: the slave retries later). */
ssize_t snapshot_reader_read(struct snapshot_reader *r, uint8_t *buf, size_t max);
void snapshot_reader_close(struct snapshot_reader *r);
uint64_t snapshot_reader_sent(const struct snapshot_reader *r); /* file bytes so far */
/* Path of the file being sent, or NULL (progress display). */
const char *snapshot_reader_file(const struct snapshot_reader *r);

/* Slave. Receiving: begin (marker STORE/install "receiving", fresh
 * STORE/incoming/tree/), write the stream in any split, end. -EBUSY from
 * begin when an earlier install is half swapped in (finish it with
 * snapshot_install_swap or _recover first). */
struct snapshot_install;
int snapshot_install_begin(struct store *st, const uint8_t key[32], const uint8_t *bind,
			   size_t bindlen, struct snapshot_install **out);
/* -EBADMSG on forged, damaged or replayed input, -EINVAL on a bad path, -EPROTO
 * on an unknown format version, -ENOSPC...; errors are sticky: abort then. */
int snapshot_install_write(struct snapshot_install *in, const void *buf, size_t len);
/* Checks the stream is complete (-EBADMSG when truncated) and of an epoch not
 * older than this node's (-ESTALE), sets directory times, syncs the tree and
 * writes the marker "swap": from here the install is finished, by
 * snapshot_install_swap now or by snapshot_install_recover after a crash.
 * Always consumes in: on failure the partial install is removed as by abort. */
int snapshot_install_end(struct snapshot_install *in, uint64_t *lsn, uint64_t *epoch);
/* Removes the partial tree and the marker; frees in. */
void snapshot_install_abort(struct snapshot_install *in);
uint64_t snapshot_install_received(const struct snapshot_install *in); /* file bytes */
uint64_t snapshot_install_expected(const struct snapshot_install *in); /* total, once known */
/* Exchanges data/ and the new tree (unless done already), then: st->datafd is
 * the new data/ (the old fd goes to *old_datafd, or is closed when it is
 * NULL: the caller keeps it open while FUSE ops may use it), the journal is
 * reset to start at L+1, checkpoint L, epoch, state applied_lsn = L, the old
 * tree and the marker removed. Idempotent, safe to redo after a crash at any
 * point. On a live slave call it with commit's order lock held, then point
 * commit's apply.datafd (and every other copy of the data fd) at st->datafd
 * and restart the journal appender at L+1. -ENOENT without a marker. */
int snapshot_install_swap(struct store *st, struct journal *j, int *old_datafd);
/* At mount, after journal_open and before recovery_run: finishes an install
 * whose marker says "swap", discards one still "receiving", and removes
 * leftovers of incoming/. */
int snapshot_install_recover(struct store *st, struct journal *j);

/* ---- verify ---- */

/* Comparing nodes at one LSN X: each node freezes its tree at X
 * (snapshot_create), hashes it into a MANIFEST, the master compares every
 * slave's manifest with its own, and a repair makes the slaves match by
 * journaling the master's state as ordinary records. Manifest encoding and
 * the repair scheme are documented at the top of verify.c. */

/* The snapshot's item stream in plaintext (format at the top of snapshot.c),
 * read under the same copy-on-write protocol as snapshot_reader_open; read
 * and close it with snapshot_reader_read/_close. Same errors as the
 * encrypted reader (-ESTALE: make a new snapshot). */
int snapshot_reader_open_plain(struct snapshot *s, struct snapshot_reader **out);

/* That item sequence cut into items, for each of its consumers (the install
 * and the manifest builder), so that a stream one refuses the other refuses
 * too. The framer owns the stream's structure: the order rule, the size
 * limits, HEAD, TRAILER and an entry's envelope (lengths, nanoseconds, the
 * root first); the caller owns what entries and file items mean, through
 * three callbacks given arg. */
enum snapshot_item_type {
	IT_HEAD = 1,
	IT_DIR = 2,
	IT_FILE = 3,
	IT_HARDLINK = 4,
	IT_SYMLINK = 5,
	IT_NODE = 6,
	IT_DATA = 7,
	IT_HOLE = 8,
	IT_FXATTR = 9,
	IT_TRAILER = 10,
};
/* What the HEAD item announced; zeros before it. */
struct snapshot_head {
	uint64_t lsn, epoch, entries, files, file_bytes;
};
struct snapshot_items;
struct snapshot_items_ops {
	/* 1 with the content bytes the current FILE still expects in *room,
	 * from its entry to its FXATTR item; 0 between files. */
	int (*file_room)(void *arg, uint64_t *room);
	/* The next n bytes of a DATA body: bodies come in pieces, unbuffered. */
	int (*data)(void *arg, const uint8_t *p, size_t n);
	/* A whole DIR, FILE, HARDLINK, SYMLINK, NODE, HOLE or FXATTR item, len
	 * bytes of body (NULL when len is 0); an entry's envelope is checked. */
	int (*item)(void *arg, uint32_t type, const uint8_t *body, uint32_t len);
};
int snapshot_items_new(const struct snapshot_items_ops *ops, void *arg,
		       struct snapshot_items **out);
/* Plaintext in pieces of any size. -EBADMSG for a malformed stream (an item
 * out of place or too long, a bad HEAD, entry envelope or TRAILER), -EINVAL
 * when the root is not the first entry, -EPROTO on an unknown version, else
 * the first error of a callback, or -ENOMEM. Not sticky by itself: the
 * caller stops feeding after an error. */
int snapshot_items_feed(struct snapshot_items *it, const void *buf, size_t len);
/* 1 when what was fed ends exactly with the TRAILER item, else 0. */
int snapshot_items_done(const struct snapshot_items *it);
const struct snapshot_head *snapshot_items_head(const struct snapshot_items *it);
void snapshot_items_free(struct snapshot_items *it);

#define VERIFY_BLOCK (1u << 20) /* content is compared in blocks of this size */
#define VERIFY_DIGEST 32        /* BLAKE2b-256 */

/* One path of a tree. Pointers point into the manifest's own storage. */
struct verify_entry {
	const char *path;        /* relative, "" = the root */
	uint32_t type;           /* st_mode & S_IFMT */
	uint32_t perm;           /* st_mode & 07777 */
	uint32_t uid, gid;
	uint64_t size;           /* regular files, else 0 */
	uint64_t rdev;           /* character and block devices, else 0 */
	const char *target;      /* symlinks: the target, else "" */
	const char *link;        /* a name of an inode with several names
				  * (any type but a directory): the smallest
				  * path (strcmp) of them, "" for that one
				  * itself and for a single name; attributes
				  * and content are the inode's */
	uint8_t xattr_digest[VERIFY_DIGEST];
	uint32_t xattr_count;
	uint32_t xattr_names_len;
	const char *xattr_names; /* xattr_count names, each NUL-terminated, in
				  * ascending order; xattr_names_len bytes */
	uint8_t digest[VERIFY_DIGEST]; /* regular files: the whole content */
	uint64_t nblocks;        /* ceil(size / VERIFY_BLOCK) */
	const uint8_t *blocks;   /* nblocks digests of VERIFY_DIGEST bytes */
};

struct verify_manifest {
	struct verify_entry *entries; /* ascending by strcmp(path); the root first */
	size_t n;
	uint64_t lsn, epoch;          /* of the snapshot */
	uint64_t files, file_bytes;   /* distinct regular files, their total size */
	uint64_t bytes_hashed;        /* content bytes read (holes are not read) */
	void *mem;                    /* private: what the entries point into */
};

/* Builds the manifest of a snapshot (takes no reference on s: hold one).
 * -ESTALE when the snapshot can no longer be read whole, its failure, or
 * -errno. Reads every file: minutes for a large tree. */
int verify_manifest_build(struct snapshot *s, struct verify_manifest *m,
			  void (*progress)(void *arg, uint64_t bytes), void *progress_arg);

/* The same from the plaintext item stream in pieces of any size (tests, or
 * a stream from elsewhere). feed and finish return -EBADMSG on a malformed
 * stream (sticky), -EINVAL on a bad path, -EPROTO on an unknown version;
 * finish -EBADMSG when the stream is incomplete. Free the builder after
 * finish, whatever it returned. */
struct verify_builder;
int verify_builder_new(struct verify_builder **out);
int verify_builder_feed(struct verify_builder *b, const void *buf, size_t len);
int verify_builder_finish(struct verify_builder *b, struct verify_manifest *m);
void verify_builder_free(struct verify_builder *b);

/* Binary form for the network: *out is malloc'd. */
int verify_manifest_encode(const struct verify_manifest *m, uint8_t **out, size_t *len);
/* Strict: -EBADMSG on any malformed, truncated or trailing byte, or a bad
 * path; -EPROTO on an unknown version. m is untouched on failure. */
int verify_manifest_decode(const uint8_t *buf, size_t len, struct verify_manifest *m);
void verify_manifest_free(struct verify_manifest *m);
const struct verify_entry *verify_manifest_find(const struct verify_manifest *m,
						const char *path);

/* What differs at one path (bits of verify_diff.what). */
#define VERIFY_MISSING 0x001 /* the master has it, the slave does not */
#define VERIFY_EXTRA 0x002   /* the slave has it, the master does not */
#define VERIFY_TYPE 0x004    /* (nothing else is compared then) */
#define VERIFY_CONTENT 0x008
#define VERIFY_SIZE 0x010
#define VERIFY_MODE 0x020
#define VERIFY_OWNER 0x040
#define VERIFY_TARGET 0x080
#define VERIFY_XATTR 0x100
#define VERIFY_RDEV 0x200
#define VERIFY_LINK 0x400    /* not the same names share its inode */

struct verify_diff {
	const char *path;
	unsigned what;
	const struct verify_entry *m; /* the master's entry; NULL when EXTRA */
	const struct verify_entry *s; /* the slave's; NULL when MISSING */
	uint64_t nblocks;             /* CONTENT: how many blocks differ */
	uint64_t *blocks;             /* CONTENT: which, ascending */
};

/* Every difference, ascending by path, in a malloc'd array (*out NULL when
 * none). The diffs point into both manifests: keep them until
 * verify_diffs_free. -ESTALE when the manifests are not of the same LSN. */
int verify_compare(const struct verify_manifest *master, const struct verify_manifest *slave,
		   struct verify_diff **out, size_t *n);
void verify_diffs_free(struct verify_diff *d, size_t n);
/* One line without a newline, e.g. "a/b.txt: content differs (block 0 of 1),
 * mode 0644 vs 0600" (master's value first). m and s: the manifests d came
 * from (-EINVAL if not; NULL skips the check). -ENOBUFS when cut short (buf
 * still terminated). */
int verify_diff_describe(const struct verify_diff *d, const struct verify_manifest *m,
			 const struct verify_manifest *s, char *buf, size_t len);
/* 0 when no record can fix d without changing the master: a TYPE, symlink
 * TARGET, RDEV or LINK difference, or xattrs of a symlink. verify_repair
 * skips it. */
int verify_diff_repairable(const struct verify_diff *d);

struct verify_repair_stats {
	uint64_t repaired;     /* diffs journaled in full */
	uint64_t unrepairable; /* see verify_diff_repairable */
	uint64_t changed;      /* the master's path changed since the snapshot in a
				* way that makes the diff moot or unsafe to
				* repair: skipped (verify again) */
	uint64_t failed;       /* a record failed on the master unexpectedly */
	uint64_t records;      /* records logged */
	uint64_t bytes;        /* content bytes logged */
	uint64_t first_lsn, last_lsn; /* of the records logged, 0 when none */
};

/* Master only (the caller checks the role), without c->order_lock: takes it
 * for one path at a time. Logs, through commit, records that turn each
 * slave's differing path into the master's CURRENT state of it and that
 * leave the master as it is (scheme at the top of verify.c), then makes them
 * durable (journal_sync). Diffs that cannot or need not be repaired are
 * counted in st and logged. Returns 0, or -errno when it had to stop (the
 * commit's sticky error, no space to log, out of memory). Drop the snapshot
 * first: while it lives, every file repaired is copied for it. */
int verify_repair(struct commit *c, const struct verify_diff *d, size_t n,
		  struct verify_repair_stats *st);

#endif
