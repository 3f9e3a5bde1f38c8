"""The Transport: an smsgnet node's public face (lifecycle, connect, send, broadcast, stats).

It wires four parts and holds no protocol rule itself:

- :class:`~smsgnet.acceptor.Acceptor` listens, admits upgrades and runs the
  responder's handshake (absent on a client-only node, ``listen_addr=None``);
- :class:`~smsgnet.dialer.Dialer` opens connections and runs the initiator's;
- :class:`~smsgnet.table.ConnectionTable` decides who is live, who is pending
  proof of key, who gives way and which link of a pair survives;
- :class:`~smsgnet.handlers.HandlerRunner` runs user callbacks.

Each connection is a :class:`~smsgnet.connection.PeerConnection` over a
:class:`~smsgnet.session.Session`; the transport is its owner.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, overload


from smsgnet import _core
from smsgnet.acceptor import Acceptor
from smsgnet.config import PROTOCOLS, TransportConfig
from smsgnet.connection import DUPLICATE_REASON, PeerConnection
from smsgnet.dialer import Dialer, build_url
from smsgnet.exceptions import (
    ConnectFailedError,
    InvalidKeyError,
    NotConnectedError,
    PeerAuthenticationError,
    ConfigError,
    RegistryError,
    ReplayStateError,
    SmsgnetError,
    TransportError,
    TransportStopped,
)
from smsgnet.handlers import ConnectionHandler, HandlerRunner, MessageChannel, MessageHandler
from smsgnet.handshake import HandshakeResult, Initiator
from smsgnet.identity import NodeManager
from smsgnet.logsafe import WarningLimiter, clip
from smsgnet.message import DisconnectCode, Message, b64decode, b64encode
from smsgnet.registry import Peer, PeerRegistry
from smsgnet.replay import ReplayGuard
from smsgnet.session import FrameDropped, Session, make_deduplicator
from smsgnet.table import Adoption, ConnectionTable, Outcome
from smsgnet.wire import WireConnection as Connection

__all__ = ["Transport", "TransportStats", "MessageHandler", "ConnectionHandler", "build_url"]

log = logging.getLogger("smsgnet")


@dataclass(slots=True)
class TransportStats:
    """Counters of a transport since it started."""

    #: Live (proven) links now.
    connections: int = 0
    #: Inbound connections that finished the handshake but have not proven their key yet.
    unproven_connections: int = 0
    #: Inbound sockets upgraded but still in the handshake.
    handshaking: int = 0
    connections_accepted: int = 0
    connections_initiated: int = 0
    rejected_busy: int = 0
    rejected_origin: int = 0
    rejected_path: int = 0
    handshakes_refused: int = 0
    handshakes_failed: int = 0
    #: Pending connections closed to make room (slots or pending caps) or at the proof deadline.
    pending_evicted: int = 0
    pending_expired: int = 0
    #: Redundant links closed by the one-link-per-pair rule (dial races, duplicate dials).
    duplicates_closed: int = 0
    #: Live links replaced by a newer proven connection from the same peer.
    replaced: int = 0
    reconnect_attempts: int = 0
    reconnects: int = 0
    handler_errors: int = 0
    #: Messages no handler took while no ``messages()`` iterator was open.
    messages_unhandled: int = 0
    messages_in: int = 0
    messages_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    dedup_entries: int = 0
    dedup_evicted: int = 0
    #: How the replay state was found at start: "clean", "unclean", "corrupt",
    #: "fresh" or "memory" (no state_dir); frames dated before ``replay_floor`` are refused.
    replay_start: str = ""
    replay_floor: float | None = None
    #: Live links by wire protocol: {"1.0": n, "2.0": m}.
    links_by_protocol: dict[str, int] = field(default_factory=dict)
    #: 1.0 handshakes refused because 2.0 is required (min_protocol, or a peer seen on 2.0).
    downgrades_refused: int = 0


def _stopped() -> TransportStopped:
    return TransportStopped("the transport is stopped; create a new Transport to start again")


def _parse_key(key: str | bytes | None) -> bytes | None:
    if key is None or key == "":
        return None
    if isinstance(key, str):
        try:
            raw = b64decode(key)
        except ValueError as e:
            raise InvalidKeyError(f"expected public key {key[:64]!r}: {e}") from None
    else:
        raw = bytes(key)
    if len(raw) != 32:
        raise InvalidKeyError(f"expected public key must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(slots=True)
class _KeptLink:
    """A link to keep up (``connect(..., reconnect=True)``)."""

    address: str
    expected_key: bytes | None
    task: asyncio.Task[None] | None = None


class Transport:
    """An smsgnet node on the network.

    Set the message handler (:meth:`on_message`) before :meth:`start`. Use
    ``async with Transport(...) as t:`` or call :meth:`start` and :meth:`stop`.
    With ``TransportConfig(listen_addr=None)`` the node listens on nothing and
    only dials out.
    """

    def __init__(
        self,
        node: NodeManager,
        registry: PeerRegistry | None = None,
        config: TransportConfig | None = None,
    ) -> None:
        self.node = node
        self.registry = registry if registry is not None else PeerRegistry()
        self.config = cfg = config if config is not None else TransportConfig()
        #: The replay table and its state across restarts; the table is made at start().
        self._replay = ReplayGuard.from_config(cfg)
        self._dedup = make_deduplicator(cfg)
        self._table: ConnectionTable[PeerConnection] = ConnectionTable(
            node.node_id,
            max_conns=cfg.max_conns,
            max_pending=cfg.pending_limit,
            max_pending_per_peer=cfg.max_pending_per_peer,
            max_pending_per_address=cfg.max_pending_per_address,
            race_window=cfg.handshake_timeout,
        )
        #: Warnings a peer can cause (drops, refusals, failed handshakes) are
        #: rate-limited per category for the whole node, with counts of what was suppressed.
        self.warnings = WarningLimiter(per_minute=cfg.drop_log_per_minute)
        self._handlers = HandlerRunner(self.spawn)
        self._dialer = Dialer(node, cfg)
        self._acceptor = Acceptor(node, self.registry, cfg, self._table, self._run_inbound, self._evict,
                                  self.warnings)
        self._dialing: dict[str, asyncio.Future[PeerConnection]] = {}
        self._waiters: dict[PeerConnection, asyncio.Future[None]] = {}
        self._keep: dict[str, _KeptLink] = {}
        #: Live links the peer closed as dial-race losers, until the link it kept proves itself.
        self._handover: dict[str, PeerConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The websockets server's handler tasks running our inbound read loops.
        self._inbound_tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stats = TransportStats()
        self._closed_drops: Counter[str] = Counter()
        self._closed_msgs = [0, 0]

    # -- handlers -------------------------------------------------------------

    @overload
    def on_message(self, handler_or_type: MessageHandler) -> MessageHandler: ...

    @overload
    def on_message(self, handler_or_type: str) -> Callable[[MessageHandler], MessageHandler]: ...

    def on_message(self, handler_or_type: MessageHandler | str) -> Any:
        """Set the handler called as ``handler(conn, msg)`` for received messages.

        ``on_message(handler)`` (or ``@transport.on_message``) sets the
        catch-all handler; ``@transport.on_message("get_stats")`` sets the
        handler of one message type, which takes those messages instead of the
        catch-all. Each message goes to one consumer: its type's handler, else
        the catch-all, else the :meth:`messages` iterator. Replies to
        :meth:`request` go to the request, not to a handler. Handlers may be
        sync or async; set them before :meth:`start`. An async handler is
        awaited before the next frame of the same connection is read: keep it
        short, or spawn a task."""
        if self._started:
            raise TransportError("set message handlers before start()")
        if isinstance(handler_or_type, str):
            if not handler_or_type:
                raise TransportError("on_message(type): the message type must be a non-empty string")
            type_ = handler_or_type

            def register(handler: MessageHandler) -> MessageHandler:
                if self._started:
                    raise TransportError("set message handlers before start()")
                self._handlers.set_type_handler(type_, handler)
                return handler
            return register
        self._handlers.set_message_handler(handler_or_type)
        return handler_or_type

    async def messages(self) -> AsyncIterator[tuple[PeerConnection, Message]]:
        """Iterate over received messages as ``(conn, msg)``::

            async for conn, msg in transport.messages():
                ...

        Messages that a handler takes (see :meth:`on_message`) do not appear
        here. The queue is bounded (``message_queue_size``): when the consumer
        falls behind, the read loops wait, so senders are slowed down by TCP
        backpressure and nothing is dropped. Messages that arrive before the
        first iterator is opened, with no handler for them, are counted as
        unhandled (``stats().messages_unhandled``): open it before connecting.
        Several iterators share one queue (each message goes to one). The
        iteration ends when the transport stops."""
        if self._stopping:
            raise _stopped()
        channel = self._handlers.channel
        if channel is None:
            channel = self._handlers.channel = MessageChannel(self.config.message_queue_size)
        while True:
            item = await channel.get()
            if item is None:
                return
            yield item

    def on_peer_connected(self, handler: ConnectionHandler) -> ConnectionHandler:
        """Set ``handler(conn)``, called when a peer's link becomes live: for
        links we dial once the handshake is done, for inbound ones once the
        peer has proven its key. Not called again when a dial race swaps one
        link of a pair for the other (the peer stays connected). Sync or async
        (async ones run as tasks); decorator-friendly."""
        if self._started:
            raise TransportError("set connection handlers before start()")
        self._handlers.connected = handler
        return handler

    def on_peer_disconnected(self, handler: ConnectionHandler) -> ConnectionHandler:
        """Set ``handler(conn)``, called once when a live link has closed or was
        replaced by a newer one (``conn.close_code``/``close_reason`` say why). Sync or async."""
        if self._started:
            raise TransportError("set connection handlers before start()")
        self._handlers.disconnected = handler
        return handler

    # -- lifecycle -------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopping:
            raise _stopped()
        if not self._started:
            raise TransportError("start the transport first (await transport.start())")

    async def start(self) -> None:
        """Start listening on ``config.listen_addr`` (unless it is None) and the background sweeper."""
        if self._stopping:
            raise _stopped()
        if self._started:
            raise TransportError("transport already started")
        self._started = True
        try:
            self._dedup = self._replay.start()
        except ReplayStateError as e:
            self._started = False
            raise TransportError(f"state_dir: {e}") from None
        except OSError as e:
            self._started = False
            raise ConfigError(f"state_dir: cannot use {self.config.state_dir}: {e.strerror or e}") from None
        if self.config.listens:
            try:
                await self._acceptor.listen()
            except BaseException:
                self._started = False
                self._replay.stop()
                raise
            log.info("listening on %s (node %s)", self.url, self.node.node_id)
        else:
            log.info("client-only node %s started (listening on nothing)", self.node.node_id)
        self.spawn(self._sweep_dedup())
        if self.config.state_dir is not None and self.config.replay_checkpoint_interval is not None:
            self.spawn(self._checkpoint_replay(self.config.replay_checkpoint_interval))

    async def stop(self) -> None:
        """Disconnect every peer (code 1004, concurrently), stop listening, and
        wait for every task this transport started. Idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            self._keep.clear()
            self._acceptor.stop_listening()
            if self._handlers.channel is not None:
                self._handlers.channel.close()
            conns = self._table.live() + self._table.pending()
            await asyncio.gather(
                *(c.graceful_close("server shutdown", DisconnectCode.SHUTDOWN) for c in conns),
                return_exceptions=True,
            )
            # every link is closed: a handler still running (awaited by its read
            # loop) must not hold stop() up
            for task in list(self._inbound_tasks):
                task.cancel()
            await self._acceptor.close()
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            pending = [t for t in self._tasks if t is not current]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            # no frame can arrive any more: save the replay table (off the event loop)
            try:
                data = self._replay.snapshot()
                await asyncio.get_running_loop().run_in_executor(None, self._replay.stop, data)
            except (OSError, RuntimeError) as e:
                log.warning("replay state not saved (the next start refuses older frames): %s", clip(e, 300))
            try:
                await self.registry.flush()  # last-seen times of this run, off the event loop
            except RegistryError as e:
                log.warning("%s", clip(e, 300))
            self.warnings.report_suppressed(log)
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
        server = self._acceptor.server
        if server is None:
            if not self.config.listens:
                raise TransportError("this node listens on nothing (listen_addr=None)")
            raise TransportError("transport not started")
        sockets = list(server.sockets)
        # listening on every interface with port 0 binds IPv4 and IPv6 on
        # different ports; report the IPv4 one, which `address` points at
        sockets.sort(key=lambda s: s.family != socket.AF_INET)
        return int(sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """``HOST:PORT`` others can use to reach this node (loopback when listening on all)."""
        port = self.port
        host = self.config.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        """``ws(s)://HOST:PORT/path`` of this node."""
        return build_url(self.address, self.config.ws_path, self.config.tls_enabled)

    # -- what is connected ---------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This node's ID."""
        return self.node.node_id

    @property
    def connected_peers(self) -> int:
        """Number of peers with a live (proven) link."""
        return len(self._table)

    def get_connection(self, peer_id: str) -> PeerConnection | None:
        """The live link to ``peer_id``, or None (connections still proving their key are not listed)."""
        return self._table.get(peer_id)

    def connections(self) -> Iterator[PeerConnection]:
        """Iterate over a snapshot of live links."""
        return iter(self._table.live())

    def __iter__(self) -> Iterator[PeerConnection]:
        return self.connections()

    def stats(self) -> TransportStats:
        """Counters: connections, refusals, messages, and dropped frames by reason."""
        s = self._stats
        a = self._acceptor.stats
        drops = Counter(self._closed_drops)
        msgs_in, msgs_out = self._closed_msgs
        by_protocol = Counter(c.protocol for c in self._table.live())
        for c in self._table.live() + self._table.pending():
            drops.update(c.session.drops)
            msgs_in += c.session.messages_in
            msgs_out += c.session.messages_out
        return TransportStats(
            connections=len(self._table),
            unproven_connections=self._table.pending_count,
            handshaking=self._table.opening_count,
            connections_accepted=a.accepted,
            connections_initiated=s.connections_initiated,
            rejected_busy=a.rejected_busy,
            rejected_origin=a.rejected_origin,
            rejected_path=a.rejected_path,
            handshakes_refused=a.handshakes_refused,
            handshakes_failed=a.handshakes_failed + self._dialer.handshakes_failed,
            pending_evicted=sum(self._table.evicted.values()),
            pending_expired=s.pending_expired,
            duplicates_closed=s.duplicates_closed,
            replaced=s.replaced,
            reconnect_attempts=s.reconnect_attempts,
            reconnects=s.reconnects,
            handler_errors=self._handlers.errors,
            messages_unhandled=self._handlers.unhandled,
            messages_in=msgs_in,
            messages_out=msgs_out,
            drops=dict(drops),
            dedup_entries=len(self._dedup),
            dedup_evicted=self._dedup.evicted,
            replay_start=self._replay.start_kind or "",
            replay_floor=self._dedup.floor,
            links_by_protocol={p: by_protocol.get(p, 0) for p in PROTOCOLS},
            downgrades_refused=a.downgrades_refused + self._dialer.downgrades_refused,
        )

    # -- sending --------------------------------------------------------------------

    async def send(self, peer_id: str, msg: Message) -> None:
        """Send to one connected peer. Raises :class:`NotConnectedError`, or
        :class:`~smsgnet.ConnectionClosedError` when the write fails."""
        self._check_running()
        conn = self._table.get(peer_id)
        if conn is None or not conn.is_open:
            raise NotConnectedError(f"not connected to {peer_id}")
        await conn.send(msg)

    async def request(self, peer_id: str, msg: Message, *, timeout: float = 10.0) -> Message:
        """Send ``msg`` to a connected peer and wait for its reply (see
        :meth:`PeerConnection.request`). Raises :class:`NotConnectedError`,
        :class:`~smsgnet.RequestTimeout`, :class:`~smsgnet.RemoteError` or
        :class:`~smsgnet.ConnectionClosedError`."""
        self._check_running()
        conn = self._table.get(peer_id)
        if conn is None or not conn.is_open:
            raise NotConnectedError(f"not connected to {peer_id}")
        return await conn.request(msg, timeout=timeout)

    async def broadcast(self, msg: Message) -> dict[str, BaseException]:
        """Send to every live link except ``msg.from_`` (the originator).

        The message is encoded once and sealed for every peer in one native
        call (a fresh nonce per frame); sends run
        concurrently and each is bounded by the write timeout, so one slow or
        dead peer does not hold up the others. Returns the failures by peer ID
        (empty when every send succeeded)."""
        self._check_running()
        if not msg.from_:
            msg.from_ = self.node.node_id
        targets = [c for c in self._table.live() if c.peer_id != msg.from_ and c.is_open]
        if not targets:
            return {}
        encoded = msg.to_json()
        v1: list[PeerConnection] = []
        ciphers: list[_core.SmsgCipher] = []
        v2: list[PeerConnection] = []
        for c in targets:
            cipher = c.session.cipher
            if cipher is None:
                v2.append(c)
            else:
                v1.append(c)
                ciphers.append(cipher)
        sends: list[Coroutine[Any, Any, None]] = []
        if v1:
            # one mark for the message and one native call sealing it for every 1.0 peer
            frames = _core.seal_for_all(ciphers, encoded)
            self._dedup.mark(msg.id)
            sends = [c.send_sealed(f) for c, f in zip(v1, frames)]
        # 2.0 links seal their own (counter nonces, sealed in the order frames leave)
        sends += [c.send_encoded(msg.id, encoded) for c in v2]
        targets = v1 + v2
        results = await asyncio.gather(*sends, return_exceptions=True)
        return {c.peer_id: r for c, r in zip(targets, results) if isinstance(r, BaseException)}

    # -- connecting out ---------------------------------------------------------------

    def _live_at(self, address: str) -> PeerConnection | None:
        for c in self._table.live():
            if c.is_open and address in (c.address, c.peer.address):
                return c
        return None

    async def connect(
        self,
        peer_or_addr: Peer | str,
        *,
        expect_key: str | bytes | None = None,
        reconnect: bool = False,
    ) -> PeerConnection:
        """Connect to a peer (a :class:`Peer` or an address) and handshake; the
        live link to that peer.

        - A peer (by ID or by address) that already has a live link gets that
          link back, and concurrent calls for one peer share one dial.
        - If the peer's public key is known (``peer.public_key`` or
          ``expect_key``, base64 or 32 raw bytes), a responder presenting any
          other key is refused with :class:`~smsgnet.PeerAuthenticationError`.
          A refusal by the peer raises :class:`~smsgnet.HandshakeRefused` with
          its reason; no answer within the handshake timeout raises
          :class:`~smsgnet.HandshakeTimeout`.
        - When both nodes dial each other at once, both calls return the one
          surviving link (the one dialled by the lower node ID).
        - ``reconnect=True`` keeps the link up: when it drops, the node redials
          with jittered exponential backoff (``reconnect_*`` in the config),
          keeping the pinned key, until :meth:`PeerConnection.graceful_close`
          on the link or :meth:`stop`.
        """
        self._check_running()
        peer = Peer.at(peer_or_addr) if isinstance(peer_or_addr, str) else peer_or_addr
        expected = _parse_key(expect_key if expect_key is not None else (peer.public_key or None))
        url = self._dialer.url(peer.address) if peer.address else None
        existing = (self._table.get(peer.id) if peer.id else None) or (
            self._live_at(peer.address) if peer.address else None)
        if existing is not None and existing.is_open:
            if expected is not None and existing.identity.public_key != b64encode(expected):
                raise PeerAuthenticationError(
                    f"{existing.peer_id} is connected with key {existing.identity.public_key}, "
                    f"not the expected {b64encode(expected)}")
            conn = existing
        else:
            if url is None:
                raise ConnectFailedError(f"no address known for peer {peer.id}")
            key = peer.id or url
            inflight = self._dialing.get(key)
            if inflight is not None:
                conn = await asyncio.shield(inflight)
            else:
                fut: asyncio.Future[PeerConnection] = asyncio.get_running_loop().create_future()
                self._dialing[key] = fut
                try:
                    conn = await self._dial(peer, url, expected)
                except BaseException as e:
                    if not fut.done():
                        fut.set_exception(e)
                        fut.exception()  # retrieved: sharing callers get it through shield
                    raise
                else:
                    fut.set_result(conn)
                finally:
                    del self._dialing[key]
        if reconnect and not self._stopping:
            kept = self._keep.get(conn.peer_id)
            pinned = expected or b64decode(conn.identity.public_key)
            if kept is None:
                self._keep[conn.peer_id] = _KeptLink(peer.address or conn.address, pinned)
        return conn

    async def _dial(self, peer: Peer, url: str, expected: bytes | None) -> PeerConnection:
        config = self.config
        initiator = Initiator(self.node, expected_public_key=expected, expected_id=peer.id or None,
                              offer_protocol_2=config.offers_protocol_2, min_protocol=config.min_protocol,
                              registry=self.registry)
        dial_started = time.monotonic()
        ws, result = await self._dialer.dial(url, initiator)
        if self._stopping:
            await ws.close(1001, "shutting down")
            raise TransportStopped("the transport stopped during connect")
        self._stats.connections_initiated += 1
        conn = self._new_connection(ws, result, outbound=True, address=peer.address)
        conn.dial_started = dial_started
        # In a dial race the peer's own dial may be waiting for its proof here;
        # when it is the one both sides keep, wait for it instead of racing on.
        winner = self._table.race_winner_pending(conn)
        if winner is not None:
            await self._settled(winner, self.config.handshake_timeout)
        elif conn.peer_id < self.node.node_id:
            # 2.0: the peer's winning dial may still be in its Noise handshake here
            inbound = self._acceptor.noise_in_progress.get(conn.peer_id)
            if inbound is not None:
                await asyncio.wait([inbound], timeout=self.config.handshake_timeout)
        adoption = self._table.adopt(conn, time.monotonic())
        if not adoption.adopted:
            self._drop_redundant(conn, adoption.live)
            return adoption.live
        self.spawn(conn.run())
        conn.start_timer()
        # 1.0: prove our key at once (the responder has just proven its own by
        # HMAC). 2.0: the handshake proved it, but a peer that already had a live
        # link with us holds this one back until its first frame, as on 1.0.
        await conn.ping()
        self._apply(conn, adoption)
        return conn

    async def _settled(self, conn: PeerConnection, timeout: float) -> None:
        """Wait until a pending connection is proven or closed (bounded)."""
        if not self._table.is_pending(conn):
            return
        fut = self._waiters.get(conn)
        if fut is None:
            fut = self._waiters[conn] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            pass

    def _wake(self, conn: PeerConnection) -> None:
        fut = self._waiters.pop(conn, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- accepting in ---------------------------------------------------------------------

    async def _run_inbound(self, ws: Connection, result: HandshakeResult, address: str) -> None:
        conn = self._new_connection(ws, result, outbound=False, address=address)
        for victim in self._table.add_pending(ws, conn):
            self._evict(victim)
        conn.start_timer()  # the proof deadline (1.0), the keepalive (2.0)
        if conn.proven:
            self.connection_proven(conn)  # protocol 2.0: the handshake proved the key
        task = asyncio.current_task()
        if task is not None:
            self._inbound_tasks.add(task)
        try:
            await conn.run()
        finally:
            if task is not None:
                self._inbound_tasks.discard(task)

    def _evict(self, victim: object) -> None:
        """Close a socket that must give way: pending proof, or mid-handshake."""
        if isinstance(victim, PeerConnection):
            log.info("closing unproven connection claiming %s from %s: too many pending",
                     victim.peer_id, victim.address)
            victim.close_soon("too many connections pending proof", DisconnectCode.GOING_AWAY,
                                send_disconnect=False)
        else:
            transport = getattr(victim, "transport", None)
            if transport is not None:
                transport.close()

    # -- the table's decisions ---------------------------------------------------------------

    def _new_connection(self, ws: Connection, result: HandshakeResult, *, outbound: bool,
                        address: str) -> PeerConnection:
        # Inbound 2.0 is proven by its handshake and goes live at once, unless a
        # live link with this peer exists: then (a race, or a redundant dial the
        # peer is about to close) it waits for the peer's first frame, as 1.0
        # does, so both sides decide from the same facts.
        proven = outbound or (result.noise is not None and self._table.get(result.peer.id) is None)
        session = Session(result.peer.id, result.shared_secret, self._dedup, self.config,
                          local_id=self.node.node_id, peer_public_key=result.peer.public_key,
                          proven=proven, now=time.time(), noise=result.noise)
        peer = self.registry.get(result.peer.id) or Peer.from_identity(result.peer, address)
        return PeerConnection(self, ws, result.peer, result.shared_secret, session, outbound=outbound,
                              peer=peer, address=address)

    def _apply(self, conn: PeerConnection, adoption: Adoption[PeerConnection]) -> None:
        """Act on an adoption: register the live link, close the other, tell the user."""
        if not adoption.adopted:
            self._drop_redundant(conn, adoption.live)
            return
        old = adoption.close
        address = conn.address if conn.outbound else (conn.peer.address or conn.address)
        conn.peer = self.registry.mark_connected(conn.identity, address)  # never raises, never blocks
        if conn.protocol == "2.0":
            self.registry.note_protocol(conn.peer_id, "2.0")  # 1.0 with this peer is a downgrade from now on
        if adoption.outcome is Outcome.RACE_WON:
            assert old is not None
            self._drop_redundant(old, conn)
            return
        handed = self._handover.pop(conn.peer_id, None)
        if handed is not None:
            handed.superseded_by = conn
            return  # the peer never stopped being connected: no callbacks
        if adoption.outcome is Outcome.REPLACED:
            assert old is not None
            self._stats.replaced += 1
            log.info("connection to %s replaced by a newer one", conn.peer_id)
            old.close_soon("replaced by a newer connection", DisconnectCode.GOING_AWAY, send_disconnect=True)
            self._handlers.peer_disconnected(old)
        self._handlers.peer_connected(conn)

    def _drop_redundant(self, conn: PeerConnection, live: PeerConnection) -> None:
        self._stats.duplicates_closed += 1
        conn.superseded_by = live
        log.debug("closing redundant connection %r; %r stays", conn, live)
        conn.close_quietly()

    # -- ConnectionOwner --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this transport (cancelled and awaited by :meth:`stop`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def connection_proven(self, conn: PeerConnection) -> None:
        """(Connection owner interface) An inbound connection proved its key: let the table decide."""
        self._wake(conn)
        if self._stopping or not conn.is_open:
            return
        conn.established_at = now = time.monotonic()
        self._apply(conn, self._table.adopt(conn, now))

    def connection_closed(self, conn: PeerConnection) -> None:
        """(Connection owner interface) A connection closed: forget it, tell the user, maybe redial."""
        was_pending = self._table.is_pending(conn)
        was_live = self._table.forget(conn)
        self._wake(conn)
        self._closed_drops.update(conn.session.drops)
        self._closed_msgs[0] += conn.session.messages_in
        self._closed_msgs[1] += conn.session.messages_out
        peer_id = conn.peer_id
        if was_pending:
            if conn.close_reason == "key not proven in time":
                self._stats.pending_expired += 1
            handed = self._handover.get(peer_id)
            if handed is not None and next(self._table.pending_for(peer_id), None) is None:
                del self._handover[peer_id]  # the link it was handing over to never came
                self._lost(handed)
            return
        if not was_live:
            return
        if (conn.closed_by_peer and conn.close_reason.endswith(DUPLICATE_REASON)
                and next(self._table.pending_for(peer_id), None) is not None):
            # The peer closed this link as the loser of a dial race; the link it
            # keeps is pending here, about to prove itself. Hand over quietly.
            self._handover[peer_id] = conn
            return
        self._lost(conn)

    def _lost(self, conn: PeerConnection) -> None:
        """A peer's live link is gone with nothing in its place."""
        self.registry.mark_disconnected(conn.peer_id)
        self._handlers.peer_disconnected(conn)
        kept = self._keep.get(conn.peer_id)
        if kept is None:
            return
        if conn.closed_locally:
            del self._keep[conn.peer_id]
        elif not self._stopping and (kept.task is None or kept.task.done()):
            kept.task = self.spawn(self._redial(conn.peer_id, kept))

    def deliver(self, conn: PeerConnection, msg: Message) -> Any:
        """(Connection owner interface) Hand a received message to the user's handler."""
        return self._handlers.deliver(conn, msg)

    def pong_received(self, conn: PeerConnection, rtt_ms: float | None) -> None:
        """(Connection owner interface) Record a round trip."""
        if rtt_ms is None:
            return
        conn.peer.ping_ms = rtt_ms
        self.registry.record_ping(conn.peer_id, rtt_ms)

    def frame_dropped(self, conn: PeerConnection, drop: FrameDropped) -> None:
        """(Connection owner interface) Log a dropped frame (rate-limited for the whole node)."""
        self.warnings.warn(log, "drop", "dropped frame from %s (%s): %s", conn.peer_id, clip(conn.address, 64),
                           clip(conn.session.last_drop, 200))

    # -- reconnect -----------------------------------------------------------------------------

    async def _redial(self, peer_id: str, kept: _KeptLink) -> None:
        cfg = self.config
        delay = cfg.reconnect_initial_delay
        while not self._stopping and self._keep.get(peer_id) is kept and self._table.get(peer_id) is None:
            # jitter: somewhere in [delay/2, delay], so that a restarted hub is not hit by all at once
            await asyncio.sleep(delay / 2 + random.random() * delay / 2)
            if self._stopping or self._keep.get(peer_id) is not kept or self._table.get(peer_id) is not None:
                return
            self._stats.reconnect_attempts += 1
            try:
                await self.connect(Peer(id=peer_id, address=kept.address), expect_key=kept.expected_key)
            except SmsgnetError as e:
                log.info("reconnect to %s at %s failed: %s (next try in about %.1fs)", peer_id, kept.address,
                         e, min(cfg.reconnect_max_delay, delay * cfg.reconnect_factor))
                delay = min(cfg.reconnect_max_delay, delay * cfg.reconnect_factor)
                continue
            self._stats.reconnects += 1
            log.info("reconnected to %s at %s", peer_id, kept.address)
            return

    async def _checkpoint_replay(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, self._replay.write_checkpoint, self._replay.snapshot())
            except OSError as e:
                self.warnings.warn(log, "replay-checkpoint", "replay checkpoint not written: %s", clip(e, 300))

    async def _sweep_dedup(self) -> None:
        while True:
            await asyncio.sleep(self.config.dedup_sweep_interval)
            self._dedup.sweep()
