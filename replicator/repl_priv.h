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

struct replicator {
	struct repl_options o;
	struct repl_node node;
	struct repl_state state;
	int is_slave;
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
};

/* master.c */
int repl_master_start(struct replicator *r, char *err, size_t errlen);
void repl_master_stop(struct replicator *r);
/* slave.c */
int repl_follower_start(struct replicator *r, char *err, size_t errlen);
void repl_follower_stop(struct replicator *r);
/* Fills the "master" object of the status (slave.c); returns a jansson
 * json_t * as void * to keep jansson out of this header. */
void *repl_follower_status(struct replicator *r);
/* status.c: HTTP answers shared by both listeners. */
enum MHD_Result repl_serve_text(struct MHD_Connection *conn, unsigned code, const char *type,
				char *body);
enum MHD_Result repl_serve_info(struct replicator *r, struct MHD_Connection *conn,
				const char *url);

#endif
