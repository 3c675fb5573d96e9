/* Names of multiply-linked files, for kernel cache coherence.
 *
 * libfuse's high-level API gives every name its own kernel inode, so after a
 * change through one name of a hard-linked file the kernel would go on
 * showing the other names' cached size, times and link count. Here we keep,
 * for each inode seen with nlink > 1, the names it was seen under; a change
 * through one name invalidates the kernel's cache of the others. Stale names
 * are harmless: invalidating them only costs a cache miss. */
#include "fuse_priv.h"

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

void links_changed(struct fuse *f, ino_t ino, const char *except)
{
	char *names[LINKS_NAMES];
	int n = 0;

	pthread_mutex_lock(&links_lock);
	if (links_used) {
		struct link_entry *e = *links_slot(ino);
		for (int i = 0; e && i < LINKS_NAMES; i++)
			if (e->names[i] && (!except || strcmp(e->names[i], except)))
				names[n++] = strdup(e->names[i]);
	}
	pthread_mutex_unlock(&links_lock);
	/* Outside the lock: the kernel may call back into us. */
	for (int i = 0; i < n; i++) {
		if (names[i])
			fuse_invalidate_path(f, names[i]);
		free(names[i]);
	}
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
