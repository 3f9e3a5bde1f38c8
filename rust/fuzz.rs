//! Fuzz targets for every parser of bytes that come from the network, on stable
//! Rust and without extra crates: a deterministic mutation loop per target,
//! run as ordinary `#[test]`s (docs/fuzzing.md).
//!
//! Each target starts from a corpus of valid inputs (the reference vectors and
//! inputs built here), applies a few random mutations per case (bit flips,
//! interesting bytes and JSON tokens, insertions, deletions, duplications,
//! truncations, splices with another corpus entry, rewritten length fields)
//! and checks that the parser returns (never panics, never loops) and keeps
//! its contract: the fast parsers agree with serde_json, an accepted frame's
//! replay is refused, the replay table stays within its limits.
//!
//! * `cargo test --release fuzz_` runs a few thousand cases per target
//!   (seconds; part of every `cargo test`).
//! * `SMSGNET_FUZZ_SECS=60` runs each target for that long instead;
//!   `SMSGNET_FUZZ_SEED=N` picks another sequence (the default is fixed, so a
//!   plain `cargo test` is reproducible). A failure prints the seed, the case
//!   number and the input in hex.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::dedup::{Deduplicator, Limits};
use crate::ratelimit::TokenBucket;
use crate::receive::{self, DropReason, Origin, ReplayWindow, Verdict};
use crate::rfc3339;
use crate::sizes::NONCE_LEN;
use crate::smsg::{self, Cipher};

// ---------------------------------------------------------------------------
// The engine

/// splitmix64: small, fast, good enough to drive mutations (not for keys).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x1f, 0x20, 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff, b'"', b'\\', b'{', b'}',
    b'[', b']', b':', b',', b'u', b'0', b'9', b'-', b'.', b'e', b'Z', b'+', b'T', b'\n',
];

const TOKENS: &[&[u8]] = &[
    b"\"", b"\\", b"\\u", b"\\u0000", b"\\u00e9", b"\\ud800", b"\\udc00", b"\\ud83d\\ude80", b"\\\"", b"\\n",
    b"{", b"}", b"[", b"]", b"{}", b"[]", b":", b",", b"null", b"true", b"false", b"0", b"-0", b"1e999",
    b"-1", b"18446744073709551616", b"1.5", b"\"id\":", b"\"ts\":", b"\"from\":", b"\"body\":", b"\"timestamp\":",
    b"\"compression\":\"gzip\"", b"\"format\":\"v2\"", b"\"checksum\":\"00\"", b"\xe2\x80\xa8", b"\xf0\x9f\x9a\x80",
    b"\xed\xa0\x80", b"\xc3", b"\xff\xfe", b"2025-01-01T00:00:00Z", b"+01:75", b"0000", b".999999999999",
    b"SMSG", b"\x02", b"                ",
];

const LENGTHS: &[u32] = &[0, 1, 2, 47, 48, 49, 255, 65_535, 16 << 20, (16 << 20) + 1, u32::MAX];

/// A few random mutations of `input` (at least one).
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = out.len();
        match rng.below(10) {
            0 if n > 0 => {
                let i = rng.below(n);
                out[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                out[i] = *rng.pick(INTERESTING_BYTES);
            }
            2 => {
                let at = rng.below(n + 1);
                let tok = *rng.pick(TOKENS);
                out.splice(at..at, tok.iter().copied());
            }
            3 => {
                let at = rng.below(n + 1);
                let len = 1 + rng.below(8);
                let random = rng.bytes(len);
                out.splice(at..at, random);
            }
            4 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(16)).min(n);
                out.drain(a..b);
            }
            5 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(32)).min(n);
                let piece = out[a..b].to_vec();
                let at = rng.below(n + 1);
                out.splice(at..at, piece);
            }
            6 if n > 0 => out.truncate(rng.below(n)),
            7 => {
                let other = rng.pick(corpus);
                let a = rng.below(n + 1);
                let b = rng.below(other.len() + 1);
                out.truncate(a);
                out.extend_from_slice(&other[b..]);
            }
            8 if n >= 4 => {
                let at = if n >= 9 && rng.chance(2) { 5 } else { rng.below(n - 3) };
                out[at..at + 4].copy_from_slice(&rng.pick(LENGTHS).to_be_bytes());
            }
            _ => {
                // a digit somewhere becomes another digit: numbers, lengths, dates
                if let Some(i) = (0..n).map(|k| (k + rng.below(n.max(1))) % n).find(|&i| out[i].is_ascii_digit()) {
                    out[i] = b'0' + rng.below(10) as u8;
                }
            }
        }
    }
    out
}

/// A mutation of a random corpus entry.
fn mutate_from(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let i = rng.below(corpus.len());
    mutate(rng, &corpus[i], corpus)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Run `case` until the budget is spent: `SMSGNET_FUZZ_SECS` seconds when set,
/// else `default_cases` cases. `case` puts its input in the buffer it is given
/// before checking anything, so that a panic is reported with the seed, the
/// case number and that input.
fn run(name: &str, default_cases: u64, mut case: impl FnMut(&mut Rng, &mut Vec<u8>)) {
    let seed = std::env::var("SMSGNET_FUZZ_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0x5EED);
    let deadline = std::env::var("SMSGNET_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    // one stream per target, so adding a target does not change the others
    let mut rng = Rng(seed ^ u64::from_be_bytes(Sha256::digest(name.as_bytes())[..8].try_into().unwrap_or([0; 8])));
    let mut input = Vec::new();
    let mut n = 0u64;
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if n >= default_cases => break,
            _ => {}
        }
        input.clear();
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut input))) {
            eprintln!(
                "fuzz {name}: failed at case {n} (SMSGNET_FUZZ_SEED={seed}); input ({} bytes):\n{}",
                input.len(),
                hex(&input)
            );
            resume_unwind(e);
        }
        n += 1;
    }
    println!("fuzz {name}: {n} cases, seed {seed}");
}

// ---------------------------------------------------------------------------
// Corpora

fn vectors(file: &str) -> serde_json::Value {
    let dir = std::env::var_os("SMSGNET_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"));
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reference vectors {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

/// Every small vector case's field `key` (hex), decoded.
fn vector_field(file: &str, key: &str) -> Vec<Vec<u8>> {
    let v = vectors(file);
    let mut out = Vec::new();
    for case in v["cases"].as_array().into_iter().flatten() {
        if let Some(h) = case[key].as_str() {
            if h.len() <= 8192 {
                out.push(unhex(h));
            }
        }
    }
    out
}

/// The key of the `smsg_frames.json` cases.
fn vector_cipher() -> Cipher {
    let v = vectors("smsg_frames.json");
    let secret = v["cases"][0]["shared_secret_hex"].as_str().map(unhex).unwrap_or_default();
    Cipher::new(&secret).unwrap_or_else(|e| panic!("vector secret: {e}"))
}

const NOW: f64 = 1735689600.0;

fn message(id: &str, from: &str, ts: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"ping","from":"{from}","to":"","ts":"{ts}","payload":{{"sentAt":1}}{extra}}}"#)
        .into_bytes()
}

fn message_corpus() -> Vec<Vec<u8>> {
    let mut corpus = vector_field("smsg_frames.json", "message_json_hex");
    corpus.extend([
        message("m1", "p", "2025-01-01T00:00:00Z", ""),
        message("m2", "q", "2025-01-01T00:00:59.999999999+00:00", r#","replyTo":"m1""#),
        message("m3", "", "2025-01-01T01:00:00.5+01:00", r#","x":[1,{"y":"\u00e9\ud83d\ude80"}]"#),
        br#"{"id":"a\"b","type":null,"ts":"2024-12-31T23:59:00Z"}"#.to_vec(),
        br#" { "id" : "spaced" , "ts" : "2025-01-01T00:00:00Z" } "#.to_vec(),
        b"{}".to_vec(),
    ]);
    corpus
}

fn frame_corpus(cipher: &Cipher) -> Vec<Vec<u8>> {
    let mut corpus = vector_field("smsg_frames.json", "frame_hex");
    corpus.extend(vector_field("negative.json", "frame_hex"));
    for (i, m) in message_corpus().iter().enumerate() {
        if let Ok(f) = cipher.seal(m, &[i as u8; NONCE_LEN], 1735689600) {
            corpus.push(f);
        }
    }
    corpus
}

fn envelope_corpus() -> Vec<Vec<u8>> {
    let mut corpus = vector_field("smsg_frames.json", "smsg_plaintext_json_hex");
    for m in message_corpus() {
        corpus.push(smsg::envelope(&m, 1735689600));
    }
    corpus.extend([
        br#"{"timestamp":1,"body":"{}"}"#.to_vec(),
        br#" {"body" : "x", "extra": [1,2,{"a":null}], "timestamp": -5 } "#.to_vec(),
        br#"{"body":"\ud83d\ude80\u2028","timestamp":0}"#.to_vec(),
    ]);
    corpus
}

// ---------------------------------------------------------------------------
// Targets

/// Container: magic, version, header length and JSON, AEAD. Any bytes give
/// Ok or an error; the header is unauthenticated, so only what follows it
/// decides whether a frame opens.
#[test]
fn fuzz_container_open() {
    let cipher = vector_cipher();
    let corpus = frame_corpus(&cipher);
    run("container_open", 100_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let split = smsg::split_container(input);
        if cipher.open_body(input).is_ok() {
            assert!(split.is_ok(), "opened a frame whose container does not split");
        }
        if let Ok(body) = cipher.open(input) {
            assert!(smsg::parse_message_head(&body).is_ok());
        }
    });
}

/// Envelope: what the AEAD hands over. The fast parser and serde_json agree
/// (same body, or the fast one declines), and a frame sealed around the same
/// plaintext opens to the same result.
#[test]
fn fuzz_envelope() {
    let cipher = vector_cipher();
    let corpus = envelope_corpus();
    run("envelope", 30_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let nonce = [rng.next() as u8; NONCE_LEN];
        let serde = smsg::body_of_envelope_serde(input);
        if let Some(fast) = smsg::fast_envelope_body(input) {
            assert_eq!(Ok(fast), serde.clone(), "fast envelope parser disagrees with serde_json");
        }
        assert_eq!(smsg::body_of_envelope(input), serde);
        let frame = cipher.seal_plaintext(input, &nonce);
        assert_eq!(cipher.open_body(&frame), serde, "the AEAD path changed the envelope's verdict");
    });
}

/// Message head: the six string fields of a transport Message. The fast
/// parser and serde_json agree on every field, or the fast one declines; the
/// spans it hands over (`MessageHead::spans`) hold exactly those fields and
/// the payload serde_json keeps (the last one).
#[test]
fn fuzz_message_head() {
    let corpus = message_corpus();
    run("message_head", 100_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let serde = smsg::parse_message_head_serde(input);
        if let Some(fast) = smsg::fast_message_head(input) {
            let s = serde.as_ref().unwrap_or_else(|e| panic!("fast head parser accepted what serde refuses: {e}"));
            assert_eq!(head_fields(&fast), head_fields(s));
            if let Some(spans) = fast.spans(input) {
                let text = |r: &Option<std::ops::Range<usize>>| {
                    r.clone().map(|r| String::from_utf8(input[r].to_vec()).expect("a span is UTF-8"))
                };
                let from_spans = [&spans.id, &spans.kind, &spans.from, &spans.to, &spans.ts, &spans.reply_to].map(text);
                assert_eq!(from_spans, head_fields(s));
                // (a document with a value serde_json's Value cannot hold, such as a
                // lone surrogate escape, passed the scan: its payload is for Python to refuse)
                if let Ok(whole) = serde_json::from_slice::<serde_json::Value>(input) {
                    let payload = spans.payload.map(|r| serde_json::from_slice::<serde_json::Value>(&input[r]).expect("a value"));
                    assert_eq!(whole.get("payload"), payload.as_ref());
                }
            }
        }
        assert_eq!(smsg::parse_message_head(input).is_ok(), serde.is_ok());
    });
}

fn head_fields(h: &smsg::MessageHead<'_>) -> [Option<String>; 6] {
    [&h.id, &h.kind, &h.from, &h.to, &h.ts, &h.reply_to].map(|f| f.as_deref().map(str::to_owned))
}

/// `ts`: never panics; what parses has every field in range, and its UNIX
/// seconds are the ones the receive step uses.
#[test]
fn fuzz_timestamp() {
    let corpus: Vec<Vec<u8>> = [
        "2025-01-01T00:00:00Z",
        "2025-06-30T23:59:59.123456789+02:00",
        "0001-01-01T00:00:00-23:59",
        "9999-12-31T23:59:59.999999999Z",
        "2024-02-29t12:00:00.5z",
        "2025-01-01 00:00:00+00:00",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("timestamp", 300_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let Ok(s) = std::str::from_utf8(input) else { return };
        match rfc3339::parse(s) {
            Some(t) => {
                assert!((1..=9999).contains(&t.year) && (1..=12).contains(&t.month) && (1..=31).contains(&t.day));
                assert!(t.hour < 24 && t.minute < 60 && t.second < 60);
                assert!((0..1_000_000_000).contains(&t.nanosecond) && t.offset_seconds.abs() < 86_400);
                let exact = t.unix_seconds() as f64 + t.nanosecond as f64 / 1e9;
                assert!(rfc3339::parse_unix_seconds(s).is_some_and(|v| (v - exact).abs() < 1e-3));
                assert_eq!(rfc3339::parse(&format_ts(t.unix_seconds(), t.nanosecond)).map(|u| u.unix_seconds()),
                           (t.unix_seconds() >= -62135596800 && t.unix_seconds() <= 253402300799).then_some(t.unix_seconds()));
            }
            None => assert_eq!(rfc3339::parse_unix_seconds(s), None),
        }
    });
}

/// The receive step: bucket, open, checks, replay table, with frames sealed
/// around mutated messages and envelopes (so they pass the AEAD) and mutated
/// frames, from several senders, with a clock that mostly moves forward.
/// Never panics; an accepted frame is a Message with an id; any frame accepted
/// earlier (kept in a log) is refused when it comes again, however much was
/// evicted since; the table stays within its limits. (`max_peers` is above
/// the number of senders here: forgetting whole senders has a documented
/// limit, tested in tests/core/test_core_replay_fairness.py.)
#[test]
fn fuzz_receive_step() {
    let cipher = vector_cipher();
    let frames = frame_corpus(&cipher);
    let messages = message_corpus();
    let envelopes = envelope_corpus();
    let limits = Limits::new(360.0, 64, Some(24), Some(16)).unwrap_or_else(|e| panic!("{e}"));
    let mut dedup = Deduplicator::with_limits(limits);
    let mut log: Vec<(&str, Option<&str>, Vec<u8>)> = Vec::new();
    let mut replays = 0u64;
    let mut high_water = f64::NEG_INFINITY;
    let mut bucket = TokenBucket::new(50, 1000.0).unwrap_or_else(|e| panic!("{e}"));
    let window = ReplayWindow { max_age: 300.0, max_future: 60.0 };
    let senders = ["p", "q", "r", "s", "t", "u", "v", "w", ""];
    let mut now = NOW;
    let mut accepted = 0u64;
    run("receive_step", 60_000, |rng, input| {
        now += match rng.below(20) {
            0 => -(rng.below(100) as f64),
            1 => rng.below(400) as f64,
            _ => rng.below(1000) as f64 / 1000.0,
        };
        let nonce = [rng.next() as u8; NONCE_LEN];
        *input = match rng.below(4) {
            0 => mutate_from(rng, &frames),
            1 => cipher.seal_plaintext(&mutate_from(rng, &envelopes), &nonce),
            _ => {
                // a fresh-looking message, often mutated after
                let ts = now + rng.below(120) as f64 - 80.0;
                let date = format_ts(ts.floor() as i64, rng.below(1_000_000_000) as i64);
                let id = format!("id-{}", rng.below(200));
                let from = if rng.chance(3) { "me" } else { *rng.pick(&senders) };
                let mut m = message(&id, from, &date, "");
                if rng.chance(3) {
                    m = mutate(rng, &m, &messages);
                }
                cipher.seal_plaintext(&smsg::envelope(&m, 1735689600), &nonce)
            }
        };
        high_water = high_water.max(now);
        if !log.is_empty() && now >= high_water && rng.chance(4) {
            // a replay of a frame accepted earlier, over the same pair key and
            // sender. Only while the clock is at its highest: a clock stepped
            // back re-admits what was forgotten at the later time (any replay
            // window has that limit; the reference's too).
            let (sender, peer_id, frame) = log[rng.below(log.len())].clone();
            *input = frame;
            let origin = Origin { peer_id, sender, local_id: Some("me"), hint: None };
            replays += 1;
            match receive::receive(&cipher, None, &mut dedup, window, origin, input, now) {
                Verdict::Dropped(DropReason::Duplicate | DropReason::Stale, _) => {}
                other => panic!("a replayed frame was not refused: {other:?}"),
            }
            return;
        }
        let sender = *rng.pick(&senders);
        let peer_id = if rng.chance(2) { Some(sender) } else { None };
        let origin = Origin { peer_id, sender, local_id: Some("me"), hint: None };
        if let Verdict::Accepted(body, _) = receive::receive(&cipher, Some(&mut bucket), &mut dedup, window, origin, input, now) {
            accepted += 1;
            let head = smsg::parse_message_head(&body).unwrap_or_else(|e| panic!("accepted a non-Message: {e}"));
            assert!(head.id.is_some_and(|id| !id.is_empty()));
            match receive::check_message(body, &mut dedup, window, origin, now) {
                Verdict::Dropped(DropReason::Duplicate | DropReason::Stale, _) => {}
                other => panic!("the same frame again was not refused: {other:?}"),
            }
            if log.len() < 512 {
                log.push((sender, peer_id, input.clone()));
            } else {
                let i = rng.below(log.len());
                log[i] = (sender, peer_id, input.clone());
            }
        }
        if rng.chance(500) {
            dedup.sweep(now);
        }
        assert!(dedup.len() <= 64 + 24, "table over its limits: {}", dedup.len());
        assert!(dedup.partitions() <= 16);
    });
    if std::env::var_os("SMSGNET_FUZZ_SECS").is_none() {
        assert!(accepted > 100, "only {accepted} frames accepted: the corpus no longer reaches the replay table");
        assert!(replays > 100, "only {replays} replays");
    }
    // the table it built survives its own saved form
    let saved = dedup.to_bytes(now);
    let back = Deduplicator::from_bytes(&saved, limits, now).unwrap_or_else(|e| panic!("{e}"));
    assert!(back.len() <= dedup.len()); // what had expired is not saved
    let again = Deduplicator::from_bytes(&back.to_bytes(now), limits, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.len(), back.len());
}

/// The saved replay table (read back at start): damaged copies are refused
/// by the digest; copies whose digest is recomputed after the damage reach
/// the parser itself, which must refuse them or rebuild within the limits.
#[test]
fn fuzz_replay_table_load() {
    let limits = Limits::new(360.0, 16, Some(8), Some(4)).unwrap_or_else(|e| panic!("{e}"));
    let mut d = Deduplicator::with_limits(limits);
    d.mark("mine", NOW);
    for i in 0..30 {
        d.check_frame(["a", "b", "c", "d", "e"][i % 5], &format!("id{i}"), NOW, NOW + i as f64, NOW + 300.0, false);
    }
    d.set_floor(NOW - 60.0);
    let corpus = vec![d.to_bytes(NOW), Deduplicator::new(10.0, 1).unwrap_or_else(|e| panic!("{e}")).to_bytes(NOW)];
    run("replay_table_load", 150_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        if rng.below(4) != 0 && input.len() >= 32 {
            let body = input.len() - 32;
            let digest = Sha256::digest(&input[..body]);
            input[body..].copy_from_slice(&digest);
        }
        if let Ok(t) = Deduplicator::from_bytes(input, limits, NOW) {
            assert!(t.len() <= 16 + 8 && t.partitions() <= 4);
        }
    });
}

/// Go's RFC3339Nano text of a UNIX time (for the receive step's fresh frames).
fn format_ts(secs: i64, nanos: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_string() };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[test]
fn format_ts_is_what_the_parser_reads() {
    for (secs, nanos) in [(0, 0), (1735689600, 500_000_000), (1735689659, 1), (-62135596800, 0), (253402300799, 999_999_999)] {
        let text = format_ts(secs, nanos);
        let t = rfc3339::parse(&text).unwrap_or_else(|| panic!("{text}"));
        assert_eq!((t.unix_seconds(), t.nanosecond), (secs, nanos), "{text}");
    }
}

/// A protocol 2.0 link pair with fixed static and ephemeral keys: every pair
/// made here has the same transport keys, so a frame sealed by any dialler
/// opens at nonce 0 on any acceptor.
fn noise_pair() -> (crate::noise::Link, crate::noise::Link) {
    use crate::noise::{prologue, Handshake};
    let pro = prologue(b"hello", b"ack");
    let dialler_public = crate::keys::public_key(&[2u8; 32]).unwrap_or_else(|e| panic!("key: {e}"));
    let mut acceptor = Handshake::with_ephemeral_for_tests(&[1u8; 32], Some(&dialler_public), &pro, &[3u8; 32])
        .unwrap_or_else(|e| panic!("acceptor: {e}"));
    let mut dialler = Handshake::with_ephemeral_for_tests(&[2u8; 32], None, &pro, &[4u8; 32])
        .unwrap_or_else(|e| panic!("dialler: {e}"));
    let m1 = acceptor.write_message().unwrap_or_else(|e| panic!("m1: {e}"));
    dialler.read_message(&m1).unwrap_or_else(|e| panic!("read m1: {e}"));
    let m2 = dialler.write_message().unwrap_or_else(|e| panic!("m2: {e}"));
    acceptor.read_message(&m2).unwrap_or_else(|e| panic!("read m2: {e}"));
    (
        dialler.into_link(2).unwrap_or_else(|e| panic!("link: {e}")),
        acceptor.into_link(2).unwrap_or_else(|e| panic!("link: {e}")),
    )
}

/// Protocol 2.0 records: any bytes give the message or an error, never a
/// panic; only an unchanged frame opens, to the message it sealed; after an
/// error the link opens nothing more.
#[test]
fn fuzz_noise_open() {
    let mut messages = message_corpus();
    messages.push(vec![b'x'; crate::noise::RECORD_DATA_MAX + 3]); // two records
    let mut sealed = Vec::new();
    for m in &messages {
        let (dialler, _) = noise_pair();
        sealed.push((dialler.seal(m).unwrap_or_else(|e| panic!("seal: {e}")), m.clone()));
    }
    let corpus: Vec<Vec<u8>> = sealed.iter().map(|(f, _)| f.clone()).collect();
    run("noise_open", 3_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let (_, acceptor) = noise_pair();
        match acceptor.open(input) {
            Ok(body) => {
                let original = sealed.iter().find(|(f, _)| f == input);
                assert!(original.is_some_and(|(_, m)| *m == body), "a changed frame opened");
            }
            Err(_) => {
                assert!(acceptor.is_broken());
                assert!(acceptor.open(&corpus[0]).is_err(), "a broken link opened a frame");
            }
        }
    });
}

/// The WebSocket receive fast path: any bytes give a walk that never panics;
/// the frames taken lie in order inside what it consumed, each ending where
/// the next begins to be read; a walk that stopped at another kind of frame
/// stopped on a byte that is there; and the consumed prefix alone gives the
/// same frames.
#[test]
fn fuzz_binary_frames() {
    use crate::wsframe::{take_binary_frames, test_frame, Stop, FINAL_BINARY};
    let key = Some([0x37, 0xFA, 0x21, 0x3D]);
    let mut corpus = Vec::new();
    for masked in [true, false] {
        let k = if masked { key } else { None };
        corpus.push([test_frame(FINAL_BINARY, b"hello", k), test_frame(FINAL_BINARY, &[7u8; 200], k)].concat());
        corpus.push([test_frame(FINAL_BINARY, &[1u8; 70_000], k), test_frame(0x89, b"ping", k)].concat());
        corpus.push([test_frame(FINAL_BINARY, b"", k), test_frame(0x81, b"text", k), test_frame(FINAL_BINARY, b"x", k)].concat());
    }
    run("binary_frames", 20_000, |rng, input| {
        *input = mutate_from(rng, &corpus);
        let masked = rng.chance(2);
        let max_size = *rng.pick(&[0u64, 125, 126, 65_535, 65_536, 1 << 20, u64::MAX]);
        let (taken, consumed, stop) = take_binary_frames(input, masked, max_size);
        assert!(consumed <= input.len());
        let mut at = 0;
        for p in &taken {
            assert!(at < p.start && p.start <= p.end && p.end <= consumed, "span {p:?} after {at}");
            assert_eq!(p.key.is_some(), masked);
            assert!((p.end - p.start) as u64 <= max_size);
            at = p.end;
        }
        assert_eq!(at, consumed, "the walk consumed exactly its frames");
        if stop == Stop::Other {
            assert!(consumed < input.len());
        }
        let again = take_binary_frames(&input[..consumed], masked, max_size);
        assert_eq!((again.0, again.1), (taken, consumed));
    });
}
