//! X25519 identities and the per-pair shared secret (PROTOCOL.md §1–2).

use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::CoreError;
use crate::sizes::KEY_LEN;

fn to_key(bytes: &[u8], what: &'static str) -> Result<Zeroizing<[u8; KEY_LEN]>, CoreError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(CoreError::KeyLength { what, got: bytes.len() });
    }
    key.copy_from_slice(bytes);
    Ok(key)
}

/// A fresh key pair from the OS generator: (private, public).
pub fn generate_keypair() -> Result<(Zeroizing<[u8; KEY_LEN]>, [u8; KEY_LEN]), CoreError> {
    let mut private = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::getrandom(&mut private[..]).map_err(|_| CoreError::Random)?;
    let public = public_key(&private[..])?;
    Ok((private, public))
}

/// The X25519 public key of a private scalar (clamped internally, as RFC 7748 says).
pub fn public_key(private: &[u8]) -> Result<[u8; KEY_LEN], CoreError> {
    let secret = StaticSecret::from(*to_key(private, "private key")?);
    Ok(PublicKey::from(&secret).to_bytes())
}

/// Node ID: lowercase hex of the first 16 bytes of SHA-256(public key).
pub fn node_id(public: &[u8]) -> Result<String, CoreError> {
    if public.len() != KEY_LEN {
        return Err(CoreError::KeyLength { what: "public key", got: public.len() });
    }
    let digest = Sha256::digest(public);
    Ok(hex(&digest[..16]))
}

/// shared secret = SHA-256(X25519(private, peer_public)); refuses an all-zero X25519 result.
pub fn derive_shared_secret(
    private: &[u8],
    peer_public: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, CoreError> {
    let secret = StaticSecret::from(*to_key(private, "private key")?);
    let peer = PublicKey::from(*to_key(peer_public, "peer public key")?);
    let raw = secret.diffie_hellman(&peer);
    if !raw.was_contributory() {
        return Err(CoreError::LowOrderPoint);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&Sha256::digest(raw.as_bytes()));
    Ok(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn rfc7748_section_6_1() {
        let alice = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let alice_pub = public_key(&alice).unwrap();
        assert_eq!(hex(&alice_pub), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob_pub = public_key(&bob).unwrap();
        let ab = derive_shared_secret(&alice, &bob_pub).unwrap();
        let ba = derive_shared_secret(&bob, &alice_pub).unwrap();
        assert_eq!(*ab, *ba);
        assert_eq!(hex(&ab[..]), "dead45a1d43d6902aa9240b43c0d75a0b5fc750660590d6d45461cbfc4010684");
        assert_eq!(node_id(&alice_pub).unwrap(), "300c9c9603b92a4b39ed3958bf924011");
    }

    #[test]
    fn refuses_low_order_and_wrong_lengths() {
        let (sk, _) = generate_keypair().unwrap();
        assert_eq!(derive_shared_secret(&sk[..], &[0u8; 32]), Err(CoreError::LowOrderPoint));
        assert!(matches!(derive_shared_secret(&sk[..], &[1u8; 31]), Err(CoreError::KeyLength { got: 31, .. })));
        assert!(matches!(public_key(&[0u8; 33]), Err(CoreError::KeyLength { got: 33, .. })));
        assert!(node_id(&[0u8; 5]).is_err());
    }
}
