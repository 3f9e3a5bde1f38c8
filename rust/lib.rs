//! smsgnet's native core: the parts of the transport that touch every frame.
//!
//! Every module here is pure Rust with no Python in it and is unit-tested with
//! `cargo test`. The PyO3 bindings live in `python/` and are compiled only with
//! the `python` feature (maturin turns it on).

pub mod aead;
pub mod dedup;
pub mod error;
pub mod handshake_crypto;
pub mod keys;
pub mod noise;
pub mod nonce;
pub mod random;
pub mod ratelimit;
pub mod receive;
pub mod rfc3339;
pub mod sizes;
pub mod smsg;
pub mod wsframe;

#[cfg(test)]
mod bench_dedup;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod bench_smsg;

#[cfg(feature = "python")]
mod python;
