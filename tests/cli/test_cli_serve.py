"""smsgnet serve, ping and send against each other, over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from selfsigned import make_certificate

from smsgnet import ConnectionState, Message, NodeManager, Transport, TransportConfig


def test_serve_prints_one_json_line_then_ping_gets_every_pong(serve, cli):
    server = serve()
    assert set(server.info) == {"id", "publicKey", "listen", "url", "loop"}
    assert server.info["loop"] in ("asyncio", "uvloop")
    host, port = server.info["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # the real port, not 0
    assert server.info["url"] == f"ws://127.0.0.1:{port}/ws"
    assert len(server.info["id"]) == 32

    r = cli("ping", server.addr, "--count", "3", "--interval", "0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"PING ws://127.0.0.1:{port}/ws: node {server.info['id']}")
    assert sum(line.startswith(f"pong from {server.info['id']}: seq=") for line in lines) == 3
    assert lines[-1].startswith("3 pings, 3 pongs, 0 lost; rtt min/avg/max = ")


def test_ping_json_and_expected_key_and_url_address(serve, cli):
    server = serve()
    r = cli("ping", server.info["url"], "--count", "2", "--interval", "0", "--json",
            "--expect-key", server.info["publicKey"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["peerId"] == server.info["id"]
    assert out["publicKey"] == server.info["publicKey"]
    assert out["sent"] == out["received"] == 2
    assert len(out["rttMs"]) == 2 and all(isinstance(x, float) and x >= 0 for x in out["rttMs"])
    assert out["minMs"] <= out["avgMs"] <= out["maxMs"]


def test_expect_key_mismatch_is_refused(serve, cli):
    server = serve()
    other = NodeManager.generate("other").identity.public_key
    r = cli("ping", server.addr, "--count", "1", "--expect-key", other)
    assert r.returncode == 1
    # both keys, the one presented first
    assert r.stderr.strip() == ("smsgnet ping: peer authentication failed: responder presented a different "
                                f"public key: {server.info['publicKey']}, expected {other}")
    r = cli("send", server.addr, "--type", "x", "--expect-key", other)
    assert r.returncode == 1 and f"{server.info['publicKey']}, expected {other}" in r.stderr


def test_echo_server_and_send_wait_reply(serve, cli, tmp_path):
    server = serve("--echo")
    r = cli("send", server.addr, "--type", "hello", "--payload", '{"a": [1, 2], "s": "\u00e9"}',
            "--wait-reply", "5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"a": [1, 2], "s": "\u00e9"}
    assert len(r.stdout.splitlines()) == 1

    # --json: the whole reply; with a known client identity we can check "to" as well
    me = json.loads(cli("keygen", "--state", str(tmp_path / "me"), "--json").stdout)
    r = cli("send", server.addr, "--type", "hello", "--payload", "[1, null]", "--wait-reply", "5",
            "--json", "--state", str(tmp_path / "me"))
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["type"] == "echo"
    assert reply["payload"] == [1, None]
    assert reply["from"] == server.info["id"]
    assert reply["to"] == me["id"]
    assert uuid.UUID(reply["replyTo"]).version == 4
    # the message's fields in wire order, then the protocol the link ran
    assert list(reply) == ["id", "type", "from", "to", "ts", "payload", "replyTo", "protocol"]
    assert reply["protocol"] == "2.0"


def test_send_without_waiting_prints_the_id_or_the_message(serve, cli):
    server = serve()
    r = cli("send", server.addr, "--type", "note")
    assert r.returncode == 0, r.stderr
    assert uuid.UUID(r.stdout.strip()).version == 4
    r = cli("send", server.addr, "--type", "note", "--payload", '{"k": 1}', "--json")
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent["type"] == "note" and sent["payload"] == {"k": 1} and sent["to"] == server.info["id"]
    assert "replyTo" not in sent


def test_no_reply_in_time_is_a_failure(serve, cli):
    server = serve()  # no --echo: nobody answers
    r = cli("send", server.addr, "--type", "hello", "--wait-reply", "0.3")
    assert r.returncode == 1
    assert r.stderr.strip() == "smsgnet send: no reply within 0.3 s"
    assert r.stdout == ""


def test_allowlist_refuses_unknown_keys_with_the_peers_reason(serve, cli):
    server = serve("--allowlist")
    r = cli("ping", server.addr, "--count", "1")
    assert r.returncode == 1
    assert "peer not authorized" in r.stderr
    assert r.stderr.strip() == "smsgnet ping: handshake refused by peer: peer not authorized"


def test_allow_key_admits_that_key_only(serve, cli, tmp_path):
    client = json.loads(cli("keygen", "--state", str(tmp_path / "client"), "--json").stdout)
    registry = tmp_path / "peers.json"
    server = serve("--allow-key", client["publicKey"], "--registry", str(registry))
    ok = cli("ping", server.addr, "--count", "1", "--state", str(tmp_path / "client"))
    assert ok.returncode == 0, ok.stderr
    refused = cli("ping", server.addr, "--count", "1")
    assert refused.returncode == 1 and "peer not authorized" in refused.stderr
    saved = json.loads(registry.read_text())
    assert saved["authMode"] == "allowlist" and client["publicKey"] in saved["allowedKeys"]


def test_a_registry_saved_in_allowlist_mode_stays_in_allowlist_mode(serve, cli, tmp_path):
    registry = tmp_path / "peers.json"
    first = serve("--allowlist", "--registry", str(registry))
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    second = serve("--registry", str(registry))  # no --allowlist this time
    r = cli("ping", second.addr, "--count", "1")
    assert r.returncode == 1 and "peer not authorized" in r.stderr


def test_rate_limit_off_and_max_conns_are_accepted(serve, cli):
    server = serve("--rate-limit", "off", "--max-conns", "5", "--path", "/mesh")
    assert server.info["url"].endswith("/mesh")
    assert cli("ping", server.addr, "--count", "1", "--path", "/mesh").returncode == 0
    wrong = cli("ping", server.addr, "--count", "1")  # default path /ws: HTTP 404
    assert wrong.returncode == 1 and "404" in wrong.stderr


def test_same_state_dir_same_identity(serve, cli, tmp_path):
    made = json.loads(cli("keygen", "--state", str(tmp_path / "node"), "--name", "n1", "--json").stdout)
    server = serve(state=tmp_path / "node")
    assert server.info["id"] == made["id"]
    assert server.info["publicKey"] == made["publicKey"]


def test_serve_uses_the_default_state_dir(serve, cli, cli_env):
    from pathlib import Path

    made = json.loads(cli("keygen", "--json").stdout)
    assert made["stateDir"] == cli_env["SMSGNET_STATE"]
    server = serve(state=Path(cli_env["SMSGNET_STATE"]))
    assert server.info["id"] == made["id"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_serve_cleanly_and_peers_get_1004(serve, sig):
    server = serve()
    client = Transport(NodeManager.generate("watcher"), config=TransportConfig(listen_addr="127.0.0.1:0"))
    await client.start()
    try:
        conn = await client.connect(server.addr, expect_key=server.info["publicKey"])
        assert conn.proven
        # The initiator's proof is the handshake's last message: connect() returns before the
        # server has read it. A round trip makes sure the server counts this peer (a signal
        # that came first would close a link the server never proved: close code 1001).
        await conn.request(Message.ping(client.node.node_id, conn.peer_id), timeout=10)
        server.signal(sig)
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert conn.state is ConnectionState.CLOSED
        assert conn.close_code == 1004
        assert conn.closed_by_peer
        code = await asyncio.to_thread(server.wait, 10)
        assert code == 0, server.stderr
    finally:
        await client.stop()


def test_serve_over_tls(serve, cli, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = serve("--tls-cert", str(cert), "--tls-key", str(key))
    assert server.info["url"].startswith("wss://127.0.0.1:")
    url = server.info["url"]
    untrusted = cli("ping", url, "--count", "1")
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr
    assert cli("ping", url, "--count", "1", "--ca", str(cert)).returncode == 0
    assert cli("ping", url, "--count", "1", "--insecure",
               "--expect-key", server.info["publicKey"]).returncode == 0


