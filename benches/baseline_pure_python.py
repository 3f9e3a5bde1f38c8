"""A straightforward pure-Python implementation of what ``smsgnet._core`` does,
used as the baseline of the benchmarks (benches/test_bench_core.py).

It is written the way one would write it without a native core: X25519 from
``cryptography``, HMAC from the standard library, XChaCha20-Poly1305 from
PyNaCl (libsodium), the keystream with ``hashlib``, the envelope with ``json``.
The C libraries underneath are fast; the Python around them is what the native
core removes. tests/core/test_core_baseline.py checks that it produces the
reference frames byte for byte, so the comparison is like for like.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import os
import re
import time
from collections import OrderedDict

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

MAGIC = b"SMSG"
VERSION = 0x02
HEADER = b'{"algorithm":"chacha20poly1305","version":"1.0"}'
MAX_HEADER_LEN = 16 << 20
NONCE_LEN = 24
TAG_LEN = 16


class BaselineError(ValueError):
    """Any failure of the baseline (it does not need the native error tree)."""


# ---------------------------------------------------------------------------
# Keys and the handshake


def generate_keypair() -> tuple[bytes, bytes]:
    private = os.urandom(32)
    return private, public_key(private)


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def node_id(public: bytes) -> str:
    if len(public) != 32:
        raise BaselineError("public key must be 32 bytes")
    return hashlib.sha256(public).hexdigest()[:32]


def derive_shared_secret(private: bytes, peer_public: bytes) -> bytes:
    raw = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return hashlib.sha256(raw).digest()  # exchange() already refuses the all-zero result


def sign_challenge(challenge: bytes, shared_secret: bytes) -> bytes:
    return hmac.new(shared_secret, challenge, hashlib.sha256).digest()


def verify_challenge(challenge: bytes, response: bytes, shared_secret: bytes) -> bool:
    return hmac.compare_digest(sign_challenge(challenge, shared_secret), response)


# ---------------------------------------------------------------------------
# SMSG


def smsg_password(shared_secret: bytes) -> str:
    return base64.b64encode(shared_secret).decode("ascii")


def keystream(nonce: bytes, length: int) -> bytes:
    blocks = (length + 31) // 32
    stream = b"".join(hashlib.sha256(nonce + i.to_bytes(8, "big")).digest() for i in range(blocks))
    return stream[:length]


def xor_keystream(nonce: bytes, data: bytes) -> bytes:
    n = len(data)
    stream = keystream(nonce, n)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


_GO_HTML = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
# Python writes \b and \f; the reference writes every control character except
# \t \n \r as \u00XX. Every backslash in json.dumps output starts a pair.
_PY_ONLY_ESCAPES = {"\\b": "\\u0008", "\\f": "\\u000c"}
_ESCAPE_PAIR = re.compile(r"\\.")


def go_json_string(text: str) -> str:
    """``text`` as a JSON string the way Go's json.Marshal writes it (HTML-escaped)."""
    out = json.dumps(text, ensure_ascii=False)
    if "\b" in text or "\f" in text:
        out = _ESCAPE_PAIR.sub(lambda m: _PY_ONLY_ESCAPES.get(m.group(), m.group()), out)
    for raw, escaped in _GO_HTML:
        out = out.replace(raw, escaped)
    return out


def envelope(message_json: str | bytes, timestamp: int) -> bytes:
    if isinstance(message_json, (bytes, bytearray)):
        message_json = bytes(message_json).decode("utf-8")
    return ('{"body":%s,"timestamp":%d}' % (go_json_string(message_json), timestamp)).encode("utf-8")


def _check_header(header: bytes, payload: bytes) -> None:
    if header == HEADER:
        return
    try:
        fields = json.loads(header)
    except ValueError as e:
        raise BaselineError(f"invalid header: {e}") from e
    if not isinstance(fields, dict):
        raise BaselineError("invalid header: not a JSON object")
    if fields.get("compression") not in (None, "", "none"):
        raise BaselineError("unsupported compression")
    if fields.get("format") not in (None, "", "v1"):
        raise BaselineError("unsupported format")
    checksum = fields.get("checksum")
    if isinstance(checksum, str) and checksum:
        if fields.get("checksum_algo", "sha256") not in ("sha256", ""):
            raise BaselineError("unsupported checksum algorithm")
        if hashlib.sha256(payload).hexdigest() != checksum.lower():
            raise BaselineError("checksum mismatch")


class SmsgCipher:
    def __init__(self, shared_secret: bytes) -> None:
        if len(shared_secret) != 32:
            raise BaselineError("shared secret must be 32 bytes")
        self._key = hashlib.sha256(smsg_password(shared_secret).encode("ascii")).digest()

    def seal(self, message_json: str | bytes, *, nonce: bytes | None = None, timestamp: int | None = None) -> bytes:
        if nonce is None:
            nonce = os.urandom(NONCE_LEN)
        if timestamp is None:
            timestamp = int(time.time())
        plain = xor_keystream(nonce, envelope(message_json, timestamp))
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, None, nonce, self._key)
        return b"".join((MAGIC, bytes((VERSION,)), len(HEADER).to_bytes(4, "big"), HEADER, nonce, sealed))

    def open(self, frame: bytes) -> bytes:
        return self.open_message(frame)[0]

    def open_message(self, frame: bytes) -> tuple[bytes, dict]:
        """The transport Message JSON and the parsed Message."""
        if len(frame) < 9:
            raise BaselineError("frame truncated")
        if frame[:4] != MAGIC:
            raise BaselineError("bad magic")
        if frame[4] != VERSION:
            raise BaselineError("unsupported container version")
        n = int.from_bytes(frame[5:9], "big")
        if n > MAX_HEADER_LEN:
            raise BaselineError("header too large")
        if len(frame) - 9 < n:
            raise BaselineError("frame truncated")
        header, payload = frame[9 : 9 + n], frame[9 + n :]
        _check_header(header, payload)
        if len(payload) < NONCE_LEN + TAG_LEN:
            raise BaselineError("authentication failed")
        nonce = payload[:NONCE_LEN]
        try:
            plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                payload[NONCE_LEN:], None, nonce, self._key
            )
        except nacl.exceptions.CryptoError as e:
            raise BaselineError("authentication failed") from e
        try:
            env = json.loads(xor_keystream(nonce, plain))
        except ValueError as e:
            raise BaselineError(f"invalid envelope: {e}") from e
        if not isinstance(env, dict) or not isinstance(env.get("body"), str):
            raise BaselineError("invalid envelope")
        body = env["body"]
        try:
            message = json.loads(body)
        except ValueError as e:
            raise BaselineError(f"invalid transport message: {e}") from e
        if not isinstance(message, dict):
            raise BaselineError("invalid transport message: not a JSON object")
        return body.encode("utf-8"), message


# ---------------------------------------------------------------------------
# Per-connection state


class TokenBucket:
    def __init__(self, burst: int, rate: float) -> None:
        if burst < 1 or not rate >= 0:
            raise BaselineError("bad bucket")
        self.burst, self.rate = burst, rate
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float | None = None) -> bool:
        if now is None:
            now = time.time()
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Deduplicator:
    """ID → expiry in an insertion-ordered dict; the oldest goes first when full."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.evicted = 0

    def check_and_mark(self, message_id: str, now: float | None = None) -> bool:
        if now is None:
            now = time.time()
        expiry = self._seen.get(message_id)
        if expiry is not None and expiry > now:
            return False
        self.mark(message_id, now)
        return True

    def mark(self, message_id: str, now: float | None = None) -> None:
        if now is None:
            now = time.time()
        if message_id in self._seen:
            self._seen.move_to_end(message_id)
        elif len(self._seen) >= self.max_entries:
            oldest, expiry = next(iter(self._seen.items()))
            while expiry <= now:  # expired entries first, they are not evictions
                del self._seen[oldest]
                if not self._seen:
                    break
                oldest, expiry = next(iter(self._seen.items()))
            if len(self._seen) >= self.max_entries:
                self._seen.popitem(last=False)
                self.evicted += 1
        self._seen[message_id] = now + self.ttl

    def sweep(self, now: float | None = None) -> int:
        if now is None:
            now = time.time()
        expired = [k for k, expiry in self._seen.items() if expiry <= now]
        for k in expired:
            del self._seen[k]
        return len(expired)

    def __len__(self) -> int:
        return len(self._seen)


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([Zz])|([+-])(\d\d):(\d\d))\Z"
)


def parse_timestamp(ts: str) -> float | None:
    m = _RFC3339.match(ts)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return seconds + (float(m.group(7)) if m.group(7) else 0.0)


class FrameReceiver:
    """bucket → open → checks → dedup, in Python."""

    def __init__(
        self,
        cipher: SmsgCipher,
        dedup: Deduplicator,
        *,
        bucket: TokenBucket | None = None,
        max_age: float = 300.0,
        max_future: float = 60.0,
        peer_id: str | None = None,
    ) -> None:
        self.cipher, self.dedup, self.bucket = cipher, dedup, bucket
        self.max_age, self.max_future, self.peer_id = max_age, max_future, peer_id
        self.last_error = ""

    def receive(self, frame: bytes, now: float | None = None) -> tuple[str, bytes | None]:
        if now is None:
            now = time.time()
        if self.bucket is not None and not self.bucket.allow(now):
            self.last_error = ""
            return "rate_limited", None
        try:
            body, message = self.cipher.open_message(frame)
        except BaselineError as e:
            self.last_error = str(e)
            reason = "undecryptable" if "authentication" in str(e) else "malformed"
            if "envelope" in str(e) or "transport message" in str(e):
                reason = "invalid_message"
            return reason, None
        mid = message.get("id")
        if not isinstance(mid, str) or not mid:
            self.last_error = "message has no id"
            return "invalid_message", None
        sender = message.get("from")
        if self.peer_id is not None and sender and sender != self.peer_id:
            self.last_error = f"from {sender!r}"
            return "wrong_sender", None
        ts_text = message.get("ts")
        ts = parse_timestamp(ts_text) if isinstance(ts_text, str) else None
        if ts is None or ts < now - self.max_age or ts > now + self.max_future:
            self.last_error = "ts outside the replay window"
            return "stale", None
        if not self.dedup.check_and_mark(mid, now):
            self.last_error = ""
            return "duplicate", None
        self.last_error = ""
        return "ok", body
