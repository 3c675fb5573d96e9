/* Rejoin: a node (typically a deposed master) whose journal goes on past the
 * point where its timeline and its new master's forked. Those records were
 * never the master's and never will be; what they wrote must not be
 * destroyed. Before the node takes the master's tree, every path they
 * touched is set aside as it is now:
 *
 *   STORE/recovery/<YYYYmmdd-HHMMSS>-e<epoch>-lsn<first>/
 *       files/<path>   the object at <path> on this node: regular files hard
 *                      linked (the old tree is never written again: the node
 *                      applies nothing until the master's tree replaced it,
 *                      and replaying its own journal after a crash only
 *                      brings those inodes back to the same final state),
 *                      symlinks recreated, directories made (those that were
 *                      the target of a rename: linked with all they hold)
 *       REPORT         text: the fork, each record after it
 *                      ("LSN <n> epoch <e> <OP> <path>[ -> <path2>]") and
 *                      each file kept or gone
 *       report.json    the same for `replfs status`
 *
 * STORE/rejoin, the marker (text, written atomically):
 *     replfs-rejoin 1
 *     phase saving | replace
 *     fork <lsn>
 *     fork_epoch <e>
 *     master_epoch <E>
 *     dir <name>
 *     master <url>
 * "saving": files are being set aside; a restart meets the fork again at
 * its first hello and sets them aside again into the same directory.
 * "replace": everything is kept; the tree must be replaced by a snapshot
 * before anything is applied. rejoin_finish() removes the marker once the
 * snapshot is in.
 */
#include "recovery.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MARKER "rejoin"

struct lost_rec {
	uint64_t lsn, epoch;
	unsigned op;
	char *path, *path2;
};

struct lost {
	struct lost_rec *v;
	size_t n, cap;
	uint64_t last_lsn;
	int failed;
};

static int lost_visit(const struct rec *r, const struct journal_pos *pos, void *arg)
{
	struct lost *l = arg;

	(void)pos;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct lost_rec *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	struct lost_rec *x = &l->v[l->n];
	x->lsn = r->lsn;
	x->epoch = r->epoch;
	x->op = r->op;
	x->path = strdup(r->path ? r->path : "");
	x->path2 = r->path2 && (r->op == REC_RENAME || r->op == REC_LINK || r->op == REC_SYMLINK)
			   ? strdup(r->path2)
			   : NULL;
	if (!x->path)
		return -ENOMEM;
	l->n++;
	l->last_lsn = r->lsn;
	return 0;
}

static void lost_free(struct lost *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].path2);
	}
	free(l->v);
}

static int marker_write(struct store *st, const char *phase, const struct rejoin_info *ri,
			const char *dir)
{
	char buf[768];
	int n = snprintf(buf, sizeof(buf),
			 "replfs-rejoin 1\nphase %s\nfork %" PRIu64 "\nfork_epoch %" PRIu64
			 "\nmaster_epoch %" PRIu64 "\ndir %s\nmaster %s\n",
			 phase, ri->fork_lsn, ri->fork_epoch, ri->master_epoch, dir,
			 ri->master[0] ? ri->master : "-");

	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;
	return io_write_file_atomic(st->dirfd, MARKER, buf, (size_t)n);
}

static int marker_read(struct store *st, char *phase, size_t plen, struct rejoin_info *ri,
		       char *dir, size_t dlen)
{
	char *text = NULL, ph[16], d[256], m[256];
	int rc = io_read_file(st->dirfd, MARKER, &text, NULL, 4096);

	if (rc < 0)
		return rc;
	memset(ri, 0, sizeof(*ri));
	if (sscanf(text,
		   "replfs-rejoin 1\nphase %15s\nfork %" SCNu64 "\nfork_epoch %" SCNu64
		   "\nmaster_epoch %" SCNu64 "\ndir %255s\nmaster %255s",
		   ph, &ri->fork_lsn, &ri->fork_epoch, &ri->master_epoch, d, m) != 6 ||
	    path_check(d, strlen(d)) < 0 || strchr(d, '/')) {
		free(text);
		return -EBADMSG;
	}
	free(text);
	snprintf(phase, plen, "%s", ph);
	snprintf(dir, dlen, "%s", d);
	snprintf(ri->master, sizeof(ri->master), "%s", strcmp(m, "-") ? m : "");
	return 0;
}

int rejoin_pending(struct store *st, struct rejoin_info *ri)
{
	char phase[16], dir[256];
	int rc = marker_read(st, phase, sizeof(phase), ri, dir, sizeof(dir));

	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	return strcmp(phase, "replace") == 0 ? 1 : 0;
}

int rejoin_finish(struct store *st)
{
	if (unlinkat(st->dirfd, MARKER, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* mkdir -p of path's parent directories beneath dirfd. */
static int make_parents(int dirfd, const char *path)
{
	char buf[PATH_MAX];
	char *p;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdirat(dirfd, buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* Keeps the object at path (beneath datafd) at the same path beneath
 * outfd. Returns 1 kept, 0 gone, <0 error. */
static int keep_object(int datafd, const char *path, int outfd, int recursive)
{
	struct stat sb;
	int rc;

	if (fstatat(datafd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	if ((rc = make_parents(outfd, path)) < 0)
		return rc;
	if (S_ISREG(sb.st_mode)) {
		if (linkat(datafd, path, outfd, path, 0) < 0 && errno != EEXIST)
			return -errno;
	} else if (S_ISLNK(sb.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(datafd, path, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = '\0';
		if (symlinkat(target, outfd, path) < 0 && errno != EEXIST)
			return -errno;
	} else if (S_ISDIR(sb.st_mode)) {
		if (mkdirat(outfd, path, sb.st_mode & 07777) < 0 && errno != EEXIST)
			return -errno;
		if (recursive) {
			int dfd = openat(datafd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (dfd < 0)
				return -errno;
			DIR *d = fdopendir(dfd);
			struct dirent *de;
			if (!d) {
				close(dfd);
				return -ENOMEM;
			}
			rc = 0;
			while (rc >= 0 && (de = readdir(d))) {
				char child[PATH_MAX];
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				if (snprintf(child, sizeof(child), "%s/%s", path, de->d_name) >=
				    (int)sizeof(child))
					continue;
				rc = keep_object(datafd, child, outfd, 1);
			}
			closedir(d);
			if (rc < 0)
				return rc;
		}
	} else {
		/* fifos, devices, sockets: nothing written into them to keep */
		return 0;
	}
	return 1;
}

static int seen_path(char **seen, size_t n, const char *p)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(seen[i], p))
			return 1;
	return 0;
}

int rejoin_set_aside(struct store *st, struct journal *j, const struct rejoin_info *ri,
		     char *dir, size_t dirlen)
{
	struct rejoin_info old;
	char phase[16], name[256];
	struct lost l = { 0 };
	struct journal_scan res;
	int rc, recfd = -1, outfd = -1, filesfd = -1, incomplete = 0;
	FILE *rep = NULL;
	json_t *files = json_array(), *gone = json_array();
	char **seen = NULL;
	size_t nseen = 0;

	/* A restart in the middle sets aside into the same directory. */
	if (marker_read(st, phase, sizeof(phase), &old, name, sizeof(name)) < 0 ||
	    old.fork_lsn != ri->fork_lsn) {
		char stamp[32];
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
		snprintf(name, sizeof(name), "%s-e%" PRIu64 "-lsn%" PRIu64, stamp, ri->fork_epoch,
			 ri->fork_lsn + 1);
	}
	snprintf(dir, dirlen, "%s/recovery/%s", st->path, name);
	if ((rc = marker_write(st, "saving", ri, name)) < 0)
		goto out;

	rc = journal_scan(j, ri->fork_lsn + 1, 0, lost_visit, &l, &res);
	if (rc < 0)
		goto out;
	if (!l.n || l.v[0].lsn != ri->fork_lsn + 1)
		incomplete = 1; /* older records were trimmed: keep the whole tree */

	if (mkdirat(st->dirfd, "recovery", 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto out;
	}
	recfd = openat(st->dirfd, "recovery", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (recfd < 0 || (mkdirat(recfd, name, 0700) < 0 && errno != EEXIST) ||
	    (outfd = openat(recfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (mkdirat(outfd, "files", 0700) < 0 && errno != EEXIST) ||
	    (filesfd = openat(outfd, "files", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto out;
	}

	seen = calloc(2 * l.n + 1, sizeof(*seen));
	if (!seen) {
		rc = -ENOMEM;
		goto out;
	}
	if (incomplete) {
		rc = keep_object(st->datafd, ".", filesfd, 1);
		if (rc < 0)
			goto out;
	}
	for (size_t i = 0; i < l.n && !incomplete; i++) {
		const char *names[2] = { l.v[i].path,
					 l.v[i].op == REC_SYMLINK ? NULL : l.v[i].path2 };
		for (int k = 0; k < 2; k++) {
			const char *p = names[k];
			if (!p || !*p || seen_path(seen, nseen, p))
				continue;
			seen[nseen++] = (char *)p;
			rc = keep_object(st->datafd, p, filesfd,
					 l.v[i].op == REC_RENAME && k == 1);
			if (rc < 0)
				goto out;
			json_array_append_new(rc ? files : gone, json_string(p));
		}
	}

	/* The report, text and JSON. */
	int rfd = openat(outfd, "REPORT", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (rfd < 0 || !(rep = fdopen(rfd, "w"))) {
		rc = rfd < 0 ? -errno : -ENOMEM;
		if (rfd >= 0)
			close(rfd);
		goto out;
	}
	fprintf(rep,
		"replfs rejoin report\n\n"
		"This node's timeline forked from its master's after LSN %" PRIu64 ".\n"
		"Its records after that (epoch %" PRIu64 ") never reached the master of epoch "
		"%" PRIu64 "%s%s;\nthe tree was replaced by the master's. What those records "
		"changed is kept here, in files/,\nas it was on this node.\n\n",
		ri->fork_lsn, ri->fork_epoch, ri->master_epoch, ri->master[0] ? " at " : "",
		ri->master);
	if (incomplete)
		fprintf(rep, "The journal no longer held every record after the fork: the whole "
			     "tree is kept in files/.\n\n");
	fprintf(rep, "Records after the fork (%zu):\n", l.n);
	for (size_t i = 0; i < l.n; i++)
		fprintf(rep, "LSN %" PRIu64 " epoch %" PRIu64 " %s %s%s%s\n", l.v[i].lsn,
			l.v[i].epoch, rec_op_name(l.v[i].op), *l.v[i].path ? l.v[i].path : "/",
			l.v[i].path2 ? " -> " : "", l.v[i].path2 ? l.v[i].path2 : "");
	fprintf(rep, "\nKept in files/ (%zu):\n", json_array_size(files));
	for (size_t i = 0; i < json_array_size(files); i++)
		fprintf(rep, "%s\n", json_string_value(json_array_get(files, i)));
	fprintf(rep, "\nGone on this node by the time of the rejoin (%zu):\n",
		json_array_size(gone));
	for (size_t i = 0; i < json_array_size(gone); i++)
		fprintf(rep, "%s\n", json_string_value(json_array_get(gone, i)));
	if (fflush(rep) != 0 || fsync(fileno(rep)) < 0) {
		rc = -errno;
		goto out;
	}

	json_t *lsns = json_array();
	for (size_t i = 0; i < l.n; i++)
		json_array_append_new(lsns, json_integer((json_int_t)l.v[i].lsn));
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s, s:I, s:b, s:O, s:O, s:o, s:I}", "dir",
			      dir, "fork_lsn", (json_int_t)ri->fork_lsn, "fork_epoch",
			      (json_int_t)ri->fork_epoch, "master_epoch",
			      (json_int_t)ri->master_epoch, "master", ri->master, "records",
			      (json_int_t)l.n, "incomplete", incomplete, "files", files, "gone",
			      gone, "lsns", lsns, "time", (json_int_t)time(NULL));
	char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
	json_decref(o);
	if (!text) {
		rc = -ENOMEM;
		goto out;
	}
	rc = io_write_file_atomic(outfd, "report.json", text, strlen(text));
	free(text);
	if (rc < 0)
		goto out;
	/* The links and directories made above are durable before the marker
	 * lets the tree go. */
	if (syncfs(st->dirfd) < 0) {
		rc = -errno;
		goto out;
	}
	fault_point("rejoin:saved");
	if ((rc = marker_write(st, "replace", ri, name)) < 0)
		goto out;
	fault_point("rejoin:cut");
	log_warn("rejoin: %zu record(s) after LSN %" PRIu64 " set aside in %s (%zu file(s) kept)",
		 l.n, ri->fork_lsn, dir, json_array_size(files));
	rc = 0;
out:
	if (rep)
		fclose(rep);
	free(seen);
	json_decref(files);
	json_decref(gone);
	lost_free(&l);
	if (filesfd >= 0)
		close(filesfd);
	if (outfd >= 0)
		close(outfd);
	if (recfd >= 0)
		close(recfd);
	return rc;
}
