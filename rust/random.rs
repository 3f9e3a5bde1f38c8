//! OS randomness without one system call per draw: the frame nonces
//! (`nonce.rs`) and the message IDs (UUID v4) are cut from it.
//!
//! Theory of operation:
//!
//! * Each thread keeps a pool of 1,024 bytes of OS randomness
//!   (`getrandom`), refilled when a draw would run past its end. A draw
//!   copies its bytes out and zeroes them in the pool, so no byte is handed
//!   out twice from one fill.
//! * `fork()` copies the pool into the child. Parent and child would then
//!   hand out the same nonces and IDs, so a fork handler registered with
//!   `pthread_atfork` (once, on the first draw) bumps a process-wide
//!   generation in the child; a pool filled under an older generation is
//!   refilled before its next draw. The check is one atomic load per draw,
//!   instead of a `getpid` system call (about 200 ns on a VM).
//! * Nothing drawn here is secret (nonces and IDs travel in clear), so the
//!   pool needs no further protection.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use crate::error::CoreError;

const POOL_LEN: usize = 1024;

/// Bumped in a forked child: every pool filled before the fork is stale.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(1);
static REGISTER_FORK_HANDLER: Once = Once::new();

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    // async-signal-safe: one atomic add
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn register_fork_handler() {
    REGISTER_FORK_HANDLER.call_once(|| {
        #[cfg(unix)]
        // SAFETY: the handler only touches an atomic and may run in any
        // forked child; registering it has no other precondition.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

struct Pool {
    bytes: [u8; POOL_LEN],
    next: usize,
    generation: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; POOL_LEN], next: POOL_LEN, generation: 0 }) };
}

/// Fill `out` (at most 1,024 bytes) with fresh OS randomness.
pub fn fill(out: &mut [u8]) -> Result<(), CoreError> {
    assert!(out.len() <= POOL_LEN, "a draw is at most {POOL_LEN} bytes");
    register_fork_handler();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let generation = FORK_GENERATION.load(Ordering::Acquire);
        if pool.next + out.len() > POOL_LEN || pool.generation != generation {
            getrandom::getrandom(&mut pool.bytes).map_err(|_| CoreError::Random)?;
            pool.next = 0;
            pool.generation = generation;
        }
        let at = pool.next;
        pool.next = at + out.len();
        let drawn = &mut pool.bytes[at..at + out.len()];
        out.copy_from_slice(drawn);
        drawn.fill(0);
        Ok(())
    })
}

/// A fresh message ID: a random UUID v4 in its canonical lower-case text form
/// (`xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx`, V one of 8, 9, a, b).
pub fn message_id() -> Result<String, CoreError> {
    let mut b = [0u8; 16];
    fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10xx
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0x0f)]);
    }
    // only ASCII hex digits and dashes were written
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_do_not_repeat_across_refills() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 * POOL_LEN / 24 {
            let mut n = [0u8; 24];
            fill(&mut n).unwrap();
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn message_ids_are_canonical_uuid4() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = message_id().unwrap();
            let b = id.as_bytes();
            assert_eq!(b.len(), 36);
            for (i, c) in b.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    assert_eq!(*c, b'-', "{id}");
                } else {
                    assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{id}");
                }
            }
            assert_eq!(b[14], b'4', "{id}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{id}");
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn a_fork_makes_every_pool_stale() {
        let mut before = [0u8; 16];
        fill(&mut before).unwrap();
        let generation = FORK_GENERATION.load(Ordering::Acquire);
        #[cfg(unix)]
        after_fork_in_child(); // what the child runs
        #[cfg(unix)]
        assert_eq!(FORK_GENERATION.load(Ordering::Acquire), generation + 1);
        POOL.with(|pool| assert_ne!(pool.borrow().generation, FORK_GENERATION.load(Ordering::Acquire)));
        let mut after = [0u8; 16];
        fill(&mut after).unwrap();
        POOL.with(|pool| assert_eq!(pool.borrow().next, 16)); // refilled, not drawn on
    }
}
