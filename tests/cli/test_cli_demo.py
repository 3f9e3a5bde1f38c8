"""smsgnet demo, and the frame helpers it uses."""

from __future__ import annotations

import json
import time

import pytest

from smsgnet import Message, _core
from smsgnet.cli import describe_frame


def test_demo_runs_quickly_and_exits_0(cli):
    start = time.monotonic()
    r = cli("demo")
    wall = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    for heading in ("1. Nodes", "2. Handshake", "3. Messages both ways", "4. Broadcast", "5. On the wire",
                    "6. Replay", "7. Ping", "8. What each node", "9. Shutdown"):
        assert heading in out
    assert "magic    'SMSG'" in out and "version  0x02" in out
    assert '{"algorithm":"chacha20poly1305","version":"1.0"}' in out
    assert "reached bob, carol; alice herself: no" in out
    assert "disconnect code 1004" in out
    assert "WRONG" not in out and ": NO\n" not in out
    assert wall < 15  # generous for a shared machine; the demo itself is checked below


def test_demo_json(cli):
    r = cli("demo", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["elapsedMs"] < 3000
    assert set(d["nodes"]) == {"alice", "bob", "carol"}
    assert d["nodes"]["alice"]["role"] == "controller" and d["nodes"]["bob"]["role"] == "worker"
    assert all(n["url"].startswith("ws://127.0.0.1:") for n in d["nodes"].values())
    assert d["handshake"]["sameSecret"] and d["handshake"]["bobSeesAliceProven"]
    assert d["handshake"]["protocol"] == "2.0" and d["handshake"]["noiseMessage1Bytes"] == 96
    assert [n["maxProtocol"] for n in d["nodes"].values()] == ["2.0", "2.0", "1.0"]
    assert d["broadcast"]["linksByProtocol"] == {"1.0": 1, "2.0": 1}  # alice: carol on 1.0, bob on 2.0
    assert d["request"]["replyTo"] == d["request"]["id"]
    assert d["broadcast"]["reached"] == ["bob", "carol"] and d["broadcast"]["failures"] == {}
    f = d["frame"]
    assert (f["magic"], f["version"], f["header_len"]) == ("SMSG", 2, 48)
    assert len(f["nonce_hex"]) == 48 and f["carolOpensIt"]
    assert f["record2Len"] == f["messageJsonLen"] + 17
    assert f["frame_len"] == 9 + 48 + 24 + f["sealed_len"]
    assert d["drops"]["bob"] == {"duplicate": 1}
    assert d["drops"]["alice"] == {} and d["drops"]["carol"] == {}
    assert [m["type"] for m in d["received"]["carol"]] == ["announce"]
    assert sum(m["type"] == "note" for m in d["received"]["bob"]) == 1
    assert len(d["pingMs"]) == 3
    assert d["shutdown"]["bobSawCode"] == 1004


def test_describe_frame_reads_a_reference_frame(vectors):
    case = vectors("smsg_frames.json")["ping"]
    frame = bytes.fromhex(case["frame_hex"])
    info = describe_frame(frame)
    assert info["magic"] == "SMSG" and info["version"] == 2
    assert info["header_len"] == case["trix_header_len"] == 48
    assert info["header"] == case["trix_header_json"]
    assert info["nonce_hex"] == case["nonce_hex"]
    assert info["sealed_len"] == case["aead_ciphertext_len"] + 16
    assert info["frame_len"] == case["frame_len"] == len(frame)


def test_describe_frame_refuses_short_input():
    with pytest.raises(ValueError):
        describe_frame(b"SMSG\x02")
    with pytest.raises(ValueError):
        describe_frame(b"SMSG\x02\x00\x00\x00\x30" + b"{}")


def test_seal_sample_matches_what_the_peer_can_open():
    from smsgnet.cli import seal_sample

    class FakeConn:  # seal_sample needs only the shared secret
        shared_secret = bytes(range(32))

    msg = Message.new("note", "a" * 32, "b" * 32, {"x": 1})
    frame = seal_sample(FakeConn(), msg)  # type: ignore[arg-type]
    assert _core.SmsgCipher(bytes(range(32))).open(frame) == msg.to_json()
