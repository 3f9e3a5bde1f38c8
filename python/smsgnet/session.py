"""One authenticated connection's frames, sans I/O.

A :class:`Session` turns outgoing Messages into SMSG frames and incoming
frames into Messages or counted drops. It knows bytes, keys and clocks, never
sockets. The receive step is one native call per frame
(``_core.FrameReceiver``: token bucket → open → sender/age checks → dedup).
"""

from __future__ import annotations

from collections import Counter

from smsgnet import _core
from smsgnet.config import TransportConfig
from smsgnet.exceptions import InvalidMessageError
from smsgnet.message import Message

__all__ = ["Session", "DROP_REASONS", "make_deduplicator"]

#: Every reason a received frame can be dropped for.
DROP_REASONS: tuple[str, ...] = (*_core.drop_reasons(), "unexpected_text")

_OK = "ok"


def make_deduplicator(config: TransportConfig) -> _core.Deduplicator:
    """The transport-wide duplicate table.

    IDs are remembered for ``dedup_ttl + max_clock_skew``: a frame is accepted
    while its ``ts`` lies in ``[now - dedup_ttl, now + max_clock_skew]``, so its
    ID must outlive that window for a replay to be caught.
    """
    return _core.Deduplicator(config.dedup_ttl + config.max_clock_skew, config.dedup_max_entries)


class Session:
    """Seal and receive for one peer; counts every dropped frame by reason."""

    __slots__ = ("cipher", "receiver", "dedup", "drops", "last_drop", "messages_in", "messages_out")

    def __init__(
        self,
        peer_id: str,
        shared_secret: bytes,
        dedup: _core.Deduplicator,
        config: TransportConfig,
    ) -> None:
        self.cipher = _core.SmsgCipher(shared_secret)
        bucket = None
        if config.rate_limit_burst is not None:
            bucket = _core.TokenBucket(config.rate_limit_burst, config.rate_limit_per_sec)
        self.receiver = _core.FrameReceiver(
            self.cipher,
            dedup,
            bucket=bucket,
            max_age=config.dedup_ttl,
            max_future=config.max_clock_skew,
            peer_id=peer_id if config.strict_sender else None,
        )
        self.dedup = dedup
        self.drops: Counter[str] = Counter()
        self.last_drop = ""
        self.messages_in = 0
        self.messages_out = 0

    def seal_json(self, message_id: str, message_json: bytes) -> bytes:
        """Seal an encoded Message; its ID is marked as seen (a reflected copy is dropped)."""
        self.dedup.mark(message_id)
        self.messages_out += 1
        return self.cipher.seal(message_json)

    def seal(self, msg: Message) -> bytes:
        """Encode and seal a Message."""
        return self.seal_json(msg.id, msg.to_json())

    def receive(self, frame: bytes | str, now: float | None = None) -> Message | None:
        """The Message in ``frame``, or None when the frame was dropped (and counted)."""
        if isinstance(frame, str):
            self._drop("unexpected_text", "text frame after the handshake")
            return None
        reason, body = self.receiver.receive(frame, now)
        if body is not None:  # reason == "ok"
            try:
                msg = Message.from_json(body)
            except InvalidMessageError as e:
                self._drop("invalid_message", str(e))
                return None
            self.messages_in += 1
            return msg
        self._drop(reason, self.receiver.last_error)
        return None

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        self.last_drop = f"{reason}: {detail}" if detail else reason
