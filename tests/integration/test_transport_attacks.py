"""Each weakness of the reference (PROTOCOL.md §5, last paragraph; issue 3 point 10)
is attempted here, over real sockets, and shown to fail."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from netkit import Inbox, RawPeer, hello_json, wait_for

from smsgnet import (
    Message,
    NodeManager,
    Peer,
    PeerAuthenticationError,
    PeerRegistry,
    format_timestamp,
)


async def test_a_node_id_that_is_not_the_hash_of_its_key_is_refused(make_node):
    b = await make_node("b")
    liar = NodeManager.generate("liar")
    forged = hello_json(liar)
    msg = orjson.loads(forged)
    msg["payload"]["identity"]["id"] = "ab" * 16
    from websockets.asyncio.client import connect
    ws = await connect(b.url, proxy=None)
    await ws.send(orjson.dumps(msg), text=True)
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
    assert ack["payload"]["accepted"] is False
    assert ack["payload"]["reason"] == "node ID does not match public key"
    await ws.close()
    assert b.connected_peers == 0


async def test_connect_refuses_a_responder_with_another_key_than_the_known_one(make_node):
    real = NodeManager.generate("real")
    impostor = await make_node("impostor")
    a = await make_node("a")
    peer = Peer(id=real.node_id, public_key=real.identity.public_key, address=impostor.address)
    with pytest.raises(PeerAuthenticationError):
        await a.connect(peer)
    with pytest.raises(PeerAuthenticationError):
        await a.connect(impostor.address, expect_key=real.identity.public_key)
    assert a.connected_peers == 0


async def test_a_recorded_frame_cannot_be_replayed_into_a_later_connection(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, dedup_ttl=0.5, max_clock_skew=0.2)
    alice = NodeManager.generate("alice")
    first = await RawPeer.connect(b.url, alice)
    recorded = await first.send(first.message("pay", {"amount": 100}))
    assert (await inbox.get()).type == "pay"
    await first.close()

    # same two keys, so the same shared secret: the old frame still decrypts
    second = await RawPeer.connect(b.url, alice)
    await second.ws.send(recorded)  # within the window: a duplicate
    await asyncio.sleep(1.0)  # past the dedup TTL: now too old
    await second.ws.send(recorded)
    await second.send(second.message("fresh"))
    assert (await inbox.get()).type == "fresh"
    assert await inbox.nothing_within(0.2)
    drops = b.stats().drops
    assert drops.get("duplicate") == 1 and drops.get("stale") == 1


async def test_frames_from_the_far_future_are_dropped(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, max_clock_skew=5)
    peer = await RawPeer.connect(b.url)
    import time
    future_ts = format_timestamp(time.time_ns() + 3600 * 10**9)
    await peer.send(peer.message("from_the_future", ts=future_ts))
    await peer.send(peer.message("now"))
    assert (await inbox.get()).type == "now"
    assert b.stats().drops.get("stale") == 1


async def test_a_frame_reflected_back_at_its_sender_is_dropped(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, deliver_control_messages=True)
    peer = await RawPeer.connect(b.url)
    # the peer proves its key with a ping; b answers with a sealed pong...
    await peer.send(peer.message("ping", {"sentAt": 1}))
    assert (await inbox.get()).type == "ping"
    pong_frame = await asyncio.wait_for(peer.ws.recv(), 3)
    assert orjson.loads(peer.cipher.open(pong_frame))["type"] == "pong"
    # ...which bounced straight back proves nothing and reaches nobody
    await peer.ws.send(pong_frame)
    await peer.send(peer.message("marker"))
    got = await inbox.get()
    assert got.type == "marker"  # the reflected pong never reached the handler
    assert b.stats().drops.get("duplicate") == 1


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
async def test_a_newcomer_claiming_a_live_peers_id_cannot_disturb_it(make_node, protocol):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, max_protocol=protocol)
    victim = await make_node("victim")
    conn = await victim.connect(b.address)
    assert conn.protocol == protocol
    await conn.send(Message.new("hello", victim.node.node_id, b.node.node_id))
    await inbox.get()
    live = b.get_connection(victim.node.node_id)

    # the attacker presents the victim's identity but has another private key
    attacker_key = NodeManager.generate("attacker")
    fake = orjson.loads(hello_json(attacker_key))
    fake["payload"]["identity"] = victim.node.identity.to_dict()
    fake["from"] = victim.node.node_id
    from websockets.asyncio.client import connect
    ws = await connect(b.url, proxy=None)
    await ws.send(orjson.dumps(fake), text=True)
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
    if protocol == "2.0":
        # b has seen the victim on 2.0: a 1.0 hello in its name is a downgrade, refused outright
        assert ack["payload"]["accepted"] is False and "2.0" in ack["payload"]["reason"]
        await ws.close()
        # offering 2.0 gets Noise message 1, which only the victim's private key can answer
        fake["payload"]["protocols"] = ["2.0"]
        ws = await connect(b.url, proxy=None)
        await ws.send(orjson.dumps(fake), text=True)
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
        assert ack["payload"]["accepted"] is True and ack["payload"]["protocol"] == "2.0"
        assert isinstance(await asyncio.wait_for(ws.recv(), 3), bytes)  # message 1
        await ws.send(b"\x00" * 48)  # a message 2 made without the victim's key
        await asyncio.wait_for(ws.wait_closed(), 3)
        assert ws.close_code == 1002
        await conn.send(Message.new("still_here", victim.node.node_id, b.node.node_id))
        assert (await inbox.get()).type == "still_here"
        assert b.get_connection(victim.node.node_id) is live and live.is_open
        assert b.stats().unproven_connections == 0 and b.stats().downgrades_refused == 1
        return
    assert ack["payload"]["accepted"] is True  # the responder cannot tell yet...
    # ...but the live connection is untouched, and garbage from the attacker proves nothing
    await ws.send(b"SMSG\x02" + b"\x00" * 100)
    await asyncio.sleep(0.2)
    assert b.get_connection(victim.node.node_id) is live and live.is_open
    await conn.send(Message.new("still_here", victim.node.node_id, b.node.node_id))
    assert (await inbox.get()).type == "still_here"
    assert b.stats().unproven_connections == 1
    await ws.close()
    await wait_for(lambda: b.stats().unproven_connections == 0)
    assert live.is_open


async def test_a_peer_is_not_persisted_before_it_proves_its_key(make_node, tmp_path):
    path = tmp_path / "peers.json"
    b = await make_node("b", registry=PeerRegistry(path))
    # completes the unauthenticated half of the handshake, then proves nothing
    silent = NodeManager.generate("silent")
    peer = await RawPeer.connect(b.url, silent)
    await asyncio.sleep(0.2)
    assert silent.node_id not in PeerRegistry(path)
    assert silent.node_id not in b.registry
    # its first authenticated frame is the proof
    await peer.send(peer.message("proof"))
    await wait_for(lambda: silent.node_id in b.registry)
    await b.registry.flush()  # saves happen in the background
    assert silent.node_id in PeerRegistry(path)


async def test_unauthenticated_garbage_does_not_keep_an_unproven_connection_alive(make_node):
    b = await make_node("b", ping_interval=0.2, pong_timeout=0.2)
    liar = NodeManager.generate("liar")
    victim = NodeManager.generate("victim")
    fake = orjson.loads(hello_json(liar))
    fake["payload"]["identity"] = victim.identity.to_dict()
    from websockets.asyncio.client import connect
    ws = await connect(b.url, proxy=None)
    await ws.send(orjson.dumps(fake), text=True)
    await ws.recv()
    from websockets.exceptions import ConnectionClosed
    with pytest.raises(ConnectionClosed):  # cut at the idle limit despite the traffic
        for _ in range(30):
            await ws.send(b"garbage" * 10)
            await asyncio.sleep(0.1)
    await wait_for(lambda: b.connected_peers == 0 and b.stats().unproven_connections == 0, timeout=2)


async def test_rate_limited_duplicate_and_undecryptable_frames_are_dropped_and_counted(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, rate_limit_burst=5, rate_limit_per_sec=1.0)
    peer = await RawPeer.connect(b.url)
    frame = await peer.send(peer.message("one"))
    await peer.ws.send(frame)  # duplicate
    other = NodeManager.generate("other")
    wrong = RawPeer(peer.ws, other, None)
    from smsgnet import _core
    wrong.cipher = _core.SmsgCipher(b"\x07" * 32)
    await peer.ws.send(wrong.cipher.seal(peer.message("bad key").to_json()))  # undecryptable
    for i in range(10):
        await peer.send(peer.message("flood", i))
    await asyncio.sleep(0.3)
    delivered = []
    while not inbox.queue.empty():
        delivered.append(inbox.queue.get_nowait()[1])
    drops = b.stats().drops
    assert drops["duplicate"] == 1 and drops["undecryptable"] == 1
    # burst 5: one, its duplicate, the bad frame, flood 0 and flood 1 take the tokens
    assert drops["rate_limited"] in (7, 8)  # (one token may refill meanwhile)
    assert [m.type for m in delivered][:3] == ["one", "flood", "flood"]
    assert len(delivered) == 3 + (8 - drops["rate_limited"])
    conn = b.get_connection(peer.node.node_id)
    assert conn.stats.drops == drops


async def test_drop_warnings_are_rate_limited(make_node, caplog):
    b = await make_node("b", rate_limit_burst=None, drop_log_per_minute=3)
    peer = await RawPeer.connect(b.url)
    await peer.send(peer.message("proof"))
    with caplog.at_level("WARNING", logger="smsgnet"):
        for _ in range(200):
            await peer.ws.send(b"not a frame")
        await wait_for(lambda: b.stats().drops.get("malformed", 0) == 200)
    warnings = [r for r in caplog.records if "dropped frame" in r.getMessage()]
    assert 1 <= len(warnings) <= 3
