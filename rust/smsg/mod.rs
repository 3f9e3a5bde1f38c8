//! The SMSG v1 container as the transport uses it (PROTOCOL.md §4).
//!
//! ```text
//! "SMSG" | 0x02 | u32be N | header JSON (N bytes) | nonce (24) | XChaCha20-Poly1305(obfuscated envelope) | tag (16)
//! envelope   = {"body":"<transport Message JSON as a JSON string>","timestamp":<unix seconds>}
//! obfuscated = envelope XOR (SHA-256(nonce ‖ u64be 0) ‖ SHA-256(nonce ‖ u64be 1) ‖ …)
//! ```
//!
//! # Theory of operation
//!
//! One concern per file, in the order a frame is sealed:
//!
//! * [`envelope`] writes the envelope, escaping the Message JSON byte for byte
//!   as Go's `json.Marshal` does, and reads it back (a fast path for the shape
//!   the reference writes, serde_json for everything else and for every error);
//! * [`keystream`] XORs the SHA-256 counter-mode keystream over it;
//! * [`container`] frames it (magic, version, header, nonce, tag), runs the
//!   AEAD from `crate::aead` and checks incoming frames before allocating;
//! * [`message`] reads the head of the transport Message inside (`id`, `type`,
//!   `from`, `to`, `ts`, `replyTo`) without building the payload;
//! * [`simd`] holds the 16-bytes-at-a-time helpers the others scan with (SSE2
//!   on x86-64, a table elsewhere): the only architecture-specific code here.
//!
//! `seal` writes the envelope straight into the output frame, XORs the
//! keystream over it and encrypts in place: one allocation per frame. `open`
//! checks the container without allocating anything the frame did not pay for,
//! then decrypts, strips the keystream and unescapes the body. Every fast path
//! answers "not sure" rather than differ from serde_json, and is fuzzed
//! against it (`rust/fuzz.rs`). Key, nonce and tag sizes: `crate::sizes`.

pub mod container;
pub mod envelope;
pub mod keystream;
pub mod message;
mod simd;

pub use container::{
    password, seal_for_all, split_container, unix_seconds, Cipher, CONTAINER_VERSION, HEADER, LARGE_FRAME, MAGIC,
    MAX_HEADER_LEN,
};
pub use envelope::{envelope, escape_go_json_into};
#[cfg(test)]
pub(crate) use envelope::{body_of_envelope, body_of_envelope_serde, fast_envelope_body};
pub use keystream::{keystream, xor_keystream};
pub use message::{parse_message_head, FieldSpans, MessageHead};
#[cfg(test)]
pub(crate) use message::{fast_message_head, parse_message_head_serde};

/// A fresh random nonce (see `nonce.rs`: OS randomness, pooled per thread, fork-safe).
pub use crate::nonce::random_nonce;

/// Helpers shared by the tests of the submodules.
#[cfg(test)]
mod test_util {
    pub(super) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    pub(super) fn vectors(file: &str) -> serde_json::Value {
        // the reference vectors are copied into tests/vectors (README there);
        // SMSGNET_VECTORS overrides the directory
        let dir = std::env::var_os("SMSGNET_VECTORS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"));
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reference vectors {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// A small xorshift generator: the tests need no extra crate.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(super) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
