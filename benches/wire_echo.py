"""Pipelined echo over smsgnet.wire vs the same over websockets' asyncio API.

Two processes on 127.0.0.1: an echo server (``--serve KIND``, started by this
script) and this process as the client, which keeps up to ``--window``
messages of ``--size`` ASCII bytes (text frames) in flight on one connection
and counts echoes per second over ``--duration`` seconds after a warm-up,
then times ``--pings`` sequential 16-byte round trips. Each round runs the
websockets pair and the wire pair back to back (same code, only the
connect/serve functions differ); rounds alternate the order. No handshake
beyond the HTTP upgrade, no crypto, no JSON.

    python benches/wire_echo.py                     # 5 rounds, 2 s each, asyncio loop
    python benches/wire_echo.py --loop uvloop
    python benches/wire_echo.py --quick             # smoke run

Prints one line per run, then the median over rounds of the ratio wire /
websockets (each round's two runs back to back) for throughput and ping p50,
with the range over rounds, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

KINDS = ("websockets", "wire")


def _api(kind: str) -> tuple[Any, Any]:
    if kind == "wire":
        from smsgnet import wire
        return wire.connect, wire.serve
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    return connect, serve


def _options() -> dict[str, Any]:
    return dict(compression=None, max_size=2**20, max_queue=16, ping_interval=None, close_timeout=2)


# -- the server process ----------------------------------------------------------------


async def run_server(kind: str) -> None:
    _, serve = _api(kind)

    async def echo(ws: Any) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except Exception:
            pass

    server = await serve(echo, "127.0.0.1", 0, **_options())
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


# -- the client ----------------------------------------------------------------------


async def measure(kind: str, port: int, opts: argparse.Namespace) -> dict[str, Any]:
    connect, _ = _api(kind)
    ws = await connect(f"ws://127.0.0.1:{port}/", **_options(), open_timeout=10)
    payload = "x" * opts.size
    window = opts.window
    inflight = 0
    sent = 0
    received = 0
    wrong = 0
    stop = False
    room = asyncio.Event()

    async def sender() -> None:
        nonlocal inflight, sent
        while not stop:
            while inflight < window and not stop:
                inflight += 1
                sent += 1
                await ws.send(payload)
            room.clear()
            await room.wait()

    async def receiver() -> None:
        nonlocal inflight, received, wrong
        async for message in ws:
            if message != payload:
                wrong += 1
            inflight -= 1
            received += 1
            if inflight < window:
                room.set()
            if stop and inflight == 0:
                return

    send_task = asyncio.create_task(sender())
    recv_task = asyncio.create_task(receiver())
    await asyncio.sleep(opts.warmup)
    start_n, start_t = received, time.perf_counter()
    await asyncio.sleep(opts.duration)
    n, elapsed = received - start_n, time.perf_counter() - start_t
    stop = True
    room.set()
    await asyncio.wait_for(send_task, 10)
    if inflight == 0:  # nothing left to come back: the receiver would wait forever
        recv_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(recv_task, 30)
    if received != sent or wrong:
        raise SystemExit(f"{kind}: sent {sent}, echoed {received}, {wrong} echoes differ")

    rtts = []
    ping = "p" * 16
    for _ in range(opts.pings):
        t0 = time.perf_counter()
        await ws.send(ping)
        await ws.recv()
        rtts.append(time.perf_counter() - t0)
    await ws.close()
    rtts.sort()
    return {
        "kind": kind,
        "msgs_per_s": n / elapsed,
        "ping_p50_us": rtts[len(rtts) // 2] * 1e6 if rtts else None,
        "ping_p99_us": rtts[int(len(rtts) * 0.99)] * 1e6 if rtts else None,
    }


def one_run(kind: str, opts: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--loop", opts.loop]
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return run_loop(measure(kind, port, opts), opts.loop)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_loop(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s, 200 pings")
    opts = parser.parse_args()
    if opts.serve:
        run_loop(run_server(opts.serve), opts.loop)
        return
    if opts.quick:
        opts.rounds, opts.duration, opts.warmup, opts.pings = 1, 0.5, 0.2, 200

    results: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for r in range(opts.rounds):
        order = KINDS if r % 2 == 0 else KINDS[::-1]
        for kind in order:
            res = one_run(kind, opts)
            results[kind].append(res)
            print(f"round {r + 1} {kind:10s} {res['msgs_per_s']:10,.0f} msgs/s   "
                  f"ping p50 {res['ping_p50_us']:6.0f} µs  p99 {res['ping_p99_us']:6.0f} µs", flush=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    # Each round's wire run against the websockets run next to it: the pairs
    # share the machine's state of the moment, so their ratio drifts less than
    # the absolute figures when other work shares the CPUs.
    thr_pairs = [w["msgs_per_s"] / p["msgs_per_s"] for w, p in zip(results["wire"], results["websockets"])]
    p50_pairs = [w["ping_p50_us"] / p["ping_p50_us"] for w, p in zip(results["wire"], results["websockets"])]
    thr, p50 = statistics.median(thr_pairs), statistics.median(p50_pairs)
    print(f"{opts.size} B pipelined echo, window {opts.window}, {opts.loop} loop, {opts.rounds} rounds: "
          f"wire/websockets throughput {thr:.2f}x (rounds {min(thr_pairs):.2f}-{max(thr_pairs):.2f}), "
          f"ping p50 {p50:.2f}x (rounds {min(p50_pairs):.2f}-{max(p50_pairs):.2f})")
    print(json.dumps({
        "bench": "wire_echo", "loop": opts.loop, "size": opts.size, "window": opts.window,
        "rounds": opts.rounds, "duration_s": opts.duration,
        "websockets_msgs_per_s": median("websockets", "msgs_per_s"),
        "wire_msgs_per_s": median("wire", "msgs_per_s"),
        "throughput_ratio": thr,
        "throughput_ratio_rounds": thr_pairs,
        "websockets_ping_p50_us": median("websockets", "ping_p50_us"),
        "wire_ping_p50_us": median("wire", "ping_p50_us"),
        "ping_p50_ratio": p50,
        "ping_p50_ratio_rounds": p50_pairs,
    }))


if __name__ == "__main__":
    main()
