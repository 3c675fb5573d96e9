/* Snapshots on real stores: a tree frozen at L and sent while the master goes
 * on writing arrives exactly as it was at L; a damaged, truncated, replayed or
 * forged stream changes nothing; an install interrupted anywhere is finished
 * or discarded at the next start. */
#include "unit.h"
#include "../../recovery/recovery.h"
#include "../../utils/utils.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

/* ---- stores ---- */

struct node {
	char path[512];
	struct store st;
	struct journal *j;
	struct commit c;
	int has_commit;
};

static void node_init(struct node *n, const char *dir, const char *name)
{
	char err[256];
	snprintf(n->path, sizeof(n->path), "%s/%s", dir, name);
	assert_int_equal(store_init(n->path, err, sizeof(err)), 0);
}

/* Opens the store; recover: run snapshot_install_recover first (a mount). */
static void node_open(struct node *n, int recover)
{
	struct recovery_report rep;
	char err[1024] = "";

	assert_int_equal(store_open(n->path, STORE_OPEN_LOCK | STORE_OPEN_STATE, &n->st, err,
				    sizeof(err)), 0);
	assert_int_equal(journal_open(n->st.journalfd, n->st.node_id, 1 << 20, &n->j), 0);
	if (recover)
		assert_int_equal(snapshot_install_recover(&n->st, n->j), 0);
	if (recovery_run(&n->st, n->j, 0, &rep, err, sizeof(err)) != 0)
		fail_msg("recovery_run: %s", err);
	assert_int_equal(journal_start(n->j, rep.journal_last_lsn + 1, n->st.epoch), 0);
	struct apply_ctx ac = { n->st.datafd, n->st.stagingfd };
	commit_init(&n->c, n->j, &ac, n->st.state, rep.journal_last_lsn + 1, n->st.epoch);
	n->has_commit = 1;
}

static void node_close(struct node *n)
{
	if (n->has_commit)
		commit_release(&n->c);
	n->has_commit = 0;
	journal_close(n->j);
	n->j = NULL;
	store_close(&n->st);
}

static int op(struct node *n, struct rec r)
{
	return commit_op(&n->c, &r, -1, NULL);
}

static void op_ok(struct node *n, struct rec r)
{
	int rc = op(n, r);
	if (rc != 0)
		fail_msg("%s %s: %s", rec_op_name(r.op), r.path, strerror(-rc));
}

static void write_pattern(struct node *n, const char *path, uint64_t off, size_t len, int seed)
{
	char *b = malloc(len);
	for (size_t i = 0; i < len; i++)
		b[i] = (char)((i * 131 + (size_t)seed * 7 + (i >> 12)) & 0xff);
	op_ok(n, (struct rec){ .op = REC_WRITE, .path = path, .off = off, .data = b,
			       .data_len = (uint32_t)len });
	free(b);
}

static int subdir_fd(struct node *n, const char *name)
{
	return openat(n->st.dirfd, name, O_RDONLY | O_DIRECTORY);
}

static int exists(int dirfd, const char *name)
{
	return faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* ---- a canonical dump of a tree: everything a snapshot must carry ---- */

struct dline {
	char *path, *line;
	ino_t ino;
	int multi;
};

struct dump {
	struct dline *v;
	size_t n, cap;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_dline(const void *a, const void *b)
{
	return strcmp(((const struct dline *)a)->path, ((const struct dline *)b)->path);
}

static void dump_xattrs(char *out, size_t size, int fd, const char *path)
{
	char names[8192], val[4096], *v[256];
	ssize_t n = fd >= 0 ? flistxattr(fd, names, sizeof(names)) : llistxattr(path, names, sizeof(names));
	size_t nv = 0, len = strlen(out);

	for (char *p = names; n > 0 && p < names + n; p += strlen(p) + 1)
		v[nv++] = p;
	qsort(v, nv, sizeof(*v), cmp_str);
	for (size_t i = 0; i < nv; i++) {
		ssize_t vl = fd >= 0 ? fgetxattr(fd, v[i], val, sizeof(val))
				     : lgetxattr(path, v[i], val, sizeof(val));
		len += (size_t)snprintf(out + len, size - len, " x:%s=", v[i]);
		for (ssize_t k = 0; k < vl; k++)
			len += (size_t)snprintf(out + len, size - len, "%02x", (unsigned char)val[k]);
	}
}

static void dump_add(struct dump *d, const char *path, const char *line, const struct stat *sb)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->v = realloc(d->v, d->cap * sizeof(*d->v));
	}
	d->v[d->n++] = (struct dline){ strdup(path), strdup(line), sb->st_ino,
				       !S_ISDIR(sb->st_mode) && sb->st_nlink > 1 };
}

static void dump_walk(struct dump *d, int dfd, const char *rel)
{
	DIR *dir = fdopendir(dup(dfd));
	struct dirent *de;

	assert_non_null(dir);
	rewinddir(dir); /* the dup shares the offset of an earlier listing */
	while ((de = readdir(dir))) {
		char path[4096], line[16384], proc[512];
		struct stat sb;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		assert_int_equal(fstatat(dfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW), 0);
		snprintf(line, sizeof(line), "%s mode=%06o uid=%u gid=%u nlink=%lu mtime=%lld.%09ld",
			 path, sb.st_mode, sb.st_uid, sb.st_gid, (unsigned long)sb.st_nlink,
			 (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
		size_t len = strlen(line);
		if (S_ISREG(sb.st_mode)) {
			unsigned char h[16];
			char buf[65536];
			crypto_generichash_state gs;
			int fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW);
			ssize_t k;
			assert_true(fd >= 0);
			crypto_generichash_init(&gs, NULL, 0, sizeof(h));
			while ((k = read(fd, buf, sizeof(buf))) > 0)
				crypto_generichash_update(&gs, (unsigned char *)buf, (size_t)k);
			crypto_generichash_final(&gs, h, sizeof(h));
			close(fd);
			len += (size_t)snprintf(line + len, sizeof(line) - len, " size=%lld h=",
						(long long)sb.st_size);
			for (int i = 0; i < 16; i++)
				len += (size_t)snprintf(line + len, sizeof(line) - len, "%02x", h[i]);
		} else if (S_ISLNK(sb.st_mode)) {
			char t[4096];
			ssize_t k = readlinkat(dfd, de->d_name, t, sizeof(t) - 1);
			t[k < 0 ? 0 : k] = '\0';
			snprintf(line + len, sizeof(line) - len, " ->%s", t);
		} else if (S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode)) {
			snprintf(line + len, sizeof(line) - len, " rdev=%u,%u", major(sb.st_rdev),
				 minor(sb.st_rdev));
		}
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dfd, de->d_name);
		dump_xattrs(line, sizeof(line), -1, proc);
		dump_add(d, path, line, &sb);
		if (S_ISDIR(sb.st_mode)) {
			int cfd = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			assert_true(cfd >= 0);
			dump_walk(d, cfd, path);
			close(cfd);
		}
	}
	closedir(dir);
}

/* One line per entry, sorted; the root's line has no mtime (renaming the
 * tree into place is allowed to touch it); hard links name their group. */
static char *dump_tree(int dirfd)
{
	struct dump d = { 0 };
	struct stat sb;
	char line[16384];
	size_t total = 1, len = 0;
	char *out;

	assert_int_equal(fstat(dirfd, &sb), 0);
	snprintf(line, sizeof(line), ". mode=%06o uid=%u gid=%u", sb.st_mode, sb.st_uid, sb.st_gid);
	dump_xattrs(line, sizeof(line), dirfd, NULL);
	dump_add(&d, "", line, &sb);
	dump_walk(&d, dirfd, "");
	qsort(d.v, d.n, sizeof(*d.v), cmp_dline);
	for (size_t i = 0; i < d.n; i++)
		total += strlen(d.v[i].line) + 4200;
	out = malloc(total);
	out[0] = '\0';
	for (size_t i = 0; i < d.n; i++) {
		len += (size_t)sprintf(out + len, "%s", d.v[i].line);
		if (d.v[i].multi)
			for (size_t k = 0; k < d.n; k++)
				if (d.v[k].multi && d.v[k].ino == d.v[i].ino) {
					len += (size_t)sprintf(out + len, " hl=%s", d.v[k].path);
					break;
				}
		out[len++] = '\n';
		out[len] = '\0';
	}
	for (size_t i = 0; i < d.n; i++) {
		free(d.v[i].path);
		free(d.v[i].line);
	}
	free(d.v);
	return out;
}

static void assert_same_tree(const char *want, const char *got)
{
	if (strcmp(want, got) != 0) {
		fprintf(stderr, "---- expected\n%s---- got\n%s", want, got);
		fail_msg("trees differ");
	}
}

/* ---- streams ---- */

static uint8_t key[32];
static const uint8_t bind1[] = "session-0123456789abcdef#1";

static uint8_t *stream_all(struct snapshot *s, const uint8_t *bind, size_t bindlen, size_t *len)
{
	struct snapshot_reader *r;
	size_t cap = 1 << 16;
	uint8_t *out = malloc(cap);
	ssize_t n;

	*len = 0;
	assert_int_equal(snapshot_reader_open(s, key, bind, bindlen, &r), 0);
	for (;;) {
		if (cap - *len < 65536)
			out = realloc(out, cap *= 2);
		n = snapshot_reader_read(r, out + *len, 65536);
		assert_true(n >= 0);
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	snapshot_reader_close(r);
	return out;
}

/* Feeds a whole stream; returns the first error of write or end. */
static int install_stream(struct node *n, const uint8_t *k, const uint8_t *bind, size_t bindlen,
			  const uint8_t *buf, size_t len, size_t split, uint64_t *lsn, uint64_t *epoch)
{
	struct snapshot_install *in;
	uint64_t l, e;
	int rc;

	if ((rc = snapshot_install_begin(&n->st, k, bind, bindlen, &in)) < 0)
		return rc == -EBADMSG ? -EIO : rc;
	for (size_t off = 0; off < len; off += split) {
		size_t c = len - off < split ? len - off : split;
		if ((rc = snapshot_install_write(in, buf + off, c)) < 0) {
			snapshot_install_abort(in);
			return rc;
		}
	}
	return snapshot_install_end(in, lsn ? lsn : &l, epoch ? epoch : &e);
}

/* ---- the tree ---- */

static void build_tree(struct node *m)
{
	char name[64];

	op_ok(m, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 0755 });
	op_ok(m, (struct rec){ .op = REC_MKDIR, .path = "d/e", .mode = 02750, .uid = 1234, .gid = 567 });
	op_ok(m, (struct rec){ .op = REC_MKDIR, .path = "d/e/deep", .mode = 0700 });
	op_ok(m, (struct rec){ .op = REC_MKDIR, .path = "emptydir", .mode = 01777 });
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "big", .mode = 0644, .uid = 1000, .gid = 1000 });
	for (int i = 0; i < 6; i++)
		write_pattern(m, "big", (uint64_t)i << 20, 1 << 20, i);
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "d/a", .mode = 0640 });
	write_pattern(m, "d/a", 0, 300000, 9);
	op_ok(m, (struct rec){ .op = REC_LINK, .path = "d/a", .path2 = "d/e/a2" });
	op_ok(m, (struct rec){ .op = REC_LINK, .path = "d/a", .path2 = "d/e/a3" });
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "sparse", .mode = 0600 });
	write_pattern(m, "sparse", 10 << 20, 5000, 3);
	write_pattern(m, "sparse", 100, 100, 4);
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "tailhole", .mode = 0600 });
	write_pattern(m, "tailhole", 0, 10, 5);
	op_ok(m, (struct rec){ .op = REC_TRUNCATE, .path = "tailhole", .off = 3 << 20 });
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "d/f%d", i);
		op_ok(m, (struct rec){ .op = REC_CREATE, .path = name, .mode = 0600 + (unsigned)i });
		write_pattern(m, name, 0, 1000 + (size_t)i * 10000, 20 + i);
	}
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "empty", .mode = 0 });
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "suid", .mode = 0755 });
	write_pattern(m, "suid", 0, 4000, 7);
	op_ok(m, (struct rec){ .op = REC_CHOWN, .path = "suid", .uid = 1000, .gid = 50 });
	op_ok(m, (struct rec){ .op = REC_CHMOD, .path = "suid", .mode = 06755 });
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "xf", .mode = 0644 });
	op_ok(m, (struct rec){ .op = REC_SETXATTR, .path = "xf", .name = "user.k", .data = "v1",
			       .data_len = 2 });
	op_ok(m, (struct rec){ .op = REC_SETXATTR, .path = "xf", .name = "trusted.t", .data = "tv",
			       .data_len = 2 });
	op_ok(m, (struct rec){ .op = REC_SETXATTR, .path = "xf", .name = "security.s",
			       .data = "\0\1\2", .data_len = 3 });
	op_ok(m, (struct rec){ .op = REC_SETXATTR, .path = "d/e", .name = "user.dir", .data = "dv",
			       .data_len = 2 });
	op_ok(m, (struct rec){ .op = REC_SETXATTR, .path = "", .name = "user.root", .data = "r",
			       .data_len = 1 });
	op_ok(m, (struct rec){ .op = REC_SYMLINK, .path = "s", .path2 = "d/a", .uid = 5, .gid = 6 });
	op_ok(m, (struct rec){ .op = REC_SYMLINK, .path = "d/dangling", .path2 = "../../nowhere" });
	op_ok(m, (struct rec){ .op = REC_MKNOD, .path = "fifo", .mode = S_IFIFO | 0620, .uid = 7 });
	op_ok(m, (struct rec){ .op = REC_MKNOD, .path = "d/null", .mode = S_IFCHR | 0666,
			       .rdev = makedev(1, 3) });
	op_ok(m, (struct rec){ .op = REC_MKNOD, .path = "d/sock", .mode = S_IFSOCK | 0755 });
	op_ok(m, (struct rec){ .op = REC_UTIMENS, .path = "d/f0", .atime_sec = 1, .mtime_sec = 1000000,
			       .mtime_nsec = 123 });
	op_ok(m, (struct rec){ .op = REC_UTIMENS, .path = "d/e/deep", .atime_sec = 1,
			       .mtime_sec = 2000000, .mtime_nsec = 456 });
	op_ok(m, (struct rec){ .op = REC_CHMOD, .path = "d/e/deep", .mode = 0500 });
	/* A trusted xattr on a symlink: no record does that, the disk can. */
	char p[1024];
	snprintf(p, sizeof(p), "%s/data/s", m->path);
	assert_int_equal(lsetxattr(p, "trusted.link", "L", 1, 0), 0);
}

/* ---- 1. consistency while the master writes ---- */

static void test_snapshot_while_writing(void **state)
{
	char *dir = *state, *at_l, *got;
	struct node m = { 0 }, s = { 0 };
	struct snapshot *snap;
	struct snapshot_reader *r;
	struct snapshot_install *in;
	struct snapshot_stats stats;
	struct stat sb;
	uint8_t buf[7777];
	uint64_t lsn, epoch, l, big_start = 0;
	int chunks = 0, mid_file_done = 0, oldfd = -1;

	node_init(&m, dir, "m");
	node_init(&s, dir, "s");
	node_open(&m, 1);
	node_open(&s, 1);
	build_tree(&m);
	/* The slave has a history of its own that the snapshot replaces. */
	op_ok(&s, (struct rec){ .op = REC_CREATE, .path = "old", .mode = 0644 });
	op_ok(&s, (struct rec){ .op = REC_MKDIR, .path = "olddir", .mode = 0755 });
	commit_release(&s.c);
	s.has_commit = 0;

	at_l = dump_tree(m.st.datafd);
	l = m.st.state->applied_lsn;
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	assert_int_equal(snapshot_lsn(snap), l);
	assert_int_equal(snapshot_epoch(snap), 1);
	assert_int_equal(snapshot_bytes(snap), (6 << 20) + 300000 + (10 << 20) + 5000 + (3 << 20) +
					       4000 + 10 * 1000 + 45 * 10000);
	struct snapshot *busy;
	assert_int_equal(snapshot_create(&m.st, &m.c, &busy), -EBUSY);
	/* Shared inodes carry the snapshot's link. */
	assert_int_equal(fstatat(m.st.datafd, "d/f9", &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 2);
	assert_int_equal(snapshot_extra_links(snap, sb.st_ino), 1);

	/* Changes before any reader: the snapshot keeps the old versions. */
	write_pattern(&m, "d/e/a2", 1000, 5000, 99);       /* hard-linked inode */
	op_ok(&m, (struct rec){ .op = REC_TRUNCATE, .path = "sparse", .off = 100 });
	op_ok(&m, (struct rec){ .op = REC_CHMOD, .path = "suid", .mode = 0700 });
	op_ok(&m, (struct rec){ .op = REC_CHOWN, .path = "d/f0", .uid = 5, .gid = 5 });
	op_ok(&m, (struct rec){ .op = REC_UTIMENS, .path = "d/f1", .mtime_sec = 5 });
	op_ok(&m, (struct rec){ .op = REC_SETXATTR, .path = "d/f2", .name = "user.new", .data = "n",
				.data_len = 1 });
	op_ok(&m, (struct rec){ .op = REC_REMOVEXATTR, .path = "xf", .name = "user.k" });
	op_ok(&m, (struct rec){ .op = REC_UNLINK, .path = "d/e/a3" });
	op_ok(&m, (struct rec){ .op = REC_RENAME, .path = "d/f3", .path2 = "d/f4" });
	op_ok(&m, (struct rec){ .op = REC_UNLINK, .path = "d/f5" });
	op_ok(&m, (struct rec){ .op = REC_CREATE, .path = "d/f5", .mode = 0777 });
	write_pattern(&m, "d/f5", 0, 100, 1);
	op_ok(&m, (struct rec){ .op = REC_FALLOCATE, .path = "d/f6",
				.arg = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, .off = 0, .len = 8192 });
	op_ok(&m, (struct rec){ .op = REC_MKDIR, .path = "newdir", .mode = 0755 });
	op_ok(&m, (struct rec){ .op = REC_RMDIR, .path = "emptydir" });
	op_ok(&m, (struct rec){ .op = REC_CHMOD, .path = "d", .mode = 0711 });
	op_ok(&m, (struct rec){ .op = REC_SETXATTR, .path = "d/e", .name = "user.dir", .data = "XX",
				.data_len = 2 });
	op_ok(&m, (struct rec){ .op = REC_CHOWN, .path = "s", .uid = 9, .gid = 9 });
	assert_int_equal(fstatat(m.st.datafd, "d/a", &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 2); /* a2 + a; the copy dropped the snapshot's link */
	assert_int_equal(snapshot_extra_links(snap, sb.st_ino), 0);

	assert_int_equal(snapshot_reader_open(snap, key, bind1, sizeof(bind1), &r), 0);
	assert_int_equal(snapshot_install_begin(&s.st, key, bind1, sizeof(bind1), &in), 0);
	for (;;) {
		/* Odd, varying chunk sizes: messages split anywhere. */
		ssize_t n = snapshot_reader_read(r, buf, 1 + (size_t)(chunks * 977) % sizeof(buf));
		assert_true(n >= 0);
		if (n == 0)
			break;
		assert_int_equal(snapshot_install_write(in, buf, (size_t)n), 0);
		chunks++;
		const char *f = snapshot_reader_file(r);
		if (f && !strcmp(f, "big") && !big_start)
			big_start = snapshot_reader_sent(r);
		if (f && !strcmp(f, "big") && !mid_file_done &&
		    snapshot_reader_sent(r) > big_start + (2 << 20)) {
			/* Behind and ahead of the reader, in the middle of the file. */
			write_pattern(&m, "big", 0, 4096, 77);
			write_pattern(&m, "big", 5 << 20, 4096, 78);
			op_ok(&m, (struct rec){ .op = REC_TRUNCATE, .path = "big", .off = 5500000 });
			mid_file_done = 1;
		}
		if (chunks % 50 == 0) {
			/* Files the reader may or may not have sent yet. */
			char name[16];
			snprintf(name, sizeof(name), "d/f%d", 7 + (chunks / 50) % 3);
			write_pattern(&m, name, 10, 10, chunks);
			op_ok(&m, (struct rec){ .op = REC_CHMOD, .path = "xf", .mode = 0444 });
		}
	}
	assert_true(mid_file_done);
	assert_int_equal(snapshot_install_end(in, &lsn, &epoch), 0);
	assert_int_equal(lsn, l);
	assert_int_equal(epoch, 1);
	/* After the reader sent everything, changes need no copy... */
	snapshot_stats(snap, &stats);
	uint64_t copied = stats.copied_files;
	write_pattern(&m, "d/f7", 0, 10, 5);
	write_pattern(&m, "tailhole", 0, 10, 6);
	snapshot_stats(snap, &stats);
	assert_int_equal(stats.copied_files, copied);
	assert_true(stats.released_files >= 1);
	assert_true(stats.reader_switches >= 1);
	assert_true(stats.copied_files >= 8);
	assert_int_equal(stats.failed, 0);
	/* ...and the snapshot cannot be sent whole any more. */
	struct snapshot_reader *r2;
	assert_int_equal(snapshot_reader_open(snap, key, bind1, sizeof(bind1), &r2), -ESTALE);
	snapshot_reader_close(r);

	/* The slave swaps it in. */
	assert_int_equal(snapshot_install_swap(&s.st, s.j, &oldfd), 0);
	assert_true(oldfd >= 0);
	assert_int_equal(fstat(oldfd, &sb), 0);
	assert_int_equal(sb.st_nlink, 0); /* the old tree, removed; the fd still works */
	close(oldfd);
	got = dump_tree(s.st.datafd);
	assert_same_tree(at_l, got);
	free(got);
	assert_int_equal(fstatat(s.st.datafd, "sparse", &sb, 0), 0);
	assert_true(sb.st_blocks * 512 < 1 << 20); /* holes stayed holes */
	struct store_checkpoint ck;
	assert_int_equal(store_checkpoint_read(&s.st, &ck), 0);
	assert_int_equal(ck.lsn, l);
	assert_int_equal(journal_appended_lsn(s.j), l);
	assert_int_equal(s.st.state->applied_lsn, l);
	assert_false(exists(s.st.dirfd, "incoming"));
	assert_false(exists(s.st.dirfd, "install"));
	assert_int_equal(snapshot_install_swap(&s.st, s.j, NULL), -ENOENT);

	/* The master's tree did move on; the snapshot goes with its last ref. */
	got = dump_tree(m.st.datafd);
	assert_true(strcmp(got, at_l) != 0);
	free(got);
	snapshot_get(snap);
	snapshot_put(snap);
	assert_non_null(m.c.before_apply);
	snapshot_put(snap);
	assert_null(m.c.before_apply);
	int snaps = subdir_fd(&m, "snapshots");
	assert_true(snaps >= 0);
	DIR *d = fdopendir(snaps);
	int nent = 0;
	while (readdir(d))
		nent++;
	closedir(d);
	assert_int_equal(nent, 2); /* . and .. */
	assert_int_equal(fstatat(m.st.datafd, "d/f9", &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 1);

	free(at_l);
	node_close(&m);
	node_close(&s);
}

/* ---- 2. damage, truncation, wrong key, wrong bind ---- */

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static void small_tree(struct node *m)
{
	op_ok(m, (struct rec){ .op = REC_MKDIR, .path = "d", .mode = 0755 });
	op_ok(m, (struct rec){ .op = REC_CREATE, .path = "d/f", .mode = 0644 });
	write_pattern(m, "d/f", 0, 200, 1);
	op_ok(m, (struct rec){ .op = REC_SYMLINK, .path = "s", .path2 = "d/f" });
}

/* The refusals below are logged, thousands of times: keep them off the
 * test's output. */
static int quiet_begin(void)
{
	if (getenv("SNAPSHOT_TEST_VERBOSE"))
		return dup(2);
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	dup2(null, 2);
	close(null);
	return saved;
}

/* Inside a quiet stretch failures are noted, not asserted (an assertion's
 * message would go to /dev/null), and reported when it ends. */
static char quiet_failure[512];
#define EXPECT_RC(expr, want)                                                             \
	do {                                                                              \
		int rc_ = (expr);                                                         \
		if (rc_ != (want) && !quiet_failure[0])                                   \
			snprintf(quiet_failure, sizeof(quiet_failure), "line %d: %s = %d, expected %d", \
				 __LINE__, #expr, rc_, (want));                           \
	} while (0)

static void quiet_end(int saved)
{
	dup2(saved, 2);
	close(saved);
	if (quiet_failure[0])
		fail_msg("%s", quiet_failure);
}

static void assert_untouched(struct node *s, const char *before)
{
	char *now = dump_tree(s->st.datafd);
	assert_same_tree(before, now);
	free(now);
	assert_false(exists(s->st.dirfd, "install"));
	assert_false(exists(s->st.dirfd, "incoming"));
}

static void test_damage_refused(void **state)
{
	char *dir = *state, *before;
	struct node m = { 0 }, s = { 0 };
	struct snapshot *snap;
	uint8_t *good, *bad, wrong[32];
	size_t len;

	node_init(&m, dir, "m");
	node_init(&s, dir, "s");
	node_open(&m, 1);
	node_open(&s, 1);
	small_tree(&m);
	op_ok(&s, (struct rec){ .op = REC_CREATE, .path = "sentinel", .mode = 0644 });
	before = dump_tree(s.st.datafd);

	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	good = stream_all(snap, bind1, sizeof(bind1), &len);
	assert_true(len > 100 && len < 2000);
	bad = malloc(len);

	/* The intact stream is accepted, in any split (then discarded: a new
	 * begin drops an install that was never swapped in). */
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), good, len, 1, NULL, NULL), 0);
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), good, len, 100, NULL, NULL), 0);
	struct snapshot_install *in;
	assert_int_equal(snapshot_install_begin(&s.st, key, bind1, sizeof(bind1), &in), 0);
	snapshot_install_abort(in);
	assert_untouched(&s, before);

	/* Every single-bit flip. */
	int quiet = quiet_begin();
	for (size_t bit = 0; bit < len * 8; bit++) {
		memcpy(bad, good, len);
		bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), bad, len, len, NULL, NULL),
			  -EBADMSG);
	}
	/* Every truncation, and trailing garbage. */
	for (size_t cut = 0; cut < len; cut++)
		EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), good, cut, 7, NULL, NULL),
			  -EBADMSG);
	uint8_t *longer = malloc(len + 1);
	memcpy(longer, good, len);
	longer[len] = 0;
	EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), longer, len + 1, len + 1, NULL, NULL),
		  -EBADMSG);
	free(longer);
	/* Another key, another session, another request of the same session. */
	memcpy(wrong, key, 32);
	wrong[31] ^= 0x80;
	EXPECT_RC(install_stream(&s, wrong, bind1, sizeof(bind1), good, len, len, NULL, NULL),
		  -EBADMSG);
	static const uint8_t bind2[] = "session-0123456789abcdef#2";
	EXPECT_RC(install_stream(&s, key, bind2, sizeof(bind2), good, len, len, NULL, NULL), -EBADMSG);
	EXPECT_RC(install_stream(&s, key, NULL, 0, good, len, len, NULL, NULL), -EBADMSG);
	quiet_end(quiet);
	assert_untouched(&s, before);

	/* A stream of several messages: damage in a later one, after files were
	 * already made in incoming/, still changes nothing. */
	snapshot_put(snap);
	write_pattern(&m, "d/f", 0, 3 << 20, 2);
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	free(good);
	good = stream_all(snap, bind1, sizeof(bind1), &len);
	assert_true(len > (3 << 20));
	free(bad);
	bad = malloc(len);
	/* Frame boundaries, from the length fields. */
	size_t f1 = 24, f2 = f1 + 4 + rd32(good + f1);
	size_t f3 = f2 + 4 + rd32(good + f2);
	assert_true(f3 < len);
	quiet = quiet_begin();
	for (size_t pos = 24; pos < len; pos += len / 37) {
		memcpy(bad, good, len);
		bad[pos] ^= 0x10;
		EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), bad, len, 65536, NULL, NULL),
			  -EBADMSG);
	}
	/* Messages dropped or swapped. */
	memcpy(bad, good, f1);
	memcpy(bad + f1, good + f2, len - f2); /* first message dropped */
	EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), bad, len - (f2 - f1), 65536, NULL,
				 NULL), -EBADMSG);
	memcpy(bad, good, len);
	memcpy(bad + f1, good + f2, f3 - f2);  /* first two swapped (same size) */
	memcpy(bad + f1 + (f3 - f2), good + f1, f2 - f1);
	EXPECT_RC(install_stream(&s, key, bind1, sizeof(bind1), bad, len, 65536, NULL, NULL),
		  -EBADMSG);
	quiet_end(quiet);
	assert_untouched(&s, before);
	snapshot_put(snap);

	free(good);
	free(bad);
	free(before);
	node_close(&m);
	node_close(&s);
}

/* ---- 3. forged plaintext with hostile paths ---- */

struct forge {
	uint8_t pt[8192];
	size_t len;
	uint64_t entries;
};

static void fput32(struct forge *f, uint32_t v)
{
	v = htole32(v);
	memcpy(f->pt + f->len, &v, 4);
	f->len += 4;
}

static void fput64(struct forge *f, uint64_t v)
{
	v = htole64(v);
	memcpy(f->pt + f->len, &v, 8);
	f->len += 8;
}

static void forge_head(struct forge *f)
{
	f->len = 0;
	f->entries = 0;
	fput32(f, 1); /* HEAD */
	fput32(f, 56);
	memcpy(f->pt + f->len, "RPLFSNAP", 8);
	f->len += 8;
	fput32(f, 1);
	fput32(f, 0);
	fput64(f, 42); /* lsn */
	fput64(f, 1);  /* epoch */
	fput64(f, 0);  /* entries: patched by forge_seal */
	fput64(f, 0);
	fput64(f, 0);
}

static void forge_entry(struct forge *f, uint32_t type, uint32_t mode, const char *path,
			const char *target)
{
	uint32_t pl = (uint32_t)strlen(path), tl = target ? (uint32_t)strlen(target) : 0;
	fput32(f, type);
	fput32(f, 48 + pl + tl);
	fput32(f, mode);
	fput32(f, 0);
	fput32(f, 0);
	fput32(f, 0);
	fput64(f, 1000);
	fput64(f, 0);
	fput32(f, pl);
	fput32(f, tl);
	fput32(f, 0);
	fput32(f, 0);
	memcpy(f->pt + f->len, path, pl);
	f->len += pl;
	if (tl)
		memcpy(f->pt + f->len, target, tl);
	f->len += tl;
	f->entries++;
}

/* Trailer, entry count in the head, then one final message. */
static uint8_t *forge_seal(struct forge *f, size_t *len, unsigned char tag)
{
	crypto_secretstream_xchacha20poly1305_state ss;
	unsigned long long clen;
	uint64_t e = htole64(f->entries);
	uint8_t *out;

	memcpy(f->pt + 8 + 32, &e, 8);
	fput32(f, 10);
	fput32(f, 24);
	fput64(f, f->entries);
	fput64(f, 0);
	fput64(f, 0);
	out = malloc(28 + f->len + crypto_secretstream_xchacha20poly1305_ABYTES);
	crypto_secretstream_xchacha20poly1305_init_push(&ss, out, key);
	crypto_secretstream_xchacha20poly1305_push(&ss, out + 28, &clen, f->pt, f->len, bind1,
						   sizeof(bind1), tag);
	uint32_t l = htole32((uint32_t)clen);
	memcpy(out + 24, &l, 4);
	*len = 28 + (size_t)clen;
	return out;
}

static int forged_install_tag(struct node *s, struct forge *f, unsigned char tag)
{
	size_t len;
	uint8_t *b = forge_seal(f, &len, tag);
	int rc = install_stream(s, key, bind1, sizeof(bind1), b, len, 13, NULL, NULL);
	free(b);
	return rc;
}

static int forged_install(struct node *s, struct forge *f)
{
	return forged_install_tag(s, f, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
}

static void test_forged_paths_refused(void **state)
{
	char *dir = *state, *before, outside[600];
	struct node s = { 0 };
	struct forge f;
	struct stat sb;

	node_init(&s, dir, "s");
	node_open(&s, 1);
	before = dump_tree(s.st.datafd);
	snprintf(outside, sizeof(outside), "%s/outside", dir);
	assert_int_equal(mkdir(outside, 0700), 0);

	/* The encoder here is right: a proper stream is accepted. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 2, S_IFDIR | 0755, "ok", NULL);
	forge_entry(&f, 5, S_IFLNK | 0777, "ok/s", outside);
	assert_int_equal(forged_install(&s, &f), 0);
	struct snapshot_install *in;
	assert_int_equal(snapshot_install_begin(&s.st, key, bind1, sizeof(bind1), &in), 0);
	snapshot_install_abort(in);
	/* The same, complete up to its trailer, but without the final tag: a
	 * stream cut after a message is incomplete whatever it says. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	assert_int_equal(forged_install_tag(&s, &f, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE),
			 -EBADMSG);

	static const char *const bad_dirs[] = { "../x", "/abs", "a/../../b", "a//b", "a/./b", "a/",
						"..", "." };
	for (size_t i = 0; i < sizeof(bad_dirs) / sizeof(*bad_dirs); i++) {
		forge_head(&f);
		forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
		forge_entry(&f, 2, S_IFDIR | 0755, "a", NULL);
		forge_entry(&f, 2, S_IFDIR | 0755, bad_dirs[i], NULL);
		if (forged_install(&s, &f) != -EINVAL)
			fail_msg("path %s not refused with EINVAL", bad_dirs[i]);
		forge_head(&f);
		forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
		forge_entry(&f, 6, S_IFIFO | 0644, bad_dirs[i], NULL);
		assert_int_equal(forged_install(&s, &f), -EINVAL);
	}
	/* A hard link to something outside. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 4, 0, "h", "../../../../etc/passwd");
	assert_int_equal(forged_install(&s, &f), -EINVAL);
	/* A hard link to a symlink's target, through the symlink. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 5, S_IFLNK | 0777, "s", "/etc");
	forge_entry(&f, 4, 0, "h", "s/passwd");
	assert_true(forged_install(&s, &f) < 0);
	/* A hard link to a symlink that points outside is one more name of
	 * the symlink, inside the tree; one to a directory is refused. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 5, S_IFLNK | 0777, "s", outside);
	forge_entry(&f, 4, 0, "h", "s");
	assert_int_equal(forged_install(&s, &f), 0);
	assert_int_equal(fstatat(s.st.dirfd, "incoming/tree/h", &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_int_equal(sb.st_nlink, 2);
	assert_int_equal(snapshot_install_begin(&s.st, key, bind1, sizeof(bind1), &in), 0);
	snapshot_install_abort(in);
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 2, S_IFDIR | 0755, "d", NULL);
	forge_entry(&f, 4, 0, "h", "d");
	assert_int_equal(forged_install(&s, &f), -EINVAL);
	/* Creating through a symlink that points outside. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 5, S_IFLNK | 0777, "s", outside);
	forge_entry(&f, 2, S_IFDIR | 0755, "s/pwned", NULL);
	assert_true(forged_install(&s, &f) < 0);
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 5, S_IFLNK | 0777, "s", outside);
	forge_entry(&f, 6, S_IFIFO | 0644, "s/pwned2", NULL);
	assert_true(forged_install(&s, &f) < 0);
	/* The root elsewhere than first, or not at all. */
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "a", NULL);
	assert_int_equal(forged_install(&s, &f), -EINVAL);
	forge_head(&f);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	forge_entry(&f, 2, S_IFDIR | 0755, "", NULL);
	assert_int_equal(forged_install(&s, &f), -EINVAL);

	assert_int_equal(stat(outside, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	int ofd = open(outside, O_RDONLY | O_DIRECTORY);
	assert_false(exists(ofd, "pwned"));
	assert_false(exists(ofd, "pwned2"));
	close(ofd);
	assert_untouched(&s, before);
	free(before);
	node_close(&s);
}

/* ---- 4. crashes during an install ---- */

static void test_crash_after_end(void **state)
{
	char *dir = *state, *at_l, *got;
	struct node m = { 0 }, s = { 0 };
	struct snapshot *snap;
	struct store_checkpoint ck;
	uint8_t *stream;
	size_t len;
	uint64_t l, lsn, epoch;

	node_init(&m, dir, "m");
	node_init(&s, dir, "s");
	node_open(&m, 1);
	node_open(&s, 1);
	build_tree(&m);
	for (int i = 0; i < 3; i++)
		op_ok(&s, (struct rec){ .op = REC_MKDIR, .path = i == 0 ? "x" : i == 1 ? "y" : "z",
					.mode = 0755 });
	m.c.epoch = 3; /* the master was promoted meanwhile */
	op_ok(&m, (struct rec){ .op = REC_CREATE, .path = "epoch3", .mode = 0644 });
	at_l = dump_tree(m.st.datafd);
	l = m.st.state->applied_lsn;
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	stream = stream_all(snap, bind1, sizeof(bind1), &len);
	snapshot_put(snap);

	/* A: the process dies right after end(): recovery swaps it in. */
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), stream, len, 100000, &lsn,
					&epoch), 0);
	assert_int_equal(lsn, l);
	assert_int_equal(epoch, 3);
	assert_true(exists(s.st.dirfd, "install"));
	node_close(&s);
	node_open(&s, 1);
	got = dump_tree(s.st.datafd);
	assert_same_tree(at_l, got);
	free(got);
	assert_int_equal(store_checkpoint_read(&s.st, &ck), 0);
	assert_int_equal(ck.lsn, l);
	assert_int_equal(ck.epoch, 3);
	assert_int_equal(s.st.epoch, 3);
	assert_int_equal(journal_appended_lsn(s.j), l);
	assert_false(exists(s.st.dirfd, "install"));
	assert_false(exists(s.st.dirfd, "incoming"));
	/* It follows the journal from L+1. */
	op_ok(&s, (struct rec){ .op = REC_CREATE, .path = "after", .mode = 0644 });
	assert_int_equal(s.st.state->applied_lsn, l + 1);
	node_close(&s);
	node_open(&s, 1);
	assert_true(exists(s.st.datafd, "after"));
	assert_true(exists(s.st.datafd, "epoch3"));
	/* An older epoch than the node follows is refused. */
	m.c.epoch = 2;
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	uint8_t *old = stream_all(snap, bind1, sizeof(bind1), &len);
	snapshot_put(snap);
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), old, len, len, NULL, NULL),
			 -ESTALE);
	assert_false(exists(s.st.dirfd, "install"));
	free(old);
	m.c.epoch = 3;
	node_close(&s);

	/* B: the process dies while receiving: the next start discards it. */
	char *before;
	node_open(&s, 1);
	before = dump_tree(s.st.datafd);
	node_close(&s);
	pid_t pid = fork();
	if (pid == 0) {
		struct store cs;
		struct snapshot_install *in;
		char err[256];
		if (store_open(s.path, STORE_OPEN_STATE, &cs, err, sizeof(err)) != 0 ||
		    snapshot_install_begin(&cs, key, bind1, sizeof(bind1), &in) != 0 ||
		    snapshot_install_write(in, stream, len / 2) != 0)
			_exit(1);
		_exit(0); /* no cleanup at all */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	int sfd = open(s.path, O_RDONLY | O_DIRECTORY);
	assert_true(exists(sfd, "install"));
	assert_true(exists(sfd, "incoming/tree"));
	close(sfd);
	node_open(&s, 1);
	assert_untouched(&s, before);
	free(before);

	/* C: dies between the exchange and the marker's removal: recovery goes
	 * on with the new tree and never exchanges back. */
	op_ok(&s, (struct rec){ .op = REC_MKDIR, .path = "gone", .mode = 0755 });
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), stream, len, 4096, NULL, NULL),
			 0);
	node_close(&s);
	sfd = open(s.path, O_RDONLY | O_DIRECTORY);
	assert_int_equal(renameat2(sfd, "data", sfd, "incoming/tree", RENAME_EXCHANGE), 0);
	close(sfd);
	node_open(&s, 1);
	got = dump_tree(s.st.datafd);
	assert_same_tree(at_l, got);
	free(got);
	assert_int_equal(journal_appended_lsn(s.j), l);
	assert_false(exists(s.st.dirfd, "incoming"));
	assert_false(exists(s.st.dirfd, "install"));
	node_close(&s);

	/* D: the same, after the journal reset and checkpoint too. */
	node_open(&s, 1);
	op_ok(&s, (struct rec){ .op = REC_MKDIR, .path = "gone2", .mode = 0755 });
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), stream, len, 4096, NULL, NULL),
			 0);
	commit_release(&s.c);
	s.has_commit = 0;
	assert_int_equal(snapshot_install_swap(&s.st, s.j, NULL), 0);
	node_close(&s);
	/* Put back the marker as it was before its removal. */
	{
		char text[256];
		struct stat tsb;
		int fd = open(s.path, O_RDONLY | O_DIRECTORY);
		assert_int_equal(fstatat(fd, "data", &tsb, 0), 0);
		int n = snprintf(text, sizeof(text), "replfs-install 1\nphase swap\nlsn %llu\nepoch 3\n"
				 "tree_ino %llu\n", (unsigned long long)l, (unsigned long long)tsb.st_ino);
		assert_int_equal(io_write_file_atomic(fd, "install", text, (size_t)n), 0);
		close(fd);
	}
	node_open(&s, 1);
	got = dump_tree(s.st.datafd);
	assert_same_tree(at_l, got);
	free(got);
	assert_false(exists(s.st.dirfd, "install"));
	node_close(&s);

	free(stream);
	free(at_l);
	node_close(&m);
}

/* ---- hard links of every type: one inode per group on the slave too ---- */

static ino_t ino_of(int dirfd, const char *path, nlink_t *nlink)
{
	struct stat sb;

	assert_int_equal(fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW), 0);
	if (nlink)
		*nlink = sb.st_nlink;
	return sb.st_ino;
}

/* Every name of a group is one inode with that many links in dirfd. */
static void assert_group(int dirfd, const char *const *names, size_t k)
{
	nlink_t nl;
	ino_t ino = ino_of(dirfd, names[0], &nl);

	if (nl != k)
		fail_msg("%s: %lu links, expected %zu", names[0], (unsigned long)nl, k);
	for (size_t i = 1; i < k; i++)
		if (ino_of(dirfd, names[i], NULL) != ino)
			fail_msg("%s and %s are not one inode", names[0], names[i]);
}

static void test_links_of_every_type(void **state)
{
	char *dir = *state, *at_l, *got;
	struct node m = { 0 }, s = { 0 };
	struct snapshot *snap;
	uint8_t *stream;
	size_t len;
	nlink_t nl;
	static const char *const sym[] = { "ls/s1", "ls/s2", "s3" };
	static const char *const fifo[] = { "ls/p", "ls/deep/p2", "zp", "ap" };
	static const char *const sock[] = { "ls/sock", "sock2" };
	static const char *const chr[] = { "ls/null", "null2" };
	static const char *const reg[] = { "ls/f", "ls/deep/f2" };
	static const char *const dangling[] = { "ls/dang", "ls/dang2" };

	node_init(&m, dir, "m");
	node_init(&s, dir, "s");
	node_open(&m, 1);
	node_open(&s, 1);
	op_ok(&m, (struct rec){ .op = REC_MKDIR, .path = "ls", .mode = 0755 });
	op_ok(&m, (struct rec){ .op = REC_MKDIR, .path = "ls/deep", .mode = 0700 });
	op_ok(&m, (struct rec){ .op = REC_CREATE, .path = "ls/f", .mode = 0640 });
	write_pattern(&m, "ls/f", 0, 5000, 1);
	op_ok(&m, (struct rec){ .op = REC_SYMLINK, .path = "ls/s1", .path2 = "f", .uid = 5, .gid = 6 });
	op_ok(&m, (struct rec){ .op = REC_SYMLINK, .path = "ls/dang", .path2 = "../../nowhere" });
	op_ok(&m, (struct rec){ .op = REC_MKNOD, .path = "ls/p", .mode = S_IFIFO | 0620, .uid = 7 });
	op_ok(&m, (struct rec){ .op = REC_MKNOD, .path = "ls/sock", .mode = S_IFSOCK | 0755 });
	op_ok(&m, (struct rec){ .op = REC_MKNOD, .path = "ls/null", .mode = S_IFCHR | 0666,
				.rdev = makedev(1, 3) });
	op_ok(&m, (struct rec){ .op = REC_SETXATTR, .path = "ls/p", .name = "trusted.p", .data = "pv",
				.data_len = 2 });
	for (int i = 1; i < 3; i++)
		op_ok(&m, (struct rec){ .op = REC_LINK, .path = sym[0], .path2 = sym[i] });
	for (int i = 1; i < 4; i++)
		op_ok(&m, (struct rec){ .op = REC_LINK, .path = fifo[0], .path2 = fifo[i] });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = sock[0], .path2 = sock[1] });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = chr[0], .path2 = chr[1] });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = reg[0], .path2 = reg[1] });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = dangling[0], .path2 = dangling[1] });
	/* One name left of a group: a plain entry again. */
	op_ok(&m, (struct rec){ .op = REC_SYMLINK, .path = "lone", .path2 = "x" });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = "lone", .path2 = "lone2" });
	op_ok(&m, (struct rec){ .op = REC_UNLINK, .path = "lone" });
	assert_group(m.st.datafd, sym, 3);
	assert_group(m.st.datafd, fifo, 4);

	at_l = dump_tree(m.st.datafd);
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	/* Symlinks and nodes are frozen in memory: no link of the snapshot's
	 * own inflates their count. */
	assert_int_equal(snapshot_extra_links(snap, ino_of(m.st.datafd, "ls/s1", &nl)), 0);
	assert_int_equal(nl, 3);
	ino_of(m.st.datafd, "ls/p", &nl);
	assert_int_equal(nl, 4);
	/* Names and metadata change after the freeze: the stream is as at L. */
	op_ok(&m, (struct rec){ .op = REC_UNLINK, .path = "ls/s1" });
	op_ok(&m, (struct rec){ .op = REC_CHOWN, .path = "s3", .uid = 9, .gid = 9 });
	op_ok(&m, (struct rec){ .op = REC_UNLINK, .path = "zp" });
	op_ok(&m, (struct rec){ .op = REC_CHMOD, .path = "ap", .mode = 0600 });
	op_ok(&m, (struct rec){ .op = REC_LINK, .path = "ls/sock", .path2 = "sock3" });
	stream = stream_all(snap, bind1, sizeof(bind1), &len);
	snapshot_put(snap);
	assert_int_equal(install_stream(&s, key, bind1, sizeof(bind1), stream, len, 4099, NULL, NULL), 0);
	free(stream);
	commit_release(&s.c);
	s.has_commit = 0;
	assert_int_equal(snapshot_install_swap(&s.st, s.j, NULL), 0);

	/* The dump names each group by its first member and counts links. */
	got = dump_tree(s.st.datafd);
	assert_same_tree(at_l, got);
	free(got);
	assert_group(s.st.datafd, sym, 3);
	assert_group(s.st.datafd, fifo, 4);
	assert_group(s.st.datafd, sock, 2);
	assert_group(s.st.datafd, chr, 2);
	assert_group(s.st.datafd, reg, 2);
	assert_group(s.st.datafd, dangling, 2);
	ino_of(s.st.datafd, "lone2", &nl);
	assert_int_equal(nl, 1);

	free(at_l);
	node_close(&m);
	node_close(&s);
}

/* ---- a snapshot that cannot save a file fails; the master does not ---- */

static void test_copy_failure_fails_snapshot_only(void **state)
{
	char *dir = *state, buf[64];
	struct node m = { 0 };
	struct snapshot *snap;
	struct snapshot_reader *r;
	struct snapshot_stats stats;
	uint8_t out[4096];
	ssize_t n;

	node_init(&m, dir, "m");
	node_open(&m, 1);
	small_tree(&m);
	assert_int_equal(snapshot_create(&m.st, &m.c, &snap), 0);
	assert_int_equal(snapshot_reader_open(snap, key, bind1, sizeof(bind1), &r), 0);
	/* Take away what the copy reads from. */
	int snaps = subdir_fd(&m, "snapshots");
	DIR *d = fdopendir(dup(snaps));
	struct dirent *de;
	int sdir = -1;
	rewinddir(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			sdir = openat(snaps, de->d_name, O_RDONLY | O_DIRECTORY);
	closedir(d);
	close(snaps);
	assert_true(sdir >= 0);
	assert_int_equal(unlinkat(sdir, "f0", 0), 0);
	close(sdir);

	op_ok(&m, (struct rec){ .op = REC_WRITE, .path = "d/f", .data = "new", .data_len = 3 });
	assert_int_equal(slurp(m.st.datafd, "d/f", buf, 4), 3);
	assert_string_equal(buf, "new");
	snapshot_stats(snap, &stats);
	assert_int_equal(stats.failed, -ENOENT);
	do
		n = snapshot_reader_read(r, out, sizeof(out));
	while (n > 0 && n != 24);
	n = snapshot_reader_read(r, out, sizeof(out));
	assert_int_equal(n, -ENOENT);
	snapshot_reader_close(r);
	assert_int_equal(snapshot_reader_open(snap, key, bind1, sizeof(bind1), &r), -ENOENT);
	snapshot_put(snap);
	node_close(&m);
}

/* ---- leftovers of a crashed master ---- */

static void test_cleanup_stale(void **state)
{
	char *dir = *state;
	struct node m = { 0 };
	struct stat sb;

	node_init(&m, dir, "m");
	node_open(&m, 1);
	small_tree(&m);
	assert_int_equal(mkdirat(m.st.dirfd, "snapshots", 0700), 0);
	assert_int_equal(mkdirat(m.st.dirfd, "snapshots/7-abc", 0700), 0);
	int sfd = subdir_fd(&m, "snapshots/7-abc");
	assert_int_equal(linkat(m.st.datafd, "d/f", sfd, "f0", 0), 0);
	close(sfd);
	assert_int_equal(fstatat(m.st.datafd, "d/f", &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 2);
	assert_int_equal(snapshot_cleanup_stale(&m.st), 0);
	assert_int_equal(fstatat(m.st.datafd, "d/f", &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 1);
	assert_false(exists(m.st.dirfd, "snapshots"));
	assert_int_equal(snapshot_cleanup_stale(&m.st), 0);
	node_close(&m);
}

static int setup(void **state)
{
	*state = tmpdir_make();
	return 0;
}

static int teardown(void **state)
{
	tmpdir_remove(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_snapshot_while_writing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_paths_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_failure_fails_snapshot_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_links_of_every_type, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cleanup_stale, setup, teardown),
	};
	if (sodium_init() < 0)
		return 1;
	randombytes_buf(key, sizeof(key));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
