"""Native core vs the pure-Python baseline (benches/baseline_pure_python.py).

Every benchmark is parametrized by ``impl`` (native, baseline) and grouped so
each pair sits together in the table. Measured::

    pytest benches --benchmark-only --benchmark-columns=min,mean,median,ops \\
        --benchmark-sort=name --benchmark-min-rounds=5 --benchmark-max-time=0.5

As plain tests (what CI runs, a few seconds): ``pytest benches --benchmark-disable``.
Each benchmark also checks its result, so the pair is known to do the same work.
See docs/performance.md for the numbers.
"""

from __future__ import annotations

import itertools

import orjson
import pytest

import baseline_pure_python as base
from smsgnet import _core

IMPLS = {"native": _core, "baseline": base}
SECRET = bytes.fromhex("dead45a1d43d6902aa9240b43c0d75a0b5fc750660590d6d45461cbfc4010684")
ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
BOB = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
NONCE = bytes(range(24))
TIMESTAMP = 1735689600
T = 1735689600.0
FILLER = "abcdefghijklmnopqrstuvwxyz0123456789"
SIZES = {"64B": 64, "1KiB": 1024, "16KiB": 16 * 1024, "1MiB": 1024 * 1024}


def sized_message(size: int) -> bytes:
    """A transport-Message-shaped JSON object of exactly ``size`` bytes."""
    empty = orjson.dumps({"id": "b", "type": "bench", "payload": {"data": ""}})
    data = (FILLER * (size // len(FILLER) + 1))[: size - len(empty)]
    msg = orjson.dumps({"id": "b", "type": "bench", "payload": {"data": data}})
    assert len(msg) == size
    return msg


def transport_message(mid: str, size: int = 1024) -> bytes:
    """A full transport Message (id/type/from/to/ts/payload) of exactly ``size`` bytes."""
    head = {
        "id": mid,
        "type": "bench",
        "from": "300c9c9603b92a4b39ed3958bf924011",
        "to": "f35e5616160a30bf3c6e79fa73c576d4",
        "ts": "2025-01-01T00:00:05Z",
    }
    empty = orjson.dumps({**head, "payload": {"data": ""}})
    msg = orjson.dumps({**head, "payload": {"data": (FILLER * 64)[: size - len(empty)]}})
    assert len(msg) == size
    return msg


MESSAGES = {name: sized_message(size) for name, size in SIZES.items()}


def cipher_of(impl: str):
    return IMPLS[impl].SmsgCipher(SECRET)


both = pytest.mark.parametrize("impl", list(IMPLS))
sized = pytest.mark.parametrize("size", list(SIZES))


# ---------------------------------------------------------------------------
# seal / open


@both
@sized
def test_seal(benchmark, impl, size):
    benchmark.group = f"seal {size}"
    benchmark.extra_info["bytes"] = SIZES[size]
    cipher = cipher_of(impl)
    frame = benchmark(cipher.seal, MESSAGES[size], nonce=NONCE, timestamp=TIMESTAMP)
    assert frame == _core.SmsgCipher(SECRET).seal(MESSAGES[size], nonce=NONCE, timestamp=TIMESTAMP)


@both
@sized
def test_open(benchmark, impl, size):
    benchmark.group = f"open {size}"
    benchmark.extra_info["bytes"] = SIZES[size]
    frame = _core.SmsgCipher(SECRET).seal(MESSAGES[size], nonce=NONCE, timestamp=TIMESTAMP)
    cipher = cipher_of(impl)
    assert benchmark(cipher.open, frame) == MESSAGES[size]


# ---------------------------------------------------------------------------
# handshake crypto: both sides derive, responder signs, initiator verifies


@both
def test_handshake_crypto(benchmark, impl):
    benchmark.group = "handshake crypto"
    lib = IMPLS[impl]
    alice_public, bob_public = _core.public_key(ALICE), _core.public_key(BOB)
    challenge = bytes(range(0xA0, 0xC0))

    def handshake() -> bool:
        responder_secret = lib.derive_shared_secret(BOB, alice_public)
        response = lib.sign_challenge(challenge, responder_secret)
        initiator_secret = lib.derive_shared_secret(ALICE, bob_public)
        return lib.verify_challenge(challenge, response, initiator_secret)

    assert benchmark(handshake) is True


# ---------------------------------------------------------------------------
# per-frame state


@both
def test_token_bucket_allow(benchmark, impl):
    benchmark.group = "TokenBucket.allow"
    bucket = IMPLS[impl].TokenBucket(100, 50.0)
    assert benchmark(bucket.allow, T) in (True, False)


@both
def test_dedup_check_and_mark_new_id(benchmark, impl):
    """A new ID per call into a table of 100k (full after 100k calls: then each
    call also evicts one). Both sides pay the same ``next(ids)``."""
    benchmark.group = "Deduplicator.check_and_mark (new id)"
    dedup = IMPLS[impl].Deduplicator(300.0, 100_000)
    ids = map(str, itertools.count())
    check = dedup.check_and_mark
    assert benchmark(lambda: check(next(ids), T)) is True


@both
def test_dedup_check_and_mark_duplicate(benchmark, impl):
    benchmark.group = "Deduplicator.check_and_mark (duplicate)"
    dedup = IMPLS[impl].Deduplicator(300.0, 100_000)
    for i in range(10_000):
        dedup.check_and_mark(f"00000000-0000-4000-8000-{i:012d}", T)
    assert benchmark(dedup.check_and_mark, "00000000-0000-4000-8000-000000000042", T) is False


# ---------------------------------------------------------------------------
# the whole receive step, 1 KiB messages, accepted path


RECEIVE_ROUNDS = 5_000


@pytest.fixture(scope="module")
def receive_frames() -> list[bytes]:
    cipher = _core.SmsgCipher(SECRET)
    return [cipher.seal(transport_message(f"00000000-0000-4000-8000-{i:012d}")) for i in range(RECEIVE_ROUNDS + 1)]


@both
def test_receive_1kib(benchmark, impl, receive_frames):
    """Every round gets a new frame (so every frame is accepted and marked);
    the setup that hands it over is not timed."""
    benchmark.group = "FrameReceiver.receive 1KiB"
    benchmark.extra_info["bytes"] = 1024
    lib = IMPLS[impl]
    receiver = lib.FrameReceiver(
        lib.SmsgCipher(SECRET),
        lib.Deduplicator(300.0, 100_000),
        bucket=lib.TokenBucket(10**9, 50.0),
        peer_id="300c9c9603b92a4b39ed3958bf924011",
    )
    frames = iter(receive_frames)

    def setup():
        return (next(frames), T), {}

    reason, body = benchmark.pedantic(receiver.receive, setup=setup, rounds=RECEIVE_ROUNDS, iterations=1)
    assert reason == "ok" and len(body) == 1024


# ---------------------------------------------------------------------------
# the batch entry points vs the separate calls they replace (issue 10): each
# pair sits in one group, so the table gives the ratio of the same run


calls = pytest.mark.parametrize("calls", ["separate", "one_call"])
PEERS = [2, 8, 32]


@calls
@pytest.mark.parametrize("size", ["64B", "1KiB"])
def test_seal_and_mark(benchmark, calls, size):
    """What a send does: remember the ID (so a reflection is dropped), seal."""
    benchmark.group = f"seal + mark {size}"
    benchmark.extra_info["bytes"] = SIZES[size]
    cipher = _core.SmsgCipher(SECRET)
    dedup = _core.Deduplicator(300.0, 100_000)
    msg = MESSAGES[size]
    ids = (f"00000000-0000-4000-8000-{i:012d}" for i in itertools.count())
    seal, mark, seal_marked = cipher.seal, dedup.mark, cipher.seal_marked

    def separate() -> bytes:
        mark(next(ids))
        return seal(msg)

    def one_call() -> bytes:
        return seal_marked(dedup, next(ids), msg)

    frame = benchmark(separate if calls == "separate" else one_call)
    assert cipher.open(frame) == msg and dedup.contains("00000000-0000-4000-8000-000000000000")


@calls
@pytest.mark.parametrize("peers", PEERS)
@pytest.mark.parametrize("size", ["64B", "1KiB", "16KiB"])
def test_seal_for_all(benchmark, calls, peers, size):
    """What a broadcast does: the same message sealed for every peer."""
    benchmark.group = f"seal for {peers} peers {size}"
    benchmark.extra_info["bytes"] = SIZES[size] * peers
    ciphers = [_core.SmsgCipher(bytes([i + 1]) * 32) for i in range(peers)]
    msg = MESSAGES[size]
    seal_for_all = _core.seal_for_all

    def separate() -> list[bytes]:
        return [c.seal(msg) for c in ciphers]

    def one_call() -> list[bytes]:
        return seal_for_all(ciphers, msg)

    frames = benchmark(separate if calls == "separate" else one_call)
    assert [c.open(f) for c, f in zip(ciphers, frames)] == [msg] * peers


# ---------------------------------------------------------------------------
# protocol 2.0: a Noise link (issue 11's target: 1 KiB seal + open <= 1.5 us),
# beside the 1.0 seal + open of the same message in the same run


def noise_pair() -> tuple[_core.NoiseLink, _core.NoiseLink]:
    prologue = _core.noise_prologue(b"hello", b"ack")
    acceptor = _core.NoiseHandshake.acceptor(ALICE, _core.public_key(BOB), prologue)
    dialler = _core.NoiseHandshake.dialler(BOB, prologue)
    dialler.read_message(acceptor.write_message())
    acceptor.read_message(dialler.write_message())
    return dialler.into_link(), acceptor.into_link()


@sized
def test_noise_seal_open(benchmark, size):
    benchmark.group = f"seal+open {size}: 1.0 vs 2.0"
    benchmark.extra_info["bytes"] = SIZES[size]
    sender, receiver = noise_pair()
    msg = MESSAGES[size]

    def seal_open() -> bytes:
        return receiver.open(sender.seal(msg))

    assert benchmark(seal_open) == msg


@sized
def test_smsg_seal_open(benchmark, size):
    benchmark.group = f"seal+open {size}: 1.0 vs 2.0"
    benchmark.extra_info["bytes"] = SIZES[size]
    cipher = _core.SmsgCipher(SECRET)
    msg = MESSAGES[size]

    def seal_open() -> bytes:
        return cipher.open(cipher.seal(msg))

    assert benchmark(seal_open) == msg
