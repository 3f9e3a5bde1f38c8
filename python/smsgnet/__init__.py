"""smsgnet: encrypted peer-to-peer WebSocket transport.

Nodes identify each other by X25519 keys, prove themselves with an HMAC
challenge-response handshake, and seal every message in an SMSG container
(XChaCha20-Poly1305). Wire-compatible with the reference Go nodes.
"""

from smsgnet.config import TransportConfig
from smsgnet.connection import ConnectionState, ConnectionStats, PeerConnection
from smsgnet.exceptions import *  # noqa: F403
from smsgnet.exceptions import __all__ as _exceptions_all
from smsgnet.handshake import PROTOCOL_VERSION, HandshakeResult, Initiator, Responder
from smsgnet.identity import NodeIdentity, NodeManager, NodeRole
from smsgnet.message import (
    DisconnectCode,
    DisconnectPayload,
    ErrorCode,
    ErrorPayload,
    HandshakeAckPayload,
    HandshakePayload,
    Message,
    MessageType,
    PingPayload,
    PongPayload,
    format_timestamp,
    parse_timestamp,
)
from smsgnet.registry import AuthMode, Peer, PeerRegistry
from smsgnet.transport import ConnectionHandler, MessageHandler, Transport, TransportStats, build_url

__version__ = "0.1.0"

__all__ = [
    "TransportConfig",
    "Transport",
    "TransportStats",
    "MessageHandler",
    "ConnectionHandler",
    "PeerConnection",
    "ConnectionState",
    "ConnectionStats",
    "NodeManager",
    "NodeIdentity",
    "NodeRole",
    "Peer",
    "PeerRegistry",
    "AuthMode",
    "Message",
    "MessageType",
    "DisconnectCode",
    "ErrorCode",
    "PingPayload",
    "PongPayload",
    "DisconnectPayload",
    "ErrorPayload",
    "HandshakePayload",
    "HandshakeAckPayload",
    "Initiator",
    "Responder",
    "HandshakeResult",
    "PROTOCOL_VERSION",
    "build_url",
    "format_timestamp",
    "parse_timestamp",
    *_exceptions_all,
]
