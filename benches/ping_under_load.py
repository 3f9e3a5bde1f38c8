"""Ping round trips to a node while another peer streams 1 MiB messages at it.

Issue 10: sealing and opening large frames must not stall other links. Three
processes on 127.0.0.1: the server node (``benches/_bench_server.py``-like,
here a Transport that echoes), a loader that keeps ``--inflight`` 1 MiB
messages echoed back and forth, and this process, which measures sequential
ping -> pong round trips on its own link, first with the loader idle, then
with it running. Prints p50/p99 of both and one JSON line.

    python benches/ping_under_load.py            # 1,000 pings each way (~15 s)
    python benches/ping_under_load.py --pings 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

from smsgnet import Message, NodeManager, Transport, TransportConfig

BIG = "x" * (1024 * 1024 - 512)  # a payload that fits max_message_size once sealed


async def serve() -> None:
    t = Transport(NodeManager.generate("server"),
                  config=TransportConfig(listen_addr="127.0.0.1:0", rate_limit_burst=None,
                                         max_message_size=2 << 20))

    @t.on_message("big")
    async def echo(conn, msg):  # type: ignore[no-untyped-def]
        await conn.send(msg.reply("big_echo", msg.payload))

    async with t:
        print(t.address, flush=True)
        await asyncio.Event().wait()


async def load(address: str, inflight: int, protocol: str) -> None:
    t = Transport(NodeManager.generate("loader"),
                  config=TransportConfig(listen_addr=None, rate_limit_burst=None, max_message_size=2 << 20,
                                         max_protocol=protocol))
    async with t:
        conn = await t.connect(address)
        assert conn.protocol == protocol
        print("ready", flush=True)

        async def pump() -> None:
            while True:
                await conn.request(Message(type="big", payload={"data": BIG}), timeout=30)

        await asyncio.gather(*(pump() for _ in range(inflight)))


async def measure(address: str, pings: int) -> list[float]:
    t = Transport(NodeManager.generate("pinger"), config=TransportConfig(listen_addr=None, rate_limit_burst=None))
    async with t:
        conn = await t.connect(address)
        rtts = []
        for _ in range(pings):
            started = time.perf_counter()
            await conn.request(Message.ping(t.node.node_id, conn.peer_id), timeout=10)
            rtts.append((time.perf_counter() - started) * 1e6)
        return rtts


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=2)
    parser.add_argument("--protocol", choices=["1.0", "2.0"], default="2.0",
                        help="protocol of the loader's link (the pinger's is 2.0)")
    parser.add_argument("--role", choices=["serve", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.role == "serve":
        asyncio.run(serve())
        return
    if opts.role == "load":
        asyncio.run(load(opts.address, opts.inflight, opts.protocol))
        return
    server = subprocess.Popen([sys.executable, __file__, "--role", "serve"], stdout=subprocess.PIPE, text=True)
    loader = None
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        quiet = asyncio.run(measure(address, opts.pings))
        loader = subprocess.Popen([sys.executable, __file__, "--role", "load", "--address", address,
                                   "--inflight", str(opts.inflight), "--protocol", opts.protocol],
                                  stdout=subprocess.PIPE, text=True)
        assert loader.stdout is not None
        assert loader.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # let the 1 MiB traffic run
        loaded = asyncio.run(measure(address, opts.pings))
    finally:
        for p in (loader, server):
            if p is not None:
                p.kill()
                p.wait(10)
    result = {
        "bench": "ping_under_load", "pings": opts.pings, "inflight_1mib": opts.inflight, "protocol": opts.protocol,
        "quiet": {"p50_us": round(statistics.median(quiet), 1), "p99_us": round(pct(quiet, 0.99), 1)},
        "under_1mib_load": {"p50_us": round(statistics.median(loaded), 1), "p99_us": round(pct(loaded, 0.99), 1)},
    }
    print(f"ping quiet: p50 {result['quiet']['p50_us']} us, p99 {result['quiet']['p99_us']} us")
    print(f"ping while 1 MiB messages flow ({opts.inflight} in flight): p50 {result['under_1mib_load']['p50_us']} us, "
          f"p99 {result['under_1mib_load']['p99_us']} us (target p99 <= 10 ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
