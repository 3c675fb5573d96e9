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

#endif
