"""Every exception smsgnet raises, in one tree.

::

    SmsgnetError
    ├── ConfigError (ValueError)          you configured it wrong
    ├── InvalidKeyError (ValueError)      a key of the wrong length, or a low-order peer key
    │   └── IdentityMismatchError         a node ID that is not the hash of its public key
    ├── IdentityError                     the identity on disk is missing, unreadable or corrupt
    ├── SealError (ValueError)            what you asked to send cannot be sealed: empty type, payload not JSON
    │   └── MessageTooLarge               larger than this node's max_message_size (nothing was sent)
    ├── SmsgError                         a frame could not be opened (the peer sent garbage)
    │   ├── FrameTruncatedError           the frame ends inside its container header
    │   ├── BadMagicError                 the frame does not start with "SMSG"
    │   ├── UnsupportedContainerVersionError
    │   ├── HeaderTooLargeError           declared header length above 16 MiB
    │   ├── InvalidHeaderError            header not a JSON object, or its checksum is wrong
    │   ├── UnsupportedCompressionError   header asks for gzip/zstd
    │   ├── UnsupportedFormatError        header asks for format v2
    │   ├── AuthenticationFailedError     the AEAD tag did not verify (says nothing more)
    │   ├── InvalidEnvelopeError          decrypted bytes are not an SMSG envelope
    │   ├── InvalidMessageError           the envelope body is not a transport Message
    │   └── InvalidRecordError            a protocol 2.0 frame's records are not laid out as specified
    ├── ProtocolError                     the peer broke the protocol outside a frame
    ├── HandshakeError                    the handshake did not complete
    │   ├── HandshakeRefused              the peer said accepted:false (``.reason``)
    │   ├── HandshakeTimeout              it did not finish in time
    │   ├── PeerAuthenticationError       the peer's identity or proof is wrong (or a 2.0 handshake message)
    │   └── DowngradeRefused              the link would run protocol 1.0 where 2.0 is required
    ├── TransportError                    the transport cannot do what you asked
    │   ├── ConnectFailedError (ConnectionError)  could not reach or upgrade to the peer
    │   ├── NotConnectedError             no connection to that peer
    │   ├── TransportStopped              the transport was stopped (it cannot start again)
    │   ├── SendQueueFull                 too many bytes already waiting to be written to that peer
    │   └── ConnectionClosedError         the connection closed (``.code``, ``.reason``)
    ├── RequestTimeout (TimeoutError)     request(): no reply in time
    ├── RemoteError                       request(): the peer answered with an ``error`` message
    ├── RegistryError                     the peer registry refused a change
    └── ReplayStateError (ValueError)     the saved replay state is unusable, or its directory is in use

"Authentication failed" errors deliberately say nothing about where the
frame went wrong.
"""

from __future__ import annotations

__all__ = [
    "SmsgnetError",
    "ConfigError",
    "InvalidKeyError",
    "IdentityMismatchError",
    "IdentityError",
    "SealError",
    "MessageTooLarge",
    "SmsgError",
    "FrameTruncatedError",
    "BadMagicError",
    "UnsupportedContainerVersionError",
    "HeaderTooLargeError",
    "InvalidHeaderError",
    "UnsupportedCompressionError",
    "UnsupportedFormatError",
    "AuthenticationFailedError",
    "InvalidEnvelopeError",
    "InvalidMessageError",
    "InvalidRecordError",
    "ProtocolError",
    "HandshakeError",
    "HandshakeRefused",
    "HandshakeTimeout",
    "PeerAuthenticationError",
    "DowngradeRefused",
    "TransportError",
    "ConnectFailedError",
    "NotConnectedError",
    "TransportStopped",
    "SendQueueFull",
    "RequestTimeout",
    "RemoteError",
    "ConnectionClosedError",
    "RegistryError",
    "ReplayStateError",
]


class SmsgnetError(Exception):
    """Base class of every error smsgnet raises."""


class ConfigError(SmsgnetError, ValueError):
    """A configuration value or an argument is invalid; the message names it."""


class InvalidKeyError(SmsgnetError, ValueError):
    """A key has the wrong length or encoding, or the peer key is a low-order point."""


class IdentityMismatchError(InvalidKeyError):
    """A node ID is not the first 16 bytes of SHA-256 of the public key it came with."""


class IdentityError(SmsgnetError):
    """The node identity on disk is missing, unreadable, or does not match its key."""


class SealError(SmsgnetError, ValueError):
    """The message cannot be sealed (for example, it is not valid UTF-8)."""


class MessageTooLarge(SealError):
    """The sealed message would exceed this node's ``max_message_size``; nothing was sent
    and the connection stays up."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message too large: {size} bytes sealed, max_message_size is {limit}")
        self.size = size
        self.limit = limit


class SmsgError(SmsgnetError):
    """A frame could not be opened. Subclasses say what was wrong."""


class FrameTruncatedError(SmsgError):
    """The frame ends before its container header is complete."""


class BadMagicError(SmsgError):
    """The frame does not start with the magic bytes ``SMSG``."""


class UnsupportedContainerVersionError(SmsgError):
    """The container version byte is not 0x02."""


class HeaderTooLargeError(SmsgError):
    """The frame declares a header longer than 16 MiB."""


class InvalidHeaderError(SmsgError):
    """The container header is not a JSON object, or its checksum does not match."""


class UnsupportedCompressionError(SmsgError):
    """The header asks for a compression (gzip, zstd) the transport never uses."""


class UnsupportedFormatError(SmsgError):
    """The header asks for a payload format (v2) the transport never uses."""


class AuthenticationFailedError(SmsgError):
    """The frame did not authenticate: wrong key or altered bytes."""


class InvalidEnvelopeError(SmsgError):
    """The decrypted payload is not an SMSG envelope with a ``body``."""


class InvalidMessageError(SmsgError):
    """The envelope's body is not a transport Message."""


class InvalidRecordError(SmsgError):
    """A protocol 2.0 frame opened, but its records are not laid out as
    ``docs/protocol.md`` specifies (flags byte, a short middle record)."""


class ProtocolError(SmsgnetError):
    """The peer broke the protocol (wrong frame type, bad handshake JSON, ...)."""


class HandshakeError(SmsgnetError):
    """The handshake did not complete."""


class HandshakeRefused(HandshakeError):
    """The responder answered ``accepted: false``; ``reason`` is its reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"handshake refused by peer: {reason}")
        self.reason = reason


class HandshakeTimeout(HandshakeError, TimeoutError):
    """The handshake did not finish within the configured time."""


class PeerAuthenticationError(HandshakeError):
    """The peer's identity is inconsistent, or it could not prove it holds its key."""


class DowngradeRefused(HandshakeError):
    """The link would run protocol 1.0, but 2.0 is required: ``min_protocol``
    is ``"2.0"``, or the peer was seen on 2.0 before (the registry remembers;
    :meth:`~smsgnet.PeerRegistry.forget_protocol` clears that)."""


class TransportError(SmsgnetError):
    """The transport cannot do what was asked (not started, stopped, ...)."""


class ConnectFailedError(TransportError, ConnectionError):
    """The peer could not be reached, or refused the WebSocket upgrade (e.g. HTTP 503)."""


class NotConnectedError(TransportError, LookupError):
    """There is no live connection to that peer."""


class TransportStopped(TransportError):
    """The transport has been stopped; a stopped transport cannot be started
    again (create a new one)."""


class SendQueueFull(TransportError):
    """More than ``max_send_queue_bytes`` are already waiting to be written to that
    peer (it reads too slowly); this message was not sent, the connection stays up."""


class RequestTimeout(SmsgnetError, TimeoutError):
    """``request()`` got no reply within its timeout."""


class RemoteError(SmsgnetError):
    """The peer answered a ``request()`` with an ``error`` message
    (``code``, ``message``, ``details`` from its payload)."""

    def __init__(self, code: int, message: str, details: str = "") -> None:
        text = f"peer answered with error {code}: {message}"
        super().__init__(text + (f" ({details})" if details else ""))
        self.code = code
        self.message = message
        self.details = details


class ConnectionClosedError(TransportError):
    """The connection is closed; ``code`` and ``reason`` say how, when known."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class RegistryError(SmsgnetError):
    """The peer registry refused a change, or its file could not be used."""


class ReplayStateError(SmsgnetError, ValueError):
    """The saved replay state is unusable (truncated, corrupt, too large, another
    version), or the state directory is in use by another running node."""
