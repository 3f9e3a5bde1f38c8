"""The handshake (PROTOCOL.md §5), sans I/O: two in-memory nodes, bytes in and out.

The transcript in ``handshake_transcript.json`` is replayed step by step: our
initiator's hello is the reference's byte for byte, our responder's ack carries
the reference's payload, and the secret they agree on opens and re-seals the
reference's first encrypted frames exactly.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgnet import (
    HandshakeError,
    HandshakeRefused,
    HandshakeResult,
    Initiator,
    Message,
    NodeManager,
    Peer,
    PeerAuthenticationError,
    PeerRegistry,
    ProtocolError,
    Responder,
    SmsgnetError,
)
from smsgnet import _core
from smsgnet.handshake import PROTOCOL_VERSION, REASON_LIMIT, SUPPORTED_VERSIONS
from smsgnet.identity import IDENTITY_LIMITS

h = bytes.fromhex
NONCE = slice(9 + 48, 9 + 48 + 24)  # "SMSG", version byte, header length, 48-byte header, then the nonce


@pytest.fixture(scope="module")
def transcript(vectors):
    return vectors("handshake_transcript.json")["alice_to_bob"]


def node_from(keys: dict, identity: dict) -> NodeManager:
    return NodeManager.from_private_key(
        h(keys["private_key_hex"]), identity["name"], identity["role"], identity["createdAt"]
    )


@pytest.fixture(scope="module")
def alice(transcript) -> NodeManager:
    return node_from(transcript["initiator"], transcript["initiator_identity"])


@pytest.fixture(scope="module")
def bob(transcript) -> NodeManager:
    return node_from(transcript["responder"], transcript["responder_identity"])


@pytest.fixture(scope="module")
def carol() -> NodeManager:
    return NodeManager.from_private_key(b"\x42" * 32, "carol", "dual", "2025-01-01T00:00:00Z")


def step(transcript, n: int) -> dict:
    return next(s for s in transcript["steps"] if s["step"] == n)


def transcript_initiator(transcript, alice) -> Initiator:
    hello = Message.from_json(h(step(transcript, 1)["message_json_hex"]))
    return Initiator(alice, challenge=h(transcript["challenge_hex"]), message_id=hello.id, ts=hello.ts)


def edit(data: bytes, change) -> bytes:
    """Parse a handshake message, let ``change`` edit the dict, serialise it again."""
    obj = orjson.loads(data)
    change(obj)
    return orjson.dumps(obj)


# ---------------------------------------------------------------------------
# the transcript, step by step


def test_step1_hello_is_the_references_bytes(transcript, alice):
    assert transcript_initiator(transcript, alice).hello() == h(step(transcript, 1)["message_json_hex"])


def test_step1_hello_is_a_handshake_with_identity_challenge_and_version(transcript, alice):
    msg = Message.from_json(transcript_initiator(transcript, alice).hello())
    assert (msg.type, msg.from_, msg.to, msg.reply_to) == ("handshake", alice.node_id, "", "")
    assert list(msg.payload) == ["identity", "challenge", "version"]
    assert msg.payload["identity"] == transcript["initiator_identity"]
    assert msg.payload["challenge"] == transcript["challenge_b64"]
    assert msg.payload["version"] == PROTOCOL_VERSION == "1.0"


def test_step2_and_3_responder_answers_with_the_references_ack(transcript, bob):
    ack, result = Responder(bob, PeerRegistry()).receive_hello(h(step(transcript, 1)["message_json_hex"]))
    reference = Message.from_json(h(step(transcript, 3)["message_json_hex"]))
    mine = Message.from_json(ack)
    assert mine.payload == reference.payload
    assert mine.payload["challengeResponse"] == step(transcript, 2)["challenge_response_b64"]
    assert (mine.type, mine.from_, mine.to, mine.reply_to) == ("handshake_ack", bob.node_id, reference.to, "")
    # id and ts are fresh; with the reference's id and ts it is the reference's bytes
    mine.id, mine.ts = reference.id, reference.ts
    assert mine.to_json() == h(step(transcript, 3)["message_json_hex"])
    assert isinstance(result, HandshakeResult)
    assert result.shared_secret == h(step(transcript, 2)["shared_secret_hex"])
    assert result.peer.to_dict() == transcript["initiator_identity"]
    assert result.peer_public_key == h(transcript["initiator"]["public_key_hex"])


def test_step4_initiator_accepts_the_references_ack(transcript, alice):
    result = transcript_initiator(transcript, alice).receive_ack(h(step(transcript, 3)["message_json_hex"]))
    assert result.shared_secret == h(step(transcript, 4)["shared_secret_hex"])
    assert result.peer.to_dict() == transcript["responder_identity"]
    assert result.peer_public_key == h(transcript["responder"]["public_key_hex"])


def test_step4_initiator_accepts_the_ack_as_text(transcript, alice):
    ack = step(transcript, 3)["message_json"]
    assert transcript_initiator(transcript, alice).receive_ack(ack).shared_secret == h(
        step(transcript, 4)["shared_secret_hex"]
    )


@pytest.mark.parametrize("n", [5, 6])
def test_steps_5_and_6_the_agreed_secret_opens_and_reseals_the_reference_frames(transcript, alice, bob, n):
    frame_case = step(transcript, n)["frame"]
    frame = h(frame_case["frame_hex"])
    secret = transcript_initiator(transcript, alice).receive_ack(h(step(transcript, 3)["message_json_hex"]))
    _, responder_side = Responder(bob, PeerRegistry()).receive_hello(h(step(transcript, 1)["message_json_hex"]))
    assert secret.shared_secret == responder_side.shared_secret
    cipher = _core.SmsgCipher(secret.shared_secret)
    message_json = h(frame_case["message_json_hex"])
    assert cipher.open(frame) == message_json
    assert frame[NONCE] == h(frame_case["nonce_hex"])
    assert cipher.seal(message_json, nonce=frame[NONCE], timestamp=frame_case["smsg_timestamp"]) == frame
    assert Message.from_json(message_json).to_json() == message_json


# ---------------------------------------------------------------------------
# success both ways with fresh nodes


def handshake(initiator: NodeManager, responder: NodeManager, registry: PeerRegistry | None = None):
    i = Initiator(initiator)
    ack, r_result = Responder(responder, registry or PeerRegistry()).receive_hello(i.hello())
    return i.receive_ack(ack), r_result


def test_both_sides_agree_on_the_secret_either_way():
    a, b = NodeManager.generate("a"), NodeManager.generate("b")
    ab_i, ab_r = handshake(a, b)
    ba_i, ba_r = handshake(b, a)
    assert ab_i.shared_secret == ab_r.shared_secret == ba_i.shared_secret == ba_r.shared_secret
    assert len(ab_i.shared_secret) == 32
    assert ab_i.peer == b.identity and ab_r.peer == a.identity


def test_each_hello_has_a_fresh_32_byte_challenge_and_id(alice):
    one, two = Initiator(alice), Initiator(alice)
    assert len(one.challenge) == 32 and one.challenge != two.challenge
    m1, m2 = Message.from_json(one.hello()), Message.from_json(two.hello())
    assert m1.id != m2.id
    assert base64.b64decode(m1.payload["challenge"]) == one.challenge


def test_the_responder_does_not_register_the_unproven_initiator(alice, bob):
    registry = PeerRegistry()
    _, result = Responder(bob, registry).receive_hello(Initiator(alice).hello())
    assert result is not None
    assert len(registry) == 0


def test_expected_key_and_id_of_the_right_node_are_accepted(alice, bob):
    i = Initiator(alice, expected_public_key=bob.public_key, expected_id=bob.node_id)
    ack, _ = Responder(bob, PeerRegistry()).receive_hello(i.hello())
    assert i.receive_ack(ack).peer.id == bob.node_id


# ---------------------------------------------------------------------------
# refusals by the responder


def test_another_version_is_refused_with_the_references_reason(transcript, alice, bob, vectors):
    hello = edit(h(step(transcript, 1)["message_json_hex"]), lambda o: o["payload"].update(version="2.0"))
    responder = Responder(bob, PeerRegistry())
    ack, result = responder.receive_hello(hello)
    assert result is None
    reason = "incompatible protocol version 2.0, supported: [1.0]"
    assert responder.refusal == reason
    msg = Message.from_json(ack)
    assert msg.payload == {"identity": bob.identity.to_dict(), "accepted": False, "reason": reason}
    reference = vectors("smsg_frames.json")["handshake_ack_rejected_version"]
    ref_msg = Message.from_json(h(reference["message_json_hex"]))
    msg.id, msg.ts = ref_msg.id, ref_msg.ts
    assert msg.to_json() == h(reference["message_json_hex"])
    with pytest.raises(HandshakeRefused) as e:
        transcript_initiator(transcript, alice).receive_ack(ack)
    assert e.value.reason == reason


def test_only_version_1_0_is_supported():
    assert SUPPORTED_VERSIONS == ("1.0",)


@pytest.mark.parametrize("version", ["1.1", "1", "", "1.0 "])
def test_any_other_version_string_is_refused(alice, bob, version):
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"].update(version=version))
    ack, result = Responder(bob, PeerRegistry()).receive_hello(hello)
    assert result is None
    assert orjson.loads(ack)["payload"]["reason"].startswith(f"incompatible protocol version {version},")


def test_allowlist_refuses_an_unknown_peer_with_the_references_reason(transcript, alice, bob, vectors):
    responder = Responder(bob, PeerRegistry(auth_mode="allowlist"))
    ack, result = responder.receive_hello(transcript_initiator(transcript, alice).hello())
    assert result is None and responder.refusal == "peer not authorized"
    reference = vectors("smsg_frames.json")["handshake_ack_rejected"]
    msg, ref_msg = Message.from_json(ack), Message.from_json(h(reference["message_json_hex"]))
    msg.id, msg.ts = ref_msg.id, ref_msg.ts
    assert msg.to_json() == h(reference["message_json_hex"])
    with pytest.raises(HandshakeRefused) as e:
        transcript_initiator(transcript, alice).receive_ack(ack)
    assert e.value.reason == "peer not authorized"


def test_allowlist_admits_an_allowed_key_and_a_registered_peer(alice, bob):
    registry = PeerRegistry(auth_mode="allowlist")
    registry.allow_key(alice.identity.public_key)
    assert Responder(bob, registry).receive_hello(Initiator(alice).hello())[1] is not None
    registry = PeerRegistry(auth_mode="allowlist")
    registry.add(Peer.from_identity(alice.identity))
    assert Responder(bob, registry).receive_hello(Initiator(alice).hello())[1] is not None


def test_allowlist_refuses_a_registered_id_with_another_key(alice, bob, carol):
    registry = PeerRegistry(auth_mode="allowlist")
    registry.add(Peer(id=alice.node_id, public_key=carol.identity.public_key))
    _, result = Responder(bob, registry).receive_hello(Initiator(alice).hello())
    assert result is None


def test_an_identity_whose_id_is_not_the_hash_of_its_key_is_refused(alice, bob, carol):
    forged = edit(Initiator(alice).hello(), lambda o: o["payload"]["identity"].update(id=carol.node_id))
    responder = Responder(bob, PeerRegistry())
    ack, result = responder.receive_hello(forged)
    assert result is None
    assert responder.refusal == "node ID does not match public key"
    assert orjson.loads(ack)["payload"]["accepted"] is False


def test_a_registered_id_cannot_be_claimed_with_another_key_even_when_that_key_is_allowed(alice, bob, carol):
    registry = PeerRegistry(auth_mode="allowlist")
    registry.add(Peer.from_identity(alice.identity))
    registry.allow_key(carol.identity.public_key)
    hello = edit(Initiator(carol).hello(), lambda o: o["payload"]["identity"].update(id=alice.node_id))
    assert Responder(bob, registry).receive_hello(hello)[1] is None


@pytest.mark.parametrize(
    "public_key", ["not base64", base64.b64encode(b"\x09" * 31).decode(), base64.urlsafe_b64encode(b"\xfb" * 32).decode()]
)
def test_a_bad_public_key_is_refused(alice, bob, public_key):
    raw = public_key.encode()
    node_id = hashlib.sha256(raw).digest()[:16].hex()

    def change(o):
        o["payload"]["identity"].update(publicKey=public_key, id=node_id)

    _, result = Responder(bob, PeerRegistry()).receive_hello(edit(Initiator(alice).hello(), change))
    assert result is None


def test_a_low_order_public_key_is_refused(alice, bob):
    zero = bytes(32)

    def change(o):
        o["payload"]["identity"].update(publicKey=base64.b64encode(zero).decode(), id=_core.node_id(zero))

    responder = Responder(bob, PeerRegistry())
    _, result = responder.receive_hello(edit(Initiator(alice).hello(), change))
    assert result is None and responder.refusal


def test_a_node_connecting_to_itself_is_refused(bob):
    responder = Responder(bob, PeerRegistry())
    _, result = responder.receive_hello(Initiator(bob).hello())
    assert result is None and responder.refusal == "cannot connect to self"


@pytest.mark.parametrize("challenge", ["", "not base64!", 5, None, base64.b64encode(b"x" * 1025).decode()])
def test_a_missing_or_bad_challenge_is_refused(alice, bob, challenge):
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"].update(challenge=challenge))
    responder = Responder(bob, PeerRegistry())
    _, result = responder.receive_hello(hello)
    assert result is None and responder.refusal == "invalid challenge"


# ---------------------------------------------------------------------------
# identity field limits (issue 8: a 900 KiB name was accepted, saved, and logged)

OVERSIZED = {"id": "0" * 1024 * 1024, "name": "x" * 900 * 1024, "publicKey": "A" * 100_000,
             "createdAt": "2" * 65, "role": "r" * 65}


@pytest.mark.parametrize("key", list(OVERSIZED))
def test_an_oversized_identity_field_is_refused_with_a_reason_the_initiator_sees(alice, bob, key):
    initiator = Initiator(alice)
    hello = edit(initiator.hello(), lambda o: o["payload"]["identity"].update({key: OVERSIZED[key]}))
    responder = Responder(bob, PeerRegistry())
    ack, result = responder.receive_hello(hello)
    reason = f"identity field {key} too long (max {IDENTITY_LIMITS[key]})"
    assert result is None and responder.refusal == reason and responder.peer is None
    assert len(ack) < 1024  # nothing of the oversized value is echoed back
    assert orjson.loads(ack)["to"] == ""
    with pytest.raises(HandshakeRefused) as e:
        initiator.receive_ack(ack)
    assert e.value.reason == reason


def test_a_name_at_the_limit_is_accepted(alice, bob):
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"]["identity"].update(name="n" * 256))
    assert Responder(bob, PeerRegistry()).receive_hello(hello)[1] is not None


def test_a_newline_in_the_id_is_refused_and_never_reaches_the_reason_or_the_ack(alice, bob):
    forged = alice.node_id[:8] + "\nCRITICAL forged"  # within 32 characters
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"]["identity"].update(id=forged))
    responder = Responder(bob, PeerRegistry())
    ack, result = responder.receive_hello(hello)
    assert result is None and responder.peer is None
    assert responder.refusal == "identity field id holds a control character"
    assert b"forged" not in ack


@pytest.mark.parametrize("char", ["\n", "\x1b", "\u2028"], ids=repr)
def test_a_control_character_in_the_name_is_refused(alice, bob, char):
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"]["identity"].update(name="a" + char + "b"))
    responder = Responder(bob, PeerRegistry())
    assert responder.receive_hello(hello)[1] is None
    assert responder.refusal == "identity field name holds a control character"


def test_a_huge_version_string_is_quoted_short_and_escaped_in_the_refusal(alice, bob):
    version = "9\n" * 500_000
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"].update(version=version))
    responder = Responder(bob, PeerRegistry())
    ack, result = responder.receive_hello(hello)
    assert result is None and len(ack) < 1024
    assert responder.refusal.startswith("incompatible protocol version 9\\n9\\n")
    assert "\n" not in responder.refusal and len(responder.refusal) <= REASON_LIMIT + 30


@pytest.mark.parametrize("version", ["\U0001f680" * 40, "é" * 200, "v\u2028" * 50], ids=["emoji", "accents", "U+2028"])
def test_the_refusal_is_ascii_and_fits_a_websocket_close_reason(alice, bob, version):
    hello = edit(Initiator(alice).hello(), lambda o: o["payload"].update(version=version))
    responder = Responder(bob, PeerRegistry())
    assert responder.receive_hello(hello)[1] is None
    assert responder.refusal.isascii() and len(responder.refusal.encode()) <= min(REASON_LIMIT, 123)
    assert responder.refusal.startswith("incompatible protocol version ")


def test_a_refused_hello_of_the_wrong_type_names_the_type_briefly(alice, bob):
    hello = edit(Initiator(alice).hello(), lambda o: o.update(type="t\n" * 500_000))
    with pytest.raises(ProtocolError) as e:
        Responder(bob, PeerRegistry()).receive_hello(hello)
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


@pytest.mark.parametrize(("key", "value"), [("name", "x" * 257), ("role", "r" * 65), ("createdAt", "c\n"),
                                            ("name", "a\x1bb")])
def test_an_ack_with_an_identity_field_beyond_the_limits_is_refused(transcript, alice, key, value):
    ack = edit(valid_ack(transcript), lambda o: o["payload"]["identity"].update({key: value}))
    with pytest.raises(PeerAuthenticationError, match=f"identity field {key}"):
        transcript_initiator(transcript, alice).receive_ack(ack)


def test_the_unedited_ack_passes_so_the_limit_test_above_can_fail(transcript, alice):
    ack = edit(valid_ack(transcript), lambda o: None)
    transcript_initiator(transcript, alice).receive_ack(ack)


def test_a_peers_huge_refusal_reason_reaches_the_initiator_capped_and_on_one_line(transcript, alice):
    reason = "no\r\nCRITICAL forged " * 100_000
    ack = edit(valid_ack(transcript), lambda o: o["payload"].update(accepted=False, reason=reason))
    with pytest.raises(HandshakeRefused) as e:
        transcript_initiator(transcript, alice).receive_ack(ack)
    assert len(e.value.reason) <= REASON_LIMIT + 30 and len(str(e.value).splitlines()) == 1
    assert e.value.reason.startswith("no\\r\\nCRITICAL forged")


# ---------------------------------------------------------------------------
# what the initiator refuses


def test_initiator_expecting_another_key_refuses_the_responder(alice, bob, carol):
    i = Initiator(alice, expected_public_key=carol.public_key)
    ack, _ = Responder(bob, PeerRegistry()).receive_hello(i.hello())
    with pytest.raises(PeerAuthenticationError) as e:
        i.receive_ack(ack)
    # the error names the key presented and the key expected, in that order
    presented, expected = bob.identity.public_key, carol.identity.public_key
    assert str(e.value) == f"responder presented a different public key: {presented}, expected {expected}"


def test_initiator_expecting_another_id_refuses_the_responder(alice, bob, carol):
    i = Initiator(alice, expected_id=carol.node_id)
    ack, _ = Responder(bob, PeerRegistry()).receive_hello(i.hello())
    with pytest.raises(PeerAuthenticationError):
        i.receive_ack(ack)


def test_a_forged_ack_with_a_wrong_hmac_is_refused(transcript, alice):
    wrong = base64.b64encode(bytes(32)).decode()
    ack = edit(h(step(transcript, 3)["message_json_hex"]), lambda o: o["payload"].update(challengeResponse=wrong))
    with pytest.raises(PeerAuthenticationError):
        transcript_initiator(transcript, alice).receive_ack(ack)


def test_an_ack_answering_another_challenge_is_refused(transcript, alice):
    other = Initiator(alice, challenge=bytes(range(32)))
    with pytest.raises(PeerAuthenticationError):
        other.receive_ack(h(step(transcript, 3)["message_json_hex"]))


@pytest.mark.parametrize("response", [None, 5, "", "not base64!", "u1M5xIlo8tBgG5t_153dPoA_Z3jUOBpkuPMQQtTUxLo="])
def test_an_ack_with_a_missing_or_malformed_response_is_refused(transcript, alice, response):
    def change(o):
        if response is None:
            del o["payload"]["challengeResponse"]
        else:
            o["payload"]["challengeResponse"] = response

    with pytest.raises(PeerAuthenticationError):
        transcript_initiator(transcript, alice).receive_ack(edit(h(step(transcript, 3)["message_json_hex"]), change))


def test_an_ack_whose_id_does_not_match_its_key_is_refused(transcript, alice, carol):
    ack = edit(h(step(transcript, 3)["message_json_hex"]), lambda o: o["payload"]["identity"].update(id=carol.node_id))
    with pytest.raises(PeerAuthenticationError):
        transcript_initiator(transcript, alice).receive_ack(ack)


def test_an_ack_from_a_responder_presenting_another_nodes_key_is_refused(transcript, alice, carol):
    def change(o):
        o["payload"]["identity"].update(id=carol.node_id, publicKey=carol.identity.public_key)

    with pytest.raises(PeerAuthenticationError):
        transcript_initiator(transcript, alice).receive_ack(edit(h(step(transcript, 3)["message_json_hex"]), change))


@pytest.mark.parametrize("accepted", [False, None, "true", 1, "missing"])
def test_anything_but_accepted_true_is_a_refusal(transcript, alice, accepted):
    def change(o):
        if accepted == "missing":
            del o["payload"]["accepted"]
        else:
            o["payload"]["accepted"] = accepted

    with pytest.raises(HandshakeRefused):
        transcript_initiator(transcript, alice).receive_ack(edit(h(step(transcript, 3)["message_json_hex"]), change))


def test_a_refusal_without_reason_still_raises_handshake_refused(transcript, alice):
    ack = edit(h(step(transcript, 3)["message_json_hex"]), lambda o: o["payload"].update(accepted=False))
    with pytest.raises(HandshakeRefused) as e:
        transcript_initiator(transcript, alice).receive_ack(ack)
    assert e.value.reason


def test_handshake_refused_and_peer_authentication_error_are_handshake_errors():
    assert issubclass(HandshakeRefused, HandshakeError)
    assert issubclass(PeerAuthenticationError, HandshakeError)
    assert issubclass(HandshakeError, SmsgnetError) and issubclass(ProtocolError, SmsgnetError)


# ---------------------------------------------------------------------------
# malformed messages are protocol errors, for both sides


def valid_hello(transcript) -> bytes:
    return h(step(transcript, 1)["message_json_hex"])


def valid_ack(transcript) -> bytes:
    return h(step(transcript, 3)["message_json_hex"])


MALFORMED = {
    "not-json": b"hello there",
    "empty": b"",
    "truncated": b'{"id":"x","type":"handshake"',
    "array": b"[]",
    "string": b'"handshake"',
    "null": b"null",
    "number": b"1.0",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_hello_is_a_protocol_error(bob, data):
    with pytest.raises(ProtocolError):
        Responder(bob, PeerRegistry()).receive_hello(data)


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_ack_is_a_protocol_error(transcript, alice, data):
    with pytest.raises(ProtocolError):
        transcript_initiator(transcript, alice).receive_ack(data)


@pytest.mark.parametrize("msg_type", ["handshake_ack", "ping", "", None])
def test_hello_of_the_wrong_type_is_a_protocol_error(transcript, bob, msg_type):
    with pytest.raises(ProtocolError):
        Responder(bob, PeerRegistry()).receive_hello(edit(valid_hello(transcript), lambda o: o.update(type=msg_type)))


@pytest.mark.parametrize("msg_type", ["handshake", "pong"])
def test_ack_of_the_wrong_type_is_a_protocol_error(transcript, alice, msg_type):
    with pytest.raises(ProtocolError):
        transcript_initiator(transcript, alice).receive_ack(
            edit(valid_ack(transcript), lambda o: o.update(type=msg_type))
        )


@pytest.mark.parametrize("payload", [None, [], "identity", 5, True], ids=repr)
def test_hello_whose_payload_is_not_an_object_is_a_protocol_error(transcript, bob, payload):
    with pytest.raises(ProtocolError):
        Responder(bob, PeerRegistry()).receive_hello(edit(valid_hello(transcript), lambda o: o.update(payload=payload)))


@pytest.mark.parametrize("payload", [None, [], "identity", 5], ids=repr)
def test_ack_whose_payload_is_not_an_object_is_a_protocol_error(transcript, alice, payload):
    with pytest.raises(ProtocolError):
        transcript_initiator(transcript, alice).receive_ack(
            edit(valid_ack(transcript), lambda o: o.update(payload=payload))
        )


@pytest.mark.parametrize("identity", [None, [], "alice", {"id": 5}], ids=repr)
def test_hello_with_a_malformed_identity_is_a_protocol_error(transcript, bob, identity):
    def change(o):
        o["payload"]["identity"] = identity

    with pytest.raises(ProtocolError):
        Responder(bob, PeerRegistry()).receive_hello(edit(valid_hello(transcript), change))


@pytest.mark.parametrize("identity", [None, [], {"publicKey": 5}], ids=repr)
def test_accepted_ack_with_a_malformed_identity_is_a_protocol_error(transcript, alice, identity):
    def change(o):
        o["payload"]["identity"] = identity

    with pytest.raises(ProtocolError):
        transcript_initiator(transcript, alice).receive_ack(edit(valid_ack(transcript), change))


@pytest.mark.parametrize(
    ("key", "value"), [("id", 5), ("from", 5), ("to", []), ("ts", {}), ("replyTo", 5), ("replyTo", {})], ids=repr
)
def test_hello_with_a_non_string_envelope_field_is_a_protocol_error(transcript, bob, key, value):
    # the peer broke the protocol outside a frame: the transport catches ProtocolError
    with pytest.raises(ProtocolError):
        Responder(bob, PeerRegistry()).receive_hello(edit(valid_hello(transcript), lambda o: o.update({key: value})))


@pytest.mark.parametrize("key", ["id", "from", "ts"])
def test_ack_with_a_non_string_envelope_field_is_a_protocol_error(transcript, alice, key):
    with pytest.raises(ProtocolError):
        transcript_initiator(transcript, alice).receive_ack(edit(valid_ack(transcript), lambda o: o.update({key: 5})))


def test_every_prefix_of_a_hello_is_a_protocol_error(transcript, bob):
    hello = valid_hello(transcript)
    for n in range(len(hello)):
        with pytest.raises(ProtocolError):
            Responder(bob, PeerRegistry()).receive_hello(hello[:n])


def test_every_prefix_of_an_ack_is_a_protocol_error(transcript, alice):
    ack = valid_ack(transcript)
    for n in range(len(ack)):
        with pytest.raises(ProtocolError):
            transcript_initiator(transcript, alice).receive_ack(ack[:n])


# ---------------------------------------------------------------------------
# fuzz: anything fed to either side works or raises an SmsgnetError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

PATHS = [
    (), ("id",), ("type",), ("from",), ("to",), ("ts",), ("replyTo",), ("payload",),
    ("payload", "identity"), ("payload", "identity", "id"), ("payload", "identity", "publicKey"),
    ("payload", "identity", "name"), ("payload", "challenge"), ("payload", "version"),
    ("payload", "challengeResponse"), ("payload", "accepted"), ("payload", "reason"),
]


def mutate(data: bytes, path: tuple[str, ...], value) -> bytes:
    if not path:
        return orjson.dumps(value)
    obj = orjson.loads(data)
    target = obj
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(obj)


def only_smsgnet_errors(call, data) -> None:
    try:
        call(data)
    except SmsgnetError:
        pass


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_to_receive_hello_only_raise_smsgnet_errors(bob, data):
    only_smsgnet_errors(Responder(bob, PeerRegistry()).receive_hello, data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_to_receive_ack_only_raise_smsgnet_errors(alice, data):
    only_smsgnet_errors(Initiator(alice).receive_ack, data)


@FUZZ
@given(path=st.sampled_from(PATHS), value=json_values)
def test_mutated_hellos_only_raise_smsgnet_errors(transcript, bob, path, value):
    data = mutate(valid_hello(transcript), path, value)
    registry = PeerRegistry(auth_mode="allowlist")
    registry.allow_key(transcript["initiator"]["public_key_b64"])
    only_smsgnet_errors(Responder(bob, registry).receive_hello, data)
    only_smsgnet_errors(Responder(bob, PeerRegistry()).receive_hello, data)


@FUZZ
@given(path=st.sampled_from(PATHS), value=json_values)
def test_mutated_acks_only_raise_smsgnet_errors(transcript, alice, path, value):
    data = mutate(valid_ack(transcript), path, value)
    only_smsgnet_errors(transcript_initiator(transcript, alice).receive_ack, data)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_to_both_sides_only_raises_smsgnet_errors(alice, bob, text):
    only_smsgnet_errors(Responder(bob, PeerRegistry()).receive_hello, text)
    only_smsgnet_errors(Initiator(alice).receive_ack, text)


@pytest.mark.parametrize(
    "data",
    [b'{"type":"handshake","payload":{"version":123456789012345678901234567890}}',
     b'{"type":"handshake","payload":{"version":1e400}}',
     b'{"type":"handshake","payload":' + b"[" * 5000 + b"]" * 5000 + b"}",
     b'{"type":"handshake","payload":{"identity":{"id":"\\ud800"}}}',
     b'{"type":"handshake_ack","payload":{"accepted":true,"identity":{"publicKey":"' + b"A" * 100000 + b'"}}}'],
    ids=["huge-int", "huge-float", "deep", "lone-surrogate", "long-key"],
)
def test_awkward_json_only_raises_smsgnet_errors(alice, bob, data):
    only_smsgnet_errors(Responder(bob, PeerRegistry()).receive_hello, data)
    only_smsgnet_errors(Initiator(alice).receive_ack, data)


def test_mutation_helper_really_changes_the_message(transcript):
    changed = mutate(valid_hello(transcript), ("payload", "version"), "9.9")
    assert json.loads(changed)["payload"]["version"] == "9.9"
    assert copy.deepcopy(json.loads(valid_hello(transcript)))["payload"]["version"] == "1.0"
