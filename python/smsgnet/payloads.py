"""Typed shapes of the built-in payloads (PROTOCOL.md §5–6).

No ``from __future__ import annotations`` here: on Python 3.11 ``NotRequired``
is only recognised at runtime in evaluated annotations.
"""

from typing import NotRequired, TypedDict

__all__ = [
    "PingPayload",
    "PongPayload",
    "DisconnectPayload",
    "ErrorPayload",
    "HandshakePayload",
    "HandshakeAckPayload",
]


class PingPayload(TypedDict):
    """``ping``: when it was sent, UNIX milliseconds."""

    sentAt: int


class PongPayload(TypedDict):
    """``pong``: the ping's ``sentAt`` echoed, and when it arrived."""

    sentAt: int
    receivedAt: int


class DisconnectPayload(TypedDict):
    """``disconnect``: why, and a :class:`DisconnectCode`."""

    reason: str
    code: int


class ErrorPayload(TypedDict):
    """``error``: an :class:`ErrorCode`, a message, optional details."""

    code: int
    message: str
    details: NotRequired[str]


class HandshakePayload(TypedDict):
    """``handshake`` (clear text): identity, base64 challenge, protocol version."""

    identity: dict[str, str]
    challenge: str
    version: str


class HandshakeAckPayload(TypedDict):
    """``handshake_ack`` (clear text): identity, base64 HMAC, verdict, reason on refusal."""

    identity: dict[str, str]
    challengeResponse: NotRequired[str]
    accepted: bool
    reason: NotRequired[str]
