"""The batch entry points of the native core (STYLE.md point 12, issue 10):
``SmsgCipher.seal_marked`` (seal + ``Deduplicator.mark`` in one call) and
``seal_for_all`` (one message sealed for several peers in one call). Each is
checked against the separate calls it replaces."""

from __future__ import annotations

import threading

import pytest

from smsgnet import _core

SECRETS = [bytes([i]) * 32 for i in range(1, 5)]
MESSAGE = b'{"id":"m1","type":"chat","from":"a","to":"b","ts":"2025-01-01T00:00:00Z","payload":{"x":"<\xc3\xa9>\\u2028"}}'
NONCE = bytes(range(24))
TIMESTAMP = 1735689600
T = 1735689600.0
NONCE_AT = slice(4 + 1 + 4 + 48, 4 + 1 + 4 + 48 + 24)  # prefix, the fixed header, then the nonce


def ciphers() -> list[_core.SmsgCipher]:
    return [_core.SmsgCipher(s) for s in SECRETS]


# ---------------------------------------------------------------------------
# seal_marked


def test_seal_marked_is_seal_then_mark():
    cipher = _core.SmsgCipher(SECRETS[0])
    marked, separate = _core.Deduplicator(300.0, 1000), _core.Deduplicator(300.0, 1000)
    frame = cipher.seal_marked(marked, "m1", MESSAGE, now=T, nonce=NONCE, timestamp=TIMESTAMP)
    separate.mark("m1", T)
    assert frame == cipher.seal(MESSAGE, nonce=NONCE, timestamp=TIMESTAMP)
    assert marked.to_bytes(T) == separate.to_bytes(T)
    assert marked.contains("m1", T) and len(marked) == 1


def test_seal_marked_defaults_give_a_fresh_frame_and_mark_now():
    cipher = _core.SmsgCipher(SECRETS[0])
    dedup = _core.Deduplicator(300.0, 1000)
    a = cipher.seal_marked(dedup, "m1", MESSAGE)
    b = cipher.seal_marked(dedup, "m2", MESSAGE.decode())
    assert a[NONCE_AT] != b[NONCE_AT]
    assert cipher.open(a) == cipher.open(b) == MESSAGE
    assert dedup.contains("m1") and dedup.contains("m2") and len(dedup) == 2


def test_a_reflected_frame_is_refused_from_every_sender():
    cipher = _core.SmsgCipher(SECRETS[0])
    dedup = _core.Deduplicator(300.0, 1000)
    frame = cipher.seal_marked(dedup, "m1", MESSAGE, now=T)
    assert dedup.check_and_mark("m1", T, sender="peer") is False
    receiver = _core.FrameReceiver(cipher, dedup, sender="other-peer")
    assert receiver.receive(frame, T + 5.0) == ("duplicate", None)


def test_seal_marked_expires_like_mark():
    cipher = _core.SmsgCipher(SECRETS[0])
    dedup = _core.Deduplicator(10.0, 1000)
    cipher.seal_marked(dedup, "m1", MESSAGE, now=T)
    assert dedup.contains("m1", T + 9.0)
    assert not dedup.contains("m1", T + 11.0)


@pytest.mark.parametrize(
    ("kwargs", "message", "error"),
    [
        ({}, "\ud800", _core.SealError),
        ({}, b"\xff", _core.SealError),
        ({"nonce": b"short"}, MESSAGE, ValueError),
        ({"now": float("nan")}, MESSAGE, _core.ConfigError),
        ({}, 42, TypeError),
    ],
)
def test_seal_marked_that_fails_marks_nothing(kwargs, message, error):
    cipher = _core.SmsgCipher(SECRETS[0])
    dedup = _core.Deduplicator(300.0, 1000)
    with pytest.raises(error):
        cipher.seal_marked(dedup, "m1", message, **kwargs)
    assert len(dedup) == 0 and not dedup.contains("m1")


def test_seal_marked_wants_a_deduplicator():
    cipher = _core.SmsgCipher(SECRETS[0])
    with pytest.raises(TypeError):
        cipher.seal_marked(object(), "m1", MESSAGE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cipher.seal_marked(_core.Deduplicator(300.0, 10), b"m1", MESSAGE)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# seal_for_all


@pytest.mark.parametrize("size", [0, 1, 100, 70_000])
def test_seal_for_all_opens_under_each_cipher_only(size):
    peers = ciphers()
    message = MESSAGE if size == 0 else b'{"id":"m","payload":"' + b"<x>" * size + b'"}'
    frames = _core.seal_for_all(peers, message)
    assert isinstance(frames, list) and len(frames) == len(peers)
    for i, (cipher, frame) in enumerate(zip(peers, frames)):
        assert isinstance(frame, bytes)
        assert cipher.open(frame) == message
        assert len(frame) == len(cipher.seal(message))
        with pytest.raises(_core.AuthenticationFailedError):
            peers[(i + 1) % len(peers)].open(frame)


def test_seal_for_all_draws_a_fresh_nonce_per_frame():
    cipher = _core.SmsgCipher(SECRETS[0])
    frames = _core.seal_for_all([cipher] * 50, MESSAGE) + _core.seal_for_all([cipher] * 50, MESSAGE)
    assert len({f[NONCE_AT] for f in frames}) == 100
    assert all(cipher.open(f) == MESSAGE for f in frames)


def test_seal_for_all_accepts_what_seal_accepts():
    peers = ciphers()
    for message in (MESSAGE, bytearray(MESSAGE), MESSAGE.decode()):
        assert [c.open(f) for c, f in zip(peers, _core.seal_for_all(peers, message))] == [MESSAGE] * len(peers)
    assert _core.seal_for_all([], MESSAGE) == []


def test_seal_for_all_refuses_what_seal_refuses():
    peers = ciphers()
    for bad in ("\ud800", b"\xff"):
        with pytest.raises(_core.SealError):
            _core.seal_for_all(peers, bad)
    with pytest.raises(TypeError):
        _core.seal_for_all(peers, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.seal_for_all([peers[0], "not a cipher"], MESSAGE)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _core.seal_for_all("abc", MESSAGE)  # type: ignore[arg-type]


def test_seal_for_all_from_several_threads():
    """Large batches run with the GIL released: threads sealing at once get
    correct, distinct frames."""
    peers = ciphers()
    message = b'{"id":"big","payload":"' + b"a" * 40_000 + b'"}'
    results: list[list[bytes]] = []
    lock = threading.Lock()

    def work():
        for _ in range(5):
            frames = _core.seal_for_all(peers, message)
            with lock:
                results.append(frames)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    nonces = set()
    for frames in results:
        for cipher, frame in zip(peers, frames):
            assert cipher.open(frame) == message
            nonces.add(frame[NONCE_AT])
    assert len(nonces) == 20 * len(peers)
