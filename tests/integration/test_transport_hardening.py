"""No peer can hurt another (issue 8), over real sockets on 127.0.0.1: a
future-dated flood, replays across restarts, log floods and forgeries."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import orjson
import pytest
from netkit import Inbox, RawPeer, wait_for

from smsgnet import Message, NodeManager, Transport, TransportConfig, format_timestamp


async def test_a_future_dated_flood_from_one_peer_loses_no_pong_of_another(make_node):
    b = await make_node("b", rate_limit_burst=None, dedup_max_entries=2000)
    flooder = await RawPeer.connect(b.url)
    ahead = format_timestamp(time.time_ns() + 59 * 10**9)
    honest = await make_node("honest")
    conn = await honest.connect(b.address)

    async def flood():
        for i in range(5000):  # 2.5 × the table, every ID dated now + 59 s
            await flooder.send(flooder.message("junk", {"i": i}, ts=ahead))
            if i % 100 == 0:
                await asyncio.sleep(0)

    flooding = asyncio.ensure_future(flood())
    lost = 0
    for _ in range(40):
        try:
            await conn.request(Message.ping(honest.node.node_id, conn.peer_id), timeout=2)
        except Exception:  # noqa: BLE001 - any failure is a lost pong
            lost += 1
        await asyncio.sleep(0.01)
    await asyncio.wait_for(flooding, 30)
    for _ in range(10):  # and after the table is full of the flooder's IDs
        await conn.request(Message.ping(honest.node.node_id, conn.peer_id), timeout=2)
    assert lost == 0
    assert b.get_connection(honest.node.node_id).stats.drops == {}  # none of the honest frames dropped
    assert b.get_connection(flooder.node.node_id).stats.drops.get("stale", 0) > 0  # the flooder hurt itself
    assert b.stats().dedup_entries <= 2000 + 100


SERVER = textwrap.dedent("""
    import asyncio, sys
    from smsgnet import NodeManager, Transport, TransportConfig

    async def main(state, port):
        config = TransportConfig(listen_addr=f"127.0.0.1:{port}", state_dir=state, replay_checkpoint_interval=0.2)
        t = Transport(NodeManager.load_or_generate(state, "replay"), config=config)
        t.on_message(lambda conn, msg: print("got", msg.type, flush=True))
        async with t:
            print("up", t.node.node_id, flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(15, stop.set)
            await stop.wait()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
async def test_a_frame_recorded_before_a_restart_is_refused_after_it(tmp_path, how):
    port, state = _free_port(), tmp_path / "state"
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", SERVER, str(state), str(port)], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, env=env)

    async def line(proc: subprocess.Popen[str]) -> str:
        return (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)).strip()

    alice = NodeManager.generate("alice")
    procs = [spawn()]
    try:
        assert (await line(procs[0])).startswith("up")
        peer = await RawPeer.connect(f"ws://127.0.0.1:{port}/ws", alice)
        recorded = await peer.send(peer.message("pay", {"amount": 100}))
        assert await line(procs[0]) == "got pay"
        await asyncio.sleep(0.5)  # past a checkpoint
        await peer.close()
        if how == "graceful":
            procs[0].send_signal(signal.SIGTERM)
        else:
            procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(spawn())
        assert (await line(procs[1])).startswith("up")
        replayer = await RawPeer.connect(f"ws://127.0.0.1:{port}/ws", alice)  # same keys: the frame opens
        await replayer.ws.send(recorded)
        await replayer.send(replayer.message("fresh"))
        assert await line(procs[1]) == "got fresh"  # the replay never reached the handler
        await replayer.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _frame_with_header(header: dict, rest: bytes = b"\0" * 64) -> bytes:
    raw = orjson.dumps(header)
    return b"SMSG\x02" + struct.pack(">I", len(raw)) + raw + rest


async def test_twenty_connections_of_huge_headers_write_a_bounded_log(make_node, caplog):
    b = await make_node("b", rate_limit_burst=None)
    peers = []
    for _ in range(20):
        peers.append(await RawPeer.connect(b.url))
        await peers[-1].send(peers[-1].message("proof"))
    frame = _frame_with_header({"algorithm": "chacha20poly1305", "version": "1.0", "compression": "x" * 1_000_000})
    with caplog.at_level(logging.INFO, logger="smsgnet"):
        for _ in range(3):
            for p in peers:
                await p.ws.send(frame)
        await wait_for(lambda: sum(b.stats().drops.values()) == 60, timeout=10)
    total = sum(len(r.getMessage()) for r in caplog.records)
    assert total < 20_000, f"{total} characters of log for 60 bad frames"
    assert all("\n" not in r.getMessage() for r in caplog.records)


async def test_a_newline_in_a_handshake_id_cannot_forge_a_log_line(make_node, caplog):
    b = await make_node("b")
    from netkit import hello_json
    from websockets.asyncio.client import connect
    forged = orjson.loads(hello_json(NodeManager.generate("x")))
    forged["payload"]["identity"]["id"] = "a\nWARNING smsgnet: everything is fine"
    with caplog.at_level(logging.INFO, logger="smsgnet"):
        ws = await connect(b.url, proxy=None)
        await ws.send(orjson.dumps(forged), text=True)
        await asyncio.wait_for(ws.recv(), 3)
        await ws.close()
        await wait_for(lambda: b.stats().handshakes_refused + b.stats().handshakes_failed >= 1)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refused and refused[0].levelno == logging.WARNING and "127.0.0.1" in refused[0].getMessage()


async def test_a_hundred_throwaway_peers_with_long_names_keep_the_registry_bounded(make_node, tmp_path):
    from smsgnet import PeerRegistry
    path = tmp_path / "peers.json"
    b = await make_node("b", registry=PeerRegistry(path, max_peers=50))
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker():
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)

    ticking = asyncio.ensure_future(ticker())
    for i in range(100):
        node = NodeManager.generate("n" * 250 + f"{i:03d}"[:3])
        t = Transport(node, config=TransportConfig(listen_addr=None))
        async with t:
            await t.connect(b.address)
            await wait_for(lambda: b.get_connection(node.node_id) is not None)
    stop.set()
    await ticking
    await b.registry.flush()
    assert len(b.registry) <= 50
    assert path.stat().st_size < 50 * 1024
    lags.sort()
    assert lags[int(len(lags) * 0.99)] < 0.05  # no save stalls the loop (generous: a shared machine)
