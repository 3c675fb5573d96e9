/* Shared by the fuzz targets: a cursor over the fuzzer's bytes, and the
 * checksum fix-ups that let mutated inputs get past integrity checks (a
 * corrupt disk fails them; a hostile peer with the cluster key, or a bug in
 * our own writer, does not), so the fuzzer explores the parsing behind them.
 *
 * Every target is built twice: with libFuzzer (clang, -DREPLFS_FUZZ=ON) and
 * with replay_main.c, which feeds it the files of the corpus and regress
 * directories in every ordinary build (ctest fuzz_regress_<target>). */
#ifndef REPLFS_FUZZ_H
#define REPLFS_FUZZ_H

#include "../../fs/fs.h"
#include "../../recovery/recovery.h"
#include "../../utils/utils.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the input front to back; past its end every read yields zeros. */
struct fuzz_in {
	const uint8_t *p;
	size_t len;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	uint8_t v = 0;

	if (in->len) {
		v = in->p[0];
		in->p++;
		in->len--;
	}
	return v;
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)fuzz_u8(in) << (8 * i);
	return v;
}

/* A malloc'd copy of exactly n bytes (never NULL, even for n == 0), so that
 * AddressSanitizer sees a read one byte past what the decoder was given. */
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		abort();
	if (n)
		memcpy(b, p, n);
	return b;
}

/* Journal records back to back at buf (a segment body, a batch): gives every
 * record whose total_len fits the checksum it would have under salt, until
 * the first one whose length cannot be a record. Returns the bytes walked. */
static inline size_t fuzz_fix_records(uint8_t *buf, size_t len, uint64_t salt)
{
	size_t pos = 0;

	while (len - pos >= 12) {
		uint32_t total = le_get32(buf + pos + 8);

		if (total < REC_HEAD_FIXED || total % REC_ALIGN || total > len - pos)
			break;
		le_put64(buf + pos, hash64(buf + pos + 8, total - 8, salt));
		pos += total;
	}
	return pos;
}

/* Cuts a stream into pieces whose sizes the input chooses, cycling through
 * its size bytes: 1-127 bytes, (b - 127) KiB for b >= 128, 0 = all the rest;
 * no size bytes: one piece. Stream decoders must give the same answer
 * whatever the cut. */
struct fuzz_split {
	const uint8_t *sizes;
	size_t n, next;
};

static inline size_t fuzz_split_next(struct fuzz_split *s, size_t left)
{
	size_t k;
	uint8_t b;

	if (!s->n)
		return left;
	b = s->sizes[s->next++ % s->n];
	k = b == 0 ? left : b < 128 ? b : (size_t)(b - 127) << 10;
	return k < left ? k : left;
}

/* A broken property: abort, which libFuzzer and the replay driver report.
 * Said on stdout: run.sh closes the targets' stderr (-close_fd_mask=2) to
 * silence the refusals the code under test logs. */
static inline void fuzz_die(const char *what)
{
	printf("fuzz: %s\n", what);
	fflush(stdout);
	abort();
}

/* A verify manifest from a peer (or a builder): when it decodes, it encodes
 * back to the very same bytes, equals itself, and every difference against
 * an empty tree can be described. */
static inline void fuzz_check_manifest(const uint8_t *plain, size_t plen)
{
	struct verify_manifest m, other = { 0 };
	struct verify_diff *d;
	uint8_t *enc;
	size_t n, enclen;

	if (verify_manifest_decode(plain, plen, &m) < 0)
		return;
	if (verify_manifest_encode(&m, &enc, &enclen) < 0)
		fuzz_die("verify_manifest_encode failed on a decoded manifest");
	if (enclen != plen || memcmp(enc, plain, plen) != 0)
		fuzz_die("a decoded manifest does not encode back to its bytes");
	free(enc);
	if (verify_compare(&m, &m, &d, &n) < 0 || n != 0)
		fuzz_die("a manifest differs from itself");
	verify_diffs_free(d, n);
	for (size_t i = 0; i < m.n; i++)
		if (verify_manifest_find(&m, m.entries[i].path) != &m.entries[i])
			fuzz_die("verify_manifest_find misses an entry");
	/* Against an empty tree at the same LSN: everything is missing, then
	 * everything is extra; each difference can be described. */
	other.lsn = m.lsn;
	for (int side = 0; side < 2; side++) {
		if (verify_compare(side ? &other : &m, side ? &m : &other, &d, &n) < 0 || n != m.n)
			fuzz_die("verify_compare against an empty manifest");
		for (size_t i = 0; i < n; i++) {
			char line[512];
			int rc = verify_diff_describe(&d[i], side ? &other : &m, side ? &m : &other,
						      line, sizeof(line));
			if (rc < 0 && rc != -ENOBUFS)
				fuzz_die("verify_diff_describe refused its own diff");
			verify_diff_repairable(&d[i]);
		}
		verify_diffs_free(d, n);
	}
	verify_manifest_free(&m);
}

#endif
