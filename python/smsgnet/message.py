"""The transport Message (PROTOCOL.md §3) and the built-in payloads (§6).

A :class:`Message` serialises to exactly the JSON the reference nodes write:
keys in the order ``id, type, from, to, ts, payload, replyTo``, compact, no HTML
escaping, ``replyTo`` left out when empty. Encoding is one ``orjson.dumps``;
decoding is one ``orjson.loads``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from smsgnet import _core
from smsgnet.exceptions import InvalidMessageError, SealError
from smsgnet.payloads import (
    DisconnectPayload,
    ErrorPayload,
    HandshakeAckPayload,
    HandshakePayload,
    PingPayload,
    PongPayload,
)

__all__ = [
    "Message",
    "PingPayload",
    "PongPayload",
    "DisconnectPayload",
    "ErrorPayload",
    "HandshakePayload",
    "HandshakeAckPayload",
    "MessageType",
    "DisconnectCode",
    "ErrorCode",
    "format_timestamp",
    "parse_timestamp",
    "b64encode",
    "b64decode",
]


class MessageType(StrEnum):
    """Message types the reference nodes use. Any other string passes through too."""

    HANDSHAKE = "handshake"
    HANDSHAKE_ACK = "handshake_ack"
    PING = "ping"
    PONG = "pong"
    DISCONNECT = "disconnect"
    GET_STATS = "get_stats"
    STATS = "stats"
    START_MINER = "start_miner"
    STOP_MINER = "stop_miner"
    MINER_ACK = "miner_ack"
    DEPLOY = "deploy"
    DEPLOY_ACK = "deploy_ack"
    GET_LOGS = "get_logs"
    LOGS = "logs"
    ERROR = "error"


#: Types the transport answers itself (they reach the handler only when
#: ``TransportConfig.deliver_control_messages`` is set).
CONTROL_TYPES = frozenset({"ping", "pong", "disconnect", "handshake", "handshake_ack"})


class DisconnectCode(IntEnum):
    """Codes carried by a ``disconnect`` message."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    TIMEOUT = 1003
    SHUTDOWN = 1004


class ErrorCode(IntEnum):
    """Codes carried by an ``error`` message."""

    UNKNOWN = 1000
    INVALID_MESSAGE = 1001
    UNAUTHORIZED = 1002
    NOT_FOUND = 1003
    OPERATION_FAILED = 1004
    TIMEOUT = 1005


def format_timestamp(ns: int | None = None, *, utc_offset_minutes: int = 0) -> str:
    """RFC 3339 as Go's ``time.RFC3339Nano`` prints it.

    Fractional seconds lose their trailing zeros (no fraction at all when zero);
    the zone is ``Z`` or ``±hh:mm`` (``utc_offset_minutes`` within ±23:59,
    else :class:`~smsgnet.ConfigError`). ``ns`` is UNIX time in nanoseconds
    (default: now). One native call (``rust/rfc3339.rs``, beside the parser).
    """
    return _core.format_timestamp(ns, utc_offset_minutes=utc_offset_minutes)


def parse_timestamp(ts: str) -> _dt.datetime:
    """Parse an RFC 3339 ``ts`` (any number of fractional digits) into an aware datetime.

    The same parser as the native receive step (``_core.parse_timestamp_fields``,
    rules in ``rust/rfc3339.rs``): both accept exactly the same texts. Years
    0001-9999, no leap second, offsets up to ±23:59. Precision beyond
    microseconds is truncated. Raises :class:`ValueError`.
    """
    fields = _core.parse_timestamp_fields(ts) if isinstance(ts, str) else None
    if fields is None:
        raise ValueError(f"not an RFC 3339 timestamp: {ts!r}")
    year, month, day, hour, minute, second, nanosecond, offset = fields
    tz = _dt.timezone.utc if offset == 0 else _dt.timezone(_dt.timedelta(seconds=offset))
    return _dt.datetime(year, month, day, hour, minute, second, nanosecond // 1000, tz)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding: how byte strings travel inside payloads."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard base64 (padding required; URL-safe alphabet refused)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as e:
        raise ValueError(f"invalid base64: {e}") from None


#: A fresh message ID: a random UUID v4 in its canonical text form, from a
#: per-thread pool of OS randomness that a forked child refills
#: (``rust/random.rs``): one native call per ID.
new_message_id = _core.new_message_id


_FIELDS = ("id", "type", "from", "to", "ts")


@dataclass(slots=True)
class Message:
    """One transport message.

    ``payload`` is any JSON-serialisable value (``None`` encodes as ``null``),
    or an ``orjson.Fragment`` holding raw JSON bytes that are embedded as they
    are. ``from_`` is the JSON key ``from``; ``reply_to`` is ``replyTo``.
    """

    type: str
    payload: Any = None
    from_: str = ""
    to: str = ""
    id: str = field(default_factory=_core.new_message_id)
    ts: str = field(default_factory=_core.format_timestamp)
    reply_to: str = ""

    @classmethod
    def new(cls, type: str, from_: str, to: str = "", payload: Any = None) -> Message:
        """A new message with a fresh UUID v4 and the current time."""
        return cls(type if type.__class__ is str else str(type), payload, from_, to)

    def reply(self, type: str, payload: Any = None, *, from_: str | None = None) -> Message:
        """A new message answering this one: ``to`` is our sender, ``replyTo`` our id.

        ``from_`` defaults to the original's ``to`` (empty for a broadcast);
        sending a message with an empty ``from_`` fills in this node's ID.
        """
        return Message(type if type.__class__ is str else str(type), payload,
                       self.to if from_ is None else from_, self.from_,
                       _core.new_message_id(), _core.format_timestamp(), self.id)

    # -- JSON ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The message as a dict in wire key order."""
        d: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "from": self.from_,
            "to": self.to,
            "ts": self.ts,
            "payload": self.payload,
        }
        if self.reply_to:
            d["replyTo"] = self.reply_to
        return d

    def to_json(self) -> bytes:
        """Compact JSON bytes exactly as the reference writes them.

        orjson already leaves ``<``, ``>``, ``&`` unescaped; U+2028 and U+2029
        are then written as ``\\u2028``/``\\u2029`` as Go does.
        """
        if not self.type or not isinstance(self.type, str):
            raise SealError(f"message type must be a non-empty string, got {self.type!r}")
        try:
            out = orjson.dumps(self.to_dict())
        except orjson.JSONEncodeError as e:
            raise SealError(f"payload of a {self.type!r} message is not JSON-serialisable: {e}") from None
        if b"\xe2" in out and b"\xe2\x80" in out:  # one-byte search first: much faster
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out

    @classmethod
    def from_json(cls, data: bytes | str) -> Message:
        """Parse a Message; keys may come in any order. Raises InvalidMessageError."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InvalidMessageError(f"message is not JSON: {e}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_fields(cls, fields: tuple[str, str, str, str, str, str, bytes | None]) -> Message:
        """Build a Message from what the native receive step read of it
        (``receive_message`` of ``_core.FrameReceiver`` and ``_core.NoiseLink``):
        ``(type, from, to, id, ts, replyTo, payload JSON or None)``, only the
        payload left to parse. Raises InvalidMessageError like :meth:`from_json`."""
        type_, from_, to, id_, ts, reply_to, payload = fields
        if payload is None:
            return cls(type_, None, from_, to, id_, ts, reply_to)
        try:
            return cls(type_, orjson.loads(payload), from_, to, id_, ts, reply_to)
        except orjson.JSONDecodeError as e:
            raise InvalidMessageError(f"message is not JSON: {e}") from None

    @classmethod
    def from_dict(cls, obj: Any) -> Message:
        """Build a Message from a parsed JSON object. Raises InvalidMessageError."""
        if type(obj) is not dict and not isinstance(obj, dict):
            raise InvalidMessageError("message is not a JSON object")
        get = obj.get
        # the usual message: every field a string (one test for all six)
        id_, type_, from_, to, ts, reply_to = get("id"), get("type"), get("from"), get("to"), get("ts"), get("replyTo")
        if type(id_) is type(type_) is type(from_) is type(to) is type(ts) is str and (
                reply_to is None or type(reply_to) is str):
            return cls(type_, get("payload"), from_, to, id_, ts, reply_to or "")  # type: ignore[arg-type]
        values = []
        for key in _FIELDS:
            v = get(key)
            if v is None:
                v = ""
            elif not isinstance(v, str):
                raise InvalidMessageError(f"message field {key!r} must be a string")
            values.append(v)
        reply_to = get("replyTo")
        if reply_to is None:
            reply_to = ""
        elif not isinstance(reply_to, str):
            raise InvalidMessageError("message field 'replyTo' must be a string")
        return cls(
            id=values[0],
            type=values[1],
            from_=values[2],
            to=values[3],
            ts=values[4],
            payload=get("payload"),
            reply_to=reply_to,
        )

    # -- helpers --------------------------------------------------------------

    @property
    def timestamp(self) -> _dt.datetime:
        """``ts`` as an aware datetime (raises ValueError if it does not parse)."""
        return parse_timestamp(self.ts)

    def payload_dict(self) -> dict[str, Any]:
        """The payload as a dict; raises InvalidMessageError if it is not an object."""
        p = self.payload
        if isinstance(p, orjson.Fragment):
            p = orjson.loads(orjson.dumps(p))
        if not isinstance(p, Mapping):
            raise InvalidMessageError(f"{self.type} payload must be a JSON object")
        return dict(p)

    # -- built-in payloads ------------------------------------------------------

    @classmethod
    def ping(cls, from_: str, to: str, sent_at_ms: int | None = None) -> Message:
        """``ping`` with ``{"sentAt": unix ms}``."""
        if sent_at_ms is None:
            sent_at_ms = time.time_ns() // 1_000_000
        return cls(type="ping", payload={"sentAt": sent_at_ms}, from_=from_, to=to)

    def pong(self, received_at_ms: int | None = None) -> Message:
        """The ``pong`` answering this ping: echoes ``sentAt``, adds ``receivedAt``."""
        if received_at_ms is None:
            received_at_ms = time.time_ns() // 1_000_000
        sent_at = self.payload.get("sentAt", 0) if isinstance(self.payload, dict) else 0
        return self.reply("pong", {"sentAt": sent_at, "receivedAt": received_at_ms})

    @classmethod
    def disconnect(cls, from_: str, to: str, reason: str, code: int) -> Message:
        """``disconnect`` with ``{"reason", "code"}``."""
        return cls(type="disconnect", payload={"reason": reason, "code": int(code)}, from_=from_, to=to)

    def error_reply(self, code: int, message: str, details: str = "") -> Message:
        """An ``error`` answering this message: ``{"code", "message", "details"?}``."""
        payload: dict[str, Any] = {"code": int(code), "message": message}
        if details:
            payload["details"] = details
        return self.reply("error", payload)
