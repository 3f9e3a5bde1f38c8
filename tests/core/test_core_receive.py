"""FrameReceiver: the one-call receive step (bucket → open → checks → dedup)
driven with an injected clock."""

from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest

from smsgnet import _core

T = 1735689600.0  # 2025-01-01T00:00:00Z
PEER = "300c9c9603b92a4b39ed3958bf924011"
ME = "f35e5616160a30bf3c6e79fa73c576d4"
SECRET = bytes.fromhex("dead45a1d43d6902aa9240b43c0d75a0b5fc750660590d6d45461cbfc4010684")
REASONS = set(_core.drop_reasons())


def rfc3339(unix: float) -> str:
    """Go's time.RFC3339Nano: trailing zeros of the fraction removed, Z for UTC."""
    seconds = int(unix // 1)
    nanos = round((unix - seconds) * 1e9)
    text = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def test_rfc3339_helper_matches_the_core():
    assert rfc3339(T) == "2025-01-01T00:00:00Z"
    assert rfc3339(T + 1.25) == "2025-01-01T00:00:01.25Z"
    assert _core.parse_timestamp(rfc3339(T + 1.25)) == T + 1.25


def message(mid: str, ts: float | str | None = T, sender: str | None = PEER, **extra) -> bytes:
    msg: dict = {"id": mid, "type": "ping"}
    if sender is not None:
        msg["from"] = sender
    msg["to"] = ME
    if ts is not None:
        msg["ts"] = ts if isinstance(ts, str) else rfc3339(ts)
    msg["payload"] = {"sentAt": 1735689600000}
    msg.update(extra)
    return orjson.dumps(msg)


@pytest.fixture
def cipher():
    return _core.SmsgCipher(SECRET)


def make(cipher, *, burst=100, rate=50.0, ttl=300.0, max_entries=10_000, **kw):
    bucket = _core.TokenBucket(burst, rate) if burst else None
    dedup = _core.Deduplicator(ttl, max_entries)
    return _core.FrameReceiver(cipher, dedup, bucket=bucket, **kw), dedup


def check_drop(receiver, frame, now, reason, detail=True):
    got = receiver.receive(frame, now)
    assert got == (reason, None), receiver.last_error
    assert reason in REASONS
    if detail:
        assert receiver.last_error, f"no detail for {reason}"
    return receiver.last_error


def test_ok_then_duplicate(cipher):
    receiver, dedup = make(cipher, peer_id=PEER)
    msg = message("m1")
    frame = cipher.seal(msg)
    assert receiver.receive(frame, T) == ("ok", msg)
    assert receiver.last_error == ""
    assert dedup.contains("m1", T)
    assert receiver.receive(frame, T + 1) == ("duplicate", None)
    # a fresh seal of the same message (new nonce) is still the same id
    assert receiver.receive(cipher.seal(msg), T + 2) == ("duplicate", None)
    assert receiver.receive(cipher.seal(message("m2")), T + 2) == ("ok", message("m2"))


def test_result_types(cipher):
    receiver, _ = make(cipher)
    reason, body = receiver.receive(cipher.seal(message("m1")), T)
    assert type(reason) is str and type(body) is bytes
    reason, body = receiver.receive(b"junk", T)
    assert type(reason) is str and body is None


def test_rate_limited_when_bucket_is_empty(cipher):
    receiver, _ = make(cipher, burst=2, rate=1.0)
    assert receiver.receive(cipher.seal(message("a")), T)[0] == "ok"
    assert receiver.receive(cipher.seal(message("b")), T)[0] == "ok"
    check_drop(receiver, cipher.seal(message("c")), T, "rate_limited", detail=False)
    # rate-limited frames are not marked: the same message is fine once a token is back
    assert receiver.receive(cipher.seal(message("c")), T + 1.0)[0] == "ok"


def test_bucket_is_taken_before_anything_else(cipher):
    receiver, _ = make(cipher, burst=1, rate=0.0)
    check_drop(receiver, b"garbage", T, "malformed")
    check_drop(receiver, cipher.seal(message("a")), T, "rate_limited", detail=False)


def test_without_bucket_nothing_is_rate_limited(cipher):
    receiver, _ = make(cipher, burst=0)
    for i in range(500):
        assert receiver.receive(cipher.seal(message(f"m{i}")), T)[0] == "ok"


def test_shared_bucket_and_dedup(cipher):
    bucket = _core.TokenBucket(3, 0.0)
    dedup = _core.Deduplicator(300.0, 100)
    r1 = _core.FrameReceiver(cipher, dedup, bucket=bucket)
    r2 = _core.FrameReceiver(cipher, dedup, bucket=bucket)
    frame = cipher.seal(message("m1"))
    assert r1.receive(frame, T)[0] == "ok"
    assert r2.receive(frame, T)[0] == "duplicate"
    dedup.mark("sent-by-me", T)
    assert r2.receive(cipher.seal(message("sent-by-me")), T)[0] == "duplicate"
    assert r1.receive(frame, T)[0] == "rate_limited"
    assert bucket.tokens(T) == 0.0


@pytest.mark.parametrize(
    ("ts", "now", "reason"),
    [
        (T - 300.001, T, "stale"),  # older than max_age
        (T - 299.999, T, "ok"),  # just inside max_age
        (T + 60.0, T, "ok"),  # exactly max_future ahead
        (T + 60.001, T, "stale"),  # further in the future
        (T, T + 301, "stale"),
        (T - 3600 * 24, T, "stale"),
        (T + 3600 * 24, T, "stale"),
    ],
    ids=["too_old", "oldest_ok", "future_edge_ok", "too_far_ahead", "late_arrival", "a_day_old", "a_day_ahead"],
)
def test_replay_window(cipher, ts, now, reason):
    receiver, _ = make(cipher)
    frame = cipher.seal(message("m1", ts=ts))
    if reason == "ok":
        assert receiver.receive(frame, now)[0] == "ok"
    else:
        check_drop(receiver, frame, now, reason)


def test_custom_window(cipher):
    receiver, _ = make(cipher, max_age=10.0, max_future=0.0)
    check_drop(receiver, cipher.seal(message("a", ts=T - 11)), T, "stale")
    check_drop(receiver, cipher.seal(message("b", ts=T + 0.5)), T, "stale")
    assert receiver.receive(cipher.seal(message("c", ts=T - 9)), T)[0] == "ok"


@pytest.mark.parametrize(
    "ts",
    [None, "", "yesterday", "2025-01-01", "2025-01-01T00:00:00", "2025-13-01T00:00:00Z", 1735689600],
    ids=["missing", "empty", "word", "date_only", "no_zone", "month_13", "number"],
)
def test_missing_or_bad_ts(cipher, ts):
    receiver, _ = make(cipher)
    if isinstance(ts, int):  # not a string at all: not a transport Message
        frame = cipher.seal(orjson.dumps({"id": "m1", "type": "ping", "ts": ts}))
        check_drop(receiver, frame, T, "invalid_message")
    else:
        check_drop(receiver, cipher.seal(message("m1", ts=ts)), T, "stale")


def test_ts_with_offset_and_fraction(cipher):
    receiver, _ = make(cipher)
    # 2025-01-01T02:00:00.5+02:00 is T + 0.5
    frame = cipher.seal(message("m1", ts="2025-01-01T02:00:00.5+02:00"))
    assert receiver.receive(frame, T + 0.5 + 299.9)[0] == "ok"
    check_drop(receiver, cipher.seal(message("m2", ts="2025-01-01T02:00:00.5+02:00")), T + 0.5 + 300.1, "stale")


def test_wrong_sender(cipher):
    receiver, dedup = make(cipher, peer_id=PEER)
    assert receiver.peer_id == PEER
    detail = check_drop(receiver, cipher.seal(message("m1", sender="mallory")), T, "wrong_sender")
    assert "mallory" in detail
    assert not dedup.contains("m1", T)  # dropped frames are not marked
    assert receiver.receive(cipher.seal(message("m1")), T)[0] == "ok"
    # no from / empty from: nothing to compare
    assert receiver.receive(cipher.seal(message("m2", sender=None)), T)[0] == "ok"
    assert receiver.receive(cipher.seal(message("m3", sender="")), T)[0] == "ok"


def test_without_peer_id_any_sender_passes(cipher):
    receiver, _ = make(cipher)
    assert receiver.peer_id is None
    assert receiver.receive(cipher.seal(message("m1", sender="anyone")), T)[0] == "ok"


def test_undecryptable(cipher):
    receiver, _ = make(cipher)
    other = _core.SmsgCipher(bytes(range(32)))
    detail = check_drop(receiver, other.seal(message("m1")), T, "undecryptable")
    assert detail == "authentication failed"
    frame = bytearray(cipher.seal(message("m2")))
    frame[-1] ^= 1
    check_drop(receiver, bytes(frame), T, "undecryptable")
    check_drop(receiver, cipher.seal(message("m3")) + b"\0", T, "undecryptable")


@pytest.mark.parametrize(
    "frame",
    [b"", b"SMS", b"garbage!!", b"SMSG\x01\0\0\0\0", b"SMSG\x02\0\0", b"SMSG\x02\x01\0\0\x01", b"SMSG\x02\0\0\0\x02[]"],
    ids=["empty", "short", "garbage", "version_1", "short_length", "header_too_large", "header_not_object"],
)
def test_malformed(cipher, frame):
    receiver, _ = make(cipher)
    check_drop(receiver, frame, T, "malformed")


@pytest.mark.parametrize(
    "body",
    [b"[]", b"hello", b"null", b'"str"', b"{", b'{"type":"ping"}', b'{"id":""}', b'{"id":5}'],
    ids=["array", "text", "null", "string", "broken", "no_id", "empty_id", "id_number"],
)
def test_invalid_message(cipher, body):
    receiver, _ = make(cipher)
    check_drop(receiver, cipher.seal(body), T, "invalid_message")


def test_invalid_envelope_is_invalid_message(cipher, vectors):
    case = vectors("negative.json")["not_smsg_json"]
    receiver, _ = make(_core.SmsgCipher(bytes.fromhex(case["shared_secret_hex"])))
    check_drop(receiver, bytes.fromhex(case["frame_hex"]), T, "invalid_message")


def test_every_vector_frame_is_accepted(vectors):
    receiver, _ = make(_core.SmsgCipher(SECRET), burst=0, ttl=3600 * 24 * 365, max_age=3600 * 24 * 365)
    for case in vectors("smsg_frames.json").values():
        message_json = bytes.fromhex(case["message_json_hex"])
        ts = _core.parse_timestamp(orjson.loads(message_json)["ts"])
        assert receiver.receive(bytes.fromhex(case["frame_hex"]), ts) == ("ok", message_json), case["name"]


def test_last_error_describes_the_last_frame(cipher):
    receiver, _ = make(cipher, peer_id=PEER)
    check_drop(receiver, b"junk", T, "malformed")
    assert receiver.receive(cipher.seal(message("m1")), T)[0] == "ok"
    assert receiver.last_error == ""
    check_drop(receiver, cipher.seal(message("m2", sender="x")), T, "wrong_sender")
    check_drop(receiver, cipher.seal(message("m1")), T, "duplicate", detail=False)
    assert "from" not in receiver.last_error  # not the previous frame's detail


def test_every_reason_is_reachable(cipher):
    receiver, _ = make(cipher, burst=50, rate=0.0, peer_id=PEER)
    other = _core.SmsgCipher(bytes(32))
    seen = set()
    frames = [
        b"junk",
        other.seal(message("x")),
        cipher.seal(b"[]"),
        cipher.seal(message("y", sender="z")),
        cipher.seal(message("s", ts=T - 1000)),
        cipher.seal(message("ok")),
        cipher.seal(message("ok")),
    ]
    for frame in frames:
        seen.add(receiver.receive(frame, T)[0])
    empty, _ = make(cipher, burst=1, rate=0.0)
    empty.receive(b"junk", T)
    seen.add(empty.receive(b"junk", T)[0])
    assert seen == REASONS | {"ok"}
    assert "ok" not in REASONS


def test_evicted_frame_cannot_be_replayed(cipher):
    receiver, dedup = make(cipher, max_entries=2)
    a = cipher.seal(message("A", ts=T))
    b = cipher.seal(message("B", ts=T + 1))
    c = cipher.seal(message("C", ts=T + 2))
    assert receiver.receive(a, T + 2)[0] == "ok"
    assert receiver.receive(b, T + 2)[0] == "ok"
    assert receiver.receive(c, T + 2)[0] == "ok"
    assert dedup.evicted == 1
    assert not dedup.contains("A", T + 3)
    check_drop(receiver, a, T + 3, "stale")
    assert receiver.receive(b, T + 3)[0] == "duplicate"
    # a new message newer than anything evicted is fine
    assert receiver.receive(cipher.seal(message("D", ts=T + 3)), T + 3)[0] == "ok"


def test_large_frame(cipher):
    receiver, _ = make(cipher)
    msg = message("big", payload={"data": "x" * (1 << 20)})
    frame = cipher.seal(msg)
    assert receiver.receive(frame, T) == ("ok", msg)
    assert receiver.receive(frame, T)[0] == "duplicate"
    tampered = bytearray(frame)
    tampered[len(frame) // 2] ^= 0x40
    check_drop(receiver, bytes(tampered), T, "undecryptable")


def test_frame_types(cipher):
    receiver, _ = make(cipher)
    frame = cipher.seal(message("m1"))
    assert receiver.receive(bytearray(frame), T)[0] == "ok"
    with pytest.raises(TypeError):
        receiver.receive(frame.decode("latin-1"), T)
    with pytest.raises(TypeError):
        receiver.receive(memoryview(frame), T)
    with pytest.raises(ValueError):
        receiver.receive(frame, float("nan"))


def test_default_clock(cipher):
    receiver, _ = make(cipher)
    frame = cipher.seal(message("now", ts=time.time()))
    assert receiver.receive(frame)[0] == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_age": 0.0},
        {"max_age": -1.0},
        {"max_age": float("nan")},
        {"max_age": float("inf")},
        {"max_future": -1.0},
        {"max_future": float("nan")},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_constructor_value_errors(cipher, kwargs):
    with pytest.raises(ValueError):
        _core.FrameReceiver(cipher, _core.Deduplicator(300.0, 10), **kwargs)


def test_constructor_type_errors(cipher):
    dedup = _core.Deduplicator(300.0, 10)
    with pytest.raises(TypeError):
        _core.FrameReceiver(SECRET, dedup)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.FrameReceiver(cipher, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.FrameReceiver(cipher, dedup, bucket=dedup)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.FrameReceiver(cipher, dedup, _core.TokenBucket(1, 1.0))  # type: ignore[misc]
    assert _core.FrameReceiver(cipher, dedup, max_future=0.0).peer_id is None
