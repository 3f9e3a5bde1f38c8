"""smsgnet.wire against real sockets on 127.0.0.1: wire↔wire and wire↔websockets' asyncio API.

Peers that misbehave on purpose (never read, never answer a close, hang up
mid-frame) are plain asyncio streams speaking the bytes by hand. Every wait is
bounded; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from selfsigned import make_certificate
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Frame, Opcode
from websockets.utils import accept_key

from smsgnet import wire

pytestmark = pytest.mark.timeout(60)

OPTS: dict[str, Any] = dict(compression=None, ping_interval=None, close_timeout=2)
#: (server, client)
PAIRS = [("wire", "wire"), ("wire", "websockets"), ("websockets", "wire")]
PAIR_IDS = ["wire-wire", "wire-server", "wire-client"]

UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


def unmasked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False)


class Net:
    """Starts servers and clients of either kind; closes them all at teardown."""

    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.clients: list[Any] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, kind: str, handler: Callable[[Any], Awaitable[None]], *,
                    ssl_context: ssl.SSLContext | None = None, **kw: Any) -> str:
        serve = wire.serve if kind == "wire" else ws_serve
        server = await serve(handler, "127.0.0.1", 0, ssl=ssl_context, **{**OPTS, **kw})
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}/"

    async def dial(self, kind: str, url: str, **kw: Any) -> Any:
        connect = wire.connect if kind == "wire" else ws_connect
        client = await asyncio.wait_for(connect(url, **{**OPTS, **kw}), 10)
        self.clients.append(client)
        return client

    async def raw(self, url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.writers.append(writer)
        return reader, writer

    async def raw_upgrade(self, url: str, path: str = "/", extra: bytes = b"") -> tuple[
            asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await self.raw(url)
        writer.write(UPGRADE.format(path=path).encode() + extra)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return reader, writer, head

    async def raw_server(self, on_open: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                         status: bytes = b"101 Switching Protocols") -> str:
        """A server that answers the upgrade by hand, then runs ``on_open``."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            request = await reader.readuntil(b"\r\n\r\n")
            key = re.search(rb"Sec-WebSocket-Key: (\S+)", request, re.I)
            assert key is not None
            writer.write(b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_key(key.group(1).decode()).encode() + b"\r\n\r\n")
            await on_open(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    async def close(self) -> None:
        for w in self.writers:
            w.transport.abort()
        for c in self.clients:
            c.transport.abort()
        for s in self.servers:
            s.close()
        for s in self.servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 5)
            except TimeoutError:
                pass


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        await n.close()


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def stalled(count: Callable[[], int], quiet: float = 0.5, limit: float = 10.0) -> int:
    """Wait until ``count()`` stops changing for ``quiet`` seconds; its value then."""
    deadline = time.monotonic() + limit
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still moving after {limit}s (at {last})")


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def small_socket(option: int, size: int = 65536) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, option, size)
    sock.setblocking(False)
    return sock


# -- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("server_kind,client_kind", PAIRS, ids=PAIR_IDS)
async def test_text_and_binary_both_ways_in_order(net: Net, server_kind: str, client_kind: str) -> None:
    async def handler(ws: Any) -> None:
        await ws.send("hello from the server")
        await ws.send(b"\x00\x01binary")
        await ws.send(b'{"as":"text"}', text=True)
        await ws.send("as binary", text=False)
        await echo(ws)

    url = await net.start(server_kind, handler)
    c = await net.dial(client_kind, url)
    assert await c.recv() == "hello from the server"
    first = await c.recv()
    assert first == b"\x00\x01binary" and type(first) is bytes
    assert await c.recv() == '{"as":"text"}'
    assert await c.recv() == b"as binary"
    messages: list[str | bytes] = [f"t{i}" if i % 2 else f"b{i}".encode() for i in range(500)]
    messages += ["", b"", "é ✓ 𝄞", b"\xff" * 70_000, "y" * 200_000]
    messages += [bytes([n % 251]) * n for n in (125, 126, 127, 65535, 65536, 65537)]  # length encodings
    for m in messages:
        await c.send(m)
    echoed = [await asyncio.wait_for(c.recv(), 5) for _ in messages]
    assert echoed == messages
    assert [type(m) for m in echoed] == [type(m) for m in messages]
    await c.close()


@pytest.mark.parametrize("server_kind,client_kind", PAIRS, ids=PAIR_IDS)
async def test_fragmented_messages_arrive_whole(net: Net, server_kind: str, client_kind: str) -> None:
    async def handler(ws: Any) -> None:
        await ws.send(["serv", "er ", "fragments"])
        await ws.send([b"\x01", b"\x02", b"\x03"])
        await echo(ws)

    url = await net.start(server_kind, handler)
    c = await net.dial(client_kind, url)
    assert await c.recv() == "server fragments"
    assert await c.recv() == b"\x01\x02\x03"
    await c.send(["frag", "men", "ted ✓"])
    await c.send([b"caf\xc3", b"\xa9"], text=True)  # a character split across fragments
    await c.send([b"a", b"b"])
    await c.send("after")
    assert [await asyncio.wait_for(c.recv(), 5) for _ in range(4)] == ["fragmented ✓", "café", b"ab", "after"]


@pytest.mark.parametrize("server_kind,client_kind", PAIRS, ids=PAIR_IDS)
async def test_with_debug_logging_the_protocol_builds_the_frames(
        net: Net, server_kind: str, client_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="websockets"):
        url = await net.start(server_kind, echo)
        c = await net.dial(client_kind, url)
        for m in ["logged", b"\x00" * 300]:
            await c.send(m)
            assert await asyncio.wait_for(c.recv(), 5) == m
    assert any("> TEXT 'logged'" in r.getMessage() for r in caplog.records if r.name == "websockets.client")
    assert any("> TEXT 'logged'" in r.getMessage() for r in caplog.records if r.name == "websockets.server")


async def test_frames_right_behind_the_upgrade_request_are_delivered(net: Net) -> None:
    got: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        got.set_result([await ws.recv(), await ws.recv()])

    url = await net.start("wire", handler)
    await net.raw_upgrade(url, extra=masked(Opcode.TEXT, b"early") + masked(Opcode.BINARY, b"bird"))
    assert await asyncio.wait_for(got, 5) == ["early", b"bird"]


# -- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
async def test_message_above_max_size_closes_1009(net: Net, fragmented: bool) -> None:
    seen: asyncio.Future[ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        try:
            async for m in ws:
                await ws.send(str(len(m)))
        except ConnectionClosed as e:
            seen.set_result(e)

    url = await net.start("wire", handler, max_size=1000)
    c = await net.dial("websockets", url)
    await c.send(b"x" * 1000)  # at the limit: fine
    assert await c.recv() == "1000"
    await c.send([b"x" * 600, b"x" * 400])
    assert await c.recv() == "1000"
    await c.send([b"x" * 600, b"x" * 401] if fragmented else b"x" * 1001)
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    server_side = await asyncio.wait_for(seen, 5)
    assert isinstance(server_side, ConnectionClosedError)
    assert server_side.sent is not None and server_side.sent.code == 1009


async def test_wire_client_refuses_oversize_with_1009(net: Net) -> None:
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        await ws.send(b"x" * 5000)
        try:
            await ws.recv()
        except ConnectionClosed as e:
            closed.set_result(e.rcvd.code if e.rcvd else -1)

    url = await net.start("websockets", handler)
    c = await net.dial("wire", url, max_size=4096)
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert e.value.sent is not None and e.value.sent.code == 1009
    assert await asyncio.wait_for(closed, 5) == 1009


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"caf\xc3", [b"caf", b"\xc3"]], ids=["invalid", "cut", "cut-fragments"])
async def test_invalid_utf8_in_a_text_frame_closes_1007_after_the_messages_before_it(net: Net, bad: Any) -> None:
    got: list[Any] = []

    async def handler(ws: Any) -> None:
        async for m in ws:
            got.append(m)

    url = await net.start("wire", handler)
    c = await net.dial("websockets", url)
    await c.send("fine")
    await c.send(bad, text=True)
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1007
    assert got == ["fine"]


# -- the upgrade ----------------------------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["wire", "websockets"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_process_request_refuses_with_503_and_never_runs_the_handler(
        net: Net, client_kind: str, asynchronous: bool) -> None:
    paths: list[str] = []

    def decide(conn: Any, request: Any) -> Any:
        if request.path == "/no":
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        return None

    async def decide_later(conn: Any, request: Any) -> Any:
        await asyncio.sleep(0)
        return decide(conn, request)

    async def handler(ws: Any) -> None:
        paths.append(ws.request.path)
        await ws.send("welcome")

    url = await net.start("wire", handler, process_request=decide_later if asynchronous else decide)
    with pytest.raises(InvalidStatus) as e:
        await net.dial(client_kind, url + "no")
    assert e.value.response.status_code == 503
    assert e.value.response.body == b"busy\n"
    c = await net.dial(client_kind, url + "yes")
    assert await c.recv() == "welcome"
    assert paths == ["/yes"]


async def test_refusal_is_sent_and_the_connection_ended(net: Net) -> None:
    async def handler(ws: Any) -> None:
        raise AssertionError("handler must not run")

    url = await net.start("wire", handler,
                          process_request=lambda conn, req: conn.respond(HTTPStatus.NOT_FOUND, "not found\n"))
    reader, writer, head = await net.raw_upgrade(url, path="/elsewhere")
    assert head.startswith(b"HTTP/1.1 404 ")
    rest = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server ended the stream
    assert rest == b"not found\n"


async def test_process_request_failure_answers_500(net: Net) -> None:
    def broken(conn: Any, request: Any) -> None:
        raise RuntimeError("boom")

    url = await net.start("wire", echo, process_request=broken)
    with pytest.raises(InvalidStatus) as e:
        await net.dial("websockets", url)
    assert e.value.response.status_code == 500


async def test_wire_client_sees_a_websockets_refusal(net: Net) -> None:
    url = await net.start("websockets", echo,
                          process_request=lambda conn, req: conn.respond(HTTPStatus.FORBIDDEN, "no\n"))
    with pytest.raises(InvalidStatus) as e:
        await net.dial("wire", url)
    assert e.value.response.status_code == 403


async def test_connect_errors_are_websockets_errors(net: Net) -> None:
    with pytest.raises(InvalidURI):
        await wire.connect("http://127.0.0.1:1/", **OPTS)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(OSError):
        await wire.connect(f"ws://127.0.0.1:{port}/", **OPTS)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    url = await net.raw_server(garbage, status=b"200 OK")  # an HTTP server, not a WebSocket one
    with pytest.raises(InvalidStatus) as e:
        await net.dial("wire", url)
    assert e.value.response.status_code == 200

    async def nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    url = await net.raw_server(nonsense, status=b"banana")
    with pytest.raises(InvalidHandshake) as e2:
        await net.dial("wire", url)
    assert isinstance(e2.value, InvalidMessage)
    with pytest.raises(ValueError):
        await wire.connect(url, **{**OPTS, "ping_interval": 5})


async def test_a_silent_client_is_dropped_after_open_timeout(net: Net) -> None:
    ran: list[Any] = []

    async def handler(ws: Any) -> None:
        ran.append(ws)

    url = await net.start("wire", handler, open_timeout=0.3)
    reader, _ = await net.raw(url)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - started < 3
    assert ran == []


# -- closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("server_kind,client_kind", PAIRS, ids=PAIR_IDS)
async def test_close_codes_and_reasons_reach_the_other_side(net: Net, server_kind: str, client_kind: str) -> None:
    server_saw: asyncio.Queue[tuple[str, int | None, str | None]] = asyncio.Queue()

    async def handler(ws: Any) -> None:
        path = ws.request.path
        if path == "/server-closes-4001":
            await ws.close(4001, "custom reason")
        elif path == "/server-closes-1000":
            await ws.close(1000, "done here")
        else:
            try:
                async for _ in ws:
                    pass
                outcome = "ended"
            except ConnectionClosedError:
                outcome = "error"
            rcvd = ws.protocol.close_rcvd
            await server_saw.put((outcome, rcvd.code if rcvd else None, rcvd.reason if rcvd else None))

    url = await net.start(server_kind, handler)

    c = await net.dial(client_kind, url + "server-closes-4001")
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4001, "custom reason")  # type: ignore[union-attr]
    assert c.protocol.close_rcvd.code == 4001

    c = await net.dial(client_kind, url + "server-closes-4001")
    with pytest.raises(ConnectionClosedError):
        async for _ in c:
            pass

    c = await net.dial(client_kind, url + "server-closes-1000")
    async for _ in c:  # a clean close ends the iteration
        pass
    assert (c.protocol.close_rcvd.code, c.protocol.close_rcvd.reason) == (1000, "done here")
    with pytest.raises(ConnectionClosedOK):
        await c.send("too late")

    c = await net.dial(client_kind, url + "client-closes")
    await c.close(1001, "going away now")
    assert await asyncio.wait_for(server_saw.get(), 5) == ("ended", 1001, "going away now")

    c = await net.dial(client_kind, url + "client-closes")
    await c.close(4002, "client error")
    assert await asyncio.wait_for(server_saw.get(), 5) == ("error", 4002, "client error")


@pytest.mark.parametrize("server_kind", ["wire", "websockets"])
async def test_a_failing_handler_closes_1011_and_a_returning_one_1000(net: Net, server_kind: str) -> None:
    async def handler(ws: Any) -> None:
        if ws.request.path == "/fail":
            raise RuntimeError("handler bug (expected in this test)")

    url = await net.start(server_kind, handler)
    c = await net.dial("wire" if server_kind == "websockets" else "websockets", url + "fail")
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1011
    c = await net.dial("wire" if server_kind == "websockets" else "websockets", url + "ok")
    with pytest.raises(ConnectionClosedOK) as e2:
        await asyncio.wait_for(c.recv(), 5)
    assert e2.value.rcvd is not None and e2.value.rcvd.code == 1000


@pytest.mark.parametrize("how", ["eof", "abort", "mid-frame"])
async def test_a_client_hanging_up_without_a_close_frame_raises_connection_closed_error(net: Net, how: str) -> None:
    seen: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        try:
            async for m in ws:
                assert m == "one"
        except BaseException as e:
            seen.set_result(e)
        else:
            seen.set_result(AssertionError("the iteration ended normally"))

    url = await net.start("wire", handler)
    reader, writer, head = await net.raw_upgrade(url)
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.write(masked(Opcode.TEXT, b"one"))
    if how == "eof":
        writer.write_eof()
    elif how == "abort":
        await writer.drain()
        writer.transport.abort()
    else:
        writer.write(masked(Opcode.TEXT, b"x" * 100)[:50])
        writer.write_eof()
    e = await asyncio.wait_for(seen, 5)
    assert isinstance(e, ConnectionClosedError), repr(e)
    assert e.rcvd is None  # no close frame: code 1006


async def test_a_server_vanishing_raises_connection_closed_error_on_the_wire_client(net: Net) -> None:
    async def handler(ws: Any) -> None:
        await ws.send("bye")
        ws.transport.abort()

    url = await net.start("websockets", handler)
    c = await net.dial("wire", url)
    assert await c.recv() == "bye"
    with pytest.raises(ConnectionClosedError) as e:
        await asyncio.wait_for(c.recv(), 5)
    assert e.value.rcvd is None and c.close_code == 1006
    with pytest.raises(ConnectionClosedError):
        await c.send("nobody")
    with pytest.raises(ConnectionClosedError):
        c.send_nowait(b"nobody")


async def test_close_is_bounded_when_the_peer_never_answers(net: Net) -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # reads nothing, answers nothing, never hangs up

    url = await net.raw_server(deaf)
    c = await net.dial("wire", url, close_timeout=0.3)
    started = time.monotonic()
    await asyncio.wait_for(c.close(1000, "bye"), 5)
    assert time.monotonic() - started < 2
    assert c.transport.is_closing()
    assert c.protocol.close_rcvd is None
    with pytest.raises(ConnectionClosedError):
        await c.recv()


async def test_the_close_deadline_holds_when_nobody_waits(net: Net) -> None:
    """The peer closes but never ends the TCP stream; the wire client, which
    waits for the server to hang up, aborts after close_timeout by itself."""
    async def closes_then_lingers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(unmasked(Opcode.CLOSE, b"\x03\xe8bye"))
        await asyncio.sleep(30)

    url = await net.raw_server(closes_then_lingers)
    c = await net.dial("wire", url, close_timeout=0.3)
    await asyncio.wait_for(c.wait_closed(), 3)
    assert c.protocol.close_rcvd.code == 1000
    with pytest.raises(ConnectionClosed):
        await c.recv()


async def test_server_close_closes_connections_1001_and_waits_for_handlers(net: Net) -> None:
    finished: list[int] = []

    async def handler(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        finally:
            await asyncio.sleep(0.3)
            finished.append(ws.protocol.close_sent.code)

    url = await net.start("wire", handler)
    server = net.servers[-1]
    a = await net.dial("websockets", url)
    b = await net.dial("wire", url)
    await a.send("x")
    await b.send("x")
    assert len(server.connections) == 2
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert finished == [1001, 1001]
    for c in (a, b):
        with pytest.raises(ConnectionClosedOK) as e:
            await asyncio.wait_for(c.recv(), 5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001
    with pytest.raises(OSError):
        await wire.connect(url, **OPTS)


async def test_an_upgrade_in_progress_when_the_server_closes_gets_503(net: Net) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_check(conn: Any, request: Any) -> None:
        arrived.set()
        await release.wait()
        return None

    url = await net.start("wire", echo, process_request=slow_check)
    server = net.servers[-1]
    dialing = asyncio.ensure_future(wire.connect(url, **OPTS))
    await asyncio.wait_for(arrived.wait(), 5)
    server.close()
    release.set()
    with pytest.raises(InvalidStatus) as e:
        await asyncio.wait_for(dialing, 5)
    assert e.value.response.status_code == 503
    await asyncio.wait_for(server.wait_closed(), 5)


async def test_server_close_keeping_connections_waits_for_them(net: Net) -> None:
    url = await net.start("wire", echo)
    server = net.servers[-1]
    c = await net.dial("wire", url)
    server.close(close_connections=False)
    with pytest.raises(OSError):
        await wire.connect(url, **OPTS)
    await c.send("still here")
    assert await asyncio.wait_for(c.recv(), 5) == "still here"
    waiter = asyncio.ensure_future(server.wait_closed())
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await c.close()
    await asyncio.wait_for(waiter, 5)


# -- pings ---------------------------------------------------------------------------------


async def test_pings_are_answered_while_nobody_reads(net: Net) -> None:
    """The protocol queues the pong; the wire side must write it even though
    its application is not in recv()."""
    ponged: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def pinger(ws: Any) -> None:
        pong = await ws.ping(b"from server")
        ponged.set_result(await asyncio.wait_for(pong, 5))
        await ws.wait_closed()

    url = await net.start("websockets", pinger)
    c = await net.dial("wire", url)  # never calls recv()
    assert await asyncio.wait_for(ponged, 5) >= 0

    stop = asyncio.Event()

    async def idle(ws: Any) -> None:
        await stop.wait()

    url = await net.start("wire", idle)
    c2 = await net.dial("websockets", url)
    try:
        latency = await asyncio.wait_for(await c2.ping(b"from client"), 5)
        assert latency >= 0
    finally:
        stop.set()


# -- coalescing ------------------------------------------------------------------------------


async def test_a_lone_frame_leaves_at_once_and_those_behind_it_in_one_write(net: Net) -> None:
    server_conn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        server_conn.set_result(ws)
        await echo(ws)

    url = await net.start("wire", handler)
    c = await net.dial("wire", url)
    await c.send("warm-up")
    assert await c.recv() == "warm-up"
    s = await server_conn
    assert wire.LONE_FRAME_GAP < 0.01
    await asyncio.sleep(0.01)  # a quiet spell: longer than wire.LONE_FRAME_GAP
    client_before, server_before = c.write_calls, s.write_calls

    assert c.send_nowait("lone") is True
    assert c.write_calls == client_before + 1  # after a quiet spell a frame leaves at once, alone
    for i in range(100):
        assert c.send_nowait(f"n{i}") is True
    await c.send_many([b"a", b"b"])
    for i in range(50):
        await c.send(f"s{i}")
    assert c.write_calls == client_before + 1  # the ones right behind it wait for the iteration's end
    await asyncio.sleep(0)  # the iteration ends: one flush
    assert c.write_calls == client_before + 2

    expected = ["lone"] + [f"n{i}" for i in range(100)] + [b"a", b"b"] + [f"s{i}" for i in range(50)]
    assert [await asyncio.wait_for(c.recv(), 5) for _ in expected] == expected
    # the server echoed 152 messages that came in a few reads: a few writes, not 152
    assert s.write_calls - server_before <= 10, s.write_calls - server_before


async def test_answers_made_while_reading_a_chunk_leave_before_the_read_callback_returns(net: Net) -> None:
    """A reply sent by the reader while a chunk is handled (a pong, an
    answer made inline) is written when that data_received call ends, all
    replies of the chunk in one write, not one loop iteration later."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def handler(ws: Any) -> None:
        def answer(messages: list[bytes]) -> int:
            for m in messages:
                ws.send_nowait(b"re:" + m)
            return len(messages)

        def on_ready() -> None:  # what was queued (the first read after the upgrade)
            while (m := ws.take()) is not None:
                answer([m])
        ws.detach(on_ready, answer)
        ready.set_result(ws)
        await stop.wait()

    url = await net.start("wire", handler)
    reader, writer, _ = await net.raw_upgrade(url)
    s = await ready
    writer.write(masked(Opcode.BINARY, b"warm-up"))  # the first read after the upgrade is the protocol's
    assert [g[1:] for g in await _read_frames(reader, 1)] == [b"re:warm-up"]
    chunk = b"".join(masked(Opcode.BINARY, b"m%d" % i) for i in range(5))
    before = s.write_calls
    s.data_received(chunk)  # as the event loop would call it with one read
    assert s.write_calls == before + 1 and not s.protocol.writes  # written, in one write, before returning
    assert [g[1:] for g in await _read_frames(reader, 5)] == [b"re:m%d" % i for i in range(5)]
    stop.set()


async def test_a_detached_reader_takes_a_read_directly_and_what_it_leaves_queues_in_order(net: Net) -> None:
    """detach(on_ready, on_messages): the messages of a read go to
    on_messages while nothing is queued; those it does not take are queued,
    announced with on_ready and taken in order, and later reads queue behind
    them until they are gone."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    offered: list[list[bytes]] = []
    announced = asyncio.Event()
    stop = asyncio.Event()

    async def handler(ws: Any) -> None:
        def take_two(messages: list[bytes]) -> int:
            offered.append(list(messages))
            return min(2, len(messages))
        ws.detach(announced.set, take_two)
        ready.set_result(ws)
        await stop.wait()

    url = await net.start("wire", handler)
    reader, writer, _ = await net.raw_upgrade(url)
    s = await ready
    writer.write(masked(Opcode.BINARY, b"warm-up"))  # the first read after the upgrade is the protocol's: queued
    await asyncio.wait_for(announced.wait(), 5)
    assert s.take() == b"warm-up" and s.take() is None and offered == []
    announced.clear()
    writer.write(b"".join(masked(Opcode.BINARY, b"a%d" % i) for i in range(5)))
    await asyncio.wait_for(announced.wait(), 5)
    assert offered == [[b"a0", b"a1", b"a2", b"a3", b"a4"]]
    writer.write(masked(Opcode.BINARY, b"b0"))  # something is queued: this one queues behind it
    await wait_until(lambda: s.queued_messages == 4)
    assert offered == [[b"a0", b"a1", b"a2", b"a3", b"a4"]]
    assert [s.take() for _ in range(5)] == [b"a2", b"a3", b"a4", b"b0", None]
    writer.write(masked(Opcode.BINARY, b"c0"))  # the queue is empty again: offered directly
    await wait_until(lambda: len(offered) == 2)
    assert offered[1] == [b"c0"]
    stop.set()


# -- backpressure ----------------------------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["wire", "websockets"])
async def test_send_waits_while_the_peer_does_not_read(net: Net, client_kind: str) -> None:
    size, count = 16 * 1024, 3000  # 48 MiB: far more than the socket buffers hold
    sent = 0
    conn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    buffered: list[int] = []

    async def handler(ws: Any) -> None:
        nonlocal sent
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        conn.set_result(ws)
        for i in range(count):
            await ws.send(i.to_bytes(4, "big") + bytes(size - 4))
            buffered.append(ws.write_buffer_size())
            sent += 1

    url = await net.start("wire", handler)
    sock = small_socket(socket.SO_RCVBUF)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))))
    c = await net.dial(client_kind, url, sock=sock, max_queue=1)  # reads two frames, then stops

    stuck_at = await stalled(lambda: sent)
    assert 0 < stuck_at < count
    ws = await conn
    high = ws.transport.get_write_buffer_limits()[1]
    # a send that returns leaves at most the mark in the transport plus the mark unwritten
    assert max(buffered) <= 2 * high

    for i in range(count):  # the peer reads again: everything arrives, in order
        message = await asyncio.wait_for(c.recv(), 5)
        assert int.from_bytes(message[:4], "big") == i
    assert sent == count


@pytest.mark.parametrize("side", ["server", "client"])
async def test_reading_pauses_while_the_consumer_does_not_read(net: Net, side: str) -> None:
    size, count, max_queue = 64 * 1024, 400, 4  # 25 MiB
    go = asyncio.Event()
    wire_conn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    sent = 0
    received: list[int] = []

    async def flood(ws: Any) -> None:
        nonlocal sent
        for i in range(count):
            await ws.send(i.to_bytes(4, "big") + bytes(size - 4))
            sent += 1

    async def slow_reader(ws: Any) -> None:
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        wire_conn.set_result(ws)
        await go.wait()
        for _ in range(count):
            received.append(int.from_bytes((await ws.recv())[:4], "big"))

    if side == "server":  # wire server, websockets client floods
        url = await net.start("wire", slow_reader, max_queue=max_queue)
        sock = small_socket(socket.SO_SNDBUF)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))))
        c = await net.dial("websockets", url, sock=sock)
        flooding = asyncio.create_task(flood(c))
        reading = None
    else:  # websockets server floods, wire client reads slowly
        async def server_floods(ws: Any) -> None:
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            await flood(ws)
            await ws.wait_closed()

        url = await net.start("websockets", server_floods)
        c = await net.dial("wire", url, max_queue=max_queue)
        flooding = None
        reading = asyncio.create_task(slow_reader(c))
    try:
        ws = await asyncio.wait_for(wire_conn, 5)
        stuck_at = await stalled(lambda: sent)
        assert stuck_at < count
        # one read brings at most 256 KiB (4 messages) past the mark
        assert ws.queued_messages <= max_queue + 5, ws.queued_messages
        go.set()
        if reading is not None:
            await asyncio.wait_for(reading, 20)
        else:
            await slow_reader_done(received, count)
        assert received == list(range(count))
        assert sent == count
    finally:
        for task in (flooding, reading):
            if task is not None:
                task.cancel()


async def slow_reader_done(received: list[int], count: int) -> None:
    deadline = time.monotonic() + 20
    while len(received) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = make_certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.parametrize("server_kind,client_kind", PAIRS, ids=PAIR_IDS)
async def test_tls(net: Net, tls: tuple[ssl.SSLContext, ssl.SSLContext], server_kind: str, client_kind: str) -> None:
    server_ctx, client_ctx = tls
    closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        if ws.request.path == "/refuse-me":
            return
        try:
            await echo(ws)
        finally:
            rcvd = ws.protocol.close_rcvd
            closed.set_result((rcvd.code, rcvd.reason) if rcvd else (-1, ""))

    def refuse(conn: Any, request: Any) -> Any:
        return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n") if request.path == "/refuse-me" else None

    url = await net.start(server_kind, handler, ssl_context=server_ctx, process_request=refuse)
    assert url.startswith("wss://")
    with pytest.raises(InvalidStatus) as e:
        await net.dial(client_kind, url + "refuse-me", ssl=client_ctx)
    assert e.value.response.status_code == 503
    c = await net.dial(client_kind, url, ssl=client_ctx)
    for m in ["secret", b"\x00" * 100_000, ["frag", "ments"]]:
        await c.send(m)
    assert [await asyncio.wait_for(c.recv(), 5) for _ in range(3)] == ["secret", b"\x00" * 100_000, "fragments"]
    await asyncio.wait_for(c.close(4000, "tls bye"), 5)
    assert await asyncio.wait_for(closed, 5) == (4000, "tls bye")
    with pytest.raises(ssl.SSLError):  # the certificate is checked
        await wire.connect(url, **OPTS)


# -- the API around the data path -----------------------------------------------------------


async def test_attributes_the_node_reads(net: Net) -> None:
    conn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        conn.set_result(ws)
        await echo(ws)

    url = await net.start("wire", handler, max_queue=7)
    c = await net.dial("wire", url)
    s = await asyncio.wait_for(conn, 5)
    assert s.remote_address == c.local_address
    assert c.remote_address == s.local_address
    assert c.transport.get_write_buffer_limits() == (8192, 32768)
    assert c.transport.get_write_buffer_size() == 0 and not c.transport.is_closing()
    assert s.protocol.close_rcvd is None
    assert net.servers[-1].sockets[0].getsockname()[0] == "127.0.0.1"

    first = asyncio.ensure_future(c.recv())
    await asyncio.sleep(0)
    with pytest.raises(ConcurrencyError):
        await c.recv()
    await c.send("x")
    assert await asyncio.wait_for(first, 5) == "x"
    with pytest.raises(TypeError):
        await c.send({"a": 1})  # type: ignore[arg-type]
    await c.send("as bytes")
    assert await c.recv(decode=False) == b"as bytes"
    await c.close()
    assert s.protocol.close_rcvd is None or True
    await asyncio.wait_for(s.wait_closed(), 5)
    assert s.protocol.close_rcvd.code == 1000
    with pytest.raises(ConnectionClosedOK):
        c.send_nowait("closed")


# -- the receive fast path (whole BINARY frames cut out without the protocol's parser) --------


async def _read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """Parse ``count`` unmasked server frames from a raw stream; their payloads."""
    out = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        out.append(bytes([head[0]]) + await reader.readexactly(length))
    return out


async def test_fast_path_frames_split_at_every_byte_arrive_whole_and_in_order(net: Net) -> None:
    url = await net.start("wire", echo)
    reader, writer, head = await net.raw_upgrade(url)
    assert b"101" in head
    payloads = [bytes([i]) * size for i, size in enumerate([0, 1, 125, 126, 127, 65535, 65536, 70000])]
    stream = b"".join(masked(Opcode.BINARY, p) for p in payloads)
    for i in range(0, len(stream), 997):  # odd-sized chunks: headers and masks cut anywhere
        writer.write(stream[i:i + 997])
        await writer.drain()
    echoed = await _read_frames(reader, len(payloads))
    assert [e[1:] for e in echoed] == payloads and all(e[0] == 0x82 for e in echoed)
    slow = [b"%d" % i for i in range(5)]
    for frame in (masked(Opcode.BINARY, p) for p in slow):  # byte by byte, each write its own chunk
        for i in range(len(frame)):
            writer.write(frame[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)
    assert [e[1:] for e in await _read_frames(reader, len(slow))] == slow


@pytest.mark.parametrize("reader_side", ["client", "server"])
async def test_messages_read_into_the_shared_read_buffer_stay_intact_after_later_reads(net: Net, reader_side: str) -> None:
    """Every read lands in one buffer shared by all connections of a thread
    (get_buffer / buffer_updated): what a read leaves queued must be a copy,
    not a view that the next read overwrites."""
    messages = [bytes([i % 251]) * (1 + i * 37 % 3000) for i in range(300)]
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(ws: Any) -> None:
        ready.set_result(ws)
        await done.wait()

    url = await net.start("wire", handler, max_queue=None)
    c = await net.dial("wire", url, max_queue=None)
    s = await ready
    sender, reader = (s, c) if reader_side == "client" else (c, s)
    for m in messages:
        await sender.send(m)
        await asyncio.sleep(0)  # one frame per write: many reads on the other side
    await wait_until(lambda: reader.queued_messages == len(messages))
    assert [await reader.recv() for _ in messages] == messages
    done.set()


async def test_a_control_frame_hands_the_stream_back_to_the_protocol(net: Net) -> None:
    url = await net.start("wire", echo)
    reader, writer, _ = await net.raw_upgrade(url)
    # binary frames, a ping, text, more binary: all in one write
    writer.write(masked(Opcode.BINARY, b"one") + masked(Opcode.BINARY, b"two") + masked(Opcode.PING, b"hi")
                 + masked(Opcode.TEXT, "trois".encode()) + masked(Opcode.BINARY, b"four"))
    got = await _read_frames(reader, 5)
    assert b"\x8ahi" in got  # the protocol answered the ping (at once, ahead of the echoes)
    assert [g for g in got if g != b"\x8ahi"] == [b"\x82one", b"\x82two", b"\x81trois", b"\x82four"]


async def test_an_oversized_frame_in_the_fast_path_closes_with_1009(net: Net) -> None:
    url = await net.start("wire", echo, max_size=1000)
    reader, writer, _ = await net.raw_upgrade(url)
    writer.write(masked(Opcode.BINARY, b"ok") + masked(Opcode.BINARY, b"x" * 1001))
    got: list[bytes] = []
    while not got or got[-1][0] != 0x88:
        got += await _read_frames(reader, 1)
    assert got[-1][0] == 0x88 and int.from_bytes(got[-1][1:3], "big") == 1009
    assert all(g == b"\x82ok" for g in got[:-1])
