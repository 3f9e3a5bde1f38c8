//! Random nonces without one system call per frame: 24-byte nonces drawn
//! from the per-thread pool of OS randomness in `random.rs` (refilled 1 KiB
//! at a time, and after `fork()` so that parent and child never hand out the
//! same nonce). Nonces are public, so the pool holds nothing secret.

use crate::error::CoreError;
use crate::sizes::NONCE_LEN;

/// A fresh random nonce.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], CoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce)?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_do_not_repeat_across_refills() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            assert!(seen.insert(random_nonce().unwrap()));
        }
    }
}
