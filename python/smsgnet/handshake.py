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
SMSG frame.

**Protocol 2.0** (``docs/protocol.md``). An initiator that speaks 2.0 adds
``"protocols": ["2.0"]`` to its hello (the Go nodes ignore unknown fields and
answer plain 1.0). A responder that speaks 2.0 answers ``"protocol": "2.0"``
in its ack, and the Noise handshake of :class:`NoiseStage` follows: the
acceptor sends message 1 right after its ack, the dialler answers with
message 2, and the link is proven on both sides. Without the offer, or without
the answer, the link runs 1.0 — unless 1.0 is refused: ``min_protocol="2.0"``,
or a peer the registry has seen on 2.0 (:class:`DowngradeRefused`).

Limits: before anything else looks at a peer's identity, both sides check it
against :data:`smsgnet.identity.IDENTITY_LIMITS` and the control character rule
(:meth:`NodeIdentity.check_fields`). The responder refuses with the reason
(``identity field name too long (max 256)``) and an empty ``to``, so nothing
oversized is echoed back; the initiator raises :class:`PeerAuthenticationError`.
Every peer-chosen string that reaches a refusal reason, an exception message
or :attr:`Responder.refusal` goes through :func:`smsgnet.logsafe.clip`
(escaped, at most :data:`REASON_LIMIT` characters plus a counter), so those
are safe to log; the responder's refusal is also ASCII and at most
:data:`REASON_LIMIT` bytes (it fits a WebSocket close reason). Valid
handshakes are unchanged byte for byte. The responder has *not* yet seen proof that the initiator holds its
private key: that proof is the initiator's first frame that decrypts. The
transport treats an inbound connection as unproven until then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import orjson

from smsgnet import _core
from smsgnet.exceptions import (
    DowngradeRefused,
    HandshakeRefused,
    IdentityMismatchError,
    InvalidKeyError,
    InvalidMessageError,
    PeerAuthenticationError,
    ProtocolError,
)
from smsgnet.identity import NodeIdentity, NodeManager
from smsgnet.logsafe import clip
from smsgnet.message import Message, MessageType, b64decode, b64encode
from smsgnet.registry import PeerRegistry

__all__ = ["PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "HandshakeResult", "Initiator", "Responder", "NoiseStage"]

PROTOCOL_VERSION = "1.0"
SUPPORTED_VERSIONS = ("1.0",)
CHALLENGE_LEN = 32
MAX_CHALLENGE_LEN = 1024

#: Characters of a refusal reason kept (ours and the peer's), before clip's counter.
REASON_LIMIT = 120
#: Characters of a peer's unsupported version quoted in the refusal.
VERSION_QUOTE_LIMIT = 32

REASON_NOT_AUTHORIZED = "peer not authorized"
REASON_DOWNGRADE = "protocol 2.0 required (this peer was seen on 2.0 before)"
REASON_MIN_PROTOCOL = "protocol 2.0 required (min_protocol)"
#: What a hello says to offer protocol 2.0, and an ack to accept it.
OFFER_FIELD = "protocols"
ANSWER_FIELD = "protocol"
REASON_ID_MISMATCH = "node ID does not match public key"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a completed handshake established."""

    peer: NodeIdentity
    peer_public_key: bytes
    shared_secret: bytes
    #: "1.0", or "2.0" when both sides agreed on it (the Noise step follows).
    protocol: str = "1.0"
    #: The hello and the ack exactly as they crossed the wire (2.0's prologue;
    #: emptied once the Noise step is done).
    hello: bytes = b""
    ack: bytes = b""
    #: Protocol 2.0: the finished Noise handshake the session's link is made from.
    noise: _core.NoiseHandshake | None = None


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
        raise ProtocolError(f"expected {expected}, got {clip(msg.type, 40)!r}")
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
        offer_protocol_2: bool = False,
        min_protocol: str = "1.0",
        registry: PeerRegistry | None = None,
    ) -> None:
        self.node = node
        self.expected_public_key = expected_public_key
        self.expected_id = expected_id
        self.challenge = os.urandom(CHALLENGE_LEN) if challenge is None else challenge
        self.offer_protocol_2 = offer_protocol_2
        self.min_protocol = min_protocol
        self.registry = registry
        payload: dict[str, Any] = {
            "identity": node.identity.to_dict(),
            "challenge": b64encode(self.challenge),
            "version": PROTOCOL_VERSION,
        }
        if offer_protocol_2:
            payload[OFFER_FIELD] = ["2.0"]
        self._message = Message(type=MessageType.HANDSHAKE, payload=payload, from_=node.node_id, to="")
        if message_id is not None:
            self._message.id = message_id
        if ts is not None:
            self._message.ts = ts
        self._hello: bytes | None = None

    def hello(self) -> bytes:
        """The handshake message (send as a TEXT frame)."""
        if self._hello is None:
            self._hello = self._message.to_json()
        return self._hello

    def receive_ack(self, data: bytes | str) -> HandshakeResult:
        """Check the responder's answer.

        Raises :class:`HandshakeRefused` (with the peer's reason, escaped and
        capped by :func:`~smsgnet.logsafe.clip`), :class:`PeerAuthenticationError`
        (an identity field too long or holding a control character, wrong key,
        wrong ID, bad HMAC), or
        :class:`ProtocolError` (not a handshake_ack).
        """
        msg, payload = _parse(data, MessageType.HANDSHAKE_ACK)
        if payload.get("accepted") is not True:
            reason = payload.get("reason")
            raise HandshakeRefused(clip(reason, REASON_LIMIT) if isinstance(reason, str) and reason
                                   else "no reason given")
        identity = _identity(payload, "handshake_ack")
        try:
            identity.check_fields()
        except ValueError as e:
            raise PeerAuthenticationError(f"responder identity: {e}") from None
        try:
            public = identity.verify()
        except InvalidKeyError as e:
            raise PeerAuthenticationError(f"responder identity: {e}") from None
        if self.expected_public_key is not None and public != self.expected_public_key:
            raise PeerAuthenticationError(f"responder presented a different public key: {b64encode(public)}, "
                                          f"expected {b64encode(self.expected_public_key)}")
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
        answer = payload.get(ANSWER_FIELD)
        if answer is None:
            protocol = "1.0"
            if self.min_protocol == "2.0":
                raise DowngradeRefused(f"{identity.id} answered protocol 1.0; min_protocol is 2.0")
            if self.registry is not None and self.registry.requires_protocol_2(identity.id):
                raise DowngradeRefused(f"{identity.id} answered protocol 1.0 but was seen on 2.0 before "
                                       "(a downgrade? PeerRegistry.forget_protocol allows 1.0 again)")
        elif answer == "2.0" and self.offer_protocol_2:
            protocol = "2.0"
        else:
            raise ProtocolError(f"handshake_ack answers protocol {clip(answer, VERSION_QUOTE_LIMIT)!r}, "
                                f"which was not offered")
        ack = data.encode() if isinstance(data, str) else bytes(data)
        return HandshakeResult(identity, public, secret, protocol, self.hello(), ack)


class Responder:
    """The accepting side: :meth:`receive_hello` returns the ack to send and,
    when accepted, the result. A refusal's reason is in :attr:`refusal`
    (safe to log: escaped, ASCII, at most ``REASON_LIMIT`` bytes); :attr:`peer` is the identity the peer
    presented, set only once it passed :meth:`NodeIdentity.check_fields`."""

    def __init__(self, node: NodeManager, registry: PeerRegistry, *, accept_protocol_2: bool = False,
                 min_protocol: str = "1.0") -> None:
        self.node = node
        self.registry = registry
        self.accept_protocol_2 = accept_protocol_2
        self.min_protocol = min_protocol
        self.refusal: str | None = None
        self.peer: NodeIdentity | None = None

    def _ack(self, to: str, payload: dict[str, Any]) -> bytes:
        return Message(type=MessageType.HANDSHAKE_ACK, payload=payload, from_=self.node.node_id, to=to).to_json()

    def _refuse(self, to: str, reason: str) -> tuple[bytes, None]:
        # Reasons are ours; any peer-chosen part was clip()ped where it was quoted.
        # ASCII and at most REASON_LIMIT bytes, so it also fits a WebSocket close
        # reason (123 bytes) whatever the peer put in it.
        reason = reason.encode("ascii", "backslashreplace")[:REASON_LIMIT].decode("ascii")
        self.refusal = reason
        return self._ack(to, {"identity": self.node.identity.to_dict(), "accepted": False, "reason": reason}), None

    def receive_hello(self, data: bytes | str) -> tuple[bytes, HandshakeResult | None]:
        """Answer a handshake. Raises :class:`ProtocolError` when it is not one
        (the caller then closes without answering). An identity beyond the
        field limits is refused with its reason, like any other refusal."""
        msg, payload = _parse(data, MessageType.HANDSHAKE)
        identity = _identity(payload, "handshake")
        try:
            identity.check_fields()
        except ValueError as e:
            return self._refuse("", str(e))  # do not echo an oversized or forged id back
        self.peer = identity
        version = payload.get("version")
        if version not in SUPPORTED_VERSIONS:
            quoted = clip(version, VERSION_QUOTE_LIMIT) if isinstance(version, str) else ""
            return self._refuse(
                identity.id,
                f"incompatible protocol version {quoted}, supported: [{', '.join(SUPPORTED_VERSIONS)}]",
            )
        try:
            public = identity.verify()
        except InvalidKeyError as e:
            return self._refuse(identity.id, REASON_ID_MISMATCH if isinstance(e, IdentityMismatchError) else str(e))
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
        offer = payload.get(OFFER_FIELD)
        offered = isinstance(offer, list) and "2.0" in offer
        protocol = "2.0" if offered and self.accept_protocol_2 else "1.0"
        if protocol == "1.0":
            if self.min_protocol == "2.0":
                return self._refuse(identity.id, REASON_MIN_PROTOCOL)
            if self.registry.requires_protocol_2(identity.id):
                return self._refuse(identity.id, REASON_DOWNGRADE)
        try:
            secret = self.node.derive_shared_secret(public)
        except InvalidKeyError as e:
            return self._refuse(identity.id, f"invalid public key: {e}")
        answer: dict[str, Any] = {
            "identity": self.node.identity.to_dict(),
            "challengeResponse": b64encode(_core.sign_challenge(challenge, secret)),
            "accepted": True,
        }
        if protocol == "2.0":
            answer[ANSWER_FIELD] = "2.0"
        ack = self._ack(identity.id, answer)
        hello = data.encode() if isinstance(data, str) else bytes(data)
        return ack, HandshakeResult(identity, public, secret, protocol, hello, ack)


class NoiseStage:
    """Protocol 2.0's Noise handshake, after a hello and ack that agreed on it.

    Sans I/O: the acceptor sends :meth:`first_message` right after its ack;
    the dialler feeds it to :meth:`answer` and sends what that returns; the
    acceptor feeds that to :meth:`finish`. Then :attr:`handshake` is finished
    on both sides and both static keys are proven (``rust/noise.rs`` says
    why). Both sides use the hello and the ack as the prologue, so a change to
    either fails the handshake. Failures raise :class:`PeerAuthenticationError`.
    """

    def __init__(self, handshake: _core.NoiseHandshake, result: HandshakeResult) -> None:
        self.handshake = handshake
        self.result = result

    @classmethod
    def acceptor(cls, node: NodeManager, result: HandshakeResult, *, ephemeral: bytes | None = None) -> NoiseStage:
        prologue = _core.noise_prologue(result.hello, result.ack)
        return cls(_core.NoiseHandshake.acceptor(node.private_key, result.peer_public_key, prologue,
                                                 ephemeral=ephemeral), result)

    @classmethod
    def dialler(cls, node: NodeManager, result: HandshakeResult, *, ephemeral: bytes | None = None) -> NoiseStage:
        prologue = _core.noise_prologue(result.hello, result.ack)
        return cls(_core.NoiseHandshake.dialler(node.private_key, prologue, ephemeral=ephemeral), result)

    def first_message(self) -> bytes:
        """Acceptor: Noise message 1 (send as a BINARY frame after the ack)."""
        return self.handshake.write_message()

    def answer(self, message: bytes | str) -> bytes:
        """Dialler: read message 1 and return message 2 (send it as a BINARY frame).

        The static key inside message 1 must be the one the ack presented."""
        if not isinstance(message, bytes):
            raise ProtocolError("protocol 2.0 handshake message must be a binary frame")
        self.handshake.read_message(message)
        if self.handshake.remote_public != self.result.peer_public_key:
            raise PeerAuthenticationError("the Noise static key is not the key the handshake_ack presented")
        return self.handshake.write_message()

    def finish(self, message: bytes | str) -> None:
        """Acceptor: read message 2; the dialler's key is proven."""
        if not isinstance(message, bytes):
            raise ProtocolError("protocol 2.0 handshake message must be a binary frame")
        self.handshake.read_message(message)
        if not self.handshake.finished:
            raise PeerAuthenticationError("protocol 2.0 handshake did not finish")

    def result_with_link(self) -> HandshakeResult:
        """The handshake's result carrying the finished Noise state (the
        prologue's copies of the hello and the ack are let go)."""
        if not self.handshake.finished:
            raise PeerAuthenticationError("protocol 2.0 handshake did not finish")
        return replace(self.result, hello=b"", ack=b"", noise=self.handshake)
