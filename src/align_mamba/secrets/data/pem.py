"""Synthetic private-key blocks with the real structure: DER/openssh-key-v1 bytes, base64, armour lines.

The numbers are random bytes, not a working key pair: the shape (ASN.1 layout, lengths, the familiar
`MIIEo...`/`MHcCAQEE...`/`b3BlbnNzaC1rZXktdjE...` openings) is what a scanner or a tagger sees.
"""

from __future__ import annotations

import base64
import struct

from align_mamba.secrets.data.text import FIRST_NAMES, WORDS, Pool

# DER object identifier of the NIST P-256 curve (1.2.840.10045.3.1.7).
_P256_OID = bytes.fromhex("06082a8648ce3d030107")


def _der(tag: int, body: bytes) -> bytes:
    """One DER TLV: tag, definite length (short or long form), body."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _der_int(magnitude: bytes) -> bytes:
    # A DER INTEGER is two's complement: a set top bit needs a leading zero byte to stay positive.
    magnitude = magnitude.lstrip(b"\x00") or b"\x00"
    if magnitude[0] & 0x80:
        magnitude = b"\x00" + magnitude
    return _der(0x02, magnitude)


def _odd_top(pool: Pool, n: int) -> bytes:
    """n random bytes with the top bit set (a full-size modulus or prime) and the low bit set (odd)."""
    raw = bytearray(pool.bytes(n))
    raw[0] |= 0x80
    raw[-1] |= 0x01
    return bytes(raw)


def _armour(label: str, der: bytes, width: int) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i:i + width] for i in range(0, len(body), width)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def rsa_pkcs1(pool: Pool) -> str:
    """A 2048-bit RSAPrivateKey (PKCS#1): version, n, e, d, p, q, dp, dq, qinv; ~1.7 KB of PEM."""
    fields = [_der_int(b"\x00"), _der_int(_odd_top(pool, 256)), _der_int((65537).to_bytes(3, "big")),
              _der_int(pool.bytes(256)), _der_int(_odd_top(pool, 128)), _der_int(_odd_top(pool, 128)),
              _der_int(pool.bytes(128)), _der_int(pool.bytes(128)), _der_int(pool.bytes(128))]
    return _armour("RSA PRIVATE KEY", _der(0x30, b"".join(fields)), 64)


def ec_sec1(pool: Pool) -> str:
    """A P-256 ECPrivateKey (SEC 1): version 1, 32-byte scalar, curve OID, uncompressed point; ~230 B."""
    point = b"\x00\x04" + pool.bytes(64)  # BIT STRING: 0 unused bits, 0x04 = uncompressed
    der = _der(0x30, _der_int(b"\x01") + _der(0x04, pool.bytes(32)) + _der(0xA0, _P256_OID)
               + _der(0xA1, _der(0x03, point)))
    return _armour("EC PRIVATE KEY", der, 64)


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def openssh_ed25519(pool: Pool) -> str:
    """An unencrypted openssh-key-v1 ed25519 key (what ssh-keygen -t ed25519 writes); ~400 B."""
    public, secret = pool.bytes(32), pool.bytes(32)
    key_type = _ssh_string(b"ssh-ed25519")
    public_blob = key_type + _ssh_string(public)
    check = pool.bytes(4)
    comment = f"{pool.choice(FIRST_NAMES)}@{pool.choice(WORDS)}".encode("ascii")
    private = check + check + public_blob + _ssh_string(secret + public) + _ssh_string(comment)
    private += bytes(range(1, 1 + (-len(private)) % 8))  # padding 1, 2, 3, ... to a multiple of 8
    body = (b"openssh-key-v1\x00" + _ssh_string(b"none") + _ssh_string(b"none") + _ssh_string(b"")
            + struct.pack(">I", 1) + _ssh_string(public_blob) + _ssh_string(private))
    return _armour("OPENSSH PRIVATE KEY", body, 70)


KEY_TYPES = (rsa_pkcs1, ec_sec1, openssh_ed25519)


def private_key_block(pool: Pool) -> str:
    """One armoured private key of a random type, BEGIN to END line, without a trailing newline."""
    return pool.choice(KEY_TYPES)(pool)
