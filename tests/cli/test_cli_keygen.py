"""smsgnet keygen, the state directory, and loading identities."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from smsgnet import NodeManager
from smsgnet.cli import default_state_dir


def test_keygen_creates_an_identity_and_prints_it(cli, tmp_path):
    state = tmp_path / "node"
    r = cli("keygen", "--state", str(state), "--name", "worker-1", "--role", "worker")
    assert r.returncode == 0, r.stderr
    node = NodeManager.load(state)
    assert f"id          {node.node_id}" in r.stdout
    assert f"public key  {node.identity.public_key}" in r.stdout
    assert node.identity.name == "worker-1" and node.identity.role == "worker"
    assert stat.S_IMODE((state / "private.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_keygen_json(cli, tmp_path):
    state = tmp_path / "node"
    r = cli("keygen", "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    node = NodeManager.load(state)
    assert out == {**node.identity.to_dict(), "stateDir": str(state)}
    assert out["role"] == "dual"


def test_keygen_refuses_to_overwrite_then_force_replaces(cli, tmp_path):
    state = tmp_path / "node"
    first = json.loads(cli("keygen", "--state", str(state), "--json").stdout)
    again = cli("keygen", "--state", str(state))
    assert again.returncode == 1
    assert again.stdout == ""
    err = again.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("smsgnet keygen: an identity already exists in ")
    assert first["id"] in err and "--force" in err
    assert NodeManager.load(state).node_id == first["id"]  # untouched

    forced = cli("keygen", "--state", str(state), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    second = json.loads(forced.stdout)
    assert second["id"] != first["id"]
    assert NodeManager.load(state).node_id == second["id"]


def test_keygen_default_state_dir_follows_the_environment(cli, cli_env, tmp_path):
    r = cli("keygen", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stateDir"] == cli_env["SMSGNET_STATE"]
    assert NodeManager.exists(cli_env["SMSGNET_STATE"])

    del cli_env["SMSGNET_STATE"]  # then $XDG_DATA_HOME/smsgnet
    r = cli("keygen", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stateDir"] == str(Path(cli_env["XDG_DATA_HOME"]) / "smsgnet")


def test_default_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SMSGNET_STATE", str(tmp_path / "s"))
    assert default_state_dir() == tmp_path / "s"
    monkeypatch.delenv("SMSGNET_STATE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "smsgnet"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec says: ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "share" / "smsgnet"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_state_dir() == tmp_path / "home" / ".local" / "share" / "smsgnet"


def test_keygen_bad_role_is_a_usage_error(cli, tmp_path):
    r = cli("keygen", "--state", str(tmp_path / "n"), "--role", "boss")
    assert r.returncode == 2
    assert "invalid choice: 'boss'" in r.stderr
    assert not (tmp_path / "n").exists()


def test_unreadable_identity_is_a_one_line_failure(cli, tmp_path):
    state = tmp_path / "broken"
    cli("keygen", "--state", str(state))
    (state / "private.key").write_bytes(b"short")
    for args in (["serve", "--listen", "127.0.0.1:0"], ["ping", "127.0.0.1:9", "--count", "1"]):
        r = cli(*args, "--state", str(state), timeout=30)
        assert r.returncode == 1, r.stdout
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1
        assert err.startswith(f"smsgnet {args[0]}: cannot use identity: ")
        assert "32 bytes" in err


def test_keygen_into_an_unwritable_place_fails_cleanly(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = cli("keygen", "--state", str(blocker / "sub"))
    assert r.returncode == 1
    assert r.stderr.startswith("smsgnet keygen: ")
    assert "Traceback" not in r.stderr
