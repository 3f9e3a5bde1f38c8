//! Every fixed length of smsgnet's cryptography, in one place.
//!
//! All keys are 32 bytes: the X25519 private and public keys, the shared
//! secret of a pair (SHA-256 of the X25519 result), the HMAC-SHA256 challenge
//! response and the XChaCha20-Poly1305 key of a pair's frames. The nonce of a
//! frame is XChaCha20's 24 bytes, the Poly1305 tag 16. `keys`, `aead`,
//! `nonce`, `smsg` and the Python bindings take their sizes from here, so a
//! length check, an array type and an error message can never disagree.

/// X25519 private and public keys, the shared secret, the AEAD key.
pub const KEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce (also what the SMSG keystream is derived from).
pub const NONCE_LEN: usize = 24;
/// Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// HMAC-SHA256 output: the handshake's challenge response.
pub const MAC_LEN: usize = 32;
