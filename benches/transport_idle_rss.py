"""Memory per idle connection: the resident set size of an smsgnet server
node holding 1,000 idle, authenticated connections.

The server process (benches/_bench_server.py) runs a Transport with
``max_conns=1100`` and ``ping_interval=3600`` (no keepalive traffic while we
measure). This process is a lean client: per connection one fresh identity,
a plain ``websockets`` connection, the handshake driven with
``smsgnet.handshake.Initiator`` (and ``NoiseStage`` on protocol 2.0, the
default, as between two smsgnet nodes; ``--protocol 1.0`` makes the links a Go
node would) and one ``NoiseLink`` or ``SmsgCipher`` to send one sealed
``ping`` and wait for its ``pong`` (on 1.0 this proves the key to the server),
so each connection is a live, proven PeerConnection there. No Transport per
identity.

Steps: start the server, open one warm-up connection, ``gc.collect()`` in the
server, wait ``--settle`` s, read VmRSS from /proc/<pid>/status; open
``--conns`` more connections; check the server counts them all as proven;
gc, settle, read VmRSS again. Result: (after - before) / conns in kB. Also
reported: the server's asyncio tasks per idle link (0 expected: an idle link
is driven by its socket's callbacks and one shared timer heap) and, after the
measurement, one more ping on every link, each answered by a pong
(``--no-reping`` skips it).

    python benches/transport_idle_rss.py                 # 1,000 connections
    python benches/transport_idle_rss.py --conns 10000   # the issue's target (about 30 s on 2 cores)
    python benches/transport_idle_rss.py --quick         # 50 connections (CI)

Prints a human-readable summary, then one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_server import BenchServer, emit_result, raise_nofile_limit, read_rss_kb  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from smsgnet import Initiator, Message, NodeManager, _core  # noqa: E402
from smsgnet.handshake import NoiseStage  # noqa: E402


class Link:
    """One client link: its socket, its cipher and the two node IDs (to ping again)."""

    __slots__ = ("ws", "cipher", "node_id", "peer_id")

    def __init__(self, ws: ClientConnection, cipher: Any, node_id: str, peer_id: str) -> None:
        self.ws, self.cipher, self.node_id, self.peer_id = ws, cipher, node_id, peer_id


async def ping_pong(link: Link) -> None:
    """A sealed ping on the link; returns when its pong arrives (the server's own pings are skipped)."""
    ping = Message.ping(link.node_id, link.peer_id)
    await link.ws.send(link.cipher.seal(ping.to_json()))
    while True:
        frame = await link.ws.recv()
        if not isinstance(frame, bytes):
            raise RuntimeError("text frame after the handshake")
        msg = Message.from_json(link.cipher.open(frame))
        if msg.type == "pong" and msg.reply_to == ping.id:
            return


async def open_proven(url: str, expect_key: bytes, timeout: float, protocol: str = "2.0") -> Link:
    """One connection from a fresh identity: handshake, then a ping answered by a pong.

    ``protocol`` "2.0" offers it (as every smsgnet node does) and runs the Noise
    step; "1.0" sends the plain hello of the Go nodes."""
    node = NodeManager.generate("rss-client")
    async with asyncio.timeout(timeout):
        ws = await connect(url, compression=None, ping_interval=None, proxy=None, close_timeout=2,
                           user_agent_header=None)
        try:
            initiator = Initiator(node, expected_public_key=expect_key, offer_protocol_2=protocol == "2.0")
            await ws.send(initiator.hello(), text=True)
            result = initiator.receive_ack(await ws.recv())
            if result.protocol != protocol:
                raise RuntimeError(f"asked for protocol {protocol}, the server answered {result.protocol}")
            cipher: Any
            if protocol == "2.0":
                stage = NoiseStage.dialler(node, result)
                await ws.send(stage.answer(await ws.recv()))
                cipher = stage.handshake.into_link()
            else:
                cipher = _core.SmsgCipher(result.shared_secret)
            link = Link(ws, cipher, node.node_id, result.peer.id)
            await ping_pong(link)  # 1.0: proves our key to the server
            return link
        except BaseException:
            await ws.close()
            raise


async def settle_and_read(server: BenchServer, seconds: float) -> int:
    await server.acommand("gc")
    await asyncio.sleep(seconds)
    await server.acommand("gc")
    return read_rss_kb(server.pid)


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    nofile = opts.conns + 256
    soft, _ = raise_nofile_limit(nofile)  # this process holds the client ends
    if soft < nofile:
        raise SystemExit(f"ulimit -n is {soft}, need {nofile} file descriptors for {opts.conns} connections")
    server = BenchServer("--max-conns", str(opts.conns + 100), "--ping-interval", "3600",
                         "--nofile", str(nofile))
    clients: list[Link] = []
    try:
        server.start()
        expect = base64.b64decode(server.public_key)
        rss_start = read_rss_kb(server.pid)
        protocol = getattr(opts, "protocol", "2.0")
        clients.append(await open_proven(server.url, expect, opts.timeout, protocol))  # warm-up connection
        before = await settle_and_read(server, opts.settle)

        sem = asyncio.Semaphore(opts.concurrency)

        async def one() -> None:
            async with sem:
                clients.append(await open_proven(server.url, expect, opts.timeout, protocol))

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(opts.conns)))
        open_s = time.perf_counter() - t0
        conns = await server.acommand("conns")
        if conns["connections"] != opts.conns + 1 or conns["unproven"]:
            raise RuntimeError(f"server holds {conns}, expected {opts.conns + 1} proven connections")
        after = await settle_and_read(server, opts.settle)
        tasks = (await server.acommand("tasks"))["tasks"]
        stats = await server.acommand("stats")
        answered = None
        if opts.reping:  # after the measurement: every idle link still answers
            async def again(link: Link) -> bool:
                async with sem:
                    try:
                        async with asyncio.timeout(opts.timeout):
                            await ping_pong(link)
                        return True
                    except Exception:
                        return False
            answered = sum(await asyncio.gather(*(again(c) for c in clients)))
            if answered != len(clients):
                raise RuntimeError(f"only {answered} of {len(clients)} idle links answered a ping")
    finally:
        try:
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        finally:
            await server.aclose()
    return {
        "protocol": protocol,
        "connections": opts.conns,
        "rss_kb_per_conn": round((after - before) / opts.conns, 2),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_at_start_kb": rss_start,
        "open_s": round(open_s, 3),
        "handshakes_per_sec": round(opts.conns / open_s, 1),
        "server_connections": conns["connections"],
        "server_handshakes_failed": stats["handshakes_failed"],
        "server_tasks": tasks,  # every task of the server process (its command loop and sweeps included)
        "links_answering_ping": answered,  # of connections + 1 (warm-up), after the measurement
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI: 50 connections, short settle")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait after gc before reading VmRSS")
    ap.add_argument("--concurrency", type=int, default=50, help="handshakes in progress at once")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds allowed for one connection")
    ap.add_argument("--protocol", choices=("1.0", "2.0"), default="2.0",
                    help="2.0 (default): links as two smsgnet nodes make them; 1.0: as a Go node's")
    ap.add_argument("--no-reping", dest="reping", action="store_false",
                    help="skip the final ping on every link")
    opts = ap.parse_args()
    if opts.quick:
        opts.conns, opts.settle = 50, 0.2
    opts.conns = max(1, min(opts.conns, 20000))
    opts.settle = min(opts.settle, 5.0)

    started = time.perf_counter()
    r = asyncio.run(run(opts))
    wall = time.perf_counter() - started

    print(f"transport_idle_rss: {r['connections']} idle authenticated protocol {r['protocol']} connections "
          "to one server process")
    print(f"  server VmRSS {r['rss_before_kb']} kB -> {r['rss_after_kb']} kB "
          f"= {r['rss_kb_per_conn']:.1f} kB per idle connection")
    print(f"  ({r['connections']} handshakes + proof in {r['open_s']:.2f} s, "
          f"{r['handshakes_per_sec']:.0f}/s with {opts.concurrency} at once; server at start: {r['rss_at_start_kb']} kB)")
    print(f"  server tasks with {r['server_connections']} idle links: {r['server_tasks']}")
    if r["links_answering_ping"] is not None:
        print(f"  ping after the measurement answered on {r['links_answering_ping']} of "
              f"{r['server_connections']} links")
    print(f"  (total wall time {wall:.1f} s)")
    emit_result({
        "bench": "transport_idle_rss",
        "quick": opts.quick,
        "settle_s": opts.settle,
        **r,
        "wall_s": round(wall, 2),
    })


if __name__ == "__main__":
    main()
