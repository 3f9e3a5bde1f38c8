"""Randomness from the per-thread pool (rust/random.rs): nonces fresh per
frame and message IDs fresh per message, never shared by a forked child and
its parent."""

from __future__ import annotations

import os
import re
import uuid

from smsgnet import Message, _core

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

NONCE_AT = slice(57, 81)  # after "SMSG", version, length and the 48-byte header
MESSAGE = b'{"id":"n","type":"t"}'


def test_every_seal_draws_a_new_nonce():
    cipher = _core.SmsgCipher(bytes(32))
    nonces = {cipher.seal(MESSAGE)[NONCE_AT] for _ in range(5000)}
    assert len(nonces) == 5000


def test_a_forked_child_does_not_reuse_the_parents_nonces():
    cipher = _core.SmsgCipher(bytes(32))
    cipher.seal(MESSAGE)  # the parent's pool is now filled and partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            child = b"".join(cipher.seal(MESSAGE)[NONCE_AT] for _ in range(20))
            os.write(write_end, child)
        finally:
            os._exit(0)
    os.close(write_end)
    parent = {cipher.seal(MESSAGE)[NONCE_AT] for _ in range(20)}
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    child = {data[i:i + 24] for i in range(0, len(data), 24)}
    assert len(child) == 20
    assert not parent & child


def _in_child_and_parent(draw, count: int, size: int) -> tuple[set[bytes], set[bytes]]:
    """``count`` draws in a forked child and ``count`` in the parent, after the fork."""
    draw()  # the parent's pool is now filled and partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.write(write_end, b"".join(draw() for _ in range(count)))
        finally:
            os._exit(0)
    os.close(write_end)
    parent = {draw() for _ in range(count)}
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return {data[i:i + size] for i in range(0, len(data), size)}, parent


def test_message_ids_are_fresh_canonical_uuid4():
    ids = [_core.new_message_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:2000]:
        assert UUID4.fullmatch(i), i
        assert str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4
    # every hex digit outside the fixed version/variant nibbles is drawn
    assert set("".join(ids).replace("-", "")) == set("0123456789abcdef")
    assert Message.new("t", "a").id != Message.new("t", "a").id


def test_a_forked_child_does_not_repeat_the_parents_message_ids():
    # the Python pool this replaced was emptied by os.register_at_fork; the
    # native one is refilled through pthread_atfork, for any fork()
    child, parent = _in_child_and_parent(lambda: _core.new_message_id().encode(), 50, 36)
    assert len(child) == 50 and len(parent) == 50
    assert not parent & child
