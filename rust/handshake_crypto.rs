//! The challenge-response of the handshake (PROTOCOL.md §2, §5):
//! response = HMAC-SHA256(key = shared secret, message = challenge).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sizes::MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the challenge under the shared secret.
pub fn sign_challenge(challenge: &[u8], shared_secret: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(shared_secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(challenge);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a challenge response.
pub fn verify_challenge(challenge: &[u8], response: &[u8], shared_secret: &[u8]) -> bool {
    let mut mac = match HmacSha256::new_from_slice(shared_secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(challenge);
    mac.verify_slice(response).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let tag = sign_challenge(b"what do ya want for nothing?", b"Jefe");
        assert_eq!(
            crate::keys::hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_challenge(b"what do ya want for nothing?", &tag, b"Jefe"));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!verify_challenge(b"what do ya want for nothing?", &bad, b"Jefe"));
        assert!(!verify_challenge(b"what do ya want for nothing?", &tag[..31], b"Jefe"));
    }
}
