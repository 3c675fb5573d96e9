/* utils: small helpers shared by every module — logging, checked I/O, relative
 * path validation, time, hashing. Nothing domain-specific lives here. */
#ifndef REPLFS_UTILS_H
#define REPLFS_UTILS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- logging ------------------------------------------------------------ */

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Where log lines go: stderr (foreground, tools) or syslog (daemon). */
void log_init(const char *ident, int use_syslog, enum log_level max_level);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Also copy warnings and errors to fd (-1: stop). */
void log_mirror_fd(int fd);
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Crash and error injection at named points (REPLFS_FAULT): fault.h. */
#include "fault.h"

/* ---- configuration files (config.c) --------------------------------------- */

/* Called for each `key = value` of an INI file (section "" before any
 * header). Returns 0, or -EINVAL with the reason in why (without the file
 * and line, which the caller adds). */
typedef int (*config_handler_fn)(void *arg, const char *section, const char *key,
				 const char *value, char *why, size_t whylen);
/* Parses path; a bad line stops it with "PATH:LINE: reason" in err. A key
 * given twice in one section is an error, and so is a section header not in
 * sections (NULL-terminated; NULL: any). Returns 0 or a negative errno. */
int config_parse_file(const char *path, const char *const *sections, config_handler_fn fn,
		      void *arg, char *err, size_t errlen);
/* yes/no/true/false/on/off/1/0 (any case); NULL (a bare flag) is yes. */
int config_parse_bool(const char *v, int *out);
/* A decimal number in [min, max], nothing else on the line. */
int config_parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out);

/* ---- progress of long work on a terminal (progress.c) ----------------------- */

struct progress {
	char what[64];
	uint64_t total, done;       /* total 0: unknown */
	int unit_bytes;             /* else a count of items */
	int fd;                     /* -1: not a terminal, nothing is drawn */
	int drawn;
	uint64_t start_ns, last_draw_ns;
};
/* Draws on fd only if it is a terminal. */
void progress_begin(struct progress *p, const char *what, uint64_t total, int unit_bytes,
		    int fd);
void progress_update(struct progress *p, uint64_t done);
void progress_end(struct progress *p);
/* "what: 412 MiB / 1.0 GiB (40%), 98 MiB/s, ETA 0:06" */
void progress_format(const char *what, uint64_t done, uint64_t total, uint64_t elapsed_ns,
		     int unit_bytes, char *buf, size_t size);

/* ---- checked I/O: each returns 0 or -errno; short transfers are retried --- */

int io_write_all(int fd, const void *buf, size_t len);
int io_pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* Reads exactly len bytes; -EIO on a short read (premature EOF). */
int io_pread_all(int fd, void *buf, size_t len, off_t off);
/* Writes a small file atomically: tmp + fsync + rename + fsync(dir). */
int io_write_file_atomic(int dirfd, const char *name, const void *buf, size_t len);
/* Reads a whole small file (< max bytes) into a NUL-terminated malloc'd buffer. */
int io_read_file(int dirfd, const char *name, char **out, size_t *out_len, size_t max);

/* A growable byte buffer (zero-initialise it). */
struct bytebuf {
	uint8_t *p;
	size_t len, cap;
};
int bytebuf_reserve(struct bytebuf *b, size_t more); /* room for more bytes */
int bytebuf_put(struct bytebuf *b, const void *d, size_t n);
void bytebuf_free(struct bytebuf *b);

/* ---- relative paths inside a data directory ---------------------------- */

/* A valid record path is relative ("a/b/c"), or "" for the root, has no empty,
 * "." or ".." component, no NUL and at most PATH_MAX-1 bytes. Returns 0 or
 * -EINVAL / -ENAMETOOLONG. Every node checks this before touching its cache. */
int path_check(const char *path, size_t len);
/* Splits "a/b/c" into parent "a/b" and name "c" (parent "" at the top). The
 * parent is copied into buf (size >= len+1). Returns a pointer to the name
 * inside path. */
const char *path_split(const char *path, char *parent_buf, size_t bufsize);
/* FUSE hands out "/a/b"; records carry "a/b". */
static inline const char *path_rel(const char *fuse_path)
{
	while (*fuse_path == '/')
		fuse_path++;
	return fuse_path;
}

/* ---- little-endian fields of the on-disk and wire formats ------------ */

#include <endian.h>
#include <string.h>
static inline void le_put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void le_put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void le_put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint16_t le_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint32_t le_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t le_get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

/* ---- misc ----------------------------------------------------------------- */

uint64_t time_now_ns(void);      /* CLOCK_REALTIME */
uint64_t time_mono_ns(void);     /* CLOCK_MONOTONIC */
/* *ts = now on clock clk + ms: a deadline for pthread_cond_timedwait. */
struct timespec;
void time_deadline(struct timespec *ts, int clk, uint64_t ms);
/* 64-bit checksum of buf seeded with seed (XXH3). */
uint64_t hash64(const void *buf, size_t len, uint64_t seed);
/* Reads /proc/sys/kernel/random/boot_id into out (37 bytes incl. NUL). */
int boot_id_read(char out[37]);
/* Human-readable byte count into buf ("1.5 MiB"). */
const char *fmt_bytes(uint64_t n, char *buf, size_t size);

#endif
