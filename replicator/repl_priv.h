/* Private to replicator/: the running replicator shared by master.c,
 * slave.c and status.c. */
#ifndef REPLFS_REPL_PRIV_H
#define REPLFS_REPL_PRIV_H

#include "replicator.h"

#include <microhttpd.h>
#include <stdatomic.h>

#define REPL_PATH "/repl"
#define REPL_REQ_MAX (1u << 20)          /* largest control request body */
#define REPL_BATCH_BYTES (8u << 20)      /* records per batch, normally */
#define REPL_POLL_MS_MAX 2000u           /* longest long poll */
#define REPL_CHALLENGES 64               /* hello challenges outstanding */
#define REPL_CHALLENGE_NS (30ull * 1000000000ull) /* and how long one is good */

/* Per-slave fetch state on the master: one journal cursor and buffer. */
struct repl_fetch_slot {
	pthread_mutex_t lock;
	struct journal_cursor cur;
	uint64_t window;         /* replay window: bit i = counter (max - i) seen */
};

struct repl_follower; /* slave.c */

#define REPL_PEERS_MAX (REPL_SLAVES_MAX + 1)
struct repl_peer {
	uint8_t node_id[REPL_ID_BYTES];
	char url[128];
};

#define REPL_TASKS 8

struct replicator {
	struct repl_options o;
	struct repl_node node;
	struct repl_state state;
	_Atomic int is_slave;
	/* A newer master exists (failover.c): read-only, acknowledges nothing. */
	_Atomic int deposed;
	uint64_t deposed_epoch;   /* state.lock */
	char deposed_by[160];     /* state.lock */
	char self_url[128];       /* http://HOST:PORT others reach this node at, or "" */
	pthread_mutex_t role_lock; /* one promote / fence / switchover at a time */
	/* This node's timeline (STORE/history); hist_lock. */
	pthread_mutex_t hist_lock;
	struct epoch_history hist;
	/* The other nodes known (STORE/peers): a slave learns them from its
	 * master, so that it can find the next one; state.lock. */
	struct repl_peer peers[REPL_PEERS_MAX];
	int npeers;
	pthread_mutex_t probe_lock; /* one round of probes at a time */
	uint64_t probe_ns[REPL_SLAVES_MAX]; /* last probe of each quiet slave */
	/* verify (failover.c): a master cuts batches at verify_lsn; a slave
	 * takes its snapshot when it has applied exactly verify_lsn. */
	_Atomic uint64_t verify_lsn;
	/* Fetches read the journal holding it for reading; a verify fixes its
	 * point holding it for writing, so no batch read before crosses it. */
	pthread_rwlock_t verify_gate;
	_Atomic int verify_hold;  /* verify_lsn is provisional: send nothing after it */
	pthread_mutex_t verify_lock;
	pthread_cond_t verify_cond;
	uint64_t verify_target;
	/* Slave: the verify point its VERIFY handler is working on (0: none),
	 * told to the master in every FETCH so a master waiting for the answer
	 * can tell a slow slave from a lost request. */
	_Atomic uint64_t verify_serving;
	uint64_t verify_done;     /* points up to this one are served: ignore them */
	uint64_t verify_snap_ns;  /* when verify_snap was taken (expiry) */
	struct snapshot *verify_snap;  /* the tree frozen for a verify (either role) */
	int verify_taking;       /* verify_lock: a thread is freezing it */
	_Atomic int verify_live;
	int verify_rc;
	int announcers;          /* verify_lock: ANNOUNCE threads running */
	int promote_pending;     /* a promote cut short, finished once serving */
	char promote_old[200];
	struct MHD_Daemon *http; /* TCP: replication, /metrics */
	struct MHD_Daemon *ctl;  /* STORE/control.sock: /status, /metrics */
	int ctl_fd;
	pthread_t housekeeper;
	pthread_mutex_t hk_lock;
	pthread_cond_t hk_cond;
	int stop;

	/* master */
	struct repl_fetch_slot slots[REPL_SLAVES_MAX];
	/* Challenges handed out for HELLOs (state.lock): each is good once, for
	 * REPL_CHALLENGE_NS, and only in this process, so a captured HELLO can
	 * never open a session again, not even after a restart. */
	uint8_t challenge[REPL_CHALLENGES][REPL_ID_BYTES];
	uint64_t challenge_ns[REPL_CHALLENGES];
	int challenge_next;
	pthread_mutex_t snap_lock;
	struct snapshot *snap;   /* shared by slaves receiving one */
	int snap_users;
	_Atomic int snap_live;   /* r->snap != NULL, read without snap_lock */
	int hk_started;

	/* slave */
	struct repl_follower *follower;
	_Atomic uint64_t snapshots_received;

	/* Long work under way (snapshot transfers, verify hashing), for status
	 * "tasks" and the progress lines of `replfs status --watch` and
	 * `replfs verify`. */
	pthread_mutex_t task_lock;
	struct repl_task {
		char what[96];
		uint64_t done, total, start_ns; /* total 0: unknown */
		int used;
	} tasks[REPL_TASKS];
};

/* replicator.c: tasks. begin returns a slot (-1 when all are taken: the
 * work goes on unreported); add/end accept -1. */
int repl_task_begin(struct replicator *r, uint64_t total, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void repl_task_add(struct replicator *r, int id, uint64_t bytes);
void repl_task_end(struct replicator *r, int id);
/* A JSON array of the tasks (status.c). */
void *repl_tasks_json(struct replicator *r);

/* master.c */
int repl_master_start(struct replicator *r, char *err, size_t errlen);
void repl_master_stop(struct replicator *r);
/* slave.c */
int repl_follower_start(struct replicator *r, char *err, size_t errlen);
void repl_follower_stop(struct replicator *r);
/* Fills the "master" object of the status (slave.c); returns a jansson
 * json_t * as void * to keep jansson out of this header. */
void *repl_follower_status(struct replicator *r);
/* slave.c: follow another master from now on (announce, redirect). */
void repl_follower_redirect(struct replicator *r, const char *url, uint64_t epoch);
/* slave.c: stop fetching, apply what was received, then stop. */
void repl_follower_drain_stop(struct replicator *r);
const char *repl_follower_url(struct replicator *r, char *buf, size_t len);
/* slave.c: the apply step reached LSN lsn (verify point). */
void repl_verify_point(struct replicator *r, uint64_t lsn);

/* failover.c */
int repl_failover_start(struct replicator *r, char *err, size_t errlen);
void repl_failover_stop(struct replicator *r);
void repl_failover_started(struct replicator *r);
/* Slave: the master with the newest epoch among the nodes known, if it is
 * not the one followed now. */
int repl_find_master(struct replicator *r, char *out, size_t len, uint64_t *epoch);
/* A sealed one-shot request to the node at base (http://HOST:PORT) and its
 * opened answer: *plain points into *keep (free it). */
int repl_oneshot(struct replicator *r, const char *base, uint8_t type, const void *body,
		 size_t blen, long timeout_ms, size_t max, struct repl_env *renv, uint8_t **plain,
		 size_t *plen, uint8_t **keep);
/* The same for an answer that may take long: about once a second, and with
 * the bytes of the answer received so far, alive(arg, got) says whether the
 * other side still shows signs of working on it; 0 gives up (-ETIMEDOUT). */
int repl_oneshot_watched(struct replicator *r, const char *base, uint8_t type,
			 const void *body, size_t blen, long timeout_ms, size_t max,
			 int (*alive)(void *arg, uint64_t got), void *alive_arg,
			 struct repl_env *renv, uint8_t **plain, size_t *plen, uint8_t **keep);
/* verifier.c */
enum MHD_Result repl_verify_request(struct replicator *r, struct MHD_Connection *conn,
				    const struct repl_env *e, void *msg);
int repl_verify_run(struct replicator *r, int repair, char *msg, size_t msglen, void **result);
void repl_verify_expire(struct replicator *r); /* housekeeper, slave */
/* Housekeeper, once a second: a master probes slaves gone quiet. */
void repl_failover_tick(struct replicator *r);
/* Control socket POSTs: /promote, /switchover, /verify. */
enum MHD_Result repl_control_post(struct replicator *r, struct MHD_Connection *conn,
				  const char *url, const char *body, size_t len);
/* Answers ANNOUNCE, PROBE, PROMOTE and VERIFY (any role). */
enum MHD_Result repl_failover_request(struct replicator *r, struct MHD_Connection *conn,
				      const struct repl_env *e, const uint8_t *plain,
				      size_t plen, const char *peer);
/* Learned that epoch > ours exists (by = a URL or node): turn read-only. */
void repl_fence(struct replicator *r, uint64_t epoch, const char *by);
/* The answer to "who is the master" a slave or a deposed node gives. */
void repl_master_hint(struct replicator *r, char *url, size_t len, uint64_t *epoch);
int repl_peers_save(struct replicator *r);
/* Sets the peer list from a JSON array of {"id","url"} (state.lock not held). */
void repl_peers_set(struct replicator *r, void *json_array);
void *repl_peers_json(struct replicator *r); /* json_t * */
void *repl_history_json(const struct epoch_history *h);
int repl_history_from_json(void *json, struct epoch_history *h);
/* Slave: the master's timeline is known from a WELCOME; note epochs of
 * records applied (before they are logged). */
int repl_history_note(struct replicator *r, uint64_t epoch, uint64_t first_lsn);
/* http://HOST:PORT from a listen address; a wildcard host takes peer_ip. */
void repl_advertised_url(const char *host, unsigned port, const char *peer_ip, char *out,
			 size_t len);
/* master.c: sealed answers shared with failover.c. */
enum MHD_Result repl_reply_sealed(struct replicator *r, struct MHD_Connection *conn,
				  uint8_t type, const struct repl_env *req, const void *plain,
				  size_t len);
enum MHD_Result repl_reply_json(struct replicator *r, struct MHD_Connection *conn,
				uint8_t type, const struct repl_env *req, void *json);
enum MHD_Result repl_reply_error(struct replicator *r, struct MHD_Connection *conn,
				 const struct repl_env *req, const char *code, const char *msg);
/* master.c: become a master (promote) or stop being one. */
int repl_master_role_start(struct replicator *r);

/* status.c: HTTP answers shared by both listeners. */
enum MHD_Result repl_serve_text(struct MHD_Connection *conn, unsigned code, const char *type,
				char *body);
enum MHD_Result repl_serve_info(struct replicator *r, struct MHD_Connection *conn,
				const char *url);

#endif
