"""The handshake (PROTOCOL.md §5), sans I/O: bytes in, bytes and results out.

Theory of operation::

    initiator                                  responder
    ---------                                  ---------
    Initiator.hello()  ── handshake (text) ──▶  Responder.receive_hello()
                                                 version?  id == hash(key)?  allowed?
                       ◀── handshake_ack ────   → (ack bytes, HandshakeResult | None)
    Initiator.receive_ack()
      accepted?  id == hash(key)?  expected key?  HMAC(challenge) valid?
      → HandshakeResult

After this both sides hold the same shared secret; every later frame is an
SMSG frame. The responder has *not* yet seen proof that the initiator holds its
private key: that proof is the initiator's first frame that decrypts. The
transport treats an inbound connection as unproven until then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

from smsgnet import _core
from smsgnet.exceptions import (
    HandshakeRefused,
    InvalidKeyError,
    InvalidMessageError,
    PeerAuthenticationError,
    ProtocolError,
)
from smsgnet.identity import NodeIdentity, NodeManager
from smsgnet.message import Message, MessageType, b64decode, b64encode
from smsgnet.registry import PeerRegistry

__all__ = ["PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "HandshakeResult", "Initiator", "Responder"]

PROTOCOL_VERSION = "1.0"
SUPPORTED_VERSIONS = ("1.0",)
CHALLENGE_LEN = 32
MAX_CHALLENGE_LEN = 1024

REASON_NOT_AUTHORIZED = "peer not authorized"
REASON_ID_MISMATCH = "node ID does not match public key"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a completed handshake established."""

    peer: NodeIdentity
    peer_public_key: bytes
    shared_secret: bytes


def _parse(data: bytes | str, expected: str) -> tuple[Message, dict[str, Any]]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(f"{expected} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{expected} is not a JSON object")
    try:
        msg = Message.from_dict(obj)
    except InvalidMessageError as e:
        raise ProtocolError(f"{expected}: {e}") from None
    if msg.type != expected:
        raise ProtocolError(f"expected {expected}, got {msg.type!r}")
    if not isinstance(msg.payload, dict):
        raise ProtocolError(f"{expected} payload is not a JSON object")
    return msg, msg.payload


def _identity(payload: dict[str, Any], what: str) -> NodeIdentity:
    try:
        return NodeIdentity.from_dict(payload.get("identity"))
    except ValueError as e:
        raise ProtocolError(f"{what} identity: {e}") from None


class Initiator:
    """The connecting side. Call :meth:`hello`, send it, feed the answer to :meth:`receive_ack`.

    ``expected_public_key`` (raw bytes) makes the initiator refuse a responder
    that presents any other key; ``expected_id`` the same for the node ID.
    ``challenge``, ``message_id`` and ``ts`` exist for tests.
    """

    def __init__(
        self,
        node: NodeManager,
        *,
        expected_public_key: bytes | None = None,
        expected_id: str | None = None,
        challenge: bytes | None = None,
        message_id: str | None = None,
        ts: str | None = None,
    ) -> None:
        self.node = node
        self.expected_public_key = expected_public_key
        self.expected_id = expected_id
        self.challenge = os.urandom(CHALLENGE_LEN) if challenge is None else challenge
        self._message = Message(
            type=MessageType.HANDSHAKE,
            payload={
                "identity": node.identity.to_dict(),
                "challenge": b64encode(self.challenge),
                "version": PROTOCOL_VERSION,
            },
            from_=node.node_id,
            to="",
        )
        if message_id is not None:
            self._message.id = message_id
        if ts is not None:
            self._message.ts = ts

    def hello(self) -> bytes:
        """The handshake message (send as a TEXT frame)."""
        return self._message.to_json()

    def receive_ack(self, data: bytes | str) -> HandshakeResult:
        """Check the responder's answer.

        Raises :class:`HandshakeRefused` (with the peer's reason),
        :class:`PeerAuthenticationError` (wrong key, wrong ID, bad HMAC), or
        :class:`ProtocolError` (not a handshake_ack).
        """
        msg, payload = _parse(data, MessageType.HANDSHAKE_ACK)
        if payload.get("accepted") is not True:
            reason = payload.get("reason")
            raise HandshakeRefused(reason if isinstance(reason, str) and reason else "no reason given")
        identity = _identity(payload, "handshake_ack")
        try:
            public = identity.verify()
        except InvalidKeyError as e:
            raise PeerAuthenticationError(f"responder identity: {e}") from None
        if self.expected_public_key is not None and public != self.expected_public_key:
            raise PeerAuthenticationError("responder presented a different public key than expected")
        if self.expected_id and identity.id != self.expected_id:
            raise PeerAuthenticationError(f"responder is {identity.id}, expected {self.expected_id}")
        try:
            secret = self.node.derive_shared_secret(public)
        except InvalidKeyError as e:
            raise PeerAuthenticationError(f"responder key: {e}") from None
        response = payload.get("challengeResponse")
        try:
            response_bytes = b64decode(response) if isinstance(response, str) else b""
        except ValueError:
            response_bytes = b""
        if not _core.verify_challenge(self.challenge, response_bytes, secret):
            raise PeerAuthenticationError("challenge response did not verify")
        return HandshakeResult(identity, public, secret)


class Responder:
    """The accepting side: :meth:`receive_hello` returns the ack to send and,
    when accepted, the result. A refusal's reason is in :attr:`refusal`."""

    def __init__(self, node: NodeManager, registry: PeerRegistry) -> None:
        self.node = node
        self.registry = registry
        self.refusal: str | None = None
        self.peer: NodeIdentity | None = None

    def _ack(self, to: str, payload: dict[str, Any]) -> bytes:
        return Message(type=MessageType.HANDSHAKE_ACK, payload=payload, from_=self.node.node_id, to=to).to_json()

    def _refuse(self, to: str, reason: str) -> tuple[bytes, None]:
        self.refusal = reason
        return self._ack(to, {"identity": self.node.identity.to_dict(), "accepted": False, "reason": reason}), None

    def receive_hello(self, data: bytes | str) -> tuple[bytes, HandshakeResult | None]:
        """Answer a handshake. Raises :class:`ProtocolError` when it is not one
        (the caller then closes without answering)."""
        msg, payload = _parse(data, MessageType.HANDSHAKE)
        identity = _identity(payload, "handshake")
        self.peer = identity
        version = payload.get("version")
        if version not in SUPPORTED_VERSIONS:
            return self._refuse(
                identity.id,
                f"incompatible protocol version {version if isinstance(version, str) else ''}, "
                f"supported: [{', '.join(SUPPORTED_VERSIONS)}]",
            )
        try:
            public = identity.verify()
        except InvalidKeyError as e:
            return self._refuse(identity.id, REASON_ID_MISMATCH if "does not match" in str(e) else str(e))
        if public == self.node.public_key:
            return self._refuse(identity.id, "cannot connect to self")
        if not self.registry.is_allowed(identity.id, identity.public_key):
            return self._refuse(identity.id, REASON_NOT_AUTHORIZED)
        challenge_text = payload.get("challenge")
        try:
            challenge = b64decode(challenge_text) if isinstance(challenge_text, str) else b""
        except ValueError:
            challenge = b""
        if not 1 <= len(challenge) <= MAX_CHALLENGE_LEN:
            return self._refuse(identity.id, "invalid challenge")
        try:
            secret = self.node.derive_shared_secret(public)
        except InvalidKeyError as e:
            return self._refuse(identity.id, f"invalid public key: {e}")
        ack = self._ack(
            identity.id,
            {
                "identity": self.node.identity.to_dict(),
                "challengeResponse": b64encode(_core.sign_challenge(challenge, secret)),
                "accepted": True,
            },
        )
        return ack, HandshakeResult(identity, public, secret)
