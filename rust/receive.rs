//! The per-connection receive step (PROTOCOL.md §7), in one call per frame:
//! token bucket → open → sender and timestamp checks → duplicate check.
//!
//! The result is either the transport Message JSON or the reason the frame was
//! dropped. The I/O layer counts reasons and hands accepted bytes to the
//! application; it never looks inside a frame itself.

use crate::dedup::Deduplicator;
use crate::error::CoreError;
use crate::ratelimit::TokenBucket;
use crate::rfc3339::parse_unix_seconds;
use crate::smsg::{parse_message_head, Cipher};

/// Why a frame was dropped. The names are the keys of the drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The peer's token bucket was empty.
    RateLimited,
    /// The frame is not a well-formed SMSG container (magic, version, header).
    Malformed,
    /// The AEAD tag did not verify: wrong key or altered bytes.
    Undecryptable,
    /// The envelope or the transport Message inside it is not valid.
    InvalidMessage,
    /// The message claims to come from a node other than the connected peer.
    WrongSender,
    /// `ts` is older than the replay window, in the future beyond the allowed
    /// skew, missing, or not later than an ID evicted from a full dedup table.
    Stale,
    /// The message ID was already seen (this includes IDs this node sent).
    Duplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::RateLimited,
        DropReason::Malformed,
        DropReason::Undecryptable,
        DropReason::InvalidMessage,
        DropReason::WrongSender,
        DropReason::Stale,
        DropReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RateLimited => "rate_limited",
            DropReason::Malformed => "malformed",
            DropReason::Undecryptable => "undecryptable",
            DropReason::InvalidMessage => "invalid_message",
            DropReason::WrongSender => "wrong_sender",
            DropReason::Stale => "stale",
            DropReason::Duplicate => "duplicate",
        }
    }

    /// The drop reason for a frame that failed to open.
    pub fn of_error(e: &CoreError) -> DropReason {
        match e {
            CoreError::AuthenticationFailed => DropReason::Undecryptable,
            CoreError::EnvelopeInvalid(_) | CoreError::MessageInvalid(_) => DropReason::InvalidMessage,
            _ => DropReason::Malformed,
        }
    }
}

/// The outcome of one frame.
#[derive(Debug)]
pub enum Verdict {
    Accepted(Vec<u8>),
    Dropped(DropReason, String),
}

/// The replay window of the receive step.
#[derive(Debug, Clone, Copy)]
pub struct ReplayWindow {
    /// Oldest acceptable `ts`, in seconds before `now` (the dedup TTL).
    pub max_age: f64,
    /// Latest acceptable `ts`, in seconds after `now` (clock skew allowance).
    pub max_future: f64,
}

/// Everything one frame needs, borrowed for the length of the call.
pub fn receive(
    cipher: &Cipher,
    bucket: Option<&mut TokenBucket>,
    dedup: &mut Deduplicator,
    window: ReplayWindow,
    peer_id: Option<&str>,
    frame: &[u8],
    now: f64,
) -> Verdict {
    if let Some(bucket) = bucket {
        if !bucket.allow(now) {
            return Verdict::Dropped(DropReason::RateLimited, String::new());
        }
    }
    let body = match cipher.open_body(frame) {
        Ok(body) => body,
        Err(e) => return Verdict::Dropped(DropReason::of_error(&e), e.to_string()),
    };
    check_message(body, dedup, window, peer_id, now)
}

/// The checks after decryption, split out so the vectors can drive them.
pub fn check_message(
    body: Vec<u8>,
    dedup: &mut Deduplicator,
    window: ReplayWindow,
    peer_id: Option<&str>,
    now: f64,
) -> Verdict {
    let head = match parse_message_head(&body) {
        Ok(head) => head,
        Err(e) => return Verdict::Dropped(DropReason::InvalidMessage, e.to_string()),
    };
    let id = match head.id.as_deref() {
        Some(id) if !id.is_empty() => id,
        _ => return Verdict::Dropped(DropReason::InvalidMessage, "message has no id".into()),
    };
    if let (Some(expected), Some(from)) = (peer_id, head.from.as_deref()) {
        if !from.is_empty() && from != expected {
            return Verdict::Dropped(DropReason::WrongSender, format!("from {from:?}"));
        }
    }
    let ts = match head.ts.as_deref().and_then(parse_unix_seconds) {
        Some(ts) => ts,
        None => return Verdict::Dropped(DropReason::Stale, "missing or unparseable ts".into()),
    };
    // inclusive: at exactly `ts + max_age` the frame is stale, which is when
    // its dedup entry may expire at the earliest
    if ts <= now - window.max_age {
        return Verdict::Dropped(DropReason::Stale, format!("ts {:.0} s old", now - ts));
    }
    if ts > now + window.max_future {
        return Verdict::Dropped(DropReason::Stale, format!("ts {:.0} s in the future", ts - now));
    }
    if ts <= dedup.evicted_horizon() {
        return Verdict::Dropped(DropReason::Stale, "older than the dedup table's memory".into());
    }
    if !dedup.check_and_mark_stamped(id, now, ts, ts + window.max_age) {
        return Verdict::Dropped(DropReason::Duplicate, String::new());
    }
    Verdict::Accepted(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Cipher, Deduplicator, ReplayWindow) {
        (
            Cipher::new(&[5u8; 32]).unwrap(),
            Deduplicator::new(300.0, 100).unwrap(),
            ReplayWindow { max_age: 300.0, max_future: 60.0 },
        )
    }

    #[test]
    fn order_bucket_open_stale_duplicate() {
        let (c, mut d, w) = setup();
        let now = 1735689600.0;
        let msg = br#"{"id":"m1","type":"ping","from":"p","to":"","ts":"2025-01-01T00:00:00Z","payload":null}"#;
        let frame = c.seal(msg, &[1u8; 24], 0).unwrap();
        let mut bucket = TokenBucket::new(2, 0.0).unwrap();
        assert!(matches!(receive(&c, Some(&mut bucket), &mut d, w, Some("p"), &frame, now), Verdict::Accepted(_)));
        assert!(matches!(
            receive(&c, Some(&mut bucket), &mut d, w, Some("p"), &frame, now),
            Verdict::Dropped(DropReason::Duplicate, _)
        ));
        assert!(matches!(
            receive(&c, Some(&mut bucket), &mut d, w, Some("p"), &frame, now),
            Verdict::Dropped(DropReason::RateLimited, _)
        ));
        // replayed after the dedup window: refused by its age
        assert!(matches!(
            receive(&c, None, &mut d, w, Some("p"), &frame, now + 301.0),
            Verdict::Dropped(DropReason::Stale, _)
        ));
        assert!(matches!(
            receive(&c, None, &mut d, w, Some("q"), &frame, now),
            Verdict::Dropped(DropReason::WrongSender, _)
        ));
        assert!(matches!(
            receive(&c, None, &mut d, w, None, b"nope", now),
            Verdict::Dropped(DropReason::Malformed, _)
        ));
    }
}
