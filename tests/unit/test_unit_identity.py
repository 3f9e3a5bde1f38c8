"""Node identity (PROTOCOL.md §1): key pair, node ID, identity JSON, and the
state directory that keeps them (private.key 0600 + identity.json, dir 0700)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import orjson
import pytest

from smsgnet import IdentityError, InvalidKeyError, NodeIdentity, NodeManager, NodeRole
from smsgnet.identity import IDENTITY_FILE, IDENTITY_LIMITS, PRIVATE_KEY_FILE

h = bytes.fromhex


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def from_case(case) -> NodeManager:
    ident = case["node_identity"]
    return NodeManager.from_private_key(h(case["private_key_hex"]), ident["name"], ident["role"], ident["createdAt"])


# ---------------------------------------------------------------------------
# identity.json vectors


@pytest.mark.vectors("identity.json")
def test_identity_json_is_the_references_byte_for_byte(case):
    node = from_case(case)
    assert node.identity.to_json() == case["node_identity_json"].encode("utf-8")


@pytest.mark.vectors("identity.json")
def test_node_id_is_the_first_16_bytes_of_sha256_of_the_public_key(case):
    node = from_case(case)
    assert node.public_key.hex() == case["public_key_hex"]
    assert node.identity.public_key == case["public_key_b64"]
    assert node.node_id == case["node_id"] == hashlib.sha256(node.public_key).digest()[:16].hex()
    assert node.private_key == h(case["private_key_hex"])


@pytest.mark.vectors("identity.json")
def test_reference_identity_verifies_and_parses_back(case):
    parsed = NodeIdentity.from_dict(json.loads(case["node_identity_json"]))
    assert parsed == from_case(case).identity
    assert parsed.verify() == h(case["public_key_hex"])
    assert parsed.public_key_bytes == h(case["public_key_hex"])


@pytest.mark.vectors("identity.json")
def test_identity_keys_are_in_wire_order(case):
    keys = list(json.loads(from_case(case).identity.to_json(), object_pairs_hook=lambda p: [k for k, _ in p]))
    assert keys == ["id", "name", "publicKey", "createdAt", "role"]


# ---------------------------------------------------------------------------
# NodeIdentity.verify: id == hash(key), key is 32 bytes of strict standard base64


@pytest.fixture
def alice(vectors) -> NodeManager:
    return from_case(vectors("identity.json")["rfc7748_alice"])


@pytest.fixture
def bob(vectors) -> NodeManager:
    return from_case(vectors("identity.json")["rfc7748_bob"])


def test_verify_refuses_an_id_that_is_not_the_hash_of_the_key(alice, bob):
    forged = NodeIdentity(bob.node_id, "x", alice.identity.public_key, "", "dual")
    with pytest.raises(InvalidKeyError, match="does not match"):
        forged.verify()


def test_verify_refuses_an_uppercase_id(alice):
    i = alice.identity
    with pytest.raises(InvalidKeyError):
        NodeIdentity(i.id.upper(), i.name, i.public_key, i.created_at, i.role).verify()


@pytest.mark.parametrize(
    "public_key",
    ["not base64!", "", "AAAA", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"],
    ids=["junk", "empty", "three-bytes", "no-padding", "newline"],
)
def test_verify_refuses_bad_base64(public_key):
    with pytest.raises(InvalidKeyError):
        NodeIdentity("00" * 16, "", public_key, "", "dual").verify()


def test_verify_refuses_url_safe_base64():
    raw = bytes(range(0xE0, 0x100))  # encodes with '+' and '/' in the standard alphabet
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    assert std != url
    node_id = hashlib.sha256(raw).digest()[:16].hex()
    assert NodeIdentity(node_id, "", std, "", "dual").verify() == raw
    with pytest.raises(InvalidKeyError):
        NodeIdentity(node_id, "", url, "", "dual").verify()


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_verify_refuses_keys_that_are_not_32_bytes(length):
    raw = b"\x07" * length
    node_id = hashlib.sha256(raw).digest()[:16].hex()
    with pytest.raises(InvalidKeyError, match="32"):
        NodeIdentity(node_id, "", base64.b64encode(raw).decode(), "", "dual").verify()


def test_identity_from_dict_accepts_missing_and_null_fields_as_empty():
    i = NodeIdentity.from_dict({"id": "x", "name": None})
    assert (i.id, i.name, i.public_key, i.created_at, i.role) == ("x", "", "", "", "")


@pytest.mark.parametrize("obj", [None, [], "id", 3])
def test_identity_from_dict_refuses_non_objects(obj):
    with pytest.raises(ValueError):
        NodeIdentity.from_dict(obj)


@pytest.mark.parametrize("key", ["id", "name", "publicKey", "createdAt", "role"])
def test_identity_from_dict_refuses_non_string_fields(key):
    with pytest.raises(ValueError, match=key):
        NodeIdentity.from_dict({key: 1})


# ---------------------------------------------------------------------------
# field limits and the control character rule (issue 8: a 900 KiB name was accepted and saved)

VALID = {"id": "0" * 32, "name": "n", "publicKey": "A" * 43 + "=", "createdAt": "2025-01-01T00:00:00Z", "role": "dual"}


def ident(**changes: str) -> NodeIdentity:
    return NodeIdentity.from_dict({**VALID, **changes})


@pytest.mark.vectors("identity.json")
def test_the_reference_identities_are_within_the_limits(case):
    NodeIdentity.from_dict(json.loads(case["node_identity_json"])).check_fields()


def test_the_limits_are_the_documented_ones():
    assert dict(IDENTITY_LIMITS) == {"id": 32, "name": 256, "publicKey": 44, "createdAt": 64, "role": 64}


@pytest.mark.parametrize("key", ["id", "name", "publicKey", "createdAt", "role"])
def test_a_field_at_its_limit_passes_and_one_character_more_is_refused_by_name(key):
    limit = IDENTITY_LIMITS[key]
    ident(**{key: "a" * limit}).check_fields()
    with pytest.raises(ValueError, match=rf"^identity field {key} too long \(max {limit}\)$"):
        ident(**{key: "a" * (limit + 1)}).check_fields()


def test_a_900_kib_name_is_refused():
    with pytest.raises(ValueError, match="name too long"):
        ident(name="x" * 900 * 1024).check_fields()


@pytest.mark.parametrize("key", ["id", "name", "publicKey", "createdAt", "role"])
@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"], ids=repr)
def test_a_control_character_in_any_field_is_refused(key, char):
    with pytest.raises(ValueError, match=rf"^identity field {key} holds a control character$"):
        ident(**{key: "ab" + char + "cd"}).check_fields()


@pytest.mark.parametrize("name", ["Zoë", "東京 node", "🚀", "tab-less name with spaces", "\u202ertl", "a\\b"])
def test_other_characters_are_allowed_in_a_name(name):
    ident(name=name).check_fields()


def test_this_node_cannot_be_given_a_name_its_peers_would_refuse():
    NodeManager.generate("n" * 256)
    with pytest.raises(IdentityError, match="name too long"):
        NodeManager.generate("n" * 257)
    with pytest.raises(IdentityError, match="control character"):
        NodeManager.from_private_key(b"\x01" * 32, "two\nlines")
    with pytest.raises(IdentityError, match="createdAt too long"):
        NodeManager.from_private_key(b"\x01" * 32, "n", created_at="2" * 65)


def test_an_identity_file_with_an_oversized_name_does_not_load(tmp_path, alice):
    alice.save(tmp_path)
    obj = orjson.loads((tmp_path / IDENTITY_FILE).read_bytes())
    (tmp_path / IDENTITY_FILE).write_bytes(orjson.dumps({**obj, "name": "x" * 300}))
    with pytest.raises(IdentityError, match="name too long"):
        NodeManager.load(tmp_path)


# ---------------------------------------------------------------------------
# in-memory construction


@pytest.mark.parametrize("length", [0, 31, 33])
def test_private_key_must_be_32_bytes(length):
    with pytest.raises(InvalidKeyError):
        NodeManager.from_private_key(b"\x01" * length)


def test_manager_refuses_an_identity_of_another_key(alice, bob):
    with pytest.raises(IdentityError):
        NodeManager(alice.private_key, bob.identity)
    i = alice.identity
    with pytest.raises(IdentityError):
        NodeManager(alice.private_key, NodeIdentity(bob.node_id, i.name, i.public_key, i.created_at, i.role))


def test_generate_in_memory_gives_a_fresh_consistent_identity():
    a = NodeManager.generate("a", "worker")
    b = NodeManager.generate("b")
    assert a.node_id != b.node_id
    assert a.identity.verify() == a.public_key
    assert (a.identity.name, a.identity.role, b.identity.role) == ("a", "worker", "dual")
    assert len(a.private_key) == 32 and a.state_dir is None


def test_generate_refuses_an_unknown_role():
    with pytest.raises(IdentityError, match="role"):
        NodeManager.generate("x", "boss")


def test_roles_are_the_protocols():
    assert {str(r) for r in NodeRole} == {"controller", "worker", "dual"}


def test_shared_secret_is_the_same_both_ways(vectors, alice, bob):
    ecdh = vectors("ecdh.json")
    expected = next(c for c in ecdh.values() if c["x25519_raw_hex"].startswith("4a5d9d5b"))["shared_secret_hex"]
    assert alice.derive_shared_secret(bob.public_key) == bob.derive_shared_secret(alice.public_key) == h(expected)


def test_shared_secret_refuses_a_low_order_key(alice):
    with pytest.raises(InvalidKeyError):
        alice.derive_shared_secret(bytes(32))


def test_repr_shows_the_id_but_never_the_private_key(alice):
    r = repr(alice)
    assert alice.node_id in r
    assert alice.private_key.hex() not in r and base64.b64encode(alice.private_key).decode() not in r


# ---------------------------------------------------------------------------
# the state directory


def test_generate_saves_a_private_key_file_0600_in_a_0700_directory(tmp_path):
    d = tmp_path / "state"
    node = NodeManager.generate("n", "worker", d)
    assert mode(d) == 0o700
    assert mode(d / PRIVATE_KEY_FILE) == 0o600
    assert (d / PRIVATE_KEY_FILE).read_bytes() == node.private_key
    assert len((d / PRIVATE_KEY_FILE).read_bytes()) == 32
    assert NodeIdentity.from_dict(orjson.loads((d / IDENTITY_FILE).read_bytes())) == node.identity
    assert node.state_dir == d


def test_save_leaves_only_the_two_files_behind(tmp_path):
    NodeManager.generate("n", state_dir=tmp_path / "s")
    assert sorted(os.listdir(tmp_path / "s")) == [IDENTITY_FILE, PRIVATE_KEY_FILE]
    NodeManager.generate("m", state_dir=tmp_path / "s", overwrite=True)
    assert sorted(os.listdir(tmp_path / "s")) == [IDENTITY_FILE, PRIVATE_KEY_FILE]


def test_save_tightens_an_existing_directory_to_0700(tmp_path):
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    NodeManager.generate(state_dir=d)
    assert mode(d) == 0o700


def test_load_gives_back_the_saved_identity(tmp_path, alice):
    alice.save(tmp_path / "a")
    loaded = NodeManager.load(tmp_path / "a")
    assert loaded.identity == alice.identity
    assert loaded.private_key == alice.private_key
    assert loaded.state_dir == tmp_path / "a"


def test_generate_refuses_to_overwrite_an_existing_identity(tmp_path):
    first = NodeManager.generate("first", state_dir=tmp_path)
    with pytest.raises(IdentityError, match="already exists"):
        NodeManager.generate("second", state_dir=tmp_path)
    assert NodeManager.load(tmp_path).node_id == first.node_id
    second = NodeManager.generate("second", state_dir=tmp_path, overwrite=True)
    assert NodeManager.load(tmp_path).node_id == second.node_id != first.node_id


def test_save_refuses_to_overwrite_without_overwrite(tmp_path, alice, bob):
    alice.save(tmp_path)
    with pytest.raises(IdentityError):
        bob.save(tmp_path)
    assert NodeManager.load(tmp_path).node_id == alice.node_id


def test_load_or_generate_creates_once_then_loads(tmp_path):
    d = tmp_path / "node"
    assert not NodeManager.exists(d)
    created = NodeManager.load_or_generate(d, "n", "controller")
    assert NodeManager.exists(d)
    again = NodeManager.load_or_generate(d, "other-name", "worker")
    assert again.identity == created.identity
    assert again.identity.role == "controller"


def test_load_of_a_missing_directory_is_an_identity_error(tmp_path):
    with pytest.raises(IdentityError, match="missing"):
        NodeManager.load(tmp_path / "nowhere")


def test_load_without_identity_json_is_an_identity_error(tmp_path, alice):
    alice.save(tmp_path)
    (tmp_path / IDENTITY_FILE).unlink()
    with pytest.raises(IdentityError):
        NodeManager.load(tmp_path)


def test_load_without_private_key_is_an_identity_error(tmp_path, alice):
    alice.save(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).unlink()
    with pytest.raises(IdentityError):
        NodeManager.load(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x01" * 31, b"\x01" * 33, b"\x01" * 64], ids=["empty", "31", "33", "64"])
def test_load_of_a_key_file_that_is_not_32_bytes_is_an_identity_error(tmp_path, alice, content):
    alice.save(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(content)
    with pytest.raises(IdentityError, match="32"):
        NodeManager.load(tmp_path)


@pytest.mark.parametrize(
    "content", [b"", b"{", b"not json", b"[]", b'"text"', b'{"id":5}'], ids=["empty", "truncated", "junk", "array",
                                                                            "string", "bad-type"]
)
def test_load_of_a_corrupt_identity_json_is_an_identity_error(tmp_path, alice, content):
    alice.save(tmp_path)
    (tmp_path / IDENTITY_FILE).write_bytes(content)
    with pytest.raises(IdentityError):
        NodeManager.load(tmp_path)


def test_load_detects_a_key_that_does_not_match_the_identity(tmp_path, alice, bob):
    alice.save(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(bob.private_key)
    with pytest.raises(IdentityError, match="does not match"):
        NodeManager.load(tmp_path)


def test_load_detects_an_identity_whose_id_was_edited(tmp_path, alice, bob):
    alice.save(tmp_path)
    obj = orjson.loads((tmp_path / IDENTITY_FILE).read_bytes())
    obj["id"] = bob.node_id
    (tmp_path / IDENTITY_FILE).write_bytes(orjson.dumps(obj))
    with pytest.raises(IdentityError):
        NodeManager.load(tmp_path)


def test_load_of_an_unreadable_key_is_an_identity_error(tmp_path, alice):
    alice.save(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).unlink()
    (tmp_path / PRIVATE_KEY_FILE).mkdir()
    with pytest.raises(IdentityError):
        NodeManager.load(tmp_path)


def test_failed_write_leaves_the_old_identity_and_no_temporary_file(tmp_path, alice, bob, monkeypatch):
    alice.save(tmp_path)

    def crash(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        bob.save(tmp_path, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [IDENTITY_FILE, PRIVATE_KEY_FILE]
    assert NodeManager.load(tmp_path).identity == alice.identity
