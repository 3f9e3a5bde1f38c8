"""Every way to hold the native core wrong (STYLE.md point 9): wrong key
lengths, wrong types, bad nonces, unsealable text. Caller errors are
ValueError/TypeError subclasses; they are never SmsgError (that is the peer's fault).
"""

from __future__ import annotations

import time

import pytest

from smsgnet import _core

KEY = bytes(range(1, 33))
PEER_PUBLIC = _core.public_key(b"\x42" * 32)
SECRET = _core.derive_shared_secret(KEY, PEER_PUBLIC)
MESSAGE = '{"id":"m1","type":"ping","from":"a","to":"b","ts":"2025-01-01T00:00:00Z","payload":{"x":"<é>"}}'
NONCE = bytes(range(24))
BAD_LENGTHS = [0, 1, 31, 33, 64]


def key_functions():
    return {
        "public_key": lambda k: _core.public_key(k),
        "node_id": lambda k: _core.node_id(k),
        "derive_private": lambda k: _core.derive_shared_secret(k, PEER_PUBLIC),
        "derive_peer_public": lambda k: _core.derive_shared_secret(KEY, k),
        "SmsgCipher": lambda k: _core.SmsgCipher(k),
    }


@pytest.mark.parametrize("length", BAD_LENGTHS)
@pytest.mark.parametrize("fn", sorted(key_functions()))
def test_wrong_key_length_is_invalid_key_error(fn, length):
    with pytest.raises(_core.InvalidKeyError, match=f"got {length}") as excinfo:
        key_functions()[fn](b"\x07" * length)
    assert isinstance(excinfo.value, ValueError)
    assert not isinstance(excinfo.value, _core.SmsgError)


@pytest.mark.parametrize("bad", ["x" * 32, bytearray(32), memoryview(bytes(32)), None, 32, [0] * 32])
@pytest.mark.parametrize("fn", sorted(key_functions()))
def test_wrong_key_type_is_type_error(fn, bad):
    with pytest.raises(TypeError):
        key_functions()[fn](bad)


def test_low_order_peer_keys_are_refused():
    # the all-zero point, and the point of order 8 from RFC 7748 / libsodium's blocklist
    low_order = [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ]
    for point in low_order:
        with pytest.raises(_core.InvalidKeyError, match="low-order"):
            _core.derive_shared_secret(KEY, point)


def test_generate_keypair():
    private, public = _core.generate_keypair()
    assert isinstance(private, bytes) and isinstance(public, bytes)
    assert len(private) == len(public) == 32
    assert _core.public_key(private) == public
    assert _core.generate_keypair()[0] != private
    assert len(_core.node_id(public)) == 32


def test_hmac_functions_take_bytes_only():
    with pytest.raises(TypeError):
        _core.sign_challenge("challenge", SECRET)
    with pytest.raises(TypeError):
        _core.verify_challenge(b"c", "response", SECRET)
    with pytest.raises(TypeError):
        _core.verify_challenge(b"c", b"r", None)
    # any key length is a valid HMAC key; a wrong-length response is just wrong
    assert len(_core.sign_challenge(b"", b"")) == 32
    assert _core.verify_challenge(b"c", b"", SECRET) is False


def test_smsg_password_is_base64_of_anything():
    assert _core.smsg_password(b"") == ""
    assert _core.smsg_password(b"\xff") == "/w=="


# ---------------------------------------------------------------------------
# SmsgCipher.seal / open


@pytest.fixture
def cipher():
    return _core.SmsgCipher(SECRET)


@pytest.mark.parametrize("length", [0, 1, 23, 25, 32])
def test_seal_wrong_nonce_length_is_value_error(cipher, length):
    with pytest.raises(ValueError, match="24 bytes"):
        cipher.seal(MESSAGE, nonce=b"\0" * length)


@pytest.mark.parametrize("length", [0, 23, 25])
def test_keystream_wrong_nonce_length_is_value_error(length):
    with pytest.raises(ValueError, match="24 bytes"):
        _core.keystream(b"\0" * length, 10)


def test_keystream_negative_length():
    with pytest.raises(OverflowError):
        _core.keystream(NONCE, -1)


def test_seal_nonce_and_timestamp_are_keyword_only(cipher):
    with pytest.raises(TypeError):
        cipher.seal(MESSAGE, NONCE)  # type: ignore[misc]
    with pytest.raises(TypeError):
        cipher.seal(MESSAGE, nonce="x" * 24)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cipher.seal(MESSAGE, timestamp="now")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"\xff", b"{\"a\":\"\xc3\"}", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\x80"])
def test_seal_invalid_utf8_is_seal_error(cipher, bad):
    with pytest.raises(_core.SealError, match="UTF-8") as excinfo:
        cipher.seal(bad, nonce=NONCE)
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(_core.SealError):
        cipher.seal(bytearray(bad), nonce=NONCE)


def test_seal_lone_surrogate_str_is_value_error(cipher):
    # str -> UTF-8 fails before the core sees it (see test_core_bugs for the exact class)
    with pytest.raises(ValueError):
        cipher.seal('{"a":"\ud800"}')


@pytest.mark.parametrize("bad", [None, 1, 1.5, ["{}"], {"id": 1}, memoryview(b"{}")])
def test_seal_wrong_type_is_type_error(cipher, bad):
    with pytest.raises(TypeError):
        cipher.seal(bad)


@pytest.mark.parametrize("bad", ["SMSG", None, 5, memoryview(b"SMSG")])
def test_open_wrong_type_is_type_error(cipher, bad):
    with pytest.raises(TypeError):
        cipher.open(bad)


def test_seal_accepts_str_bytes_and_bytearray_identically(cipher):
    as_str = cipher.seal(MESSAGE, nonce=NONCE, timestamp=1735689600)
    as_bytes = cipher.seal(MESSAGE.encode(), nonce=NONCE, timestamp=1735689600)
    as_bytearray = cipher.seal(bytearray(MESSAGE.encode()), nonce=NONCE, timestamp=1735689600)
    assert isinstance(as_str, bytes)
    assert as_str == as_bytes == as_bytearray
    assert cipher.open(as_str) == MESSAGE.encode()
    assert cipher.open(bytearray(as_str)) == MESSAGE.encode()


def test_seal_uses_a_random_nonce_by_default(cipher):
    a = cipher.seal(MESSAGE, timestamp=1)
    b = cipher.seal(MESSAGE, timestamp=1)
    assert a != b
    assert a[57:81] != b[57:81]  # the nonce itself differs
    assert cipher.open(a) == cipher.open(b) == MESSAGE.encode()


def test_seal_default_timestamp_is_now(cipher):
    before = int(time.time())
    frame = cipher.seal(MESSAGE, nonce=NONCE)
    after = int(time.time())
    matches = [t for t in range(before - 1, after + 2) if cipher.seal(MESSAGE, nonce=NONCE, timestamp=t) == frame]
    assert len(matches) == 1, "default timestamp is not within a second of time.time()"


def test_explicit_timestamp_changes_the_frame(cipher):
    assert cipher.seal(MESSAGE, nonce=NONCE, timestamp=1) != cipher.seal(MESSAGE, nonce=NONCE, timestamp=2)
    assert cipher.seal(MESSAGE, nonce=NONCE, timestamp=-5)  # any i64 is fine
    with pytest.raises(OverflowError):
        cipher.seal(MESSAGE, nonce=NONCE, timestamp=2**63)


def test_envelope_timestamp_formatting():
    assert _core.envelope("{}", 0) == b'{"body":"{}","timestamp":0}'
    assert _core.envelope("{}", -1) == b'{"body":"{}","timestamp":-1}'
    assert _core.envelope(b"", 2**63 - 1) == b'{"body":"","timestamp":9223372036854775807}'


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<>&", r"\u003c\u003e\u0026"),
        ('"\\', r"\"\\"),
        ("\n\r\t", r"\n\r\t"),
        ("\x00\x01\x08\x0c\x1f", r"\u0000\u0001\u0008\u000c\u001f"),
        ("\x7f", "\x7f"),
        ("\u2028\u2029", r"\u2028\u2029"),
        ("\u2027\u202a\u20ac", "\u2027\u202a\u20ac"),
        ("é世🚀", "é世🚀"),
    ],
    ids=["html", "quote_backslash", "short_escapes", "controls", "del", "separators", "near_e2_80", "unicode"],
)
def test_envelope_go_escaping(text, escaped):
    assert _core.envelope(text, 7) == ('{"body":"%s","timestamp":7}' % escaped).encode("utf-8")


def test_seal_and_open_of_non_message_json(cipher):
    # seal seals any UTF-8 text; open insists on a transport Message (a JSON object)
    frame = cipher.seal("hello", nonce=NONCE)
    with pytest.raises(_core.InvalidMessageError):
        cipher.open(frame)
    for body in ["{}", ' {"id":"x"} ', '{"payload":[1,2,3],"extra":{"id":1}}', '{"from":null}']:
        assert cipher.open(cipher.seal(body)) == body.encode()
    # (a string field of another JSON type is not a Message either, as in the reference)
    for body in ["[]", "null", "1", "", '{"id":"x"} trailing', '{"id":"x"', '{"id":1}', '{"ts":[]}']:
        with pytest.raises(_core.InvalidMessageError):
            cipher.open(cipher.seal(body))


def test_open_another_keys_frame(cipher):
    other = _core.SmsgCipher(bytes(32))
    with pytest.raises(_core.AuthenticationFailedError):
        other.open(cipher.seal(MESSAGE))


def test_cipher_is_reusable_and_frozen(cipher):
    with pytest.raises(AttributeError):
        cipher.key = b""  # type: ignore[attr-defined]
    frames = [cipher.seal(MESSAGE) for _ in range(50)]
    assert len(set(frames)) == 50
    assert all(cipher.open(f) == MESSAGE.encode() for f in frames)


def test_constants():
    assert _core.PROTOCOL_VERSION == "1.0"
    assert _core.MAX_HEADER_LEN == 16 * 1024 * 1024


def test_parse_timestamp():
    assert _core.parse_timestamp("2025-01-01T00:00:00Z") == 1735689600.0
    assert _core.parse_timestamp("2025-01-01T00:00:01.000000001Z") == pytest.approx(1735689601.000000001)
    assert _core.parse_timestamp("2025-06-30T23:59:59.5+02:00") == 1751320799.5
    assert _core.parse_timestamp("2025-01-01T01:00:00-01:00") == 1735689600.0 + 7200
    for bad in ["", "2025-01-01", "2025-01-01T00:00:00", "2025-02-30T00:00:00Z", "2025-01-01T24:00:00Z",
                "2025-01-01T00:00:00.Z", "2025-01-01T00:00:00Zjunk", "2025-01-01T00:00:00+0100", "x" * 30]:
        assert _core.parse_timestamp(bad) is None, bad
    with pytest.raises(TypeError):
        _core.parse_timestamp(b"2025-01-01T00:00:00Z")


def test_drop_reasons():
    reasons = _core.drop_reasons()
    assert isinstance(reasons, list)
    assert set(reasons) == {
        "rate_limited", "malformed", "undecryptable", "invalid_message", "wrong_sender", "stale", "duplicate"
    }
    assert len(reasons) == len(set(reasons))
