"""The pure-Python baseline of the benchmarks (benches/baseline_pure_python.py)
reproduces the reference vectors byte for byte and agrees with the native core,
so the benchmark comparison is like for like."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgnet import _core

BASELINE_PATH = Path(__file__).resolve().parents[2] / "benches" / "baseline_pure_python.py"


def load_baseline():
    name = "baseline_pure_python"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BASELINE_PATH)
    assert spec is not None and spec.loader is not None, BASELINE_PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


base = load_baseline()
h = bytes.fromhex


@pytest.mark.vectors("smsg_frames.json")
def test_baseline_seals_the_reference_frames(case):
    cipher = base.SmsgCipher(h(case["shared_secret_hex"]))
    message = h(case["message_json_hex"])
    frame = cipher.seal(message, nonce=h(case["nonce_hex"]), timestamp=case["smsg_timestamp"])
    assert frame.hex() == case["frame_hex"]
    assert base.envelope(message, case["smsg_timestamp"]).hex() == case["smsg_plaintext_hex"]
    assert cipher.open(frame) == message
    # and it is the native frame too
    native = _core.SmsgCipher(h(case["shared_secret_hex"]))
    assert native.seal(message, nonce=h(case["nonce_hex"]), timestamp=case["smsg_timestamp"]) == frame


@pytest.mark.vectors("xor_keystream.json")
def test_baseline_keystream(case):
    assert base.keystream(h(case["nonce_hex"]), 100).hex() == case["keystream_100_hex"]


@pytest.mark.vectors("ecdh.json")
def test_baseline_ecdh(case):
    a, b = case["a"], case["b"]
    assert base.public_key(h(a["private_key_hex"])).hex() == a["public_key_hex"]
    assert base.node_id(h(a["public_key_hex"])) == a["node_id"]
    secret = base.derive_shared_secret(h(a["private_key_hex"]), h(b["public_key_hex"]))
    assert secret.hex() == case["shared_secret_hex"]
    assert base.smsg_password(secret) == case["password"]


@pytest.mark.vectors("hmac_challenge.json")
def test_baseline_hmac(case):
    secret, challenge = h(case["shared_secret_hex"]), h(case["challenge_hex"])
    assert base.sign_challenge(challenge, secret).hex() == case["challenge_response_hex"]
    assert base.verify_challenge(challenge, h(case["challenge_response_hex"]), secret)


@pytest.mark.vectors("negative.json", where=lambda c: not c["name"].startswith("ecdh_"))
def test_baseline_agrees_on_negative_frames(case):
    cipher = base.SmsgCipher(h(case["shared_secret_hex"]))
    if case["name"].startswith("ACCEPTED_"):
        assert cipher.open(h(case["frame_hex"])) == case["decrypted_message_json"].encode()
    else:
        with pytest.raises(base.BaselineError):
            cipher.open(h(case["frame_hex"]))


texts = st.text(alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from('<>&"\\\b\f\n\u2028\u2029\x00\x1f')))


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(min_value=0, max_value=2**40))
def test_baseline_envelope_matches_native(text, timestamp):
    assert base.envelope(text, timestamp) == _core.envelope(text, timestamp)


@settings(max_examples=50, deadline=None)
@given(texts)
def test_baseline_and_native_open_each_others_frames(text):
    secret = bytes(range(32))
    msg = orjson.dumps({"id": "x", "payload": text})
    native, baseline = _core.SmsgCipher(secret), base.SmsgCipher(secret)
    nonce = bytes(range(24))
    assert native.seal(msg, nonce=nonce, timestamp=7) == baseline.seal(msg, nonce=nonce, timestamp=7)
    assert baseline.open(native.seal(msg)) == msg
    assert native.open(baseline.seal(msg)) == msg


def test_baseline_receiver_agrees_with_native():
    secret = bytes(range(32))
    cipher = _core.SmsgCipher(secret)
    t = 1735689600.0

    def msg(mid, ts="2025-01-01T00:00:00Z", sender="p"):
        return orjson.dumps({"id": mid, "type": "ping", "from": sender, "to": "", "ts": ts, "payload": None})

    frames = [
        cipher.seal(msg("a")),
        cipher.seal(msg("a")),
        cipher.seal(msg("b", ts="2024-01-01T00:00:00Z")),
        cipher.seal(msg("c", sender="q")),
        cipher.seal(b"[]"),
        cipher.seal(b'{"type":"ping"}'),
        _core.SmsgCipher(bytes(32)).seal(msg("d")),
        b"junk",
        cipher.seal(msg("e", ts="2025-01-01T01:00:00.5+01:00")),
        cipher.seal(msg("f")),
    ]
    native = _core.FrameReceiver(
        cipher, _core.Deduplicator(300.0, 100), bucket=_core.TokenBucket(9, 0.0), peer_id="p"
    )
    baseline = base.FrameReceiver(
        base.SmsgCipher(secret), base.Deduplicator(300.0, 100), bucket=base.TokenBucket(9, 0.0), peer_id="p"
    )
    assert [native.receive(f, t) for f in frames] == [baseline.receive(f, t) for f in frames]
    assert [native.receive(f, t)[0] for f in frames][-1] == "rate_limited"


def test_baseline_parse_timestamp_matches_native():
    for ts in ["2025-01-01T00:00:00Z", "2025-06-30T23:59:59.5+02:00", "2025-01-01T00:00:01.000000001Z",
               "2025-01-01", "nope", "2025-01-01T00:00:00-00:30"]:
        assert base.parse_timestamp(ts) == _core.parse_timestamp(ts), ts


def test_baseline_token_bucket_and_dedup_behave_like_native():
    nb, bb = _core.TokenBucket(3, 10.0), base.TokenBucket(3, 10.0)
    times = [0.0, 0.0, 0.0, 0.0, 0.05, 0.1, 0.1, 0.35, 0.35, 0.35, 5.0]
    assert [nb.allow(t) for t in times] == [bb.allow(t) for t in times]
    nd, bd = _core.Deduplicator(10.0, 3), base.Deduplicator(10.0, 3)
    steps = [("a", 0), ("a", 1), ("b", 2), ("c", 3), ("d", 4), ("a", 5), ("b", 11), ("c", 20)]
    assert [nd.check_and_mark(m, t) for m, t in steps] == [bd.check_and_mark(m, t) for m, t in steps]
    assert nd.evicted == bd.evicted
