"""The transport Message (PROTOCOL.md §3) and the built-in payloads (§6).

Every test names the rule it proves. The reference bytes come from
``smsg_frames.json``: a Message decoded and encoded again must give back the
reference's ``message_json`` byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid

import orjson
import pytest

from smsgnet import DisconnectCode, ErrorCode, InvalidMessageError, Message, SmsgnetError
from smsgnet.message import b64decode, b64encode, format_timestamp, parse_timestamp

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ALICE = "300c9c9603b92a4b39ed3958bf924011"
BOB = "f35e5616160a30bf3c6e79fa73c576d4"


def keys_in_order(data: bytes) -> list[str]:
    """Top-level keys in the order they appear in the JSON text."""
    return list(json.loads(data, object_pairs_hook=lambda pairs: [k for k, _ in pairs]))


# ---------------------------------------------------------------------------
# §3: the reference bytes


@pytest.mark.vectors("smsg_frames.json")
def test_message_reencodes_to_the_reference_bytes(case):
    reference = bytes.fromhex(case["message_json_hex"])
    assert len(reference) == case["message_json_len"]
    assert Message.from_json(reference).to_json() == reference


@pytest.mark.vectors("smsg_frames.json")
def test_message_decoded_from_str_equals_decoded_from_bytes(case):
    reference = bytes.fromhex(case["message_json_hex"])
    assert Message.from_json(reference.decode("utf-8")) == Message.from_json(reference)


@pytest.mark.vectors("smsg_frames.json")
def test_keys_come_in_wire_order(case):
    keys = keys_in_order(Message.from_json(bytes.fromhex(case["message_json_hex"])).to_json())
    expected = ["id", "type", "from", "to", "ts", "payload", "replyTo"]
    assert keys == [k for k in expected if k in keys]
    assert keys[:6] == expected[:6]


@pytest.mark.vectors("smsg_frames.json")
def test_a_message_survives_to_dict_and_from_dict(case):
    msg = Message.from_json(bytes.fromhex(case["message_json_hex"]))
    assert Message.from_dict(msg.to_dict()) == msg


def test_all_seven_keys_in_order_when_reply_to_is_set():
    msg = Message(type="pong", payload={"a": 1}, from_=BOB, to=ALICE, id="i", ts="t", reply_to="r")
    assert msg.to_json() == (
        b'{"id":"i","type":"pong","from":"' + BOB.encode() + b'","to":"' + ALICE.encode()
        + b'","ts":"t","payload":{"a":1},"replyTo":"r"}'
    )


def test_reply_to_is_left_out_when_empty():
    msg = Message(type="ping", id="i", ts="t", from_="a", to="b", reply_to="")
    assert b"replyTo" not in msg.to_json()
    assert "replyTo" not in msg.to_dict()


def test_to_is_always_present_even_for_broadcast():
    msg = Message(type="ping", id="i", ts="t", from_="a", to="")
    assert msg.to_json() == b'{"id":"i","type":"ping","from":"a","to":"","ts":"t","payload":null}'


def test_absent_payload_is_written_as_null():
    assert b'"payload":null' in Message(type="get_stats", id="i", ts="t").to_json()


def test_payload_is_compact_with_no_whitespace_and_no_trailing_newline():
    out = Message(type="x", id="i", ts="t", payload={"a": [1, 2, {"b": None}], "c": "d e"}).to_json()
    assert out.endswith(b"}")
    assert b'"payload":{"a":[1,2,{"b":null}],"c":"d e"}' in out
    assert b"\n" not in out and b": " not in out and b", " not in out


def test_no_html_escaping():
    out = Message(type="x", id="i", ts="t", payload={"h": "<b>&</b>"}).to_json()
    assert b'"<b>&</b>"' in out
    assert b"\\u003c" not in out and b"\\u0026" not in out


def test_line_and_paragraph_separators_are_escaped_like_go():
    out = Message(type="x", id="i", ts="t", payload={"s": "a\u2028b\u2029c"}).to_json()
    assert b'"a\\u2028b\\u2029c"' in out
    assert "\u2028".encode() not in out and "\u2029".encode() not in out
    assert Message.from_json(out).payload == {"s": "a\u2028b\u2029c"}


def test_control_characters_are_escaped_tab_newline_cr_short():
    out = Message(type="x", id="i", ts="t", payload={"s": "\t\n\r\x01\x1f"}).to_json()
    assert b'"\\t\\n\\r\\u0001\\u001f"' in out


def test_non_ascii_is_written_raw_as_utf8():
    out = Message(type="x", id="i", ts="t", payload={"s": "Grüße 世界 🚀"}).to_json()
    assert "Grüße 世界 🚀".encode() in out


def test_fragment_payload_is_embedded_as_is():
    out = Message(type="x", id="i", ts="t", payload=orjson.Fragment(b'{"raw":true}')).to_json()
    assert b'"payload":{"raw":true}' in out


# ---------------------------------------------------------------------------
# §3: decoding is lenient about shape, strict about types


def test_decoding_accepts_keys_in_any_order():
    shuffled = (
        b'{"replyTo":"r","payload":{"k":1},"ts":"2025-01-01T00:00:00Z","to":"b",'
        b'"from":"a","type":"pong","id":"i"}'
    )
    msg = Message.from_json(shuffled)
    assert msg == Message(
        type="pong", payload={"k": 1}, from_="a", to="b", id="i", ts="2025-01-01T00:00:00Z", reply_to="r"
    )
    assert msg.to_json() == (
        b'{"id":"i","type":"pong","from":"a","to":"b","ts":"2025-01-01T00:00:00Z",'
        b'"payload":{"k":1},"replyTo":"r"}'
    )


def test_decoding_accepts_missing_optional_fields():
    msg = Message.from_json(b'{"id":"i","type":"ping"}')
    assert (msg.from_, msg.to, msg.ts, msg.payload, msg.reply_to) == ("", "", "", None, "")


def test_decoding_accepts_unknown_keys_and_ignores_them():
    msg = Message.from_json(b'{"id":"i","type":"ping","extra":[1,2]}')
    assert msg.to_json() == b'{"id":"i","type":"ping","from":"","to":"","ts":"","payload":null}'


def test_decoding_accepts_whitespace():
    msg = Message.from_json(b' {\n "id" : "i" ,\t"type":"ping" } \n')
    assert (msg.id, msg.type) == ("i", "ping")


@pytest.mark.parametrize("digits", range(10))
def test_decoding_accepts_ts_with_0_to_9_fractional_digits(digits):
    ts = "2025-01-01T00:00:00" + ("." + "123456789"[:digits] if digits else "") + "Z"
    msg = Message.from_json(orjson.dumps({"id": "i", "type": "ping", "ts": ts}))
    assert msg.ts == ts
    assert msg.timestamp.replace(microsecond=0) == dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "data",
    [b"[]", b'"text"', b"42", b"null", b"true", b'[{"id":"i"}]'],
    ids=["array", "string", "number", "null", "bool", "array-of-object"],
)
def test_non_object_json_is_an_invalid_message(data):
    with pytest.raises(InvalidMessageError):
        Message.from_json(data)


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff\xfe", b'{"id":"i",}'])
def test_text_that_is_not_json_is_an_invalid_message(data):
    with pytest.raises(InvalidMessageError):
        Message.from_json(data)


@pytest.mark.parametrize("key", ["id", "type", "from", "to", "ts", "replyTo"])
@pytest.mark.parametrize("value", [0, 1, 1.5, True, False, [], ["x"], {}, {"a": "b"}], ids=repr)
def test_a_string_field_of_another_json_type_is_an_invalid_message(key, value):
    with pytest.raises(InvalidMessageError, match=key):
        Message.from_dict({"id": "i", "type": "ping", key: value})


def test_invalid_message_error_is_an_smsgnet_error():
    assert issubclass(InvalidMessageError, SmsgnetError)


def test_null_string_fields_decode_as_empty_like_go():
    msg = Message.from_json(b'{"id":"i","type":"ping","from":null,"to":null,"ts":null,"replyTo":null}')
    assert (msg.from_, msg.to, msg.ts, msg.reply_to) == ("", "", "", "")


def test_payload_dict_requires_an_object():
    assert Message(type="x", payload={"a": 1}).payload_dict() == {"a": 1}
    assert Message(type="x", payload=orjson.Fragment(b'{"a":1}')).payload_dict() == {"a": 1}
    for bad in (None, [1], "s", 3):
        with pytest.raises(InvalidMessageError):
            Message(type="x", payload=bad).payload_dict()


# ---------------------------------------------------------------------------
# §3: ts as Go's RFC3339Nano prints it


@pytest.mark.parametrize(
    ("ns", "offset", "expected"),
    [
        (1735689600123456789, 0, "2025-01-01T00:00:00.123456789Z"),
        (1735689600500000000, 0, "2025-01-01T00:00:00.5Z"),
        (1735689600000000000, 0, "2025-01-01T00:00:00Z"),
        (1735689601000000001, 0, "2025-01-01T00:00:01.000000001Z"),
        (1735689604000001000, 0, "2025-01-01T00:00:04.000001Z"),
        (1735689601250000000, 0, "2025-01-01T00:00:01.25Z"),
        (1735689605000123000, 0, "2025-01-01T00:00:05.000123Z"),
        (1751320799500000000, 120, "2025-06-30T23:59:59.5+02:00"),
        (1735689600123456789, -330, "2024-12-31T18:30:00.123456789-05:30"),
        (1735689600000000000, 345, "2025-01-01T05:45:00+05:45"),
        (0, 0, "1970-01-01T00:00:00Z"),
        (-1, 0, "1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_timestamp_matches_go_rfc3339nano(ns, offset, expected):
    assert format_timestamp(ns, utc_offset_minutes=offset) == expected


@pytest.mark.vectors("smsg_frames.json")
def test_format_timestamp_reproduces_every_reference_ts(case):
    ts = Message.from_json(bytes.fromhex(case["message_json_hex"])).ts
    m = re.fullmatch(r"(.{19})(?:\.(\d{1,9}))?(Z|([+-])(\d\d):(\d\d))", ts)
    assert m, ts
    offset = 0 if m[3] == "Z" else (1 if m[4] == "+" else -1) * (int(m[5]) * 60 + int(m[6]))
    local = dt.datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    ns = (int(local.timestamp()) - offset * 60) * 1_000_000_000 + int((m[2] or "").ljust(9, "0"))
    assert format_timestamp(ns, utc_offset_minutes=offset) == ts


def test_format_timestamp_defaults_to_now():
    before = time.time()
    ts = format_timestamp()
    after = time.time()
    assert ts.endswith("Z")
    assert before - 1 <= parse_timestamp(ts).timestamp() <= after + 1


def test_format_timestamp_never_writes_trailing_zeros():
    for ns in range(1735689600000000000, 1735689600000000000 + 10**9, 10**9 // 37 + 13):
        ts = format_timestamp(ns)
        frac = ts[20:-1] if "." in ts else ""
        assert not frac.endswith("0"), ts


@pytest.mark.parametrize(
    "ns",
    [1735689600000000000, 1735689600500000000, 1735689600123456000, 1735689600999999000, 1751320799000001000],
)
def test_parse_timestamp_round_trips_microsecond_times(ns):
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns // 1000)
    assert parse_timestamp(format_timestamp(ns)) == expected
    assert parse_timestamp(format_timestamp(ns, utc_offset_minutes=-420)) == expected


def test_parse_timestamp_honours_the_zone_offset():
    assert parse_timestamp("2025-06-30T23:59:59.5+02:00") == dt.datetime(
        2025, 6, 30, 21, 59, 59, 500000, tzinfo=dt.timezone.utc
    )
    assert parse_timestamp("2025-01-01T00:00:00-05:30") == dt.datetime(2025, 1, 1, 5, 30, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("ts", "microsecond"),
    [
        ("2025-01-01T00:00:00.123456789Z", 123456),
        ("2025-01-01T00:00:00.9999999Z", 999999),
        ("2025-01-01T00:00:00.999999999Z", 999999),
    ],
)
def test_parse_timestamp_truncates_below_microseconds_as_documented(ts, microsecond):
    # docstring: "Precision beyond microseconds is truncated" -- the second must never change
    assert parse_timestamp(ts) == dt.datetime(2025, 1, 1, 0, 0, 0, microsecond, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "ts",
    ["", "yesterday", "2025-01-01", "2025-01-01T00:00:00", "2025-01-01T00:00:00.Z", "2025-01-01T00:00:00+0200",
     "2025-13-01T00:00:00Z"],
)
def test_parse_timestamp_refuses_what_is_not_rfc3339(ts):
    with pytest.raises(ValueError):
        parse_timestamp(ts)


# ---------------------------------------------------------------------------
# base64 inside payloads: standard alphabet, padded, strict


def test_b64_is_standard_padded_base64():
    assert b64encode(b"\xfb\xff") == "+/8="
    assert b64decode("+/8=") == b"\xfb\xff"


@pytest.mark.parametrize("text", ["-_8=", "+/8", "+/8=\n", "not base64!", "ü"])
def test_b64decode_refuses_url_safe_unpadded_and_junk(text):
    with pytest.raises(ValueError):
        b64decode(text)


# ---------------------------------------------------------------------------
# new / reply


def test_new_gives_a_fresh_canonical_uuid4_and_the_current_time():
    before = time.time()
    a = Message.new("ping", ALICE, BOB, {"k": 1})
    b = Message.new("ping", ALICE)
    after = time.time()
    for msg in (a, b):
        assert UUID4.match(msg.id), msg.id
        assert str(uuid.UUID(msg.id)) == msg.id
        assert uuid.UUID(msg.id).version == 4
        assert before - 1 <= msg.timestamp.timestamp() <= after + 1
    assert a.id != b.id
    assert (a.type, a.from_, a.to, a.payload, a.reply_to) == ("ping", ALICE, BOB, {"k": 1}, "")
    assert b.to == "" and b.payload is None


def test_new_stores_an_enum_type_as_its_plain_string():
    from smsgnet import MessageType

    msg = Message.new(MessageType.PING, ALICE)
    assert type(msg.type) is str and msg.type == "ping"
    assert b'"type":"ping"' in msg.to_json()


def test_reply_addresses_the_sender_and_sets_reply_to():
    request = Message.new("get_stats", ALICE, BOB)
    answer = request.reply("stats", {"ok": True})
    assert (answer.from_, answer.to, answer.reply_to, answer.type) == (BOB, ALICE, request.id, "stats")
    assert answer.id != request.id and UUID4.match(answer.id)
    assert keys_in_order(answer.to_json())[-1] == "replyTo"


def test_reply_can_name_its_sender_explicitly():
    broadcast = Message.new("get_stats", ALICE, "")
    assert broadcast.reply("stats", from_=BOB).from_ == BOB


# ---------------------------------------------------------------------------
# §6 payloads


def test_ping_payload_is_sent_at_in_unix_ms():
    assert Message.ping(ALICE, BOB, 1735689601000).payload == {"sentAt": 1735689601000}
    before = time.time_ns() // 1_000_000
    sent = Message.ping(ALICE, BOB).payload["sentAt"]
    assert isinstance(sent, int) and before <= sent <= time.time_ns() // 1_000_000


def test_pong_echoes_sent_at_and_adds_received_at(vectors):
    ping = Message.from_json(bytes.fromhex(vectors("smsg_frames.json")["ping"]["message_json_hex"]))
    reference = Message.from_json(bytes.fromhex(vectors("smsg_frames.json")["pong"]["message_json_hex"]))
    pong = ping.pong(1735689601250)
    assert pong.payload == {"sentAt": 1735689601000, "receivedAt": 1735689601250}
    assert (pong.type, pong.from_, pong.to, pong.reply_to) == ("pong", BOB, ALICE, ping.id)
    pong.id, pong.ts = reference.id, reference.ts
    assert pong.to_json() == bytes.fromhex(vectors("smsg_frames.json")["pong"]["message_json_hex"])


def test_pong_to_a_ping_without_sent_at_echoes_zero():
    assert Message(type="ping", payload=None).pong(5).payload == {"sentAt": 0, "receivedAt": 5}


def test_disconnect_payload_is_reason_then_code(vectors):
    ref = bytes.fromhex(vectors("smsg_frames.json")["disconnect"]["message_json_hex"])
    msg = Message.disconnect(BOB, ALICE, "server shutdown", DisconnectCode.SHUTDOWN)
    assert msg.payload == {"reason": "server shutdown", "code": 1004}
    assert type(msg.payload["code"]) is int
    reference = Message.from_json(ref)
    msg.id, msg.ts = reference.id, reference.ts
    assert msg.to_json() == ref


def test_error_reply_payload_and_optional_details(vectors):
    cases = vectors("smsg_frames.json")
    request = Message.from_json(bytes.fromhex(cases["nil_payload"]["message_json_hex"]))
    reference = Message.from_json(bytes.fromhex(cases["error_reply"]["message_json_hex"]))
    err = request.error_reply(ErrorCode.OPERATION_FAILED, "miner not found")
    assert err.payload == {"code": 1004, "message": "miner not found"}
    assert (err.type, err.from_, err.to, err.reply_to) == ("error", BOB, ALICE, request.id)
    err.id, err.ts = reference.id, reference.ts
    assert err.to_json() == bytes.fromhex(cases["error_reply"]["message_json_hex"])
    detailed = request.error_reply(ErrorCode.NOT_FOUND, "m", "d")
    assert keys_in_order(orjson.dumps(detailed.payload)) == ["code", "message", "details"]


def test_disconnect_codes_are_the_seeds():
    assert {c.name: int(c) for c in DisconnectCode} == {
        "NORMAL": 1000, "GOING_AWAY": 1001, "PROTOCOL_ERROR": 1002, "TIMEOUT": 1003, "SHUTDOWN": 1004,
    }


def test_error_codes_are_the_protocols():
    assert {c.name: int(c) for c in ErrorCode} == {
        "UNKNOWN": 1000, "INVALID_MESSAGE": 1001, "UNAUTHORIZED": 1002,
        "NOT_FOUND": 1003, "OPERATION_FAILED": 1004, "TIMEOUT": 1005,
    }
