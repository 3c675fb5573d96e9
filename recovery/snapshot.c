/* Snapshots: a consistent copy of the master's tree at one LSN, streamed to a
 * slave that is new or too far behind its retained journal, and installed
 * there in one step. The slave then follows the journal from LSN + 1.
 *
 * ======================================================================
 * MASTER: FREEZE AND COPY-ON-WRITE
 * ======================================================================
 * snapshot_create() takes commit's order lock, so nothing changes the data
 * directory, and walks it breadth first (a directory is listed before its
 * contents). Everything but regular-file content and file xattrs is recorded
 * in memory there and then: the entry list with each entry's type, mode,
 * owner, mtime (directories included), size, symlink target, device number
 * and, for directories, symlinks and nodes, their xattrs. Each distinct
 * regular-file inode gets ONE hard link, STORE/snapshots/<id>/f<n>, which
 * keeps the inode as it was at L even if data/ later unlinks it; further
 * names of the same inode become HARDLINK entries. (The original design put
 * a full mirror of the directory tree in the snapshot dir; one flat link per
 * inode is all the sender needs and costs fewer syscalls under the lock.)
 * Symlinks, fifos, sockets and devices are recorded whole in memory, so they
 * get no link in STORE/snapshots/ and the hook never copies them; but the
 * same inode under several names (st_nlink > 1: `ln symlink s2`, `ln fifo
 * f2`) is one group too: its first name is a SYMLINK or NODE entry, every
 * further name a HARDLINK entry to it, found by inode number in a table of
 * their own (s->multi), apart from the regular files the hook looks up.
 *
 * Then it installs snapshot_before_apply() as commit's before_apply hook.
 * Before the master applies a record that changes a regular file inode in
 * place (WRITE, TRUNCATE, FALLOCATE, CHMOD, CHOWN, UTIMENS, SETXATTR,
 * REMOVEXATTR; names changes never touch an inode's content), the hook looks
 * the inode number up in a hash table. If the snapshot still shares it:
 *   - every reader opened so far has sent it already: the link is dropped
 *     ("released") and the snapshot is sealed against new readers;
 *   - else its content and xattrs are copied to STORE/snapshots/<id>/c<n>
 *     (holes kept), the file is marked COPIED, then the link f<n> is dropped.
 * The rest of the metadata needs no copy: the sender takes it from memory.
 * A failed copy (ENOSPC...) fails the snapshot, never the master's record.
 *
 * Shared links add one to the live inode's st_nlink while the snapshot lives
 * (snapshot_extra_links() tells which); copies and releases drop them.
 *
 * THE SENDER / HOOK PROTOCOL. The commit thread may copy and then change an
 * inode while a sender is reading it. The hook publishes COPIED (a seq_cst
 * store) after the copy is complete and before it returns; the record is
 * applied only after that. The sender reads a piece of content (pread, or an
 * lseek SEEK_DATA/SEEK_HOLE), THEN loads the flag (seq_cst) and the snapshot's
 * failed code:
 *   - not COPIED and not failed: the apply of any later record comes after
 *     the flag was published, hence after our load, hence after our read —
 *     the piece is as of L; it is kept;
 *   - COPIED: the piece may be newer than L; it is discarded, the sender
 *     switches to the copy (immutable, as of L) and reads it again from the
 *     same offset, and everything after it from the copy;
 *   - failed: the stream ends with the error.
 * The file's xattrs are read after its content under the same rule.
 *
 * ======================================================================
 * STREAM FORMAT, version 1
 * ======================================================================
 * Bytes on the wire (libsodium crypto_secretstream_xchacha20poly1305 with
 * the 32-byte cluster key):
 *     24-byte secretstream header
 *     then messages, each framed as [u32 little-endian ciphertext length]
 *     [ciphertext = plaintext + 17 bytes]; plaintext at most 256 KiB.
 * The first message is pushed with additional data `bind` (the replication
 * session id and request counter), so a stream cannot be replayed into
 * another session. The last message carries TAG_FINAL and nothing may follow
 * it; every other carries TAG_MESSAGE. Truncation, reordering, a flipped
 * bit, a wrong key or bind all fail authentication.
 *
 * The plaintext of all messages concatenated is a sequence of items, which
 * may cross message boundaries:
 *     item = [u32 type][u32 body length][body]      (little-endian)
 * Every body but DATA's is at most 4 MiB (ITEM_BODY_MAX); a DATA body may
 * not run past its file's size.
 *
 *   1 HEAD     (first item) magic "RPLFSNAP", u32 version = 1, u32 flags = 0,
 *              u64 lsn, u64 epoch, u64 entries, u64 files, u64 file_bytes
 *   2 DIR  3 FILE  4 HARDLINK  5 SYMLINK  6 NODE    an entry:
 *        0 u32 mode (st_mode, type bits included)
 *        4 u32 uid     8 u32 gid
 *       12 u32 mtime_nsec   16 i64 mtime_sec
 *       24 u64 size (FILE) | rdev (NODE) | 0
 *       32 u32 path_len  36 u32 target_len  40 u32 xattr_len  44 u32 0
 *       48 path (relative, "" only for the first entry: the root DIR)
 *          target (SYMLINK: the link's target; HARDLINK: the path of an
 *          earlier FILE, SYMLINK or NODE entry, the inode's first name),
 *          xattr block (DIR, SYMLINK, NODE)
 *      48 + path_len + target_len + xattr_len is the body length, and
 *      mtime_nsec < 10^9. A FILE entry is followed by its content as DATA
 *      and HOLE items adding up to exactly size bytes, then one FXATTR item.
 *      A HARDLINK carries path and target only (the fixed fields are zero,
 *      no xattrs): the receiver links its path to the target's inode, of
 *      whatever type but a directory, so owner, mode, times and xattrs are
 *      the first entry's. (Until HARDLINK covered symlinks and nodes,
 *      senders sent one SYMLINK or NODE entry per name, and receivers
 *      refused a HARDLINK to anything but a regular file: an old slave
 *      fails such an install with EINVAL rather than split the group. The
 *      layout did not change, so the version stays 1.)
 *   7 DATA     the next body-length bytes of the file
 *   8 HOLE     u64 length: the next bytes of the file are a hole (zeros)
 *   9 FXATTR   xattr block of the file just sent; ends the file
 *  10 TRAILER  u64 entries, u64 files, u64 file_bytes: what was sent, must
 *              match the HEAD; the last item of the stream
 *   xattr block = repeated [u32 name_len][u32 value_len][name][value]
 *
 * snapshot_reader_open_plain() yields exactly this item sequence with no
 * secretstream header or framing: verify.c hashes a node's own snapshot
 * through it, so a manifest sees the tree by the very reads (and the same
 * copy-on-write protocol) a slave's install would. Both consumers, the
 * installer and verify.c's manifest builder, read the sequence through struct
 * snapshot_items, which also checks its structure (the order and limits
 * above, HEAD, TRAILER, each entry's lengths): a stream one of them refuses,
 * the other refuses too.
 *
 * Entries come in an order the receiver can create them in: a directory
 * before anything inside it, the first name of an inode (FILE, SYMLINK,
 * NODE) before its HARDLINKs. The receiver
 * creates content first, then owner, then mode (so set-id bits survive),
 * then xattrs, then times; directory times at the very end, after their
 * children stopped changing them.
 *
 * ======================================================================
 * SLAVE: INSTALL
 * ======================================================================
 * The tree is built in STORE/incoming/tree/ — every path checked with
 * path_check() and resolved beneath the tree with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS...), the last component never followed — and swapped
 * with STORE/data/ by renameat2(RENAME_EXCHANGE). STORE/install is the
 * marker that makes the install finishable after a crash (text, written with
 * io_write_file_atomic):
 *     replfs-install 1
 *     phase receiving                      (tree being built: discard it)
 * or
 *     replfs-install 1
 *     phase swap                           (tree complete and synced:
 *     lsn <L>                               finish the swap)
 *     epoch <E>
 *     tree_ino <inode number of incoming/tree>
 *
 * INSTALL INVARIANTS
 *  I1. data/ is not touched until the stream is complete, authenticated,
 *      checked against its trailer and the new tree is synced (syncfs).
 *  I2. The marker says "swap" only once I1 holds; from then on the install
 *      is finished, never undone: every step of snapshot_install_swap() is
 *      safe to redo, and "is data/ the new tree yet" is decided by inode
 *      number, so a redone swap never exchanges the trees back.
 *  I3. Without a marker, incoming/ is garbage; "receiving" discards it.
 */
#include "recovery.h"
#include "../utils/utils.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/limits.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SNAP_MAGIC "RPLFSNAP"
#define SNAP_VERSION 1u
#define FRAME_PT (256u << 10)            /* plaintext bytes per message */
#define FRAME_CT (FRAME_PT + crypto_secretstream_xchacha20poly1305_ABYTES)
#define STREAM_HDR crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define ITEM_HDR 8u
#define ITEM_BODY_MAX (4u << 20)         /* any item but DATA */
#define HEAD_LEN 56u
#define ENTRY_FIXED 48u
#define TRAILER_LEN 24u
#define MIN_DATA_CHUNK 4096u             /* smaller room left: end the message */
#define PREFETCH_AHEAD (32u << 20)       /* content asked of the disk ahead of the reader */
#define PREFETCH_STEP (4u << 20)

/* ======================================================================
 * Shared helpers
 * ====================================================================== */


/* Appends every xattr of an object to out as an xattr block: of the open
 * file fd, or (fd < 0) of path without following a final symlink. */
static int xattrs_read(int fd, const char *path, struct bytebuf *out)
{
	char *names = NULL;
	ssize_t n;
	int rc = 0;

	for (;;) {
		n = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(path, NULL, 0);
		if (n < 0)
			return errno == ENOTSUP ? 0 : -errno;
		if (n == 0)
			return 0;
		if (!(names = malloc((size_t)n)))
			return -ENOMEM;
		ssize_t m = fd >= 0 ? flistxattr(fd, names, (size_t)n) : llistxattr(path, names, (size_t)n);
		if (m >= 0) {
			n = m;
			break;
		}
		free(names);
		if (errno != ERANGE)
			return -errno;
	}
	for (char *nm = names; nm < names + n; nm += strlen(nm) + 1) {
		size_t nl = strlen(nm);
		ssize_t v;

		if (!nl)
			continue;
		for (;;) {
			v = fd >= 0 ? fgetxattr(fd, nm, NULL, 0) : lgetxattr(path, nm, NULL, 0);
			if (v < 0)
				break;
			if ((rc = bytebuf_reserve(out, 8 + nl + (size_t)v)) < 0)
				goto out;
			uint8_t *p = out->p + out->len;
			ssize_t got = fd >= 0 ? fgetxattr(fd, nm, p + 8 + nl, (size_t)v)
					      : lgetxattr(path, nm, p + 8 + nl, (size_t)v);
			if (got < 0 && errno == ERANGE)
				continue; /* grew meanwhile */
			v = got;
			if (v >= 0) {
				le_put32(p, (uint32_t)nl);
				le_put32(p + 4, (uint32_t)v);
				memcpy(p + 8, nm, nl);
				out->len += 8 + nl + (size_t)v;
			}
			break;
		}
		if (v < 0 && errno != ENODATA) { /* ENODATA: removed meanwhile */
			rc = -errno;
			goto out;
		}
	}
out:
	free(names);
	return rc;
}

/* Sets every xattr of a block (checked here: it may come off the wire) on
 * the open file fd, or (fd < 0) on path without following a final symlink.
 * skip_user leaves user.* out (the kernel refuses them on symlinks). */
static int xattrs_apply(int fd, const char *path, const uint8_t *blk, size_t len, int skip_user)
{
	char name[XATTR_NAME_MAX + 1];
	size_t pos = 0;

	while (pos < len) {
		if (len - pos < 8)
			return -EBADMSG;
		uint32_t nl = le_get32(blk + pos), vl = le_get32(blk + pos + 4);
		pos += 8;
		if (nl == 0 || nl > XATTR_NAME_MAX || vl > XATTR_SIZE_MAX ||
		    len - pos < (size_t)nl + vl)
			return -EBADMSG;
		memcpy(name, blk + pos, nl);
		name[nl] = '\0';
		if (strlen(name) != nl)
			return -EBADMSG;
		pos += nl;
		if (!(skip_user && !strncmp(name, "user.", 5))) {
			int rc = fd >= 0 ? fsetxattr(fd, name, blk + pos, vl, 0)
					 : lsetxattr(path, name, blk + pos, vl, 0);
			if (rc < 0)
				return -errno;
		}
		pos += vl;
	}
	return 0;
}

/* Removes name below dirfd with everything inside, following no symlink.
 * A missing name is success. */
static int rm_tree(int parent, const char *name)
{
	struct bytebuf names = { 0 };
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR)
		return -errno;
	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!(d = fdopendir(fd))) {
		close(fd);
		return -errno;
	}
	/* Names first, removal after: no readdir across our own unlinks. */
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    (rc = bytebuf_put(&names, de->d_name, strlen(de->d_name) + 1)) < 0)
			break;
	for (size_t off = 0; rc == 0 && off < names.len; off += strlen((char *)names.p + off) + 1)
		rc = rm_tree(dirfd(d), (char *)names.p + off);
	closedir(d);
	bytebuf_free(&names);
	if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}

/* ======================================================================
 * Master: the frozen tree
 * ====================================================================== */

struct snap_entry {
	uint8_t kind;            /* IT_DIR .. IT_NODE */
	uint32_t mode, uid, gid, mtime_nsec;
	int64_t mtime_sec;
	uint64_t size_or_rdev;
	size_t path;             /* arena offset, NUL-terminated */
	size_t extra;            /* SYMLINK: target (arena); FILE: file index;
				  * HARDLINK: the entry of the inode's first name */
	size_t xattr_off;        /* arena: xattr block of a DIR/SYMLINK/NODE */
	uint32_t xattr_len;
};

enum { F_SHARED = 0, F_COPIED = 1, F_RELEASED = 2 };

struct snap_file {
	uint64_t ino;
	size_t entry;            /* its FILE entry */
	_Atomic int state;       /* F_*: written by the hook under order_lock */
	_Atomic uint32_t sent;   /* readers that have sent it completely */
};

struct snapshot {
	struct store *st;
	struct commit *c;
	char name[64];           /* STORE/snapshots/<name> */
	int dirfd;
	uint64_t lsn, epoch, bytes;
	_Atomic int refs;
	_Atomic int failed;      /* -errno once a copy failed: readers stop */
	_Atomic int sealed;      /* a file was released: no new readers */
	uint32_t readers_opened; /* order_lock */
	size_t pending;          /* order_lock: files still F_SHARED */

	/* Immutable once snapshot_create returns. */
	struct snap_entry *ents;
	size_t nents, ents_cap;
	struct bytebuf arena;
	struct snap_file *files;
	size_t nfiles, files_cap;
	uint32_t *hash;          /* file index + 1, 0 = empty; open addressing */
	size_t hash_mask;
	/* Symlinks and nodes with st_nlink > 1: inode -> first entry. Apart
	 * from files and hash, which the hook and snapshot_extra_links()
	 * search: these inodes are not linked, copied nor shared. */
	struct ino_slot *multi;
	size_t nmulti, multi_mask;

	_Atomic uint64_t copied_files, copied_bytes, released_files, switches;
};

static size_t ino_mix(uint64_t ino)
{
	ino ^= ino >> 33;
	ino *= 0xff51afd7ed558ccdull;
	ino ^= ino >> 33;
	return (size_t)ino;
}

/* Index of the file with inode ino, or -1. */
static ssize_t file_find(const struct snapshot *s, uint64_t ino)
{
	if (!s->hash)
		return -1;
	for (size_t i = ino_mix(ino) & s->hash_mask;; i = (i + 1) & s->hash_mask) {
		uint32_t v = s->hash[i];
		if (!v)
			return -1;
		if (s->files[v - 1].ino == ino)
			return (ssize_t)(v - 1);
	}
}

static void hash_put(struct snapshot *s, size_t idx)
{
	size_t i = ino_mix(s->files[idx].ino) & s->hash_mask;

	while (s->hash[i])
		i = (i + 1) & s->hash_mask;
	s->hash[i] = (uint32_t)(idx + 1);
}

static int file_add(struct snapshot *s, uint64_t ino, size_t entry, size_t *idx)
{
	if (s->nfiles >= UINT32_MAX - 1)
		return -EFBIG;
	if (s->nfiles == s->files_cap) {
		size_t cap = s->files_cap ? s->files_cap * 2 : 1024;
		struct snap_file *f = realloc(s->files, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		s->files = f;
		s->files_cap = cap;
	}
	if (2 * (s->nfiles + 1) > s->hash_mask + 1 || !s->hash) {
		size_t size = s->hash ? 2 * (s->hash_mask + 1) : 4096;
		uint32_t *h = calloc(size, sizeof(*h));
		if (!h)
			return -ENOMEM;
		free(s->hash);
		s->hash = h;
		s->hash_mask = size - 1;
		for (size_t i = 0; i < s->nfiles; i++)
			hash_put(s, i);
	}
	*idx = s->nfiles++;
	s->files[*idx] = (struct snap_file){ .ino = ino, .entry = entry };
	hash_put(s, *idx);
	return 0;
}

struct ino_slot {
	uint64_t ino;
	size_t entry1;           /* entry index + 1, 0 = empty */
};

/* The first entry of the multiply linked symlink or node ino, or -1. */
static ssize_t multi_find(const struct snapshot *s, uint64_t ino)
{
	if (!s->multi)
		return -1;
	for (size_t i = ino_mix(ino) & s->multi_mask;; i = (i + 1) & s->multi_mask) {
		if (!s->multi[i].entry1)
			return -1;
		if (s->multi[i].ino == ino)
			return (ssize_t)(s->multi[i].entry1 - 1);
	}
}

static void multi_put(struct ino_slot *t, size_t mask, struct ino_slot v)
{
	size_t i = ino_mix(v.ino) & mask;

	while (t[i].entry1)
		i = (i + 1) & mask;
	t[i] = v;
}

static int multi_add(struct snapshot *s, uint64_t ino, size_t entry)
{
	if (2 * (s->nmulti + 1) > s->multi_mask + 1 || !s->multi) {
		size_t size = s->multi ? 2 * (s->multi_mask + 1) : 256;
		struct ino_slot *t = calloc(size, sizeof(*t));
		if (!t)
			return -ENOMEM;
		for (size_t i = 0; s->multi && i <= s->multi_mask; i++)
			if (s->multi[i].entry1)
				multi_put(t, size - 1, s->multi[i]);
		free(s->multi);
		s->multi = t;
		s->multi_mask = size - 1;
	}
	multi_put(s->multi, s->multi_mask, (struct ino_slot){ .ino = ino, .entry1 = entry + 1 });
	s->nmulti++;
	return 0;
}

static int entry_add(struct snapshot *s, uint8_t kind, const char *path, const struct stat *sb)
{
	struct snap_entry *e;
	int rc;

	if (s->nents == s->ents_cap) {
		size_t cap = s->ents_cap ? s->ents_cap * 2 : 1024;
		e = realloc(s->ents, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		s->ents = e;
		s->ents_cap = cap;
	}
	e = &s->ents[s->nents];
	*e = (struct snap_entry){ .kind = kind, .mode = sb->st_mode, .uid = sb->st_uid,
				  .gid = sb->st_gid, .mtime_sec = sb->st_mtim.tv_sec,
				  .mtime_nsec = (uint32_t)sb->st_mtim.tv_nsec,
				  .path = s->arena.len };
	if (kind == IT_FILE)
		e->size_or_rdev = (uint64_t)sb->st_size;
	else if (kind == IT_NODE)
		e->size_or_rdev = (uint64_t)sb->st_rdev;
	if ((rc = bytebuf_put(&s->arena, path, strlen(path) + 1)) < 0)
		return rc;
	s->nents++;
	return 0;
}

static int entry_xattrs(struct snapshot *s, size_t i, int fd, const char *path)
{
	size_t off = s->arena.len;
	int rc = xattrs_read(fd, path, &s->arena);

	if (rc < 0)
		return rc;
	if (s->arena.len - off > ITEM_BODY_MAX / 2)
		return -E2BIG;
	s->ents[i].xattr_off = off;
	s->ents[i].xattr_len = (uint32_t)(s->arena.len - off);
	return 0;
}

static void file_link_name(char *buf, size_t size, char kind, size_t idx)
{
	snprintf(buf, size, "%c%zu", kind, idx);
}

/* Records one directory entry found in dfd (the directory dir_path). */
static int freeze_child(struct snapshot *s, int dfd, const char *dir_path, const char *name)
{
	char path[PATH_MAX], proc[64 + NAME_MAX], target[PATH_MAX], lname[32];
	struct stat sb;
	size_t idx;
	ssize_t n;
	int rc;

	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir_path, *dir_path ? "/" : "", name) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dfd, name);
	/* A further name of an inode met before, of any type but a directory:
	 * a HARDLINK to its first entry, so the receiver links the names
	 * rather than making one inode per name. */
	if (!S_ISDIR(sb.st_mode)) {
		ssize_t first = -1;
		if (S_ISREG(sb.st_mode)) {
			ssize_t f = file_find(s, sb.st_ino);
			if (f >= 0)
				first = (ssize_t)s->files[f].entry;
		} else if (sb.st_nlink > 1) {
			first = multi_find(s, sb.st_ino);
		}
		if (first >= 0) {
			if ((rc = entry_add(s, IT_HARDLINK, path, &sb)) < 0)
				return rc;
			s->ents[s->nents - 1].extra = (size_t)first;
			return 0;
		}
	}
	/* A symlink or node is frozen whole in memory below (the hook copies
	 * regular files only), so its first name needs no link of its own
	 * under STORE/snapshots/ either: only the lookup of further names. */
	if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode) && sb.st_nlink > 1 &&
	    (rc = multi_add(s, sb.st_ino, s->nents)) < 0)
		return rc;
	switch (sb.st_mode & S_IFMT) {
	case S_IFREG: {
		if ((rc = entry_add(s, IT_FILE, path, &sb)) < 0 ||
		    (rc = file_add(s, sb.st_ino, s->nents - 1, &idx)) < 0)
			return rc;
		s->ents[s->nents - 1].extra = idx;
		s->bytes += (uint64_t)sb.st_size;
		file_link_name(lname, sizeof(lname), 'f', idx);
		if (linkat(dfd, name, s->dirfd, lname, 0) < 0)
			return -errno;
		return 0;
	}
	case S_IFDIR:
		return entry_add(s, IT_DIR, path, &sb); /* xattrs when it is listed */
	case S_IFLNK:
		n = readlinkat(dfd, name, target, sizeof(target));
		if (n < 0)
			return -errno;
		if ((size_t)n >= sizeof(target))
			return -ENAMETOOLONG;
		target[n] = '\0';
		if ((rc = entry_add(s, IT_SYMLINK, path, &sb)) < 0)
			return rc;
		s->ents[s->nents - 1].extra = s->arena.len;
		if ((rc = bytebuf_put(&s->arena, target, (size_t)n + 1)) < 0)
			return rc;
		return entry_xattrs(s, s->nents - 1, -1, proc);
	default: /* fifo, char/block device, socket */
		if ((rc = entry_add(s, IT_NODE, path, &sb)) < 0)
			return rc;
		return entry_xattrs(s, s->nents - 1, -1, proc);
	}
}

/* Lists directory entry i: its xattrs and its children. */
static int freeze_dir(struct snapshot *s, const struct apply_ctx *ac, size_t i)
{
	char dir_path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	snprintf(dir_path, sizeof(dir_path), "%s", (char *)s->arena.p + s->ents[i].path);
	fd = i == 0 ? openat(ac->datafd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
		    : apply_open_beneath(ac, dir_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
	if (fd < 0)
		return i == 0 ? -errno : fd;
	if ((rc = entry_xattrs(s, i, fd, NULL)) < 0 || !(d = fdopendir(fd))) {
		rc = rc < 0 ? rc : -errno;
		close(fd);
		return rc;
	}
	while (rc == 0 && (errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		rc = freeze_child(s, dirfd(d), dir_path, de->d_name);
	}
	if (rc == 0 && errno)
		rc = -errno;
	closedir(d);
	return rc;
}

/* Breadth first: the entry list is its own queue, and every directory comes
 * before its contents. Called under order_lock. */
static int freeze_tree(struct snapshot *s, const struct apply_ctx *ac)
{
	struct stat sb;
	int rc;

	if (fstat(ac->datafd, &sb) < 0)
		return -errno;
	if ((rc = entry_add(s, IT_DIR, "", &sb)) < 0)
		return rc;
	for (size_t i = 0; i < s->nents; i++)
		if (s->ents[i].kind == IT_DIR && (rc = freeze_dir(s, ac, i)) < 0)
			return rc;
	return 0;
}

static void snapshot_free(struct snapshot *s)
{
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->ents);
	bytebuf_free(&s->arena);
	free(s->files);
	free(s->hash);
	free(s->multi);
	free(s);
}

int snapshot_create(struct store *st, struct commit *c, struct snapshot **out)
{
	struct snapshot *s = calloc(1, sizeof(*s));
	uint64_t t0, held_ns;
	int snapsfd = -1, rc;
	uint8_t rnd[6];
	char hex[13];

	if (!s)
		return -ENOMEM;
	s->dirfd = -1;
	s->st = st;
	s->c = c;
	atomic_init(&s->refs, 1);
	if (mkdirat(st->dirfd, "snapshots", 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	if ((snapsfd = openat(st->dirfd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			      O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}

	pthread_mutex_lock(&c->order_lock);
	t0 = time_mono_ns();
	if (c->sticky_err || c->before_apply) {
		rc = c->sticky_err ? c->sticky_err : -EBUSY; /* one snapshot at a time: share it */
		goto fail_locked;
	}
	s->lsn = c->state->applied_lsn;
	s->epoch = c->epoch;
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
	snprintf(s->name, sizeof(s->name), "%" PRIu64 "-%s", s->lsn, hex);
	if (mkdirat(snapsfd, s->name, 0700) < 0 ||
	    (s->dirfd = openat(snapsfd, s->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			       O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail_locked;
	}
	if ((rc = freeze_tree(s, &c->apply)) < 0)
		goto fail_locked;
	s->pending = s->nfiles;
	c->before_apply = snapshot_before_apply;
	c->before_apply_arg = s;
	held_ns = time_mono_ns() - t0;
	pthread_mutex_unlock(&c->order_lock);

	close(snapsfd);
	log_debug("snapshot %s: froze %zu entries, %zu files (%" PRIu64 " bytes) at LSN %" PRIu64
		  " epoch %" PRIu64 "; order lock held %.1f ms", s->name, s->nents, s->nfiles,
		  s->bytes, s->lsn, s->epoch, held_ns / 1e6);
	*out = s;
	return 0;

fail_locked:
	pthread_mutex_unlock(&c->order_lock);
	if (s->name[0]) {
		log_warn("snapshot at LSN %" PRIu64 " failed: %s", s->lsn, strerror(-rc));
		rm_tree(snapsfd, s->name);
	}
fail:
	if (snapsfd >= 0)
		close(snapsfd);
	snapshot_free(s);
	return rc;
}

struct snapshot *snapshot_get(struct snapshot *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void snapshot_put(struct snapshot *s)
{
	int snapsfd;

	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	pthread_mutex_lock(&s->c->order_lock);
	if (s->c->before_apply_arg == s) {
		s->c->before_apply = NULL;
		s->c->before_apply_arg = NULL;
	}
	pthread_mutex_unlock(&s->c->order_lock);
	snapsfd = openat(s->st->dirfd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (snapsfd >= 0) {
		int rc = rm_tree(snapsfd, s->name);
		if (rc < 0)
			log_warn("cannot remove snapshot %s/snapshots/%s: %s", s->st->path, s->name,
				 strerror(-rc));
		close(snapsfd);
	}
	log_debug("snapshot %s released: %" PRIu64 " files copied (%" PRIu64 " bytes), %" PRIu64
		  " released early", s->name, atomic_load(&s->copied_files),
		  atomic_load(&s->copied_bytes), atomic_load(&s->released_files));
	snapshot_free(s);
}

int snapshot_cleanup_stale(struct store *st)
{
	int rc = rm_tree(st->dirfd, "snapshots");

	if (rc < 0)
		log_warn("cannot remove stale snapshots in %s/snapshots: %s", st->path, strerror(-rc));
	return rc;
}

uint64_t snapshot_lsn(const struct snapshot *s)
{
	return s->lsn;
}

uint64_t snapshot_epoch(const struct snapshot *s)
{
	return s->epoch;
}

uint64_t snapshot_bytes(const struct snapshot *s)
{
	return s->bytes;
}

void snapshot_stats(const struct snapshot *s, struct snapshot_stats *out)
{
	*out = (struct snapshot_stats){
		.entries = s->nents,
		.files = s->nfiles,
		.bytes = s->bytes,
		.copied_files = atomic_load(&s->copied_files),
		.copied_bytes = atomic_load(&s->copied_bytes),
		.released_files = atomic_load(&s->released_files),
		.reader_switches = atomic_load(&s->switches),
		.failed = atomic_load(&s->failed),
	};
}

unsigned snapshot_extra_links(const struct snapshot *s, uint64_t ino)
{
	ssize_t f = file_find(s, ino);

	return f >= 0 && atomic_load(&s->files[f].state) == F_SHARED;
}

/* ---- copy-on-write ---- */

/* Copies [0, size) of src to dst keeping holes; in-kernel where it can. */
static int copy_content(int src, int dst, uint64_t size)
{
	static __thread char *bounce;
	off_t off = 0;

	while ((uint64_t)off < size) {
		off_t data = lseek(src, off, SEEK_DATA), hole;
		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)
			return -errno;
		hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		if ((uint64_t)hole > size)
			hole = (off_t)size;
		for (off = data; off < hole;) {
			loff_t in = off, o = off;
			ssize_t n = copy_file_range(src, &in, dst, &o, (size_t)(hole - off), 0);
			if (n > 0) {
				off += n;
				continue;
			}
			if (n == 0)
				return -EIO; /* the file shrank under a frozen size */
			if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS)
				return -errno;
			/* No in-kernel copy here: through a buffer. */
			if (!bounce && !(bounce = malloc(1 << 20)))
				return -ENOMEM;
			size_t len = (size_t)(hole - off) < (1u << 20) ? (size_t)(hole - off) : (1u << 20);
			int rc = io_pread_all(src, bounce, len, off);
			if (rc == 0)
				rc = io_pwrite_all(dst, bounce, len, off);
			if (rc < 0)
				return rc;
			off += (off_t)len;
		}
	}
	return ftruncate(dst, (off_t)size) < 0 ? -errno : 0;
}

static int cow_copy(struct snapshot *s, size_t idx)
{
	struct snap_file *f = &s->files[idx];
	uint64_t size = s->ents[f->entry].size_or_rdev;
	char src_name[32], dst_name[32];
	struct bytebuf xa = { 0 };
	int src, dst, rc;

	file_link_name(src_name, sizeof(src_name), 'f', idx);
	file_link_name(dst_name, sizeof(dst_name), 'c', idx);
	src = openat(s->dirfd, src_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return -errno;
	dst = openat(s->dirfd, dst_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dst < 0) {
		rc = -errno;
		close(src);
		return rc;
	}
	rc = copy_content(src, dst, size);
	if (rc == 0)
		rc = xattrs_read(src, NULL, &xa);
	if (rc == 0)
		rc = xattrs_apply(dst, NULL, xa.p, xa.len, 0);
	bytebuf_free(&xa);
	close(src);
	close(dst);
	if (rc < 0) {
		unlinkat(s->dirfd, dst_name, 0);
		return rc;
	}
	/* The protocol's publication: complete copy first, then the flag. */
	atomic_store(&f->state, F_COPIED);
	unlinkat(s->dirfd, src_name, 0); /* the live inode is no longer shared */
	atomic_fetch_add(&s->copied_files, 1);
	atomic_fetch_add(&s->copied_bytes, size);
	return 0;
}

void snapshot_before_apply(void *arg, const struct rec *r, int hint_fd)
{
	struct snapshot *s = arg;
	struct snap_file *f;
	struct stat sb;
	ssize_t idx;
	char name[32];
	int rc;

	switch (r->op) {
	case REC_WRITE:
	case REC_TRUNCATE:
	case REC_FALLOCATE:
	case REC_CHMOD:
	case REC_CHOWN:
	case REC_UTIMENS:
	case REC_SETXATTR:
	case REC_REMOVEXATTR:
		break;
	default:
		return; /* name changes leave every inode's content alone */
	}
	if (!s->pending || atomic_load(&s->failed))
		return;
	if (hint_fd >= 0) {
		if (fstat(hint_fd, &sb) < 0)
			return;
	} else {
		/* Resolved exactly as apply will: beneath data/, no symlinks. */
		int fd = apply_open_beneath(&s->c->apply, r->path, O_PATH | O_NOFOLLOW);
		if (fd < 0)
			return; /* the record will fail the same way */
		rc = fstat(fd, &sb);
		close(fd);
		if (rc < 0)
			return;
	}
	if (!S_ISREG(sb.st_mode) || (idx = file_find(s, sb.st_ino)) < 0)
		return;
	f = &s->files[idx];
	if (atomic_load(&f->state) != F_SHARED)
		return;
	s->pending--;
	if (s->readers_opened && atomic_load(&f->sent) == s->readers_opened) {
		/* Every reader has it: no copy needed, but no later reader could
		 * get it any more. */
		atomic_store(&s->sealed, 1);
		atomic_store(&f->state, F_RELEASED);
		file_link_name(name, sizeof(name), 'f', (size_t)idx);
		unlinkat(s->dirfd, name, 0);
		atomic_fetch_add(&s->released_files, 1);
		return;
	}
	if ((rc = cow_copy(s, (size_t)idx)) < 0) {
		log_error("snapshot %s at LSN %" PRIu64 ": cannot save %s before LSN %" PRIu64
			  " changes it: %s; the snapshot is abandoned", s->name, s->lsn,
			  (char *)s->arena.p + s->ents[f->entry].path, r->lsn, strerror(-rc));
		atomic_store(&s->failed, rc);
	}
}

/* ======================================================================
 * Master: the sender
 * ====================================================================== */

struct snapshot_reader {
	struct snapshot *s;
	int plain;               /* the bare item stream: no framing, no cipher */
	crypto_secretstream_xchacha20poly1305_state ss;
	uint8_t *bind;
	size_t bindlen;
	uint64_t msgs;           /* messages pushed */
	uint8_t *pt;             /* plaintext of the message being built */
	size_t pt_len;
	uint8_t *ct;             /* framed ciphertext waiting to be read */
	size_t ct_len, ct_pos;
	struct bytebuf item;         /* an item not yet moved into pt */
	size_t item_pos;
	size_t next;             /* next entry to send */
	int trailer_queued, done, err;
	/* The file being sent. */
	int in_file, fd, from_copy;
	size_t fidx;
	const char *fpath;
	uint64_t off, size, data_end;
	/* What was sent (the trailer). */
	uint64_t entries, files, bytes;
	/* Read-ahead: the disk works on the next files while this one is
	 * encrypted (pf_total counts content bytes asked for, like bytes). */
	size_t pf_entry;
	int pf_fd;
	uint64_t pf_off, pf_total;
};

static void item_start(struct bytebuf *b, uint32_t type, uint32_t len)
{
	uint8_t *p = b->p + b->len;

	le_put32(p, type);
	le_put32(p + 4, len);
	b->len += ITEM_HDR;
}

/* Queues the entry item of entry e (FILE: and opens its content). */
static int queue_entry(struct snapshot_reader *r, size_t ei)
{
	struct snapshot *s = r->s;
	const struct snap_entry *e = &s->ents[ei];
	const char *path = (char *)s->arena.p + e->path, *target = "";
	size_t pl = strlen(path), tl = 0, xl = e->kind == IT_FILE ? 0 : e->xattr_len;
	uint32_t len;
	uint8_t *p;
	int rc;

	if (e->kind == IT_SYMLINK)
		target = (char *)s->arena.p + e->extra;
	else if (e->kind == IT_HARDLINK)
		target = (char *)s->arena.p + s->ents[e->extra].path;
	tl = strlen(target);
	len = (uint32_t)(ENTRY_FIXED + pl + tl + xl);
	r->item.len = 0;
	r->item_pos = 0;
	if ((rc = bytebuf_reserve(&r->item, ITEM_HDR + len)) < 0)
		return rc;
	item_start(&r->item, e->kind, len);
	p = r->item.p + r->item.len;
	memset(p, 0, ENTRY_FIXED);
	if (e->kind != IT_HARDLINK) {
		le_put32(p, e->mode);
		le_put32(p + 4, e->uid);
		le_put32(p + 8, e->gid);
		le_put32(p + 12, e->mtime_nsec);
		le_put64(p + 16, (uint64_t)e->mtime_sec);
		le_put64(p + 24, e->size_or_rdev);
	}
	le_put32(p + 32, (uint32_t)pl);
	le_put32(p + 36, (uint32_t)tl);
	le_put32(p + 40, (uint32_t)xl);
	p += ENTRY_FIXED;
	memcpy(p, path, pl);
	memcpy(p + pl, target, tl);
	memcpy(p + pl + tl, s->arena.p + e->xattr_off, xl);
	r->item.len += len;
	r->entries++;

	if (e->kind == IT_FILE) {
		struct snap_file *f = &s->files[e->extra];
		char name[32];
		int st = atomic_load(&f->state);

		r->fidx = e->extra;
		r->fpath = path;
		r->size = e->size_or_rdev;
		r->off = r->data_end = 0;
		r->from_copy = st == F_COPIED;
		file_link_name(name, sizeof(name), r->from_copy ? 'c' : 'f', r->fidx);
		r->fd = openat(s->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (r->fd < 0 && errno == ENOENT && !r->from_copy &&
		    atomic_load(&f->state) == F_COPIED) {
			/* Copied between our look at the flag and the open. */
			r->from_copy = 1;
			file_link_name(name, sizeof(name), 'c', r->fidx);
			r->fd = openat(s->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (r->fd < 0)
			return st == F_RELEASED ? -ESTALE : -errno;
		posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		r->in_file = 1;
		r->files++;
	}
	return 0;
}

/* Asks the kernel to read content up to PREFETCH_AHEAD bytes ahead of what
 * was sent, across files. Only a hint: whatever it reads, the sender reads
 * again under the protocol below. */
static void prefetch(struct snapshot_reader *r)
{
	struct snapshot *s = r->s;

	while (r->pf_total < r->bytes + PREFETCH_AHEAD && r->pf_entry < s->nents) {
		const struct snap_entry *e = &s->ents[r->pf_entry];
		if (e->kind != IT_FILE) {
			r->pf_entry++;
			continue;
		}
		if (r->pf_fd < 0) {
			char name[32];
			int copied = atomic_load(&s->files[e->extra].state) == F_COPIED;
			file_link_name(name, sizeof(name), copied ? 'c' : 'f', e->extra);
			r->pf_fd = openat(s->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		}
		uint64_t n = e->size_or_rdev - r->pf_off;
		if (n > PREFETCH_STEP)
			n = PREFETCH_STEP;
		if (r->pf_fd >= 0 && n)
			posix_fadvise(r->pf_fd, (off_t)r->pf_off, (off_t)n, POSIX_FADV_WILLNEED);
		r->pf_off += n;
		r->pf_total += n;
		if (r->pf_off >= e->size_or_rdev) {
			if (r->pf_fd >= 0)
				close(r->pf_fd);
			r->pf_fd = -1;
			r->pf_off = 0;
			r->pf_entry++;
		}
	}
}

/* The protocol's check, after every read from the shared inode: 1 when the
 * hook copied the file meanwhile (what was just read is discarded and read
 * again from the copy), 0 when the read stands, or -errno. */
static int content_check(struct snapshot_reader *r)
{
	struct snap_file *f = &r->s->files[r->fidx];
	char name[32];
	int failed;

	if (r->from_copy)
		return 0; /* copies never change */
	int st = atomic_load(&f->state);
	if ((failed = atomic_load(&r->s->failed)))
		return failed;
	if (st == F_SHARED)
		return 0;
	if (st != F_COPIED)
		return -ESTALE;
	close(r->fd);
	file_link_name(name, sizeof(name), 'c', r->fidx);
	r->fd = openat(r->s->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (r->fd < 0)
		return -errno;
	posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	r->from_copy = 1;
	r->data_end = r->off; /* look for data again, in the copy */
	atomic_fetch_add(&r->s->switches, 1);
	return 1;
}

/* The file's xattrs, read after its content; ends the file. */
static int file_finish(struct snapshot_reader *r)
{
	int rc;

	for (;;) {
		r->item.len = 0;
		r->item_pos = 0;
		if ((rc = bytebuf_reserve(&r->item, ITEM_HDR)) < 0)
			return rc;
		r->item.len = ITEM_HDR;
		if ((rc = xattrs_read(r->fd, NULL, &r->item)) < 0)
			return rc;
		if ((rc = content_check(r)) < 0)
			return rc;
		if (rc == 0)
			break;
	}
	if (r->item.len - ITEM_HDR > ITEM_BODY_MAX)
		return -E2BIG;
	le_put32(r->item.p, IT_FXATTR);
	le_put32(r->item.p + 4, (uint32_t)(r->item.len - ITEM_HDR));
	close(r->fd);
	r->fd = -1;
	r->in_file = 0;
	atomic_fetch_add(&r->s->files[r->fidx].sent, 1);
	return 0;
}

/* Adds the next piece of the current file to the message. Returns 1 when
 * the message has no room left, 0 to go on, or -errno. */
static int file_step(struct snapshot_reader *r)
{
	size_t room = FRAME_PT - r->pt_len;
	int rc;

	if (r->off == r->size)
		return file_finish(r);
	if (r->off >= r->data_end) {
		/* Where the next data is: a hole first, maybe. */
		off_t data = lseek(r->fd, (off_t)r->off, SEEK_DATA), hole;
		if (data < 0 && errno != ENXIO)
			return -errno;
		if (data < 0 || (uint64_t)data > r->size)
			data = (off_t)r->size;
		hole = (uint64_t)data < r->size ? lseek(r->fd, data, SEEK_HOLE) : data;
		if (hole < 0)
			return -errno;
		if ((uint64_t)hole > r->size)
			hole = (off_t)r->size;
		if ((rc = content_check(r)) != 0)
			return rc < 0 ? rc : 0;
		if ((uint64_t)data > r->off) {
			if (room < ITEM_HDR + 8)
				return 1;
			le_put32(r->pt + r->pt_len, IT_HOLE);
			le_put32(r->pt + r->pt_len + 4, 8);
			le_put64(r->pt + r->pt_len + ITEM_HDR, (uint64_t)data - r->off);
			r->pt_len += ITEM_HDR + 8;
			r->bytes += (uint64_t)data - r->off;
			r->off = (uint64_t)data;
		}
		r->data_end = (uint64_t)hole;
		return 0;
	}
	if (room < ITEM_HDR + MIN_DATA_CHUNK)
		return 1;
	prefetch(r);
	size_t n = room - ITEM_HDR;
	if (n > r->data_end - r->off)
		n = (size_t)(r->data_end - r->off);
	int rrc = io_pread_all(r->fd, r->pt + r->pt_len + ITEM_HDR, n, (off_t)r->off);
	if ((rc = content_check(r)) != 0)
		return rc < 0 ? rc : 0;
	if (rrc < 0)
		return rrc; /* shorter than frozen, and not copied: cannot be */
	le_put32(r->pt + r->pt_len, IT_DATA);
	le_put32(r->pt + r->pt_len + 4, (uint32_t)n);
	r->pt_len += ITEM_HDR + n;
	r->off += n;
	r->bytes += n;
	return 0;
}

/* Builds the next message and encrypts it into r->ct. */
static int reader_fill(struct snapshot_reader *r)
{
	struct snapshot *s = r->s;
	int rc, final = 0, failed;
	unsigned long long clen;

	r->pt_len = 0;
	while (r->pt_len < FRAME_PT) {
		if (r->item_pos < r->item.len) {
			size_t n = r->item.len - r->item_pos;
			if (n > FRAME_PT - r->pt_len)
				n = FRAME_PT - r->pt_len;
			memcpy(r->pt + r->pt_len, r->item.p + r->item_pos, n);
			r->pt_len += n;
			r->item_pos += n;
		} else if (r->in_file) {
			if ((rc = file_step(r)) < 0)
				return rc;
			if (rc == 1)
				break;
		} else if (r->next < s->nents) {
			if ((rc = queue_entry(r, r->next++)) < 0)
				return rc;
		} else if (!r->trailer_queued) {
			r->item.len = r->item_pos = 0;
			if ((rc = bytebuf_reserve(&r->item, ITEM_HDR + TRAILER_LEN)) < 0)
				return rc;
			item_start(&r->item, IT_TRAILER, TRAILER_LEN);
			le_put64(r->item.p + ITEM_HDR, r->entries);
			le_put64(r->item.p + ITEM_HDR + 8, r->files);
			le_put64(r->item.p + ITEM_HDR + 16, r->bytes);
			r->item.len += TRAILER_LEN;
			r->trailer_queued = 1;
		} else {
			final = 1;
			break;
		}
	}
	if (!final && r->trailer_queued && r->item_pos == r->item.len)
		final = 1; /* the trailer filled the message exactly */
	if ((failed = atomic_load(&s->failed)))
		return failed;
	if (r->plain) {
		memcpy(r->ct + r->ct_len, r->pt, r->pt_len);
		r->ct_len += r->pt_len;
		r->msgs++;
		r->done = final;
		return 0;
	}
	if (crypto_secretstream_xchacha20poly1305_push(
		    &r->ss, r->ct + r->ct_len + 4, &clen, r->pt, r->pt_len,
		    r->msgs == 0 ? r->bind : NULL, r->msgs == 0 ? r->bindlen : 0,
		    final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
			  : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) != 0)
		return -EIO;
	le_put32(r->ct + r->ct_len, (uint32_t)clen);
	r->ct_len += 4 + (size_t)clen;
	r->msgs++;
	r->done = final;
	return 0;
}

/* key NULL: the plaintext reader (no secretstream header, no framing). */
static int reader_open(struct snapshot *s, const uint8_t *key, const uint8_t *bind,
		       size_t bindlen, struct snapshot_reader **out)
{
	struct snapshot_reader *r;
	int rc, failed;

	if (sodium_init() < 0)
		return -EIO;
	if ((failed = atomic_load(&s->failed)))
		return failed;
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->fd = r->pf_fd = -1;
	r->pt = malloc(FRAME_PT);
	r->ct = malloc(STREAM_HDR + 4 + FRAME_CT);
	r->bind = malloc(bindlen ? bindlen : 1);
	if (!r->pt || !r->ct || !r->bind || bytebuf_reserve(&r->item, ITEM_HDR + HEAD_LEN) < 0) {
		rc = -ENOMEM;
		goto fail;
	}
	if (bindlen)
		memcpy(r->bind, bind, bindlen);
	r->bindlen = bindlen;
	r->plain = key == NULL;
	if (!r->plain) {
		crypto_secretstream_xchacha20poly1305_init_push(&r->ss, r->ct, key);
		r->ct_len = STREAM_HDR;
	}

	item_start(&r->item, IT_HEAD, HEAD_LEN);
	uint8_t *p = r->item.p + ITEM_HDR;
	memcpy(p, SNAP_MAGIC, 8);
	le_put32(p + 8, SNAP_VERSION);
	le_put32(p + 12, 0);
	le_put64(p + 16, s->lsn);
	le_put64(p + 24, s->epoch);
	le_put64(p + 32, s->nents);
	le_put64(p + 40, s->nfiles);
	le_put64(p + 48, s->bytes);
	r->item.len += HEAD_LEN;

	/* Counted under the lock the hook runs under: from now on it copies
	 * rather than releases what this reader has not sent. */
	pthread_mutex_lock(&s->c->order_lock);
	rc = atomic_load(&s->sealed) ? -ESTALE : 0;
	if (rc == 0)
		s->readers_opened++;
	pthread_mutex_unlock(&s->c->order_lock);
	if (rc < 0)
		goto fail;
	r->s = snapshot_get(s);
	*out = r;
	return 0;
fail:
	free(r->pt);
	free(r->ct);
	free(r->bind);
	bytebuf_free(&r->item);
	free(r);
	return rc;
}

int snapshot_reader_open(struct snapshot *s, const uint8_t key[32], const uint8_t *bind,
			 size_t bindlen, struct snapshot_reader **out)
{
	return reader_open(s, key, bind, bindlen, out);
}

int snapshot_reader_open_plain(struct snapshot *s, struct snapshot_reader **out)
{
	return reader_open(s, NULL, NULL, 0, out);
}

ssize_t snapshot_reader_read(struct snapshot_reader *r, uint8_t *buf, size_t max)
{
	int rc;

	for (;;) {
		if (r->ct_pos < r->ct_len) {
			size_t n = r->ct_len - r->ct_pos;
			if (n > max)
				n = max;
			memcpy(buf, r->ct + r->ct_pos, n);
			r->ct_pos += n;
			return (ssize_t)n;
		}
		if (r->done)
			return 0;
		if (r->err)
			return r->err;
		r->ct_len = r->ct_pos = 0;
		if ((rc = reader_fill(r)) < 0) {
			log_error("snapshot %s: stream stopped%s%s: %s", r->s->name,
				  r->in_file ? " at " : "", r->in_file ? r->fpath : "", strerror(-rc));
			r->err = rc;
			return rc;
		}
	}
}

void snapshot_reader_close(struct snapshot_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	if (r->pf_fd >= 0)
		close(r->pf_fd);
	sodium_memzero(&r->ss, sizeof(r->ss));
	free(r->pt);
	free(r->ct);
	free(r->bind);
	bytebuf_free(&r->item);
	snapshot_put(r->s);
	free(r);
}

uint64_t snapshot_reader_sent(const struct snapshot_reader *r)
{
	return r->bytes;
}

const char *snapshot_reader_file(const struct snapshot_reader *r)
{
	return r->in_file ? r->fpath : NULL;
}

/* ======================================================================
 * The item sequence, cut into items (the installer and verify.c)
 * ====================================================================== */

struct snapshot_items {
	const struct snapshot_items_ops *ops;
	void *arg;
	uint8_t hdr[ITEM_HDR];
	size_t hdr_have;
	uint32_t type, len;      /* the item under way; DATA: body bytes still due */
	int in_body;
	struct bytebuf body;     /* a body but DATA's, until it is whole */
	int got_head, got_trailer;
	struct snapshot_head head;
	uint64_t entries, files, file_bytes; /* taken by the caller so far */
};

int snapshot_items_new(const struct snapshot_items_ops *ops, void *arg, struct snapshot_items **out)
{
	struct snapshot_items *it = calloc(1, sizeof(*it));

	if (!it)
		return -ENOMEM;
	it->ops = ops;
	it->arg = arg;
	*out = it;
	return 0;
}

void snapshot_items_free(struct snapshot_items *it)
{
	if (!it)
		return;
	bytebuf_free(&it->body);
	free(it);
}

/* Is an item of this type and length allowed here? Decided from the header
 * alone, before a byte of its body is buffered or written. */
static int items_allowed(const struct snapshot_items *it)
{
	uint64_t room = 0;
	int in_file = it->ops->file_room(it->arg, &room);

	if (it->got_trailer || (!it->got_head) != (it->type == IT_HEAD))
		return 0;
	switch (it->type) {
	case IT_DATA:
		return in_file && it->len <= room;
	case IT_HOLE:
	case IT_FXATTR:
		return in_file && it->len <= ITEM_BODY_MAX;
	default:
		return !in_file && it->len <= ITEM_BODY_MAX;
	}
}

/* A whole item other than DATA. The stream's own bookkeeping (HEAD, TRAILER,
 * an entry's envelope) is checked here; what an entry means, the caller
 * checks. */
static int items_take(struct snapshot_items *it, const uint8_t *b, uint32_t len)
{
	struct snapshot_head *h = &it->head;
	uint32_t pl, tl, xl;
	int rc;

	switch (it->type) {
	case IT_HEAD:
		if (len != HEAD_LEN || memcmp(b, SNAP_MAGIC, 8) != 0)
			return -EBADMSG;
		if (le_get32(b + 8) != SNAP_VERSION)
			return -EPROTO;
		*h = (struct snapshot_head){ .lsn = le_get64(b + 16), .epoch = le_get64(b + 24),
					     .entries = le_get64(b + 32), .files = le_get64(b + 40),
					     .file_bytes = le_get64(b + 48) };
		return 0;
	case IT_DIR:
	case IT_FILE:
	case IT_HARDLINK:
	case IT_SYMLINK:
	case IT_NODE:
		if (len < ENTRY_FIXED)
			return -EBADMSG;
		pl = le_get32(b + 32);
		tl = le_get32(b + 36);
		xl = le_get32(b + 40);
		if ((uint64_t)ENTRY_FIXED + pl + tl + xl != len || le_get32(b + 12) >= 1000000000u)
			return -EBADMSG;
		/* The root comes first, as itself and only there. */
		if ((it->entries == 0) != (it->type == IT_DIR && pl == 0))
			return -EINVAL;
		if ((rc = it->ops->item(it->arg, it->type, b, len)) < 0)
			return rc;
		it->entries++;
		if (it->type == IT_FILE) {
			it->files++;
			it->file_bytes += le_get64(b + 24);
		}
		return 0;
	case IT_HOLE:
	case IT_FXATTR:
		return it->ops->item(it->arg, it->type, b, len);
	case IT_TRAILER:
		/* Every file's content was held to its size at its FXATTR, so
		 * file_bytes is also the content that came. */
		if (len != TRAILER_LEN || le_get64(b) != it->entries || le_get64(b + 8) != it->files ||
		    le_get64(b + 16) != it->file_bytes || it->entries != h->entries ||
		    it->files != h->files || it->file_bytes != h->file_bytes)
			return -EBADMSG;
		return 0;
	}
	return -EBADMSG;
}

int snapshot_items_feed(struct snapshot_items *it, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	int rc;

	while (n > 0) {
		if (!it->in_body) {
			size_t k = ITEM_HDR - it->hdr_have;
			if (k > n)
				k = n;
			memcpy(it->hdr + it->hdr_have, p, k);
			it->hdr_have += k;
			p += k;
			n -= k;
			if (it->hdr_have < ITEM_HDR)
				return 0;
			it->type = le_get32(it->hdr);
			it->len = le_get32(it->hdr + 4);
			/* A refused header is left in hdr: bytes after the
			 * TRAILER must not leave the stream looking done. */
			if (!items_allowed(it))
				return -EBADMSG;
			it->hdr_have = 0;
			it->in_body = 1;
			it->body.len = 0;
			if (it->type != IT_DATA && (rc = bytebuf_reserve(&it->body, it->len)) < 0)
				return rc;
		} else if (it->type == IT_DATA) {
			/* Content goes straight through: a file may be far larger than memory. */
			size_t k = it->len < n ? it->len : n;
			if ((rc = it->ops->data(it->arg, p, k)) < 0)
				return rc;
			it->len -= (uint32_t)k;
			p += k;
			n -= k;
		} else {
			size_t k = it->len - it->body.len;
			if (k > n)
				k = n;
			memcpy(it->body.p + it->body.len, p, k);
			it->body.len += k;
			p += k;
			n -= k;
		}
		if (it->in_body && (it->type == IT_DATA ? it->len == 0 : it->body.len == it->len)) {
			it->in_body = 0;
			if (it->type == IT_DATA)
				continue;
			if ((rc = items_take(it, it->body.p, it->len)) < 0)
				return rc;
			it->got_head |= it->type == IT_HEAD;
			it->got_trailer |= it->type == IT_TRAILER;
		}
	}
	return 0;
}

int snapshot_items_done(const struct snapshot_items *it)
{
	return it->got_trailer && !it->in_body && it->hdr_have == 0;
}

const struct snapshot_head *snapshot_items_head(const struct snapshot_items *it)
{
	return &it->head;
}

/* ======================================================================
 * Slave: install
 * ====================================================================== */

#define MARKER "install"

struct install_marker {
	int swap;                /* phase: 0 receiving, 1 swap */
	uint64_t lsn, epoch, tree_ino;
};

static int marker_read(struct store *st, struct install_marker *m)
{
	char *text = NULL, phase[16] = "";
	int rc = io_read_file(st->dirfd, MARKER, &text, NULL, 1024);

	if (rc < 0)
		return rc;
	memset(m, 0, sizeof(*m));
	if (sscanf(text, "replfs-install 1\nphase %15s", phase) != 1) {
		rc = -EINVAL;
	} else if (!strcmp(phase, "receiving")) {
		m->swap = 0;
	} else if (!strcmp(phase, "swap") &&
		   sscanf(text, "replfs-install 1\nphase swap\nlsn %" SCNu64 "\nepoch %" SCNu64
			  "\ntree_ino %" SCNu64, &m->lsn, &m->epoch, &m->tree_ino) == 3) {
		m->swap = 1;
	} else {
		rc = -EINVAL;
	}
	free(text);
	if (rc < 0)
		log_error("%s/%s is damaged; remove it and the incoming/ folder to fetch the "
			  "snapshot again", st->path, MARKER);
	return rc;
}

static int marker_write(struct store *st, const struct install_marker *m)
{
	char buf[256];
	int n = m->swap ? snprintf(buf, sizeof(buf), "replfs-install 1\nphase swap\nlsn %" PRIu64
				   "\nepoch %" PRIu64 "\ntree_ino %" PRIu64 "\n", m->lsn,
				   m->epoch, m->tree_ino)
			: snprintf(buf, sizeof(buf), "replfs-install 1\nphase receiving\n");

	return io_write_file_atomic(st->dirfd, MARKER, buf, (size_t)n);
}

static int marker_remove(struct store *st)
{
	if (unlinkat(st->dirfd, MARKER, 0) < 0 && errno != ENOENT)
		return -errno;
	return fsync(st->dirfd) < 0 ? -errno : 0;
}

static uint64_t ino_of(int dirfd, const char *name)
{
	struct stat sb;

	return fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)sb.st_ino : 0;
}

struct dir_time {
	size_t path;             /* offset in dir_paths */
	int64_t sec;
	uint32_t nsec;
};

struct snapshot_install {
	struct store *st;
	int incfd, treefd;
	struct apply_ctx ac;     /* datafd = the tree being built */
	uint8_t key[32];
	uint8_t *bind;
	size_t bindlen;
	int err;                 /* sticky */

	/* Framing and decryption. */
	crypto_secretstream_xchacha20poly1305_state ss;
	uint8_t hdr[STREAM_HDR];
	size_t hdr_have;
	uint8_t lenb[4];
	size_t len_have;
	uint32_t clen;
	uint8_t *cbuf, *pbuf;
	size_t c_have;
	uint64_t msgs;
	int final_seen;

	/* Items. */
	struct snapshot_items *items;
	uint64_t entries, files, bytes; /* seen so far */

	/* The file being received. */
	int ffd;
	uint64_t fsize, foff;
	uint32_t fmode, fuid, fgid, fnsec;
	int64_t fsec;

	/* Parent directory of the last entry. */
	char *ppath;
	int pfd;

	/* Directory mtimes, set at the end. */
	struct dir_time *dirs;
	size_t ndirs, dirs_cap;
	struct bytebuf dir_paths;
};

static const struct snapshot_items_ops install_items_ops;

int snapshot_install_begin(struct store *st, const uint8_t key[32], const uint8_t *bind,
			   size_t bindlen, struct snapshot_install **out)
{
	struct install_marker m = { 0 };
	struct snapshot_install *in;
	int rc;

	if (sodium_init() < 0)
		return -EIO;
	rc = marker_read(st, &m);
	if (rc == 0 && m.swap && ino_of(st->dirfd, "data") == m.tree_ino) {
		/* Half swapped: only snapshot_install_swap() may go on from here. */
		log_error("%s: an installed snapshot (LSN %" PRIu64 ") is half swapped in; finish "
			  "it first", st->path, m.lsn);
		return -EBUSY;
	}
	if (rc < 0 && rc != -ENOENT)
		return rc;
	if (!(in = calloc(1, sizeof(*in))))
		return -ENOMEM;
	in->st = st;
	in->incfd = in->treefd = in->ffd = in->pfd = -1;
	memcpy(in->key, key, 32);
	in->cbuf = malloc(FRAME_CT);
	in->pbuf = malloc(FRAME_PT);
	in->bind = malloc(bindlen ? bindlen : 1);
	if (!in->cbuf || !in->pbuf || !in->bind ||
	    snapshot_items_new(&install_items_ops, in, &in->items) < 0) {
		rc = -ENOMEM;
		goto fail;
	}
	if (bindlen)
		memcpy(in->bind, bind, bindlen);
	in->bindlen = bindlen;
	m = (struct install_marker){ .swap = 0 };
	/* Marker first: a crash from here on leaves something recovery discards. */
	if ((rc = marker_write(st, &m)) < 0 || (rc = rm_tree(st->dirfd, "incoming")) < 0)
		goto fail;
	if (mkdirat(st->dirfd, "incoming", 0700) < 0 ||
	    (in->incfd = openat(st->dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				O_CLOEXEC)) < 0 ||
	    mkdirat(in->incfd, "tree", 0700) < 0 ||
	    (in->treefd = openat(in->incfd, "tree", O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				 O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	in->ac = (struct apply_ctx){ .datafd = in->treefd, .stagingfd = -1 };
	*out = in;
	return 0;
fail:
	log_error("%s: cannot start a snapshot install: %s", st->path, strerror(-rc));
	snapshot_install_abort(in);
	return rc;
}

/* ---- creating the tree ---- */

static int parent_fd(struct snapshot_install *in, const char *parent)
{
	int fd;

	if (in->pfd >= 0 && !strcmp(in->ppath, parent))
		return in->pfd;
	fd = apply_open_beneath(&in->ac, parent, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return fd;
	char *p = strdup(parent);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	if (in->pfd >= 0)
		close(in->pfd);
	free(in->ppath);
	in->pfd = fd;
	in->ppath = p;
	return fd;
}

/* Owner, then mode (chown clears set-id bits), then xattrs of an open
 * directory or file. */
static int finish_fd(int fd, uint32_t uid, uint32_t gid, uint32_t mode, const uint8_t *xa,
		     size_t xl)
{
	if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode & 07777) < 0)
		return -errno;
	return xattrs_apply(fd, NULL, xa, xl, 0);
}

static int remember_dir_time(struct snapshot_install *in, const char *path, int64_t sec,
			     uint32_t nsec)
{
	int rc;

	if (in->ndirs == in->dirs_cap) {
		size_t cap = in->dirs_cap ? 2 * in->dirs_cap : 256;
		struct dir_time *d = realloc(in->dirs, cap * sizeof(*d));
		if (!d)
			return -ENOMEM;
		in->dirs = d;
		in->dirs_cap = cap;
	}
	in->dirs[in->ndirs] = (struct dir_time){ .path = in->dir_paths.len, .sec = sec, .nsec = nsec };
	if ((rc = bytebuf_put(&in->dir_paths, path, strlen(path) + 1)) < 0)
		return rc;
	in->ndirs++;
	return 0;
}

/* A checked copy of a path from the stream. */
static int take_path(char *dst, const uint8_t *src, uint32_t len, int allow_root)
{
	if (len >= PATH_MAX || (len == 0 && !allow_root))
		return -EINVAL;
	memcpy(dst, src, len);
	dst[len] = '\0';
	return path_check(dst, len) < 0 ? -EINVAL : 0;
}

static int install_entry(struct snapshot_install *in, uint32_t itype, const uint8_t *b)
{
	char path[PATH_MAX], parent[PATH_MAX], target[PATH_MAX], proc[64 + NAME_MAX];
	uint32_t mode, uid, gid, nsec, pl, tl, xl;
	const char *name;
	const uint8_t *xa;
	int64_t sec;
	uint64_t aux;
	int pfd, fd, rc, type = (int)itype, first = in->entries == 0;

	mode = le_get32(b);
	uid = le_get32(b + 4);
	gid = le_get32(b + 8);
	nsec = le_get32(b + 12);
	sec = (int64_t)le_get64(b + 16);
	aux = le_get64(b + 24);
	pl = le_get32(b + 32);
	tl = le_get32(b + 36);
	xl = le_get32(b + 40);
	if ((rc = take_path(path, b + ENTRY_FIXED, pl, first)) < 0)
		return rc;
	xa = b + ENTRY_FIXED + pl + tl;
	in->entries++;
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = sec, .tv_nsec = nsec } };

	if (first) {
		if (!S_ISDIR(mode))
			return -EBADMSG;
		if ((rc = finish_fd(in->treefd, uid, gid, mode, xa, xl)) < 0)
			return rc;
		return remember_dir_time(in, path, sec, nsec);
	}
	name = path_split(path, parent, sizeof(parent));
	if ((pfd = parent_fd(in, parent)) < 0)
		return pfd;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", pfd, name);

	switch (type) {
	case IT_DIR:
		if (!S_ISDIR(mode))
			return -EBADMSG;
		if (mkdirat(pfd, name, 0700) < 0)
			return -errno;
		if ((fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			return -errno;
		rc = finish_fd(fd, uid, gid, mode, xa, xl);
		close(fd);
		return rc < 0 ? rc : remember_dir_time(in, path, sec, nsec);
	case IT_FILE:
		if (!S_ISREG(mode) || xl || tl)
			return -EBADMSG;
		in->ffd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (in->ffd < 0)
			return -errno;
		in->fsize = aux;
		in->foff = 0;
		in->fmode = mode;
		in->fuid = uid;
		in->fgid = gid;
		in->fsec = sec;
		in->fnsec = nsec;
		in->files++;
		in->bytes += aux;
		return 0;
	case IT_HARDLINK: {
		char tparent[PATH_MAX];
		const char *tname;
		struct stat sb;
		int tfd;

		if (xl || (rc = take_path(target, b + ENTRY_FIXED + pl, tl, 0)) < 0)
			return xl ? -EBADMSG : rc;
		tname = path_split(target, tparent, sizeof(tparent));
		if ((tfd = apply_open_beneath(&in->ac, tparent, O_RDONLY | O_DIRECTORY)) < 0)
			return tfd;
		/* Any type but a directory (the kernel refuses those anyway);
		 * linkat() without AT_SYMLINK_FOLLOW names a symlink itself,
		 * never what it points at. */
		rc = fstatat(tfd, tname, &sb, AT_SYMLINK_NOFOLLOW) < 0 ? -errno
		     : S_ISDIR(sb.st_mode)				   ? -EINVAL
		     : linkat(tfd, tname, pfd, name, 0) < 0		   ? -errno
									   : 0;
		close(tfd);
		return rc;
	}
	case IT_SYMLINK:
		if (tl == 0 || tl >= PATH_MAX)
			return -EBADMSG;
		memcpy(target, b + ENTRY_FIXED + pl, tl);
		target[tl] = '\0';
		if (strlen(target) != tl)
			return -EBADMSG;
		if (symlinkat(target, pfd, name) < 0 ||
		    fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if ((rc = xattrs_apply(-1, proc, xa, xl, 1)) < 0)
			return rc;
		return utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	case IT_NODE:
		if (!S_ISFIFO(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISSOCK(mode))
			return -EBADMSG;
		if (mknodat(pfd, name, (mode & S_IFMT) | (mode & 07777), (dev_t)aux) < 0 ||
		    fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(pfd, name, mode & 07777, 0) < 0)
			return -errno;
		if ((rc = xattrs_apply(-1, proc, xa, xl, 0)) < 0)
			return rc;
		return utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	}
	return -EBADMSG;
}

static int install_file_end(struct snapshot_install *in, const uint8_t *xa, size_t xl)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = in->fsec, .tv_nsec = in->fnsec } };
	int rc;

	if (in->foff != in->fsize)
		return -EBADMSG;
	/* Content (a trailing hole is only a size), owner, mode, xattrs, time. */
	if (ftruncate(in->ffd, (off_t)in->fsize) < 0)
		rc = -errno;
	else if ((rc = finish_fd(in->ffd, in->fuid, in->fgid, in->fmode, xa, xl)) == 0 &&
		 futimens(in->ffd, ts) < 0)
		rc = -errno;
	close(in->ffd);
	in->ffd = -1;
	return rc;
}

static int install_item(void *arg, uint32_t type, const uint8_t *b, uint32_t len)
{
	struct snapshot_install *in = arg;

	switch (type) {
	case IT_DIR:
	case IT_FILE:
	case IT_HARDLINK:
	case IT_SYMLINK:
	case IT_NODE:
		return install_entry(in, type, b);
	case IT_HOLE: {
		uint64_t n;
		if (len != 8)
			return -EBADMSG;
		n = le_get64(b);
		if (n > in->fsize - in->foff)
			return -EBADMSG;
		in->foff += n;
		return 0;
	}
	case IT_FXATTR:
		return install_file_end(in, b, len);
	}
	return -EBADMSG;
}

static int install_file_room(void *arg, uint64_t *room)
{
	struct snapshot_install *in = arg;

	*room = in->fsize - in->foff;
	return in->ffd >= 0;
}

static int install_data(void *arg, const uint8_t *p, size_t n)
{
	struct snapshot_install *in = arg;
	int rc;

	if ((rc = io_pwrite_all(in->ffd, p, n, (off_t)in->foff)) < 0)
		return rc;
	in->foff += n;
	return 0;
}

static const struct snapshot_items_ops install_items_ops = {
	.file_room = install_file_room,
	.data = install_data,
	.item = install_item,
};

static int install_message(struct snapshot_install *in, const uint8_t *c, size_t clen)
{
	unsigned long long mlen;
	unsigned char tag;

	if (crypto_secretstream_xchacha20poly1305_pull(&in->ss, in->pbuf, &mlen, &tag, c, clen,
						       in->msgs == 0 ? in->bind : NULL,
						       in->msgs == 0 ? in->bindlen : 0) != 0)
		return -EBADMSG;
	in->msgs++;
	if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
		in->final_seen = 1;
	else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
		return -EBADMSG;
	return snapshot_items_feed(in->items, in->pbuf, (size_t)mlen);
}

static int install_bytes(struct snapshot_install *in, const uint8_t *p, size_t len)
{
	int rc;

	while (len > 0) {
		size_t k;

		if (in->final_seen)
			return -EBADMSG; /* nothing may follow the final message */
		if (in->hdr_have < STREAM_HDR) {
			k = STREAM_HDR - in->hdr_have < len ? STREAM_HDR - in->hdr_have : len;
			memcpy(in->hdr + in->hdr_have, p, k);
			in->hdr_have += k;
			p += k;
			len -= k;
			if (in->hdr_have == STREAM_HDR &&
			    crypto_secretstream_xchacha20poly1305_init_pull(&in->ss, in->hdr, in->key) != 0)
				return -EBADMSG;
			continue;
		}
		if (in->len_have < 4) {
			k = 4 - in->len_have < len ? 4 - in->len_have : len;
			memcpy(in->lenb + in->len_have, p, k);
			in->len_have += k;
			p += k;
			len -= k;
			if (in->len_have == 4) {
				in->clen = le_get32(in->lenb);
				if (in->clen < crypto_secretstream_xchacha20poly1305_ABYTES ||
				    in->clen > FRAME_CT)
					return -EBADMSG;
				in->c_have = 0;
			}
			continue;
		}
		if (in->c_have == 0 && len >= in->clen) {
			/* The whole message is in the caller's buffer: no copy. */
			rc = install_message(in, p, in->clen);
			p += in->clen;
			len -= in->clen;
		} else {
			k = in->clen - in->c_have < len ? in->clen - in->c_have : len;
			memcpy(in->cbuf + in->c_have, p, k);
			in->c_have += k;
			p += k;
			len -= k;
			if (in->c_have < in->clen)
				continue;
			rc = install_message(in, in->cbuf, in->clen);
		}
		in->len_have = 0;
		if (rc < 0)
			return rc;
	}
	return 0;
}

int snapshot_install_write(struct snapshot_install *in, const void *buf, size_t len)
{
	int rc;

	if (in->err)
		return in->err;
	if ((rc = install_bytes(in, buf, len)) < 0) {
		in->err = rc;
		log_error("%s: snapshot install refused after %" PRIu64 " bytes of content: %s",
			  in->st->path, in->bytes, rc == -EBADMSG ? "stream forged or damaged"
					       : rc == -EINVAL ? "invalid path in stream"
							       : strerror(-rc));
	}
	return rc;
}

uint64_t snapshot_install_received(const struct snapshot_install *in)
{
	return in->bytes - (in->ffd >= 0 ? in->fsize - in->foff : 0);
}

uint64_t snapshot_install_expected(const struct snapshot_install *in)
{
	return snapshot_items_head(in->items)->file_bytes;
}

static void install_free(struct snapshot_install *in)
{
	if (in->ffd >= 0)
		close(in->ffd);
	if (in->pfd >= 0)
		close(in->pfd);
	if (in->treefd >= 0)
		close(in->treefd);
	if (in->incfd >= 0)
		close(in->incfd);
	sodium_memzero(in->key, sizeof(in->key));
	sodium_memzero(&in->ss, sizeof(in->ss));
	free(in->ppath);
	free(in->cbuf);
	free(in->pbuf);
	free(in->bind);
	snapshot_items_free(in->items);
	free(in->dirs);
	bytebuf_free(&in->dir_paths);
	free(in);
}

void snapshot_install_abort(struct snapshot_install *in)
{
	struct store *st;

	if (!in)
		return;
	st = in->st;
	install_free(in);
	/* Not swapped yet (end() never handed it over): the partial tree is garbage. */
	rm_tree(st->dirfd, "incoming");
	marker_remove(st);
}

int snapshot_install_end(struct snapshot_install *in, uint64_t *lsn, uint64_t *epoch)
{
	const struct snapshot_head *h = snapshot_items_head(in->items);
	struct install_marker m;
	struct stat sb;
	int rc = in->err;

	if (rc == 0 && (!in->final_seen || !snapshot_items_done(in->items) ||
			in->hdr_have < STREAM_HDR || in->len_have))
		rc = -EBADMSG; /* truncated */
	if (rc == 0 && h->epoch < in->st->epoch) {
		log_error("%s: refusing a snapshot of epoch %" PRIu64 ": this node already follows "
			  "epoch %" PRIu64, in->st->path, h->epoch, in->st->epoch);
		rc = -ESTALE;
	}
	/* Directory times last: creating their children changed them. */
	for (size_t i = in->ndirs; rc == 0 && i-- > 0;) {
		const char *path = (char *)in->dir_paths.p + in->dirs[i].path;
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
					  { .tv_sec = in->dirs[i].sec, .tv_nsec = in->dirs[i].nsec } };
		int fd = *path ? apply_open_beneath(&in->ac, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
			       : in->treefd;
		if (fd < 0) {
			rc = fd;
			break;
		}
		if (futimens(fd, ts) < 0)
			rc = -errno;
		if (fd != in->treefd)
			close(fd);
	}
	/* I1: durable before the marker says it may be swapped in. */
	if (rc == 0 && (syncfs(in->treefd) < 0 || fstat(in->treefd, &sb) < 0))
		rc = -errno;
	if (rc == 0) {
		m = (struct install_marker){ .swap = 1, .lsn = h->lsn, .epoch = h->epoch,
					     .tree_ino = (uint64_t)sb.st_ino };
		rc = marker_write(in->st, &m);
	}
	if (rc < 0) {
		if (rc != in->err)
			log_error("%s: snapshot install failed at its end: %s", in->st->path,
				  rc == -EBADMSG ? "stream truncated" : strerror(-rc));
		snapshot_install_abort(in);
		return rc;
	}
	log_info("%s: snapshot of LSN %" PRIu64 " epoch %" PRIu64 " received: %" PRIu64
		 " entries, %" PRIu64 " files, %" PRIu64 " bytes", in->st->path, h->lsn, h->epoch,
		 in->entries, in->files, in->bytes);
	*lsn = h->lsn;
	*epoch = h->epoch;
	install_free(in);
	return 0;
}

/* ---- swap and recovery ---- */

int snapshot_install_swap(struct store *st, struct journal *j, int *old_datafd)
{
	struct store_checkpoint ck;
	struct install_marker m;
	int rc, newfd, incfd;

	if ((rc = marker_read(st, &m)) < 0)
		return rc;
	if (!m.swap)
		return -EINVAL;
	/* I2: by inode number, never by "has it been done": a redo after a crash
	 * between the exchange and the marker's removal must not undo it. */
	if (ino_of(st->dirfd, "data") != m.tree_ino) {
		if (ino_of(st->dirfd, "incoming/tree") != m.tree_ino) {
			log_error("%s: the installed snapshot tree (inode %" PRIu64 ") is neither "
				  "data/ nor incoming/tree/; cannot finish the install", st->path,
				  m.tree_ino);
			return -EUCLEAN;
		}
		if (renameat2(st->dirfd, "data", st->dirfd, "incoming/tree", RENAME_EXCHANGE) < 0)
			return -errno;
		incfd = openat(st->dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		rc = fsync(st->dirfd) < 0 || (incfd >= 0 && fsync(incfd) < 0) ? -errno : 0;
		if (incfd >= 0)
			close(incfd);
		if (rc < 0)
			return rc;
	}
	newfd = openat(st->dirfd, "data", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (newfd < 0)
		return -errno;
	if (old_datafd)
		*old_datafd = st->datafd;
	else if (st->datafd >= 0)
		close(st->datafd);
	st->datafd = newfd;

	/* The journal starts after L; the cache is durable through L. */
	if ((rc = journal_reset(j, m.lsn + 1, m.epoch)) < 0)
		return rc;
	if (syncfs(st->dirfd) < 0)
		return -errno; /* the fresh segment's header too */
	ck = (struct store_checkpoint){ .lsn = m.lsn, .epoch = m.epoch };
	if ((rc = store_checkpoint_write(st, &ck)) < 0)
		return rc;
	if (m.epoch > st->epoch && (rc = store_epoch_write(st, m.epoch)) < 0)
		return rc;
	if (st->state) {
		st->state->applied_lsn = m.lsn;
		st->state->inflight_lsn = 0;
		memset(st->state->aux, 0, sizeof(st->state->aux));
	}
	/* The old tree, then the marker: no leftover outlives it. */
	if ((rc = rm_tree(st->dirfd, "incoming")) < 0)
		log_warn("%s: cannot remove the replaced tree in incoming/: %s", st->path,
			 strerror(-rc));
	if ((rc = marker_remove(st)) < 0)
		return rc;
	log_info("%s: snapshot of LSN %" PRIu64 " epoch %" PRIu64 " swapped in", st->path, m.lsn,
		 m.epoch);
	return 0;
}

int snapshot_install_recover(struct store *st, struct journal *j)
{
	struct install_marker m;
	int rc = marker_read(st, &m);

	if (rc == -ENOENT) /* I3 */
		return faccessat(st->dirfd, "incoming", F_OK, AT_SYMLINK_NOFOLLOW) == 0
			       ? rm_tree(st->dirfd, "incoming")
			       : 0;
	if (rc < 0)
		return rc;
	if (!m.swap) {
		if ((rc = rm_tree(st->dirfd, "incoming")) < 0 || (rc = marker_remove(st)) < 0)
			return rc;
		log_info("%s: discarded an interrupted snapshot transfer; it will be fetched again",
			 st->path);
		return 0;
	}
	if ((rc = snapshot_install_swap(st, j, NULL)) < 0) {
		log_error("%s: cannot finish the interrupted snapshot install at LSN %" PRIu64 ": %s",
			  st->path, m.lsn, strerror(-rc));
		return rc;
	}
	log_info("%s: finished an interrupted snapshot install at LSN %" PRIu64 " epoch %" PRIu64,
		 st->path, m.lsn, m.epoch);
	return 0;
}
