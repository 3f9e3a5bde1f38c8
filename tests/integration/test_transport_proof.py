"""Proof of key that cannot be relayed, and keyless sockets that cannot keep a
peer out (issue 7, part B), over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest
from netkit import Inbox, RawPeer, impostor, wait_for
from websockets.exceptions import ConnectionClosed

from smsgnet import AuthMode, Message, NodeManager, Peer, PeerRegistry


async def until_type(inbox: Inbox, type: str) -> bool:
    while (await inbox.get()).type != type:
        pass
    return True


async def test_a_relay_between_two_nodes_gets_no_sealed_frame_and_hijacks_nothing(make_node):
    # T and V are linked; an attacker who knows only their public identities
    # connects to T claiming V and to V claiming T, and relays whatever it gets.
    # On protocol 1.0 (on 2.0 a 1.0 hello from a peer seen on 2.0 is refused at
    # once, and a 2.0 handshake proves both keys: test_protocol_2.py).
    fast = dict(ping_interval=0.2, pong_timeout=2.0, proof_timeout=1.5, max_protocol="1.0")
    t_inbox, v_inbox = Inbox(), Inbox()
    t = await make_node("T", handler=t_inbox, **fast)
    v = await make_node("V", handler=v_inbox, **fast)
    t_to_v = await t.connect(v.address)
    await wait_for(lambda: v.get_connection(t.node.node_id) is not None)
    v_to_t = v.get_connection(t.node.node_id)

    to_t = await impostor(t.url, v.node)     # at T, claiming to be V
    to_v = await impostor(v.url, t.node)     # at V, claiming to be T
    relayed = {"to_t": 0, "to_v": 0}

    async def relay(src, dst, key):
        try:
            async for frame in src:
                relayed[key] += 1
                await dst.send(frame)
        except ConnectionClosed:
            pass

    pumps = [asyncio.create_task(relay(to_t, to_v, "to_v")), asyncio.create_task(relay(to_v, to_t, "to_t"))]
    # traffic on the real link meanwhile: keepalive pings every 0.2 s, messages, a broadcast
    for i in range(5):
        await t_to_v.send(Message.new("note", t.node.node_id, v.node.node_id, {"i": i}))
        await v.broadcast(Message.new("news", v.node.node_id, "", {"i": i}))
        await asyncio.sleep(0.1)
    assert t.stats().unproven_connections == 1 and v.stats().unproven_connections == 1
    assert t.connected_peers == 1 and v.connected_peers == 1

    # the proof deadline closes both impostor sockets; they never got a frame
    await asyncio.wait_for(asyncio.gather(*pumps), 5)
    assert relayed == {"to_t": 0, "to_v": 0}
    assert t.get_connection(v.node.node_id) is t_to_v and t_to_v.is_open
    assert v.get_connection(t.node.node_id) is v_to_t and v_to_t.is_open
    assert t.stats().unproven_connections == 0 and v.stats().unproven_connections == 0
    assert t.stats().pending_expired == 1 and v.stats().pending_expired == 1
    # the real link still carries messages both ways
    await t_to_v.send(Message.new("after", t.node.node_id, v.node.node_id))
    await v_to_t.send(Message.new("after", v.node.node_id, t.node.node_id))
    assert await until_type(v_inbox, "after") and await until_type(t_inbox, "after")
    # and T's registry still has V at V's real address
    assert t.registry.get(v.node.node_id).address == v.address


async def test_an_unproven_connection_gets_no_shutdown_disconnect(make_node):
    b = await make_node("b")
    victim = NodeManager.generate("victim")
    ws = await impostor(b.url, victim)
    await b.stop()
    with pytest.raises(ConnectionClosed):
        frame = await asyncio.wait_for(ws.recv(), 3)
        pytest.fail(f"an unproven socket received {frame!r}")


async def test_send_and_broadcast_never_reach_a_connection_pending_proof(make_node):
    b = await make_node("b")
    victim = NodeManager.generate("victim")
    ws = await impostor(b.url, victim)
    await wait_for(lambda: b.stats().unproven_connections == 1)
    assert b.get_connection(victim.node_id) is None and list(b.connections()) == []
    from smsgnet import NotConnectedError
    with pytest.raises(NotConnectedError):
        await b.send(victim.node_id, Message.new("secret", b.node.node_id, victim.node_id))
    assert await b.broadcast(Message.new("news", b.node.node_id)) == {}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)
    await ws.close()


@pytest.mark.parametrize("mode", ["allowlist", "open"])
async def test_twice_max_conns_keyless_sockets_cannot_keep_the_real_peer_out(make_node, mode):
    real = NodeManager.generate("real")
    registry = PeerRegistry(auth_mode=AuthMode.ALLOWLIST if mode == "allowlist" else AuthMode.OPEN)
    registry.allow_key(real.identity.public_key)
    b = await make_node("b", registry=registry, max_conns=10)
    sockets = []
    for _ in range(20):
        try:
            sockets.append(await impostor(b.url, real))
        except Exception as e:  # noqa: BLE001 - a refusal here is the failure being tested
            pytest.fail(f"a keyless socket was refused instead of an older one giving way: {e!r}")
    stats = b.stats()
    assert stats.unproven_connections <= b.config.max_pending_per_peer
    assert stats.pending_evicted >= 20 - b.config.max_pending_per_peer

    a = await make_node("a", node=real)
    started = time.monotonic()
    conn = await a.connect(b.address)
    await wait_for(lambda: b.get_connection(real.node_id) is not None, timeout=b.config.proof_deadline)
    assert time.monotonic() - started < b.config.proof_deadline
    inbox = Inbox()
    b._handlers.set_message_handler(inbox)
    await conn.send(Message.new("made_it", real.node_id, b.node.node_id))
    assert (await inbox.get()).type == "made_it"
    for ws in sockets:
        await ws.close()


async def test_keyless_sockets_claiming_strangers_give_way_too(make_node):
    b = await make_node("b", max_conns=8)
    sockets = [await impostor(b.url, NodeManager.generate(f"s{i}")) for i in range(16)]
    assert b.stats().unproven_connections <= 8
    a = await make_node("a")
    conn = await a.connect(b.address)
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    assert conn.is_open
    for ws in sockets:
        await ws.close()


async def test_a_go_controller_that_first_speaks_with_a_request_is_proven_and_answered(make_node):
    async def answer(conn, msg):
        await conn.send(msg.reply("stats", {"ok": True}))

    b = await make_node("b", handler=answer)
    go = await RawPeer.connect(b.url)   # never answers pings, sends nothing at first
    await asyncio.sleep(0.2)
    assert b.get_connection(go.node.node_id) is None
    request = go.message("get_stats")
    await go.send(request)
    reply = await go.recv_message()
    assert reply.type == "stats" and reply.reply_to == request.id
    assert b.get_connection(go.node.node_id) is not None


async def test_a_go_controller_that_first_speaks_with_its_keepalive_ping_is_proven(make_node):
    # the reference pings after its ping interval; our proof deadline must outlast it
    b = await make_node("b", ping_interval=0.5, pong_timeout=0.5)
    go = await RawPeer.connect(b.url)
    await asyncio.sleep(0.6)  # the Go node's first keepalive
    ping = go.message("ping", {"sentAt": int(time.time() * 1000)})
    await go.send(ping)
    pong = await go.recv_until("pong")
    assert pong.reply_to == ping.id
    assert b.get_connection(go.node.node_id) is not None
    # and it then keeps pinging without ever answering b's pings: still fine
    for _ in range(3):
        await asyncio.sleep(0.3)
        await go.send(go.message("ping", {"sentAt": int(time.time() * 1000)}))
    assert b.get_connection(go.node.node_id) is not None


async def test_a_go_controller_that_never_speaks_is_closed_at_the_proof_deadline(make_node):
    b = await make_node("b", ping_interval=0.3, pong_timeout=0.3)
    go = await RawPeer.connect(b.url)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(go.ws.recv(), 3)
    assert 0.5 <= time.monotonic() - started < 2.5
    await wait_for(lambda: b.stats().pending_expired == 1 and b.stats().unproven_connections == 0)


async def test_an_smsgnet_initiator_proves_itself_at_once(make_node):
    b = await make_node("b")
    a = await make_node("a")
    await a.connect(b.address)
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None, timeout=1.0)


async def test_only_proven_peers_reach_the_registry(make_node, tmp_path):
    b = await make_node("b", registry=PeerRegistry(tmp_path / "peers.json"))
    claimed = NodeManager.generate("claimed")
    ws = await impostor(b.url, claimed)
    await asyncio.sleep(0.2)
    assert claimed.node_id not in b.registry
    await ws.close()
    a = await make_node("a", node=claimed)
    await a.connect(Peer(address=b.address))
    await wait_for(lambda: claimed.node_id in b.registry)
