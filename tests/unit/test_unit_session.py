"""Session: one peer's frames after the handshake, sans I/O (PROTOCOL.md §7).

Receive order per frame: token bucket → decrypt → duplicate check → handler.
Every frame that does not reach the handler is counted under its reason. The
clock is passed in, so nothing here sleeps.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest

from smsgnet import Message, NodeManager, TransportConfig
from smsgnet import _core
from smsgnet.message import format_timestamp
from smsgnet.session import (
    DROP_REASONS,
    MessageReceived,
    PeerDisconnected,
    PingReceived,
    PongReceived,
    Session,
    make_deduplicator,
)

ALICE = NodeManager.from_private_key(bytes.fromhex(
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"), "alice", "controller")
BOB = NodeManager.from_private_key(bytes.fromhex(
    "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"), "bob", "worker")
SECRET = ALICE.derive_shared_secret(BOB.public_key)
NO_LIMIT = TransportConfig(rate_limit_burst=None)


def pair(config: TransportConfig = NO_LIMIT) -> tuple[Session, Session]:
    """Alice's session with Bob and Bob's with Alice: one secret, a dedup table each."""
    return (
        Session(BOB.node_id, SECRET, make_deduplicator(config), config),
        Session(ALICE.node_id, SECRET, make_deduplicator(config), config),
    )


def recv(session: Session, frame, now: float | None = None) -> Message | None:
    """The message a frame handed out, or None when it was dropped."""
    for event in session.receive(frame, now):
        if isinstance(event, (MessageReceived, PingReceived, PongReceived, PeerDisconnected)):
            return event.message
    return None


def message(now: float, type: str = "echo", payload=None, *, from_: str = ALICE.node_id) -> Message:
    msg = Message.new(type, from_, BOB.node_id, payload if payload is not None else {"n": 1})
    msg.ts = format_timestamp(int(now * 1_000_000_000))
    return msg


def test_a_sealed_message_arrives_equal():
    alice, bob = pair()
    now = time.time()
    sent = message(now, payload={"text": "Grüße <b>&</b> \u2028 🚀", "list": [1, None, True]})
    sent.reply_to = "00000000-0000-4000-8000-000000000001"
    received = recv(bob, alice.seal(sent), now)
    assert received == sent
    assert received.to_json() == sent.to_json()
    assert (alice.messages_out, bob.messages_in) == (1, 1)
    assert bob.drops == Counter() and bob.last_drop == ""


def test_both_directions_work_with_one_secret():
    alice, bob = pair()
    now = time.time()
    ping = Message.ping(ALICE.node_id, BOB.node_id)
    ping.ts = format_timestamp(int(now * 1e9))
    got = recv(bob, alice.seal(ping), now)
    pong = got.pong()
    pong.ts = format_timestamp(int(now * 1e9))
    back = recv(alice, bob.seal(pong), now)
    assert back.reply_to == ping.id and back.payload["sentAt"] == ping.payload["sentAt"]


def test_frames_are_smsg_containers_with_a_fresh_nonce_each():
    alice, _ = pair()
    msg = message(time.time())
    one, two = alice.seal(msg), alice.seal_json(msg.id + "-2", msg.to_json())
    assert one[:5] == b"SMSG\x02"
    assert one[57:81] != two[57:81]


def test_seal_json_seals_the_exact_bytes():
    alice, bob = pair()
    now = time.time()
    msg = message(now)
    raw = msg.to_json()
    assert _core.SmsgCipher(SECRET).open(alice.seal_json(msg.id, raw)) == raw


# ---------------------------------------------------------------------------
# duplicates


def test_a_duplicate_frame_is_dropped_and_counted():
    alice, bob = pair()
    now = time.time()
    frame = alice.seal(message(now))
    assert recv(bob, frame, now) is not None
    assert recv(bob, frame, now + 1) is None
    assert bob.drops == Counter({"duplicate": 1})
    assert bob.last_drop.startswith("duplicate")
    assert bob.messages_in == 1


def test_a_resealed_copy_with_the_same_id_is_a_duplicate():
    alice, bob = pair()
    now = time.time()
    msg = message(now)
    assert recv(bob, alice.seal(msg), now) is not None
    msg.payload = {"n": 2}
    assert recv(bob, _core.SmsgCipher(SECRET).seal(msg.to_json()), now) is None
    assert bob.drops["duplicate"] == 1


def test_a_reflected_frame_is_dropped_as_a_duplicate():
    # Bob sends the frame Alice sealed straight back: its id is already in Alice's table
    alice, _ = pair()
    now = time.time()
    msg = message(now)
    frame = alice.seal(msg)
    assert alice.dedup.contains(msg.id)
    assert recv(alice, frame, now) is None
    assert alice.drops == Counter({"duplicate": 1})
    assert alice.messages_in == 0


def test_the_same_id_from_two_peers_is_delivered_from_both():
    # issue 8: one replay table per node, partitioned by sender; with "first one
    # wins" a peer could suppress another's broadcast by sending its ID first
    config = NO_LIMIT
    dedup = make_deduplicator(config)
    from_bob = Session(BOB.node_id, SECRET, dedup, config)
    other = NodeManager.from_private_key(b"\x42" * 32)
    other_secret = ALICE.derive_shared_secret(other.public_key)
    from_other = Session(other.node_id, other_secret, dedup, config)
    now = time.time()
    msg = message(now, from_=BOB.node_id)
    assert recv(from_bob, _core.SmsgCipher(SECRET).seal(msg.to_json()), now) is not None
    assert recv(from_other, _core.SmsgCipher(other_secret).seal(msg.to_json()), now) is not None
    # ...while each sender's own replay is still refused
    assert recv(from_other, _core.SmsgCipher(other_secret).seal(msg.to_json()), now) is None
    assert from_other.drops == Counter({"duplicate": 1})


def test_dedup_remembers_ids_for_ttl_plus_clock_skew():
    config = TransportConfig(dedup_ttl=300, max_clock_skew=60, dedup_max_entries=1234)
    dedup = make_deduplicator(config)
    assert dedup.ttl == 360
    assert dedup.max_entries == 1234


def test_a_replay_after_the_dedup_window_is_stale():
    alice, bob = pair()
    now = time.time()
    frame = alice.seal(message(now))
    assert recv(bob, frame, now) is not None
    assert recv(bob, frame, now + 301) is None
    assert bob.drops == Counter({"stale": 1})


# ---------------------------------------------------------------------------
# every other drop reason


def test_text_frames_after_the_handshake_are_dropped():
    _, bob = pair()
    assert recv(bob, '{"id":"x","type":"ping"}', time.time()) is None
    assert bob.drops == Counter({"unexpected_text": 1})
    assert bob.last_drop.startswith("unexpected_text")


def test_rate_limiting_drops_frames_beyond_the_burst():
    config = TransportConfig(rate_limit_burst=3, rate_limit_per_sec=1.0)
    alice, bob = pair(config)
    now = time.time()
    frames = [alice.seal(message(now)) for _ in range(5)]
    results = [recv(bob, f, now) for f in frames]
    assert [r is not None for r in results] == [True, True, True, False, False]
    assert bob.drops == Counter({"rate_limited": 2})
    # one token back after a second
    assert recv(bob, alice.seal(message(now + 1.0)), now + 1.0) is not None
    assert recv(bob, alice.seal(message(now + 1.0)), now + 1.0) is None
    assert bob.drops == Counter({"rate_limited": 3})


def test_the_token_bucket_comes_before_decryption():
    config = TransportConfig(rate_limit_burst=1, rate_limit_per_sec=0.0)
    alice, bob = pair(config)
    now = time.time()
    assert recv(bob, b"garbage", now) is None
    assert recv(bob, alice.seal(message(now)), now) is None
    assert bob.drops == Counter({"malformed": 1, "rate_limited": 1})


def test_default_rate_limit_is_a_burst_of_100():
    config = TransportConfig()
    alice, bob = pair(config)
    now = time.time()
    accepted = sum(recv(bob, alice.seal(message(now)), now) is not None for _ in range(101))
    assert accepted == 100 and bob.drops == Counter({"rate_limited": 1})


def test_a_frame_under_another_key_is_undecryptable():
    _, bob = pair()
    now = time.time()
    stranger = _core.SmsgCipher(b"\x07" * 32)
    assert recv(bob, stranger.seal(message(now).to_json()), now) is None
    assert bob.drops == Counter({"undecryptable": 1})


def test_a_flipped_bit_is_undecryptable():
    alice, bob = pair()
    now = time.time()
    frame = bytearray(alice.seal(message(now)))
    frame[-20] ^= 1
    assert recv(bob, bytes(frame), now) is None
    assert bob.drops == Counter({"undecryptable": 1})


@pytest.mark.parametrize("frame", [b"", b"SMSG", b"not a frame at all", b"SMSG\x01" + bytes(60)])
def test_a_frame_that_is_no_container_is_malformed(frame):
    _, bob = pair()
    assert recv(bob, frame, time.time()) is None
    assert bob.drops == Counter({"malformed": 1})


def test_a_body_that_is_not_a_message_is_an_invalid_message():
    alice, bob = pair()
    now = time.time()
    assert recv(bob, alice.seal_json("x", b"[1,2,3]"), now) is None
    assert recv(bob, alice.seal_json("y", b'{"type":"ping","ts":"%s"}' % format_timestamp().encode()), now) is None
    assert bob.drops == Counter({"invalid_message": 2})


def test_a_message_with_a_non_string_field_is_an_invalid_message():
    alice, bob = pair()
    now = time.time()
    body = b'{"id":"m-1","type":5,"from":"","to":"","ts":"%s","payload":null}' % format_timestamp(
        int(now * 1e9)).encode()
    assert recv(bob, alice.seal_json("m-1", body), now) is None
    assert bob.drops == Counter({"invalid_message": 1})
    assert bob.last_drop.startswith("invalid_message")


@pytest.mark.parametrize("age", [301.0, -61.0, None], ids=["too-old", "too-far-ahead", "no-ts"])
def test_a_message_outside_the_replay_window_is_stale(age):
    alice, bob = pair()
    now = time.time()
    msg = message(now - age if age is not None else now)
    if age is None:
        msg.ts = ""
    assert recv(bob, alice.seal(msg), now) is None
    assert bob.drops == Counter({"stale": 1})


def test_a_message_inside_the_replay_window_is_accepted():
    alice, bob = pair()
    now = time.time()
    assert recv(bob, alice.seal(message(now - 299)), now) is not None
    assert recv(bob, alice.seal(message(now + 59)), now) is not None


def test_strict_sender_drops_a_message_claiming_another_sender():
    config = dataclasses.replace(NO_LIMIT, strict_sender=True)
    alice, bob = pair(config)
    now = time.time()
    impostor = NodeManager.from_private_key(b"\x42" * 32).node_id
    assert recv(bob, alice.seal(message(now, from_=impostor)), now) is None
    assert recv(bob, alice.seal(message(now, from_="")), now) is not None
    assert recv(bob, alice.seal(message(now)), now) is not None
    assert bob.drops == Counter({"wrong_sender": 1})


def test_drops_count_every_reason_separately():
    config = TransportConfig(rate_limit_burst=8, rate_limit_per_sec=0.0, strict_sender=True)
    alice, bob = pair(config)
    now = time.time()
    good = alice.seal(message(now))
    frames = [
        good,                                                          # accepted
        good,                                                          # duplicate
        b"junk",                                                       # malformed
        _core.SmsgCipher(b"\x07" * 32).seal(message(now).to_json()),    # undecryptable
        alice.seal_json("x", b"[]"),                                   # invalid_message
        alice.seal(message(now, from_=BOB.node_id)),                   # wrong_sender (Bob's own id)
        alice.seal(message(now - 1000)),                               # stale
        "text",                                                        # unexpected_text (no token used)
        alice.seal(message(now)),                                      # accepted (8th token)
        alice.seal(message(now)),                                      # rate_limited
    ]
    delivered = [recv(bob, f, now) for f in frames]
    assert sum(m is not None for m in delivered) == 2
    assert bob.drops == Counter({
        "duplicate": 1, "malformed": 1, "undecryptable": 1, "invalid_message": 1, "wrong_sender": 1,
        "stale": 1, "unexpected_text": 1, "rate_limited": 1,
    })
    assert set(bob.drops) == set(DROP_REASONS)
    assert bob.messages_in == 2


def test_drop_reasons_are_the_documented_names():
    assert set(DROP_REASONS) == {
        "rate_limited", "malformed", "undecryptable", "invalid_message", "wrong_sender", "stale", "duplicate",
        "unexpected_text",
    }
    assert len(DROP_REASONS) == len(set(DROP_REASONS))


# ---------------------------------------------------------------------------
# events, proof of key and the clock (issue 7): no sockets, a fake clock

from smsgnet.exceptions import NotConnectedError  # noqa: E402
from smsgnet.session import (  # noqa: E402
    CloseForSilence,
    FrameDropped,
    Proven,
    SendPing,
)

T0 = 1_800_000_000.0  # a fixed UNIX time: every clock below is fake
KEEPALIVE = TransportConfig(rate_limit_burst=None, ping_interval=30.0, pong_timeout=10.0)


def inbound_pair(config: TransportConfig = KEEPALIVE) -> tuple[Session, Session]:
    """Alice dialled Bob: Alice's side is proven by the HMAC, Bob's is not yet."""
    alice = Session(BOB.node_id, SECRET, make_deduplicator(config), config, local_id=ALICE.node_id, now=T0)
    bob = Session(ALICE.node_id, SECRET, make_deduplicator(config), config, local_id=BOB.node_id,
                  proven=False, now=T0)
    return alice, bob


def at(now: float, type: str = "hello", *, from_: str = ALICE.node_id) -> Message:
    return message(now, type, from_=from_)


def test_an_unproven_session_seals_nothing():
    _, bob = inbound_pair()
    assert not bob.can_send
    with pytest.raises(NotConnectedError):
        bob.seal(at(T0, from_=BOB.node_id))
    assert bob.close("bye", now=T0) is None  # not even a disconnect
    assert bob.tick(T0 + 5) is None  # and no keepalive ping


def test_the_first_authentic_frame_proves_the_key_and_is_handled_as_usual():
    alice, bob = inbound_pair()
    events = bob.receive(alice.seal(at(T0 + 1, "get_stats")), T0 + 1)
    assert [type(e) for e in events] == [Proven, MessageReceived]
    assert events[1].message.type == "get_stats"
    assert bob.proven and bob.can_send
    assert bob.receive(alice.seal(at(T0 + 2)), T0 + 2)[0].message.type == "hello"  # Proven only once


def test_a_ping_as_first_frame_proves_and_is_answered_with_a_sealed_pong():
    # a Go initiator may first speak with its keepalive ping
    alice, bob = inbound_pair()
    ping = Message.ping(ALICE.node_id, BOB.node_id, sent_at_ms=int(T0 * 1000))
    ping.ts = format_timestamp(int(T0 * 1e9))
    proven, answered = bob.receive(alice.seal(ping), T0 + 0.5)
    assert isinstance(proven, Proven) and isinstance(answered, PingReceived)
    pong = recv(alice, answered.reply, T0 + 0.5)
    assert pong.type == "pong" and pong.reply_to == ping.id and pong.from_ == BOB.node_id


def test_a_frame_from_another_sender_proves_nothing():
    alice, bob = inbound_pair()
    third = NodeManager.from_private_key(b"\x42" * 32).node_id
    events = bob.receive(alice.seal(at(T0, from_=third)), T0)
    assert events == [FrameDropped("wrong_sender", events[0].detail)]
    assert not bob.proven


def test_a_reflected_frame_proves_nothing():
    # a frame Bob sealed on his proven link, bounced into a fresh unproven
    # session of his (one replay table per node) claiming to be from... Bob's peer
    alice, bob = inbound_pair()
    bob.receive(alice.seal(at(T0)), T0)
    own = bob.seal(at(T0, "note", from_=ALICE.node_id), T0)
    fresh = Session(ALICE.node_id, SECRET, bob.dedup, KEEPALIVE, local_id=BOB.node_id, proven=False, now=T0)
    assert [type(e) for e in fresh.receive(own, T0)] == [FrameDropped]
    assert not fresh.proven


@pytest.mark.parametrize("frame", ["text", b"garbage", None], ids=["text", "malformed", "undecryptable"])
def test_frames_that_do_not_open_prove_nothing(frame):
    _, bob = inbound_pair()
    if frame is None:
        frame = _core.SmsgCipher(b"\x07" * 32).seal(at(T0).to_json())
    assert [type(e) for e in bob.receive(frame, T0)] == [FrameDropped]
    assert not bob.proven


def test_a_stale_or_duplicate_frame_proves_nothing():
    alice, bob = inbound_pair()
    assert [type(e) for e in bob.receive(alice.seal(at(T0 - 1000)), T0)] == [FrameDropped]
    assert not bob.proven


def test_pong_gives_the_round_trip():
    alice, bob = inbound_pair()
    bob.receive(alice.seal(at(T0)), T0)
    ping = bob.ping(T0 + 1)
    answered = alice.receive(ping, T0 + 1.2)[0]
    (pong,) = bob.receive(answered.reply, T0 + 1.25)
    assert isinstance(pong, PongReceived) and pong.rtt_ms == pytest.approx(250, abs=1)


def test_disconnect_carries_code_and_reason():
    alice, bob = inbound_pair()
    bob.receive(alice.seal(at(T0)), T0)
    frame = alice.close("server shutdown", 1004, T0 + 1)
    (event,) = bob.receive(frame, T0 + 1)
    assert isinstance(event, PeerDisconnected) and (event.code, event.reason) == (1004, "server shutdown")
    assert alice.close("again", 1000, T0 + 2) is None  # only once


def test_keepalive_pings_every_interval_on_a_fake_clock():
    alice, bob = inbound_pair()
    assert alice.next_deadline == T0 + 30
    assert alice.tick(T0 + 29.9) is None
    action = alice.tick(T0 + 30)
    assert isinstance(action, SendPing)
    assert recv(bob, action.frame, T0 + 30).type == "ping"
    assert alice.next_deadline == T0 + 40  # the silence limit comes before the next ping
    assert alice.tick(T0 + 35) is None


def test_silence_closes_at_ping_interval_plus_pong_timeout_with_a_disconnect():
    alice, bob = inbound_pair()
    alice.tick(T0 + 30)
    action = alice.tick(T0 + 40)
    assert isinstance(action, CloseForSilence) and action.code == 1003
    assert recv(bob, action.frame, T0 + 40).type == "disconnect"
    assert alice.tick(T0 + 100) is None  # closed: nothing more


def test_every_received_frame_pushes_the_silence_limit_back():
    alice, bob = inbound_pair()
    assert isinstance(alice.tick(T0 + 30), SendPing)
    assert recv(alice, bob_proven_frame(alice, bob, T0 + 35), T0 + 35).type == "note"
    assert alice.tick(T0 + 40) is None  # would have closed for silence without that frame
    assert alice.next_deadline == T0 + 60  # the next ping; silence now ends at T0 + 75


def bob_proven_frame(alice: Session, bob: Session, now: float) -> bytes:
    bob.receive(alice.seal(at(now)), now)
    return bob.seal(at(now, "note", from_=BOB.node_id), now)


def test_an_unproven_session_is_closed_at_the_proof_deadline_without_a_frame():
    config = dataclasses.replace(KEEPALIVE, proof_timeout=5.0)
    _, bob = inbound_pair(config)
    assert bob.next_deadline == T0 + 5
    assert bob.tick(T0 + 4.9) is None
    action = bob.tick(T0 + 5)
    assert isinstance(action, CloseForSilence) and action.frame is None
    assert action.reason == "key not proven in time"


def test_the_default_proof_deadline_lets_a_go_initiator_reach_its_keepalive():
    _, bob = inbound_pair()
    assert bob.next_deadline == T0 + 40  # ping_interval + pong_timeout
