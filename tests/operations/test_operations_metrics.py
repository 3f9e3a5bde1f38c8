"""smsgnet.metrics in process: real transports on 127.0.0.1, scraped over HTTP.

What a scrape shows is checked against what happened (messages sent, a replay,
a refusal, a wrong path) and against ``Transport.stats()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from scrape import fetch, parse, scrape, value

from smsgnet import (
    HandshakeRefused,
    Message,
    NodeManager,
    PeerRegistry,
    SmsgnetError,
    Transport,
    TransportConfig,
    TransportStats,
)
from smsgnet.metrics import INFOS, LABELLED, REJECTIONS, SCALARS, TransportCollector, serve_metrics
from smsgnet.session import DROP_REASONS

LOCAL = "127.0.0.1:0"


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def get(url: str, **kw: object) -> tuple[int, dict[str, str], bytes]:
    """GET from a thread, so the loop serving the endpoint keeps running."""
    return await asyncio.to_thread(fetch, url, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., object]]:
    started: list[Transport] = []

    async def make(name: str, registry: PeerRegistry | None = None, **config: object) -> Transport:
        t = Transport(NodeManager.generate(name), registry, TransportConfig(**config))  # type: ignore[arg-type]
        await t.start()
        started.append(t)
        return t

    try:
        yield make
    finally:
        await asyncio.gather(*(t.stop() for t in started), return_exceptions=True)


async def test_a_scrape_shows_connections_messages_drops_bytes_and_rtt(nodes):
    server = await nodes("server", listen_addr=LOCAL)
    client = await nodes("client", listen_addr=None, ping_interval=30.0)
    metrics = await serve_metrics(server, "127.0.0.1", 0)
    client_metrics = await serve_metrics(client, "127.0.0.1", 0)  # a client-only node has metrics too
    try:
        before = await asyncio.to_thread(scrape, metrics.url)
        assert value(before, "smsgnet_connections") == 0
        assert value(before, "smsgnet_messages_in_total") == 0
        assert value(before, "smsgnet_node_info", node_id=server.node_id) == 1

        conn = await client.connect(server.address)
        for i in range(5):
            await conn.send(Message.new("work", client.node_id, conn.peer_id, {"i": i}))
        again = Message.new("work", client.node_id, conn.peer_id, "twice")
        await conn.send(again)
        await conn.send(again)  # a replay: dropped as a duplicate
        await wait_for(lambda: server.stats().drops.get("duplicate") == 1)
        link = server.get_connection(client.node_id)
        assert link is not None

        s = await asyncio.to_thread(scrape, metrics.url)
        stats = server.stats()
        assert value(s, "smsgnet_connections") == 1 == stats.connections
        assert value(s, "smsgnet_connections_accepted_total") == 1
        # 6 application messages (the replay is not counted) and the client's proof ping
        assert value(s, "smsgnet_messages_in_total") == stats.messages_in == 7
        for reason in DROP_REASONS:  # every reason is there from the start
            assert value(s, "smsgnet_drops_total", reason=reason) == (1 if reason == "duplicate" else 0)
        for reason in REJECTIONS.values():
            assert value(s, "smsgnet_connections_rejected_total", reason=reason) == 0
        peer = client.node_id
        assert value(s, "smsgnet_peer_messages_in_total", peer=peer) == link.stats.messages_in == 7
        assert value(s, "smsgnet_peer_bytes_in_total", peer=peer) == link.stats.bytes_in > 0
        assert value(s, "smsgnet_peer_bytes_out_total", peer=peer) == link.stats.bytes_out > 0

        # the client timed its proof ping: its link to the server has a round trip
        c = await asyncio.to_thread(scrape, client_metrics.url)
        assert conn.ping_ms is not None
        assert value(c, "smsgnet_peer_rtt_seconds", peer=server.node_id) == conn.ping_ms / 1000
        assert value(c, "smsgnet_connections_initiated_total") == 1
        assert value(c, "smsgnet_messages_out_total") == client.stats().messages_out >= 7

        # the link goes: its peer series go with it, the totals stay
        await conn.graceful_close("done")
        await wait_for(lambda: server.connected_peers == 0)
        after = await asyncio.to_thread(scrape, metrics.url)
        assert value(after, "smsgnet_connections") == 0
        assert value(after, "smsgnet_messages_in_total") >= 7
        assert not [k for k in after if k[0].startswith("smsgnet_peer_")]
        assert value(after, "process_cpu_seconds_total") is not None  # process collectors are there too
    finally:
        await metrics.close()
        await client_metrics.close()


async def test_refusals_and_rejections_by_reason(nodes):
    server = await nodes("server", PeerRegistry(auth_mode="allowlist"), listen_addr=LOCAL)
    client = await nodes("client", listen_addr=None)
    metrics = await serve_metrics(server, "127.0.0.1", 0)
    try:
        with pytest.raises(HandshakeRefused):
            await client.connect(server.address)
        with pytest.raises(SmsgnetError):
            await client.connect(f"ws://{server.address}/not-the-path")
        await wait_for(lambda: server.stats().rejected_path == 1 and server.stats().handshakes_refused == 1)
        s = await asyncio.to_thread(scrape, metrics.url)
        assert value(s, "smsgnet_handshakes_refused_total") == 1
        assert value(s, "smsgnet_connections_rejected_total", reason="path") == 1
        assert value(s, "smsgnet_connections_rejected_total", reason="busy") == 0
        assert value(s, "smsgnet_connections") == 0
    finally:
        await metrics.close()


async def test_every_stats_field_is_exported(nodes):
    server = await nodes("server", listen_addr=LOCAL)
    text = b"".join([(await get((m := await serve_metrics(server, "127.0.0.1", 0)).url))[2]]).decode()
    await m.close()
    names = {name for name, _ in parse(text)}
    typed = {f for f, _, _ in SCALARS}
    for f in dataclasses.fields(TransportStats):
        if f.name == "drops":
            assert "smsgnet_drops_total" in names
        elif f.name in REJECTIONS:
            assert "smsgnet_connections_rejected_total" in names
        elif f.name in INFOS:
            assert f"{INFOS[f.name][0]}_info" in names
        elif f.name in LABELLED:
            assert LABELLED[f.name][0] in names
        elif getattr(server.stats(), f.name) is None:
            assert f.name in typed  # a gauge with no value yet: no sample, but a declared type
        else:
            assert f.name in typed, f"TransportStats.{f.name} has no metric type in smsgnet.metrics.SCALARS"
            assert {f"smsgnet_{f.name}", f"smsgnet_{f.name}_total"} & names, f.name


@dataclass
class _LaterStats(TransportStats):
    """TransportStats as a later version might have it."""

    frames_mangled: int = 7
    queue_depths: dict[str, int] = field(default_factory=lambda: {"a": 3})


class _LaterTransport(Transport):
    def stats(self) -> TransportStats:
        return _LaterStats(**dataclasses.asdict(super().stats()))


async def test_a_field_added_later_is_exported_untyped():
    t = _LaterTransport(NodeManager.generate("n"), config=TransportConfig(listen_addr=None))
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(TransportCollector(t))
    s = parse(generate_latest(registry).decode())
    assert value(s, "smsgnet_frames_mangled") == 7
    assert value(s, "smsgnet_queue_depths", key="a") == 3
    assert value(s, "smsgnet_connections") == 0  # and the known ones as before


async def test_a_scrape_from_another_thread_reads_on_the_loop(nodes):
    """prometheus_client's own threaded server: the collector hops to the transport's loop."""
    from prometheus_client import CollectorRegistry, start_http_server

    server = await nodes("server", listen_addr=LOCAL)
    client = await nodes("client", listen_addr=None)
    await client.connect(server.address)
    await wait_for(lambda: server.connected_peers == 1)
    registry = CollectorRegistry()
    collector = TransportCollector(server, timeout=0.3)
    registry.register(collector)
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        s = await asyncio.to_thread(scrape, f"http://127.0.0.1:{httpd.server_port}/metrics")
        assert value(s, "smsgnet_connections") == 1
        assert value(s, "smsgnet_peer_messages_in_total", peer=client.node_id) is not None
        # a loop that does not answer within the timeout fails the scrape, it does not hang it
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(None, lambda: list(collector.collect()))
        time.sleep(0.6)  # block the loop longer than the collector waits
        with pytest.raises(TimeoutError):
            await pending
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def test_the_endpoint_answers_only_get_and_head_on_metrics(nodes):
    server = await nodes("server", listen_addr=LOCAL)
    metrics = await serve_metrics(server, "127.0.0.1", 0)
    base = metrics.url.removesuffix("/metrics")
    try:
        status, headers, body = await get(metrics.url)
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"smsgnet_connections 0.0" in body
        assert (await get(base + "/"))[0] == 404
        assert (await get(base + "/metricsx"))[0] == 404
        # OpenMetrics when the scraper asks for it
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        status, headers, body = await get(metrics.url, headers=openmetrics)
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        # raw requests: HEAD has no body, POST is refused, a request line of junk is a 400
        for request, expect in ((b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK"),
                                (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 "),
                                (b"hello\r\n\r\n", b"HTTP/1.1 400 ")):
            reader, writer = await asyncio.open_connection("127.0.0.1", metrics.port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(expect), answer[:80]
            if request.startswith(b"HEAD"):
                assert answer.endswith(b"\r\n\r\n")
    finally:
        await metrics.close()


async def test_a_slow_or_huge_request_does_not_block_the_endpoint(nodes):
    server = await nodes("server", listen_addr=LOCAL)
    metrics = await serve_metrics(server, "127.0.0.1", 0)
    try:
        idle = socket.create_connection(("127.0.0.1", metrics.port), timeout=5)  # says nothing
        huge = socket.create_connection(("127.0.0.1", metrics.port), timeout=5)
        huge.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 64 * 1024)
        assert (await get(metrics.url))[0] == 200  # served while those two hang about
        # the oversized head is cut off, not buffered
        assert await asyncio.to_thread(huge.recv, 100) == b""
        idle.close()
        huge.close()
    finally:
        await metrics.close()


async def test_port_in_use_is_an_oserror(nodes):
    server = await nodes("server", listen_addr=LOCAL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            await serve_metrics(server, "127.0.0.1", s.getsockname()[1])


def test_smsgnet_imports_without_prometheus_client_and_says_which_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import smsgnet, smsgnet.cli, smsgnet.metrics\n"
        "from smsgnet import NodeManager, Transport\n"
        "t = Transport(NodeManager.generate('n'))\n"
        "try:\n"
        "    smsgnet.metrics.TransportCollector(t)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "metrics need the prometheus_client package: pip install 'smsgnet[metrics]'"


async def test_docs_operations_lists_exactly_the_exported_metrics(nodes):
    import re
    from pathlib import Path

    server = await nodes("server", listen_addr=LOCAL)
    client = await nodes("client", listen_addr=None)
    await client.connect(server.address)
    await wait_for(lambda: server.connected_peers == 1)
    from prometheus_client import CollectorRegistry, generate_latest

    registries = []
    for t in (server, client):  # the client's link has a round trip: every series is there
        registry = CollectorRegistry()
        registry.register(TransportCollector(t))
        registries.append(registry)
    exported = {name for r in registries for name, _ in parse(generate_latest(r).decode())
                if name.startswith("smsgnet_")}
    exported = {n.removesuffix("_total") for n in exported}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    table = doc.split("### What is exported", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {n.removesuffix("_total") for row in rows for n in re.findall(r"`(smsgnet_\w+)", row)}
    assert exported == documented
