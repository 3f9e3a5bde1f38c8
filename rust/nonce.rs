//! Random nonces without one system call per frame.
//!
//! 24-byte nonces are cut from a per-thread pool of OS randomness that is
//! refilled 1,008 bytes (42 nonces) at a time. The pool remembers the process
//! ID it was filled in: after `fork()` a child finds a different ID and
//! refills before drawing, so parent and child never hand out the same nonce.
//! Nonces are public, so the pool holds nothing secret.

use std::cell::RefCell;

use crate::error::CoreError;
use crate::sizes::NONCE_LEN;

const POOL_NONCES: usize = 42;

struct Pool {
    bytes: [u8; NONCE_LEN * POOL_NONCES],
    next: usize,
    pid: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; NONCE_LEN * POOL_NONCES], next: POOL_NONCES, pid: 0 })
    };
}

/// A fresh random nonce.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], CoreError> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pid = std::process::id();
        if pool.next >= POOL_NONCES || pool.pid != pid {
            getrandom::getrandom(&mut pool.bytes).map_err(|_| CoreError::Random)?;
            pool.next = 0;
            pool.pid = pid;
        }
        let at = pool.next * NONCE_LEN;
        pool.next += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&pool.bytes[at..at + NONCE_LEN]);
        // a drawn nonce is never drawn again from this buffer
        pool.bytes[at..at + NONCE_LEN].fill(0);
        Ok(nonce)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_do_not_repeat_across_refills() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 * POOL_NONCES {
            assert!(seen.insert(random_nonce().unwrap()));
        }
    }
}
