"""PeerRegistry: who may connect (the seed's open/allowlist rule), known peers,
and the JSON file that keeps them, rewritten atomically."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from smsgnet import AuthMode, NodeIdentity, NodeManager, Peer, PeerRegistry, RegistryError


def node(seed: int, name: str = "", role: str = "worker") -> NodeManager:
    return NodeManager.from_private_key(bytes([seed]) * 32, name or f"n{seed}", role, "2025-01-01T00:00:00Z")


A, B, C = node(1, "a"), node(2, "b"), node(3, "c")


def key(n: NodeManager) -> str:
    return n.identity.public_key


# ---------------------------------------------------------------------------
# the seed's rule


def test_default_mode_is_open():
    assert PeerRegistry().auth_mode is AuthMode.OPEN


def test_open_mode_lets_anyone_in():
    r = PeerRegistry()
    assert r.is_allowed(A.node_id, key(A))
    assert r.is_allowed("whatever", "whatever")


def test_allowlist_refuses_an_unknown_peer():
    r = PeerRegistry(auth_mode="allowlist")
    assert not r.is_allowed(A.node_id, key(A))


def test_allowlist_admits_an_allowed_key():
    r = PeerRegistry(auth_mode=AuthMode.ALLOWLIST)
    r.allow_key(key(A))
    assert r.is_allowed(A.node_id, key(A))
    assert not r.is_allowed(B.node_id, key(B))
    assert r.allowed_keys == frozenset({key(A)})


def test_allowlist_admits_a_registered_peer_with_the_same_key():
    r = PeerRegistry(auth_mode="allowlist")
    r.add(Peer.from_identity(A.identity))
    assert r.is_allowed(A.node_id, key(A))


def test_allowlist_refuses_a_registered_id_presenting_another_key():
    r = PeerRegistry(auth_mode="allowlist")
    r.add(Peer.from_identity(A.identity))
    assert not r.is_allowed(A.node_id, key(B))


def test_allowlist_refuses_a_registered_key_under_another_id():
    r = PeerRegistry(auth_mode="allowlist")
    r.add(Peer.from_identity(A.identity))
    assert not r.is_allowed(B.node_id, key(A))


def test_revoke_key_removes_it_from_the_allowlist():
    r = PeerRegistry(auth_mode="allowlist")
    r.allow_key(key(A))
    r.revoke_key(key(A))
    assert not r.is_allowed(A.node_id, key(A))
    r.revoke_key(key(A))  # revoking twice is harmless
    assert r.allowed_keys == frozenset()


def test_revoke_key_leaves_a_registered_peer_registered():
    r = PeerRegistry(auth_mode="allowlist")
    r.add(Peer.from_identity(A.identity))
    r.allow_key(key(A))
    r.revoke_key(key(A))
    assert A.node_id in r
    assert r.is_allowed(A.node_id, key(A))


def test_unknown_auth_mode_is_a_registry_error():
    with pytest.raises(RegistryError, match="auth_mode"):
        PeerRegistry(auth_mode="closed")


# ---------------------------------------------------------------------------
# peers


def test_add_get_remove_and_iterate():
    r = PeerRegistry()
    pa = r.add(Peer.from_identity(A.identity, "127.0.0.1:9091"))
    r.add(Peer.from_identity(B.identity))
    assert r.get(A.node_id) is pa and pa.address == "127.0.0.1:9091"
    assert len(r) == 2 and {p.id for p in r} == {A.node_id, B.node_id} == {p.id for p in r.peers()}
    assert A.node_id in r and C.node_id not in r
    assert r.find_by_key(key(B)).id == B.node_id
    assert r.find_by_key(key(C)) is None
    assert r.remove(A.node_id) is True
    assert r.remove(A.node_id) is False
    assert r.get(A.node_id) is None and len(r) == 1


def test_a_peer_without_id_cannot_be_registered():
    with pytest.raises(RegistryError):
        PeerRegistry().add(Peer.at("10.0.0.1:9091"))


def test_peer_from_identity_copies_the_public_fields():
    p = Peer.from_identity(A.identity, "h:1")
    assert (p.id, p.name, p.public_key, p.role, p.address) == (A.node_id, "a", key(A), "worker", "h:1")
    assert p.connected is False and p.last_seen is None and p.ping_ms is None


def test_peer_dict_round_trip_ignores_unknown_keys():
    p = Peer.from_identity(A.identity, "h:1")
    assert Peer.from_dict({**p.to_dict(), "futureField": 1}) == p


# ---------------------------------------------------------------------------
# transport callbacks


def test_mark_connected_registers_a_new_peer_as_connected():
    r = PeerRegistry()
    before = time.time()
    p = r.mark_connected(A.identity, "10.0.0.1:5000")
    assert r.get(A.node_id) is p
    assert p.connected is True and p.address == "10.0.0.1:5000"
    assert p.last_seen is not None and p.last_seen >= before
    assert (p.name, p.role, p.public_key) == ("a", "worker", key(A))


def test_mark_connected_updates_a_known_peer_and_keeps_its_address_when_none_given():
    r = PeerRegistry()
    known = r.add(Peer.from_identity(A.identity, "10.0.0.1:9091"))
    known.score = 90.0
    renamed = NodeIdentity(A.node_id, "alice-2", key(A), A.identity.created_at, "dual")
    p = r.mark_connected(renamed)
    assert p is known
    assert (p.name, p.role, p.address, p.score, p.connected) == ("alice-2", "dual", "10.0.0.1:9091", 90.0, True)


def test_mark_connected_replaces_a_record_with_another_key():
    r = PeerRegistry()
    stale = Peer(id=A.node_id, public_key=key(B), name="impostor", score=99.0)
    r.add(stale)
    p = r.mark_connected(A.identity)
    assert p is not stale and p.public_key == key(A) and p.name == "a" and p.score == 50.0


def test_mark_disconnected_clears_connected_and_updates_last_seen():
    r = PeerRegistry()
    r.mark_connected(A.identity)
    r.get(A.node_id).last_seen = 0.0
    r.mark_disconnected(A.node_id)
    p = r.get(A.node_id)
    assert p.connected is False and p.last_seen > 0.0
    r.mark_disconnected(A.node_id)  # again: no change, no error
    r.mark_disconnected("unknown")


def test_record_ping_stores_the_round_trip():
    r = PeerRegistry()
    r.mark_connected(A.identity)
    r.get(A.node_id).last_seen = 0.0
    r.record_ping(A.node_id, 12.5)
    assert r.get(A.node_id).ping_ms == 12.5 and r.get(A.node_id).last_seen > 0.0
    r.record_ping("unknown", 1.0)  # ignored


# ---------------------------------------------------------------------------
# persistence


def test_state_survives_a_round_trip_through_the_file(tmp_path):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path, auth_mode="allowlist")
    r.add(Peer.from_identity(A.identity, "10.0.0.1:9091"))
    r.allow_key(key(B))
    r.mark_connected(C.identity, "10.0.0.3:1")
    r.record_ping(C.node_id, 7.0)
    r.save()

    again = PeerRegistry(path, auth_mode="allowlist")
    assert again.allowed_keys == frozenset({key(B)})
    assert {p.id for p in again} == {A.node_id, C.node_id}
    for p in r:
        q = again.get(p.id)
        assert q.to_dict() == {**p.to_dict(), "connected": False}
    assert again.is_allowed(A.node_id, key(A)) and again.is_allowed(B.node_id, key(B))
    assert not again.is_allowed(A.node_id, key(C))


def test_every_change_is_written_at_once(tmp_path):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    r.allow_key(key(A))
    assert key(A) in PeerRegistry(path).allowed_keys
    r.add(Peer.from_identity(B.identity))
    assert B.node_id in PeerRegistry(path)
    r.remove(B.node_id)
    assert B.node_id not in PeerRegistry(path)
    r.revoke_key(key(A))
    assert PeerRegistry(path).allowed_keys == frozenset()


def test_the_file_is_private_and_connected_is_never_persisted(tmp_path):
    path = tmp_path / "sub" / "peers.json"
    r = PeerRegistry(path)
    r.mark_connected(A.identity)
    assert os.stat(path).st_mode & 0o777 == 0o600
    data = orjson.loads(path.read_bytes())
    assert data["peers"][0]["connected"] is False
    assert r.get(A.node_id).connected is True


def test_no_file_is_written_without_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = PeerRegistry()
    r.add(Peer.from_identity(A.identity))
    r.allow_key(key(A))
    assert os.listdir(tmp_path) == []


def test_a_missing_file_starts_empty(tmp_path):
    r = PeerRegistry(tmp_path / "none.json")
    assert len(r) == 0 and r.allowed_keys == frozenset()
    assert not (tmp_path / "none.json").exists()


def test_a_crash_during_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    r.add(Peer.from_identity(A.identity))
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RegistryError, match="power cut"):
        r.add(Peer.from_identity(B.identity))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["peers.json"]
    assert {p.id for p in PeerRegistry(path)} == {A.node_id}


def test_a_crash_during_the_first_save_leaves_no_file_at_all(tmp_path, monkeypatch):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(RegistryError):
        r.allow_key(key(A))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_save_leaves_no_temporary_files_behind(tmp_path):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    for n in (A, B, C):
        r.mark_connected(n.identity)
        r.allow_key(key(n))
    assert os.listdir(tmp_path) == ["peers.json"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"not json", b"[]", b"42", b'"s"', b'{"peers":[1]}', b'{"peers":"abc"}', b'{"peers":{"a":1}}',
     b'{"allowedKeys":5}', b"\xff\xfe", b'{"peers":[{"id":["x"]}]}', b'{"peers":[{"id":{"a":1}}]}'],
)
def test_a_corrupt_file_is_a_registry_error(tmp_path, content):
    path = tmp_path / "peers.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError):
        PeerRegistry(path)


def test_an_unreadable_file_is_a_registry_error(tmp_path):
    (tmp_path / "peers.json").mkdir()
    with pytest.raises(RegistryError):
        PeerRegistry(tmp_path / "peers.json")


def test_peers_without_id_and_non_string_keys_in_the_file_are_skipped(tmp_path):
    path = tmp_path / "peers.json"
    path.write_bytes(orjson.dumps({
        "authMode": "open",
        "allowedKeys": ["k1", 5, None],
        "peers": [{"name": "no id"}, Peer.from_identity(A.identity).to_dict()],
    }))
    r = PeerRegistry(path)
    assert r.allowed_keys == frozenset({"k1"})
    assert [p.id for p in r] == [A.node_id]


def test_reconnects_do_not_rewrite_the_file(tmp_path, monkeypatch):
    path = tmp_path / "peers.json"
    r = PeerRegistry(path)
    r.mark_connected(A.identity, "127.0.0.1:1")  # a new peer: written
    writes = []
    monkeypatch.setattr(r, "save", lambda: writes.append(1))
    for _ in range(5):
        r.mark_disconnected(A.node_id)
        r.mark_connected(A.identity, "127.0.0.1:1")
    assert writes == []
    r.mark_connected(A.identity, "127.0.0.1:2")  # the address changed: written
    assert writes == [1]
