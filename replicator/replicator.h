/* replicator: shipping the journal from a master to its slaves over HTTP
 * (libmicrohttpd serves, libcurl fetches), sealed with the cluster key
 * (libsodium), async or sync; the node's status and metrics.
 *
 * Slaves pull: a slave names its master, says hello, then long-polls for
 * batches of records from its next LSN and reports what it holds durably
 * (its acknowledgement). The master learns its slaves from these requests and
 * remembers them in STORE/slaves; what they still need holds back journal
 * deletion (recovery/retention.c), up to a byte bound beyond which a slave is
 * sent a snapshot instead.
 */
#ifndef REPLFS_REPLICATOR_H
#define REPLFS_REPLICATOR_H

#include "../fs/fs.h"
#include "../recovery/recovery.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ======================================================================
 * Wire (wire.c): the sealed envelope every request and response travels in.
 * Format at the top of wire.c. Pure logic, no I/O.
 * ====================================================================== */

#define REPL_KEY_BYTES 32
#define REPL_ID_BYTES 16

enum repl_msg {
	REPL_MSG_HELLO = 1,    /* slave -> master: join or rejoin; opens a session */
	REPL_MSG_WELCOME = 2,  /* master -> slave: session id, master position */
	REPL_MSG_FETCH = 3,    /* slave -> master: records from LSN, my acknowledgement */
	REPL_MSG_BATCH = 4,    /* master -> slave: records */
	REPL_MSG_ACK = 5,      /* slave -> master: what I hold durably */
	REPL_MSG_ACKED = 6,    /* master -> slave: acknowledgement taken */
	REPL_MSG_SNAPSHOT = 7, /* slave -> master: send me a snapshot */
	REPL_MSG_ANNOUNCE = 8, /* new master -> any node: I am the master of epoch E */
	REPL_MSG_PROBE = 9,    /* any -> any: who are you, where are you */
	REPL_MSG_INFO = 10,    /* answer to PROBE and ANNOUNCE */
	REPL_MSG_PROMOTE = 11, /* master -> slave: take over (switchover) */
	REPL_MSG_VERIFY = 12,  /* master -> slave: your manifest at LSN X */
	REPL_MSG_MANIFEST = 13, /* slave -> master: the manifest */
	REPL_MSG_ERROR = 15,   /* master -> slave: refusal with a reason */
	REPL_MSG_MAX
};

#define REPL_ENV_HEAD 80u  /* envelope bytes before the ciphertext */
#define REPL_ENV_TAG 16u   /* authentication tag after it */
#define REPL_ENV_OVERHEAD (REPL_ENV_HEAD + REPL_ENV_TAG)

struct repl_env {
	uint8_t type;
	uint8_t sender[REPL_ID_BYTES];
	uint64_t epoch;                 /* the sender's epoch */
	uint8_t session[REPL_ID_BYTES]; /* HELLO/WELCOME: the hello's challenge */
	uint64_t counter;               /* strictly increasing per session */
};

/* Seals in place: buf holds REPL_ENV_HEAD bytes of room, then the plaintext
 * (len bytes), then REPL_ENV_TAG bytes of room. Returns the envelope length. */
size_t repl_seal(const uint8_t key[REPL_KEY_BYTES], const struct repl_env *e, uint8_t *buf,
		 size_t len);
/* Opens in place: on success *plain points at the plaintext inside buf.
 * -EBADMSG for anything not sealed with the key (forged, corrupt, wrong key,
 * truncated), -EPROTO for a wrong magic/version. */
int repl_open(const uint8_t key[REPL_KEY_BYTES], uint8_t *buf, size_t len, struct repl_env *e,
	      uint8_t **plain, size_t *plain_len);

/* Batch plaintext: a fixed header, then records exactly as the master's
 * journal holds them (checksummed with the segment salt given here). */
#define REPL_BATCH_HEAD 56u
struct repl_batch_head {
	uint64_t master_lsn;   /* last LSN in the master's journal when sent */
	uint64_t master_epoch;
	uint64_t first_lsn;
	uint64_t salt;
	uint32_t nrec;
	uint32_t flags;
	uint64_t master_time_ns;
	uint64_t verify_lsn;   /* a verify compares trees at this LSN (0 = none) */
};
void repl_batch_head_put(uint8_t *out, const struct repl_batch_head *h);
int repl_batch_head_get(const uint8_t *in, size_t len, struct repl_batch_head *h);

/* Cluster key: `replfs keygen` prints 64 hex digits; a key file must not be
 * readable by group or others. */
int repl_keygen(FILE *out);
int repl_key_load(const char *path, uint8_t key[REPL_KEY_BYTES], char *err, size_t errlen);

/* ======================================================================
 * State (state.c): what the master knows of each slave, sync mode, lag.
 * Pure logic under one mutex; the HTTP sides call into it.
 * ====================================================================== */

enum repl_slave_state {
	REPL_SLAVE_STREAMING = 0, /* within a batch of the end */
	REPL_SLAVE_CATCHING_UP,   /* fetching older records */
	REPL_SLAVE_SNAPSHOT,      /* receiving a snapshot */
	REPL_SLAVE_GONE,          /* not heard from for gone_ms */
};
const char *repl_slave_state_name(enum repl_slave_state s);

#define REPL_SLAVES_MAX 64
#define REPL_LAG_RING 65536 /* LSN -> (commit time, cumulative bytes) */

struct repl_slave {
	uint8_t node_id[REPL_ID_BYTES];
	char addr[96];           /* where its requests come from */
	uint8_t session[REPL_ID_BYTES];
	uint64_t last_counter;   /* replay protection: highest request counter */
	uint64_t acked_lsn;      /* durable in its journal */
	uint64_t sent_lsn;       /* last LSN sent to it */
	uint64_t seen_mono_ns;   /* last request */
	int in_snapshot;
	uint64_t snap_lsn;       /* the snapshot it was last sent */
	char url[128];           /* where it listens (http://HOST:PORT), "" if not */
	int known;               /* slot in use */
	uint64_t verifying_lsn;  /* the verify point it last said it works on */
	uint64_t verifying_mono_ns; /* when it last said so */
};

struct repl_state {
	pthread_mutex_t lock;
	pthread_cond_t acked;     /* an acknowledgement arrived */
	pthread_cond_t appended;  /* the journal grew */
	struct repl_slave slaves[REPL_SLAVES_MAX];
	int nslaves;
	uint64_t gone_ms;
	/* sync mode */
	int sync_count;           /* slaves that must hold a record (0 = async) */
	uint64_t sync_timeout_ms;
	int degraded;
	uint64_t degraded_since_ns, degraded_total;
	/* lag: commit time and cumulative bytes per recent LSN */
	uint64_t ring_lsn[REPL_LAG_RING];
	uint64_t ring_mono[REPL_LAG_RING];
	uint64_t ring_bytes[REPL_LAG_RING];
	uint64_t last_lsn, total_bytes;
	/* refusals, by reason */
	uint64_t refused_auth, refused_replay, refused_epoch, refused_path;
	uint64_t snapshots_sent;
	int dirty; /* slave table changed: persist it */
	/* fencing: a newer master exists; nothing more is acknowledged */
	int fenced;
	int (*before_degrade)(void *arg); /* lock not held; may fence */
	void *before_degrade_arg;
};

void repl_state_init(struct repl_state *s, int sync_count, uint64_t sync_timeout_ms,
		     uint64_t gone_ms);
void repl_state_destroy(struct repl_state *s);
/* Journal grew to lsn (cumulative bytes total). */
void repl_state_appended(struct repl_state *s, uint64_t lsn, uint64_t bytes, uint64_t now_mono);
/* Finds or adds a slave; -ENOSPC when the table is full. Lock held. */
struct repl_slave *repl_state_slave(struct repl_state *s, const uint8_t node_id[REPL_ID_BYTES],
				    int create);
/* Takes an acknowledgement (never moves backwards); may end degraded mode
 * once a slave has caught up. Lock held. */
void repl_state_ack(struct repl_state *s, struct repl_slave *sl, uint64_t acked,
		    uint64_t now_mono);
/* Sync mode: waits until sync_count slaves hold lsn durably, or degrades
 * after the timeout (asking before_degrade first). Returns 0 (replicated or
 * degraded) or -EIO once fenced and lsn is not held by enough slaves. Lock
 * not held. */
int repl_state_wait(struct repl_state *s, uint64_t lsn);
/* A newer master exists: waiters give up with -EIO. */
void repl_state_fence(struct repl_state *s);
/* How many slaves hold lsn. Lock held. */
int repl_state_holders(const struct repl_state *s, uint64_t lsn);
enum repl_slave_state repl_state_slave_state(const struct repl_state *s,
					     const struct repl_slave *sl, uint64_t now_mono);
/* Lag of a slave: records, bytes and milliseconds behind. Lock held. */
void repl_state_lag(const struct repl_state *s, const struct repl_slave *sl, uint64_t now_mono,
		    uint64_t *records, uint64_t *bytes, uint64_t *ms);
/* Replay protection for one session: 1 = counter accepted (and recorded),
 * 0 = seen before or too old. */
#define REPL_REPLAY_WINDOW 64
int repl_replay_check(uint64_t *highest, uint64_t *window, uint64_t counter);
/* Persisted slave table (STORE/slaves). */
int repl_state_save(struct repl_state *s, int dirfd);
int repl_state_load(struct repl_state *s, int dirfd);

/* ======================================================================
 * The running replicator (master.c, slave.c, status.c)
 * ====================================================================== */

struct repl_options {
	char listen_host[64];   /* "" = no TCP listener */
	unsigned listen_port;
	char master_url[256];   /* "" on a master */
	/* How the other nodes reach this one when that is not the listen
	 * address (NAT, a proxy, a wildcard bind): "" = derived from listen. */
	char advertise_url[128];
	int have_key;
	uint8_t key[REPL_KEY_BYTES];
	int sync_count;         /* --sync[=N]; 0 = async */
	unsigned sync_timeout_ms;
	int strict;             /* every operation waits, not only fsync */
	uint64_t retain_bytes;  /* journal kept for a lagging slave */
};

/* Parses "[HOST]:PORT" (HOST defaults to 0.0.0.0). */
int repl_parse_listen(const char *s, struct repl_options *o);

/* What the replicator works on; owned by the daemon. */
struct repl_node {
	struct store *st;
	struct journal *journal;
	struct commit *commit;
	const char *mountpoint;
	/* Slave: after each applied record, so the kernel drops what it cached. */
	void (*invalidate)(void *arg, const struct rec *r);
	/* Slave: a snapshot replaced the data directory. */
	void (*data_swapped)(void *arg, int new_datafd, int old_datafd);
	void *cb_arg;
	/* Slave: held for writing while a record is applied; the FUSE read side
	 * holds it for reading, so no reader sees half an operation. */
	pthread_rwlock_t *apply_lock;
	/* The node's role changed: writable (a master) or not (a slave, a
	 * deposed master); slave reads take apply_lock. */
	void (*role_changed)(void *arg, int writable);
	/* Slave: may apply a received record itself, without apply_lock (1, its
	 * result in *rc), or leave it to the usual way (0). fs/held.c. */
	int (*apply_record)(void *arg, struct commit *cm, struct rec *r, int *rc);
};

struct replicator;

int repl_start(const struct repl_options *o, const struct repl_node *node,
	       struct replicator **out, char *err, size_t errlen);
void repl_stop(struct replicator *r);
/* A slave stops applying (before the final checkpoint of an unmount). */
void repl_stop_following(struct replicator *r);
int repl_is_slave(const struct replicator *r);
/* The mount must start read-only: a slave, or a master that knows it was
 * deposed (STORE/deposed). */
int repl_starts_readonly(const struct replicator *r);
/* commit->on_commit chain (master): wakes waiting fetches. */
void repl_note_commit(struct replicator *r, uint64_t lsn, uint64_t bytes);
/* Sync mode: returns once lsn is durable on enough slaves (or degraded). */
int repl_wait_replicated(struct replicator *r, uint64_t lsn);
int repl_strict(const struct replicator *r);
/* Links a snapshot being sent holds to inode ino: the master's getattr
 * hides them, so st_nlink stays what the application made it. */
unsigned repl_snapshot_links(struct replicator *r, uint64_t ino);
/* checkpoint_opts.slave_needs */
int repl_slave_needs(void *arg, struct retention_slave *out, int max, uint64_t *max_bytes);

/* Status (status.c): JSON text (malloc'd) and Prometheus text. */
char *repl_status_json(struct replicator *r);
char *repl_metrics_text(struct replicator *r);
/* The mount's control file (MNT/.replfs): "key value" lines saying the role
 * (master, slave, deposed, or standalone for a master without --listen),
 * epoch, LSN, current master and whether the mount takes writes (never when
 * mounted_ro: -o ro). Returns snprintf's count. */
int repl_role_text(struct replicator *r, int mounted_ro, char *buf, size_t len);
/* `replfs status MNT [--json]` */
int repl_status_main(int argc, char **argv);
/* A request to the daemon of mountpoint mnt over its control socket (GET,
 * or POST of post_body); *out is the malloc'd answer. Logs why it failed. */
int repl_control_call(const char *mnt, const char *path, const char *post_body,
		      long timeout_s, char **out, long *code);
/* Progress of the daemon's first task named prefix..., drawn on stderr
 * while a command waits, if stderr is a terminal (NULL otherwise). */
struct repl_watch *repl_watch_start(const char *mnt, const char *prefix);
void repl_watch_stop(struct repl_watch *w);
/* failover.c: `replfs promote MNT [--force]`, `replfs switchover MNT URL`,
 * `replfs verify MNT [--repair] [--json]` */
int repl_promote_main(int argc, char **argv);
int repl_switchover_main(int argc, char **argv);
int repl_verify_main(int argc, char **argv);

#endif
