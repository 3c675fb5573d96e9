"""The replfs replication wire, in Python, for the security tests.

Speaks exactly what replicator/wire.c and fs/record.c define, with the system's
libsodium and libxxhash through ctypes (stdlib only, no pip):

  envelope  "RPL1" | type u8 | 3 zero | sender 16 | epoch u64 | session 16 |
            counter u64 | nonce 24 | XChaCha20-Poly1305(plaintext) + tag 16;
            additional data = bytes [0, 56)
  batch     master_lsn u64 | master_epoch u64 | first_lsn u64 | salt u64 |
            nrec u32 | flags u32 | master_time_ns u64, then records
  record    checksum u64 = XXH3_64(bytes [8, total), seed = salt) | total_len u32 |
            op u16 | flags u16 | lsn | epoch | time_ns | mode uid gid arg (u32) |
            rdev off len (u64) | atime_sec mtime_sec (u64) | atime_nsec mtime_nsec (u32) |
            path_len path2_len name_len zero (u16) | data_len u32 | zero u32 |
            path NUL path2 NUL name NUL data, zero padding to 8
"""
import ctypes
import struct

HELLO, WELCOME, FETCH, BATCH, ACK, ACKED, SNAPSHOT, ERROR = 1, 2, 3, 4, 5, 6, 7, 15
TYPE_NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", FETCH: "FETCH", BATCH: "BATCH", ACK: "ACK",
              ACKED: "ACKED", SNAPSHOT: "SNAPSHOT", ERROR: "ERROR"}
ENV_HEAD, ENV_TAG, AD_LEN = 80, 16, 56
BATCH_HEAD = 56
REC_HEAD = 120
STR_ABSENT = 0xFFFF

OPS = {"noop": 0, "create": 1, "mknod": 2, "mkdir": 3, "symlink": 4, "link": 5, "unlink": 6,
       "rmdir": 7, "rename": 8, "write": 9, "truncate": 10, "fallocate": 11, "chmod": 12,
       "chown": 13, "utimens": 14, "setxattr": 15, "removexattr": 16}

_sodium = ctypes.CDLL("libsodium.so.23")
if _sodium.sodium_init() < 0:
    raise RuntimeError("sodium_init failed")
_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt.argtypes = [
    ctypes.c_char_p, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p, ctypes.c_ulonglong,
    ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
_sodium.crypto_aead_xchacha20poly1305_ietf_decrypt.argtypes = [
    ctypes.c_char_p, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_void_p, ctypes.c_char_p,
    ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p]
_sodium.randombytes_buf.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_sodium.randombytes_buf.restype = None

_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
_xxh.XXH3_64bits_withSeed.restype = ctypes.c_uint64


def randbytes(n):
    b = ctypes.create_string_buffer(n)
    _sodium.randombytes_buf(b, n)
    return b.raw


def xxh3(data, seed):
    return _xxh.XXH3_64bits_withSeed(data, len(data), seed)


def load_key(path):
    with open(path) as f:
        k = bytes.fromhex(f.read().strip())
    if len(k) != 32:
        raise ValueError("%s: not a cluster key" % path)
    return k


def seal(key, mtype, sender, epoch, session, counter, plain):
    head = b"RPL1" + bytes([mtype, 0, 0, 0]) + sender + struct.pack("<Q", epoch) + session + \
        struct.pack("<Q", counter)
    assert len(head) == AD_LEN
    nonce = randbytes(24)
    out = ctypes.create_string_buffer(len(plain) + ENV_TAG)
    clen = ctypes.c_ulonglong(0)
    _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out, ctypes.byref(clen), plain, len(plain),
                                                        head, AD_LEN, None, nonce, key)
    return head + nonce + out.raw[:clen.value]


def header(env):
    """The cleartext header of an envelope (no key needed): a dict, or None."""
    if len(env) < ENV_HEAD + ENV_TAG or env[:4] != b"RPL1":
        return None
    return {"type": env[4], "sender": env[8:24], "epoch": struct.unpack_from("<Q", env, 24)[0],
            "session": env[32:48], "counter": struct.unpack_from("<Q", env, 48)[0]}


def open_env(key, env):
    """(header dict, plaintext), or None when not sealed with key."""
    h = header(env)
    if h is None:
        return None
    out = ctypes.create_string_buffer(max(1, len(env) - ENV_HEAD))
    mlen = ctypes.c_ulonglong(0)
    rc = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, ctypes.byref(mlen), None, env[ENV_HEAD:], len(env) - ENV_HEAD, env[:AD_LEN], AD_LEN,
        env[AD_LEN:ENV_HEAD], key)
    if rc != 0:
        return None
    return h, out.raw[:mlen.value]


def batch_head(master_lsn, master_epoch, first_lsn, salt, nrec, flags=0, time_ns=0, verify_lsn=0):
    return struct.pack("<QQQQIIQQ", master_lsn, master_epoch, first_lsn, salt, nrec, flags, time_ns,
                       verify_lsn)


def parse_batch_head(plain):
    v = struct.unpack_from("<QQQQIIQQ", plain, 0)
    return dict(zip(("master_lsn", "master_epoch", "first_lsn", "salt", "nrec", "flags",
                     "time_ns", "verify_lsn"), v))


def _s(x):
    return x.encode() if isinstance(x, str) else x


def record(salt, op, lsn, epoch, path, path2=None, name=None, data=b"", time_ns=0, mode=0o644,
           uid=0, gid=0, arg=0, rdev=0, off=0, length=0, atime=(0, 0), mtime=(0, 0), flags=0):
    """One record exactly as fs/record.c encodes it, checksummed with salt.
    Paths are NOT checked here: that is the point."""
    op = OPS[op] if isinstance(op, str) else op
    strs = b""
    lens = []
    for s in (path, path2, name):
        if s is None:
            lens.append(STR_ABSENT)
        else:
            s = _s(s)
            lens.append(len(s))
            strs += s + b"\0"
    data = _s(data)
    hlen = REC_HEAD + len(strs)
    total = (hlen + len(data) + 7) & ~7
    head = struct.pack("<IHHQQQIIIIQQQqqIIHHHHII", total, op, flags, lsn, epoch, time_ns, mode,
                       uid, gid, arg, rdev, off, length, atime[0], mtime[0], atime[1],
                       mtime[1], lens[0], lens[1], lens[2], 0, len(data), 0)
    assert len(head) == REC_HEAD - 8, len(head)
    body = head + strs + data
    body += b"\0" * (total - 8 - len(body))
    return struct.pack("<Q", xxh3(body, salt)) + body


def parse_record(buf, pos=0):
    """(fields dict, total length) of the record at buf[pos:] (no checks)."""
    total, op, flags, lsn, epoch, time_ns, mode, uid, gid, arg, rdev, off, length, asec, msec, \
        ansec, mnsec, l1, l2, l3, _z, dlen, _z2 = struct.unpack_from("<IHHQQQIIIIQQQqqIIHHHHII",
                                                                     buf, pos + 8)
    p = pos + REC_HEAD
    strs = []
    for n in (l1, l2, l3):
        if n == STR_ABSENT:
            strs.append(None)
        else:
            strs.append(bytes(buf[p:p + n]))
            p += n + 1
    f = dict(op=op, flags=flags, lsn=lsn, epoch=epoch, time_ns=time_ns, mode=mode, uid=uid,
             gid=gid, arg=arg, rdev=rdev, off=off, length=length, atime=(asec, ansec),
             mtime=(msec, mnsec), path=strs[0], path2=strs[1], name=strs[2],
             data=bytes(buf[p:p + dlen]))
    return f, total
