"""Two small helpers that show what an SMSG frame looks like on the wire (the demo uses them)."""

from __future__ import annotations

from typing import Any

from smsgnet import _core
from smsgnet.connection import PeerConnection
from smsgnet.message import Message


def seal_sample(conn: PeerConnection, msg: Message) -> bytes:
    """Seal ``msg`` into an SMSG frame with ``conn``'s shared secret, as the
    connection would, without sending it or touching its counters.

    For showing and measuring frames; the nonce is fresh, so the bytes differ
    from any frame actually sent (the length is the same).
    """
    return _core.SmsgCipher(conn.shared_secret).seal(msg.to_json())


def describe_frame(frame: bytes) -> dict[str, Any]:
    """The clear-text parts of an SMSG frame (PROTOCOL.md §4).

    Returns ``magic``, ``version``, ``header_len``, ``header`` (the JSON text),
    ``nonce_hex``, ``sealed_len`` (ciphertext + 16-byte tag) and ``frame_len``.
    Nothing is decrypted. Raises :class:`ValueError` when the frame is too
    short to hold them.
    """
    if len(frame) < 9:
        raise ValueError("frame shorter than its 9-byte prefix")
    header_len = int.from_bytes(frame[5:9], "big")
    end = 9 + header_len
    if len(frame) < end + 24:
        raise ValueError("frame ends inside its header or nonce")
    return {
        "magic": frame[:4].decode("latin-1"),
        "version": frame[4],
        "header_len": header_len,
        "header": frame[9:end].decode("utf-8", "replace"),
        "nonce_hex": frame[end:end + 24].hex(),
        "sealed_len": len(frame) - end - 24,
        "frame_len": len(frame),
    }
