"""The native core against the reference vectors (tests/vectors, README there).

One test per vector case, named after it. Byte equality everywhere: the hex
fields are the reference's exact bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path

import pytest

from smsgnet import _core

h = bytes.fromhex


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------
# identity.json


@pytest.mark.vectors("identity.json")
def test_identity(case):
    public = _core.public_key(h(case["private_key_hex"]))
    assert public.hex() == case["public_key_hex"]
    assert base64.b64encode(public).decode() == case["public_key_b64"]
    assert sha256(public).hex() == case["sha256_public_key_hex"]
    assert _core.node_id(public) == case["node_id"]
    assert case["node_identity"]["id"] == case["node_id"]
    assert case["node_identity"]["publicKey"] == case["public_key_b64"]


# ---------------------------------------------------------------------------
# ecdh.json


@pytest.mark.vectors("ecdh.json")
def test_ecdh_both_directions(case):
    a, b = case["a"], case["b"]
    ab = _core.derive_shared_secret(h(a["private_key_hex"]), h(b["public_key_hex"]))
    ba = _core.derive_shared_secret(h(b["private_key_hex"]), h(a["public_key_hex"]))
    assert ab == ba
    assert ab.hex() == case["shared_secret_hex"]
    assert ab == sha256(h(case["x25519_raw_hex"]))
    assert base64.b64encode(ab).decode() == case["shared_secret_b64"]
    # the peer's key as it travels: base64 in the identity
    assert _core.public_key(h(a["private_key_hex"])) == base64.b64decode(a["public_key_b64"])
    assert _core.node_id(h(a["public_key_hex"])) == a["node_id"]
    assert _core.node_id(h(b["public_key_hex"])) == b["node_id"]


@pytest.mark.vectors("ecdh.json")
def test_ecdh_smsg_password_and_key(case):
    secret = h(case["shared_secret_hex"])
    password = _core.smsg_password(secret)
    assert password == case["password"]
    assert len(password) == 44
    assert sha256(password.encode("ascii")).hex() == case["smsg_key_hex"]


# ---------------------------------------------------------------------------
# hmac_challenge.json


@pytest.mark.vectors("hmac_challenge.json")
def test_hmac_challenge(case):
    challenge = h(case["challenge_hex"])
    secret = h(case["shared_secret_hex"])
    response = _core.sign_challenge(challenge, secret)
    assert response.hex() == case["challenge_response_hex"]
    assert base64.b64encode(response).decode() == case["challenge_response_b64"]
    assert base64.b64decode(case["challenge_b64"]) == challenge
    assert _core.verify_challenge(challenge, response, secret) is True


@pytest.mark.vectors("hmac_challenge.json")
def test_hmac_challenge_any_flipped_bit_fails(case):
    challenge = h(case["challenge_hex"])
    secret = h(case["shared_secret_hex"])
    response = h(case["challenge_response_hex"])
    for i in range(len(response)):
        for bit in (0x01, 0x80):
            bad = bytearray(response)
            bad[i] ^= bit
            assert _core.verify_challenge(challenge, bytes(bad), secret) is False
    bad_challenge = bytes([challenge[0] ^ 1]) + challenge[1:]
    assert _core.verify_challenge(bad_challenge, response, secret) is False
    bad_secret = bytes([secret[0] ^ 1]) + secret[1:]
    assert _core.verify_challenge(challenge, response, bad_secret) is False
    assert _core.verify_challenge(challenge, response[:31], secret) is False
    assert _core.verify_challenge(challenge, response + b"\0", secret) is False
    assert _core.verify_challenge(challenge, b"", secret) is False


# ---------------------------------------------------------------------------
# xor_keystream.json


@pytest.mark.vectors("xor_keystream.json")
def test_keystream(case):
    nonce = h(case["nonce_hex"])
    assert _core.keystream(nonce, 100).hex() == case["keystream_100_hex"]
    assert _core.keystream(nonce, 0) == b""
    blocks = case["block_sha256_hex"]
    whole = _core.keystream(nonce, 32 * len(blocks))
    for i, block in enumerate(blocks):
        assert whole[32 * i : 32 * (i + 1)].hex() == block
        assert sha256(nonce + i.to_bytes(8, "big")).hex() == block
    # a prefix of a longer keystream is the shorter keystream
    assert _core.keystream(nonce, 33) == whole[:33]


# ---------------------------------------------------------------------------
# smsg_frames.json


@pytest.mark.vectors("smsg_frames.json")
def test_frame_seal_is_byte_exact(case):
    cipher = _core.SmsgCipher(h(case["shared_secret_hex"]))
    message = h(case["message_json_hex"])
    assert len(message) == case["message_json_len"]
    frame = cipher.seal(message, nonce=h(case["nonce_hex"]), timestamp=case["smsg_timestamp"])
    assert len(frame) == case["frame_len"]
    assert frame.hex() == case["frame_hex"]
    assert sha256(frame).hex() == case["frame_sha256_hex"]
    assert frame.hex().startswith(case["frame_prefix_hex"])
    assert frame[-16:].hex() == case["poly1305_tag_hex"]


@pytest.mark.vectors("smsg_frames.json")
def test_frame_envelope_and_keystream(case):
    message = h(case["message_json_hex"])
    envelope = _core.envelope(message, case["smsg_timestamp"])
    assert envelope.hex() == case["smsg_plaintext_hex"]
    assert len(envelope) == case["smsg_plaintext_len"] == case["aead_ciphertext_len"]
    # str in, same bytes out
    assert _core.envelope(message.decode("utf-8"), case["smsg_timestamp"]) == envelope
    assert _core.keystream(h(case["nonce_hex"]), 32).hex() == case["keystream_first_32_hex"]
    assert _core.smsg_password(h(case["shared_secret_hex"])) == case["password"]
    assert len(case["trix_header_json"]) == case["trix_header_len"] == 48


@pytest.mark.vectors("smsg_frames.json")
def test_frame_open(case):
    cipher = _core.SmsgCipher(h(case["shared_secret_hex"]))
    body = cipher.open(h(case["frame_hex"]))
    assert body == h(case["message_json_hex"])
    assert body == case["decrypted_message_json"].encode("utf-8")
    assert json.loads(body) == json.loads(case["message_json"])


# ---------------------------------------------------------------------------
# negative.json: frames

#: negative case name (or prefix ending in "_") -> the exact exception class
NEGATIVE_FRAME_ERRORS: dict[str, type[Exception]] = {
    "flipped_": _core.AuthenticationFailedError,
    "wrong_key": _core.AuthenticationFailedError,
    "payload_too_short": _core.AuthenticationFailedError,
    "trailing_garbage": _core.AuthenticationFailedError,
    "wrong_magic": _core.BadMagicError,
    "wrong_version_": _core.UnsupportedContainerVersionError,
    "empty_frame": _core.FrameTruncatedError,
    "truncated_": _core.FrameTruncatedError,
    "header_length_16mib_exact": _core.FrameTruncatedError,
    "header_length_too_large": _core.HeaderTooLargeError,
    "header_not_json": _core.InvalidHeaderError,
    "header_checksum_mismatch": _core.InvalidHeaderError,
    "not_smsg_json": _core.InvalidEnvelopeError,
    "body_not_transport_message": _core.InvalidMessageError,
}


def expected_error(name: str) -> type[Exception]:
    for key, cls in NEGATIVE_FRAME_ERRORS.items():
        if name == key or (key.endswith("_") and name.startswith(key)):
            return cls
    raise AssertionError(f"negative vector {name!r} has no expected exception in this test: add it")


def is_rejected_frame_case(case) -> bool:
    return not case["name"].startswith(("ecdh_", "ACCEPTED_"))


@pytest.mark.vectors("negative.json", where=is_rejected_frame_case)
def test_negative_frame_raises_matching_error(case):
    expected = expected_error(case["name"])
    cipher = _core.SmsgCipher(h(case["shared_secret_hex"]))
    frame = h(case["frame_hex"])
    assert len(frame) == case["frame_len"]
    with pytest.raises(_core.SmsgError) as excinfo:
        cipher.open(frame)
    assert excinfo.type is expected, f"{case['description']}: got {excinfo.type.__name__}: {excinfo.value}"
    if expected is _core.AuthenticationFailedError:
        # says nothing about where the frame went wrong
        assert str(excinfo.value) == "authentication failed"
    # the reference classifies it the same way
    if expected is _core.AuthenticationFailedError:
        assert case["is_err_decryption_fail"]
    elif expected in (_core.InvalidEnvelopeError,):
        assert case["is_err_invalid_payload"]
    elif expected is not _core.InvalidMessageError:
        assert case["is_err_invalid_magic"]


@pytest.mark.vectors("negative.json", where=lambda c: c["name"].startswith("ACCEPTED_"))
def test_negative_accepted_cases_open(case):
    cipher = _core.SmsgCipher(h(case["shared_secret_hex"]))
    assert cipher.open(h(case["frame_hex"])) == case["decrypted_message_json"].encode("utf-8")


def test_every_exception_is_an_smsg_error():
    for cls in set(NEGATIVE_FRAME_ERRORS.values()) | {
        _core.UnsupportedCompressionError,
        _core.UnsupportedFormatError,
    }:
        assert issubclass(cls, _core.SmsgError)
        assert not issubclass(cls, ValueError)  # the peer's fault, not the caller's


# ---------------------------------------------------------------------------
# negative.json: peer public keys (no frame)


def peer_public_key_from_b64(text: str) -> bytes:
    """Decode a peer's ``publicKey`` the way the transport must: strict, padded,
    standard base64; anything else is an InvalidKeyError."""
    if "-" in text or "_" in text:
        raise _core.InvalidKeyError("public key is not standard base64 (URL-safe alphabet)")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise _core.InvalidKeyError(f"public key is not valid base64: {e}") from e


@pytest.mark.vectors("negative.json", where=lambda c: c["name"].startswith("ecdh_"))
def test_negative_ecdh_peer_key_is_refused(case, vectors):
    private = h(vectors("identity.json")["rfc7748_alice"]["private_key_hex"])
    assert case["derive_shared_secret_error"]  # the reference refuses it too
    with pytest.raises(_core.InvalidKeyError) as excinfo:
        _core.derive_shared_secret(private, peer_public_key_from_b64(case["public_key_b64"]))
    assert str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    ("name", "length_in_message"),
    [("ecdh_public_key_31_bytes", "31"), ("ecdh_all_zero_public_key", "low-order")],
)
def test_negative_ecdh_derive_itself_refuses(name, length_in_message, vectors):
    """The decoded key reaches derive_shared_secret, which must refuse it itself."""
    case = vectors("negative.json")[name]
    private = h(vectors("identity.json")["rfc7748_alice"]["private_key_hex"])
    peer = base64.b64decode(case["public_key_b64"], validate=True)
    with pytest.raises(_core.InvalidKeyError, match=length_in_message):
        _core.derive_shared_secret(private, peer)


@pytest.mark.parametrize("name", ["ecdh_public_key_bad_base64", "ecdh_public_key_urlsafe_base64"])
def test_negative_ecdh_base64_is_strict(name, vectors):
    text = vectors("negative.json")[name]["public_key_b64"]
    with pytest.raises(binascii.Error):
        base64.b64decode(text, validate=True)


# ---------------------------------------------------------------------------
# Header variants built from a real frame


def with_header(frame: bytes, header: bytes) -> bytes:
    n = int.from_bytes(frame[5:9], "big")
    return frame[:5] + len(header).to_bytes(4, "big") + header + frame[9 + n :]


@pytest.fixture
def ping(vectors):
    case = vectors("smsg_frames.json")["ping"]
    return _core.SmsgCipher(h(case["shared_secret_hex"])), h(case["frame_hex"]), h(case["message_json_hex"])


@pytest.mark.parametrize(
    ("header", "error"),
    [
        pytest.param(b'{"compression":"gzip"}', _core.UnsupportedCompressionError, id="gzip"),
        pytest.param(b'{"compression":"zstd"}', _core.UnsupportedCompressionError, id="zstd"),
        pytest.param(b'{"compression":1}', _core.UnsupportedCompressionError, id="compression_number"),
        pytest.param(b'{"format":"v2"}', _core.UnsupportedFormatError, id="format_v2"),
        pytest.param(b'{"format":true}', _core.UnsupportedFormatError, id="format_bool"),
        pytest.param(b"[]", _core.InvalidHeaderError, id="array"),
        pytest.param(b'"str"', _core.InvalidHeaderError, id="string"),
        pytest.param(b"null", _core.InvalidHeaderError, id="null"),
        pytest.param(b"", _core.InvalidHeaderError, id="empty"),
        pytest.param(b"{", _core.InvalidHeaderError, id="unclosed"),
        pytest.param(b'{"checksum":"00"}', _core.InvalidHeaderError, id="checksum_wrong"),
        pytest.param(b'{"checksum":"00","checksum_algo":"md5"}', _core.InvalidHeaderError, id="checksum_algo_md5"),
    ],
)
def test_header_variant_refused(ping, header, error):
    cipher, frame, _ = ping
    with pytest.raises(_core.SmsgError) as excinfo:
        cipher.open(with_header(frame, header))
    assert excinfo.type is error, f"got {excinfo.type.__name__}: {excinfo.value}"


@pytest.mark.parametrize(
    "header",
    [
        b"{}",
        b'{"compression":"none"}',
        b'{"compression":""}',
        b'{"compression":null}',
        b'{"format":"v1"}',
        b'{"algorithm":"chacha20poly1305","version":"1.0","x":[1,2]}',
        b' {"version":"1.0"} ',
    ],
    ids=lambda b: b.decode(),
)
def test_header_variant_accepted(ping, header):
    cipher, frame, message = ping
    assert cipher.open(with_header(frame, header)) == message


def test_header_with_valid_checksum_is_accepted(ping):
    cipher, frame, message = ping
    payload = frame[9 + 48 :]
    for algo in ('"checksum_algo":"sha256",', ""):
        header = ('{"checksum":"%s",%s"v":1}' % (sha256(payload).hex().upper(), algo)).encode()
        assert cipher.open(with_header(frame, header)) == message


# ---------------------------------------------------------------------------
# handshake_transcript.json: the crypto of a whole handshake


@pytest.mark.vectors("handshake_transcript.json")
def test_handshake_transcript(case):
    initiator, responder = case["initiator"], case["responder"]
    steps = {int(step["step"]): step for step in case["steps"]}
    hello = json.loads(h(steps[1]["message_json_hex"]))
    ack = json.loads(h(steps[3]["message_json_hex"]))
    assert hello["payload"]["challenge"] == case["challenge_b64"]

    # responder: secret from the initiator's publicKey, then the response
    peer = peer_public_key_from_b64(hello["payload"]["identity"]["publicKey"])
    assert _core.node_id(peer) == hello["from"] == initiator["node_id"]
    secret_r = _core.derive_shared_secret(h(responder["private_key_hex"]), peer)
    assert secret_r.hex() == steps[2]["shared_secret_hex"]
    response = _core.sign_challenge(h(case["challenge_hex"]), secret_r)
    assert base64.b64encode(response).decode() == ack["payload"]["challengeResponse"]

    # initiator: secret from the ack's publicKey, verify the HMAC
    peer = peer_public_key_from_b64(ack["payload"]["identity"]["publicKey"])
    assert _core.node_id(peer) == ack["from"] == responder["node_id"]
    secret_i = _core.derive_shared_secret(h(initiator["private_key_hex"]), peer)
    assert secret_i == secret_r
    received = base64.b64decode(ack["payload"]["challengeResponse"], validate=True)
    assert _core.verify_challenge(h(case["challenge_hex"]), received, secret_i) is True

    # the first encrypted frames, both directions
    cipher = _core.SmsgCipher(secret_i)
    for n in (5, 6):
        frame = steps[n]["frame"]
        sealed = cipher.seal(
            h(frame["message_json_hex"]), nonce=h(frame["nonce_hex"]), timestamp=frame["smsg_timestamp"]
        )
        assert sealed.hex() == frame["frame_hex"]
        assert cipher.open(sealed) == h(frame["message_json_hex"])


# ---------------------------------------------------------------------------
# The in-repo copy itself

def test_vector_files_are_the_reference_copies():
    """Cause: the suite needed ../shared/vectors beside the clone (issue 8 #7).
    Fix: the vectors are copied into tests/vectors; their README lists each file's
    SHA-256, and an edited, missing or extra file fails here."""
    directory = Path(__file__).resolve().parents[1] / "vectors"
    listed = dict(re.findall(r"^\| `([\w.]+\.json)` \| `([0-9a-f]{64})` \|$",
                             (directory / "README.md").read_text(encoding="utf-8"), re.M))
    present = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.json")}
    assert len(listed) == 7
    assert present == listed
