"""One link per pair, client-only nodes and reconnect (issue 7, parts C–E), over
real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from netkit import Inbox, wait_for

from smsgnet import (
    Message,
    NodeManager,
    Peer,
    Transport,
    TransportConfig,
    TransportError,
)


class Callbacks:
    """Counts peer callbacks of one node."""

    def __init__(self, node: Transport) -> None:
        self.connected: list[str] = []
        self.disconnected: list[str] = []
        node.on_peer_connected(lambda c: self.connected.append(c.peer_id))
        node.on_peer_disconnected(lambda c: self.disconnected.append(c.peer_id))


async def started(name: str, inbox: Inbox | None = None, **cfg) -> tuple[Transport, Callbacks]:
    t = Transport(NodeManager.generate(name),
                  config=TransportConfig(listen_addr="127.0.0.1:0", handshake_timeout=3.0, **cfg))
    if inbox is not None:
        t.on_message(inbox)
    calls = Callbacks(t)
    await t.start()
    return t, calls


# -- C: one link per pair -------------------------------------------------------------


@pytest.mark.parametrize("trial", range(20))
async def test_two_nodes_dialling_each_other_at_once_keep_exactly_one_link(trial):
    a_in, b_in = Inbox(), Inbox()
    (a, a_calls), (b, b_calls) = await asyncio.gather(started("a", a_in), started("b", b_in))
    try:
        ca, cb = await asyncio.gather(a.connect(b.address), b.connect(a.address))
        await asyncio.sleep(0.1)  # let the losing link close
        assert a.connected_peers == 1 and b.connected_peers == 1
        assert ca is a.get_connection(b.node.node_id) and ca.is_open
        assert cb is b.get_connection(a.node.node_id) and cb.is_open
        # the kept link is the one dialled by the lower node ID, on both sides
        low = min(a.node.node_id, b.node.node_id)
        assert ca.outbound == (a.node.node_id == low) and cb.outbound == (b.node.node_id == low)
        await ca.send(Message.new("to_b", a.node.node_id, b.node.node_id))
        await cb.send(Message.new("to_a", b.node.node_id, a.node.node_id))
        assert (await b_in.get()).type == "to_b" and (await a_in.get()).type == "to_a"
        # no spurious callbacks: one connected, no disconnected, on each side
        assert a_calls.connected == [b.node.node_id] and b_calls.connected == [a.node.node_id]
        assert a_calls.disconnected == [] and b_calls.disconnected == []
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_five_node_mesh_dialling_all_at_once_delivers_by_id():
    inboxes = [Inbox() for _ in range(5)]
    nodes = [n for n, _ in await asyncio.gather(*(started(f"n{i}", inboxes[i]) for i in range(5)))]
    try:
        pairs = list(itertools.permutations(range(5), 2))
        await asyncio.gather(*(nodes[i].connect(nodes[j].address) for i, j in pairs))
        await wait_for(lambda: all(n.connected_peers == 4 for n in nodes))
        await asyncio.sleep(0.1)
        assert all(n.connected_peers == 4 for n in nodes)
        for i, j in pairs:
            await nodes[i].send(nodes[j].node.node_id,
                                Message.new("hello", nodes[i].node.node_id, nodes[j].node.node_id, {"from": i}))
        got = {j: sorted([(await inboxes[j].get()).payload["from"] for _ in range(4)]) for j in range(5)}
        assert got == {j: [i for i in range(5) if i != j] for j in range(5)}  # 20/20
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


async def test_a_redundant_connect_returns_the_same_link(make_node):
    b = await make_node("b")
    a = await make_node("a")
    first = await a.connect(b.address)
    assert await a.connect(b.address) is first
    assert await a.connect(Peer(id=b.node.node_id, address="127.0.0.1:1")) is first  # known by ID
    assert await a.connect(b.address, expect_key=b.node.identity.public_key) is first
    assert first.is_open and a.connected_peers == 1 and a.stats().connections_initiated == 1


async def test_concurrent_connects_to_one_address_share_one_dial(make_node):
    b = await make_node("b")
    a = await make_node("a")
    conns = await asyncio.gather(*(a.connect(b.address) for _ in range(5)))
    assert all(c is conns[0] for c in conns)
    assert a.stats().connections_initiated == 1
    await asyncio.sleep(0.1)
    assert b.connected_peers == 1 and b.stats().duplicates_closed == 0


async def test_a_connect_to_a_peer_that_already_dialled_us_returns_that_link(make_node):
    b = await make_node("b")
    a = await make_node("a")
    from_b = await b.connect(a.address)
    await wait_for(lambda: a.get_connection(b.node.node_id) is not None)
    inbound = a.get_connection(b.node.node_id)
    # by address: the dial reaches b, finds the live link, and is closed quietly
    again = await a.connect(b.address)
    assert again is inbound and inbound.is_open and from_b.is_open
    await asyncio.sleep(0.1)
    assert a.connected_peers == 1 and b.connected_peers == 1


async def test_a_peer_that_restarts_replaces_its_old_link(make_node):
    hub_calls: list[str] = []
    hub = await make_node("hub")
    node = NodeManager.generate("same")
    first = await make_node("first", node=node)
    old = await first.connect(hub.address)
    await wait_for(lambda: hub.get_connection(node.node_id) is not None)
    old_at_hub = hub.get_connection(node.node_id)
    await asyncio.sleep(0.05)
    # the same identity from a new process (the old socket is still open at the hub)
    second = await make_node("second", node=node, handshake_timeout=0.05)
    new = await second.connect(hub.address)
    await wait_for(lambda: hub.get_connection(node.node_id) is not old_at_hub)
    assert new.is_open and hub.connected_peers == 1
    await asyncio.wait_for(old.wait_closed(), 3)
    assert old.close_code == 1001 and old.close_reason == "replaced by a newer connection"


# -- D: client-only nodes -------------------------------------------------------------


async def test_a_client_only_node_listens_on_nothing_and_still_talks(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=lambda c, m: asyncio.ensure_future(c.send(m.reply("echo", m.payload))))
    client = Transport(NodeManager.generate("client"), config=TransportConfig(listen_addr=None))
    client.on_message(inbox)
    async with client:
        with pytest.raises(TransportError, match="listens on nothing"):
            client.port
        conn = await client.connect(b.address)
        await conn.send(Message.new("hi", client.node.node_id, conn.peer_id, {"n": 1}))
        reply = await inbox.get()
        assert reply.type == "echo" and reply.payload == {"n": 1}


def test_the_cli_client_commands_listen_on_nothing():
    from smsgnet.cli import _client_config, build_parser
    args = build_parser().parse_args(["ping", "127.0.0.1:9"])
    assert _client_config(args, control=True).listen_addr is None


# -- E: reconnect ---------------------------------------------------------------------------


async def test_reconnect_after_the_other_node_stops_and_restarts_in_process(make_node):
    node_b = NodeManager.generate("b")
    b1 = await make_node("b", node=node_b)
    port = b1.port
    inbox = Inbox()
    a = await make_node("a", handler=inbox, reconnect_initial_delay=0.05, reconnect_max_delay=0.2)
    calls: list[str] = []
    a._handlers.connected = lambda c: calls.append("up")
    a._handlers.disconnected = lambda c: calls.append("down")
    first = await a.connect(b1.address, reconnect=True)
    await wait_for(lambda: b1.get_connection(a.node.node_id) is not None)
    await b1.stop()
    await asyncio.wait_for(first.wait_closed(), 3)
    assert first.close_code == 1004  # b said "server shutdown"
    b2 = await make_node("b", node=node_b, listen_addr=f"127.0.0.1:{port}")
    await wait_for(lambda: a.get_connection(node_b.node_id) is not None, timeout=5)
    second = a.get_connection(node_b.node_id)
    assert second is not first and second.is_open
    assert calls == ["up", "down", "up"]
    stats = a.stats()
    assert stats.reconnects == 1 and stats.reconnect_attempts >= 1
    await wait_for(lambda: b2.get_connection(a.node.node_id) is not None)
    await b2.send(a.node.node_id, Message.new("back", node_b.node_id, a.node.node_id))
    assert (await inbox.get()).type == "back"


async def test_graceful_close_ends_reconnect(make_node):
    b = await make_node("b")
    a = await make_node("a", reconnect_initial_delay=0.05)
    conn = await a.connect(b.address, reconnect=True)
    await conn.graceful_close("done")
    await asyncio.sleep(0.3)
    assert a.connected_peers == 0 and a.stats().reconnect_attempts == 0


async def test_reconnect_keeps_the_pinned_key(make_node):
    node_b = NodeManager.generate("b")
    b1 = await make_node("b", node=node_b)
    port = b1.port
    a = await make_node("a", reconnect_initial_delay=0.05, reconnect_max_delay=0.1)
    await a.connect(b1.address, reconnect=True)
    await b1.stop()
    # an impostor takes over the address: redials are refused by key, and counted
    await make_node("impostor", listen_addr=f"127.0.0.1:{port}")
    await wait_for(lambda: a.stats().reconnect_attempts >= 3, timeout=5)
    assert a.connected_peers == 0 and a.stats().reconnects == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(state: Path, port: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsgnet", "serve", "--listen", f"127.0.0.1:{port}", "--state", str(state),
         "--echo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
        env=env)
    return proc


async def _info(proc: subprocess.Popen[str]) -> dict:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
    return orjson.loads(line)


async def test_reconnect_after_the_other_process_is_killed_and_restarted(make_node, tmp_path):
    port = _free_port()
    state = tmp_path / "server-state"
    inbox = Inbox()
    a = await make_node("a", handler=inbox, reconnect_initial_delay=0.05, reconnect_max_delay=0.5)
    procs = [_serve(state, port)]
    try:
        info = await _info(procs[0])
        conn = await a.connect(f"127.0.0.1:{port}", expect_key=info["publicKey"], reconnect=True)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        await asyncio.wait_for(conn.wait_closed(), 5)
        procs.append(_serve(state, port))  # same identity, same port
        assert (await _info(procs[1]))["id"] == info["id"]
        await wait_for(lambda: a.get_connection(info["id"]) is not None, timeout=10)
        again = a.get_connection(info["id"])
        await again.send(Message.new("anyone_there", a.node.node_id, info["id"], {"n": 7}))
        echo = await inbox.get(timeout=5)
        assert echo.type == "echo" and echo.payload == {"n": 7}
        assert a.stats().reconnects == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
