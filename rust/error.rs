//! The one error type of the core. The Python bindings map each variant to one
//! exception class in `smsgnet.exceptions` (see `python/errors.rs`).

use std::fmt;

/// Why an operation of the core failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A key had the wrong length (caller error).
    KeyLength { what: &'static str, got: usize },
    /// The X25519 result was all zeros: the peer's public key is a low-order point.
    LowOrderPoint,
    /// The operating system's random generator failed.
    Random,
    /// The caller passed something the core cannot seal (e.g. non-UTF-8 text).
    InvalidInput(&'static str),
    /// The frame ends before its container header is complete.
    Truncated(&'static str),
    /// The frame does not start with "SMSG".
    BadMagic,
    /// The container version byte is not 0x02.
    UnsupportedContainerVersion(u8),
    /// The declared header length is above the 16 MiB limit.
    HeaderTooLarge(u32),
    /// The header is not a JSON object, or a header check (checksum) failed.
    HeaderInvalid(String),
    /// The header asks for a compression the transport never uses.
    UnsupportedCompression(String),
    /// The header asks for a payload format the transport never uses.
    UnsupportedFormat(String),
    /// The AEAD tag did not verify (wrong key, any altered byte, short payload).
    AuthenticationFailed,
    /// The decrypted envelope is not `{"body": "...", ...}`.
    EnvelopeInvalid(String),
    /// The envelope body is not a transport Message.
    MessageInvalid(String),
    /// A protocol 2.0 handshake message did not verify or could not be made.
    NoiseHandshake(String),
    /// A protocol 2.0 frame opened but its records are not laid out as the spec says.
    RecordInvalid(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::KeyLength { what, got } => {
                write!(f, "{what} must be 32 bytes, got {got}")
            }
            CoreError::LowOrderPoint => write!(
                f,
                "peer public key is a low-order point: the X25519 result is all zeros"
            ),
            CoreError::Random => write!(f, "the operating system random generator failed"),
            CoreError::InvalidInput(why) => write!(f, "{why}"),
            CoreError::Truncated(what) => write!(f, "frame truncated: {what}"),
            CoreError::BadMagic => write!(f, "bad magic: frame does not start with \"SMSG\""),
            CoreError::UnsupportedContainerVersion(v) => {
                write!(f, "unsupported container version 0x{v:02x} (expected 0x02)")
            }
            CoreError::HeaderTooLarge(n) => {
                write!(f, "header length {n} exceeds the 16 MiB maximum")
            }
            CoreError::HeaderInvalid(why) => write!(f, "invalid header: {why}"),
            CoreError::UnsupportedCompression(c) => {
                write!(f, "unsupported compression {c:?} (the transport never compresses)")
            }
            CoreError::UnsupportedFormat(c) => {
                write!(f, "unsupported payload format {c:?}")
            }
            CoreError::AuthenticationFailed => write!(f, "authentication failed"),
            CoreError::EnvelopeInvalid(why) => write!(f, "invalid envelope: {why}"),
            CoreError::MessageInvalid(why) => write!(f, "invalid transport message: {why}"),
            CoreError::NoiseHandshake(why) => write!(f, "protocol 2.0 handshake failed: {why}"),
            CoreError::RecordInvalid(why) => write!(f, "invalid protocol 2.0 record: {why}"),
        }
    }
}

impl std::error::Error for CoreError {}
