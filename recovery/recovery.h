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

#endif
