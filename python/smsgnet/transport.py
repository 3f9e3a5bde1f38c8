"""The Transport: listens, connects, handshakes, and routes messages.

Only sockets and tasks live here; the handshake is :mod:`smsgnet.handshake`,
frames are :mod:`smsgnet.session`, crypto is native (:mod:`smsgnet._core`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Request, Response

from smsgnet import _core
from smsgnet.config import TransportConfig
from smsgnet.connection import PeerConnection
from smsgnet.exceptions import (
    ConfigError,
    ConnectFailedError,
    ConnectionClosedError,
    HandshakeError,
    HandshakeTimeout,
    NotConnectedError,
    ProtocolError,
    RegistryError,
    SmsgnetError,
    TransportError,
)
from smsgnet.handshake import Initiator, Responder
from smsgnet.identity import NodeManager
from smsgnet.message import DisconnectCode, Message, b64decode
from smsgnet.registry import Peer, PeerRegistry
from smsgnet.session import make_deduplicator

__all__ = ["Transport", "TransportStats", "MessageHandler", "ConnectionHandler", "build_url"]

log = logging.getLogger("smsgnet")

MessageHandler: TypeAlias = Callable[[PeerConnection, Message], "Awaitable[None] | None"]
ConnectionHandler: TypeAlias = Callable[[PeerConnection], "Awaitable[None] | None"]

#: WebSocket close-handshake wait.
CLOSE_TIMEOUT = 2.0


@dataclass(slots=True)
class TransportStats:
    """Counters of a transport since it started."""

    connections: int = 0
    unproven_connections: int = 0
    connections_accepted: int = 0
    connections_initiated: int = 0
    rejected_busy: int = 0
    rejected_origin: int = 0
    rejected_path: int = 0
    handshakes_refused: int = 0
    handshakes_failed: int = 0
    handler_errors: int = 0
    messages_in: int = 0
    messages_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    dedup_entries: int = 0
    dedup_evicted: int = 0


def build_url(address: str, path: str = "/ws", tls: bool = False) -> str:
    """``ws(s)://`` URL for ``HOST:PORT``, ``[v6]:PORT`` or a full URL (kept as is).

    Raises :class:`ValueError` with a one-line reason for anything else.
    """
    if address.startswith(("ws://", "wss://")):
        parts = urlsplit(address)
        if not parts.hostname:
            raise ValueError(f"bad address {address!r}: no host")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"bad address {address!r}: invalid port") from None
        return address if parts.path else address + path
    if "://" in address:
        raise ValueError(f"bad address {address!r}: scheme must be ws:// or wss://")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {address!r}: expected HOST:PORT, [IPv6]:PORT or a ws:// URL")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"bad address {address!r}: put IPv6 hosts in brackets, e.g. [::1]:9091")
    return f"{'wss' if tls else 'ws'}://{host}:{port}{path}"


def _server_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2: ECDHE with AEAD only (AES-GCM, ChaCha20-Poly1305). TLS 1.3 suites are all AEAD.
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    assert config.tls_cert_path and config.tls_key_path
    ctx.load_cert_chain(config.tls_cert_path, config.tls_key_path)
    return ctx


def _client_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.tls_ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Transport:
    """An smsgnet node on the network.

    Set the message handler (:meth:`on_message`) before :meth:`start`. Use
    ``async with Transport(...) as t:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        node: NodeManager,
        registry: PeerRegistry | None = None,
        config: TransportConfig | None = None,
    ) -> None:
        self.node = node
        self.registry = registry if registry is not None else PeerRegistry()
        self.config = config if config is not None else TransportConfig()
        self._handler: MessageHandler | None = None
        self._handler_is_async = False
        self._on_connected: ConnectionHandler | None = None
        self._on_disconnected: ConnectionHandler | None = None
        self._dedup = make_deduplicator(self.config)
        self._conns: dict[str, PeerConnection] = {}
        self._unproven: set[PeerConnection] = set()
        self._admitted: set[ServerConnection] = set()
        self._handshaking = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: Server | None = None
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stats = TransportStats()
        self._closed_drops: Counter[str] = Counter()
        self._closed_msgs = [0, 0]
        self._client_ssl: ssl.SSLContext | None = None
        # handler failures are logged with a traceback at most ~10 a minute
        self._handler_log_bucket = _core.TokenBucket(5, 10 / 60)

    # -- handler -------------------------------------------------------------

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Set the handler called as ``handler(conn, msg)`` for every accepted
        message (sync or async; usable as a decorator). Set it before
        :meth:`start`. An async handler is awaited before the next frame of the
        same connection is read: keep it short, or spawn a task."""
        if self._started:
            raise TransportError("set the message handler before start()")
        self._handler = handler
        self._handler_is_async = inspect.iscoroutinefunction(handler)
        return handler

    def on_peer_connected(self, handler: ConnectionHandler) -> ConnectionHandler:
        """Set ``handler(conn)``, called when a peer's connection becomes live:
        at once for connections we open, and for inbound ones once the peer
        has proven its key. Sync or async (async ones run as tasks); decorator-friendly."""
        if self._started:
            raise TransportError("set connection handlers before start()")
        self._on_connected = handler
        return handler

    def on_peer_disconnected(self, handler: ConnectionHandler) -> ConnectionHandler:
        """Set ``handler(conn)``, called once when a live connection has closed
        (``conn.close_code``/``close_reason`` say why). Sync or async."""
        if self._started:
            raise TransportError("set connection handlers before start()")
        self._on_disconnected = handler
        return handler

    def _notify(self, handler: ConnectionHandler | None, conn: PeerConnection) -> None:
        if handler is None:
            return
        try:
            result = handler(conn)
        except Exception:
            self._stats.handler_errors += 1
            log.exception("connection handler failed for %s", conn.peer_id)
            return
        if inspect.isawaitable(result):
            async def run() -> None:
                try:
                    await result
                except Exception:
                    self._stats.handler_errors += 1
                    log.exception("connection handler failed for %s", conn.peer_id)
            self._spawn(run())

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start listening on ``config.listen_addr`` and the background sweeper."""
        if self._started:
            raise TransportError("transport already started")
        self._started = True
        cfg = self.config
        server_ssl = None
        if cfg.tls_enabled:
            try:
                server_ssl = _server_ssl_context(cfg)
            except (OSError, ssl.SSLError) as e:
                self._started = False
                raise ConfigError(
                    f"tls_cert_path/tls_key_path: cannot load {cfg.tls_cert_path} / {cfg.tls_key_path}: {e}"
                ) from None
        try:
            self._server = await serve(
                self._serve_connection,
                cfg.host or None,
                cfg.port,
                process_request=self._process_request,
                compression=None,
                max_size=cfg.max_message_size,
                ping_interval=None,
                close_timeout=CLOSE_TIMEOUT,
                ssl=server_ssl,
                server_header=None,
            )
        except OSError as e:
            self._started = False
            raise TransportError(f"cannot listen on {cfg.listen_addr}: {e.strerror or e}") from None
        self._spawn(self._sweep_dedup())
        log.info("listening on %s (node %s)", self.url, self.node.node_id)

    async def stop(self) -> None:
        """Disconnect every peer (code 1004, concurrently), stop listening, and
        wait for every task this transport started. Idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            if self._server is not None:
                self._server.close(close_connections=False)
            conns = list(self._conns.values()) + list(self._unproven)
            await asyncio.gather(
                *(c.graceful_close("server shutdown", DisconnectCode.SHUTDOWN) for c in conns),
                return_exceptions=True,
            )
            if self._server is not None:
                self._server.close(close_connections=True)
                await self._server.wait_closed()
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            pending = [t for t in self._tasks if t is not current]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            try:
                self.registry.save()  # last-seen times of this run
            except RegistryError as e:
                log.warning("%s", e)
        finally:
            self._stopped.set()

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._server is None:
            raise TransportError("transport not started")
        sockets = list(self._server.sockets)
        # listening on every interface with port 0 binds IPv4 and IPv6 on
        # different ports; report the IPv4 one, which `address` points at
        sockets.sort(key=lambda s: s.family != socket.AF_INET)
        return int(sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """``HOST:PORT`` others can use to reach this node (loopback when listening on all)."""
        host = self.config.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """``ws(s)://HOST:PORT/path`` of this node."""
        return build_url(self.address, self.config.ws_path, self.config.tls_enabled)

    # -- connections -------------------------------------------------------------

    @property
    def connected_peers(self) -> int:
        """Number of peers with a live connection."""
        return len(self._conns)

    def get_connection(self, peer_id: str) -> PeerConnection | None:
        """The live connection to ``peer_id``, or None."""
        return self._conns.get(peer_id)

    def connections(self) -> Iterator[PeerConnection]:
        """Iterate over a snapshot of live connections."""
        return iter(list(self._conns.values()))

    def __iter__(self) -> Iterator[PeerConnection]:
        return self.connections()

    def stats(self) -> TransportStats:
        """Counters: connections, refusals, messages, and dropped frames by reason."""
        s = self._stats
        drops = Counter(self._closed_drops)
        msgs_in, msgs_out = self._closed_msgs
        for c in list(self._conns.values()) + list(self._unproven):
            drops.update(c._session.drops)
            msgs_in += c._session.messages_in
            msgs_out += c._session.messages_out
        return TransportStats(
            connections=len(self._conns),
            unproven_connections=len(self._unproven),
            connections_accepted=s.connections_accepted,
            connections_initiated=s.connections_initiated,
            rejected_busy=s.rejected_busy,
            rejected_origin=s.rejected_origin,
            rejected_path=s.rejected_path,
            handshakes_refused=s.handshakes_refused,
            handshakes_failed=s.handshakes_failed,
            handler_errors=s.handler_errors,
            messages_in=msgs_in,
            messages_out=msgs_out,
            drops=dict(drops),
            dedup_entries=len(self._dedup),
            dedup_evicted=self._dedup.evicted,
        )

    # -- sending --------------------------------------------------------------------

    async def send(self, peer_id: str, msg: Message) -> None:
        """Send to one connected peer. Raises :class:`NotConnectedError`, or
        :class:`~smsgnet.ConnectionClosedError` when the write fails."""
        conn = self._conns.get(peer_id)
        if conn is None or not conn.is_open:
            raise NotConnectedError(f"not connected to {peer_id}")
        await conn.send(msg)

    async def broadcast(self, msg: Message) -> dict[str, BaseException]:
        """Send to every connected peer except ``msg.from_`` (the originator).

        The message is encoded once and sealed per peer; sends run
        concurrently, so one slow or dead peer does not hold up the others.
        Returns the failures by peer ID (empty when every send succeeded).
        """
        if not msg.from_:
            msg.from_ = self.node.node_id
        targets = [c for pid, c in self._conns.items() if pid != msg.from_ and c.is_open]
        if not targets:
            return {}
        encoded = msg.to_json()
        results = await asyncio.gather(
            *(c._send_sealed_json(msg.id, encoded) for c in targets), return_exceptions=True
        )
        return {c.peer_id: r for c, r in zip(targets, results) if isinstance(r, BaseException)}

    # -- connecting out ---------------------------------------------------------------

    async def connect(self, peer: Peer | str, *, expect_key: str | bytes | None = None) -> PeerConnection:
        """Connect to a peer (a :class:`Peer` or an address) and handshake.

        If the peer's public key is known (``peer.public_key`` or
        ``expect_key``), a responder presenting any other key is refused with
        :class:`~smsgnet.PeerAuthenticationError`. A refusal by the peer raises
        :class:`~smsgnet.HandshakeRefused` with its reason; no answer within the
        handshake timeout raises :class:`~smsgnet.HandshakeTimeout`.
        """
        if not self._started or self._stopping:
            raise TransportError("start the transport before connecting")
        if isinstance(peer, str):
            peer = Peer.at(peer)
        if peer.id:
            existing = self._conns.get(peer.id)
            if existing is not None and existing.is_open and existing.proven:
                return existing
        try:
            url = build_url(peer.address, self.config.ws_path, self.config.tls_enabled)
        except ValueError as e:
            raise ConnectFailedError(str(e)) from None
        key = expect_key if expect_key is not None else (peer.public_key or None)
        expected: bytes | None
        if isinstance(key, str):
            try:
                expected = b64decode(key)
            except ValueError as e:
                raise ValueError(f"expected public key: {e}") from None
        else:
            expected = key
        if expected is not None and len(expected) != 32:
            raise ValueError("expected public key must be 32 bytes")
        initiator = Initiator(self.node, expected_public_key=expected, expected_id=peer.id or None)
        ssl_ctx = None
        if url.startswith("wss://"):
            if self._client_ssl is None:
                self._client_ssl = _client_ssl_context(self.config)
            ssl_ctx = self._client_ssl
        timeout = self.config.handshake_timeout
        ws = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    ws = await ws_connect(
                        url,
                        compression=None,
                        max_size=self.config.max_message_size,
                        ping_interval=None,
                        close_timeout=CLOSE_TIMEOUT,
                        open_timeout=None,
                        ssl=ssl_ctx,
                        proxy=None,
                        user_agent_header=None,
                    )
                except InvalidStatus as e:
                    raise ConnectFailedError(
                        f"{url} refused the upgrade: HTTP {e.response.status_code}") from None
                except (OSError, InvalidHandshake, InvalidURI) as e:
                    raise ConnectFailedError(f"cannot connect to {url}: {e}") from None
                await ws.send(initiator.hello(), text=True)
                reply = await ws.recv()
                result = initiator.receive_ack(reply)
        except TimeoutError:
            self._stats.handshakes_failed += 1
            if ws is not None:
                await ws.close(1002, "handshake timeout")
            raise HandshakeTimeout(f"handshake with {url} did not finish within {timeout:g}s") from None
        except ConnectionClosed as e:
            self._stats.handshakes_failed += 1
            raise ConnectFailedError(f"{url} closed the connection during the handshake: {e}") from None
        except (HandshakeError, ProtocolError):
            self._stats.handshakes_failed += 1
            if ws is not None:
                await ws.close(1002, "handshake failed")
            raise
        except BaseException:
            if ws is not None:
                await ws.close()
            raise
        if self._stopping:
            await ws.close(1001, "shutting down")
            raise TransportError("transport stopped during connect")
        conn = PeerConnection(self, ws, result.peer, result.shared_secret, outbound=True, address=peer.address)
        self._stats.connections_initiated += 1
        # the responder proved its key with the HMAC: safe to register now
        conn.peer = self.registry.mark_connected(result.peer, peer.address)
        self._adopt(conn)
        self._spawn(self._run_connection(conn))
        return conn

    # -- accepting in ---------------------------------------------------------------------

    def _slots_in_use(self) -> int:
        stale = [c for c in self._admitted if c.transport is None or c.transport.is_closing()]
        for c in stale:
            self._admitted.discard(c)
        return len(self._admitted) + self._handshaking + len(self._conns) + len(self._unproven)

    def _origin_allowed(self, origin: str) -> bool:
        try:
            host = urlsplit(origin).hostname
        except ValueError:
            return False
        return host is not None and host.lower() in self.config.allowed_origin_hosts

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != self.config.ws_path:
            self._stats.rejected_path += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            self._stats.rejected_origin += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if self._stopping:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        if self._slots_in_use() >= self.config.max_conns:
            self._stats.rejected_busy += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        self._admitted.add(connection)
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        self._admitted.discard(ws)
        self._handshaking += 1
        counted = True
        try:
            responder = Responder(self.node, self.registry)
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    data = await ws.recv()
                    ack, result = responder.receive_hello(data)
                    await ws.send(ack, text=True)
                    del ack, data  # not kept for the life of the connection
            except TimeoutError:
                self._stats.handshakes_failed += 1
                log.info("handshake from %s timed out", ws.remote_address)
                await ws.close(1002, "handshake timeout")
                return
            except SmsgnetError as e:  # ProtocolError, or anything else the peer got wrong
                self._stats.handshakes_failed += 1
                log.info("bad handshake from %s: %s", ws.remote_address, e)
                await ws.close(1002, "protocol error")
                return
            except ConnectionClosed:
                self._stats.handshakes_failed += 1
                return
            if result is None:
                self._stats.handshakes_refused += 1
                log.info("refused %s: %s", responder.peer.id if responder.peer else "?", responder.refusal)
                await ws.close(1008, (responder.refusal or "refused")[:120])
                return
            if self._stopping:
                await ws.close(1001, "shutting down")
                return
            remote = ws.remote_address
            host = str(remote[0]) if remote else ""
            address = (f"[{host}]:{remote[1]}" if ":" in host else f"{host}:{remote[1]}") if remote else ""
            conn = PeerConnection(self, ws, result.peer, result.shared_secret, outbound=False, address=address)
            self._stats.connections_accepted += 1
            self._handshaking -= 1
            counted = False
            self._adopt(conn)
        finally:
            if counted:
                self._handshaking -= 1
        # Ask for proof of key right away: a real peer answers with a pong.
        await conn.ping()
        await self._run_connection(conn)

    # -- connection registry -----------------------------------------------------------

    def _adopt(self, conn: PeerConnection) -> None:
        """Make a new connection live, or park it until it proves its key."""
        existing = self._conns.get(conn.peer_id)
        if existing is None or not existing.is_open:
            self._conns[conn.peer_id] = conn
            if not conn.proven:
                self._unproven.add(conn)
            else:
                self._notify(self._on_connected, conn)
            return
        if conn.proven:
            self._replace(existing, conn)
            self._notify(self._on_connected, conn)
        else:
            # Someone claims the ID of a live peer: leave the live connection
            # alone until the newcomer proves it holds the key.
            self._unproven.add(conn)

    def _on_proven(self, conn: PeerConnection) -> None:
        self._unproven.discard(conn)
        conn.peer = self.registry.mark_connected(conn.identity, conn.peer.address or conn.address)
        current = self._conns.get(conn.peer_id)
        if current is not conn:
            if current is not None and current.is_open:
                self._replace(current, conn)
            else:
                self._conns[conn.peer_id] = conn
        self._notify(self._on_connected, conn)

    def _replace(self, old: PeerConnection, new: PeerConnection) -> None:
        self._conns[new.peer_id] = new
        log.info("connection to %s replaced by a newer one", new.peer_id)
        old._start_close("replaced by a newer connection", DisconnectCode.GOING_AWAY, send_disconnect=True)

    def _forget(self, conn: PeerConnection) -> None:
        self._unproven.discard(conn)
        if self._conns.get(conn.peer_id) is conn:
            del self._conns[conn.peer_id]
            if conn.proven:
                self.registry.mark_disconnected(conn.peer_id)
        if conn.proven:
            self._notify(self._on_disconnected, conn)
        self._closed_drops.update(conn._session.drops)
        self._closed_msgs[0] += conn._session.messages_in
        self._closed_msgs[1] += conn._session.messages_out

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- per-connection work ----------------------------------------------------------

    async def _run_connection(self, conn: PeerConnection) -> None:
        keepalive = self._spawn(conn._keepalive())
        try:
            await conn._read_loop(self._dispatch)
        finally:
            keepalive.cancel()
            await conn.wait_closed()

    def _dispatch(self, conn: PeerConnection, msg: Message) -> Awaitable[None] | None:
        t = msg.type
        if t == "ping":
            # answered inline: a peer that pings but never reads stalls only
            # its own read loop, until the write timeout closes it
            reply = self._reply_quietly(conn, msg.pong())
            if self.config.deliver_control_messages:
                return self._then(reply, self._call_handler, conn, msg)
            return reply
        elif t == "pong":
            self._record_pong(conn, msg)
        elif t == "disconnect":
            p = msg.payload if isinstance(msg.payload, dict) else {}
            raw_code, raw_reason = p.get("code"), p.get("reason")
            code = raw_code if type(raw_code) is int else int(DisconnectCode.NORMAL)
            reason = raw_reason if isinstance(raw_reason, str) else ""
            conn._start_close(reason, code, send_disconnect=False, by_peer=True)
        elif t in ("handshake", "handshake_ack"):
            return None
        else:
            return self._call_handler(conn, msg)
        if self.config.deliver_control_messages:
            return self._call_handler(conn, msg)
        return None

    @staticmethod
    async def _reply_quietly(conn: PeerConnection, reply: Message) -> None:
        try:
            await conn.send(reply)
        except ConnectionClosedError:
            pass

    @staticmethod
    async def _then(first: Awaitable[None], call: Callable[..., Awaitable[None] | None], *args: Any) -> None:
        await first
        second = call(*args)
        if second is not None:
            await second

    def _record_pong(self, conn: PeerConnection, msg: Message) -> None:
        p = msg.payload if isinstance(msg.payload, dict) else {}
        sent = p.get("sentAt")
        if isinstance(sent, int):
            rtt = max(0.0, time.time() * 1000.0 - sent)
            conn.ping_ms = rtt
            conn.peer.ping_ms = rtt
            self.registry.record_ping(conn.peer_id, rtt)

    def _call_handler(self, conn: PeerConnection, msg: Message) -> Awaitable[None] | None:
        handler = self._handler
        if handler is None:
            return None
        if self._handler_is_async:
            return self._await_handler(handler, conn, msg)
        try:
            result = handler(conn, msg)
        except ConnectionClosedError as e:
            self._handler_closed_error(conn, e)
            return None
        except Exception:
            self._handler_failed(conn, msg)
            return None
        if inspect.isawaitable(result):
            return self._await_awaitable(result, conn, msg)
        return None

    def _handler_failed(self, conn: PeerConnection, msg: Message) -> None:
        self._stats.handler_errors += 1
        if self._handler_log_bucket.allow():
            log.exception("message handler failed on %s from %s (%d handler errors so far)",
                          msg.type, conn.peer_id, self._stats.handler_errors)

    def _handler_closed_error(self, conn: PeerConnection, error: ConnectionClosedError) -> None:
        # Sending on a closing connection is expected during shutdown: no traceback.
        if conn.is_open:
            self._stats.handler_errors += 1
            log.warning("message handler on %s: %s", conn.peer_id, error)
        else:
            log.debug("handler reply to %s after its connection closed", conn.peer_id)

    async def _await_handler(self, handler: MessageHandler, conn: PeerConnection, msg: Message) -> None:
        try:
            await handler(conn, msg)  # type: ignore[misc]
        except ConnectionClosedError as e:
            self._handler_closed_error(conn, e)
        except Exception:
            self._handler_failed(conn, msg)

    async def _await_awaitable(self, aw: Awaitable[None], conn: PeerConnection, msg: Message) -> None:
        try:
            await aw
        except ConnectionClosedError as e:
            self._handler_closed_error(conn, e)
        except Exception:
            self._handler_failed(conn, msg)

    async def _sweep_dedup(self) -> None:
        while True:
            await asyncio.sleep(self.config.dedup_sweep_interval)
            self._dedup.sweep()
