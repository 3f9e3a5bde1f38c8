"""smsgnet send --payload: inline JSON, @FILE and - (stdin), and the usage errors of each."""

from __future__ import annotations

import json

import pytest


def big_payload(kib: int) -> dict[str, object]:
    """A JSON object of about ``kib`` KiB: past what one argument on a command line may hold."""
    return {"rows": [{"i": i, "text": "x" * 100} for i in range(kib * 1024 // 120)]}


def test_payload_from_a_file_larger_than_an_argument_can_be(serve, cli, tmp_path):
    server = serve("--echo")
    payload = big_payload(300)  # Linux caps one argv string at 128 KiB
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    assert path.stat().st_size > 128 * 1024
    r = cli("send", server.addr, "--type", "bulk", "--payload", f"@{path}", "--wait-reply", "10")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == payload


def test_payload_from_stdin(serve, cli):
    server = serve("--echo")
    r = cli("send", server.addr, "--type", "hello", "--payload", "-", "--wait-reply", "5",
            input='{"from": "stdin", "n": [1, 2.5, null]}\n')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"from": "stdin", "n": [1, 2.5, None]}
    # -p - works for any JSON value, and the sent message carries it
    r = cli("send", server.addr, "--type", "note", "-p", "-", "--json", input='"just a string"')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["payload"] == "just a string"


@pytest.mark.parametrize("args, message", [
    (["--payload", "@{missing}"], "argument --payload/-p: cannot read {missing}: No such file or directory"),
    (["--payload", "@{bad}"], "argument --payload/-p: invalid JSON in {bad}: "),
    (["--payload", "@{tmp}"], "argument --payload/-p: cannot read {tmp}: Is a directory"),
    (["--payload", "@"], "argument --payload/-p: '@' needs a file name: @FILE"),
    (["--payload", "-"], "argument --payload/-p: invalid JSON on stdin: "),
    (["--payload", "[1,]"], "argument --payload/-p: invalid JSON: "),
])
def test_payload_usage_errors_name_the_file_and_exit_2(cli, tmp_path, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": nope\n}\n')
    names = {"missing": tmp_path / "missing.json", "bad": bad, "tmp": tmp_path}
    args = [a.format(**names) for a in args]
    r = cli("send", "127.0.0.1:9", "--type", "x", *args, input="{oops")
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("smsgnet send: error: ")
    assert message.format(**names) in err
    assert r.stdout == ""


def test_invalid_json_says_where(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": nope\n}\n')
    r = cli("send", "127.0.0.1:9", "--type", "x", "--payload", f"@{bad}")
    assert r.returncode == 2
    assert "line 3 column 8" in r.stderr  # where "nope" starts
