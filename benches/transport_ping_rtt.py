"""End-to-end ping round-trip time between two smsgnet nodes in separate
processes on 127.0.0.1.

The server process (benches/_bench_server.py) runs a plain Transport: it
answers every ``ping`` with a ``pong`` itself (the transport's built-in reply,
no handler involved). This process is the client node, configured with
``deliver_control_messages=True`` so that pongs reach its handler. It sends
``--pings`` pings one after the other (``Message.ping``), each waiting for the
pong whose ``replyTo`` is the ping's id, and times every round trip with
``time.perf_counter_ns``: from just before ``PeerConnection.send`` to the moment
the waiting coroutine resumes with the pong, so the figure includes sealing,
both event loops, the server's reply task, opening and parsing on both sides.

Rate limiting is off on the server (``rate_limit_burst=None``): with the
default limit (burst 100, 50 msg/s) pings beyond the 100th would be dropped.

    python benches/transport_ping_rtt.py           # 1,000 pings after 100 warm-up pings
    python benches/transport_ping_rtt.py --quick   # 50 pings (CI)

Prints a human-readable summary, then one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_server import BenchServer, CpuWatch, describe_cpu, emit_result, pin_processes  # noqa: E402

from smsgnet import Message, NodeManager, PeerConnection, Transport, TransportConfig, _core  # noqa: E402


def summarize(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    q = statistics.quantiles(us, n=100, method="inclusive")
    return {
        "p50_us": round(statistics.median(us), 1),
        "p90_us": round(q[89], 1),
        "p99_us": round(q[98], 1),
        "mean_us": round(statistics.fmean(us), 1),
        "min_us": round(us[0], 1),
        "max_us": round(us[-1], 1),
    }


async def plain_websockets_rtt(opts: argparse.Namespace, size: int) -> dict[str, float]:
    """The same loop over bare websockets (no smsgnet): send ``size`` bytes, await the echo."""
    from websockets.asyncio.client import connect

    server = BenchServer("--plain-websockets")
    try:
        server.start()
        pin_processes(opts.pin, server.pid)
        async with connect(server.url, compression=None, ping_interval=None, proxy=None,
                           user_agent_header=None) as ws:
            data = os.urandom(size)
            clock = time.perf_counter_ns

            async def one() -> int:
                t0 = clock()
                await ws.send(data)
                await asyncio.wait_for(ws.recv(), opts.timeout)
                return clock() - t0

            for _ in range(opts.warmup):
                await one()
            samples = [await one() for _ in range(opts.pings)]
    finally:
        await server.aclose()
    return {"frame_bytes": size, **summarize(samples)}


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    pending: dict[str, asyncio.Future[None]] = {}

    def on_message(conn: PeerConnection, msg: Message) -> None:
        if msg.type == "pong":
            fut = pending.pop(msg.reply_to, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    client = Transport(
        NodeManager.generate("bench-client"),
        config=TransportConfig(listen_addr="127.0.0.1:0", rate_limit_burst=None, deliver_control_messages=True),
    )
    client.on_message(on_message)
    await client.start()
    server = BenchServer("--rate-limit", "off")
    try:
        server.start()
        pinned = pin_processes(opts.pin, server.pid)
        conn = await client.connect(server.address, expect_key=server.public_key)
        loop = asyncio.get_running_loop()
        me, peer = client.node.node_id, conn.peer_id
        clock = time.perf_counter_ns

        async def one_ping() -> int:
            msg = Message.ping(me, peer)
            fut = loop.create_future()
            pending[msg.id] = fut
            t0 = clock()
            await conn.send(msg)
            await asyncio.wait_for(fut, opts.timeout)
            return clock() - t0

        for _ in range(opts.warmup):
            await one_ping()
        watch = CpuWatch(os.getpid(), server.pid)
        watch.start()
        t_start = time.perf_counter()
        samples = [await one_ping() for _ in range(opts.pings)]
        elapsed = time.perf_counter() - t_start
        cpu = watch.stop()
        stats = await server.acommand("stats")
    finally:
        try:
            await client.stop()
        finally:
            await server.aclose()

    result: dict[str, Any] = {
        "pings": len(samples),
        **summarize(samples),
        "elapsed_s": round(elapsed, 3),
        "client_cpu_pct": cpu["cpu_pct"][0],
        "server_cpu_pct": cpu["cpu_pct"][1],
        "other_load_cores": cpu["other_load_cores"],
        "disturbed": cpu["disturbed"],
        "server_drops": stats["drops"],
        "pin": pinned,
    }
    if opts.plain_baseline:
        # a ping frame on the wire is ~370 bytes, its pong ~450: use the mean
        frame = len(_core.SmsgCipher(bytes(32)).seal(Message.ping(me, peer).to_json()))
        result["plain_websockets"] = await plain_websockets_rtt(opts, frame + 40)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pin", choices=("none", "same", "split"), default="none",
                    help="CPU placement: none (scheduler decides, default), same CPU for both processes, or one each")
    ap.add_argument("--quick", action="store_true", help="tiny run for CI: 50 pings, 10 warm-up")
    ap.add_argument("--pings", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100, help="pings before measuring (default 100)")
    ap.add_argument("--no-plain-baseline", dest="plain_baseline", action="store_false",
                    help="skip the same loop over bare websockets (no smsgnet)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one pong")
    opts = ap.parse_args()
    if opts.quick:
        opts.pings, opts.warmup = 50, 10
    opts.pings = max(2, min(opts.pings, 20_000))  # bounded: 20,000 pings stay well under 60 s

    started = time.perf_counter()
    r = asyncio.run(run(opts))
    wall = time.perf_counter() - started

    print(f"transport_ping_rtt: {r['pings']} sequential ping/pong round trips, two processes on 127.0.0.1")
    print("  client: deliver_control_messages=True; server: rate limiting off (rate_limit_burst=None)")
    if r["pin"] != "none":
        print(f"  pinned: {r['pin']}")
    print(f"  p50 {r['p50_us']:.0f} us   p99 {r['p99_us']:.0f} us   mean {r['mean_us']:.0f} us   "
          f"(min {r['min_us']:.0f}, max {r['max_us']:.0f})")
    print("  " + describe_cpu(r["client_cpu_pct"], r["server_cpu_pct"], r["other_load_cores"]))
    plain = r.get("plain_websockets")
    if plain:
        print(f"  for scale, the same loop over bare websockets ({plain['frame_bytes']} B frames, no smsgnet): "
              f"p50 {plain['p50_us']:.0f} us   p99 {plain['p99_us']:.0f} us   mean {plain['mean_us']:.0f} us")
    print(f"  (total wall time {wall:.1f} s)")
    emit_result({
        "bench": "transport_ping_rtt",
        "quick": opts.quick,
        "warmup_pings": opts.warmup,
        "rate_limit": "off on the server (rate_limit_burst=None)",
        **r,
        "wall_s": round(wall, 2),
    })


if __name__ == "__main__":
    main()
