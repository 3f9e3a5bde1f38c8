"""A small encrypted chat between two terminals.

    terminal 1:  python examples/chat.py listen --listen 127.0.0.1:9100
    terminal 2:  python examples/chat.py connect 127.0.0.1:9100

Lines typed on stdin are sent to the other side; lines received are printed.
``listen`` waits for one peer and ends when it leaves (or on Ctrl-C);
``connect`` ends at end of input (Ctrl-D) or when the listener goes away.

``--script "line1;line2"`` sends those lines instead of reading stdin (for
tests and demos): the listener sends them when the peer joins, the connector
right after connecting, then lingers ``--linger`` seconds for answers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable

from smsgnet import Message, NodeManager, PeerConnection, SmsgnetError, Transport, TransportConfig

CHAT = "chat"


def show(conn: PeerConnection, msg: Message) -> None:
    """Message handler: print chat lines as ``name: text``."""
    if msg.type == CHAT and isinstance(msg.payload, dict):
        who = conn.identity.name or conn.peer_id[:8]
        print(f"{who}: {msg.payload.get('text', '')}", flush=True)


def stdin_lines() -> asyncio.Queue[str | None]:
    """Lines of stdin, read by a daemon thread (``None`` at end of input)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    return queue


async def say(conn: PeerConnection, text: str) -> None:
    await conn.send(Message(type=CHAT, payload={"text": text}, to=conn.peer_id))


async def send_stdin(conn: PeerConnection) -> None:
    """Send every line typed until end of input."""
    lines = stdin_lines()
    while (line := await lines.get()) is not None:
        if line:
            await say(conn, line)


async def send_script(conn: PeerConnection, script: str) -> None:
    for line in script.split(";"):
        if line.strip():
            await say(conn, line.strip())


async def until_first(*aws: Awaitable[object]) -> None:
    """Wait until one finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def listen(args: argparse.Namespace, stop: asyncio.Event) -> int:
    transport = Transport(NodeManager.generate(args.name), config=TransportConfig(listen_addr=args.listen))
    joined: list[PeerConnection] = []

    def announce(conn: PeerConnection) -> None:
        if not joined:
            joined.append(conn)
            print(f"* {conn.identity.name or conn.peer_id} joined", flush=True)

    @transport.on_message
    def handle(conn: PeerConnection, msg: Message) -> None:
        announce(conn)  # a message can arrive before the poll below notices the peer
        show(conn, msg)

    async with transport:
        print(f"* listening on {transport.url} as {args.name}; waiting for a peer", flush=True)
        # (the transport has no "peer connected" callback: poll)
        while not stop.is_set() and not joined:
            if (first := next(transport.connections(), None)) is not None:
                announce(first)
            else:
                await asyncio.sleep(0.02)
        if not joined:
            return 0
        conn = joined[0]
        talk = send_script(conn, args.script) if args.script is not None else send_stdin(conn)
        talking = asyncio.ensure_future(talk)
        await until_first(conn.wait_closed(), stop.wait())
        talking.cancel()
        if conn.closed_by_peer:
            print(f"* {conn.identity.name or conn.peer_id} left", flush=True)
    return 0


async def connect(args: argparse.Namespace, stop: asyncio.Event) -> int:
    transport = Transport(NodeManager.generate(args.name), config=TransportConfig(listen_addr="127.0.0.1:0"))
    transport.on_message(show)
    async with transport:
        conn = await transport.connect(args.addr, expect_key=args.expect_key)
        print(f"* connected to {conn.identity.name or conn.peer_id}", flush=True)
        if args.script is not None:
            await send_script(conn, args.script)
            await until_first(asyncio.sleep(args.linger), conn.wait_closed(), stop.wait())
        else:
            await until_first(send_stdin(conn), conn.wait_closed(), stop.wait())
            if conn.is_open and not stop.is_set():
                await until_first(asyncio.sleep(args.linger), conn.wait_closed())
        if conn.closed_by_peer:
            print(f"* {conn.identity.name or conn.peer_id} left", flush=True)
        else:
            await conn.graceful_close("bye")
    return 0


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await (listen(args, stop) if args.mode == "listen" else connect(args, stop))


def main() -> int:
    parser = argparse.ArgumentParser(description="A small encrypted chat between two terminals.")
    sub = parser.add_subparsers(dest="mode", required=True)
    lp = sub.add_parser("listen", help="wait for one peer to connect")
    lp.add_argument("--listen", default="127.0.0.1:9100", help="HOST:PORT (default: 127.0.0.1:9100)")
    lp.add_argument("--name", default="listener")
    cp = sub.add_parser("connect", help="connect to a listening peer")
    cp.add_argument("addr", metavar="ADDR", help="HOST:PORT or ws:// URL")
    cp.add_argument("--name", default="connector")
    cp.add_argument("--expect-key", metavar="KEY", help="refuse a listener with another public key")
    for p in (lp, cp):
        p.add_argument("--script", metavar="LINES", help="send these ';'-separated lines instead of reading stdin")
        p.add_argument("--linger", type=float, default=0.5,
                       help="seconds to wait for answers after the last line (connect; default 0.5)")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except SmsgnetError as e:
        print(f"chat: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
