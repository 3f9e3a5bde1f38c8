"""The commands that dial a node: ``smsgnet ping`` and ``smsgnet send``.

Both run a client-only transport (``TransportConfig(listen_addr=None)``: it
listens on nothing), connect to ADDR, and close everything on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson

from smsgnet.config import TransportConfig
from smsgnet.connection import PeerConnection
from smsgnet.exceptions import RemoteError, RequestTimeout
from smsgnet.identity import NodeManager
from smsgnet.message import Message
from smsgnet.transport import Transport, build_url

from smsgnet.cli import arguments
from smsgnet.cli.output import EXIT_OK, CliError, say, say_json
from smsgnet.cli.state import load_identity

log = logging.getLogger("smsgnet.cli")


def add_parsers(sub: arguments.SubParsers) -> None:
    p = arguments.add_command(
        sub, "ping", run=run_ping, help="handshake with a node and measure round trips",
        description="Connect to ADDR, complete the handshake, send ping messages and "
                    "print the round-trip time of each pong. Exits 0 when every ping "
                    "was answered.")
    arguments.add_client_options(p)
    p.add_argument("--count", "-c", metavar="N", type=arguments.positive_int, default=3,
                   help="pings to send (default: 3)")
    p.add_argument("--interval", "-i", metavar="S", type=arguments.nonnegative_float, default=1.0,
                   help="seconds between pings (default: 1)")

    p = arguments.add_command(
        sub, "send", run=run_send, help="send one message, optionally wait for the reply",
        description="Connect to ADDR, send one message and, with --wait-reply, print the "
                    "payload of the reply (the message whose replyTo is the sent id). "
                    "--json prints the whole message instead: the reply when waiting, "
                    "else the message sent.")
    arguments.add_client_options(p)
    p.add_argument("--type", "-t", required=True, help="message type, e.g. get_stats")
    p.add_argument("--payload", "-p", metavar="JSON|@FILE|-", type=arguments.json_value, default=None,
                   help="payload: inline JSON, @FILE for the JSON in FILE, or - for the JSON on stdin "
                        "(default: null)")
    p.add_argument("--wait-reply", metavar="SECONDS", type=arguments.positive_float,
                   help="wait this long for the reply and print it")


# -- the session every client command runs in ------------------------------------------------------


class Replies:
    """A message handler that resolves futures by ``replyTo``."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Message]] = {}

    def expect(self, message_id: str) -> asyncio.Future[Message]:
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = fut
        return fut

    def forget(self, message_id: str) -> None:
        self._waiting.pop(message_id, None)

    def __call__(self, conn: PeerConnection, msg: Message) -> None:
        fut = self._waiting.pop(msg.reply_to, None) if msg.reply_to else None
        if fut is not None and not fut.done():
            fut.set_result(msg)


def client_config(args: argparse.Namespace, *, control: bool) -> TransportConfig:
    """The configuration of a client command's node: it listens on nothing."""
    arguments.check_protocols(args)
    return TransportConfig(
        listen_addr=None,  # a client listens on nothing
        ws_path=args.path,
        handshake_timeout=args.timeout,
        tls_verify=not args.insecure,
        tls_ca_path=args.ca,
        deliver_control_messages=control,
        min_protocol=args.min_protocol,
        max_protocol=args.max_protocol,
    )


def client_node(args: argparse.Namespace, name: str) -> NodeManager:
    """The identity in ``--state``, or a throwaway one."""
    if args.state is not None:
        return load_identity(args.state)
    return NodeManager.generate(name)


@contextlib.asynccontextmanager
async def client_session(
    args: argparse.Namespace, node: NodeManager, *, control: bool
) -> AsyncIterator[tuple[str, PeerConnection, Replies]]:
    """Start a client-only transport, connect to ADDR, and close it all afterwards."""
    url = build_url(args.addr, args.path)
    replies = Replies()
    transport = Transport(node, config=client_config(args, control=control))
    transport.on_message(replies)
    conn: PeerConnection | None = None
    try:
        await transport.start()
        conn = await transport.connect(url, expect_key=args.expect_key)
        yield url, conn, replies
    finally:
        if conn is not None:
            await conn.graceful_close("done")
        await transport.stop()


# -- ping ---------------------------------------------------------------------------------------------------


def run_ping(args: argparse.Namespace) -> int:
    """Handshake, then measure ping/pong round trips."""
    return asyncio.run(_ping(args, client_node(args, "smsgnet-ping")))


async def _ping(args: argparse.Namespace, node: NodeManager) -> int:
    rtts: list[float | None] = []
    async with client_session(args, node, control=True) as (url, conn, replies):
        peer = conn.identity
        if not args.json:
            say(f"PING {url}: node {peer.id}" + (f" ({peer.name}, {peer.role})" if peer.name else f" ({peer.role})")
                + f", protocol {conn.protocol}")
        for seq in range(1, args.count + 1):
            if seq > 1 and args.interval:
                await asyncio.sleep(args.interval)
            msg = Message.ping(node.node_id, conn.peer_id)
            fut = replies.expect(msg.id)
            start = time.perf_counter()
            await conn.send(msg)
            try:
                await asyncio.wait_for(fut, args.timeout)
            except TimeoutError:
                replies.forget(msg.id)
                rtts.append(None)
                if not args.json:
                    say(f"no pong within {args.timeout:g} s: seq={seq}")
                continue
            rtt = (time.perf_counter() - start) * 1000.0
            rtts.append(rtt)
            if not args.json:
                say(f"pong from {conn.peer_id}: seq={seq} time={rtt:.3f} ms")
    got = [r for r in rtts if r is not None]
    low, avg, high = (min(got), sum(got) / len(got), max(got)) if got else (None, None, None)
    lost = len(rtts) - len(got)
    failure = f"{lost} of {len(rtts)} pings got no pong within {args.timeout:g} s" if lost else None
    if args.json:
        summary = {
            "peerId": conn.peer_id,
            "peerName": conn.identity.name,
            "publicKey": conn.identity.public_key,
            "url": url,
            "protocol": conn.protocol,
            "sent": len(rtts),
            "received": len(got),
            "rttMs": [_round(r) for r in rtts],
            "minMs": _round(low),
            "avgMs": _round(avg),
            "maxMs": _round(high),
        }
        if failure:  # one object: the summary inside the error
            raise CliError(failure, kind="PingLost", details=summary)
        say_json(summary)
    else:
        line = f"{len(rtts)} pings, {len(got)} pongs, {lost} lost"
        if got:
            line += f"; rtt min/avg/max = {low:.3f}/{avg:.3f}/{high:.3f} ms"
        say(line)
        if failure:
            raise CliError(failure, kind="PingLost")
    return EXIT_OK


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


# -- send ---------------------------------------------------------------------------------------------------


async def _confirm_read(conn: PeerConnection, node: NodeManager, timeout: float) -> None:
    """Wait until the peer has read everything sent so far: a node reads a
    connection's frames in order, so its pong to a ping sent now comes after.
    Closing at once could lose the message: a node whose write to a closed
    socket fails drops what it read but had not handled yet."""
    try:
        await conn.request(Message.ping(node.node_id, conn.peer_id), timeout=timeout)
    except RequestTimeout:
        raise CliError(f"message sent, but the peer did not confirm reading it within {timeout:g} s",
                       kind="RequestTimeout") from None


def run_send(args: argparse.Namespace) -> int:
    """Send one message, optionally wait for its reply."""
    return asyncio.run(_send(args, client_node(args, "smsgnet-send")))


async def _send(args: argparse.Namespace, node: NodeManager) -> int:
    reply: Message | None = None
    async with client_session(args, node, control=False) as (_url, conn, _replies):
        protocol = conn.protocol
        msg = Message.new(args.type, node.node_id, conn.peer_id, args.payload)
        if args.wait_reply:
            try:
                reply = await conn.request(msg, timeout=args.wait_reply)
            except RequestTimeout:
                raise CliError(f"no reply within {args.wait_reply:g} s", kind="RequestTimeout") from None
            except RemoteError as e:
                raise CliError(str(e), kind="RemoteError",
                               details={"code": e.code, "message": e.message, "details": e.details}) from None
        else:
            await conn.send(msg)
            await _confirm_read(conn, node, args.timeout)
        log.info("sent %s %s to %s", msg.type, msg.id, conn.peer_id)
    shown = msg if reply is None else reply
    if args.json:
        # the message as it went on the wire, plus the protocol the link ran as its last key
        say(shown.to_json()[:-1].decode() + f',"protocol":"{protocol}"}}')
    else:
        say(msg.id if reply is None else orjson.dumps(reply.payload).decode())
    return EXIT_OK
