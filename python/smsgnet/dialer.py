"""Dialling out: open the WebSocket and run the initiator's side of the handshake.

The dialler knows URLs, TLS and sockets; the rules of the handshake are in
:mod:`smsgnet.handshake`. It returns an open socket whose responder has proven
its key (the HMAC over our challenge verified), or raises.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from smsgnet.config import TransportConfig
from smsgnet.exceptions import (
    ConnectFailedError,
    DowngradeRefused,
    HandshakeError,
    HandshakeTimeout,
    ProtocolError,
)
from smsgnet.handshake import HandshakeResult, Initiator, NoiseStage
from smsgnet.identity import NodeManager
from smsgnet.wire import ClientConnection
from smsgnet.wire import connect as ws_connect

__all__ = ["Dialer", "build_url", "CLOSE_TIMEOUT"]

#: WebSocket close-handshake wait.
CLOSE_TIMEOUT = 2.0


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


def client_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.tls_ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Dialer:
    """Opens connections for one node; counts failed handshakes."""

    def __init__(self, node: NodeManager, config: TransportConfig) -> None:
        self.node = node
        self.config = config
        self.handshakes_failed = 0
        self.downgrades_refused = 0
        self._ssl: ssl.SSLContext | None = None

    def url(self, address: str) -> str:
        """The URL dialled for ``address``; :class:`ConnectFailedError` when it is not one."""
        try:
            return build_url(address, self.config.ws_path, self.config.tls_enabled)
        except ValueError as e:
            raise ConnectFailedError(str(e)) from None

    async def dial(self, url: str, initiator: Initiator) -> tuple[ClientConnection, HandshakeResult]:
        """Connect to ``url`` and handshake. Raises :class:`ConnectFailedError`,
        :class:`HandshakeTimeout`, :class:`HandshakeRefused` or
        :class:`PeerAuthenticationError`; never leaves a socket open on failure."""
        ssl_ctx = None
        if url.startswith("wss://"):
            if self._ssl is None:
                self._ssl = client_ssl_context(self.config)
            ssl_ctx = self._ssl
        timeout = self.config.handshake_timeout
        ws = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    ws = await ws_connect(
                        url,
                        compression=None,
                        max_size=self.config.max_message_size,
                        max_queue=self.config.receive_queue_frames,
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
                if result.protocol == "2.0":
                    # protocol 2.0: read Noise message 1, answer with message 2; both keys proven
                    stage = NoiseStage.dialler(self.node, result)
                    await ws.send(stage.answer(await ws.recv()))
                    result = stage.result_with_link()
        except TimeoutError:
            self.handshakes_failed += 1
            if ws is not None:
                await ws.close(1002, "handshake timeout")
            raise HandshakeTimeout(f"handshake with {url} did not finish within {timeout:g}s") from None
        except ConnectionClosed as e:
            self.handshakes_failed += 1
            raise ConnectFailedError(f"{url} closed the connection during the handshake: {e}") from None
        except DowngradeRefused:
            self.handshakes_failed += 1
            self.downgrades_refused += 1
            if ws is not None:
                await ws.close(1008, "protocol 2.0 required")
            raise
        except (HandshakeError, ProtocolError):
            self.handshakes_failed += 1
            if ws is not None:
                await ws.close(1002, "handshake failed")
            raise
        except BaseException:
            if ws is not None:
                await ws.close()
            raise
        return ws, result
