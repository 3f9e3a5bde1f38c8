"""_core.take_binary_frames, the receive fast path of smsgnet.wire (rust/wsframe.rs):
frames made by websockets' own serializer, cut anywhere, give exactly the
payloads RFC 6455 says, and stop where the fast path must hand over."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from smsgnet import _core

BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = [
    (Opcode.BINARY, True),  # the one kind the fast path takes
    (Opcode.BINARY, True),
    (Opcode.BINARY, True),
    (Opcode.TEXT, True),
    (Opcode.PING, True),
    (Opcode.BINARY, False),  # a fragment
    (Opcode.CONT, True),
]


def serialized(opcode: Opcode, fin: bool, payload: bytes, masked: bool) -> bytes:
    return Frame(opcode, payload, fin).serialize(mask=masked)


def expected(frames: list[tuple[Opcode, bool, bytes, bytes]], cut: int, max_size: int) -> tuple[list[bytes], int, bool]:
    """What the fast path must answer for the stream cut at ``cut``, by RFC 6455 §5.2."""
    taken: list[bytes] = []
    at = 0
    for opcode, fin, payload, wire in frames:
        have = cut - at
        if have < 2:
            return taken, at, False
        if not (opcode is Opcode.BINARY and fin):
            return taken, at, True
        header = 2 if len(payload) < 126 else 4 if len(payload) < 65536 else 10
        if have < header:
            return taken, at, False
        if len(payload) > max_size:
            return taken, at, True
        if have < len(wire):
            return taken, at, False
        taken.append(payload)
        at += len(wire)
    return taken, at, False


@BOUNDED
@given(
    kinds=st.lists(st.sampled_from(KINDS), max_size=8),
    sizes=st.lists(st.sampled_from([0, 1, 7, 8, 125, 126, 127, 300, 65535, 65536, 70000]), min_size=8, max_size=8),
    masked=st.booleans(),
    cut_at=st.floats(0, 1),
    max_size=st.sampled_from([0, 125, 65536, 1 << 20]),
    kind=st.sampled_from(["bytes", "bytearray", "memoryview"]),
)
def test_the_fast_path_takes_what_rfc_6455_says_and_stops_where_it_must(kinds, sizes, masked, cut_at, max_size, kind):
    frames = []
    for (opcode, fin), size in zip(kinds, sizes):
        payload = os.urandom(min(size, 125) if opcode is Opcode.PING else size)  # control frames: 125 at most
        frames.append((opcode, fin, payload, serialized(opcode, fin, payload, masked)))
    stream = b"".join(f[3] for f in frames)
    cut = int(cut_at * len(stream))
    data = {"bytes": bytes, "bytearray": bytearray, "memoryview": lambda b: memoryview(bytearray(b))}[kind](stream[:cut])
    assert _core.take_binary_frames(data, masked, max_size) == expected(frames, cut, max_size)


def test_the_wrong_mask_bit_is_another_kind_of_frame():
    masked = serialized(Opcode.BINARY, True, b"abc", True)
    unmasked = serialized(Opcode.BINARY, True, b"abc", False)
    assert _core.take_binary_frames(masked, True, 100) == ([b"abc"], len(masked), False)
    assert _core.take_binary_frames(masked, False, 100) == ([], 0, True)
    assert _core.take_binary_frames(unmasked, True, 100) == ([], 0, True)


def test_the_data_is_not_kept_a_reused_buffer_changes_no_payload():
    buf = bytearray(serialized(Opcode.BINARY, True, b"payload!", True))
    payloads, consumed, other = _core.take_binary_frames(memoryview(buf), True, 100)
    buf[:] = bytes(len(buf))  # the shared read buffer, overwritten by the next read
    assert (payloads, consumed, other) == ([b"payload!"], len(buf), False)


def test_a_non_contiguous_buffer_is_refused():
    with pytest.raises((TypeError, BufferError)):
        _core.take_binary_frames(memoryview(bytearray(64))[::2], True, 100)
