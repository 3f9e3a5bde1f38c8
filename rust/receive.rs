//! The per-connection receive step (PROTOCOL.md §7), in one call per frame:
//! token bucket → open → sender and timestamp checks → duplicate check.
//!
//! The result is either the transport Message JSON or the reason the frame was
//! dropped. The I/O layer counts reasons and hands accepted bytes to the
//! application; it never looks inside a frame itself.

use std::cell::Cell;

use crate::dedup::{Check, Deduplicator, SlotHint};
use crate::error::CoreError;
use crate::ratelimit::TokenBucket;
use crate::rfc3339::parse_unix_seconds;
use crate::smsg::{parse_message_head, Cipher, FieldSpans};

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
    /// skew, missing, earlier than the table's restart floor, or not later
    /// than an ID the same sender had evicted from the replay table.
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

/// The outcome of one frame: an accepted Message's JSON, with where its
/// fields lie when the fast parser read it (`MessageHead::spans`).
#[derive(Debug)]
pub enum Verdict {
    Accepted(Vec<u8>, Option<FieldSpans>),
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

/// Who a frame comes from, as far as the receive step is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// With it set, a message whose non-empty `from` differs is dropped.
    pub peer_id: Option<&'a str>,
    /// The replay table's partition: the authenticated peer of the connection.
    pub sender: &'a str,
    /// This node's ID: a message whose `from` is this node is checked against
    /// the horizon of our own sealed IDs too.
    pub local_id: Option<&'a str>,
    /// Where the sender's partition was found last time (saves a lookup).
    pub hint: Option<&'a Cell<SlotHint>>,
}

/// Everything one frame needs, borrowed for the length of the call.
pub fn receive(
    cipher: &Cipher,
    bucket: Option<&mut TokenBucket>,
    dedup: &mut Deduplicator,
    window: ReplayWindow,
    origin: Origin<'_>,
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
    check_message(body, dedup, window, origin, now)
}

/// The checks after decryption, split out so the vectors can drive them.
pub fn check_message(
    body: Vec<u8>,
    dedup: &mut Deduplicator,
    window: ReplayWindow,
    origin: Origin<'_>,
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
    if let (Some(expected), Some(from)) = (origin.peer_id, head.from.as_deref()) {
        if !from.is_empty() && from != expected {
            return Verdict::Dropped(DropReason::WrongSender, format!("from {:?}", clip(from)));
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
    let from_local = origin.local_id.is_some_and(|me| head.from.as_deref() == Some(me));
    let check = match origin.hint {
        Some(cell) => {
            let mut hint = cell.get();
            let check = dedup.check_frame_hinted(&mut hint, origin.sender, id, now, ts, ts + window.max_age, from_local);
            cell.set(hint);
            check
        }
        None => dedup.check_frame(origin.sender, id, now, ts, ts + window.max_age, from_local),
    };
    match check {
        Check::Fresh => {
            let spans = head.spans(&body);
            Verdict::Accepted(body, spans)
        }
        Check::Duplicate => Verdict::Dropped(DropReason::Duplicate, String::new()),
        Check::BeforeFloor => Verdict::Dropped(DropReason::Stale, "ts before the restart floor".into()),
        Check::BehindHorizon => {
            Verdict::Dropped(DropReason::Stale, "not newer than an ID this sender had evicted".into())
        }
    }
}

/// At most 64 characters of a peer-controlled string, for a drop detail.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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
        let p = Origin { peer_id: Some("p"), sender: "p", local_id: None, hint: None };
        let q = Origin { peer_id: Some("q"), sender: "q", local_id: None, hint: None };
        let msg = br#"{"id":"m1","type":"ping","from":"p","to":"","ts":"2025-01-01T00:00:00Z","payload":null}"#;
        let frame = c.seal(msg, &[1u8; 24], 0).unwrap();
        let mut bucket = TokenBucket::new(2, 0.0).unwrap();
        assert!(matches!(receive(&c, Some(&mut bucket), &mut d, w, p, &frame, now), Verdict::Accepted(..)));
        assert!(matches!(
            receive(&c, Some(&mut bucket), &mut d, w, p, &frame, now),
            Verdict::Dropped(DropReason::Duplicate, _)
        ));
        assert!(matches!(
            receive(&c, Some(&mut bucket), &mut d, w, p, &frame, now),
            Verdict::Dropped(DropReason::RateLimited, _)
        ));
        // replayed after the dedup window: refused by its age
        assert!(matches!(
            receive(&c, None, &mut d, w, p, &frame, now + 301.0),
            Verdict::Dropped(DropReason::Stale, _)
        ));
        assert!(matches!(
            receive(&c, None, &mut d, w, q, &frame, now),
            Verdict::Dropped(DropReason::WrongSender, _)
        ));
        assert!(matches!(
            receive(&c, None, &mut d, w, Origin::default(), b"nope", now),
            Verdict::Dropped(DropReason::Malformed, _)
        ));
    }

    /// One peer's 200k IDs dated a minute ahead do not make another peer's
    /// fresh frame stale (issue 8 #1), and replays of the flood stay refused.
    #[test]
    fn a_future_dated_flood_from_one_peer_spares_the_others() {
        let c = Cipher::new(&[5u8; 32]).unwrap();
        let mut d = Deduplicator::with_limits(crate::dedup::Limits::new(360.0, 200_000, Some(50_000), None).unwrap());
        let w = ReplayWindow { max_age: 300.0, max_future: 60.0 };
        let now = 1735689600.0;
        let flood = Origin { peer_id: Some("m"), sender: "m", local_id: None, hint: None };
        let honest = Origin { peer_id: Some("h"), sender: "h", local_id: None, hint: None };
        let mut first = None;
        for i in 0..200_000u32 {
            // each dated a little later, so that each is accepted and evicts the
            // flooder's own oldest ID
            let body = format!(r#"{{"id":"f{i}","from":"m","ts":"2025-01-01T00:00:59.{i:06}Z"}}"#).into_bytes();
            if i == 0 {
                first = Some(body.clone());
            }
            assert!(matches!(check_message(body, &mut d, w, flood, now), Verdict::Accepted(..)));
        }
        assert_eq!(d.len(), 50_000);
        assert_eq!(d.evicted(), 150_000);
        let msg = br#"{"id":"h1","from":"h","ts":"2025-01-01T00:00:00Z"}"#;
        let frame = c.seal(msg, &[1u8; 24], 0).unwrap();
        assert!(matches!(receive(&c, None, &mut d, w, honest, &frame, now + 1.0), Verdict::Accepted(..)));
        // the flood's evicted first ID is still refused (by its sender's horizon)
        assert!(matches!(
            check_message(first.unwrap(), &mut d, w, flood, now + 1.0),
            Verdict::Dropped(DropReason::Stale, _)
        ));
    }
}
