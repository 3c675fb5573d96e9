/* Verify: are the master and a slave the same tree at one LSN X, and if not,
 * make the slave so with ordinary journal records.
 *
 * Every node freezes its tree at X with snapshot_create() (copy-on-write keeps
 * it at X while writes go on) and hashes it into a MANIFEST, reading the
 * snapshot's own item stream in plaintext (snapshot_reader_open_plain), so
 * the hashed bytes are exactly those an install at X would receive. A
 * slave's manifest travels to the master, which compares it with its own.
 *
 * ======================================================================
 * WHAT A MANIFEST HOLDS, PER PATH
 * ======================================================================
 * type, permission bits, owner, size (regular files), device number
 * (character and block devices), symlink target, a digest of the xattrs and
 * their names, and for regular files one digest per VERIFY_BLOCK (1 MiB)
 * block plus a whole-content digest. Times are left out: a verify must not
 * report the atime of a read.
 *
 * HARD LINKS. Every name of an inode with several names (a HARDLINK item
 * and the FILE, SYMLINK or NODE it names: any type but a directory)
 * carries the inode's attributes and digests, and in `link` the smallest
 * (strcmp) of the inode's names, "" for that smallest name itself and for
 * an inode with one name. Inode numbers differ between nodes and so does
 * the name a snapshot meets first (readdir order), the smallest name does
 * not: two trees have equal `link` at every path exactly when the same
 * names share an inode. Comparing `link` path by path (VERIFY_LINK) thus
 * sees a group split, merged or rearranged, at the names whose group
 * changed. (Version 1 put the first name met in `link`, for regular files
 * only, and did not compare it.)
 *
 * Every digest is BLAKE2b-256 (crypto_generichash, no key):
 *   block   the block's bytes, holes as zeros (a sparse file and a dense one
 *           with the same bytes agree), the last block only up to the size
 *   content le64(size) || the block digests in order: a hash tree of depth
 *           two, so a sparse terabyte costs its data, not its zeros
 *   xattrs  for each (name, value) in ascending order of name:
 *           le32(name length) le32(value length) name value
 *
 * ======================================================================
 * MANIFEST ENCODING, version 2 (all integers little-endian)
 * ======================================================================
 *   header, 64 bytes
 *      0  8 magic "RPLFSVFY"
 *      8  4 version = 2
 *     12  4 flags = 0
 *     16  8 lsn          24 8 epoch           of the snapshot
 *     32  8 entries      40 8 files           (regular files not `link`)
 *     48  8 file_bytes   (their total size)   56 8 bytes_hashed
 *   then `entries` entries in strictly ascending strcmp() order of path,
 *   the root ("") first, each:
 *      0  4 mode (type | permission bits)
 *      4  4 uid           8 4 gid            12 4 xattr_count
 *     16  8 size (regular file, else 0)
 *     24  8 rdev (character or block device, else 0)
 *     32  4 path_len     36 4 target_len     40 4 link_len
 *     44  4 xattr_names_len
 *     48 32 xattr digest
 *     80 32 content digest (regular file, else zeros)
 *    112    path NUL, target NUL, link NUL (each there even when empty),
 *           xattr names (xattr_names_len bytes: xattr_count names, each
 *           NUL-terminated, strictly ascending),
 *           ceil(size / VERIFY_BLOCK) block digests of 32 bytes
 *   then 32 bytes: BLAKE2b-256 of every byte before them.
 *
 * VALIDITY RULE (verify_manifest_decode): the checksum matches; the entries
 * fill the bytes between header and checksum exactly; every path passes
 * path_check() and the order is strict (so no path twice); the type is a
 * known one and the fields it does not use are zero or empty; a symlink's
 * target is not empty; a `link` names an entry before it (the group's
 * smallest name) of the same type, not a directory, that has no link
 * itself; files and file_bytes match the entries. The bytes travel sealed,
 * but a manifest is parsed as if they did not.
 *
 * ======================================================================
 * REPAIR
 * ======================================================================
 * Only the master logs records, and commit applies each one on the master
 * too. A repair therefore logs records that (a) turn the slave's path into
 * the master's, and (b) leave the master as it is. Each path is handled
 * under commit's order lock (commit_op_locked): the master's CURRENT state
 * is read and logged with nothing committed in between. Current rather
 * than as of X: every record after X reached the slave in order, so the
 * slave differs from the master now exactly where it differed at X, and the
 * repair records come after all of them.
 *
 *   content  WRITE of each differing block as the master holds it now, or
 *            FALLOCATE(PUNCH_HOLE|KEEP_SIZE) for a block that is all hole
 *            on the master; TRUNCATE to the master's size. Same bytes, same
 *            size on the master: only its mtime is touched (the apply step
 *            stamps the record's time), so
 *   times    UTIMENS back to the master's atime and mtime, read before.
 *   owner    CHOWN to the master's owner; the kernel clears set-id bits and
 *            security.capability on any chown (and a write clears the
 *            capability), so an owner or content repair is followed by
 *   mode     CHMOD to the master's permission bits, and by
 *   xattrs   SETXATTR of each of the master's xattrs with its value, and
 *            REMOVEXATTR of each name the slave's manifest has and the
 *            master now lacks.
 *   missing  (the master has the path, the slave does not): the creating
 *            record (CREATE, MKDIR, SYMLINK, MKNOD) then content, owner,
 *            mode, xattrs, times as above. A further name of an inode the
 *            master still has under the group's smallest name is made with
 *            LINK from it after every other creation; the smallest name,
 *            when lost while the slave keeps other names of the group, with
 *            LINK from one of those (its diff says LINK, see below), so it
 *            does not become an inode of its own. On the master the
 *            creation fails with EEXIST and changes nothing:
 *            apply_new_object() builds the object unnamed (O_TMPFILE or in
 *            staging) and names it with linkat() or
 *            renameat2(RENAME_NOREPLACE), which refuse an existing name;
 *            LINK is linkat() too.
 *   extra    (the slave has the path, the master does not): UNLINK or RMDIR,
 *            deepest first. On the master: ENOENT (or ENOTDIR, ELOOP on the
 *            way there), nothing changed.
 *   parents  creations and removals stamp the parent directory's mtime on
 *            the slave: UTIMENS of each such directory back to the master's
 *            times, once, at the end.
 *   order    missing and changed paths ascending (parents first), then the
 *            further names, then extra paths descending (children first).
 *
 * Such failures on the master are the expected outcome, not errors: EEXIST,
 * ENOENT, ENOTDIR, ELOOP and ENODATA are deterministic
 * (apply_error_is_deterministic), so commit does not set its sticky error,
 * and a replay of the journal fails them again the same way (C2 in
 * commit.c). A slave applies them and succeeds where it differed.
 *
 * Not repairable, skipped and counted: a TYPE difference, a symlink TARGET,
 * a device's RDEV, a symlink's xattrs and a LINK difference (a name that is
 * its own inode on the slave and a link on the master, or the reverse). No
 * record changes these in place, and removing and re-creating the object
 * would change the master. (A LINK diff whose only cause was a lost
 * smallest name is gone after that name's repair, though counted here.) Skipped
 * as "changed": a path whose object on the master is no longer of the type
 * the master's manifest had, a missing path the master no longer has, an
 * extra path the master has now. Records since X did something there that
 * the slave saw too; a new verify tells what is left.
 */
#include "recovery.h"
#include "../utils/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <linux/falloc.h>
#include <linux/limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The snapshot item stream (format owned by snapshot.c). */
#define ENTRY_FIXED 48u

/* The manifest encoding. */
#define MF_MAGIC "RPLFSVFY"
#define MF_VERSION 2u
#define MF_HEAD 64u
#define MF_ENTRY 112u
#define MF_SUM VERIFY_DIGEST

#define READ_CHUNK (256u << 10)

/* ======================================================================
 * Shared helpers
 * ====================================================================== */


static uint64_t blocks_of(uint64_t size)
{
	return size / VERIFY_BLOCK + (size % VERIFY_BLOCK != 0);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct verify_entry *)a)->path, ((const struct verify_entry *)b)->path);
}

const struct verify_entry *verify_manifest_find(const struct verify_manifest *m, const char *path)
{
	struct verify_entry key = { .path = path };

	if (!m->n)
		return NULL;
	return bsearch(&key, m->entries, m->n, sizeof(key), cmp_entry);
}

void verify_manifest_free(struct verify_manifest *m)
{
	if (!m)
		return;
	free(m->entries);
	free(m->mem);
	memset(m, 0, sizeof(*m));
}

static const char *type_name(uint32_t type)
{
	switch (type) {
	case S_IFREG: return "file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symlink";
	case S_IFIFO: return "fifo";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFSOCK: return "socket";
	default: return "?";
	}
}

static int type_known(uint32_t type)
{
	return strcmp(type_name(type), "?") != 0;
}

/* ======================================================================
 * Building a manifest from the item stream
 * ====================================================================== */

/* An entry while the arena still grows: strings and digests by offset. */
struct bent {
	uint32_t mode, uid, gid, xcount, xnames_len;
	uint64_t size, rdev, nblocks;
	size_t path, target, link, xnames, blocks; /* arena offsets; 0 = "" */
	uint8_t xdigest[VERIFY_DIGEST], digest[VERIFY_DIGEST];
};

struct verify_builder {
	crypto_generichash_state bh; /* the block being hashed (64-byte aligned) */
	struct bytebuf arena;           /* byte 0 is the empty string */
	struct bent *ents;
	size_t n, cap;
	struct snapshot_items *items; /* the stream's structure, HEAD and TRAILER */
	int err;
	uint64_t files, hashed, file_bytes;
	/* The file being hashed. */
	int in_file;
	size_t fent;
	uint64_t fsize, foff, bfill;
};

static const uint8_t zeros[64 << 10];
static uint8_t zero_digest[VERIFY_DIGEST]; /* of a whole block of zeros */
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;

static void zero_digest_init(void)
{
	crypto_generichash_state gs;

	crypto_generichash_init(&gs, NULL, 0, VERIFY_DIGEST);
	for (size_t k = 0; k < VERIFY_BLOCK; k += sizeof(zeros))
		crypto_generichash_update(&gs, zeros, sizeof(zeros));
	crypto_generichash_final(&gs, zero_digest, VERIFY_DIGEST);
}

static const struct snapshot_items_ops builder_items_ops;

int verify_builder_new(struct verify_builder **out)
{
	struct verify_builder *b;

	if (sodium_init() < 0)
		return -EIO;
	pthread_once(&zero_once, zero_digest_init);
	/* The hash state wants 64-byte alignment, more than malloc promises. */
	if (!(b = aligned_alloc(_Alignof(struct verify_builder), sizeof(*b))))
		return -ENOMEM;
	memset(b, 0, sizeof(*b));
	if (bytebuf_put(&b->arena, "", 1) < 0 ||
	    snapshot_items_new(&builder_items_ops, b, &b->items) < 0) {
		bytebuf_free(&b->arena);
		free(b);
		return -ENOMEM;
	}
	*out = b;
	return 0;
}

void verify_builder_free(struct verify_builder *b)
{
	if (!b)
		return;
	bytebuf_free(&b->arena);
	snapshot_items_free(b->items);
	free(b->ents);
	free(b);
}

static int block_done(struct verify_builder *b)
{
	uint8_t d[VERIFY_DIGEST];

	crypto_generichash_final(&b->bh, d, sizeof(d));
	b->bfill = 0;
	return bytebuf_put(&b->arena, d, sizeof(d));
}

/* Content of the current file: n bytes at p, or n zeros (a hole) when p is
 * NULL. The block digests go to the arena as blocks complete; nothing else
 * is added to it while a file's content is being hashed, so they end up
 * contiguous. */
static int block_feed(struct verify_builder *b, const uint8_t *p, uint64_t n)
{
	int rc;

	while (n > 0) {
		if (b->bfill == 0 && !p && n >= VERIFY_BLOCK) {
			if ((rc = bytebuf_put(&b->arena, zero_digest, VERIFY_DIGEST)) < 0)
				return rc;
			b->foff += VERIFY_BLOCK;
			n -= VERIFY_BLOCK;
			continue;
		}
		if (b->bfill == 0)
			crypto_generichash_init(&b->bh, NULL, 0, VERIFY_DIGEST);
		uint64_t k = VERIFY_BLOCK - b->bfill;
		if (k > n)
			k = n;
		if (p) {
			crypto_generichash_update(&b->bh, p, (unsigned long long)k);
			p += k;
		} else {
			for (uint64_t z = 0; z < k; z += sizeof(zeros))
				crypto_generichash_update(&b->bh, zeros,
							  k - z < sizeof(zeros) ? k - z : sizeof(zeros));
		}
		b->bfill += k;
		b->foff += k;
		n -= k;
		if (b->bfill == VERIFY_BLOCK && (rc = block_done(b)) < 0)
			return rc;
	}
	return 0;
}

struct xpair {
	const uint8_t *name, *val;
	uint32_t nl, vl;
};

static int cmp_xpair(const void *a, const void *b)
{
	const struct xpair *x = a, *y = b;
	int c = memcmp(x->name, y->name, x->nl < y->nl ? x->nl : y->nl);

	return c ? c : (x->nl > y->nl) - (x->nl < y->nl);
}

/* Digest and sorted names of an xattr block (format in snapshot.c). */
static int xattr_block(struct verify_builder *b, size_t ei, const uint8_t *blk, size_t len)
{
	crypto_generichash_state gs;
	struct xpair *v = NULL;
	size_t nv = 0, pos = 0, names = b->arena.len;
	uint8_t le[8];
	int rc = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (pos = 0, nv = 0; pos < len; nv++) {
			if (len - pos < 8)
				return -EBADMSG;
			uint32_t nl = le_get32(blk + pos), vl = le_get32(blk + pos + 4);
			pos += 8;
			if (nl == 0 || nl > XATTR_NAME_MAX || vl > XATTR_SIZE_MAX ||
			    len - pos < (size_t)nl + vl || memchr(blk + pos, '\0', nl))
				return -EBADMSG;
			if (pass)
				v[nv] = (struct xpair){ blk + pos, blk + pos + nl, nl, vl };
			pos += (size_t)nl + vl;
		}
		if (pass == 0 && nv && !(v = malloc(nv * sizeof(*v))))
			return -ENOMEM;
	}
	if (nv)
		qsort(v, nv, sizeof(*v), cmp_xpair);
	crypto_generichash_init(&gs, NULL, 0, VERIFY_DIGEST);
	for (size_t i = 0; i < nv && rc == 0; i++) {
		if (i && cmp_xpair(&v[i - 1], &v[i]) == 0) {
			rc = -EBADMSG; /* one name twice */
			break;
		}
		le_put32(le, v[i].nl);
		le_put32(le + 4, v[i].vl);
		crypto_generichash_update(&gs, le, 8);
		crypto_generichash_update(&gs, v[i].name, v[i].nl);
		crypto_generichash_update(&gs, v[i].val, v[i].vl);
		if ((rc = bytebuf_put(&b->arena, v[i].name, v[i].nl)) == 0)
			rc = bytebuf_put(&b->arena, "", 1);
	}
	free(v);
	if (rc < 0)
		return rc;
	struct bent *e = &b->ents[ei];
	crypto_generichash_final(&gs, e->xdigest, VERIFY_DIGEST);
	e->xcount = (uint32_t)nv;
	e->xnames = nv ? names : 0;
	e->xnames_len = (uint32_t)(b->arena.len - names);
	return 0;
}

/* A NUL-terminated copy of a string from the stream, into the arena. */
static int arena_str(struct verify_builder *b, const uint8_t *s, uint32_t len, size_t *off)
{
	int rc;

	if (len == 0) {
		*off = 0;
		return 0;
	}
	*off = b->arena.len;
	if ((rc = bytebuf_put(&b->arena, s, len)) < 0)
		return rc;
	return bytebuf_put(&b->arena, "", 1);
}

static int parse_entry(struct verify_builder *b, uint32_t type, const uint8_t *p)
{
	uint32_t mode, pl, tl, xl;
	uint64_t aux;
	struct bent *e;
	int rc;

	mode = le_get32(p);
	aux = le_get64(p + 24);
	pl = le_get32(p + 32);
	tl = le_get32(p + 36);
	xl = le_get32(p + 40);
	if (pl >= PATH_MAX || path_check((const char *)p + ENTRY_FIXED, pl) < 0)
		return -EINVAL;
	if (tl >= PATH_MAX || memchr(p + ENTRY_FIXED + pl, '\0', tl))
		return -EBADMSG;
	if (type != IT_HARDLINK && (mode & ~(uint32_t)(S_IFMT | 07777)))
		return -EBADMSG;
	switch (type) {
	case IT_DIR:
		if (!S_ISDIR(mode) || tl)
			return -EBADMSG;
		break;
	case IT_FILE:
		if (!S_ISREG(mode) || tl || xl)
			return -EBADMSG;
		break;
	case IT_HARDLINK:
		if (xl || tl == 0)
			return -EBADMSG;
		if (path_check((const char *)p + ENTRY_FIXED + pl, tl) < 0)
			return -EINVAL;
		break;
	case IT_SYMLINK:
		if (!S_ISLNK(mode) || tl == 0)
			return -EBADMSG;
		break;
	case IT_NODE:
		if ((!S_ISFIFO(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISSOCK(mode)) || tl)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 1024;
		struct bent *v = realloc(b->ents, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		b->ents = v;
		b->cap = cap;
	}
	e = &b->ents[b->n];
	/* A HARDLINK's mode is a stand-in until link_groups() gives it the
	 * attributes of the name it links to. */
	*e = (struct bent){ .mode = type == IT_HARDLINK ? S_IFREG : mode,
			    .uid = le_get32(p + 4), .gid = le_get32(p + 8) };
	if (type == IT_FILE)
		e->size = aux;
	else if (S_ISCHR(mode) || S_ISBLK(mode))
		e->rdev = aux;
	if ((rc = arena_str(b, p + ENTRY_FIXED, pl, &e->path)) < 0 ||
	    (rc = arena_str(b, p + ENTRY_FIXED + pl, tl, type == IT_HARDLINK ? &e->link : &e->target)) < 0)
		return rc;
	b->n++;
	if (type == IT_FILE) {
		b->in_file = 1;
		b->fent = b->n - 1;
		b->fsize = aux;
		b->foff = b->bfill = 0;
		e->blocks = b->arena.len;
		e->nblocks = blocks_of(aux);
		b->files++;
		b->file_bytes += aux;
		return 0;
	}
	if (type == IT_HARDLINK)
		return 0; /* takes its file's attributes at the end */
	return xattr_block(b, b->n - 1, p + ENTRY_FIXED + pl + tl, xl);
}

/* The file's content is complete: last block, whole digest, xattrs. */
static int file_end(struct verify_builder *b, const uint8_t *xa, uint32_t xl)
{
	crypto_generichash_state gs;
	struct bent *e = &b->ents[b->fent];
	uint8_t le[8];
	int rc;

	if (b->foff != b->fsize)
		return -EBADMSG;
	if (b->bfill && (rc = block_done(b)) < 0)
		return rc;
	if ((b->arena.len - e->blocks) / VERIFY_DIGEST != e->nblocks)
		return -EBADMSG;
	le_put64(le, e->size);
	crypto_generichash_init(&gs, NULL, 0, VERIFY_DIGEST);
	crypto_generichash_update(&gs, le, 8);
	crypto_generichash_update(&gs, b->arena.p + e->blocks, e->nblocks * VERIFY_DIGEST);
	crypto_generichash_final(&gs, e->digest, VERIFY_DIGEST);
	b->in_file = 0;
	return xattr_block(b, b->fent, xa, xl);
}

static int parse_item(void *arg, uint32_t type, const uint8_t *p, uint32_t len)
{
	struct verify_builder *b = arg;
	uint64_t n;

	switch (type) {
	case IT_DIR:
	case IT_FILE:
	case IT_HARDLINK:
	case IT_SYMLINK:
	case IT_NODE:
		return parse_entry(b, type, p);
	case IT_HOLE:
		if (len != 8 || (n = le_get64(p)) > b->fsize - b->foff)
			return -EBADMSG;
		return block_feed(b, NULL, n);
	case IT_FXATTR:
		return file_end(b, p, len);
	}
	return -EBADMSG;
}

static int builder_file_room(void *arg, uint64_t *room)
{
	struct verify_builder *b = arg;

	*room = b->fsize - b->foff;
	return b->in_file;
}

static int builder_data(void *arg, const uint8_t *p, size_t n)
{
	struct verify_builder *b = arg;
	int rc;

	if ((rc = block_feed(b, p, n)) < 0)
		return rc;
	b->hashed += n;
	return 0;
}

static const struct snapshot_items_ops builder_items_ops = {
	.file_room = builder_file_room,
	.data = builder_data,
	.item = parse_item,
};

int verify_builder_feed(struct verify_builder *b, const void *buf, size_t len)
{
	int rc;

	if (b->err)
		return b->err;
	if ((rc = snapshot_items_feed(b->items, buf, len)) < 0)
		b->err = rc;
	return rc;
}

/* Entries sorted by path, `link` still as the stream had it (a HARDLINK's
 * target: the inode's first name met, which depends on readdir order): each
 * further name takes the attributes and digests of its first name, then
 * every name of a group gets the group's smallest path as `link` but that
 * smallest name itself, which gets "". Two trees then agree on every path's
 * `link` exactly when the same names share an inode, whatever the inode
 * numbers and readdir orders of the nodes. -EBADMSG when a HARDLINK names
 * no entry, a directory or another HARDLINK; -ENOMEM. */
static int link_groups(struct verify_entry *v, size_t n)
{
	struct verify_manifest tmp = { .entries = v, .n = n };
	size_t *first = NULL; /* HARDLINK: its first name's index, else SIZE_MAX */
	size_t *least = NULL; /* first name: its group's smallest index, else SIZE_MAX */
	size_t i;
	int rc = 0;

	for (i = 0; i < n && !v[i].link[0]; i++)
		;
	if (i == n)
		return 0; /* no hard links */
	first = malloc(n * sizeof(*first));
	least = malloc(n * sizeof(*least));
	if (!first || !least) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct verify_entry *f;
		first[i] = least[i] = SIZE_MAX;
		if (!v[i].link[0])
			continue;
		f = verify_manifest_find(&tmp, v[i].link);
		if (!f || f->type == S_IFDIR || f->link[0]) {
			rc = -EBADMSG; /* a HARDLINK names an earlier FILE, SYMLINK or NODE */
			goto out;
		}
		first[i] = (size_t)(f - v);
	}
	/* Sorted by path: the smallest index is the smallest path. */
	for (i = 0; i < n; i++) {
		size_t g = first[i];
		if (g == SIZE_MAX)
			continue;
		size_t k = g < i ? g : i;
		if (k < least[g])
			least[g] = k;
	}
	for (i = 0; i < n; i++) {
		size_t g = first[i] == SIZE_MAX ? i : first[i];
		const char *path = v[i].path;
		if (least[g] == SIZE_MAX)
			continue; /* a single name */
		if (g != i)
			v[i] = v[g];
		v[i].path = path;
		v[i].link = least[g] == i ? "" : v[least[g]].path;
	}
out:
	free(first);
	free(least);
	return rc;
}

int verify_builder_finish(struct verify_builder *b, struct verify_manifest *m)
{
	const struct snapshot_head *h = snapshot_items_head(b->items);
	struct verify_entry *v;
	const char *a;
	int rc;

	if (b->err)
		return b->err;
	if (!snapshot_items_done(b->items) || b->n == 0)
		return b->err = -EBADMSG;
	if (!(v = calloc(b->n, sizeof(*v))))
		return -ENOMEM;
	/* The arena is final now: offsets become pointers. */
	a = (const char *)b->arena.p;
	for (size_t i = 0; i < b->n; i++) {
		const struct bent *e = &b->ents[i];
		v[i] = (struct verify_entry){
			.path = a + e->path, .type = e->mode & S_IFMT, .perm = e->mode & 07777,
			.uid = e->uid, .gid = e->gid, .size = e->size, .rdev = e->rdev,
			.target = a + e->target, .link = a + e->link, .xattr_count = e->xcount,
			.xattr_names_len = e->xnames_len, .xattr_names = a + e->xnames,
			.nblocks = e->nblocks,
			.blocks = e->nblocks ? b->arena.p + e->blocks : NULL,
		};
		memcpy(v[i].xattr_digest, e->xdigest, VERIFY_DIGEST);
		memcpy(v[i].digest, e->digest, VERIFY_DIGEST);
	}
	qsort(v, b->n, sizeof(*v), cmp_entry);
	for (size_t i = 1; i < b->n; i++)
		if (strcmp(v[i - 1].path, v[i].path) == 0)
			goto bad;
	if ((rc = link_groups(v, b->n)) == -ENOMEM) {
		free(v);
		return rc; /* not the stream's fault: not sticky */
	}
	if (rc < 0)
		goto bad;
	*m = (struct verify_manifest){ .entries = v, .n = b->n, .lsn = h->lsn, .epoch = h->epoch,
				       .files = b->files, .file_bytes = b->file_bytes,
				       .bytes_hashed = b->hashed, .mem = b->arena.p };
	memset(&b->arena, 0, sizeof(b->arena));
	return 0;
bad:
	free(v);
	return b->err = -EBADMSG;
}

int verify_manifest_build(struct snapshot *s, struct verify_manifest *m,
			  void (*progress)(void *arg, uint64_t bytes), void *progress_arg)
{
	struct snapshot_reader *r = NULL;
	struct verify_builder *b = NULL;
	uint8_t *buf = malloc(READ_CHUNK);
	ssize_t n;
	int rc;

	if (!buf)
		return -ENOMEM;
	if ((rc = verify_builder_new(&b)) < 0 || (rc = snapshot_reader_open_plain(s, &r)) < 0)
		goto out;
	while ((n = snapshot_reader_read(r, buf, READ_CHUNK)) > 0) {
		if ((rc = verify_builder_feed(b, buf, (size_t)n)) < 0)
			goto out;
		if (progress)
			progress(progress_arg, (uint64_t)n);
	}
	rc = n < 0 ? (int)n : verify_builder_finish(b, m);
out:
	if (rc < 0)
		log_warn("verify: no manifest of the snapshot at LSN %" PRIu64 ": %s",
			 snapshot_lsn(s), strerror(-rc));
	snapshot_reader_close(r);
	verify_builder_free(b);
	free(buf);
	return rc;
}

/* ======================================================================
 * Encoding
 * ====================================================================== */

static size_t entry_size(const struct verify_entry *e)
{
	return MF_ENTRY + strlen(e->path) + strlen(e->target) + strlen(e->link) + 3 +
	       e->xattr_names_len + (size_t)e->nblocks * VERIFY_DIGEST;
}

int verify_manifest_encode(const struct verify_manifest *m, uint8_t **out, size_t *len)
{
	size_t total = MF_HEAD + MF_SUM, pos = MF_HEAD;
	uint8_t *p;

	if (sodium_init() < 0)
		return -EIO;
	for (size_t i = 0; i < m->n; i++) {
		size_t k = entry_size(&m->entries[i]);
		if (k > SIZE_MAX / 2 - total)
			return -E2BIG;
		total += k;
	}
	if (!(p = malloc(total)))
		return -ENOMEM;
	memcpy(p, MF_MAGIC, 8);
	le_put32(p + 8, MF_VERSION);
	le_put32(p + 12, 0);
	le_put64(p + 16, m->lsn);
	le_put64(p + 24, m->epoch);
	le_put64(p + 32, m->n);
	le_put64(p + 40, m->files);
	le_put64(p + 48, m->file_bytes);
	le_put64(p + 56, m->bytes_hashed);
	for (size_t i = 0; i < m->n; i++) {
		const struct verify_entry *e = &m->entries[i];
		size_t pl = strlen(e->path), tl = strlen(e->target), ll = strlen(e->link);
		uint8_t *q = p + pos;

		le_put32(q, e->type | e->perm);
		le_put32(q + 4, e->uid);
		le_put32(q + 8, e->gid);
		le_put32(q + 12, e->xattr_count);
		le_put64(q + 16, e->size);
		le_put64(q + 24, e->rdev);
		le_put32(q + 32, (uint32_t)pl);
		le_put32(q + 36, (uint32_t)tl);
		le_put32(q + 40, (uint32_t)ll);
		le_put32(q + 44, e->xattr_names_len);
		memcpy(q + 48, e->xattr_digest, VERIFY_DIGEST);
		memcpy(q + 80, e->digest, VERIFY_DIGEST);
		q += MF_ENTRY;
		memcpy(q, e->path, pl + 1);
		q += pl + 1;
		memcpy(q, e->target, tl + 1);
		q += tl + 1;
		memcpy(q, e->link, ll + 1);
		q += ll + 1;
		memcpy(q, e->xattr_names, e->xattr_names_len);
		q += e->xattr_names_len;
		if (e->nblocks)
			memcpy(q, e->blocks, (size_t)e->nblocks * VERIFY_DIGEST);
		pos += entry_size(e);
	}
	crypto_generichash(p + pos, MF_SUM, p, pos, NULL, 0);
	*out = p;
	*len = total;
	return 0;
}

/* A string of len bytes at *pos followed by its NUL, with no NUL inside. */
static int take_str(const uint8_t *mem, size_t *pos, size_t end, uint32_t len, const char **out)
{
	if (len >= PATH_MAX || end - *pos < (size_t)len + 1 || mem[*pos + len] != 0 ||
	    memchr(mem + *pos, '\0', len))
		return -EBADMSG;
	*out = (const char *)mem + *pos;
	*pos += (size_t)len + 1;
	return 0;
}

static int names_check(const char *p, size_t len, uint32_t count)
{
	const char *prev = NULL;
	uint32_t k = 0;
	size_t pos = 0;

	while (pos < len) {
		const char *nm = p + pos;
		size_t nl = strnlen(nm, len - pos);
		if (nl == len - pos || nl == 0 || nl > XATTR_NAME_MAX ||
		    (prev && strcmp(prev, nm) >= 0))
			return -EBADMSG;
		prev = nm;
		pos += nl + 1;
		k++;
	}
	return k == count ? 0 : -EBADMSG;
}

static int decode_entry(const uint8_t *mem, size_t *pos, size_t end, struct verify_entry *e)
{
	static const uint8_t nothing[VERIFY_DIGEST];
	const uint8_t *q = mem + *pos;
	uint32_t mode, pl, tl, ll, xl;
	int special;

	if (end - *pos < MF_ENTRY)
		return -EBADMSG;
	mode = le_get32(q);
	*e = (struct verify_entry){ .type = mode & S_IFMT, .perm = mode & 07777,
				    .uid = le_get32(q + 4), .gid = le_get32(q + 8),
				    .xattr_count = le_get32(q + 12), .size = le_get64(q + 16),
				    .rdev = le_get64(q + 24), .xattr_names_len = le_get32(q + 44) };
	pl = le_get32(q + 32);
	tl = le_get32(q + 36);
	ll = le_get32(q + 40);
	xl = e->xattr_names_len;
	memcpy(e->xattr_digest, q + 48, VERIFY_DIGEST);
	memcpy(e->digest, q + 80, VERIFY_DIGEST);
	*pos += MF_ENTRY;
	if ((mode & ~(uint32_t)(S_IFMT | 07777)) || !type_known(e->type))
		return -EBADMSG;
	if (take_str(mem, pos, end, pl, &e->path) < 0 || path_check(e->path, pl) < 0 ||
	    take_str(mem, pos, end, tl, &e->target) < 0 || take_str(mem, pos, end, ll, &e->link) < 0 ||
	    (ll && path_check(e->link, ll) < 0) || end - *pos < xl)
		return -EBADMSG;
	e->xattr_names = (const char *)mem + *pos;
	if (names_check(e->xattr_names, xl, e->xattr_count) < 0)
		return -EBADMSG;
	*pos += xl;
	/* Each type uses its own fields; the rest must be empty. */
	special = e->type == S_IFCHR || e->type == S_IFBLK;
	if ((e->type == S_IFLNK) != (tl > 0) || (e->type == S_IFDIR && ll) ||
	    (!special && e->rdev) ||
	    (e->type != S_IFREG && (e->size || memcmp(e->digest, nothing, VERIFY_DIGEST))))
		return -EBADMSG;
	e->nblocks = e->type == S_IFREG ? blocks_of(e->size) : 0;
	if (e->nblocks > (end - *pos) / VERIFY_DIGEST)
		return -EBADMSG;
	e->blocks = e->nblocks ? mem + *pos : NULL;
	*pos += (size_t)e->nblocks * VERIFY_DIGEST;
	return 0;
}

int verify_manifest_decode(const uint8_t *buf, size_t len, struct verify_manifest *m)
{
	struct verify_manifest t = { 0 };
	uint8_t sum[MF_SUM];
	uint64_t count, files = 0, bytes = 0;
	size_t pos = MF_HEAD, end;
	uint8_t *mem;

	if (sodium_init() < 0)
		return -EIO;
	if (len < MF_HEAD + MF_SUM || memcmp(buf, MF_MAGIC, 8) != 0)
		return -EBADMSG;
	if (le_get32(buf + 8) != MF_VERSION)
		return -EPROTO;
	end = len - MF_SUM;
	crypto_generichash(sum, sizeof(sum), buf, end, NULL, 0);
	if (sodium_memcmp(sum, buf + end, MF_SUM) != 0 || le_get32(buf + 12) != 0)
		return -EBADMSG;
	count = le_get64(buf + 32);
	if (count == 0 || count > (end - MF_HEAD) / MF_ENTRY)
		return -EBADMSG;
	if (!(mem = malloc(len)))
		return -ENOMEM;
	memcpy(mem, buf, len);
	if (!(t.entries = calloc((size_t)count, sizeof(*t.entries)))) {
		free(mem);
		return -ENOMEM;
	}
	t.mem = mem;
	t.n = (size_t)count;
	for (size_t i = 0; i < t.n; i++) {
		struct verify_entry *e = &t.entries[i];
		if (decode_entry(mem, &pos, end, e) < 0)
			goto bad;
		/* Strictly ascending: the root ("") first, no path twice. */
		if (i == 0 ? (e->path[0] || e->type != S_IFDIR) : strcmp(t.entries[i - 1].path, e->path) >= 0)
			goto bad;
		if (e->type == S_IFREG && !e->link[0]) {
			files++;
			if (e->size > UINT64_MAX - bytes)
				goto bad;
			bytes += e->size;
		}
	}
	if (pos != end)
		goto bad;
	for (size_t i = 0; i < t.n; i++) {
		const struct verify_entry *e = &t.entries[i], *f;
		if (!e->link[0])
			continue;
		/* The smallest name of the group: before e, of e's type, no link. */
		f = verify_manifest_find(&t, e->link);
		if (!f || f >= e || f->type != e->type || f->link[0])
			goto bad;
	}
	t.lsn = le_get64(buf + 16);
	t.epoch = le_get64(buf + 24);
	t.files = le_get64(buf + 40);
	t.file_bytes = le_get64(buf + 48);
	t.bytes_hashed = le_get64(buf + 56);
	if (t.files != files || t.file_bytes != bytes)
		goto bad;
	*m = t;
	return 0;
bad:
	verify_manifest_free(&t);
	return -EBADMSG;
}

/* ======================================================================
 * Comparing
 * ====================================================================== */

static unsigned entry_diff(const struct verify_entry *m, const struct verify_entry *s)
{
	unsigned w = 0;

	if (m->type != s->type)
		return VERIFY_TYPE;
	if (m->perm != s->perm)
		w |= VERIFY_MODE;
	if (m->uid != s->uid || m->gid != s->gid)
		w |= VERIFY_OWNER;
	if (memcmp(m->xattr_digest, s->xattr_digest, VERIFY_DIGEST))
		w |= VERIFY_XATTR;
	switch (m->type) {
	case S_IFREG:
		if (m->size != s->size)
			w |= VERIFY_SIZE;
		if (memcmp(m->digest, s->digest, VERIFY_DIGEST))
			w |= VERIFY_CONTENT;
		break;
	case S_IFLNK:
		if (strcmp(m->target, s->target))
			w |= VERIFY_TARGET;
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (m->rdev != s->rdev)
			w |= VERIFY_RDEV;
		break;
	}
	if (strcmp(m->link, s->link))
		w |= VERIFY_LINK;
	return w;
}

/* Which blocks differ: one side lacking a block counts. */
static int block_diff(struct verify_diff *d)
{
	uint64_t nm = d->m->nblocks, ns = d->s->nblocks, nb = nm > ns ? nm : ns, k = 0;

	for (int pass = 0; pass < 2; pass++) {
		k = 0;
		for (uint64_t i = 0; i < nb; i++) {
			if (i < nm && i < ns &&
			    !memcmp(d->m->blocks + i * VERIFY_DIGEST, d->s->blocks + i * VERIFY_DIGEST,
				    VERIFY_DIGEST))
				continue;
			if (pass)
				d->blocks[k] = i;
			k++;
		}
		if (pass == 0 && k && !(d->blocks = malloc((size_t)k * sizeof(uint64_t))))
			return -ENOMEM;
	}
	d->nblocks = k;
	return 0;
}

void verify_diffs_free(struct verify_diff *d, size_t n)
{
	if (!d)
		return;
	for (size_t i = 0; i < n; i++)
		free(d[i].blocks);
	free(d);
}

int verify_compare(const struct verify_manifest *master, const struct verify_manifest *slave,
		   struct verify_diff **out, size_t *n)
{
	struct verify_diff *v = NULL, d;
	size_t i = 0, j = 0, nv = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (master->lsn != slave->lsn)
		return -ESTALE;
	while (i < master->n || j < slave->n) {
		int c = i == master->n ? 1 : j == slave->n ? -1
			: strcmp(master->entries[i].path, slave->entries[j].path);
		d = (struct verify_diff){ 0 };
		if (c < 0) {
			d.m = &master->entries[i++];
			d.what = VERIFY_MISSING;
		} else if (c > 0) {
			d.s = &slave->entries[j++];
			d.what = VERIFY_EXTRA;
		} else {
			d.m = &master->entries[i++];
			d.s = &slave->entries[j++];
			if (!(d.what = entry_diff(d.m, d.s)))
				continue;
		}
		d.path = d.m ? d.m->path : d.s->path;
		if ((d.what & VERIFY_CONTENT) && (rc = block_diff(&d)) < 0)
			goto fail;
		if (nv == cap) {
			size_t nc = cap ? 2 * cap : 64;
			struct verify_diff *t = realloc(v, nc * sizeof(*t));
			if (!t) {
				free(d.blocks);
				rc = -ENOMEM;
				goto fail;
			}
			v = t;
			cap = nc;
		}
		v[nv++] = d;
	}
	*out = v;
	*n = nv;
	return 0;
fail:
	verify_diffs_free(v, nv);
	return rc;
}

static int belongs(const struct verify_entry *e, const struct verify_manifest *m)
{
	uintptr_t p = (uintptr_t)e, lo = (uintptr_t)m->entries;

	return p >= lo && p < lo + m->n * sizeof(*e);
}

/* Appends to buf like snprintf; remembers a cut. */
static void say(char *buf, size_t len, size_t *at, int *cut, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void say(char *buf, size_t len, size_t *at, int *cut, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*at >= len) {
		*cut = 1;
		return;
	}
	va_start(ap, fmt);
	k = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= len - *at) {
		*cut = 1;
		*at = len;
	} else {
		*at += (size_t)k;
	}
}

int verify_diff_describe(const struct verify_diff *d, const struct verify_manifest *m,
			 const struct verify_manifest *s, char *buf, size_t len)
{
	const struct verify_entry *a = d->m, *b = d->s;
	size_t at = 0;
	int cut = 0;
	const char *sep = "";

	if (!len)
		return -ENOBUFS;
	if ((m && a && !belongs(a, m)) || (s && b && !belongs(b, s)))
		return -EINVAL;
	buf[0] = '\0';
	say(buf, len, &at, &cut, "%s:", d->path[0] ? d->path : ".");
#define ITEM(...) do { say(buf, len, &at, &cut, "%s ", sep); say(buf, len, &at, &cut, __VA_ARGS__); sep = ","; } while (0)
	if (d->what & VERIFY_MISSING)
		ITEM("missing on slave (%s)", type_name(a->type));
	if (d->what & VERIFY_EXTRA)
		ITEM("extra on slave (%s)", type_name(b->type));
	if (d->what & VERIFY_TYPE)
		ITEM("type %s vs %s", type_name(a->type), type_name(b->type));
	if (d->what & VERIFY_CONTENT) {
		uint64_t total = a->nblocks > b->nblocks ? a->nblocks : b->nblocks;
		ITEM("content differs (block%s ", d->nblocks == 1 ? "" : "s");
		for (uint64_t i = 0; i < d->nblocks && i < 8; i++)
			say(buf, len, &at, &cut, "%s%" PRIu64, i ? ", " : "", d->blocks[i]);
		if (d->nblocks > 8)
			say(buf, len, &at, &cut, " and %" PRIu64 " more", d->nblocks - 8);
		say(buf, len, &at, &cut, " of %" PRIu64 ")", total);
	}
	if (d->what & VERIFY_SIZE)
		ITEM("size %" PRIu64 " vs %" PRIu64, a->size, b->size);
	if (d->what & VERIFY_MODE)
		ITEM("mode %04o vs %04o", a->perm, b->perm);
	if (d->what & VERIFY_OWNER)
		ITEM("owner %u:%u vs %u:%u", a->uid, a->gid, b->uid, b->gid);
	if (d->what & VERIFY_TARGET)
		ITEM("symlink target \"%s\" vs \"%s\"", a->target, b->target);
	if (d->what & VERIFY_XATTR)
		ITEM("xattrs differ (%u vs %u names)", a->xattr_count, b->xattr_count);
	if (d->what & VERIFY_RDEV)
		ITEM("device %u:%u vs %u:%u", major(a->rdev), minor(a->rdev), major(b->rdev),
		     minor(b->rdev));
	if (d->what & VERIFY_LINK)
		ITEM("hard links: smallest name of its inode \"%s\" vs \"%s\"",
		     a->link[0] ? a->link : a->path, b->link[0] ? b->link : b->path);
#undef ITEM
	return cut ? -ENOBUFS : 0;
}

int verify_diff_repairable(const struct verify_diff *d)
{
	if (d->what & (VERIFY_TYPE | VERIFY_TARGET | VERIFY_RDEV | VERIFY_LINK))
		return 0;
	if ((d->what & VERIFY_XATTR) && d->m && d->m->type == S_IFLNK)
		return 0; /* the apply step refuses xattrs on symlinks */
	return 1;
}

/* ======================================================================
 * Repair (master, order_lock held per path)
 * ====================================================================== */

struct rep {
	struct commit *c;
	struct verify_repair_stats *st;
	int fatal;          /* -errno: stop the whole repair */
	uint8_t *buf;       /* VERIFY_BLOCK bytes */
	uint8_t *xval;      /* XATTR_SIZE_MAX bytes */
	char **dirs;        /* directories whose times to restore at the end */
	size_t ndirs, dirs_cap;
	const struct verify_diff *all; /* every diff of this repair */
	size_t nall;
};

/* The master's object at a path now. */
struct cur {
	int exists;
	struct stat sb;
	int pfd;            /* its parent directory, -1 for the root */
	const char *name;
	char parent[PATH_MAX];
	char proc[64 + NAME_MAX]; /* reaches it without following it */
	char *xnames;       /* llistxattr() result */
	size_t xnames_len;
};

static void cur_close(struct cur *o)
{
	if (o->pfd >= 0)
		close(o->pfd);
	free(o->xnames);
	o->pfd = -1;
	o->xnames = NULL;
}

static int cur_open(struct rep *x, const char *path, struct cur *o)
{
	memset(o, 0, sizeof(*o));
	o->pfd = -1;
	if (!*path) {
		if (fstat(x->c->apply.datafd, &o->sb) < 0)
			return -errno;
		o->exists = 1;
		return 0;
	}
	o->name = path_split(path, o->parent, sizeof(o->parent));
	o->pfd = apply_open_beneath(&x->c->apply, o->parent, O_RDONLY | O_DIRECTORY);
	if (o->pfd < 0) {
		int rc = o->pfd;
		o->pfd = -1;
		/* Unreachable the way the apply step resolves: absent for it too. */
		return rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP ? 0 : rc;
	}
	if (fstatat(o->pfd, o->name, &o->sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	o->exists = 1;
	snprintf(o->proc, sizeof(o->proc), "/proc/self/fd/%d/%s", o->pfd, o->name);
	return 0;
}

static ssize_t cur_listxattr(struct rep *x, const struct cur *o, char *buf, size_t size)
{
	return o->pfd < 0 ? flistxattr(x->c->apply.datafd, buf, size) : llistxattr(o->proc, buf, size);
}

static int cur_xattrs(struct rep *x, struct cur *o)
{
	for (;;) {
		ssize_t n = cur_listxattr(x, o, NULL, 0);
		if (n < 0)
			return errno == ENOTSUP ? 0 : -errno;
		if (n == 0)
			return 0;
		free(o->xnames);
		if (!(o->xnames = malloc((size_t)n)))
			return -ENOMEM;
		ssize_t m = cur_listxattr(x, o, o->xnames, (size_t)n);
		if (m >= 0) {
			o->xnames_len = (size_t)m;
			return 0;
		}
		if (errno != ERANGE)
			return -errno;
	}
}

static int cur_has_xattr(const struct cur *o, const char *name)
{
	for (size_t p = 0; p < o->xnames_len; p += strlen(o->xnames + p) + 1)
		if (!strcmp(o->xnames + p, name))
			return 1;
	return 0;
}

/* A failure the master is meant to return for this record (see the top). */
static int expected_failure(const struct rec *r, int rc)
{
	switch (r->op) {
	case REC_CREATE:
	case REC_MKDIR:
	case REC_MKNOD:
	case REC_SYMLINK:
	case REC_LINK:
		return rc == -EEXIST;
	case REC_UNLINK:
	case REC_RMDIR:
		return rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP;
	case REC_REMOVEXATTR:
		return rc == -ENODATA;
	default:
		return 0;
	}
}

static int emit(struct rep *x, struct rec *r)
{
	struct commit *c = x->c;
	uint64_t before = c->next_lsn;
	int rc;

	r->lsn = 0;
	rc = commit_op_locked(c, r, -1, NULL);
	if (c->next_lsn != before) {
		x->st->records++;
		if (!x->st->first_lsn)
			x->st->first_lsn = r->lsn;
		x->st->last_lsn = r->lsn;
		if (r->op == REC_WRITE)
			x->st->bytes += r->data_len;
	}
	if (rc == 0 || expected_failure(r, rc))
		return 0;
	if (c->sticky_err || c->next_lsn == before) {
		/* Not logged (no space...) or the node stopped: no use going on. */
		x->fatal = c->sticky_err ? c->sticky_err : rc;
		return x->fatal;
	}
	log_warn("verify repair: LSN %" PRIu64 " (%s %s) failed on the master: %s", r->lsn,
		 rec_op_name(r->op), r->path, strerror(-rc));
	return rc;
}

static int note_dir(struct rep *x, const char *path)
{
	if (x->ndirs == x->dirs_cap) {
		size_t cap = x->dirs_cap ? 2 * x->dirs_cap : 32;
		char **v = realloc(x->dirs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		x->dirs = v;
		x->dirs_cap = cap;
	}
	if (!(x->dirs[x->ndirs] = strdup(path)))
		return -ENOMEM;
	x->ndirs++;
	return 0;
}

static int note_parent(struct rep *x, const struct cur *o)
{
	return note_dir(x, o->parent);
}

/* Content blocks as the master holds them now: the listed ones, or (blocks
 * NULL, a new file on the slave) every block with data. Then the size. */
static int put_content(struct rep *x, const char *path, const struct cur *o,
		       const uint64_t *blocks, uint64_t nb)
{
	uint64_t size = (uint64_t)o->sb.st_size, total = blocks_of(size);
	int fd, rc = 0;

	fd = openat(o->pfd, o->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (uint64_t k = 0; k < (blocks ? nb : total) && rc == 0; k++) {
		uint64_t i = blocks ? blocks[k] : k, off = i * VERIFY_BLOCK, len;
		off_t data;

		if (i >= total)
			break; /* ascending: the rest is cut by the truncate */
		len = size - off < VERIFY_BLOCK ? size - off : VERIFY_BLOCK;
		data = lseek(fd, (off_t)off, SEEK_DATA);
		if (data < 0 && errno != ENXIO) {
			rc = -errno;
			break;
		}
		if (data < 0 || (uint64_t)data >= off + len) {
			if (!blocks)
				continue; /* a new file is all hole already */
			struct rec r = { .op = REC_FALLOCATE, .path = path, .off = off, .len = len,
					 .arg = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE };
			rc = emit(x, &r);
			continue;
		}
		if ((rc = io_pread_all(fd, x->buf, (size_t)len, (off_t)off)) < 0)
			break;
		struct rec r = { .op = REC_WRITE, .path = path, .off = off, .data = x->buf,
				 .data_len = (uint32_t)len };
		rc = emit(x, &r);
	}
	close(fd);
	if (rc == 0) {
		struct rec r = { .op = REC_TRUNCATE, .path = path, .off = size };
		rc = emit(x, &r);
	}
	return rc;
}

/* Every xattr of the master's object, then removal of the slave's names the
 * master lacks (snames: NUL-separated, may be NULL). */
static int put_xattrs(struct rep *x, const char *path, struct cur *o, const char *snames,
		      size_t snames_len)
{
	int rc;

	if ((rc = cur_xattrs(x, o)) < 0)
		return rc;
	for (size_t p = 0; p < o->xnames_len; p += strlen(o->xnames + p) + 1) {
		const char *nm = o->xnames + p;
		ssize_t vl = o->pfd < 0 ? fgetxattr(x->c->apply.datafd, nm, x->xval, XATTR_SIZE_MAX)
					: lgetxattr(o->proc, nm, x->xval, XATTR_SIZE_MAX);
		if (vl < 0)
			return -errno;
		struct rec r = { .op = REC_SETXATTR, .path = path, .name = nm, .data = x->xval,
				 .data_len = (uint32_t)vl };
		if ((rc = emit(x, &r)) < 0)
			return rc;
	}
	for (size_t p = 0; snames && p < snames_len; p += strlen(snames + p) + 1) {
		if (cur_has_xattr(o, snames + p))
			continue;
		struct rec r = { .op = REC_REMOVEXATTR, .path = path, .name = snames + p };
		if ((rc = emit(x, &r)) < 0)
			return rc;
	}
	return 0;
}

static int put_times(struct rep *x, const char *path, const struct cur *o)
{
	struct rec r = { .op = REC_UTIMENS, .path = path,
			 .atime_sec = o->sb.st_atim.tv_sec, .atime_nsec = (uint32_t)o->sb.st_atim.tv_nsec,
			 .mtime_sec = o->sb.st_mtim.tv_sec, .mtime_nsec = (uint32_t)o->sb.st_mtim.tv_nsec };

	return emit(x, &r);
}

static int put_owner_mode(struct rep *x, const char *path, const struct cur *o, int owner)
{
	int rc = 0;

	if (owner) {
		struct rec r = { .op = REC_CHOWN, .path = path, .uid = o->sb.st_uid, .gid = o->sb.st_gid };
		rc = emit(x, &r);
	}
	if (rc == 0 && !S_ISLNK(o->sb.st_mode)) {
		struct rec r = { .op = REC_CHMOD, .path = path, .mode = o->sb.st_mode & 07777 };
		rc = emit(x, &r);
	}
	return rc;
}

/* Both have the path, of the same type. */
static int repair_present(struct rep *x, const struct verify_diff *d, struct cur *o)
{
	const char *path = d->path;
	int content = S_ISREG(o->sb.st_mode) && (d->what & (VERIFY_CONTENT | VERIFY_SIZE));
	int owner = !!(d->what & VERIFY_OWNER), rc;

	if (content && (rc = put_content(x, path, o, d->blocks, d->nblocks)) < 0)
		return rc;
	if ((owner || content || (d->what & VERIFY_MODE)) &&
	    (rc = put_owner_mode(x, path, o, owner)) < 0)
		return rc;
	if ((owner || content || (d->what & VERIFY_XATTR)) && !S_ISLNK(o->sb.st_mode) &&
	    (rc = put_xattrs(x, path, o, (d->what & VERIFY_XATTR) ? d->s->xattr_names : NULL,
			     d->s->xattr_names_len)) < 0)
		return rc;
	return content ? put_times(x, path, o) : 0;
}

/* A missing name made as a further name of from, when the master still has
 * from as the same inode as the missing name. */
static int repair_link(struct rep *x, const char *from, const char *path, struct cur *o, int *done)
{
	struct cur f;
	int rc;

	*done = 0;
	if ((rc = cur_open(x, from, &f)) < 0)
		return rc;
	if (f.exists && !S_ISDIR(f.sb.st_mode) && f.sb.st_ino == o->sb.st_ino &&
	    f.sb.st_dev == o->sb.st_dev) {
		struct rec r = { .op = REC_LINK, .path = from, .path2 = path };
		if ((rc = emit(x, &r)) == 0 && (rc = note_parent(x, o)) == 0)
			*done = 1;
	}
	cur_close(&f);
	return rc;
}

/* The smallest name of a group is missing (its link is ""): a name of the
 * group that the slave does have differs by its LINK; the missing name is
 * linked to that one rather than made a separate inode. */
static int repair_link_sibling(struct rep *x, const struct verify_diff *d, struct cur *o, int *done)
{
	int rc = 0;

	*done = 0;
	for (size_t i = 0; i < x->nall && !*done && rc == 0; i++) {
		const struct verify_diff *e = &x->all[i];
		if ((e->what & VERIFY_LINK) && e->m && e->s && !strcmp(e->m->link, d->path))
			rc = repair_link(x, e->path, d->path, o, done);
	}
	return rc;
}

static int repair_missing(struct rep *x, const struct verify_diff *d, struct cur *o)
{
	const char *path = d->path;
	char target[PATH_MAX];
	struct rec r = { .path = path, .uid = o->sb.st_uid, .gid = o->sb.st_gid,
			 .mode = o->sb.st_mode & 07777 };
	int rc, done;

	if (d->m->link[0]) {
		if ((rc = repair_link(x, d->m->link, path, o, &done)) < 0 || done)
			return rc;
	} else if (!S_ISDIR(o->sb.st_mode) && o->sb.st_nlink > 1) {
		if ((rc = repair_link_sibling(x, d, o, &done)) < 0 || done)
			return rc;
	}
	switch (o->sb.st_mode & S_IFMT) {
	case S_IFREG:
		r.op = REC_CREATE;
		break;
	case S_IFDIR:
		r.op = REC_MKDIR;
		break;
	case S_IFLNK: {
		ssize_t n = readlinkat(o->pfd, o->name, target, sizeof(target));
		if (n < 0)
			return -errno;
		if ((size_t)n >= sizeof(target))
			return -ENAMETOOLONG;
		target[n] = '\0';
		r.op = REC_SYMLINK;
		r.path2 = target;
		r.mode = 0;
		break;
	}
	default:
		r.op = REC_MKNOD;
		r.mode = o->sb.st_mode & (S_IFMT | 07777);
		r.rdev = o->sb.st_rdev;
		break;
	}
	if ((rc = emit(x, &r)) < 0 || (rc = note_parent(x, o)) < 0)
		return rc;
	if (S_ISREG(o->sb.st_mode) && (rc = put_content(x, path, o, NULL, 0)) < 0)
		return rc;
	if (S_ISLNK(o->sb.st_mode))
		return put_times(x, path, o);
	/* The creation set owner and mode; content can clear set-id bits. */
	if (S_ISREG(o->sb.st_mode) && (rc = put_owner_mode(x, path, o, 0)) < 0)
		return rc;
	if ((rc = put_xattrs(x, path, o, NULL, 0)) < 0)
		return rc;
	if (S_ISDIR(o->sb.st_mode))
		return note_dir(x, path); /* after its children are made */
	return put_times(x, path, o);
}

enum outcome { DONE, SKIP_UNREPAIRABLE, SKIP_CHANGED, FAILED };

/* One diff, under the order lock. */
static enum outcome repair_one(struct rep *x, const struct verify_diff *d)
{
	struct cur o;
	int rc;

	if (!verify_diff_repairable(d))
		return SKIP_UNREPAIRABLE;
	pthread_mutex_lock(&x->c->order_lock);
	if ((rc = cur_open(x, d->path, &o)) < 0)
		goto out;
	if (d->what & VERIFY_EXTRA) {
		if (o.exists) {
			rc = 1;
		} else {
			struct rec r = { .op = S_ISDIR(d->s->type) ? REC_RMDIR : REC_UNLINK, .path = d->path };
			if ((rc = emit(x, &r)) == 0)
				rc = note_parent(x, &o);
		}
	} else if (!o.exists || (o.sb.st_mode & S_IFMT) != d->m->type) {
		rc = 1;
	} else if (d->what & VERIFY_MISSING) {
		rc = repair_missing(x, d, &o);
	} else {
		rc = repair_present(x, d, &o);
	}
out:
	cur_close(&o);
	pthread_mutex_unlock(&x->c->order_lock);
	if (rc < 0 && !x->fatal && !apply_error_is_deterministic(rc))
		x->fatal = rc; /* reading the master failed (EIO, ENOMEM...), not a record */
	return rc > 0 ? SKIP_CHANGED : rc < 0 ? FAILED : DONE;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_diff_ptr(const void *a, const void *b)
{
	return strcmp((*(const struct verify_diff *const *)a)->path,
		      (*(const struct verify_diff *const *)b)->path);
}

/* Directories whose mtime a creation or removal stamped on the slave. */
static int restore_dir_times(struct rep *x)
{
	int rc = 0;

	if (x->ndirs)
		qsort(x->dirs, x->ndirs, sizeof(*x->dirs), cmp_str);
	for (size_t i = 0; i < x->ndirs && rc == 0; i++) {
		struct cur o;
		if (i && !strcmp(x->dirs[i - 1], x->dirs[i]))
			continue;
		pthread_mutex_lock(&x->c->order_lock);
		rc = cur_open(x, x->dirs[i], &o);
		if (rc == 0 && o.exists && S_ISDIR(o.sb.st_mode) && put_times(x, x->dirs[i], &o) < 0)
			rc = x->fatal;
		cur_close(&o);
		pthread_mutex_unlock(&x->c->order_lock);
	}
	return rc;
}

int verify_repair(struct commit *c, const struct verify_diff *d, size_t n,
		  struct verify_repair_stats *st)
{
	struct rep x = { .c = c, .st = st, .all = d, .nall = n };
	const struct verify_diff **dp = NULL;
	char line[512];
	int rc = 0;

	memset(st, 0, sizeof(*st));
	x.buf = malloc(VERIFY_BLOCK);
	x.xval = malloc(XATTR_SIZE_MAX);
	dp = malloc((n ? n : 1) * sizeof(*dp));
	if (!x.buf || !x.xval || !dp) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		dp[i] = &d[i];
	qsort(dp, n, sizeof(*dp), cmp_diff_ptr);

	/* Phase 0: missing (but further names) and changed paths, ascending;
	 * 1: further names; 2: extra paths, descending. */
	for (int phase = 0; phase < 3 && !x.fatal; phase++) {
		for (size_t k = 0; k < n && !x.fatal; k++) {
			const struct verify_diff *e = dp[phase == 2 ? n - 1 - k : k];
			int extra = !!(e->what & VERIFY_EXTRA);
			int further = (e->what & VERIFY_MISSING) && e->m->link[0];
			if ((phase == 2) != extra || (phase == 1) != further)
				continue;
			enum outcome out = repair_one(&x, e);
			if (x.fatal)
				break;
			verify_diff_describe(e, NULL, NULL, line, sizeof(line));
			switch (out) {
			case DONE:
				st->repaired++;
				log_info("verify repair: %s: journaled", line);
				break;
			case SKIP_UNREPAIRABLE:
				st->unrepairable++;
				log_warn("verify repair: %s: cannot be repaired without changing the "
					 "master; skipped", line);
				break;
			case SKIP_CHANGED:
				st->changed++;
				log_warn("verify repair: %s: changed on the master since the snapshot; "
					 "skipped, verify again", line);
				break;
			case FAILED:
				st->failed++;
				log_warn("verify repair: %s: failed", line);
				break;
			}
		}
	}
	if (!x.fatal)
		x.fatal = restore_dir_times(&x);
	rc = x.fatal;
	if (st->last_lsn) {
		int src = journal_sync(c->journal, st->last_lsn);
		if (rc == 0)
			rc = src;
	}
	if (rc < 0)
		log_error("verify repair stopped: %s", strerror(-rc));
out:
	for (size_t i = 0; i < x.ndirs; i++)
		free(x.dirs[i]);
	free(x.dirs);
	free(x.buf);
	free(x.xval);
	free(dp);
	return rc;
}
