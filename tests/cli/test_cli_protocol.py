"""The wire protocol from the command line: ``--min-protocol``, ``--max-protocol``
and ``"protocol"`` in ``ping``/``send --json`` (docs/cli.md), real processes."""

from __future__ import annotations

import json


def test_ping_and_send_say_which_protocol_the_link_ran(serve, cli):
    server = serve("--echo")
    for flags, protocol in (((), "2.0"), (("--max-protocol", "1.0"), "1.0")):
        r = cli("ping", server.addr, "--count", "1", "--json", *flags)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["protocol"] == protocol
        r = cli("send", server.addr, "--type", "probe", "--payload", "1", "--wait-reply", "5", "--json", *flags)
        assert r.returncode == 0, r.stderr
        reply = json.loads(r.stdout)
        assert reply["type"] == "echo" and reply["protocol"] == protocol
    r = cli("ping", server.addr, "--count", "1")
    assert r.stdout.splitlines()[0].endswith(", protocol 2.0")


def test_serve_min_protocol_2_refuses_a_1_0_client(serve, cli):
    server = serve("--min-protocol", "2.0")
    r = cli("ping", server.addr, "--count", "1", "--max-protocol", "1.0", "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout or r.stderr)
    assert "protocol 2.0 required" in err["error"]
    assert cli("ping", server.addr, "--count", "1").returncode == 0


def test_a_client_with_min_protocol_2_refuses_a_1_0_server(serve, cli):
    server = serve("--max-protocol", "1.0")
    r = cli("ping", server.addr, "--count", "1", "--min-protocol", "2.0")
    assert r.returncode == 1
    assert "protocol 2.0 required" in r.stderr or "min_protocol" in r.stderr


def test_min_above_max_is_a_usage_error(cli):
    r = cli("ping", "127.0.0.1:1", "--min-protocol", "2.0", "--max-protocol", "1.0")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--min-protocol 2.0 is above --max-protocol 1.0" in r.stderr
