"""End-to-end throughput: pipelined 1 KiB messages echoed back between two
smsgnet nodes in separate processes on 127.0.0.1.

The server process (benches/_bench_server.py) runs a Transport whose handler
answers every message with ``msg.reply("echo", msg.payload)``. This process is
the client node: it keeps up to ``--window`` messages in flight on one
connection (a new one is sent each time an echo arrives) and counts echoes.
After ``--warmup`` seconds it measures echoes received per second over
``--duration`` seconds (or until ``--messages`` echoes, whichever first).

Rate limiting is OFF on both nodes for the measurement
(``TransportConfig(rate_limit_burst=None)``): the default limit (burst 100,
50 msg/s per connection) would cap the figure at 50 msg/s. A short second run
against a server with the default limit shows that limit working: messages
beyond the burst are dropped and counted in the server's stats.

    python benches/transport_throughput.py            # full run (~10 s)
    python benches/transport_throughput.py --quick    # 200 messages (CI)

Prints a human-readable summary, then one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_server import BenchServer, CpuWatch, describe_cpu, emit_result, pin_processes  # noqa: E402

from smsgnet import Message, NodeManager, PeerConnection, Transport, TransportConfig  # noqa: E402

PAYLOAD = "x" * 1024  # 1 KiB payload (a JSON string of 1024 ASCII characters)


class Counter:
    def __init__(self) -> None:
        self.by_peer: dict[str, int] = {}
        self.main_peer = ""
        self.window: asyncio.Semaphore | None = None
        self.target = -1
        self.target_reached = asyncio.Event()
        self.target_time = 0.0
        self.last_echo = time.perf_counter()

    def __call__(self, conn: PeerConnection, msg: Message) -> None:
        if msg.type != "echo":
            return
        pid = conn.peer_id
        n = self.by_peer.get(pid, 0) + 1
        self.by_peer[pid] = n
        self.last_echo = time.perf_counter()
        if pid == self.main_peer:
            assert self.window is not None
            self.window.release()
            if n == self.target:
                self.target_time = time.perf_counter()
                self.target_reached.set()


async def measure(client: Transport, counter: Counter, server: BenchServer, opts: argparse.Namespace) -> dict[str, Any]:
    conn = await client.connect(server.address, expect_key=server.public_key)
    counter.main_peer = conn.peer_id
    counter.window = asyncio.Semaphore(opts.window)
    stop = False
    sent = 0

    async def sender() -> None:
        nonlocal sent
        me, peer = client.node.node_id, conn.peer_id
        window = counter.window
        assert window is not None
        while not stop:
            await window.acquire()
            if stop:
                break
            await conn.send(Message.new("bench", me, peer, PAYLOAD))
            sent += 1

    task = asyncio.create_task(sender())
    try:
        await asyncio.sleep(opts.warmup)
        c0 = counter.by_peer.get(conn.peer_id, 0)
        watch = CpuWatch(os.getpid(), server.pid)
        watch.start()
        t0 = time.perf_counter()
        if opts.messages:
            counter.target = c0 + opts.messages
            try:
                await asyncio.wait_for(counter.target_reached.wait(), opts.duration)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(opts.duration)
        t1 = time.perf_counter()
        c1 = counter.by_peer.get(conn.peer_id, 0)
        if counter.target_reached.is_set():  # count-limited: stop the clock at the target echo
            t1, c1 = counter.target_time, counter.target
        cpu = watch.stop()
    finally:
        stop = True
        counter.window.release()  # unblock the sender
        await task
    # let the echoes still in flight arrive, then compare counters
    deadline = time.perf_counter() + 5
    while counter.by_peer.get(conn.peer_id, 0) < sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    stats = await server.acommand("stats")
    elapsed = t1 - t0
    received = c1 - c0
    return {
        "msgs_per_sec": round(received / elapsed, 1),
        "messages": received,
        "elapsed_s": round(elapsed, 3),
        "client_cpu_pct": cpu["cpu_pct"][0],
        "server_cpu_pct": cpu["cpu_pct"][1],
        "other_load_cores": cpu["other_load_cores"],
        "disturbed": cpu["disturbed"],
        "sent_total": sent,
        "echoed_total": counter.by_peer.get(conn.peer_id, 0),
        "server_messages_in": stats["messages_in"],
        "server_drops": stats["drops"],
        "client_drops": client.stats().drops,
    }


async def rate_limit_demo(client: Transport, counter: Counter, server: BenchServer, n: int) -> dict[str, Any]:
    """Send ``n`` messages back to back to a server with the default rate limit."""
    conn = await client.connect(server.address, expect_key=server.public_key)
    me = client.node.node_id
    t0 = time.perf_counter()
    for _ in range(n):
        await conn.send(Message.new("bench", me, conn.peer_id, PAYLOAD))
    send_s = time.perf_counter() - t0
    # wait until the echoes stop coming (0.5 s of silence, at most 3 s)
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline and time.perf_counter() - max(counter.last_echo, t0) < 0.5:
        await asyncio.sleep(0.05)
    stats = await server.acommand("stats")
    return {
        "config": "TransportConfig() defaults: rate_limit_burst=100, rate_limit_per_sec=50",
        "sent": n,
        "send_s": round(send_s, 3),
        "echoed": counter.by_peer.get(conn.peer_id, 0),
        "server_messages_in": stats["messages_in"],
        "server_drops": stats["drops"],
    }


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    client = Transport(
        NodeManager.generate("bench-client"),
        # max_protocol "1.0" never offers 2.0: the link runs 1.0 against any server
        config=TransportConfig(listen_addr="127.0.0.1:0", rate_limit_burst=None,
                               max_protocol=getattr(opts, "protocol", "2.0")),
    )
    counter = Counter()
    client.on_message(counter)
    await client.start()
    servers: list[BenchServer] = []
    try:
        servers.append(server := BenchServer("--rate-limit", "off"))
        server.start()
        pinned = pin_processes(opts.pin, server.pid)
        result = await measure(client, counter, server, opts)
        link = client.get_connection(str(server.info["node_id"]))
        result["protocol"] = link.protocol if link is not None else "?"
        result["pin"] = pinned
        if opts.rate_limit_demo:
            servers.append(server := BenchServer("--rate-limit", "default"))
            server.start()
            result["rate_limit_demo"] = await rate_limit_demo(client, counter, server, opts.demo_messages)
    finally:
        try:
            await client.stop()  # closes our side of every connection first
        finally:
            for server in servers:
                await server.aclose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pin", choices=("none", "same", "split"), default="none",
                    help="CPU placement: none (scheduler decides, default), same CPU for both processes, or one each")
    ap.add_argument("--quick", action="store_true", help="tiny run for CI: 200 messages, short warm-up")
    ap.add_argument("--window", type=int, default=1000, help="messages in flight (default 1000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured (default 5)")
    ap.add_argument("--messages", type=int, default=0, help="stop measuring after this many echoes (0: time only)")
    ap.add_argument("--no-rate-limit-demo", dest="rate_limit_demo", action="store_false")
    ap.add_argument("--protocol", choices=("1.0", "2.0"), default="2.0",
                    help="wire protocol of the pair (default 2.0: two smsgnet nodes negotiate it)")
    ap.add_argument("--size", type=int, default=1024, help="payload bytes per message (default 1024)")
    ap.add_argument("--demo-messages", type=int, default=300, help="messages sent in the rate-limit demo")
    opts = ap.parse_args()
    if opts.quick:
        opts.warmup, opts.duration, opts.messages = 0.2, 10.0, opts.messages or 200
        opts.demo_messages = 150
    opts.warmup = min(opts.warmup, 15.0)
    opts.duration = min(opts.duration, 25.0)  # keeps the whole script < 60 s

    global PAYLOAD
    PAYLOAD = "x" * opts.size
    started = time.perf_counter()
    r = asyncio.run(run(opts))
    wall = time.perf_counter() - started

    print(f"transport_throughput: {len(PAYLOAD):,} B messages echoed over one protocol {r['protocol']} "
          f"connection, window {opts.window}, two processes on 127.0.0.1")
    print("  rate limiting OFF on both nodes (TransportConfig(rate_limit_burst=None))")
    if r["pin"] != "none":
        print(f"  pinned: {r['pin']}")
    print(f"  {r['msgs_per_sec']:,.0f} echoed msgs/s  ({r['messages']} echoes in {r['elapsed_s']:.2f} s "
          f"after {opts.warmup:g} s warm-up)")
    print("  " + describe_cpu(r["client_cpu_pct"], r["server_cpu_pct"], r["other_load_cores"]))
    print(f"  server drops: {r['server_drops'] or 'none'}")
    demo = r.get("rate_limit_demo")
    if demo:
        print(f"  with the default rate limit (burst 100, 50/s): sent {demo['sent']} back to back in "
              f"{demo['send_s']:.2f} s, {demo['echoed']} echoed, server dropped {demo['server_drops']}")
    print(f"  (total wall time {wall:.1f} s)")
    emit_result({
        "bench": "transport_throughput",
        "quick": opts.quick,
        "payload_bytes": len(PAYLOAD),
        "window": opts.window,
        "warmup_s": opts.warmup,
        "rate_limit": "off (rate_limit_burst=None on both nodes)",
        **r,
        "wall_s": round(wall, 2),
    })


if __name__ == "__main__":
    main()
