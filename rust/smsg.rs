//! The SMSG v1 container as the transport uses it (PROTOCOL.md §4).
//!
//! ```text
//! "SMSG" | 0x02 | u32be N | header JSON (N bytes) | nonce (24) | XChaCha20-Poly1305(obfuscated envelope) | tag (16)
//! envelope   = {"body":"<transport Message JSON as a JSON string>","timestamp":<unix seconds>}
//! obfuscated = envelope XOR (SHA-256(nonce ‖ u64be 0) ‖ SHA-256(nonce ‖ u64be 1) ‖ …)
//! ```
//!
//! `seal` writes the envelope straight into the output frame, XORs the
//! keystream over it and encrypts in place: one allocation per frame. `open`
//! checks the container without allocating anything the frame did not pay for,
//! then decrypts, strips the keystream and unescapes the body.

use std::borrow::Cow;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::Deserialize;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::CoreError;

pub const MAGIC: &[u8; 4] = b"SMSG";
pub const CONTAINER_VERSION: u8 = 0x02;
/// The header the reference always writes (keys in alphabetical order, 48 bytes).
pub const HEADER: &[u8] = br#"{"algorithm":"chacha20poly1305","version":"1.0"}"#;
/// Largest header length a frame may declare (the reference's MaxHeaderSize).
pub const MAX_HEADER_LEN: u32 = 16 << 20;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 4 + 1 + 4;

/// Large inputs: above this many bytes the Python bindings release the GIL.
pub const LARGE_FRAME: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Keystream

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3). The compression function
/// itself comes from the `sha2` crate.
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// XOR `data` with SHA-256(nonce ‖ u64be(0)) ‖ SHA-256(nonce ‖ u64be(1)) ‖ …
///
/// nonce ‖ counter is exactly 32 bytes, so every keystream block is the hash of
/// one padded 64-byte block: one call of the compression function, with the
/// padding laid out once instead of going through the streaming hasher.
pub fn xor_keystream(nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
    let mut block = [0u8; 64];
    block[..NONCE_LEN].copy_from_slice(nonce);
    block[32] = 0x80; // padding bit
    block[62] = 0x01; // message length: 256 bits, big-endian in the last 8 bytes
    let mut counter: u64 = 0;
    for chunk in data.chunks_mut(32) {
        block[24..32].copy_from_slice(&counter.to_be_bytes());
        let mut state = SHA256_IV;
        sha2::compress256(&mut state, std::slice::from_ref(GenericArray::from_slice(&block)));
        let mut ks = [0u8; 32];
        for (out, word) in ks.chunks_exact_mut(4).zip(state.iter()) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        for (d, k) in chunk.iter_mut().zip(ks.iter()) {
            *d ^= *k;
        }
        counter = counter.wrapping_add(1);
    }
}

/// The first `len` bytes of the keystream for `nonce` (for tests and vectors).
pub fn keystream(nonce: &[u8; NONCE_LEN], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    xor_keystream(nonce, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Envelope escaping (Go's encoding/json with HTML escaping)

/// 0 = copy as is; b'x' = needs the escape routine.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'x';
        i += 1;
    }
    t[b'"' as usize] = b'x';
    t[b'\\' as usize] = b'x';
    t[b'<' as usize] = b'x';
    t[b'>' as usize] = b'x';
    t[b'&' as usize] = b'x';
    t[0xE2] = b'x'; // first byte of U+2028 / U+2029
    t
};

/// Append `s` to `out` as the inside of a JSON string, escaped the way the
/// reference's inner `json.Marshal` does it.
pub fn escape_go_json_into(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if ESCAPE[b as usize] == 0 {
            i += 1;
            continue;
        }
        if b == 0xE2 {
            if i + 2 < s.len() && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9) {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(if s[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
                start = i;
            } else {
                i += 1;
            }
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
}

/// The envelope bytes for a message (for tests and vectors).
pub fn envelope(message_json: &[u8], timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(message_json.len() + message_json.len() / 8 + 48);
    write_envelope(&mut out, message_json, timestamp);
    out
}

fn write_envelope(out: &mut Vec<u8>, message_json: &[u8], timestamp: i64) {
    out.extend_from_slice(b"{\"body\":\"");
    escape_go_json_into(out, message_json);
    out.extend_from_slice(b"\",\"timestamp\":");
    out.extend_from_slice(timestamp.to_string().as_bytes());
    out.push(b'}');
}

// ---------------------------------------------------------------------------
// The transport Message, as much of it as the core needs

/// The string fields of a transport Message, borrowed from its JSON where
/// possible; `payload` and unknown keys are skipped without being built.
#[derive(Debug, Default, Deserialize)]
pub struct MessageHead<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ts: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "replyTo")]
    pub reply_to: Option<Cow<'a, str>>,
}

fn starts_with_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Parse the head of a transport Message; the JSON must be one object.
pub fn parse_message_head(body: &[u8]) -> Result<MessageHead<'_>, CoreError> {
    if !starts_with_object(body) {
        return Err(CoreError::MessageInvalid("not a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| CoreError::MessageInvalid(e.to_string()))
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
}

fn body_of_envelope(plain: &[u8]) -> Result<Vec<u8>, CoreError> {
    if !starts_with_object(plain) {
        return Err(CoreError::EnvelopeInvalid("not a JSON object".into()));
    }
    let env: Envelope<'_> =
        serde_json::from_slice(plain).map_err(|e| CoreError::EnvelopeInvalid(e.to_string()))?;
    match env.body {
        Some(body) => Ok(body.into_owned().into_bytes()),
        None => Err(CoreError::EnvelopeInvalid("no body".into())),
    }
}

// ---------------------------------------------------------------------------
// Container

/// What the container header says about the payload, once checked.
fn check_header(header: &[u8], payload: &[u8]) -> Result<(), CoreError> {
    if header == HEADER {
        return Ok(()); // what every reference node writes: nothing to look at
    }
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| CoreError::HeaderInvalid(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| CoreError::HeaderInvalid("not a JSON object".into()))?;
    let text = |key: &str| -> Option<&str> { obj.get(key).and_then(|v| v.as_str()) };
    if let Some(c) = obj.get("compression") {
        match c.as_str() {
            None if c.is_null() => {}
            Some("") | Some("none") => {}
            Some(other) => return Err(CoreError::UnsupportedCompression(other.to_string())),
            None => return Err(CoreError::UnsupportedCompression(c.to_string())),
        }
    }
    if let Some(f) = obj.get("format") {
        match f.as_str() {
            None if f.is_null() => {}
            Some("") | Some("v1") => {}
            Some(other) => return Err(CoreError::UnsupportedFormat(other.to_string())),
            None => return Err(CoreError::UnsupportedFormat(f.to_string())),
        }
    }
    if let Some(expected) = text("checksum").filter(|s| !s.is_empty()) {
        match text("checksum_algo").unwrap_or("sha256") {
            "sha256" | "" => {
                let actual = crate::keys::hex(&Sha256::digest(payload));
                if !actual.eq_ignore_ascii_case(expected) {
                    return Err(CoreError::HeaderInvalid("checksum mismatch".into()));
                }
            }
            other => {
                return Err(CoreError::HeaderInvalid(format!(
                    "unsupported checksum algorithm {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// Split a frame into (header, payload) after checking magic, version and the
/// declared header length. Nothing is allocated: a frame that declares a
/// header longer than what follows is refused before any buffer exists.
pub fn split_container(frame: &[u8]) -> Result<(&[u8], &[u8]), CoreError> {
    if frame.len() < 4 {
        return Err(CoreError::Truncated(if frame.is_empty() { "empty frame" } else { "inside the magic" }));
    }
    if &frame[..4] != MAGIC {
        return Err(CoreError::BadMagic);
    }
    if frame.len() < 5 {
        return Err(CoreError::Truncated("before the version byte"));
    }
    if frame[4] != CONTAINER_VERSION {
        return Err(CoreError::UnsupportedContainerVersion(frame[4]));
    }
    if frame.len() < PREFIX_LEN {
        return Err(CoreError::Truncated("inside the header length"));
    }
    let n = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
    if n > MAX_HEADER_LEN {
        return Err(CoreError::HeaderTooLarge(n));
    }
    let n = n as usize;
    if frame.len() - PREFIX_LEN < n {
        return Err(CoreError::Truncated("header longer than the frame"));
    }
    Ok((&frame[PREFIX_LEN..PREFIX_LEN + n], &frame[PREFIX_LEN + n..]))
}

/// Seals and opens frames for one pair of nodes. Holds the XChaCha20-Poly1305
/// key (SHA-256 of the base64 password), zeroed on drop.
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    /// Derive the SMSG password (base64 of the shared secret) and key once.
    pub fn new(shared_secret: &[u8]) -> Result<Cipher, CoreError> {
        if shared_secret.len() != 32 {
            return Err(CoreError::KeyLength { what: "shared secret", got: shared_secret.len() });
        }
        let password = Zeroizing::new(password(shared_secret));
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Sha256::digest(password.as_bytes()));
        Ok(Cipher { aead: XChaCha20Poly1305::new(GenericArray::from_slice(&key[..])) })
    }

    /// Seal one transport Message JSON into a frame.
    pub fn seal(&self, message_json: &[u8], nonce: &[u8; NONCE_LEN], timestamp: i64) -> Result<Vec<u8>, CoreError> {
        if std::str::from_utf8(message_json).is_err() {
            return Err(CoreError::InvalidInput("message JSON is not valid UTF-8"));
        }
        let start = PREFIX_LEN + HEADER.len() + NONCE_LEN;
        let mut frame =
            Vec::with_capacity(start + message_json.len() + message_json.len() / 8 + 64 + TAG_LEN);
        frame.extend_from_slice(MAGIC);
        frame.push(CONTAINER_VERSION);
        frame.extend_from_slice(&(HEADER.len() as u32).to_be_bytes());
        frame.extend_from_slice(HEADER);
        frame.extend_from_slice(nonce);
        write_envelope(&mut frame, message_json, timestamp);
        xor_keystream(nonce, &mut frame[start..]);
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), b"", &mut frame[start..])
            .map_err(|_| CoreError::InvalidInput("message too large to seal"))?;
        frame.extend_from_slice(&tag);
        Ok(frame)
    }

    /// Open a frame and return the envelope's body (the transport Message JSON).
    pub fn open_body(&self, frame: &[u8]) -> Result<Vec<u8>, CoreError> {
        let (header, payload) = split_container(frame)?;
        check_header(header, payload)?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(CoreError::AuthenticationFailed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = ciphertext.to_vec();
        self.aead
            .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", &mut plain, Tag::from_slice(tag))
            .map_err(|_| CoreError::AuthenticationFailed)?;
        let nonce: &[u8; NONCE_LEN] = match nonce.try_into() {
            Ok(n) => n,
            Err(_) => return Err(CoreError::AuthenticationFailed),
        };
        xor_keystream(nonce, &mut plain);
        body_of_envelope(&plain)
    }

    /// Open a frame, check that the body is a transport Message, return the body.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, CoreError> {
        let body = self.open_body(frame)?;
        parse_message_head(&body)?;
        Ok(body)
    }
}

/// SMSG password: standard base64 (with padding) of the shared secret.
pub fn password(shared_secret: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(shared_secret)
}

/// A fresh random nonce from the OS generator.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], CoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|_| CoreError::Random)?;
    Ok(nonce)
}

/// Current UNIX time in whole seconds (the envelope timestamp).
pub fn unix_seconds() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Vec<u8> {
        crate::keys::derive_shared_secret(
            &[0x42; 32],
            &crate::keys::public_key(&[7u8; 32]).unwrap(),
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let c = Cipher::new(&secret()).unwrap();
        let msg = br#"{"id":"x","type":"t","payload":{"a":"<&>\"\u2028"}}"#;
        let frame = c.seal(msg, &[9u8; 24], 1735689600).unwrap();
        assert_eq!(c.open(&frame).unwrap(), msg.to_vec());
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            // flipping a header byte may still parse (the header is not authenticated)
            // but never yields a different message
            if let Ok(body) = c.open(&bad) {
                assert_eq!(body, msg.to_vec());
            }
        }
    }

    #[test]
    fn container_checks_come_before_allocation() {
        let mut frame = Vec::from(&b"SMSG\x02"[..]);
        frame.extend_from_slice(&(16u32 << 20).to_be_bytes());
        frame.extend_from_slice(&[0u8; 48]);
        assert!(matches!(split_container(&frame), Err(CoreError::Truncated(_))));
        frame[5..9].copy_from_slice(&((16u32 << 20) + 1).to_be_bytes());
        assert!(matches!(split_container(&frame), Err(CoreError::HeaderTooLarge(_))));
        assert_eq!(split_container(b"SMSX\x02"), Err(CoreError::BadMagic));
        assert_eq!(split_container(b"SMSG\x01"), Err(CoreError::UnsupportedContainerVersion(1)));
    }

    #[test]
    fn go_escaping() {
        let mut out = Vec::new();
        escape_go_json_into(&mut out, "a\"\\\n\r\t\u{1}<>&\u{2028}\u{2029}é🚀".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\"\\\\\\n\\r\\t\\u0001\\u003c\\u003e\\u0026\\u2028\\u2029é🚀"
        );
    }
}
