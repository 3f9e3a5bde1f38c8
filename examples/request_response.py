"""Request/response over smsgnet: a worker answers ``get_stats`` with ``stats``;
a controller calls ``conn.request()``, which sends the request and returns the
reply matched on ``replyTo`` (an ``error`` reply raises ``RemoteError``, no
reply in time ``RequestTimeout``).

    python examples/request_response.py                        # both sides, one process
    python examples/request_response.py worker --listen 127.0.0.1:9200
    python examples/request_response.py controller 127.0.0.1:9200 [--expect-key KEY]

The worker prints its URL and public key; pass the key to the controller's
``--expect-key`` so it refuses anything else listening on that address.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from smsgnet import (
    ErrorCode,
    Message,
    MessageType,
    NodeManager,
    PeerConnection,
    RemoteError,
    RequestTimeout,
    SmsgnetError,
    Transport,
    TransportConfig,
)


def make_worker(node: NodeManager, listen: str) -> Transport:
    """A worker node that answers get_stats, and refuses other requests with an error reply."""
    transport = Transport(node, config=TransportConfig(listen_addr=listen))
    started = time.monotonic()

    @transport.on_message(MessageType.GET_STATS)
    async def get_stats(conn: PeerConnection, msg: Message) -> None:
        stats = transport.stats()
        await conn.send(msg.reply(MessageType.STATS, {
            "name": node.identity.name,
            "uptimeSeconds": round(time.monotonic() - started, 3),
            "peers": transport.connected_peers,
            "messagesIn": stats.messages_in,
        }))

    @transport.on_message  # everything else
    async def unknown(conn: PeerConnection, msg: Message) -> None:
        await conn.send(msg.error_reply(ErrorCode.NOT_FOUND, f"unknown request {msg.type!r}"))

    return transport


async def run_controller(node: NodeManager, address: str, expect_key: str | None, timeout: float) -> int:
    transport = Transport(node, config=TransportConfig(listen_addr=None))  # a client listens on nothing
    async with transport:
        conn = await transport.connect(address, expect_key=expect_key)
        print(f"controller: connected to {conn.identity.name or conn.peer_id} ({conn.identity.role})")
        stats = await conn.request(Message(type=MessageType.GET_STATS, payload={}), timeout=timeout)
        print(f"controller: {stats.type} {stats.payload}")
        try:
            await conn.request(Message(type=MessageType.GET_LOGS, payload={"lines": 10}), timeout=timeout)
        except RemoteError as e:
            print(f"controller: error {e.code}: {e.message}")
        await conn.graceful_close("done")
    return 0


async def run_both(timeout: float) -> int:
    worker = make_worker(NodeManager.generate("worker-1", "worker"), "127.0.0.1:0")
    async with worker:
        key = worker.node.identity.public_key
        return await run_controller(NodeManager.generate("controller", "controller"), worker.address, key, timeout)


async def run_worker(listen: str) -> int:
    worker = make_worker(NodeManager.generate("worker-1", "worker"), listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print(f"worker: listening on {worker.url}", flush=True)
        print(f"worker: public key {worker.node.identity.public_key}", flush=True)
        await stop.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="side")
    w = sub.add_parser("worker", help="run only the worker, until Ctrl-C")
    w.add_argument("--listen", default="127.0.0.1:9200")
    c = sub.add_parser("controller", help="run only the controller against ADDR")
    c.add_argument("addr", metavar="ADDR")
    c.add_argument("--expect-key", metavar="KEY")
    c.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    try:
        if args.side == "worker":
            return asyncio.run(run_worker(args.listen))
        if args.side == "controller":
            return asyncio.run(run_controller(NodeManager.generate("controller", "controller"),
                                              args.addr, args.expect_key, args.timeout))
        return asyncio.run(run_both(timeout=5.0))
    except RequestTimeout:
        print("controller: no reply in time", file=sys.stderr)
    except SmsgnetError as e:
        print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
