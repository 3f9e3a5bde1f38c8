"""smsgnet serve --metrics HOST:PORT: a real serve process, scraped over HTTP after
clients connected, sent messages and were refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from scrape import scrape, value

from smsgnet import Message, NodeManager, Transport, TransportConfig


async def poll(url: str, until, timeout: float = 10.0):
    """Scrape until ``until(samples)`` holds (the serve process counts asynchronously)."""
    async with asyncio.timeout(timeout):
        while True:
            s = await asyncio.to_thread(scrape, url)
            if until(s):
                return s
            await asyncio.sleep(0.05)


async def test_serve_metrics_counts_what_clients_did(serve, cli):
    server = serve("--metrics", "127.0.0.1:0", "--echo")
    url = server.info["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert not url.startswith("http://127.0.0.1:0/")  # the real port

    s = await asyncio.to_thread(scrape, url)
    assert value(s, "smsgnet_connections") == 0
    assert value(s, "smsgnet_messages_in_total") == 0
    assert value(s, "smsgnet_node_info", node_id=server.info["id"]) == 1

    client = Transport(NodeManager.generate("watcher"), config=TransportConfig(listen_addr=None))
    await client.start()
    try:
        conn = await client.connect(server.addr, expect_key=server.info["publicKey"])
        for i in range(4):
            assert (await conn.request(Message.new("job", client.node_id, conn.peer_id, i), timeout=5)).payload == i
        twice = Message.new("note", client.node_id, conn.peer_id, "again")
        await conn.send(twice)
        await conn.send(twice)
        s = await poll(url, lambda s: value(s, "smsgnet_drops_total", reason="duplicate") == 1)
        assert value(s, "smsgnet_connections") == 1
        # 4 jobs + 1 note + the proof ping, each counted once
        assert value(s, "smsgnet_messages_in_total") == 6
        assert value(s, "smsgnet_messages_out_total") >= 4  # the echoes
        peer = client.node_id
        assert value(s, "smsgnet_peer_messages_in_total", peer=peer) == 6
        assert value(s, "smsgnet_peer_bytes_in_total", peer=peer) > 0
        assert value(s, "smsgnet_peer_bytes_out_total", peer=peer) > 0
        assert value(s, "process_resident_memory_bytes") > 0
    finally:
        await client.stop()
    s = await poll(url, lambda s: value(s, "smsgnet_connections") == 0)
    assert value(s, "smsgnet_messages_in_total") == 7  # and the client's disconnect
    assert value(s, "smsgnet_peer_messages_in_total", peer=peer) is None

    # a CLI client: its message and its proof ping on top
    r = await asyncio.to_thread(cli, "send", server.addr, "--type", "probe")
    assert r.returncode == 0, r.stderr
    s = await poll(url, lambda s: value(s, "smsgnet_connections_accepted_total") == 2
                   and value(s, "smsgnet_connections") == 0)
    assert value(s, "smsgnet_messages_in_total") >= 7 + 2
    assert f"metrics at {url}" in server.stderr  # the human-readable startup line says where


async def test_serve_metrics_counts_refusals(serve, cli):
    server = serve("--allowlist", "--metrics", "127.0.0.1:0")
    url = server.info["metrics"]
    for _ in range(2):
        r = await asyncio.to_thread(cli, "ping", server.addr, "--count", "1")
        assert r.returncode == 1 and "peer not authorized" in r.stderr
    wrong = await asyncio.to_thread(cli, "ping", server.addr, "--count", "1", "--path", "/nope")
    assert wrong.returncode == 1
    s = await poll(url, lambda s: value(s, "smsgnet_handshakes_refused_total") == 2
                   and value(s, "smsgnet_connections_rejected_total", reason="path") == 1)
    assert value(s, "smsgnet_connections") == 0
    assert value(s, "smsgnet_connections_rejected_total", reason="busy") == 0


def test_serve_metrics_without_prometheus_client_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from smsgnet.cli import main\n"
            f"sys.exit(main(['serve', '--listen', '127.0.0.1:0', '--state', {str(tmp_path / 's')!r}, "
            "'--metrics', '127.0.0.1:0']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert r.stderr.strip() == ("smsgnet serve: metrics need the prometheus_client package: "
                                "pip install 'smsgnet[metrics]'")
    assert r.stdout == ""  # it never started listening
    r = subprocess.run([sys.executable, "-c", code.replace("'127.0.0.1:0']", "'127.0.0.1:0', '--json']")],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert json.loads(r.stdout)["type"] == "MissingDependency"


def test_bad_metrics_address_is_a_usage_error(cli):
    r = cli("serve", "--metrics", "nope")
    assert r.returncode == 2
    assert "argument --metrics: bad listen address 'nope'" in r.stderr
