"""The per-frame Python path, sans I/O: a Session sealing and receiving one
1 KiB message, protocol 1.0 beside protocol 2.0 in the same run.

What every frame costs above the native core before any socket is involved:
``Session.seal`` (the Message to JSON, then one native call) and
``Session.receive`` (one native call for bucket/open/checks, then the Message
built from the JSON and the event). Run with

    pytest benches/test_bench_session.py --benchmark-enable --benchmark-only \\
        --benchmark-columns=min,median,ops --benchmark-sort=name

In CI (``--benchmark-disable``) each body runs once as a plain test.
"""

from __future__ import annotations

import itertools
import time

import pytest

from smsgnet import Message, NodeManager, PeerRegistry, TransportConfig
from smsgnet.handshake import Initiator, NoiseStage, Responder
from smsgnet.session import MessageReceived, Session, make_deduplicator

CONFIG = TransportConfig(rate_limit_burst=None)
PAYLOAD = {"data": "x" * 1024}
T0 = 1_796_000_000.0  # session creation; messages carry the real clock, received at it


def session_pair(protocol: str) -> tuple[Session, Session]:
    """(sender, receiver): the dialler's session and the acceptor's, after a real handshake."""
    dialler, acceptor = NodeManager.generate("dialler"), NodeManager.generate("acceptor")
    initiator = Initiator(dialler, offer_protocol_2=protocol == "2.0")
    ack, accepted = Responder(acceptor, PeerRegistry(), accept_protocol_2=True).receive_hello(initiator.hello())
    assert accepted is not None
    dialled = initiator.receive_ack(ack)
    assert dialled.protocol == accepted.protocol == protocol
    if protocol == "2.0":
        a_stage, d_stage = NoiseStage.acceptor(acceptor, accepted), NoiseStage.dialler(dialler, dialled)
        a_stage.finish(d_stage.answer(a_stage.first_message()))
        accepted, dialled = a_stage.result_with_link(), d_stage.result_with_link()
    sender = Session(acceptor.node_id, dialled.shared_secret, make_deduplicator(CONFIG), CONFIG,
                     local_id=dialler.node_id, now=T0, noise=dialled.noise)
    receiver = Session(dialler.node_id, accepted.shared_secret, make_deduplicator(CONFIG), CONFIG,
                       local_id=acceptor.node_id, proven=True, now=T0, noise=accepted.noise)
    return sender, receiver


protocols = pytest.mark.parametrize("protocol", ["1.0", "2.0"])


@protocols
def test_seal_1kib(benchmark, protocol):
    benchmark.group = "Session.seal, 1 KiB payload"
    sender, _ = session_pair(protocol)
    msg = Message.new("bench", sender.local_id, sender.peer_id, PAYLOAD)
    frame = benchmark(sender.seal, msg, time.time())
    assert isinstance(frame, bytes) and len(frame) > 1024


@protocols
def test_receive_1kib(benchmark, protocol):
    benchmark.group = "Session.receive, 1 KiB payload"
    sender, receiver = session_pair(protocol)
    ids = itertools.count()

    def next_frame() -> tuple[tuple[bytes, float], dict[str, object]]:
        # untimed: a fresh message (new ID, sealed in order) for every round
        msg = Message.new("bench", sender.local_id, sender.peer_id, PAYLOAD)
        msg.id = f"m{next(ids)}"
        now = time.time()
        return (sender.seal(msg, now), now), {}

    events = benchmark.pedantic(receiver.receive, setup=next_frame, rounds=2000, warmup_rounds=50)
    assert len(events) == 1 and isinstance(events[0], MessageReceived), events
    assert events[0].message.payload == PAYLOAD
