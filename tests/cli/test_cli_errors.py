"""Bad input, exit codes, --help everywhere, main() in-process, the console script."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest

from smsgnet.cli import build_parser, main

SUBCOMMANDS = ["keygen", "serve", "ping", "send", "bench", "demo"]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("addr", ["nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:0", ":9091",
                                  "::1:9091", "http://127.0.0.1:9091/ws", "ws://:9091/ws"])
@pytest.mark.parametrize("command", ["ping", "send", "bench"])
def test_bad_address_is_a_one_line_usage_error(cli, command, addr):
    extra = ["--type", "x"] if command == "send" else []
    r = cli(command, addr, *extra)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"smsgnet {command}: error: argument ADDR: bad address ")
    assert r.stdout == ""


def test_nothing_listening_is_a_runtime_failure(cli):
    port = closed_port()
    r = cli("ping", f"127.0.0.1:{port}", "--count", "1")
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"smsgnet ping: cannot connect to ws://127.0.0.1:{port}/ws")


@pytest.mark.parametrize("args, message", [
    (["send", "127.0.0.1:9091", "--type", "x", "--payload", "{not json"], "argument --payload/-p: invalid JSON"),
    (["send", "127.0.0.1:9091"], "the following arguments are required: --type/-t"),
    (["send", "127.0.0.1:9091", "--type", "x", "--wait-reply", "0"], "argument --wait-reply"),
    (["ping", "127.0.0.1:9091", "--count", "0"], "argument --count/-c: must be >= 1"),
    (["ping", "127.0.0.1:9091", "--expect-key", "not-base64!"], "argument --expect-key: not a base64 public key"),
    (["ping", "127.0.0.1:9091", "--expect-key", "AAAA"], "a public key is 32 bytes"),
    (["ping", "127.0.0.1:9091", "--path", "ws"], "path must start with '/'"),
    (["serve", "--listen", "nope"], "argument --listen: bad listen address 'nope'"),
    (["serve", "--listen", "127.0.0.1:70000"], "argument --listen: bad listen address"),
    (["serve", "--rate-limit", "fast"], "argument --rate-limit: expected BURST:PER_SEC"),
    (["serve", "--rate-limit", "0:5"], "argument --rate-limit"),
    (["serve", "--max-conns", "0"], "argument --max-conns: must be >= 1"),
    (["serve", "--allow-key", "short"], "argument --allow-key"),
    (["serve", "--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_exit_2_with_one_line(cli, args, message):
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err


def test_missing_tls_file_is_a_runtime_failure(cli, tmp_path):
    r = cli("serve", "--listen", "127.0.0.1:0", "--state", str(tmp_path / "s"),
            "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tmp_path / "none.key"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"smsgnet serve: cannot read TLS certificate {tmp_path / 'none.pem'}: " \
                               "No such file or directory"


def test_listen_address_in_use_is_a_runtime_failure(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--listen", f"127.0.0.1:{port}", "--state", str(tmp_path / "s"))
    assert r.returncode == 1
    assert r.stderr.strip().startswith(f"smsgnet serve: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(cli, command):
    r = cli(command, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith(f"usage: smsgnet {command}")
    assert "Exit codes" in r.stdout


def test_top_level_help_and_version(cli):
    r = cli("--help")
    assert r.returncode == 0
    for command in SUBCOMMANDS:
        assert command in r.stdout
    v = cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("smsgnet 0.") and "protocol 1.0" in v.stdout


def test_parser_knows_exactly_the_documented_subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


def test_main_returns_exit_codes_in_process(tmp_path, capsys):
    assert main(["--help"]) == 0
    assert main(["ping", "nonsense"]) == 2
    assert "bad address" in capsys.readouterr().err
    assert main(["keygen", "--state", str(tmp_path / "k"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stateDir"] == str(tmp_path / "k")
    assert main(["keygen", "--state", str(tmp_path / "k")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_python_dash_m_and_console_script(cli, tmp_path):
    r = cli("keygen", "--state", str(tmp_path / "a"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"]
    beside = Path(sys.executable).with_name("smsgnet")
    script = shutil.which("smsgnet") or (str(beside) if beside.exists() else None)
    if script is None:
        # Only when the package was imported without being pip-installed (no
        # entry point anywhere); `pip install .` (README, .ci/run) always creates it.
        pytest.skip("the smsgnet console script is not installed")
    r = cli("keygen", "--state", str(tmp_path / "b"), "--json", exe=[script])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stateDir"] == str(tmp_path / "b")
    r = cli("ping", "bad", exe=[script])
    assert r.returncode == 2
