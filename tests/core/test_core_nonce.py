"""Random nonces: fresh per frame, and never shared by a forked child and its parent."""

from __future__ import annotations

import os

from smsgnet import _core

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
