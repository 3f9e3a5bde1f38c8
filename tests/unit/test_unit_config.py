"""TransportConfig: the seed's defaults, and every invalid value refused by name."""

from __future__ import annotations

import dataclasses
import math

import pytest

from smsgnet import ConfigError, SmsgnetError, TransportConfig

MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# defaults: DefaultTransportConfig() of the seed, plus its dedup and rate limit


def test_defaults_are_the_seeds():
    c = TransportConfig()
    assert c.listen_addr == ":9091"
    assert c.ws_path == "/ws"
    assert c.max_conns == 100
    assert c.max_message_size == 1 * MiB
    assert c.ping_interval == 30.0
    assert c.pong_timeout == 10.0
    assert c.handshake_timeout == 10.0
    assert c.write_timeout == 10.0
    assert c.rate_limit_burst == 100
    assert c.rate_limit_per_sec == 50.0
    assert c.dedup_ttl == 300.0
    assert c.dedup_sweep_interval == 60.0


def test_default_tls_is_off_and_origins_are_local():
    c = TransportConfig()
    assert c.tls_cert_path is None and c.tls_key_path is None
    assert c.tls_enabled is False
    assert c.allowed_origin_hosts == ("localhost", "127.0.0.1", "::1")


def test_default_listen_address_is_every_interface_port_9091():
    c = TransportConfig()
    assert (c.host, c.port) == ("", 9091)


def test_idle_limit_is_ping_interval_plus_pong_timeout():
    assert TransportConfig().idle_limit == 40.0
    assert TransportConfig(ping_interval=1.5, pong_timeout=0.25).idle_limit == 1.75


def test_config_is_frozen():
    c = TransportConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_conns = 5  # type: ignore[misc]


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        TransportConfig(":9091")  # type: ignore[misc]


def test_as_dict_lists_every_field():
    d = TransportConfig().as_dict()
    assert set(d) == {f.name for f in dataclasses.fields(TransportConfig)}
    assert d["listen_addr"] == ":9091" and d["max_conns"] == 100


def test_config_error_is_a_value_error_and_an_smsgnet_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, SmsgnetError)


# ---------------------------------------------------------------------------
# host and port


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [
        (":9091", "", 9091),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::1]:0", "::1", 0),
        ("[::]:8080", "::", 8080),
        ("localhost:65535", "localhost", 65535),
        ("0.0.0.0:1", "0.0.0.0", 1),
    ],
)
def test_listen_addr_splits_into_host_and_port(addr, host, port):
    c = TransportConfig(listen_addr=addr)
    assert (c.host, c.port) == (host, port)


@pytest.mark.parametrize(
    "addr",
    ["9091", "", "localhost", "localhost:", "localhost:65536", "localhost:-1", "localhost:+80", "localhost:8o",
     "localhost: 80", "[::1]", "localhost:²", "localhost:٨٠"],
)
def test_bad_listen_addr_is_refused_by_name(addr):
    with pytest.raises(ConfigError, match="listen_addr"):
        TransportConfig(listen_addr=addr)


@pytest.mark.parametrize("addr", [9091, b":9091", ("", 1)])
def test_listen_addr_must_be_a_string(addr):
    with pytest.raises(ConfigError, match="listen_addr"):
        TransportConfig(listen_addr=addr)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# path and TLS


@pytest.mark.parametrize("path", ["/", "/ws", "/a/b"])
def test_ws_path_starting_with_slash_is_accepted(path):
    assert TransportConfig(ws_path=path).ws_path == path


@pytest.mark.parametrize("path", ["ws", "", "ws/", None, 5])
def test_ws_path_without_leading_slash_is_refused_by_name(path):
    with pytest.raises(ConfigError, match="ws_path"):
        TransportConfig(ws_path=path)  # type: ignore[arg-type]


def test_tls_needs_both_certificate_and_key():
    with pytest.raises(ConfigError, match="tls_cert_path"):
        TransportConfig(tls_cert_path="cert.pem")
    with pytest.raises(ConfigError, match="tls_key_path"):
        TransportConfig(tls_key_path="key.pem")
    c = TransportConfig(tls_cert_path="cert.pem", tls_key_path="key.pem")
    assert c.tls_enabled is True


# ---------------------------------------------------------------------------
# numbers: every bad value names its field

DURATIONS = ["ping_interval", "pong_timeout", "handshake_timeout", "write_timeout", "dedup_ttl",
             "dedup_sweep_interval"]
NON_NEGATIVE = ["rate_limit_per_sec", "max_clock_skew"]
INTEGERS = {"max_conns": 1, "max_message_size": 64, "rate_limit_burst": 1, "dedup_max_entries": 1,
            "drop_log_per_minute": 0}

NOT_A_NUMBER = [math.nan, math.inf, -math.inf, True, False, "30", None, [1], b"1"]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.001, *NOT_A_NUMBER], ids=repr)
def test_durations_must_be_positive_finite_numbers(name, value):
    with pytest.raises(ConfigError, match=name):
        TransportConfig(**{name: value})


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", [0.001, 1, 2.5, 86400])
def test_durations_accept_positive_ints_and_floats(name, value):
    assert getattr(TransportConfig(**{name: value}), name) == value


@pytest.mark.parametrize("name", NON_NEGATIVE)
@pytest.mark.parametrize("value", [-1, -0.5, *NOT_A_NUMBER], ids=repr)
def test_rate_and_skew_must_be_non_negative_finite_numbers(name, value):
    with pytest.raises(ConfigError, match=name):
        TransportConfig(**{name: value})


@pytest.mark.parametrize("name", NON_NEGATIVE)
def test_rate_and_skew_may_be_zero(name):
    assert getattr(TransportConfig(**{name: 0}), name) == 0


@pytest.mark.parametrize("name", list(INTEGERS))
def test_integers_refuse_values_below_their_minimum(name):
    with pytest.raises(ConfigError, match=name):
        TransportConfig(**{name: INTEGERS[name] - 1})
    with pytest.raises(ConfigError, match=name):
        TransportConfig(**{name: -100})


@pytest.mark.parametrize("name", list(INTEGERS))
def test_integers_accept_their_minimum(name):
    assert getattr(TransportConfig(**{name: INTEGERS[name]}), name) == INTEGERS[name]


@pytest.mark.parametrize("name", list(INTEGERS))
@pytest.mark.parametrize("value", [True, False, 100.0, 1.5, "100", math.nan, math.inf, b"1", [100]], ids=repr)
def test_integers_refuse_other_types_including_bool(name, value):
    with pytest.raises(ConfigError, match=name):
        TransportConfig(**{name: value})


def test_rate_limit_can_be_switched_off_with_none():
    assert TransportConfig(rate_limit_burst=None).rate_limit_burst is None


def test_allowed_origin_hosts_must_be_a_tuple():
    with pytest.raises(ConfigError, match="allowed_origin_hosts"):
        TransportConfig(allowed_origin_hosts=["localhost"])  # type: ignore[arg-type]
    assert TransportConfig(allowed_origin_hosts=()).allowed_origin_hosts == ()


def test_replace_revalidates():
    with pytest.raises(ConfigError, match="max_conns"):
        dataclasses.replace(TransportConfig(), max_conns=0)
