/* The replication wire: every request and every response is one sealed
 * envelope, authenticated and encrypted with the cluster key.
 *
 * ENVELOPE, version 1 (integers little-endian)
 *     0  4 magic     "RPL1"
 *     4  1 type      enum repl_msg
 *     5  3 zero
 *     8 16 sender    node id of the sender
 *    24  8 epoch     the sender's epoch
 *    32 16 session   session id (HELLO and WELCOME: the hello's random challenge)
 *    48  8 counter   request counter; a response repeats its request's
 *    56 24 nonce     random, XChaCha20-Poly1305
 *    80  . ciphertext of the plaintext, then its 16-byte tag
 *   Bytes [0, 56) are the additional data: header fields cannot be changed.
 *
 * REPLAY: the master keeps, per slave session, the highest request counter
 * seen and a window below it (repl_replay_check) and refuses a counter seen
 * before. A session opens with two HELLOs: the first is answered with a
 * one-time challenge (an ERROR "challenge"), the second must carry it; the
 * master remembers the challenges it handed out in memory only, so a captured
 * HELLO can never open a session again, not even after a restart. A response carries its
 * request's session and counter and a different type, so a captured response
 * is refused by any later request of the slave (which never reuses a counter)
 * and cannot pass for a request.
 *
 * ONE-SHOT MESSAGES (ANNOUNCE, PROBE, PROMOTE, VERIFY; failover.c) travel
 * outside any session: a random session id and counter 1. They are safe to
 * see twice: ANNOUNCE and PROBE change nothing an equal or older epoch has
 * not already changed, PROMOTE names the exact epoch and LSN it is valid at
 * and expires, VERIFY only reads.
 *
 * PLAINTEXTS: control messages (HELLO, WELCOME, FETCH, ACK, ACKED, SNAPSHOT,
 * ERROR, ANNOUNCE, PROBE, INFO, PROMOTE, VERIFY) are JSON objects (master.c,
 * slave.c, failover.c name the fields); MANIFEST is a verify manifest
 * (recovery/verify.c); a BATCH is REPL_BATCH_HEAD bytes (below) followed by
 * journal records as the master stores them (fs/record.c), checksummed with
 * the given segment salt:
 *     0 8 master_lsn   8 8 master_epoch   16 8 first_lsn   24 8 salt
 *    32 4 nrec        36 4 flags         40 8 master_time_ns
 *    48 8 verify_lsn  (a verify compares the trees at this LSN: the batch
 *                      ends at it or starts after it; 0 = none)
 */
#include "replicator.h"
#include "../utils/utils.h"

#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENV_MAGIC "RPL1"
#define ENV_AD_LEN 56u

size_t repl_seal(const uint8_t key[REPL_KEY_BYTES], const struct repl_env *e, uint8_t *buf,
		 size_t len)
{
	unsigned long long clen = 0;

	memcpy(buf, ENV_MAGIC, 4);
	buf[4] = e->type;
	memset(buf + 5, 0, 3);
	memcpy(buf + 8, e->sender, REPL_ID_BYTES);
	le_put64(buf + 24, e->epoch);
	memcpy(buf + 32, e->session, REPL_ID_BYTES);
	le_put64(buf + 48, e->counter);
	randombytes_buf(buf + ENV_AD_LEN, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	/* In place: libsodium allows the ciphertext to overlap the message
	 * exactly. */
	crypto_aead_xchacha20poly1305_ietf_encrypt(buf + REPL_ENV_HEAD, &clen, buf + REPL_ENV_HEAD,
						   len, buf, ENV_AD_LEN, NULL,
						   buf + ENV_AD_LEN, key);
	return REPL_ENV_HEAD + (size_t)clen;
}

int repl_open(const uint8_t key[REPL_KEY_BYTES], uint8_t *buf, size_t len, struct repl_env *e,
	      uint8_t **plain, size_t *plain_len)
{
	unsigned long long mlen = 0;

	if (len < REPL_ENV_OVERHEAD)
		return -EBADMSG;
	if (memcmp(buf, ENV_MAGIC, 4) != 0 || buf[5] || buf[6] || buf[7])
		return -EPROTO;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(buf + REPL_ENV_HEAD, &mlen, NULL,
						       buf + REPL_ENV_HEAD,
						       len - REPL_ENV_HEAD, buf, ENV_AD_LEN,
						       buf + ENV_AD_LEN, key) != 0)
		return -EBADMSG;
	e->type = buf[4];
	memcpy(e->sender, buf + 8, REPL_ID_BYTES);
	e->epoch = le_get64(buf + 24);
	memcpy(e->session, buf + 32, REPL_ID_BYTES);
	e->counter = le_get64(buf + 48);
	if (e->type == 0 || e->type >= REPL_MSG_MAX)
		return -EPROTO;
	*plain = buf + REPL_ENV_HEAD;
	*plain_len = (size_t)mlen;
	return 0;
}

void repl_batch_head_put(uint8_t *out, const struct repl_batch_head *h)
{
	le_put64(out, h->master_lsn);
	le_put64(out + 8, h->master_epoch);
	le_put64(out + 16, h->first_lsn);
	le_put64(out + 24, h->salt);
	le_put32(out + 32, h->nrec);
	le_put32(out + 36, h->flags);
	le_put64(out + 40, h->master_time_ns);
	le_put64(out + 48, h->verify_lsn);
}

int repl_batch_head_get(const uint8_t *in, size_t len, struct repl_batch_head *h)
{
	if (len < REPL_BATCH_HEAD)
		return -EBADMSG;
	h->master_lsn = le_get64(in);
	h->master_epoch = le_get64(in + 8);
	h->first_lsn = le_get64(in + 16);
	h->salt = le_get64(in + 24);
	h->nrec = le_get32(in + 32);
	h->flags = le_get32(in + 36);
	h->master_time_ns = le_get64(in + 40);
	h->verify_lsn = le_get64(in + 48);
	return 0;
}

/* ---- the cluster key ------------------------------------------------------ */

int repl_keygen(FILE *out)
{
	uint8_t key[REPL_KEY_BYTES];
	char hex[REPL_KEY_BYTES * 2 + 1];

	if (sodium_init() < 0)
		return -EIO;
	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
	sodium_memzero(key, sizeof(key));
	if (fprintf(out, "%s\n", hex) < 0 || fflush(out) != 0)
		return -EIO;
	return 0;
}

int repl_key_load(const char *path, uint8_t key[REPL_KEY_BYTES], char *err, size_t errlen)
{
	char buf[256];
	struct stat st;
	size_t bin_len = 0, n;
	ssize_t got;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file %s is not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "key file %s is readable by group or others (mode %04o); run chmod 600 %s",
			 path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -EPERM;
	}
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (got < 0) {
		snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
		return -EIO;
	}
	n = (size_t)got;
	while (n && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (n != REPL_KEY_BYTES * 2 ||
	    sodium_hex2bin(key, REPL_KEY_BYTES, buf, n, NULL, &bin_len, NULL) != 0 ||
	    bin_len != REPL_KEY_BYTES) {
		sodium_memzero(buf, sizeof(buf));
		snprintf(err, errlen,
			 "key file %s does not hold a cluster key (64 hex digits from `replfs keygen`)",
			 path);
		return -EINVAL;
	}
	sodium_memzero(buf, sizeof(buf));
	return 0;
}
