"""``smsgnet bench``: the client of the echo benchmark.

Against ``smsgnet serve --echo --rate-limit off`` (or a reference node that
echoes): a client-only node connects to ADDR, sends ``--count`` messages of
type ``bench`` with payload ``{"data": SIZE ASCII characters}``, at most
``--window`` in flight (0: no limit), and counts each reply whose ``replyTo``
is one of its ids (the echo: type ``echo``, same payload). Echoes are matched
on ``replyTo``, not on order. Then ``--pings`` ping -> pong round trips, one
after the other. Only the protocol is used, so any node that answers
application messages with a reply works as the server.

Nothing the server sends back is checked beyond its ``replyTo``: this measures
the link, not the server's echo. An echo not back within ``--timeout`` of the
last send is lost; so is one whose window slot had to be taken back (no echo
for ``--timeout`` while the window was full). Exit 0 only when nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import time
from typing import Any

from smsgnet.connection import PeerConnection
from smsgnet.exceptions import RequestTimeout
from smsgnet.identity import NodeManager
from smsgnet.message import Message
from smsgnet.transport import Transport, build_url

from smsgnet.cli import arguments, loops
from smsgnet.cli.client import client_config, client_node
from smsgnet.cli.output import EXIT_OK, CliError, say, say_json

log = logging.getLogger("smsgnet.cli")


def add_parser(sub: arguments.SubParsers) -> None:
    p = arguments.add_command(
        sub, "bench", run=run, help="measure echo throughput, latency and ping round trips",
        description="Connect to ADDR (e.g. 'smsgnet serve --echo --rate-limit off'), send N "
                    "messages of type 'bench' with payload {\"data\": S ASCII bytes}, at most W "
                    "in flight, wait for each echo (the reply whose replyTo is its id), then time "
                    "P ping/pong round trips. Exits 0 when nothing was lost.")
    arguments.add_client_options(p)
    p.add_argument("--count", "-c", metavar="N", type=arguments.positive_int, default=10_000,
                   help="messages to send (default: 10000)")
    p.add_argument("--size", "-s", metavar="S", type=arguments.positive_int, default=1024,
                   help="bytes of payload data per message, ASCII (default: 1024)")
    p.add_argument("--window", "-w", metavar="W", type=arguments.nonnegative_int, default=1000,
                   help="messages in flight at most; 0 = no limit (default: 1000)")
    p.add_argument("--pings", "-p", metavar="P", type=arguments.nonnegative_int, default=100,
                   help="sequential ping/pong round trips after the messages (default: 100)")
    loops.add_loop(p)




def run(args: argparse.Namespace) -> int:
    loop = loops.resolve(args.loop)
    node = client_node(args, "smsgnet-bench")
    result = loops.run(_bench(args, node, loop), loop)
    return report(args, result)


# -- measuring ------------------------------------------------------------------------------------------------


class Echoes:
    """The message handler: takes the replies to messages in flight, times them,
    and frees their window slots."""

    def __init__(self, window: int) -> None:
        self.in_flight: dict[str, int] = {}  # message id -> perf_counter_ns at send
        self.latencies_ns: list[int] = []
        self.last_ns = 0
        self.lost = 0
        self.window = window
        self.room: asyncio.Future[None] | None = None  # set while the sender waits for a free slot
        self.all_sent = False
        self.done = asyncio.Event()

    def __call__(self, conn: PeerConnection, msg: Message) -> None:
        sent = self.in_flight.pop(msg.reply_to, None) if msg.reply_to else None
        if sent is None:
            return  # not ours, or given up on already
        now = time.perf_counter_ns()
        self.latencies_ns.append(now - sent)
        self.last_ns = now
        self._freed()
        if self.all_sent and not self.in_flight:
            self.done.set()

    def _freed(self) -> None:
        room = self.room
        if room is not None and not room.done():
            room.set_result(None)

    async def take_slot(self, timeout: float) -> None:
        """Wait for room in the window (the caller then adds one message to
        ``in_flight``); after ``timeout`` seconds without an echo, the messages
        still in flight are lost and their slots free again."""
        window = self.window
        while window and len(self.in_flight) >= window:
            room = self.room = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(room, timeout)
            except TimeoutError:
                self.give_up(time.perf_counter_ns() - int(timeout * 1e9))
            finally:
                self.room = None

    def give_up(self, sent_before_ns: int) -> None:
        """Count every message in flight sent before ``sent_before_ns`` as lost."""
        old = [mid for mid, t in self.in_flight.items() if t <= sent_before_ns]
        for mid in old:
            del self.in_flight[mid]
        self.lost += len(old)

    def finish(self) -> None:
        """After the wait for the last echoes: what is still in flight is lost."""
        self.lost += len(self.in_flight)
        self.in_flight.clear()


def percentile_us(samples_ns: list[int], q: float) -> float | None:
    """Nearest-rank percentile of ``samples_ns`` (sorted), in microseconds."""
    if not samples_ns:
        return None
    rank = max(1, math.ceil(q / 100 * len(samples_ns)))
    return round(samples_ns[rank - 1] / 1000, 1)


async def _bench(args: argparse.Namespace, node: NodeManager, loop: str) -> dict[str, Any]:
    url = build_url(args.addr, args.path)
    # a client-only node that never throttles the echoes coming back
    config = dataclasses.replace(client_config(args, control=False), rate_limit_burst=None)
    echoes = Echoes(args.window)
    transport = Transport(node, config=config)
    transport.on_message(echoes)
    conn: PeerConnection | None = None
    try:
        await transport.start()
        conn = await transport.connect(url, expect_key=args.expect_key)
        protocol = conn.protocol
        peer = conn.peer_id
        me = node.node_id
        payload = {"data": "x" * args.size}
        in_flight = echoes.in_flight
        clock = time.perf_counter_ns
        log.info("bench: %d x %d B to %s, window %d, loop %s", args.count, args.size, url, args.window, loop)

        window = args.window
        start = clock()
        for _ in range(args.count):
            if window and len(in_flight) >= window:
                await echoes.take_slot(args.timeout)
            msg = Message.new("bench", me, peer, payload)
            in_flight[msg.id] = clock()
            if not conn.send_nowait(msg):  # the socket's buffer is full: wait for it, as send() would
                await conn.drain()
        echoes.all_sent = True
        last_send = clock()
        if in_flight:
            try:
                await asyncio.wait_for(echoes.done.wait(), args.timeout)
            except TimeoutError:
                pass
        echoes.finish()

        rtts: list[int] = []
        ping_lost = 0
        for _ in range(args.pings):
            t0 = clock()
            try:
                await conn.request(Message.ping(me, peer), timeout=args.timeout)
            except RequestTimeout:
                ping_lost += 1
                continue
            rtts.append(clock() - t0)
    finally:
        if conn is not None:
            await conn.graceful_close("done")
        await transport.stop()

    received = len(echoes.latencies_ns)
    end = echoes.last_ns if received else last_send
    elapsed_s = max(end - start, 1) / 1e9
    echoes.latencies_ns.sort()
    rtts.sort()
    return {
        "msgs_per_s": round(received / elapsed_s, 1),
        "mb_per_s": round(received * args.size / elapsed_s / 1e6, 3),
        "p50_us": percentile_us(echoes.latencies_ns, 50),
        "p99_us": percentile_us(echoes.latencies_ns, 99),
        "pingpong": {
            "pings": args.pings,
            "lost": ping_lost,
            "p50_us": percentile_us(rtts, 50),
            "p99_us": percentile_us(rtts, 99),
        },
        "lost": echoes.lost,
        "received": received,
        "count": args.count,
        "size": args.size,
        "window": args.window,
        "elapsed_s": round(elapsed_s, 6),
        "protocol": protocol,
        "loop": loop,
        "url": url,
        "peerId": peer,
    }


# -- reporting ----------------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, r: dict[str, Any]) -> int:
    pp = r["pingpong"]
    failure = None
    if r["lost"] or pp["lost"]:
        parts = []
        if r["lost"]:
            parts.append(f"{r['lost']} of {r['count']} echoes")
        if pp["lost"]:
            parts.append(f"{pp['lost']} of {pp['pings']} pongs")
        failure = f"lost {' and '.join(parts)} (not back within {args.timeout:g} s)"
    if args.json:
        if failure:  # one object: the result inside the error
            raise CliError(failure, kind="BenchLost", details=r)
        say_json(r)
        return EXIT_OK
    window = f"window {r['window']}" if r["window"] else "no window"
    say(f"BENCH {r['url']}: node {r['peerId']}, protocol {r['protocol']}, {r['count']} x {r['size']} B, {window}, "
        f"loop {r['loop']}")
    line = (f"{r['received']} echoes in {r['elapsed_s']:.3f} s: {r['msgs_per_s']:,.0f} msgs/s, "
            f"{r['mb_per_s']:.2f} MB/s")
    if r["p50_us"] is not None:
        line += f"; echo latency p50 {r['p50_us']:,.0f} us, p99 {r['p99_us']:,.0f} us"
    say(line + f"; {r['lost']} lost")
    if pp["pings"]:
        line = f"{pp['pings']} pings"
        if pp["p50_us"] is not None:
            line += f": round trip p50 {pp['p50_us']:,.0f} us, p99 {pp['p99_us']:,.0f} us"
        say(line + f"; {pp['lost']} lost")
    if failure:
        raise CliError(failure, kind="BenchLost")
    return EXIT_OK
