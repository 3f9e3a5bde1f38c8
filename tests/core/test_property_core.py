"""Property tests of seal/open and the receive step (STYLE.md point 10):
any input to open() either works or raises an SmsgError subclass."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smsgnet import _core

SECRET = bytes.fromhex("dead45a1d43d6902aa9240b43c0d75a0b5fc750660590d6d45461cbfc4010684")
CIPHER = _core.SmsgCipher(SECRET)
HEADER_END = 9 + 48  # magic, version, length, the 48-byte header
SPECIALS = '<>&"\\/\u2028\u2029\x00\x01\x08\x0c\x1f\x7f\t\n\r\ufeff\U0001f680\U0001f44d\U0001f3fd é世'

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIALS)),
    max_size=300,
)


def message_json(mid: str, payload: str) -> bytes:
    return orjson.dumps({"id": mid, "payload": payload})


messages = st.builds(message_json, texts, texts)


@BOUNDED
@given(messages)
@example(message_json("x", SPECIALS))
@example(message_json("", ""))
@example(message_json("<\u2028>", '"\\"' * 10))
def test_open_seal_roundtrip(msg):
    frame = CIPHER.seal(msg)
    assert CIPHER.open(frame) == msg
    # the same through str
    assert CIPHER.open(CIPHER.seal(msg.decode("utf-8"))) == msg


@BOUNDED
@given(texts, st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_envelope_is_json_with_go_escaping(text, timestamp):
    envelope = _core.envelope(text, timestamp)
    parsed = json.loads(envelope)
    assert parsed == {"body": text, "timestamp": timestamp}
    assert list(parsed) == ["body", "timestamp"]
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw.encode() not in envelope
    assert all(b >= 0x20 for b in envelope)  # no raw control bytes


def test_roundtrip_2_mib():
    payload = (SPECIALS + "abcdefghijklmnopqrstuvwxyz0123456789") * (2 * 1024 * 1024 // 60)
    msg = message_json("big", payload)
    assert len(msg) > 2 * 1024 * 1024
    frame = CIPHER.seal(msg, nonce=bytes(24), timestamp=1)
    assert CIPHER.open(frame) == msg
    assert CIPHER.open(bytearray(frame)) == msg


def outcome_of_tampered(frame: bytes, index: int, mask: int, original: bytes) -> None:
    tampered = bytearray(frame)
    tampered[index] ^= mask
    try:
        body = CIPHER.open(bytes(tampered))
    except _core.SmsgError:
        return
    # only the unauthenticated header may change without an error, and the
    # message must be exactly the same
    assert HEADER_END > index >= 9, f"flipping byte {index} was accepted"
    assert body == original


@BOUNDED
@given(messages, st.data())
def test_any_single_byte_change_fails_cleanly(msg, data):
    frame = CIPHER.seal(msg)
    index = data.draw(st.integers(min_value=0, max_value=len(frame) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    outcome_of_tampered(frame, index, mask, msg)


def test_every_byte_of_a_frame_flipped():
    msg = message_json("m", SPECIALS)
    frame = CIPHER.seal(msg)
    for index in range(len(frame)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            outcome_of_tampered(frame, index, mask, msg)


@BOUNDED
@given(st.binary(max_size=512))
@example(b"")
@example(b"SMSG")
@example(b"SMSG\x02")
@example(b"SMSG\x02\xff\xff\xff\xff")
@example(b"SMSG\x02\x00\x00\x00\x00" + bytes(40))
def test_random_bytes_never_crash_open(data):
    with pytest.raises(_core.SmsgError):
        CIPHER.open(data)


@BOUNDED
@given(st.binary(min_size=0, max_size=300), st.sampled_from([b"{}", b"[]", b"", b"nope", b'{"compression":"gzip"}']))
def test_random_payload_after_a_valid_container_never_crashes(payload, header):
    frame = b"SMSG\x02" + len(header).to_bytes(4, "big") + header + payload
    with pytest.raises(_core.SmsgError):
        CIPHER.open(frame)


@BOUNDED
@given(messages, st.data())
def test_prefixes_of_valid_frames_fail_cleanly(msg, data):
    frame = CIPHER.seal(msg)
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1), label="cut")
    with pytest.raises(_core.SmsgError):
        CIPHER.open(frame[:cut])


def test_every_prefix_of_a_frame_fails_cleanly():
    frame = CIPHER.seal(message_json("m", "payload"))
    for cut in range(len(frame)):
        with pytest.raises(_core.SmsgError):
            CIPHER.open(frame[:cut])


@BOUNDED
@given(st.one_of(st.binary(max_size=300), messages.map(CIPHER.seal)), st.floats(-1e10, 1e10))
def test_receive_never_raises_on_peer_input(frame, now):
    dedup = _core.Deduplicator(300.0, 100)
    receiver = _core.FrameReceiver(CIPHER, dedup, bucket=_core.TokenBucket(10, 1.0))
    reason, body = receiver.receive(frame, now)
    if reason == "ok":
        assert body is not None and CIPHER.open(frame) == body
    else:
        assert reason in _core.drop_reasons() and body is None
