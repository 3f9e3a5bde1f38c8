"""The smsgnet pair against a plain websockets + orjson pair, back to back, as a ratio.

Issue 10's yardstick: an encrypted smsgnet pair (handshake, SMSG sealing, replay
checks; ``benches/transport_throughput.py``) against the same traffic over plain
``websockets`` (its asyncio API) with ``orjson`` and no security at all: the
client sends transport-Message-shaped JSON (``{"id","type","from","to","ts",
"payload": {"data": 1 KiB}}``), the server parses it, builds the echo reply and
serialises it, as the smsgnet echo server does. Both are two processes on
127.0.0.1, 1 KiB payloads pipelined with a window of 1000.

Each round runs both pairs back to back (the order alternates); the result is
the median over rounds of smsgnet / plain, with the range. Absolute figures
drift 2-3x between days on these machines; the ratio in one run is the figure.

    python benches/pair_vs_websockets.py               # 3 rounds (~50 s)
    python benches/pair_vs_websockets.py --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
PAYLOAD = "x" * 1024


# -- the plain pair ---------------------------------------------------------------------


async def plain_server() -> None:
    from websockets.asyncio.server import serve

    from websockets.exceptions import ConnectionClosed

    async def echo(ws):  # type: ignore[no-untyped-def]
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                reply = {"id": str(uuid.uuid4()), "type": "echo", "from": "server", "to": msg["from"],
                         "ts": msg["ts"], "payload": msg["payload"], "replyTo": msg["id"]}
                await ws.send(orjson.dumps(reply))
        except ConnectionClosed:
            pass  # the client leaves with echoes still in flight

    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=2**20) as server:
        print(list(server.sockets)[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()


async def plain_client(port: int, window: int, warmup: float, duration: float) -> float:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, max_size=2**20,
                       close_timeout=0.5) as ws:  # leaves with echoes unread: do not wait 10 s for them
        def message() -> bytes:
            return orjson.dumps({"id": str(uuid.uuid4()), "type": "bench", "from": "client", "to": "server",
                                 "ts": "2026-12-01T00:00:00Z", "payload": {"data": PAYLOAD}})

        for _ in range(window):
            await ws.send(message())
        start = time.monotonic()
        counted_from, counted = start + warmup, 0
        while True:
            reply = orjson.loads(await ws.recv())
            assert reply["payload"]["data"] == PAYLOAD
            now = time.monotonic()
            if now >= counted_from:
                counted += 1
                if now >= counted_from + duration:
                    return counted / (now - counted_from)
            await ws.send(message())


def run_plain(opts: argparse.Namespace) -> float:
    server = subprocess.Popen([sys.executable, __file__, "--plain-server"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return asyncio.run(plain_client(port, opts.window, opts.warmup, opts.duration))
    finally:
        server.kill()
        server.wait(10)


# -- the smsgnet pair -----------------------------------------------------------------------


def run_smsgnet(opts: argparse.Namespace) -> float:
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "transport_throughput.py"), "--no-rate-limit-demo",
         "--window", str(opts.window), "--warmup", str(opts.warmup), "--duration", str(opts.duration)],
        capture_output=True, text=True, timeout=300, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["msgs_per_sec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.plain_server:
        asyncio.run(plain_server())
        return
    ratios, rows = [], []
    for r in range(opts.rounds):
        order = (run_smsgnet, run_plain) if r % 2 == 0 else (run_plain, run_smsgnet)
        got = {f.__name__: f(opts) for f in order}
        ratio = got["run_smsgnet"] / got["run_plain"]
        ratios.append(ratio)
        rows.append({"smsgnet_msgs_per_s": round(got["run_smsgnet"]), "plain_msgs_per_s": round(got["run_plain"]),
                     "ratio": round(ratio, 2)})
        print(f"round {r + 1}: smsgnet {got['run_smsgnet']:,.0f} msgs/s, plain websockets+orjson "
              f"{got['run_plain']:,.0f} msgs/s, ratio {ratio:.2f}", flush=True)
    print(f"smsgnet / plain websockets: median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds)")
    print(json.dumps({"bench": "pair_vs_websockets", "rounds": rows, "median_ratio": round(statistics.median(ratios), 3)}))


if __name__ == "__main__":
    main()
