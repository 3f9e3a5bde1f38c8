"""Keepalive, graceful close, replacement and shutdown."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from netkit import Inbox, RawPeer, wait_for
from websockets.exceptions import ConnectionClosed

from smsgnet import ConnectionClosedError, DisconnectCode, Message, NodeManager, Transport, TransportConfig


async def test_short_ping_intervals_keep_a_quiet_pair_alive(make_node):
    b = await make_node("b", ping_interval=0.2, pong_timeout=0.2)
    a = await make_node("a", ping_interval=0.2, pong_timeout=0.2)
    conn = await a.connect(b.address)
    await asyncio.sleep(1.5)  # nearly 4 idle limits with no application traffic
    assert conn.is_open and a.connected_peers == 1 and b.connected_peers == 1
    assert conn.ping_ms is not None and conn.ping_ms >= 0
    assert a.registry.get(b.node.node_id).ping_ms is not None


async def test_a_peer_that_stops_answering_is_dropped_within_interval_plus_timeout(make_node):
    b = await make_node("b", ping_interval=0.3, pong_timeout=0.3)
    peer = await RawPeer.connect(b.url)  # completes the handshake, then never answers anything
    await peer.send(peer.message("hello"))  # proves its key once
    await wait_for(lambda: b.connected_peers == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: b.connected_peers == 0, timeout=3.0)
    assert loop.time() - started <= 0.6 + 0.5
    # the peer was told why, then closed
    msgs = []
    with pytest.raises(ConnectionClosed):
        while True:
            msgs.append(await peer.recv_message())
    assert msgs[-1].type == "disconnect" and msgs[-1].payload["code"] == DisconnectCode.TIMEOUT


async def test_graceful_close_delivers_its_code_to_the_other_side(make_node):
    b = await make_node("b")
    a = await make_node("a")
    conn = await a.connect(b.address)
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    b_side = b.get_connection(a.node.node_id)
    await conn.graceful_close("done for today", DisconnectCode.GOING_AWAY)
    await conn.graceful_close("again")  # only once; no error
    await asyncio.wait_for(b_side.wait_closed(), 3)
    assert b_side.close_code == DisconnectCode.GOING_AWAY and b_side.close_reason == "done for today"
    assert b_side.closed_by_peer
    assert a.connected_peers == 0 and b.connected_peers == 0
    with pytest.raises(ConnectionClosedError):
        await conn.send(Message.new("late", a.node.node_id))


async def test_stop_sends_shutdown_to_every_peer_and_leaves_nothing_running(make_node):
    hub = Transport(NodeManager.generate("hub"), config=TransportConfig(listen_addr="127.0.0.1:0"))
    await hub.start()
    spokes = [await make_node(f"s{i}") for i in range(4)]
    conns = [await s.connect(hub.address) for s in spokes]
    await wait_for(lambda: hub.connected_peers == 4)
    port = hub.port
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    hub_tasks = set(hub._tasks)
    assert hub_tasks

    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.stop()
    await hub.stop()  # idempotent
    assert loop.time() - started < 3

    for c in conns:
        await asyncio.wait_for(c.wait_closed(), 3)
        assert c.close_code == DisconnectCode.SHUTDOWN and c.close_reason == "server shutdown"
    assert not hub._tasks and all(t.done() for t in hub_tasks)
    assert hub.connected_peers == 0
    # the port is free again: nothing is listening
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    # every socket the hub owned is closed
    gc.collect()
    for c in conns:
        assert c._ws.transport.is_closing()
    del before


async def test_stop_closes_peers_concurrently(make_node):
    hub = await make_node("hub")
    spokes = [await make_node(f"s{i}") for i in range(6)]
    for s in spokes:
        await s.connect(hub.address)
    await wait_for(lambda: hub.connected_peers == 6)
    # every peer's read side is stalled, so each close waits for its close timeout;
    # one after another that would take 6 x that long
    for s in spokes:
        for c in s.connections():
            c._ws.transport.pause_reading()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.stop()
    elapsed = loop.time() - started
    assert elapsed < 2 * 3.5, elapsed  # CLOSE_TIMEOUT (2 s) + disconnect timeout (1 s), once


async def test_a_connection_replaced_by_a_newer_one_is_closed_not_leaked(make_node):
    hub = await make_node("hub")
    same = NodeManager.generate("twin")
    first = await make_node("first", node=same)
    second = await make_node("second", node=same)
    old = await first.connect(hub.address)
    await wait_for(lambda: hub.connected_peers == 1)
    old_hub_side = hub.get_connection(same.node_id)
    new = await second.connect(hub.address)
    await new.send(Message.new("hi", same.node_id, hub.node.node_id))  # proves the key
    await asyncio.wait_for(old.wait_closed(), 3)
    assert old.close_code == DisconnectCode.GOING_AWAY
    await asyncio.wait_for(old_hub_side.wait_closed(), 3)
    assert hub.connected_peers == 1 and hub.get_connection(same.node_id) is not old_hub_side
    assert hub.stats().unproven_connections == 0


async def test_async_context_manager_starts_and_stops(tmp_path):
    t = Transport(NodeManager.generate("ctx"), config=TransportConfig(listen_addr="127.0.0.1:0"))
    async with t:
        assert t.port > 0
    assert not t._tasks


async def test_connection_hooks_fire_once_per_live_connection():
    events: list[tuple[str, str]] = []
    hub = Transport(NodeManager.generate("hub"), config=TransportConfig(listen_addr="127.0.0.1:0"))

    @hub.on_peer_connected
    def joined(conn):
        events.append(("joined", conn.peer_id))

    @hub.on_peer_disconnected
    async def left(conn):
        events.append(("left", conn.peer_id))

    spoke = Transport(NodeManager.generate("spoke"), config=TransportConfig(listen_addr="127.0.0.1:0"))
    async with hub, spoke:
        conn = await spoke.connect(hub.address)
        # inbound connections count as joined once the peer proved its key (its pong)
        await wait_for(lambda: ("joined", spoke.node.node_id) in events)
        await conn.graceful_close("bye")
        await wait_for(lambda: ("left", spoke.node.node_id) in events)
    assert events == [("joined", spoke.node.node_id), ("left", spoke.node.node_id)]


async def test_listening_on_every_interface_with_port_0_reports_a_reachable_address():
    for _ in range(4):
        t = Transport(NodeManager.generate("any"), config=TransportConfig(listen_addr=":0"))
        c = Transport(NodeManager.generate("c"), config=TransportConfig(listen_addr="127.0.0.1:0"))
        async with t, c:
            assert (await c.connect(t.address)).proven


async def test_a_bad_certificate_is_a_config_error(tmp_path):
    from smsgnet import ConfigError
    cfg = TransportConfig(listen_addr="127.0.0.1:0", tls_cert_path=str(tmp_path / "nope.pem"),
                          tls_key_path=str(tmp_path / "nope.key"))
    t = Transport(NodeManager.generate("tls"), config=cfg)
    with pytest.raises(ConfigError, match="tls_cert_path"):
        await t.start()


async def test_stopping_under_load_does_not_flood_the_log(make_node, caplog):
    async def echo(conn, msg):
        await conn.send(msg.reply("echo", msg.payload))

    server = Transport(NodeManager.generate("srv"),
                       config=TransportConfig(listen_addr="127.0.0.1:0", rate_limit_burst=None))
    server.on_message(echo)
    await server.start()
    client = await make_node("cli", rate_limit_burst=None)
    conn = await client.connect(server.address)

    async def flood():
        try:
            while True:
                await conn.send(Message.new("load", client.node.node_id, conn.peer_id, {"x": "y" * 512}))
        except ConnectionClosedError:
            pass

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.3)
    with caplog.at_level("WARNING", logger="smsgnet"):
        await server.stop()
    await asyncio.wait_for(task, 5)
    noisy = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(noisy) <= 3, [r.getMessage() for r in noisy[:5]]


async def test_messages_sent_right_before_a_close_are_all_delivered(make_node):
    # cause: the receiver's pong to the proof ping failed on the closing socket,
    # and the read loop dropped the frames it had already read. Fix: frames that
    # arrived whole are handed out while the link closes.
    inbox = Inbox()
    b = await make_node("b", handler=inbox, rate_limit_burst=None)
    a = await make_node("a")
    conn = await a.connect(b.address)
    for i in range(30):
        await conn.send(Message.new("n", a.node.node_id, conn.peer_id, {"i": i}))
    await conn.graceful_close("done")
    got = [(await inbox.get(timeout=3)).payload["i"] for _ in range(30)]
    assert got == list(range(30))


async def test_an_inbound_link_is_pinged_at_the_ping_interval_once_proven(make_node):
    # cause: the timer armed for the proof deadline (ping_interval + pong_timeout)
    # was not re-armed at the proof, so the first keepalive came late. Fix: re-arm.
    b = await make_node("b", ping_interval=0.3, pong_timeout=5.0)
    pings = Inbox()
    a = await make_node("a", handler=pings, deliver_control_messages=True)
    started = asyncio.get_running_loop().time()
    await a.connect(b.address)
    first = await pings.get(timeout=3)
    while first.type != "ping":  # the pong to our own proof ping comes first
        first = await pings.get(timeout=3)
    assert first.from_ == b.node.node_id
    assert asyncio.get_running_loop().time() - started < 1.5
