"""Transport configuration: the seed's defaults, every limit explicit."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from smsgnet.exceptions import ConfigError

__all__ = ["TransportConfig", "PROTOCOLS"]

#: Wire protocols, oldest first: "1.0" (PROTOCOL.md, the Go nodes) and "2.0" (Noise).
PROTOCOLS: tuple[str, ...] = ("1.0", "2.0")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """How a :class:`~smsgnet.Transport` listens, limits and keeps peers alive.

    ``TransportConfig()`` gives the reference defaults. Every value is checked
    at construction; an invalid one raises :class:`~smsgnet.ConfigError` naming
    the field. Durations are in seconds.
    """

    #: ``HOST:PORT`` to listen on; ``":9091"`` means every interface, port 9091.
    #: None: a client-only node that listens on nothing and only dials out.
    listen_addr: str | None = ":9091"
    #: WebSocket endpoint path.
    ws_path: str = "/ws"
    #: PEM certificate and key; when both are set the node serves ``wss://``.
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    #: CA bundle used to verify ``wss://`` peers we connect to (None: system store).
    tls_ca_path: str | None = None
    #: Verify the certificate of ``wss://`` peers. Peers are authenticated by
    #: their X25519 key in any case; turn off for self-signed reference nodes.
    tls_verify: bool = True
    #: Established + pending connections at which new upgrades get HTTP 503
    #: (when no connection pending proof of key is left to give way).
    max_conns: int = 100
    #: Inbound connections that finished the handshake but have not yet proven
    #: their key: at most this many in all (None: ``max_conns``), per claimed
    #: peer ID and per remote host. At a limit the oldest pending one is closed.
    max_pending: int | None = None
    max_pending_per_peer: int = 4
    max_pending_per_address: int = 64
    #: An inbound connection must prove its key within this time (None:
    #: ``ping_interval + pong_timeout``, since a Go initiator may first speak
    #: with its keepalive ping).
    proof_timeout: float | None = None
    #: Reconnect (``connect(..., reconnect=True)``): jittered exponential backoff
    #: from ``reconnect_initial_delay``, times ``reconnect_factor`` per failed
    #: attempt, capped at ``reconnect_max_delay``.
    reconnect_initial_delay: float = 0.1
    reconnect_factor: float = 2.0
    reconnect_max_delay: float = 30.0
    #: Largest WebSocket message accepted, during the handshake too (bytes).
    max_message_size: int = 1 << 20
    #: Keepalive: a ping every ``ping_interval``; a connection silent for
    #: ``ping_interval + pong_timeout`` is closed.
    ping_interval: float = 30.0
    pong_timeout: float = 10.0
    #: Both sides must finish the handshake within this time.
    handshake_timeout: float = 10.0
    #: A send that cannot be written within this time closes the connection.
    write_timeout: float = 10.0
    #: Per-connection token bucket: burst and refill per second (None: no limit).
    rate_limit_burst: int | None = 100
    rate_limit_per_sec: float = 50.0
    #: Per-peer overrides of the token bucket, for trusted high-rate peers:
    #: node ID or base64 public key → (burst or None for no limit, refill per second).
    peer_rate_limits: Mapping[str, tuple[int | None, float]] = field(default_factory=dict)
    #: Bytes that may wait to be written to one peer (in the socket buffer and
    #: behind other writers); a send beyond it raises SendQueueFull at once.
    max_send_queue_bytes: int = 4 << 20
    #: Received frames websockets buffers per connection while the handler is
    #: busy (then the socket is not read: TCP backpressure on the sender).
    receive_queue_frames: int = 4
    #: Messages waiting in ``Transport.messages()`` before the read loops wait for
    #: the consumer (backpressure, never drops).
    message_queue_size: int = 256
    #: Message IDs are remembered this long; frames whose ``ts`` is older are dropped.
    dedup_ttl: float = 300.0
    #: Expired IDs are swept this often.
    dedup_sweep_interval: float = 60.0
    #: At most this many IDs are remembered (oldest evicted first, see docs).
    dedup_max_entries: int = 200_000
    #: At most this many IDs per peer in the replay table (None: ``dedup_max_entries``),
    #: and at most this many peers (None: ``dedup_max_entries``). See rust/dedup.rs.
    dedup_max_entries_per_peer: int | None = None
    dedup_max_peers: int | None = None
    #: Frames whose ``ts`` is further than this in the future are dropped.
    max_clock_skew: float = 60.0
    #: Directory for the replay state (replay.state, replay.marker, replay.lock),
    #: so that no frame is accepted twice across a restart. None: nothing is
    #: saved and every start refuses frames dated before it (see below).
    state_dir: str | None = None
    #: After an unclean exit (or without saved state), frames dated more than
    #: this before the start are refused; peers whose clocks lag less lose nothing.
    replay_skew_allowance: float = 60.0
    #: Save the replay table this often while running (None: only at stop).
    replay_checkpoint_interval: float | None = 60.0
    #: Drop frames whose ``from`` is neither empty nor the connected peer's ID.
    #: Off by default: a relayed broadcast keeps its originator in ``from``.
    strict_sender: bool = False
    #: Also pass ping/pong/disconnect to the message handler.
    deliver_control_messages: bool = False
    #: Browser ``Origin`` hosts allowed to connect (no Origin header: allowed).
    allowed_origin_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    #: At most this many drop warnings per connection per minute reach the log.
    drop_log_per_minute: int = 6
    #: Protocols this node speaks (docs/protocol.md): ``max_protocol="2.0"``
    #: offers and accepts protocol 2.0 (Noise, forward secrecy) with other
    #: smsgnet nodes and falls back to 1.0 with the Go nodes; ``"1.0"`` never
    #: offers it. ``min_protocol="2.0"`` refuses 1.0 links altogether (a mesh
    #: without Go nodes). A peer once seen on 2.0 is refused on 1.0 anyway.
    min_protocol: str = "1.0"
    max_protocol: str = "2.0"
    #: A 2.0 link rekeys its sending key after this many messages (0: never).
    rekey_interval: int = 1 << 16

    def __post_init__(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
            if v < 0 or (v == 0 and not allow_zero):
                raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")

        def integer(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")

        if self.listen_addr is not None:
            if not isinstance(self.listen_addr, str) or ":" not in self.listen_addr:
                raise ConfigError(f"listen_addr must look like HOST:PORT or be None, got {self.listen_addr!r}")
            host, _, port = self.listen_addr.rpartition(":")
            if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
                raise ConfigError(f"listen_addr port must be 0-65535, got {self.listen_addr!r}")
        if not isinstance(self.ws_path, str) or not self.ws_path.startswith("/"):
            raise ConfigError(f"ws_path must start with '/', got {self.ws_path!r}")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigError("tls_cert_path and tls_key_path must be set together")
        integer("max_conns", 1)
        if self.max_pending is not None:
            integer("max_pending", 1)
        integer("max_pending_per_peer", 1)
        integer("max_pending_per_address", 1)
        if self.proof_timeout is not None:
            positive("proof_timeout")
        positive("reconnect_initial_delay")
        positive("reconnect_max_delay")
        positive("reconnect_factor")
        if self.reconnect_factor < 1:
            raise ConfigError(f"reconnect_factor must be >= 1, got {self.reconnect_factor!r}")
        integer("max_message_size", 64)
        for name in ("ping_interval", "pong_timeout", "handshake_timeout", "write_timeout",
                     "dedup_ttl", "dedup_sweep_interval"):
            positive(name)
        positive("rate_limit_per_sec", allow_zero=True)
        positive("max_clock_skew", allow_zero=True)
        if self.rate_limit_burst is not None:
            integer("rate_limit_burst", 1)
        integer("dedup_max_entries", 1)
        for name in ("dedup_max_entries_per_peer", "dedup_max_peers"):
            if getattr(self, name) is not None:
                integer(name, 1)
        if self.state_dir is not None and not isinstance(self.state_dir, (str, os.PathLike)):
            raise ConfigError(f"state_dir must be a directory path or None, got {self.state_dir!r}")
        positive("replay_skew_allowance", allow_zero=True)
        if self.replay_checkpoint_interval is not None:
            positive("replay_checkpoint_interval")
        integer("max_send_queue_bytes", 1)
        if self.max_send_queue_bytes < self.max_message_size:
            raise ConfigError(f"max_send_queue_bytes must be >= max_message_size ({self.max_message_size}), "
                              f"got {self.max_send_queue_bytes!r}")
        integer("receive_queue_frames", 1)
        integer("message_queue_size", 1)
        if not isinstance(self.peer_rate_limits, Mapping):
            raise ConfigError("peer_rate_limits must map a node ID or public key to (burst, per_sec)")
        for who, limit in self.peer_rate_limits.items():
            ok = (isinstance(who, str) and isinstance(limit, tuple) and len(limit) == 2
                  and (limit[0] is None or (type(limit[0]) is int and limit[0] >= 1))
                  and isinstance(limit[1], (int, float)) and not isinstance(limit[1], bool)
                  and math.isfinite(limit[1]) and limit[1] >= 0)
            if not ok:
                raise ConfigError(f"peer_rate_limits[{who!r}] must be (burst >= 1 or None, per_sec >= 0), "
                                  f"got {limit!r}")
        integer("drop_log_per_minute", 0)
        for name in ("min_protocol", "max_protocol"):
            if getattr(self, name) not in PROTOCOLS:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, PROTOCOLS))}, "
                                  f"got {getattr(self, name)!r}")
        if PROTOCOLS.index(self.min_protocol) > PROTOCOLS.index(self.max_protocol):
            raise ConfigError(f"min_protocol {self.min_protocol!r} is above max_protocol {self.max_protocol!r}")
        integer("rekey_interval", 0)
        if not isinstance(self.allowed_origin_hosts, tuple):
            raise ConfigError("allowed_origin_hosts must be a tuple of host names")

    @property
    def listens(self) -> bool:
        """False for a client-only node (``listen_addr=None``)."""
        return self.listen_addr is not None

    @property
    def host(self) -> str:
        """Listen host ('' = every interface); IPv6 brackets removed ('' when not listening)."""
        host = (self.listen_addr or "").rpartition(":")[0]
        return host[1:-1] if host.startswith("[") and host.endswith("]") else host

    @property
    def port(self) -> int:
        """Listen port (0 = pick a free one; 0 when not listening)."""
        return int(self.listen_addr.rpartition(":")[2]) if self.listen_addr is not None else 0

    def rate_limit_for(self, peer_id: str, public_key: str) -> tuple[int | None, float]:
        """The token bucket (burst, per second) for one peer: its override, or the default."""
        limits = self.peer_rate_limits
        if limits:
            found = limits.get(peer_id) or limits.get(public_key)
            if found is not None:
                return found
        return self.rate_limit_burst, self.rate_limit_per_sec

    @property
    def proof_deadline(self) -> float:
        """Seconds an inbound connection has to prove its key."""
        return self.proof_timeout if self.proof_timeout is not None else self.idle_limit

    @property
    def pending_limit(self) -> int:
        """Most inbound connections pending proof of key at once."""
        return self.max_pending if self.max_pending is not None else self.max_conns

    @property
    def offers_protocol_2(self) -> bool:
        """True when this node offers and accepts protocol 2.0."""
        return self.max_protocol == "2.0"

    @property
    def tls_enabled(self) -> bool:
        """True when the node serves ``wss://``."""
        return self.tls_cert_path is not None

    @property
    def idle_limit(self) -> float:
        """Silence after which a connection is closed: ping interval + pong timeout."""
        return self.ping_interval + self.pong_timeout

    def as_dict(self) -> dict[str, object]:
        """Every field and its value (for docs and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
