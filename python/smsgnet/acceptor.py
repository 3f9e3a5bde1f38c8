"""Accepting in: the listener, the checks before the upgrade, the responder's handshake.

Before the upgrade: the path, the browser ``Origin`` and a slot (a socket
pending proof of key gives way when every slot is taken; live links never do).
After it: the responder's handshake (:mod:`smsgnet.handshake`) within the
handshake timeout. A connection that completes it is handed to the node as
*pending proof*; the node's table decides the rest.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from smsgnet.config import TransportConfig
from smsgnet.dialer import CLOSE_TIMEOUT
from smsgnet.exceptions import ConfigError, SmsgnetError, TransportError
from smsgnet.handshake import REASON_DOWNGRADE, REASON_MIN_PROTOCOL, HandshakeResult, NoiseStage, Responder
from smsgnet.identity import NodeManager
from smsgnet.logsafe import WarningLimiter, clip
from smsgnet.registry import PeerRegistry
from smsgnet.table import ConnectionTable
from smsgnet.wire import Server, ServerConnection, serve

__all__ = ["Acceptor", "AcceptStats"]

log = logging.getLogger("smsgnet")


def server_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    if not (config.tls_cert_path and config.tls_key_path):
        raise ConfigError("tls_cert_path and tls_key_path must both be set to serve wss://")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2: ECDHE with AEAD only (AES-GCM, ChaCha20-Poly1305). TLS 1.3 suites are all AEAD.
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(config.tls_cert_path, config.tls_key_path)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"tls_cert_path/tls_key_path: cannot load {config.tls_cert_path} / {config.tls_key_path}: {e}"
        ) from None
    return ctx


@dataclass(slots=True)
class AcceptStats:
    accepted: int = 0
    rejected_busy: int = 0
    rejected_origin: int = 0
    rejected_path: int = 0
    handshakes_refused: int = 0
    handshakes_failed: int = 0
    #: Hellos refused because they would run 1.0 where 2.0 is required.
    downgrades_refused: int = 0


def remote_address_text(ws: ServerConnection) -> str:
    remote = ws.remote_address
    if not remote:
        return ""
    host = str(remote[0])
    return f"[{host}]:{remote[1]}" if ":" in host else f"{host}:{remote[1]}"


class Acceptor:
    """The listening side of one node.

    ``on_handshake(ws, result, address)`` is awaited for every accepted
    handshake and runs the connection until it closes."""

    def __init__(
        self,
        node: NodeManager,
        registry: PeerRegistry,
        config: TransportConfig,
        table: ConnectionTable,  # type: ignore[type-arg]
        on_handshake: Callable[[ServerConnection, HandshakeResult, str], Awaitable[None]],
        evict: Callable[[object], None],
        warnings: WarningLimiter,
    ) -> None:
        self.node = node
        self.registry = registry
        self.config = config
        self.table = table
        self._on_handshake = on_handshake
        self._evict = evict
        self._warnings = warnings
        self.stats = AcceptStats()
        self.server: Server | None = None
        self.stopping = False
        #: Protocol 2.0 handshakes in progress by claimed peer ID (the first of
        #: each): a dial racing one of them waits for it (Transport._dial).
        self.noise_in_progress: dict[str, asyncio.Future[None]] = {}

    async def listen(self) -> None:
        cfg = self.config
        server_ssl = server_ssl_context(cfg) if cfg.tls_enabled else None
        try:
            self.server = await serve(
                self._serve_connection,
                cfg.host or None,
                cfg.port,
                process_request=self._process_request,
                compression=None,
                max_size=cfg.max_message_size,
                max_queue=cfg.receive_queue_frames,
                ping_interval=None,
                close_timeout=CLOSE_TIMEOUT,
                ssl=server_ssl,
                server_header=None,
            )
        except OSError as e:
            raise TransportError(f"cannot listen on {cfg.listen_addr}: {e.strerror or e}") from None

    def stop_listening(self) -> None:
        self.stopping = True
        if self.server is not None:
            self.server.close(close_connections=False)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    # -- before the upgrade ------------------------------------------------------------

    def _origin_allowed(self, origin: str) -> bool:
        try:
            host = urlsplit(origin).hostname
        except ValueError:
            return False
        return host is not None and host.lower() in self.config.allowed_origin_hosts

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != self.config.ws_path:
            self.stats.rejected_path += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            self.stats.rejected_origin += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if self.stopping:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        self.table.prune_opening(_upgrade_died)
        admitted, victims = self.table.admit(connection)
        for victim in victims:
            self._evict(victim)
        if not admitted:
            self.stats.rejected_busy += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    # -- after the upgrade -----------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        try:
            result = await self._handshake(ws)
        finally:
            self.table.release_opening(ws)  # no-op once the node made it pending
        if result is not None:
            await self._on_handshake(ws, result, remote_address_text(ws))

    async def _handshake(self, ws: ServerConnection) -> HandshakeResult | None:
        responder = Responder(self.node, self.registry, accept_protocol_2=self.config.offers_protocol_2,
                              min_protocol=self.config.min_protocol)
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                data = await ws.recv()
                ack, result = responder.receive_hello(data)
                await ws.send(ack, text=True)
                del ack, data  # not kept for the life of the connection
                if result is not None and result.protocol == "2.0":
                    # protocol 2.0: Noise message 1 right behind the ack, then the dialler's answer
                    stage = NoiseStage.acceptor(self.node, result)
                    await ws.send(stage.first_message())
                    peer_id = result.peer.id
                    done = self.noise_in_progress.setdefault(peer_id, asyncio.get_running_loop().create_future())
                    try:
                        stage.finish(await ws.recv())
                    finally:
                        # resolved now; a waiting dial runs after this link was adopted
                        if self.noise_in_progress.get(peer_id) is done:
                            del self.noise_in_progress[peer_id]
                        if not done.done():
                            done.set_result(None)
                    result = stage.result_with_link()
        except TimeoutError:
            self.stats.handshakes_failed += 1
            self._warnings.warn(log, "handshake-timeout", "handshake from %s timed out", remote_address_text(ws),
                                level=logging.INFO)
            await ws.close(1002, "handshake timeout")
            return None
        except SmsgnetError as e:  # ProtocolError, or anything else the peer got wrong
            self.stats.handshakes_failed += 1
            self._warnings.warn(log, "handshake-failed", "bad handshake from %s: %s", remote_address_text(ws),
                                clip(e, 200))
            await ws.close(1002, "protocol error")
            return None
        except ConnectionClosed:
            self.stats.handshakes_failed += 1
            return None
        if result is None:
            self.stats.handshakes_refused += 1
            if responder.refusal in (REASON_DOWNGRADE, REASON_MIN_PROTOCOL):
                self.stats.downgrades_refused += 1
            claimed = responder.peer.id if responder.peer else "?"
            self._warnings.warn(log, "handshake-refused", "refused handshake from %s (claims %s): %s",
                                remote_address_text(ws), clip(claimed, 64), clip(responder.refusal or "refused"))
            await ws.close(1008, (responder.refusal or "refused")[:120])
            return None
        if self.stopping:
            await ws.close(1001, "shutting down")
            return None
        self.stats.accepted += 1
        return result


def _upgrade_died(socket: object) -> bool:
    transport = getattr(socket, "transport", None)
    return transport is None or transport.is_closing()
