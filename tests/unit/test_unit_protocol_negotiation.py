"""Negotiating protocol 2.0 inside the 1.0 hello and ack, sans I/O
(docs/protocol.md "Negotiation" and "Downgrade")."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgnet import (
    DowngradeRefused,
    NodeManager,
    PeerAuthenticationError,
    PeerRegistry,
    ProtocolError,
    TransportConfig,
    ConfigError,
)
from smsgnet.handshake import REASON_DOWNGRADE, REASON_MIN_PROTOCOL, Initiator, NoiseStage, Responder
from smsgnet.registry import Peer


@pytest.fixture
def nodes() -> tuple[NodeManager, NodeManager]:
    return NodeManager.generate("dialler"), NodeManager.generate("acceptor")


def payload(frame: bytes) -> dict:
    return orjson.loads(frame)["payload"]


def test_the_offer_is_one_extra_field_and_the_1_0_hello_is_otherwise_unchanged(nodes):
    d, _ = nodes
    kw = dict(challenge=b"c" * 32, message_id="m", ts="2026-01-01T00:00:00Z")
    plain = payload(Initiator(d, **kw).hello())
    offered = payload(Initiator(d, offer_protocol_2=True, **kw).hello())
    assert offered.pop("protocols") == ["2.0"]
    assert offered == plain and plain["version"] == "1.0"


def test_a_2_0_responder_answers_an_offer_and_both_agree(nodes):
    d, a = nodes
    initiator = Initiator(d, offer_protocol_2=True)
    ack, accepted = Responder(a, PeerRegistry(), accept_protocol_2=True).receive_hello(initiator.hello())
    assert accepted is not None and accepted.protocol == "2.0"
    assert payload(ack)["protocol"] == "2.0" and payload(ack)["accepted"] is True
    assert "challengeResponse" in payload(ack)  # still a valid 1.0 ack: the HMAC is checked too
    result = initiator.receive_ack(ack)
    assert result.protocol == "2.0" and result.hello == accepted.hello and result.ack == accepted.ack


@pytest.mark.parametrize("offer, accept", [(False, True), (True, False), (False, False)])
def test_without_offer_or_without_answer_the_link_is_1_0(nodes, offer, accept):
    d, a = nodes
    initiator = Initiator(d, offer_protocol_2=offer)
    ack, accepted = Responder(a, PeerRegistry(), accept_protocol_2=accept).receive_hello(initiator.hello())
    assert accepted is not None and accepted.protocol == "1.0"
    assert "protocol" not in payload(ack)
    assert initiator.receive_ack(ack).protocol == "1.0"


def test_an_answer_that_was_not_offered_is_a_protocol_error(nodes):
    d, a = nodes
    challenge = b"c" * 32
    ack, _ = Responder(a, PeerRegistry(), accept_protocol_2=True).receive_hello(
        Initiator(d, offer_protocol_2=True, challenge=challenge).hello())
    with pytest.raises(ProtocolError, match="not offered"):
        Initiator(d, challenge=challenge).receive_ack(ack)  # it never offered 2.0
    msg = orjson.loads(ack)
    msg["payload"]["protocol"] = "3.0"
    with pytest.raises(ProtocolError, match="not offered"):
        Initiator(d, offer_protocol_2=True, challenge=challenge).receive_ack(orjson.dumps(msg))


def test_min_protocol_refuses_1_0_on_both_sides(nodes):
    d, a = nodes
    ack, result = Responder(a, PeerRegistry(), accept_protocol_2=True, min_protocol="2.0").receive_hello(
        Initiator(d).hello())
    assert result is None and payload(ack)["reason"] == REASON_MIN_PROTOCOL
    initiator = Initiator(d, offer_protocol_2=True, min_protocol="2.0")
    ack, _ = Responder(a, PeerRegistry()).receive_hello(initiator.hello())  # a 1.0-only responder
    with pytest.raises(DowngradeRefused, match="min_protocol"):
        initiator.receive_ack(ack)


def test_a_peer_seen_on_2_0_is_refused_on_1_0_until_forgotten(nodes, tmp_path):
    d, a = nodes
    path = tmp_path / "peers.json"
    registry = PeerRegistry(path)
    registry.mark_connected(d.identity)
    registry.note_protocol(d.node_id, "2.0")
    registry.save()
    again = PeerRegistry(path)  # remembered across restarts
    assert again.requires_protocol_2(d.node_id)
    ack, result = Responder(a, again, accept_protocol_2=True).receive_hello(Initiator(d).hello())
    assert result is None and payload(ack)["reason"] == REASON_DOWNGRADE
    # the dialler's side: the acceptor remembered in the dialler's registry
    mine = PeerRegistry()
    mine.add(Peer.from_identity(a.identity))
    mine.note_protocol(a.node_id, "2.0")
    initiator = Initiator(d, offer_protocol_2=True, registry=mine)
    ack, _ = Responder(a, PeerRegistry()).receive_hello(initiator.hello())
    with pytest.raises(DowngradeRefused, match="seen on 2.0"):
        initiator.receive_ack(ack)
    assert again.forget_protocol(d.node_id) and not again.forget_protocol(d.node_id)
    assert Responder(a, again).receive_hello(Initiator(d).hello())[1] is not None
    assert not PeerRegistry(path).requires_protocol_2("someone else")


def test_a_registry_file_with_a_bogus_protocol_remembers_nothing(tmp_path, nodes):
    d, _ = nodes
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    r.mark_connected(d.identity)
    r.save()
    data = orjson.loads(path.read_bytes())
    text = path.read_text().replace('"protocol":""', '"protocol":"9.9"')
    path.write_text(text)
    assert data and not PeerRegistry(path).requires_protocol_2(d.node_id)


def _agreed(nodes):
    d, a = nodes
    initiator = Initiator(d, offer_protocol_2=True)
    ack, accepted = Responder(a, PeerRegistry(), accept_protocol_2=True).receive_hello(initiator.hello())
    return d, a, accepted, initiator.receive_ack(ack)


def test_the_noise_stage_proves_both_keys_in_two_messages(nodes):
    d, a, acc_result, dial_result = _agreed(nodes)
    acceptor, dialler = NoiseStage.acceptor(a, acc_result), NoiseStage.dialler(d, dial_result)
    acceptor.finish(dialler.answer(acceptor.first_message()))
    assert acceptor.handshake.finished and dialler.handshake.finished
    assert dialler.handshake.remote_public == a.public_key
    linked = acceptor.result_with_link()
    assert linked.noise is acceptor.handshake and linked.hello == b"" and linked.ack == b""


def test_a_message_1_from_another_key_than_the_ack_presented_is_refused(nodes):
    d, a, acc_result, dial_result = _agreed(nodes)
    other = NodeManager.generate("other")  # holds its own key, answered with a's identity
    forged = NoiseStage.acceptor(other, acc_result)
    with pytest.raises(PeerAuthenticationError):
        NoiseStage.dialler(d, dial_result).answer(forged.first_message())


def test_handshake_messages_must_be_binary(nodes):
    d, a, acc_result, dial_result = _agreed(nodes)
    with pytest.raises(ProtocolError, match="binary"):
        NoiseStage.dialler(d, dial_result).answer("text")
    with pytest.raises(ProtocolError, match="binary"):
        NoiseStage.acceptor(a, acc_result).finish("text")


@pytest.mark.parametrize("kw", [dict(min_protocol="3.0"), dict(max_protocol="1.1"),
                                dict(min_protocol="2.0", max_protocol="1.0"), dict(rekey_interval=-1)])
def test_protocol_settings_are_checked(kw):
    with pytest.raises(ConfigError):
        TransportConfig(**kw)


# -- a 2.0 session's receive step (sans I/O) ---------------------------------------------------


def session_pair_2(config: TransportConfig):
    import time as _time

    from smsgnet.session import Session, make_deduplicator

    d, a = NodeManager.generate("dialler"), NodeManager.generate("acceptor")
    initiator = Initiator(d, offer_protocol_2=True)
    ack, accepted = Responder(a, PeerRegistry(), accept_protocol_2=True).receive_hello(initiator.hello())
    dialled = initiator.receive_ack(ack)
    a_stage, d_stage = NoiseStage.acceptor(a, accepted), NoiseStage.dialler(d, dialled)
    a_stage.finish(d_stage.answer(a_stage.first_message()))
    now = _time.time()
    sender = Session(a.node_id, dialled.shared_secret, make_deduplicator(config), config, local_id=d.node_id,
                     now=now, noise=d_stage.result_with_link().noise)
    receiver = Session(d.node_id, accepted.shared_secret, make_deduplicator(config), config, local_id=a.node_id,
                       now=now, noise=a_stage.result_with_link().noise)
    return sender, receiver, now


def test_a_2_0_session_checks_ids_senders_and_duplicates_but_no_timestamps():
    from smsgnet import Message
    from smsgnet.session import FrameDropped, MessageReceived

    config = TransportConfig(rate_limit_burst=None, strict_sender=True)
    sender, receiver, now = session_pair_2(config)
    assert sender.protocol == receiver.protocol == "2.0"

    def deliver(msg: Message) -> list:
        return receiver.receive(sender.seal(msg, now), now)

    ok = Message.new("note", sender.local_id, receiver.local_id, 1)
    assert isinstance(deliver(ok)[0], MessageReceived)
    assert deliver(ok)[0] == FrameDropped("duplicate", "", False)
    impostor = Message.new("note", "f" * 32, receiver.local_id, 2)
    assert deliver(impostor)[0].reason == "wrong_sender"
    old = Message.new("note", "", receiver.local_id, 3)
    old.ts = "2001-01-01T00:00:00Z"  # no ts window on 2.0: the counters refuse replays
    assert isinstance(deliver(old)[0], MessageReceived)
    no_id = receiver.receive(sender.seal_json("", b'{"type":"x"}', now), now)
    assert no_id[0].reason == "invalid_message" and not no_id[0].fatal
    assert receiver.drops == {"duplicate": 1, "wrong_sender": 1, "invalid_message": 1}
    # a frame that does not open breaks the link: the event says so, and nothing opens after it
    broken = receiver.receive(b"\x00" * 40, now)
    assert broken[0].reason == "undecryptable" and broken[0].fatal
    later = receiver.receive(sender.seal(Message.new("later", "", receiver.local_id), now), now)
    assert later[0].fatal


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_HEAD_KEYS = ("id", "type", "from", "to", "ts", "replyTo", "payload")
_head_text = st.none() | st.text(max_size=6) | st.sampled_from(["ts", "2025-01-01T00:00:00Z", "é\"\\\n\u2028"])


def session_pair_1(config: TransportConfig):
    """A 1.0 pair after a real handshake: (sender, receiver, now)."""
    import time as _time

    from smsgnet.session import Session, make_deduplicator

    d, a = NodeManager.generate("dialler"), NodeManager.generate("acceptor")
    initiator = Initiator(d, offer_protocol_2=False)
    ack, accepted = Responder(a, PeerRegistry(), accept_protocol_2=True).receive_hello(initiator.hello())
    dialled = initiator.receive_ack(ack)
    now = _time.time()
    sender = Session(a.node_id, dialled.shared_secret, make_deduplicator(config), config, local_id=d.node_id, now=now)
    receiver = Session(d.node_id, accepted.shared_secret, make_deduplicator(config), config, local_id=a.node_id,
                       now=now)
    return sender, receiver, now


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
@settings(max_examples=200, deadline=None)
@given(kind=st.text(min_size=1, max_size=6).filter(lambda t: t not in ("ping", "pong", "disconnect", "handshake",
                                                                        "handshake_ack")),
       fields=st.fixed_dictionaries({"to": _head_text, "ts": _head_text, "replyTo": _head_text}),
       payloads=st.lists(_json_values, max_size=2), extra=st.dictionaries(st.text(max_size=3).filter(lambda k: k not in _HEAD_KEYS), _json_values,
                                                                           max_size=2),
       escaped_id=st.booleans(), spaced=st.booleans(), data=st.data())
def test_a_session_reads_every_message_as_from_json_does(protocol, kind, fields, payloads, extra, escaped_id, spaced,
                                                        data):
    # the receive step hands over the head it read (receive_message on
    # FrameReceiver and NoiseLink): whatever the JSON, the Message must be
    # the one Message.from_json builds
    from smsgnet import Message, format_timestamp
    from smsgnet.session import MessageReceived

    make = session_pair_2 if protocol == "2.0" else session_pair_1
    sender, receiver, now = make(TransportConfig(rate_limit_burst=None))
    assert receiver.protocol == protocol
    if protocol == "1.0":
        fields = {**fields, "ts": format_timestamp(int(now * 1e9))}  # 1.0 checks ts: a fresh one
    assert isinstance(receiver.receive(sender.seal(Message.new("hello", sender.local_id), now), now)[0],
                      MessageReceived)  # proven
    raw = [("id", b'"m\\u0041x"' if escaped_id else b'"m-1"'), ("type", orjson.dumps(kind)),
           ("from", orjson.dumps(sender.local_id))]
    raw += [(k, orjson.dumps(v)) for k, v in [*fields.items(), *(("payload", p) for p in payloads), *extra.items()]]
    raw = data.draw(st.permutations(raw))
    sep = b" , " if spaced else b","
    body = b"{" + sep.join(orjson.dumps(k) + b":" + v for k, v in raw) + b"}"
    events = receiver.receive(sender.seal_json("m-1", body, now), now)
    try:
        expected = Message.from_json(body)
    except Exception:  # noqa: BLE001
        assert events[0].reason == "invalid_message"
        return
    assert len(events) == 1 and isinstance(events[0], MessageReceived), (body, events)
    assert events[0].message == expected, body


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
def test_fields_are_handed_over_up_to_a_16_kib_payload(protocol):
    # above it the whole JSON is handed over (no copy of a large payload), and
    # the message arrives the same either way
    from smsgnet import Message
    from smsgnet.session import MessageReceived

    sender, receiver, now = (session_pair_2 if protocol == "2.0" else session_pair_1)(
        TransportConfig(rate_limit_burst=None))
    for size, handed_over in ((16 * 1024 - 20, tuple), (16 * 1024, bytes)):
        msg = Message.new("big", sender.local_id, receiver.local_id, "x" * size)
        frame = sender.seal(msg, now)
        reason, got = receiver.receiver.receive_message(frame, now)
        assert reason == "ok" and type(got) is handed_over, (size, type(got))
        again = Message.new("big", sender.local_id, receiver.local_id, "y" * size)
        events = receiver.receive(sender.seal(again, now), now)
        assert isinstance(events[-1], MessageReceived) and events[-1].message == again


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
@pytest.mark.parametrize("payload", [b'{"a":1e999}', b'"\\ud800"', b'[1,2'])
def test_a_payload_the_json_parser_refuses_is_a_counted_drop(protocol, payload):
    # the native checks may pass what orjson refuses (infinity, a lone
    # surrogate); the payload is parsed on arrival, so such a frame is dropped
    # as invalid_message, never handed out to fail later
    from smsgnet import Message, format_timestamp
    from smsgnet.session import FrameDropped, MessageReceived

    sender, receiver, now = (session_pair_2 if protocol == "2.0" else session_pair_1)(
        TransportConfig(rate_limit_burst=None))
    assert isinstance(receiver.receive(sender.seal(Message.new("hi", sender.local_id), now), now)[-1],
                      MessageReceived)
    body = b'{"id":"bad-1","type":"t","from":"%s","ts":"%s","payload":%s}' % (
        sender.local_id.encode(), format_timestamp(int(now * 1e9)).encode(), payload)
    events = receiver.receive(sender.seal_json("bad-1", body, now), now)
    assert len(events) == 1 and isinstance(events[0], FrameDropped), events
    assert events[0].reason == "invalid_message" and not events[0].fatal
    assert receiver.drops["invalid_message"] == 1


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
def test_an_unknown_key_is_ignored_whatever_it_holds(protocol):
    # as Go's decoder does: a key the Message does not have is skipped once its
    # JSON is valid, even holding what orjson cannot represent (1e999, a lone
    # surrogate); only the Message's own fields and payload are parsed
    from smsgnet import Message, format_timestamp
    from smsgnet.session import MessageReceived

    sender, receiver, now = (session_pair_2 if protocol == "2.0" else session_pair_1)(
        TransportConfig(rate_limit_burst=None))
    body = b'{"id":"odd-1","type":"t","from":"%s","ts":"%s","extra":[1e999,"\\ud800"],"payload":{"k":1}}' % (
        sender.local_id.encode(), format_timestamp(int(now * 1e9)).encode())
    events = receiver.receive(sender.seal_json("odd-1", body, now), now)
    assert isinstance(events[-1], MessageReceived), events
    assert events[-1].message.payload == {"k": 1} and events[-1].message.id == "odd-1"


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
def test_the_frames_of_one_read_are_received_in_one_call_as_one_by_one(protocol):
    # Session.receive_many (one native call for a read's frames) gives, in
    # order, the events receive() gives frame by frame: messages, the ping's
    # answer, drops with their details; on 2.0 a frame that does not open is
    # fatal, and so is every frame after it
    from smsgnet import Message
    from smsgnet.session import FrameDropped, MessageReceived, PingReceived, Proven

    config = TransportConfig(rate_limit_burst=None, strict_sender=True)
    sender, receiver, now = (session_pair_2 if protocol == "2.0" else session_pair_1)(config)
    first = Message.new("note", sender.local_id, receiver.local_id, {"n": 1})
    frames = [sender.seal(first, now),
              sender.seal(Message.ping(sender.local_id, receiver.local_id, 5), now),
              sender.seal_json(first.id, first.to_json(), now),  # the same ID again
              sender.seal(Message.new("note", "f" * 64, receiver.local_id, 2), now),  # another sender
              sender.seal(Message.new("note", sender.local_id, receiver.local_id, {"n": 3}), now)]
    receiver.proven = False  # as an acceptor's session starts: the first message proves the peer
    events = receiver.receive_many(frames, now)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Proven", "MessageReceived", "PingReceived", "FrameDropped", "FrameDropped",
                     "MessageReceived"], kinds
    assert isinstance(events[0], Proven)
    assert isinstance(events[1], MessageReceived) and events[1].message == first
    assert isinstance(events[2], PingReceived) and events[2].pong.reply_to == events[2].message.id
    assert (events[3].reason, events[4].reason) == ("duplicate", "wrong_sender")
    assert "from" in events[4].detail and not events[3].fatal and not events[4].fatal
    assert events[5].message.payload == {"n": 3}
    assert receiver.drops == {"duplicate": 1, "wrong_sender": 1} and receiver.messages_in == 3
    if protocol == "2.0":
        later = [sender.seal(Message.new("a", sender.local_id, receiver.local_id), now), b"\x00" * 40,
                 sender.seal(Message.new("b", sender.local_id, receiver.local_id), now)]
        events = receiver.receive_many(later, now)
        assert isinstance(events[0], MessageReceived)
        drops = [e for e in events[1:] if isinstance(e, FrameDropped)]
        assert [e.fatal for e in drops] == [True, True] and drops[0].reason == "undecryptable"
