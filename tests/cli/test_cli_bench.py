"""smsgnet bench against a real `smsgnet serve --echo` subprocess, and --loop for serve and bench.

Small runs only: the figures are checked for presence and sign, never for speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smsgnet import NodeManager
from smsgnet.cli.loops import uvloop_factory

HAS_UVLOOP = uvloop_factory() is not None
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop not installed")

SMALL = ["--count", "300", "--size", "64", "--window", "50", "--pings", "20"]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


def check_clean_result(out: dict, *, count: int = 300, size: int = 64, window: int = 50, pings: int = 20,
                       protocol: str = "2.0") -> None:
    assert out["lost"] == 0 and out["received"] == count
    assert (out["count"], out["size"], out["window"]) == (count, size, window)
    for key in ("msgs_per_s", "mb_per_s", "p50_us", "p99_us", "elapsed_s"):
        assert positive(out[key]), (key, out)
    assert out["p50_us"] <= out["p99_us"]
    pp = out["pingpong"]
    assert pp["pings"] == pings and pp["lost"] == 0
    assert positive(pp["p50_us"]) and pp["p50_us"] <= pp["p99_us"]
    assert out["protocol"] == protocol  # 2.0 against smsgnet serve; the Go nodes answer 1.0
    assert out["loop"] in ("asyncio", "uvloop")


def test_bench_json_nothing_lost(serve, cli):
    server = serve("--echo", "--rate-limit", "off")
    r = cli("bench", server.addr, *SMALL, "--json", "--expect-key", server.info["publicKey"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.splitlines()) == 1
    out = json.loads(r.stdout)
    check_clean_result(out)
    assert out["peerId"] == server.info["id"]
    assert out["loop"] == ("uvloop" if HAS_UVLOOP else "asyncio")  # the default


def test_bench_unbounded_window_and_plain_summary(serve, cli):
    server = serve("--echo", "--rate-limit", "off")
    r = cli("bench", server.info["url"], "--count", "200", "--size", "1024", "--window", "0", "--pings", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"BENCH {server.info['url']}: node {server.info['id']}, protocol 2.0, 200 x 1024 B, no window")
    assert lines[1].startswith("200 echoes in ") and lines[1].endswith("; 0 lost")
    assert lines[2].startswith("3 pings: round trip p50 ") and lines[2].endswith("; 0 lost")


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_bench_on_both_loops_against_serve_on_both_loops(serve, cli, loop):
    other = "asyncio" if loop == "uvloop" else ("uvloop" if HAS_UVLOOP else "asyncio")
    server = serve("--echo", "--rate-limit", "off", "--loop", other)
    assert server.info["loop"] == other
    r = cli("bench", server.addr, *SMALL, "--json", "--loop", loop)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    check_clean_result(out)
    assert out["loop"] == loop


def test_wrong_expect_key_fails_naming_both_keys(serve, cli):
    server = serve("--echo", "--rate-limit", "off")
    other = NodeManager.generate("other").identity.public_key
    r = cli("bench", server.addr, *SMALL, "--expect-key", other)
    assert r.returncode == 1
    assert r.stderr.strip() == ("smsgnet bench: peer authentication failed: responder presented a different "
                                f"public key: {server.info['publicKey']}, expected {other}")
    r = cli("bench", server.addr, *SMALL, "--expect-key", other, "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)
    assert err["type"] == "PeerAuthenticationError" and err["exit"] == 1 and err["command"] == "bench"
    assert server.info["publicKey"] in err["error"] and other in err["error"]


def test_a_server_that_drops_makes_bench_report_lost_and_fail(serve, cli):
    server = serve("--echo")  # the default rate limit: burst 100, 50/s per connection
    r = cli("bench", server.addr, "--count", "300", "--size", "64", "--window", "0", "--pings", "2",
            "--timeout", "1", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)  # the whole result, inside the error object
    assert out["type"] == "BenchLost" and out["exit"] == 1 and out["command"] == "bench"
    assert 0 < out["lost"] < 300
    assert out["received"] + out["lost"] == 300
    assert f"lost {out['lost']} of 300 echoes" in out["error"]
    assert positive(out["msgs_per_s"])

    # a full window of lost echoes is given up after --timeout, and the run goes on
    r = cli("bench", server.addr, "--count", "300", "--size", "64", "--window", "50", "--pings", "0",
            "--timeout", "0.5")
    assert r.returncode == 1
    assert "; 0 lost" not in r.stdout.splitlines()[1]
    assert r.stderr.startswith("smsgnet bench: lost ")


def without_uvloop(cli, tmp_path: Path):
    """The ``cli`` runner with a uvloop package that cannot be imported first on the path."""
    fake = tmp_path / "no-uvloop" / "uvloop"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('uvloop hidden by the test')\n")
    path = os.pathsep.join(p for p in (str(fake.parent), cli.env.get("PYTHONPATH", "")) if p)
    return type(cli)(dict(cli.env, PYTHONPATH=path))


def test_loop_uvloop_without_uvloop_is_a_usage_error_naming_the_extra(cli, tmp_path):
    run = without_uvloop(cli, tmp_path)
    for command in (["bench", "127.0.0.1:9"], ["serve", "--listen", "127.0.0.1:0"]):
        r = run(*command, "--loop", "uvloop")
        assert r.returncode == 2, r.stderr
        assert "uvloop is not installed: pip install 'smsgnet[uvloop]'" in r.stderr
        assert r.stderr.startswith(f"smsgnet {command[0]}: error: argument --loop")
    r = run("bench", "127.0.0.1:9", "--loop", "trio")
    assert r.returncode == 2 and "invalid choice: 'trio'" in r.stderr


def test_without_uvloop_the_default_is_asyncio(serve, cli, tmp_path):
    server = serve("--echo", "--rate-limit", "off")
    run = without_uvloop(cli, tmp_path)
    r = run("bench", server.addr, "--count", "20", "--pings", "2", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["loop"] == "asyncio"


@pytest.mark.parametrize("args", [["--window", "-1"], ["--count", "0"], ["--size", "0"], ["--pings", "x"]])
def test_bad_numbers_are_usage_errors(cli, args):
    r = cli("bench", "127.0.0.1:9", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("smsgnet bench: error: argument ")
