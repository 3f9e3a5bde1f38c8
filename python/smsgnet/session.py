"""One connection's protocol after the handshake, sans I/O: frames and a clock in, events out.

Theory of operation::

                  receive(frame, now) ──▶ [events]          tick(now) ──▶ action | None
    ┌────────────┐                                  ┌───────────────────────────────────┐
    │  UNPROVEN  │ first frame that opens under the │ PROVEN: a ping every ping_interval │
    │ (inbound)  │ pair key, comes from the claimed │ of silence-free time; closed when  │
    │ seals      │ ID, is fresh and not a duplicate │ nothing arrived for               │
    │ nothing    │ ─────────── Proven ────────────▶ │ ping_interval + pong_timeout       │
    └────────────┘                                  └───────────────────────────────────┘
       closed at the proof deadline                    close(reason, code) → disconnect frame

A :class:`Session` turns outgoing Messages into SMSG frames and incoming frames
into events: :class:`MessageReceived`, :class:`PingReceived` (with the sealed
pong to send back), :class:`PongReceived` (with the round trip),
:class:`PeerDisconnected`, :class:`Proven` and :class:`FrameDropped` (with its
reason). The receive step is one native call per frame
(``_core.FrameReceiver``: token bucket → open → sender/age checks → dedup).

**Proof of key.** An outbound session is proven when it is created: the
responder answered our challenge with the right HMAC. An inbound session is
*unproven*: the handshake showed only that the initiator knows public values.
It becomes proven with the first frame that opens under the pair key, whose
``from`` is the claimed node ID, and that passes the freshness and duplicate
checks. Until then the session seals nothing (:meth:`can_send` is False):
an attacker claiming someone else's ID never receives a frame sealed under
that pair's key that it could carry to another node. A frame this node sealed
itself and that comes back is a duplicate (every sealed ID is marked in the
replay table), so reflecting our own frames proves nothing. Frames that open
but come from another ID are dropped as ``wrong_sender`` while unproven.

**Keepalive.** ``tick(now)`` answers with :class:`SendPing` (a sealed ping)
when ``ping_interval`` has passed since the last ping we sent, with
:class:`CloseForSilence` when nothing has been received for
``ping_interval + pong_timeout`` (or, unproven, when the proof deadline
passed), and with None otherwise; :attr:`next_deadline` says when to call it
again. Every clock value is UNIX seconds passed in by the caller, so tests run
on a fake clock and nothing here sleeps.

**Protocol 2.0.** A session made with a finished ``noise`` handshake
(:class:`~smsgnet.handshake.NoiseStage`) seals and opens with
``_core.NoiseLink`` instead of SMSG: the handshake proved both keys, so the
transport makes it proven from the start (an inbound one waits for its first
frame only when a live link with that peer already exists), replays need no table (Noise's counters refuse
a replayed, dropped or reordered frame) and no ``ts`` check; the same message
ID twice from the peer is still delivered once, as on 1.0. The first frame that does
not open breaks the link (:class:`FrameDropped` with ``fatal`` True: close
it). Frames must leave in the order they were sealed, so a 2.0 session does
not seal the pong while it receives (``PingReceived.reply`` is None; seal
``PingReceived.pong`` when sending it).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TypeAlias

from smsgnet import _core
from smsgnet.config import TransportConfig
from smsgnet.exceptions import InvalidMessageError, NotConnectedError
from smsgnet.message import CONTROL_TYPES, DisconnectCode, Message, format_timestamp, new_message_id

__all__ = [
    "Session",
    "DROP_REASONS",
    "make_deduplicator",
    "Event",
    "MessageReceived",
    "PingReceived",
    "PongReceived",
    "PeerDisconnected",
    "Proven",
    "FrameDropped",
    "SendPing",
    "CloseForSilence",
]

#: Every reason a received frame can be dropped for.
DROP_REASONS: tuple[str, ...] = (*_core.drop_reasons(), "unexpected_text")


def make_deduplicator(config: TransportConfig) -> _core.Deduplicator:
    """A replay table for a config (the transport gets its own from
    :class:`~smsgnet.replay.ReplayGuard`, which also restores it across restarts).

    IDs are remembered for ``dedup_ttl + max_clock_skew``: a frame is accepted
    while its ``ts`` lies in ``[now - dedup_ttl, now + max_clock_skew]``, so its
    ID must outlive that window for a replay to be caught.
    """
    return _core.Deduplicator(config.dedup_ttl + config.max_clock_skew, config.dedup_max_entries,
                              per_peer=config.dedup_max_entries_per_peer, max_peers=config.dedup_max_peers)


# -- events (what a received frame turned into) ---------------------------------
# Events and actions are slotted records, not frozen ones: one is built for every
# frame, and a frozen dataclass sets each field through object.__setattr__.


@dataclass(slots=True)
class MessageReceived:
    """An application message (or a control message the caller asked to see)."""

    message: Message


@dataclass(slots=True)
class PingReceived:
    """The peer pinged; ``reply`` is the sealed pong to send back (None on
    protocol 2.0: seal ``pong`` with :meth:`Session.seal` right before sending)."""

    message: Message
    reply: bytes | None
    pong: Message


@dataclass(slots=True)
class PongReceived:
    """The peer answered a ping; ``rtt_ms`` is the round trip (None when ``sentAt`` is missing)."""

    message: Message
    rtt_ms: float | None


@dataclass(slots=True)
class PeerDisconnected:
    """The peer said goodbye with a ``disconnect`` message."""

    message: Message
    code: int
    reason: str


@dataclass(slots=True)
class Proven:
    """The peer has just proven it holds its key (inbound sessions only, once)."""


@dataclass(slots=True)
class FrameDropped:
    """A frame was dropped; ``reason`` is one of :data:`DROP_REASONS`.
    ``fatal``: nothing more can be opened on this link (protocol 2.0): close it."""

    reason: str
    detail: str
    fatal: bool = False


Event: TypeAlias = MessageReceived | PingReceived | PongReceived | PeerDisconnected | Proven | FrameDropped


# -- actions (what the clock asks for) -----------------------------------------------


@dataclass(slots=True)
class SendPing:
    """Time for a keepalive ping: send ``frame``."""

    frame: bytes


@dataclass(slots=True)
class CloseForSilence:
    """Close the connection: nothing arrived in time (or the key was never proven).

    ``frame`` is the sealed ``disconnect`` to send first, None when the peer is
    unproven (nothing is sealed for it)."""

    reason: str
    code: int
    frame: bytes | None


_PROVEN = Proven()


class Session:
    """The protocol of one connection after the handshake.

    ``now`` is UNIX seconds at creation; ``proven`` is True for the side that
    dialled (the responder proved its key with the HMAC)."""

    __slots__ = (
        "local_id", "peer_id", "cipher", "link", "receiver", "dedup", "protocol", "drops", "last_drop", "messages_in",
        "messages_out", "proven", "last_received", "last_ping_sent", "created", "ping_interval",
        "idle_limit", "proof_deadline", "deliver_control", "closed",
    )

    def __init__(
        self,
        peer_id: str,
        shared_secret: bytes,
        dedup: _core.Deduplicator,
        config: TransportConfig,
        *,
        local_id: str = "",
        peer_public_key: str = "",
        proven: bool = True,
        now: float = 0.0,
        noise: _core.NoiseHandshake | None = None,
    ) -> None:
        self.local_id = local_id
        self.peer_id = peer_id
        bucket = None
        burst, per_sec = config.rate_limit_for(peer_id, peer_public_key)
        if burst is not None:
            bucket = _core.TokenBucket(burst, per_sec)
        self.receiver: _core.FrameReceiver | _core.NoiseLink
        if noise is not None:
            self.protocol = "2.0"
            self.cipher: _core.SmsgCipher | None = None
            self.link: _core.NoiseLink | None = noise.into_link(
                rekey_interval=config.rekey_interval, bucket=bucket, dedup=dedup, sender=peer_id,
                peer_id=peer_id if config.strict_sender else None)
            self.receiver = self.link
        else:
            self.protocol = "1.0"
            self.link = None
            self.cipher = _core.SmsgCipher(shared_secret)
            self.receiver = _core.FrameReceiver(
                self.cipher,
                dedup,
                bucket=bucket,
                max_age=config.dedup_ttl,
                max_future=config.max_clock_skew,
                peer_id=peer_id if config.strict_sender else None,
                sender=peer_id,  # the replay table's partition: one per authenticated peer
                local_id=local_id or None,
            )
        self.dedup = dedup
        self.drops: Counter[str] = Counter()
        self.last_drop = ""
        self.messages_in = 0
        self.messages_out = 0
        self.proven = proven
        self.created = now
        self.last_received = now
        self.last_ping_sent = now
        self.ping_interval = config.ping_interval
        self.idle_limit = config.idle_limit
        self.proof_deadline = now + config.proof_deadline
        self.deliver_control = config.deliver_control_messages
        self.closed = False

    # -- sending ------------------------------------------------------------------

    @property
    def can_send(self) -> bool:
        """True when frames may be sealed for this peer: proven and not closed."""
        return self.proven and not self.closed

    def seal_json(self, message_id: str, message_json: bytes, now: float | None = None) -> bytes:
        """Seal an encoded Message; its ID is marked as seen (a reflected copy is dropped).

        Raises :class:`NotConnectedError` while the peer is unproven: nothing
        sealed under the pair key goes to a connection that has not proven it
        holds its key."""
        if not self.proven:
            raise NotConnectedError(f"{self.peer_id} has not proven its key yet; nothing is sealed for it")
        self.messages_out += 1
        link = self.link
        if link is not None:
            return link.seal(message_json)  # counter nonces: no replay table to mark
        # one native call: seal, then mark the ID (a reflected copy is refused)
        return self.cipher.seal_marked(self.dedup, message_id, message_json, now=now)  # type: ignore[union-attr]

    def sealed_len(self, message_len: int) -> int | None:
        """Frame size for a message of ``message_len`` bytes on a 2.0 link
        (None on 1.0, where the size is known only once sealed)."""
        return _core.noise_sealed_len(message_len) if self.link is not None else None

    def sealed_elsewhere(self) -> None:
        """Count a frame sealed for this peer by a batch call (``broadcast``);
        the caller marks the ID once for all peers."""
        if not self.proven:
            raise NotConnectedError(f"{self.peer_id} has not proven its key yet; nothing is sealed for it")
        self.messages_out += 1

    def seal(self, msg: Message, now: float | None = None) -> bytes:
        """Encode and seal a Message (``now``: the clock its ID is marked at; default the system clock)."""
        return self.seal_json(msg.id, msg.to_json(), now)

    def _stamped(self, msg: Message, now: float) -> Message:
        msg.ts = format_timestamp(int(now * 1_000_000_000))
        return msg

    def ping(self, now: float) -> bytes:
        """A sealed keepalive ping stamped ``now`` (it also restarts the ping interval)."""
        self.last_ping_sent = now
        return self.seal(self._stamped(Message.ping(self.local_id, self.peer_id, int(now * 1000)), now), now)

    def close(self, reason: str, code: int = DisconnectCode.NORMAL, now: float | None = None) -> bytes | None:
        """Close the session: the sealed ``disconnect`` to send (best effort), or
        None when nothing may be sealed (unproven, or already closed)."""
        if self.closed:
            return None
        frame = None
        if self.proven:
            msg = Message.disconnect(self.local_id, self.peer_id, reason, int(code))
            if now is not None:
                self._stamped(msg, now)
            frame = self.seal(msg, now)
        self.closed = True
        return frame

    # -- receiving -------------------------------------------------------------------

    def receive(self, frame: bytes | str, now: float | None = None) -> list[Event]:
        """What ``frame`` turned into. ``now`` (UNIX seconds) defaults to the system clock
        for the freshness check; the keepalive counts a frame as activity only when
        it opened and passed every check."""
        if isinstance(frame, str):
            return [self._drop("unexpected_text", "text frame after the handshake")]
        if now is None:
            now = time.time()
        receiver = self.receiver
        # the fields come read by the native checks: only the payload is left to parse
        reason, got = receiver.receive_message(frame, now)
        events: list[Event] = []
        if got is None:
            link = self.link
            events.append(self._drop(reason, receiver.last_error, fatal=link is not None and link.broken))
        else:
            self._accept(got, now, events)
        return events

    def receive_many(self, frames: list[bytes], now: float | None = None) -> list[Event]:
        """The events of :meth:`receive` for every frame of one read (binary
        frames, in order) in one list: one native call opens and checks them all."""
        if now is None:
            now = time.time()
        events: list[Event] = []
        accept = self._accept
        for reason, got, fatal in self.receiver.receive_messages(frames, now):
            if isinstance(got, str):  # dropped: the detail
                events.append(self._drop(reason, got, fatal))
            else:
                accept(got, now, events)
        return events

    def _accept(self, got: tuple[str, str, str, str, str, str, bytes | None] | bytes, now: float,
                events: list[Event]) -> None:
        """Append the events of a message the native checks accepted (its fields, or its JSON)."""
        try:
            msg = Message.from_fields(got) if isinstance(got, tuple) else Message.from_json(got)
        except InvalidMessageError as e:
            events.append(self._drop("invalid_message", str(e)))
            return
        if not self.proven:
            if msg.from_ != self.peer_id:
                events.append(self._drop("wrong_sender",
                                         f"unproven peer {self.peer_id} sent a frame from {msg.from_!r}"))
                return
            self.proven = True
            events.append(_PROVEN)
        self.last_received = now
        self.messages_in += 1
        t = msg.type
        if t not in CONTROL_TYPES:  # the usual message: one set lookup
            events.append(MessageReceived(msg))
        elif t == "ping":
            p = msg.payload
            sent = p.get("sentAt", 0) if type(p) is dict else 0
            # the pong: Message.pong() from this node, stamped once with `now`
            reply = Message("pong", {"sentAt": sent, "receivedAt": int(now * 1000)}, self.local_id, msg.from_,
                            new_message_id(), _core.format_timestamp(int(now * 1_000_000_000)), msg.id)
            # 2.0: sealed by the sender, in the order frames leave
            events.append(PingReceived(msg, None if self.link is not None else self.seal(reply, now), reply))
        elif t == "pong":
            p = msg.payload if isinstance(msg.payload, dict) else {}
            sent = p.get("sentAt")
            rtt = max(0.0, now * 1000.0 - sent) if type(sent) is int else None
            events.append(PongReceived(msg, rtt))
        elif t == "disconnect":
            p = msg.payload if isinstance(msg.payload, dict) else {}
            raw_code, raw_reason = p.get("code"), p.get("reason")
            code = raw_code if type(raw_code) is int else int(DisconnectCode.NORMAL)
            events.append(PeerDisconnected(msg, code, raw_reason if isinstance(raw_reason, str) else ""))
        elif self.deliver_control:  # handshake, handshake_ack
            events.append(MessageReceived(msg))

    def _drop(self, reason: str, detail: str, fatal: bool = False) -> FrameDropped:
        self.drops[reason] += 1
        self.last_drop = f"{reason}: {detail}" if detail else reason
        return FrameDropped(reason, detail, fatal)

    # -- the clock -----------------------------------------------------------------------

    @property
    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do next (UNIX seconds)."""
        silence = self.last_received + self.idle_limit
        if not self.proven:
            return min(silence, self.proof_deadline)
        return min(silence, self.last_ping_sent + self.ping_interval)

    def tick(self, now: float) -> SendPing | CloseForSilence | None:
        """What the clock asks for at ``now``: a ping, a close, or nothing yet."""
        if self.closed:
            return None
        if not self.proven and now >= self.proof_deadline:
            self.closed = True
            return CloseForSilence("key not proven in time", DisconnectCode.TIMEOUT, None)
        if now >= self.last_received + self.idle_limit:
            silent = now - self.last_received
            return CloseForSilence(f"idle timeout: nothing received for {silent:.1f}s",
                                   DisconnectCode.TIMEOUT, self.close("idle timeout", DisconnectCode.TIMEOUT, now))
        if self.proven and now >= self.last_ping_sent + self.ping_interval:
            return SendPing(self.ping(now))
        return None
