"""Prometheus metrics of a :class:`~smsgnet.Transport` (optional: ``pip install 'smsgnet[metrics]'``).

:class:`TransportCollector` reads :meth:`Transport.stats` and the live links'
counters when it is scraped; nothing runs in between. Register it in any
``prometheus_client`` registry, or let :func:`serve_metrics` serve it over
HTTP from the event loop the transport runs on::

    async with Transport(node, config=config) as transport:
        metrics = await serve_metrics(transport, "127.0.0.1", 9464)
        ...  # GET http://127.0.0.1:9464/metrics
        await metrics.close()

Importing :mod:`smsgnet` never needs ``prometheus_client``; this module imports
it only when a collector or server is made, and raises :class:`ImportError`
naming the extra when it is missing.

What is exported (``docs/operations.md`` has the full table): every
``TransportStats`` field, as a gauge (``connections``, ``unproven_connections``,
``handshaking``, ``dedup_entries``, ``replay_floor``), an info
(``smsgnet_replay_info{start}``), a ``*_total`` counter, or a labelled
counter (``smsgnet_connections_rejected_total{reason}``,
``smsgnet_drops_total{reason}`` with every known reason present from the
start), and live links by protocol (``smsgnet_links{protocol}``); per live link, ``smsgnet_peer_*{peer}`` bytes and messages in and out,
and the last ping round trip ``smsgnet_peer_rtt_seconds``. A field added to
``TransportStats`` later is exported under ``smsgnet_<field>`` until it is given
a type here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smsgnet.connection import ConnectionStats
from smsgnet.session import DROP_REASONS
from smsgnet.transport import Transport, TransportStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["TransportCollector", "MetricsServer", "serve_metrics", "require_prometheus", "INSTALL_HINT"]

log = logging.getLogger("smsgnet.metrics")

INSTALL_HINT = "pip install 'smsgnet[metrics]'"

#: ``TransportStats`` fields exported as one unlabelled metric: (field, kind, help).
#: Names are ``smsgnet_<field>`` (counters get ``_total``).
SCALARS: tuple[tuple[str, str, str], ...] = (
    ("connections", "gauge", "Live (proven) links."),
    ("unproven_connections", "gauge",
     "Inbound connections past the handshake that have not proven their key yet."),
    ("handshaking", "gauge", "Inbound sockets upgraded and still in the handshake."),
    ("connections_accepted", "counter", "Inbound connections accepted (WebSocket upgrades)."),
    ("connections_initiated", "counter", "Outbound connections this node dialled."),
    ("handshakes_refused", "counter", "Handshakes this node refused (e.g. allowlist, version)."),
    ("handshakes_failed", "counter",
     "Handshakes that failed (timeout, bad HMAC, protocol error, refused by the peer)."),
    ("pending_evicted", "counter", "Unproven connections closed to make room."),
    ("pending_expired", "counter", "Unproven connections closed at the proof deadline."),
    ("duplicates_closed", "counter", "Redundant links closed by the one-link-per-pair rule."),
    ("replaced", "counter", "Live links replaced by a newer proven connection from the same peer."),
    ("reconnect_attempts", "counter", "Dials made to restore kept links (connect(..., reconnect=True))."),
    ("reconnects", "counter", "Kept links restored."),
    ("handler_errors", "counter", "Message handler calls that raised."),
    ("messages_unhandled", "counter", "Messages no handler took while no messages() iterator was open."),
    ("messages_in", "counter", "Application messages received and accepted."),
    ("messages_out", "counter", "Messages sent."),
    ("dedup_entries", "gauge", "Message IDs held by the replay table."),
    ("dedup_evicted", "counter", "Message IDs evicted from the replay table before they expired."),
    ("replay_floor", "gauge", "Frames dated before this UNIX time are refused (set after a restart)."),
    ("downgrades_refused", "counter",
     "Handshakes refused because they would run protocol 1.0 where 2.0 is required."),
)

#: ``TransportStats`` fields gathered into ``smsgnet_connections_rejected_total{reason}``.
REJECTIONS: dict[str, str] = {"rejected_busy": "busy", "rejected_origin": "origin", "rejected_path": "path"}

#: ``TransportStats`` fields exported as labels: field -> (metric, label).
INFOS: dict[str, tuple[str, str]] = {"replay_start": ("smsgnet_replay", "start")}

#: ``TransportStats`` dict fields exported as one gauge with a label per key: field -> (metric, label).
LABELLED: dict[str, tuple[str, str]] = {"links_by_protocol": ("smsgnet_links", "protocol")}


def require_prometheus() -> None:
    """Raise :class:`ImportError` naming the extra when ``prometheus_client`` is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ImportError(f"metrics need the prometheus_client package: {INSTALL_HINT}") from e


@dataclass(slots=True)
class _Snapshot:
    node_id: str
    stats: TransportStats
    #: (peer ID, its counters, last ping round trip in ms) of every live link
    peers: list[tuple[str, ConnectionStats, float | None]]


class TransportCollector:
    """A ``prometheus_client`` collector of one transport's counters, read at scrape time.

    Safe to scrape from another thread (``prometheus_client.start_http_server``):
    the reading is then done on the transport's event loop (the loop running
    when the collector is made, or ``loop``) and waits at most ``timeout``
    seconds for it. ``per_peer=False`` leaves out the ``smsgnet_peer_*``
    series (one per live link and metric).
    """

    def __init__(self, transport: Transport, *, per_peer: bool = True,
                 loop: asyncio.AbstractEventLoop | None = None, timeout: float = 5.0) -> None:
        require_prometheus()
        self.transport = transport
        self.per_peer = per_peer
        self.timeout = timeout
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop

    def describe(self) -> list[Metric]:
        """Nothing: the registry need not read the transport when this is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics, from a snapshot of the transport taken now."""
        return iter(self._families(self._snapshot()))

    # -- reading -------------------------------------------------------------------------

    def _read(self) -> _Snapshot:
        t = self.transport
        peers = [(c.peer_id, c.stats, c.ping_ms) for c in t.connections()] if self.per_peer else []
        return _Snapshot(t.node_id, t.stats(), peers)

    def _snapshot(self) -> _Snapshot:
        loop = self._loop
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop or loop.is_closed() or not loop.is_running():
            return self._read()
        # another thread: the transport's state belongs to its loop, read it there
        done: concurrent.futures.Future[_Snapshot] = concurrent.futures.Future()

        def read() -> None:
            try:
                done.set_result(self._read())
            except BaseException as e:
                done.set_exception(e)

        loop.call_soon_threadsafe(read)
        return done.result(timeout=self.timeout)

    # -- turning a snapshot into metric families -----------------------------------------------

    def _families(self, snap: _Snapshot) -> list[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
            UnknownMetricFamily,
        )

        stats = snap.stats
        out: list[Metric] = [InfoMetricFamily("smsgnet_node", "This node.", value={"node_id": snap.node_id})]
        seen = {"drops", *REJECTIONS}
        for name, kind, help in SCALARS:
            if not hasattr(stats, name):
                continue  # a field this version of TransportStats does not have
            seen.add(name)
            value = getattr(stats, name)
            if value is None:
                continue  # not known (yet): no sample rather than a made-up one
            family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            out.append(family(f"smsgnet_{name}", help, value=value))
        for name, (metric, label) in INFOS.items():
            if hasattr(stats, name):
                seen.add(name)
                value = {label: str(getattr(stats, name))}
                out.append(InfoMetricFamily(metric, f"TransportStats.{name}.", value=value))

        rejected = CounterMetricFamily("smsgnet_connections_rejected",
                                       "Connections refused before the handshake, by reason (HTTP 503 busy, "
                                       "403 origin, 404 path).", labels=["reason"])
        for field, reason in REJECTIONS.items():
            rejected.add_metric([reason], getattr(stats, field, 0))
        out.append(rejected)

        for name, (metric, label) in LABELLED.items():
            if hasattr(stats, name):
                seen.add(name)
                labelled = GaugeMetricFamily(metric, "Live links by wire protocol (1.0: SMSG, 2.0: Noise).",
                                             labels=[label])
                for key, count in getattr(stats, name).items():
                    labelled.add_metric([key], count)
                out.append(labelled)

        drops = CounterMetricFamily("smsgnet_drops", "Frames dropped, by reason.", labels=["reason"])
        for reason, count in {**dict.fromkeys(DROP_REASONS, 0), **stats.drops}.items():
            drops.add_metric([reason], count)
        out.append(drops)

        for f in dataclasses.fields(stats):  # fields added after this table was written
            if f.name in seen:
                continue
            new: Any = getattr(stats, f.name)
            help = f"TransportStats.{f.name}"
            if isinstance(new, dict):
                extra = UnknownMetricFamily(f"smsgnet_{f.name}", help, labels=["key"])
                for key, v in new.items():
                    if isinstance(v, (int, float)):
                        extra.add_metric([str(key)], v)
                out.append(extra)
            elif isinstance(new, (int, float)) and not isinstance(new, bool):
                out.append(UnknownMetricFamily(f"smsgnet_{f.name}", help, value=new))

        if self.per_peer:
            out.extend(self._peer_families(snap))
        return out

    def _peer_families(self, snap: _Snapshot) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        per_link = " on the live link to this peer (starts at 0 with each new link)."
        counters = {
            "bytes_in": CounterMetricFamily("smsgnet_peer_bytes_in", "Bytes received" + per_link, labels=["peer"]),
            "bytes_out": CounterMetricFamily("smsgnet_peer_bytes_out", "Bytes sent" + per_link, labels=["peer"]),
            "messages_in": CounterMetricFamily("smsgnet_peer_messages_in", "Messages received" + per_link,
                                               labels=["peer"]),
            "messages_out": CounterMetricFamily("smsgnet_peer_messages_out", "Messages sent" + per_link,
                                                labels=["peer"]),
        }
        rtt = GaugeMetricFamily("smsgnet_peer_rtt_seconds",
                                "Round trip of the last keepalive ping answered on the live link to this peer.",
                                labels=["peer"])
        for peer_id, cs, ping_ms in snap.peers:
            for name, family in counters.items():
                family.add_metric([peer_id], getattr(cs, name))
            if ping_ms is not None:
                rtt.add_metric([peer_id], ping_ms / 1000.0)
        return [*counters.values(), rtt]


# -- serving ------------------------------------------------------------------------------------------

#: How long a client may take to send its request head, and the most it may send.
REQUEST_TIMEOUT = 5.0
REQUEST_LIMIT = 16 * 1024


class MetricsServer:
    """The HTTP endpoint :func:`serve_metrics` started: ``GET /metrics`` on the
    transport's event loop. Close it with :meth:`close` (or ``async with``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.server: asyncio.Server

    async def _listen(self, host: str | None, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, host or None, port, limit=REQUEST_LIMIT)

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics`` of the first listening socket (loopback when on every interface)."""
        host = str(self.server.sockets[0].getsockname()[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        """Stop listening and wait for requests in progress."""
        self.server.close()
        await self.server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            status, headers, body = self._respond(head)
            lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()),
                     f"Content-Length: {len(body)}", "Connection: close", "", ""]
            method = head.split(b" ", 1)[0]
            writer.write("\r\n".join(lines).encode("latin-1") + (b"" if method == b"HEAD" else body))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        from prometheus_client.exposition import choose_encoder

        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        text = {"Content-Type": "text/plain; charset=utf-8"}
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", text, b"bad request\n"
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return "404 Not Found", text, b"not found: the metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {**text, "Allow": "GET, HEAD"}, b"method not allowed\n"
        accept = ""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(self.registry)
        except Exception as e:  # a collector failed: say so, keep serving
            log.warning("metrics scrape failed: %s", e)
            return "500 Internal Server Error", text, f"metrics unavailable: {e}\n".encode()
        return "200 OK", {"Content-Type": content_type}, body


async def serve_metrics(transport: Transport, host: str | None, port: int, *,
                        registry: CollectorRegistry | None = None, per_peer: bool = True) -> MetricsServer:
    """Serve ``GET /metrics`` (Prometheus text or OpenMetrics, as the scraper
    asks) on ``host:port`` from the running event loop, which must be the
    transport's. ``host`` None or ``""`` listens on every interface; port 0
    picks a free port (see :attr:`MetricsServer.port`).

    Without ``registry`` a new one holds the transport's collector and
    ``prometheus_client``'s process, platform and GC collectors; with one,
    the transport's collector is added to it. Raises :class:`ImportError`
    when ``prometheus_client`` is missing and :class:`OSError` when the
    address cannot be listened on. Call :meth:`MetricsServer.close` when done.
    """
    require_prometheus()
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
    from prometheus_client.registry import CollectorRegistry

    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(TransportCollector(transport, per_peer=per_peer))
    server = MetricsServer(registry)
    await server._listen(host, port)
    return server
