"""Type stub of the native core ``smsgnet._core`` (Rust, PyO3).

This stub is the contract: tests/core/test_core_stub.py runs mypy's stubtest
against the built module and checks that the public names match exactly.

Conventions of the module:

* Keys and secrets are 32 raw ``bytes``; any other length raises
  :class:`InvalidKeyError` (a ``ValueError``); anything but ``bytes`` raises ``TypeError``.
* ``now`` arguments are seconds on any clock that does not jump (``time.time()``
  when omitted); a NaN or infinite ``now`` raises :class:`ConfigError`.
* Opening a frame raises a subclass of :class:`SmsgError` (the peer's fault);
  an argument out of range raises :class:`ConfigError` (a ``ValueError``, naming the
  argument) and a wrong type ``TypeError`` (the caller's fault). Every error goes
  through one mapping (``rust/python/errors.rs``).
"""

from typing import Final, final

from smsgnet.exceptions import AuthenticationFailedError as AuthenticationFailedError
from smsgnet.exceptions import BadMagicError as BadMagicError
from smsgnet.exceptions import FrameTruncatedError as FrameTruncatedError
from smsgnet.exceptions import HeaderTooLargeError as HeaderTooLargeError
from smsgnet.exceptions import InvalidEnvelopeError as InvalidEnvelopeError
from smsgnet.exceptions import InvalidHeaderError as InvalidHeaderError
from smsgnet.exceptions import ConfigError as ConfigError
from smsgnet.exceptions import InvalidKeyError as InvalidKeyError
from smsgnet.exceptions import InvalidMessageError as InvalidMessageError
from smsgnet.exceptions import InvalidRecordError as InvalidRecordError
from smsgnet.exceptions import PeerAuthenticationError as PeerAuthenticationError
from smsgnet.exceptions import SealError as SealError
from smsgnet.exceptions import SmsgError as SmsgError
from smsgnet.exceptions import UnsupportedCompressionError as UnsupportedCompressionError
from smsgnet.exceptions import UnsupportedContainerVersionError as UnsupportedContainerVersionError
from smsgnet.exceptions import UnsupportedFormatError as UnsupportedFormatError

__all__ = [
    "generate_keypair",
    "public_key",
    "node_id",
    "derive_shared_secret",
    "sign_challenge",
    "verify_challenge",
    "smsg_password",
    "keystream",
    "envelope",
    "parse_timestamp",
    "parse_timestamp_fields",
    "format_timestamp",
    "new_message_id",
    "drop_reasons",
    "seal_for_all",
    "take_binary_frames",
    "SmsgCipher",
    "TokenBucket",
    "Deduplicator",
    "FrameReceiver",
    "noise_prologue",
    "noise_sealed_len",
    "NoiseHandshake",
    "NoiseLink",
    "NOISE_PATTERN",
    "PROTOCOL_VERSION",
    "MAX_HEADER_LEN",
    "SmsgError",
    "ConfigError",
    "InvalidKeyError",
    "SealError",
    "FrameTruncatedError",
    "BadMagicError",
    "UnsupportedContainerVersionError",
    "HeaderTooLargeError",
    "InvalidHeaderError",
    "UnsupportedCompressionError",
    "UnsupportedFormatError",
    "AuthenticationFailedError",
    "InvalidEnvelopeError",
    "InvalidMessageError",
    "InvalidRecordError",
    "PeerAuthenticationError",
]

#: The handshake protocol version, ``"1.0"``.
PROTOCOL_VERSION: Final[str]
#: Largest container header length a frame may declare (16 MiB).
MAX_HEADER_LEN: Final[int]
#: The Noise protocol of a 2.0 link, ``"Noise_IK_25519_AESGCM_SHA256"``.
NOISE_PATTERN: Final[str]

# ---------------------------------------------------------------------------
# Keys and the handshake

def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair from the OS generator: ``(private, public)``, 32 bytes each.

    Raises ``OSError`` if the OS random generator fails.
    """

def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private scalar (clamped internally)."""

def node_id(public: bytes) -> str:
    """Node ID: lowercase hex of the first 16 bytes of SHA-256(public key), 32 characters."""

def derive_shared_secret(private: bytes, peer_public: bytes) -> bytes:
    """SHA-256(X25519(private, peer_public)): the 32-byte secret of a pair of nodes.

    Raises :class:`InvalidKeyError` for a key that is not 32 bytes and for a
    low-order peer key (all-zero X25519 result). Decode the peer's base64
    ``publicKey`` strictly (standard alphabet, padded) before calling this.
    """

def sign_challenge(challenge: bytes, shared_secret: bytes) -> bytes:
    """HMAC-SHA256(key=shared_secret, message=challenge): the 32-byte challenge response."""

def verify_challenge(challenge: bytes, response: bytes, shared_secret: bytes) -> bool:
    """Constant-time check of a challenge response. False for any wrong length."""

# ---------------------------------------------------------------------------
# SMSG frames

def smsg_password(shared_secret: bytes) -> str:
    """The SMSG password: standard base64 of the shared secret (tests and vectors)."""

def keystream(nonce: bytes, length: int) -> bytes:
    """The first ``length`` bytes of the XOR keystream for a 24-byte nonce (tests and vectors).

    Raises ``ValueError`` for a nonce that is not 24 bytes.
    """

def envelope(message_json: bytes | bytearray | str, timestamp: int) -> bytes:
    """The plaintext envelope ``{"body":"<escaped message>","timestamp":N}`` (tests and vectors).

    The body is escaped as Go's ``json.Marshal`` does (``<``, ``>``, ``&``,
    U+2028, U+2029 and control characters as ``\\uXXXX``). The input is not
    checked for UTF-8.
    """

@final
class SmsgCipher:
    """Seals and opens SMSG frames for one pair of nodes.

    Derive it once per connection from the shared secret; it is immutable and
    safe to share between threads. Inputs of 64 KiB or more are processed with
    the GIL released.
    """

    def __new__(cls, shared_secret: bytes) -> SmsgCipher:
        """Raises :class:`InvalidKeyError` unless the secret is 32 bytes."""

    def seal(
        self,
        message_json: bytes | bytearray | str,
        *,
        nonce: bytes | None = None,
        timestamp: int | None = None,
    ) -> bytes:
        """Seal one transport Message JSON into a frame.

        ``nonce`` (24 bytes, random by default) and ``timestamp`` (UNIX seconds
        of the envelope, now by default) are for tests and vectors only.
        Raises :class:`SealError` for text that is not valid UTF-8 and
        ``ValueError`` for a nonce that is not 24 bytes.
        """

    def seal_marked(
        self,
        dedup: Deduplicator,
        message_id: str,
        message_json: bytes | bytearray | str,
        *,
        now: float | None = None,
        nonce: bytes | None = None,
        timestamp: int | None = None,
    ) -> bytes:
        """Seal ``message_json`` and ``dedup.mark(message_id, now)``, in one call.

        The result is what :meth:`seal` returns, and the table afterwards is what
        :meth:`Deduplicator.mark` leaves: a reflected copy of the message is then
        refused from every sender. The frame is sealed first, so when sealing
        raises (as :meth:`seal` does) nothing is marked. ``message_id`` must be
        the message's ``id``; it is not read from the JSON. ``now`` as for
        :meth:`Deduplicator.mark`; ``nonce`` and ``timestamp`` as for :meth:`seal`
        (tests and vectors only).
        """

    def open(self, frame: bytes | bytearray) -> bytes:
        """Open a frame and return the transport Message JSON it carries.

        Raises a subclass of :class:`SmsgError` for anything a peer could send
        wrong; :class:`AuthenticationFailedError` says nothing more than that.
        """

def take_binary_frames(data: bytes | bytearray | memoryview, masked: bool, max_size: int) -> tuple[list[bytes], int, bool]:
    """The receive fast path of ``smsgnet.wire`` (RFC 6455 §5.2): the whole,
    final, unfragmented BINARY frames at the start of ``data``, unmasked into
    new bytes objects, in one call for every frame of a read.

    ``masked``: the mask bit every frame must have (a server reads masked
    frames, a client unmasked ones); a frame longer than ``max_size`` is not
    taken. Returns ``(payloads, consumed, other)``: the first ``consumed`` bytes
    were taken; ``other`` is True when a frame the fast path does not take
    (control, text, fragment, reserved bits, the wrong mask bit, too long)
    starts there, False when the data ends there or inside a frame. Nothing
    is kept: the payloads are copies, ``data`` may be reused at once.
    """

def seal_for_all(ciphers: list[SmsgCipher], message_json: bytes | bytearray | str) -> list[bytes]:
    """Seal one message for several peers in one call: frame ``i`` is what
    ``ciphers[i].seal(message_json)`` would return, each with its own fresh nonce.

    The envelope is escaped once for all of them, and the GIL is released when
    the message size times ``len(ciphers)`` is 64 KiB or more. Raises as
    :meth:`SmsgCipher.seal` does, before any frame is made; an empty list
    gives ``[]``. Mark the message ID once (:meth:`Deduplicator.mark`), not per peer.
    """

# ---------------------------------------------------------------------------
# Per-connection state

@final
class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` tokens per second.

    Time going backwards refills nothing. Raises ``ValueError`` for ``burst``
    0 or a negative or non-finite ``rate``.
    """

    def __new__(cls, burst: int, rate: float) -> TokenBucket: ...
    def allow(self, now: float | None = None) -> bool:
        """Take one token; False when the bucket is empty."""

    def tokens(self, now: float | None = None) -> float:
        """Tokens available at ``now`` (refills first, takes nothing)."""

    @property
    def burst(self) -> int: ...
    @property
    def rate(self) -> float: ...

@final
class Deduplicator:
    """The replay table: message IDs per sender, each remembered for ``ttl`` seconds.

    Theory of operation: ``rust/dedup.rs``. An entry is the pair (sender, ID),
    so the same ID from two senders is delivered from both; IDs this node
    sealed (:meth:`mark`) are refused from every sender. Memory is bounded by
    ``per_peer`` IDs per sender, ``max_entries`` IDs over all senders and
    ``max_peers`` senders (``per_peer`` and ``max_peers`` default to
    ``max_entries``); IDs longer than 64 bytes are stored as their SHA-256.

    A sender at its quota evicts its own oldest ID; a full table evicts the
    oldest ID of all. An ID evicted while live raises its sender's *horizon*
    (the evicted message's ``ts``): the receive step then refuses that sender's
    frames not newer than it, so an evicted ID still cannot be replayed, and
    no sender's traffic moves another sender's horizon. Raises ``ValueError``
    for a non-positive or non-finite ``ttl`` or a limit below 1.
    """

    def __new__(
        cls, ttl: float, max_entries: int, *, per_peer: int | None = None, max_peers: int | None = None
    ) -> Deduplicator: ...
    def check_and_mark(self, message_id: str, now: float | None = None, *, sender: str = "") -> bool:
        """True the first time ``message_id`` comes from ``sender`` within the TTL (and marks it).

        False for a duplicate from the same sender and for an ID this node sealed.
        No horizon applies here (that needs the message's ``ts``; see :class:`FrameReceiver`).
        """

    def mark(self, message_id: str, now: float | None = None) -> None:
        """Remember ``message_id`` as sealed by this node: refused from every sender for the TTL.

        Call it for every message sent, so a reflected copy is dropped as a duplicate.
        """

    def contains(self, message_id: str, now: float | None = None, *, sender: str | None = None) -> bool:
        """True when ``message_id`` is remembered and live: sealed by this node, or
        received from ``sender`` (from any sender when None). Marks nothing."""

    def sweep(self, now: float | None = None) -> int:
        """Remove every expired ID and free idle senders; returns how many IDs were removed.

        Call it periodically (``dedup_sweep_interval``); checks only remove a few
        expired IDs each.
        """

    def len(self) -> int:
        """Number of IDs held, including expired ones not yet swept."""

    def __len__(self) -> int: ...
    def horizon(self, sender: str | None, now: float | None = None) -> float | None:
        """The ``ts`` that ``sender``'s frames must be later than (None: no horizon).

        ``sender=None`` gives the horizon of this node's own evicted IDs, which
        applies to frames whose ``from`` is this node.
        """

    def to_bytes(self, now: float | None = None) -> bytes:
        """Every live ID, horizon and the floor, in a versioned format ending in a SHA-256.

        Bounded by the limits (at most 91 bytes per ID, 91 per sender). Write it with
        :func:`smsgnet.replay.save_table` (atomic, fsynced).
        """

    @staticmethod
    def from_bytes(
        data: bytes,
        ttl: float,
        max_entries: int,
        *,
        per_peer: int | None = None,
        max_peers: int | None = None,
        now: float | None = None,
    ) -> Deduplicator:
        """A table saved by :meth:`to_bytes`, rebuilt under the limits given here.

        IDs expired at ``now`` are dropped; IDs beyond the limits are evicted
        oldest first (raising horizons as usual). Raises ``ValueError`` when the
        data is truncated, corrupt (SHA-256 mismatch) or of another version;
        nothing of it is used then.
        """

    @property
    def ttl(self) -> float: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def per_peer(self) -> int: ...
    @property
    def max_peers(self) -> int: ...
    @property
    def evicted(self) -> int:
        """How many live IDs were pushed out because a limit was reached."""

    @property
    def forgotten(self) -> int:
        """How many senders were dropped with a live horizon (more than ``max_peers`` senders)."""

    @property
    def partitions(self) -> int:
        """Senders with a partition in the table."""

    @property
    def floor(self) -> float | None:
        """Frames whose ``ts`` is earlier than this are refused as ``"stale"`` (None: no floor).

        Set after an unclean restart (see :mod:`smsgnet.replay`); raises
        ``ValueError`` for a non-finite value.
        """

    @floor.setter
    def floor(self, value: float | None) -> None: ...

@final
class FrameReceiver:
    """The receive step of one connection, one call per frame:
    token bucket → open → sender and ``ts`` checks → replay table.

    ``bucket`` and ``dedup`` are shared objects (one replay table serves every
    receiver). ``max_age``/``max_future`` bound the message ``ts`` relative to
    ``now``; keep ``max_age`` at most the dedup TTL. With ``peer_id`` set, a
    message whose non-empty ``from`` differs is dropped. ``sender`` is the
    replay table partition of this connection: pass the authenticated peer's
    node ID (default: ``peer_id``, else ``""``, one partition shared by every
    receiver without a sender, as before partitions existed). ``local_id`` is
    this node's ID: a frame whose ``from`` is this node is also checked
    against the horizon of our own evicted IDs. Raises ``ValueError`` for
    ``max_age`` <= 0 or ``max_future`` < 0 (or non-finite).
    """

    def __new__(
        cls,
        cipher: SmsgCipher,
        dedup: Deduplicator,
        *,
        bucket: TokenBucket | None = None,
        max_age: float = 300.0,
        max_future: float = 60.0,
        peer_id: str | None = None,
        sender: str | None = None,
        local_id: str | None = None,
    ) -> FrameReceiver: ...
    def receive(self, frame: bytes | bytearray, now: float | None = None) -> tuple[str, bytes | None]:
        """``("ok", message_json)`` or ``(reason, None)`` with a reason from :func:`drop_reasons`.

        ``"stale"`` covers a ``ts`` outside the window, before the table's
        floor, or not newer than the sender's horizon. Never raises for
        anything the peer sends; :attr:`last_error` has the detail.
        """

    def receive_message(
        self, frame: bytes | bytearray, now: float | None = None
    ) -> tuple[str, tuple[str, str, str, str, str, str, bytes | None] | bytes | None]:
        """:meth:`receive`, handing over the Message's fields where the fast
        parser read them and the payload is at most 16 KiB: ``("ok", (type, from, to, id, ts, replyTo, payload
        JSON or None))`` with ``""`` for a missing or null field (only the
        payload is left to parse, :meth:`smsgnet.Message.from_fields`);
        otherwise ``("ok", message_json)``, or ``(reason, None)`` as :meth:`receive`."""

    def receive_messages(
        self, frames: list[bytes], now: float | None = None
    ) -> list[tuple[str, tuple[str, str, str, str, str, str, bytes | None] | bytes | str, bool]]:
        """The receive step for every frame of one read, in order, in one call:
        ``(reason, value, fatal)`` per frame, where value is what
        :meth:`receive_message` hands over for an accepted frame and the
        detail of a dropped one; fatal is always False on 1.0."""

    @property
    def last_error(self) -> str:
        """Detail of the last frame's drop ("" when it was accepted, rate-limited or a duplicate)."""

    @property
    def peer_id(self) -> str | None: ...
    @property
    def sender(self) -> str:
        """The replay table partition of this receiver."""

    @property
    def local_id(self) -> str | None: ...

def drop_reasons() -> list[str]:
    """Every reason :meth:`FrameReceiver.receive` can return besides ``"ok"``."""

def parse_timestamp(ts: str) -> float | None:
    """UNIX seconds of an RFC 3339 ``ts`` (``Z`` or ``±hh:mm``, any fraction), or None.

    The one parser of smsgnet (rules in ``rust/rfc3339.rs``): years 0001-9999,
    seconds 00-59 (no leap second), offsets up to ±23:59, fraction digits past
    the ninth ignored.
    """

def parse_timestamp_fields(ts: str) -> tuple[int, int, int, int, int, int, int, int] | None:
    """The same parser, giving the fields as written, or None:
    ``(year, month, day, hour, minute, second, nanosecond, utc_offset_seconds)``.

    :func:`smsgnet.parse_timestamp` builds its datetime from these.
    """

def format_timestamp(ns: int | None = None, *, utc_offset_minutes: int = 0) -> str:
    """Go's ``time.RFC3339Nano`` text of ``ns`` (UNIX nanoseconds; default:
    now) in the zone ``utc_offset_minutes`` east of UTC: ``Z`` or ``±hh:mm``,
    the fraction without trailing zeros (none when zero). Raises
    :class:`~smsgnet.ConfigError` for an offset beyond ±23:59."""

def new_message_id() -> str:
    """A fresh random UUID v4 in canonical lower-case text, from a per-thread
    pool of OS randomness that a forked child refills (``rust/random.rs``)."""

# ---------------------------------------------------------------------------
# Protocol 2.0 (rust/noise.rs; docs/protocol.md "Protocol 2.0")

def noise_prologue(hello: bytes, ack: bytes) -> bytes:
    """The prologue of a 2.0 handshake: ``"smsgnet/2.0\\n"``, then the hello and
    the ack as they crossed the wire, each behind its length (u32 big-endian)."""

def noise_sealed_len(length: int) -> int:
    """Length of the 2.0 frame that seals a message of ``length`` bytes."""

@final
class NoiseHandshake:
    """One side of the 2.0 handshake, ``Noise_IK_25519_AESGCM_SHA256``
    with the node's identity key as the static key. The acceptor (WebSocket
    server) is the Noise initiator: it knows the dialler's key from the hello.

    Failures (a message that does not verify, a payload where none belongs)
    raise :class:`PeerAuthenticationError`; a key of the wrong length
    :class:`InvalidKeyError`."""

    @staticmethod
    def acceptor(
        private_key: bytes, dialler_public: bytes, prologue: bytes, *, ephemeral: bytes | None = None
    ) -> NoiseHandshake:
        """The acceptor's side; it writes message 1. ``ephemeral`` is for test vectors only."""

    @staticmethod
    def dialler(private_key: bytes, prologue: bytes, *, ephemeral: bytes | None = None) -> NoiseHandshake:
        """The dialler's side; it reads message 1 and writes message 2."""

    def write_message(self) -> bytes:
        """The next handshake message (empty payload)."""

    def read_message(self, message: bytes) -> None:
        """Read the peer's handshake message."""

    @property
    def finished(self) -> bool: ...
    @property
    def remote_public(self) -> bytes | None:
        """The peer's static key (the dialler learns it from message 1)."""

    @property
    def handshake_hash(self) -> bytes | None:
        """Noise's handshake hash (None once turned into a link)."""

    def into_link(
        self,
        *,
        rekey_interval: int = 0,
        bucket: TokenBucket | None = None,
        dedup: Deduplicator | None = None,
        sender: str | None = None,
        peer_id: str | None = None,
    ) -> NoiseLink:
        """The link of a finished handshake; this object is spent afterwards.
        ``rekey_interval``: messages sent between two rekeys (0: never). With
        ``dedup``, :meth:`NoiseLink.receive` drops a message whose ID ``sender``
        (the peer's node ID) already sent (``"duplicate"``); with ``peer_id``
        (strict sender), one whose non-empty ``from`` is another node
        (``"wrong_sender"``)."""

@final
class NoiseLink:
    """The record layer of one 2.0 link (counter nonces). Sealing and opening
    may run on two threads at once; frames must be written in the order they
    were sealed. After a frame fails to open, :attr:`broken` is True and no
    later frame opens."""

    def seal(self, message_json: bytes | bytearray | str) -> bytes:
        """One encoded Message as one frame of records."""

    def open(self, frame: bytes | bytearray) -> bytes:
        """The encoded Message of one frame. Raises :class:`AuthenticationFailedError`,
        :class:`FrameTruncatedError` or :class:`InvalidRecordError`."""

    def receive(self, frame: bytes | bytearray, now: float | None = None) -> tuple[str, bytes | None]:
        """The receive step: open, then the token bucket, then the duplicate
        check. ``("ok", message_json)`` or ``(reason, None)``; never raises for
        anything the peer sends."""

    def receive_message(
        self, frame: bytes | bytearray, now: float | None = None
    ) -> tuple[str, tuple[str, str, str, str, str, str, bytes | None] | bytes | None]:
        """:meth:`receive`, handing over the Message's fields where its head
        was read without escapes and the payload is at most 16 KiB: ``("ok", (type, from, to, id, ts, replyTo,
        payload JSON or None))`` with ``""`` for a missing or null field (so
        only the payload is left to parse, :meth:`smsgnet.Message.from_fields`);
        otherwise ``("ok", message_json)``, or ``(reason, None)`` as :meth:`receive`."""

    def receive_messages(
        self, frames: list[bytes], now: float | None = None
    ) -> list[tuple[str, tuple[str, str, str, str, str, str, bytes | None] | bytes | str, bool]]:
        """The receive step for every frame of one read, in order, in one call:
        ``(reason, value, fatal)`` per frame, where value is what
        :meth:`receive_message` hands over for an accepted frame and the
        detail of a dropped one; fatal is True for a frame that did not open (the link is broken from there on)."""

    @property
    def last_error(self) -> str:
        """Detail of the last frame that did not open."""

    @property
    def broken(self) -> bool: ...
    @property
    def rekeys(self) -> tuple[int, int]:
        """(sending-key rekeys, receiving-key rekeys) so far."""

    @property
    def rekey_interval(self) -> int: ...
