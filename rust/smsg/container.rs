//! The SMSG container around a sealed envelope, and the `Cipher` that seals
//! and opens frames for one pair of nodes.
//!
//! ```text
//! "SMSG" | 0x02 | u32be N | header JSON (N bytes) | nonce (24) | ciphertext | tag (16)
//! ```
//!
//! # Theory of operation
//!
//! **Seal**, one allocation per frame: the prefix, the fixed header and the
//! nonce are written, the envelope is escaped straight after them
//! (`envelope`), the keystream is XORed over it (`keystream`), the AEAD
//! (`crate::aead`) encrypts in place and the tag is appended. `seal_for_all`
//! escapes the envelope once and repeats only the per-key part (nonce,
//! keystream, AEAD) for each cipher.
//!
//! **Open**, cheapest refusal first: magic, version and the declared header
//! length are checked before anything is allocated (a frame cannot make us
//! reserve more than it is long); the header is parsed only when it is not
//! the one every reference node writes; then the tag is verified, the
//! keystream stripped and the body unescaped. An AEAD failure says only
//! `AuthenticationFailed`. The header is not authenticated: altering it can
//! make a frame fail, never change the message.
//!
//! Key: SHA-256 of the SMSG password (standard base64 of the pair's shared
//! secret), derived once per `Cipher` and zeroed on drop.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::envelope::{body_of_envelope, envelope, write_envelope};
use super::keystream::xor_keystream;
use super::message::parse_message_head;
use crate::aead::XChaCha20Poly1305;
use crate::error::CoreError;
use crate::sizes::{KEY_LEN, NONCE_LEN, TAG_LEN};

pub const MAGIC: &[u8; 4] = b"SMSG";
pub const CONTAINER_VERSION: u8 = 0x02;
/// The header the reference always writes (keys in alphabetical order, 48 bytes).
pub const HEADER: &[u8] = br#"{"algorithm":"chacha20poly1305","version":"1.0"}"#;
/// Largest header length a frame may declare (the reference's MaxHeaderSize).
pub const MAX_HEADER_LEN: u32 = 16 << 20;
const PREFIX_LEN: usize = 4 + 1 + 4;

/// Large inputs: above this many bytes the Python bindings release the GIL.
pub const LARGE_FRAME: usize = 64 * 1024;

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
        if shared_secret.len() != KEY_LEN {
            return Err(CoreError::KeyLength { what: "shared secret", got: shared_secret.len() });
        }
        let password = Zeroizing::new(password(shared_secret));
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&Sha256::digest(password.as_bytes()));
        Ok(Cipher { aead: XChaCha20Poly1305::new(&key) })
    }

    /// Seal one transport Message JSON into a frame.
    pub fn seal(&self, message_json: &[u8], nonce: &[u8; NONCE_LEN], timestamp: i64) -> Result<Vec<u8>, CoreError> {
        if std::str::from_utf8(message_json).is_err() {
            return Err(CoreError::InvalidInput("message JSON is not valid UTF-8"));
        }
        let start = PREFIX_LEN + HEADER.len() + NONCE_LEN;
        // Room for the escapes of a typical Message (every JSON key and string
        // value costs two escaped quotes) so that the frame is rarely regrown.
        let n = message_json.len();
        let slack = if n <= LARGE_FRAME { n / 2 } else { n / 8 };
        let mut frame = Vec::with_capacity(start + n + slack + 64 + TAG_LEN);
        write_prefix(&mut frame, nonce);
        write_envelope(&mut frame, message_json, timestamp);
        self.encrypt_from(&mut frame, start, nonce)?;
        Ok(frame)
    }

    /// XOR the keystream over `frame[start..]`, encrypt it in place and append the tag.
    #[inline(always)]
    fn encrypt_from(&self, frame: &mut Vec<u8>, start: usize, nonce: &[u8; NONCE_LEN]) -> Result<(), CoreError> {
        xor_keystream(nonce, &mut frame[start..]);
        let tag = self
            .aead
            .seal_in_place(nonce, &mut frame[start..])
            .map_err(|_| CoreError::InvalidInput("message too large to seal"))?;
        frame.extend_from_slice(&tag);
        Ok(())
    }

    /// A frame around any plaintext, envelope or not (fuzz and tests only: it
    /// reaches the parsers behind the AEAD with bytes `seal` never writes).
    #[cfg(test)]
    pub(crate) fn seal_plaintext(&self, plain: &[u8], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(PREFIX_LEN + HEADER.len() + NONCE_LEN + plain.len() + TAG_LEN);
        write_prefix(&mut frame, nonce);
        let start = frame.len();
        frame.extend_from_slice(plain);
        xor_keystream(nonce, &mut frame[start..]);
        let tag = self.aead.seal_in_place(nonce, &mut frame[start..]).expect("fuzz plaintexts are small");
        frame.extend_from_slice(&tag);
        frame
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
        let (nonce, tag): (&[u8; NONCE_LEN], &[u8; TAG_LEN]) = match (nonce.try_into(), tag.try_into()) {
            (Ok(n), Ok(t)) => (n, t),
            _ => return Err(CoreError::AuthenticationFailed),
        };
        let mut plain = ciphertext.to_vec();
        self.aead.open_in_place(nonce, &mut plain, tag).map_err(|_| CoreError::AuthenticationFailed)?;
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

/// Everything of a frame before the ciphertext: magic, version, header length,
/// the fixed header, the nonce.
#[inline(always)]
fn write_prefix(frame: &mut Vec<u8>, nonce: &[u8; NONCE_LEN]) {
    frame.extend_from_slice(MAGIC);
    frame.push(CONTAINER_VERSION);
    frame.extend_from_slice(&(HEADER.len() as u32).to_be_bytes());
    frame.extend_from_slice(HEADER);
    frame.extend_from_slice(nonce);
}

/// Seal one transport Message JSON for several peers in one pass: frame `i`
/// is byte for byte what `ciphers[i].seal(message_json, &nonces[i], timestamp)`
/// returns, but the envelope is escaped once for all of them and each frame
/// is allocated at its exact size. Pass a fresh nonce per frame.
///
/// Fails as `seal` does (text that is not UTF-8, a message too large), for all
/// frames at once, and with `InvalidInput` unless there is one nonce per cipher.
pub fn seal_for_all(
    ciphers: &[&Cipher],
    message_json: &[u8],
    nonces: &[[u8; NONCE_LEN]],
    timestamp: i64,
) -> Result<Vec<Vec<u8>>, CoreError> {
    if std::str::from_utf8(message_json).is_err() {
        return Err(CoreError::InvalidInput("message JSON is not valid UTF-8"));
    }
    if ciphers.len() != nonces.len() {
        return Err(CoreError::InvalidInput("seal_for_all needs one nonce per cipher"));
    }
    let plain = envelope(message_json, timestamp);
    let start = PREFIX_LEN + HEADER.len() + NONCE_LEN;
    let mut frames = Vec::with_capacity(ciphers.len());
    for (cipher, nonce) in ciphers.iter().zip(nonces) {
        let mut frame = Vec::with_capacity(start + plain.len() + TAG_LEN);
        write_prefix(&mut frame, nonce);
        frame.extend_from_slice(&plain);
        cipher.encrypt_from(&mut frame, start, nonce)?;
        frames.push(frame);
    }
    Ok(frames)
}

/// SMSG password: standard base64 (with padding) of the shared secret.
pub fn password(shared_secret: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(shared_secret)
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
    use crate::smsg::test_util::{unhex, vectors};

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

    /// Every frame of smsg_frames.json is sealed byte for byte and opens back;
    /// `ping` and `unicode_html_emoji` must be among them.
    #[test]
    fn reference_frames() {
        let v = vectors("smsg_frames.json");
        let cases = v["cases"].as_array().unwrap();
        let mut seen = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let c = Cipher::new(&unhex(case["shared_secret_hex"].as_str().unwrap())).unwrap();
            let msg = unhex(case["message_json_hex"].as_str().unwrap());
            let nonce: [u8; NONCE_LEN] = unhex(case["nonce_hex"].as_str().unwrap()).try_into().unwrap();
            let ts = case["smsg_timestamp"].as_i64().unwrap();
            let expected = unhex(case["frame_hex"].as_str().unwrap());
            assert_eq!(envelope(&msg, ts), unhex(case["smsg_plaintext_hex"].as_str().unwrap()), "{name}");
            let frame = c.seal(&msg, &nonce, ts).unwrap();
            assert!(frame == expected, "{name}: sealed frame differs");
            assert_eq!(c.open(&frame).unwrap(), msg, "{name}");
            assert_eq!(c.open_body(&expected).unwrap(), msg, "{name}");
            seen.push(name.to_string());
        }
        assert!(seen.iter().any(|n| n == "ping"));
        assert!(seen.iter().any(|n| n == "unicode_html_emoji"));
    }

    #[test]
    fn seal_for_all_is_seal_for_each() {
        let a = Cipher::new(&secret()).unwrap();
        let b = Cipher::new(&[3u8; KEY_LEN]).unwrap();
        let ciphers = [&a, &b, &a];
        let nonces = [[1u8; NONCE_LEN], [2u8; NONCE_LEN], [3u8; NONCE_LEN]];
        for msg in [&b""[..], br#"{"id":"x","type":"t","payload":{"a":"<&>\"\u2028"}}"#, &[b'q'; 70_000][..]] {
            let frames = seal_for_all(&ciphers, msg, &nonces, -5).unwrap();
            assert_eq!(frames.len(), 3);
            for ((cipher, nonce), frame) in ciphers.iter().zip(&nonces).zip(&frames) {
                assert!(*frame == cipher.seal(msg, nonce, -5).unwrap());
                assert_eq!(frame.len(), frame.capacity());
            }
        }
        assert_eq!(seal_for_all(&[], b"{}", &[], 0).unwrap(), Vec::<Vec<u8>>::new());
        assert!(matches!(seal_for_all(&ciphers, b"\xff", &nonces, 0), Err(CoreError::InvalidInput(_))));
        assert!(matches!(seal_for_all(&ciphers, b"{}", &nonces[..2], 0), Err(CoreError::InvalidInput(_))));
    }
}
