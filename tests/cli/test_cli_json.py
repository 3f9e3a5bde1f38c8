"""--json: every error is one JSON object on stdout with the usual exit code; and
serve --json prints one line per message received."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from smsgnet import NodeManager
from smsgnet.cli.output import CliError, report_error


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error(r: subprocess.CompletedProcess[str], code: int, kind: str, command: str | None) -> dict:
    """The single JSON error object of a finished command, checked for shape."""
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    err = json.loads(lines[0])
    assert err["type"] == kind and err["exit"] == code and err["command"] == command
    assert isinstance(err["error"], str) and err["error"] and "\n" not in err["error"]
    assert "Traceback" not in r.stderr
    return err


@pytest.mark.parametrize("args, kind_text", [
    (["ping", "nonsense"], "argument ADDR: bad address 'nonsense'"),
    (["send", "127.0.0.1:9", "--type", "x", "--payload", "{no"], "argument --payload/-p: invalid JSON"),
    (["serve", "--rate-limit", "fast"], "argument --rate-limit: expected BURST:PER_SEC"),
    (["keygen", "--role", "boss"], "invalid choice: 'boss'"),
])
def test_usage_errors_under_json_are_one_object_and_exit_2(cli, args, kind_text):
    r = cli(*args, "--json")
    err = one_error(r, 2, "UsageError", args[0])
    assert kind_text in err["error"]
    assert r.stderr == ""
    # the same command without --json: the one line on stderr, nothing on stdout
    plain = cli(*args)
    assert plain.returncode == 2 and plain.stdout == "" and kind_text in plain.stderr


def test_unknown_command_under_json(cli):
    err = one_error(cli("frobnicate", "--json"), 2, "UsageError", None)
    assert "invalid choice: 'frobnicate'" in err["error"]


def test_unreachable_peer_under_json(cli):
    port = closed_port()
    r = cli("ping", f"127.0.0.1:{port}", "--count", "1", "--json")
    err = one_error(r, 1, "ConnectFailedError", "ping")
    assert err["error"].startswith(f"cannot connect to ws://127.0.0.1:{port}/ws")


def test_refused_handshake_under_json_carries_the_peers_reason(serve, cli):
    server = serve("--allowlist")
    err = one_error(cli("send", server.addr, "--type", "x", "--json"), 1, "HandshakeRefused", "send")
    assert err["reason"] == "peer not authorized"
    assert err["error"] == "handshake refused by peer: peer not authorized"


def test_key_mismatch_under_json_names_both_keys(serve, cli):
    server = serve()
    other = NodeManager.generate("other").identity.public_key
    r = cli("ping", server.addr, "--count", "1", "--expect-key", other, "--json")
    err = one_error(r, 1, "PeerAuthenticationError", "ping")
    assert err["error"] == ("peer authentication failed: responder presented a different public key: "
                            f"{server.info['publicKey']}, expected {other}")


def test_no_reply_under_json(serve, cli):
    server = serve()  # nobody answers
    err = one_error(cli("send", server.addr, "--type", "hello", "--wait-reply", "0.3", "--json"),
                    1, "RequestTimeout", "send")
    assert err["error"] == "no reply within 0.3 s"


def test_identity_errors_under_json(cli, tmp_path):
    state = tmp_path / "node"
    made = json.loads(cli("keygen", "--state", str(state), "--json").stdout)
    err = one_error(cli("keygen", "--state", str(state), "--json"), 1, "IdentityExists", "keygen")
    assert made["id"] in err["error"] and "--force" in err["error"]
    (state / "private.key").write_bytes(b"short")
    err = one_error(cli("serve", "--listen", "127.0.0.1:0", "--state", str(state), "--json"),
                    1, "IdentityError", "serve")
    assert err["error"].startswith("cannot use identity: ")


def test_serve_errors_under_json(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--listen", f"127.0.0.1:{port}", "--state", str(tmp_path / "s"), "--json")
        err = one_error(r, 1, "TransportError", "serve")
        assert err["error"].startswith(f"cannot listen on 127.0.0.1:{port}")
        # the metrics port taken: the same kind of failure, before the startup line
        r = cli("serve", "--listen", "127.0.0.1:0", "--state", str(tmp_path / "s"), "--json",
                "--metrics", f"127.0.0.1:{port}")
        err = one_error(r, 1, "MetricsError", "serve")
        assert err["error"].startswith(f"cannot serve metrics on 127.0.0.1:{port}: ")
    err = one_error(cli("serve", "--tls-cert", "c.pem", "--json"), 2, "UsageError", "serve")
    assert err["error"] == "--tls-cert and --tls-key go together"


def test_a_failure_with_a_result_is_still_one_object(capsys):
    # ping's summary travels inside its error object (no pong is hard to provoke from a real node)
    summary = {"sent": 2, "received": 1, "rttMs": [0.5, None]}
    code = report_error("ping", CliError("1 of 2 pings got no pong within 1 s", kind="PingLost",
                                         details=summary), as_json=True)
    out = capsys.readouterr()
    assert code == 1 and out.err == ""
    assert json.loads(out.out) == {"error": "1 of 2 pings got no pong within 1 s", "type": "PingLost",
                                   "exit": 1, "command": "ping", **summary}
    assert report_error("ping", KeyboardInterrupt(), as_json=True) == 130
    assert json.loads(capsys.readouterr().out)["type"] == "Interrupted"


# -- serve --json -----------------------------------------------------------------------------------


def message_lines(server, n: int) -> list[dict]:
    return [json.loads(line) for line in server.lines(n)]


def test_serve_json_prints_one_line_per_message(serve, cli, tmp_path):
    me = json.loads(cli("keygen", "--state", str(tmp_path / "me"), "--json").stdout)
    server = serve("--json", "--echo")
    assert set(server.info) == {"id", "publicKey", "listen", "url", "loop"}  # the startup line is unchanged
    # pings and pongs are not application messages: no line for them
    assert cli("ping", server.addr, "--count", "2", "--interval", "0").returncode == 0
    sent = []
    for payload in ('{"n": 1}', '"two"', '[3, {"deep": "\u00e9"}]'):
        r = cli("send", server.addr, "--type", "probe", "--payload", payload, "--json",
                "--state", str(tmp_path / "me"))
        assert r.returncode == 0, r.stderr
        sent.append(r.stdout.strip())
    lines = message_lines(server, 3)
    for line, text in zip(lines, sent, strict=True):
        msg = json.loads(text)
        # send --json prints the message as sent, plus the link's protocol as its last key
        assert text.endswith(',"protocol":"2.0"}')
        size = len(text.encode()) - len(',"protocol":"2.0"')
        assert line == {"type": "probe", "from": me["id"], "size": size, "id": msg["id"]}


def test_serve_without_json_prints_only_the_startup_line(serve, cli):
    server = serve()
    assert cli("send", server.addr, "--type", "probe").returncode == 0
    server.signal(15)
    assert server.wait() == 0
    assert server.proc.stdout.read() == ""  # nothing after the startup line


def test_serve_json_stops_when_nobody_reads_stdout(serve, cli):
    server = serve("--json")
    server.proc.stdout.close()  # like `smsgnet serve --json | head -1` once head has its line
    r = cli("send", server.addr, "--type", "probe")
    assert r.returncode == 0, r.stderr  # the message was read; printing it failed
    assert server.wait() == 1
    assert "Traceback" not in server.stderr and "BrokenPipe" not in server.stderr
