/* Names of multiply-linked files, for kernel cache coherence.
 *
 * libfuse's high-level API gives every name its own kernel inode, so after a
 * change through one name of a hard-linked file the kernel would go on
 * showing the other names' cached size, times and link count. Here we keep,
 * for each inode seen with nlink > 1, the names it was seen under; a change
 * through one name invalidates the kernel's cache of the others. Stale names
 * are harmless: invalidating them only costs a cache miss. */
#include "fuse_priv.h"
#include "../utils/utils.h"

#include <stdlib.h>
#include <string.h>

#define LINKS_BUCKETS 1024
#define LINKS_NAMES 8

struct link_entry {
	ino_t ino;
	char *names[LINKS_NAMES];
	struct link_entry *next;
};

static struct link_entry *links_table[LINKS_BUCKETS]; /* links_lock */
static pthread_mutex_t links_lock = PTHREAD_MUTEX_INITIALIZER;
static int links_used;                                 /* links_lock; 0 = fast path */

static struct link_entry **links_slot(ino_t ino)
{
	struct link_entry **e = &links_table[ino % LINKS_BUCKETS];

	while (*e && (*e)->ino != ino)
		e = &(*e)->next;
	return e;
}

void links_note(ino_t ino, const char *path)
{
	struct link_entry **slot, *e;
	int free_i = -1;

	pthread_mutex_lock(&links_lock);
	slot = links_slot(ino);
	if (!(e = *slot) && (e = calloc(1, sizeof(*e)))) {
		e->ino = ino;
		*slot = e;
		links_used = 1;
	}
	for (int i = 0; e && i < LINKS_NAMES; i++) {
		if (e->names[i] && !strcmp(e->names[i], path))
			goto out;
		if (!e->names[i] && free_i < 0)
			free_i = i;
	}
	if (e) {
		if (free_i < 0) { /* full: forget the oldest */
			free(e->names[0]);
			memmove(e->names, e->names + 1, (LINKS_NAMES - 1) * sizeof(char *));
			free_i = LINKS_NAMES - 1;
		}
		e->names[free_i] = strdup(path);
	}
out:
	pthread_mutex_unlock(&links_lock);
}

void links_forget_name(const char *path)
{
	pthread_mutex_lock(&links_lock);
	if (links_used) {
		for (int b = 0; b < LINKS_BUCKETS; b++)
			for (struct link_entry *e = links_table[b]; e; e = e->next)
				for (int i = 0; i < LINKS_NAMES; i++)
					if (e->names[i] && !strcmp(e->names[i], path)) {
						free(e->names[i]);
						e->names[i] = NULL;
					}
	}
	pthread_mutex_unlock(&links_lock);
}

/* The invalidations are made by one thread of their own, never by the FUSE
 * request that caused them: the kernel holds the page locks of a file while
 * its WRITE is being answered, and invalidating another name's inode waits
 * for that inode's page locks. Two writes through two names of one file,
 * each invalidating the other's inode from inside its own request, waited
 * for each other forever. A request waits for its invalidations (at most
 * INVAL_WAIT_MS), so the other names are fresh when it returns, unless one
 * of them has a write in flight (links_write_begin): that write holds the
 * pages, and its own end brings the name up to date anyway. */
#define INVAL_WAIT_MS 100
#define WRITING_SLOTS 64

static char *writing_path[WRITING_SLOTS]; /* inval_lock: names with a write in flight */
static unsigned writing_count[WRITING_SLOTS];

struct inval_req {
	char *path;
	struct fuse *f;
	int done, abandoned;
	struct inval_req *next;
};

static pthread_mutex_t inval_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t inval_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t inval_done = PTHREAD_COND_INITIALIZER;
static struct inval_req *inval_head, **inval_tail = &inval_head; /* inval_lock */
static pthread_t inval_thread;
static int inval_running, inval_stopping;                        /* inval_lock */

static void *inval_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&inval_lock);
	for (;;) {
		while (!inval_head && !inval_stopping)
			pthread_cond_wait(&inval_work, &inval_lock);
		if (!inval_head)
			break;
		struct inval_req *q = inval_head;
		if (!(inval_head = q->next))
			inval_tail = &inval_head;
		pthread_mutex_unlock(&inval_lock);
		if (!inval_stopping)
			fuse_invalidate_path(q->f, q->path);
		pthread_mutex_lock(&inval_lock);
		q->done = 1;
		if (q->abandoned) {
			free(q->path);
			free(q);
		} else {
			pthread_cond_broadcast(&inval_done);
		}
	}
	pthread_mutex_unlock(&inval_lock);
	return NULL;
}

void links_changed(struct fuse *f, ino_t ino, const char *except)
{
	struct inval_req *mine[LINKS_NAMES];
	int n = 0;

	pthread_mutex_lock(&links_lock);
	if (links_used) {
		struct link_entry *e = *links_slot(ino);
		for (int i = 0; e && i < LINKS_NAMES; i++) {
			if (!e->names[i] || (except && !strcmp(e->names[i], except)))
				continue;
			struct inval_req *q = calloc(1, sizeof(*q));
			if (q && !(q->path = strdup(e->names[i]))) {
				free(q);
				q = NULL;
			}
			if (q) {
				q->f = f;
				mine[n++] = q;
			}
		}
	}
	pthread_mutex_unlock(&links_lock);
	if (!n)
		return;
	pthread_mutex_lock(&inval_lock);
	if (!inval_running && !inval_stopping &&
	    pthread_create(&inval_thread, NULL, inval_main, NULL) == 0)
		inval_running = 1;
	if (!inval_running) { /* no thread: nobody to hand them to */
		pthread_mutex_unlock(&inval_lock);
		for (int i = 0; i < n; i++) {
			free(mine[i]->path);
			free(mine[i]);
		}
		return;
	}
	int busy = 0;
	for (int i = 0; i < n; i++) {
		*inval_tail = mine[i];
		inval_tail = &mine[i]->next;
		for (int k = 0; k < WRITING_SLOTS && !busy; k++)
			busy = writing_path[k] && !strcmp(writing_path[k], mine[i]->path);
	}
	pthread_cond_signal(&inval_work);
	struct timespec until;
	time_deadline(&until, CLOCK_REALTIME, busy ? 0 : INVAL_WAIT_MS);
	for (int i = 0; i < n; i++) {
		while (!mine[i]->done &&
		       pthread_cond_timedwait(&inval_done, &inval_lock, &until) == 0)
			;
		if (mine[i]->done) {
			free(mine[i]->path);
			free(mine[i]);
		} else {
			mine[i]->abandoned = 1; /* the thread frees it */
		}
	}
	pthread_mutex_unlock(&inval_lock);
}

int links_write_begin(const char *path)
{
	int slot = -1;

	if (!links_active())
		return -1;
	pthread_mutex_lock(&inval_lock);
	for (int k = 0; k < WRITING_SLOTS; k++) {
		if (writing_path[k] && !strcmp(writing_path[k], path)) {
			slot = k;
			break;
		}
		if (!writing_path[k] && slot < 0)
			slot = k;
	}
	if (slot >= 0 && !writing_path[slot] && !(writing_path[slot] = strdup(path)))
		slot = -1;
	if (slot >= 0)
		writing_count[slot]++;
	pthread_mutex_unlock(&inval_lock);
	return slot;
}

void links_write_end(int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&inval_lock);
	if (--writing_count[slot] == 0) {
		free(writing_path[slot]);
		writing_path[slot] = NULL;
	}
	pthread_mutex_unlock(&inval_lock);
}

void links_stop(void)
{
	pthread_mutex_lock(&inval_lock);
	inval_stopping = 1;
	pthread_cond_signal(&inval_work);
	int running = inval_running;
	pthread_mutex_unlock(&inval_lock);
	if (running)
		pthread_join(inval_thread, NULL);
	inval_running = 0;
}

int links_active(void)
{
	return __atomic_load_n(&links_used, __ATOMIC_RELAXED);
}

void links_free(void)
{
	for (int b = 0; b < LINKS_BUCKETS; b++) {
		struct link_entry *e = links_table[b];
		while (e) {
			struct link_entry *next = e->next;
			for (int i = 0; i < LINKS_NAMES; i++)
				free(e->names[i]);
			free(e);
			e = next;
		}
		links_table[b] = NULL;
	}
	links_used = 0;
}
