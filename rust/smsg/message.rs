//! The head of the transport Message carried in an envelope's body: the six
//! string fields the receive step needs (`id`, `type`, `from`, `to`, `ts`,
//! `replyTo`), borrowed from the JSON; `payload` is checked, never built.
//!
//! # Theory of operation
//!
//! `fast_message_head` is a validating scanner (`JsonScan`) that answers None
//! ("not sure") for anything serde_json might see differently: escapes in
//! the top-level keys or the six fields, a repeated field, nesting deeper than
//! `FAST_JSON_DEPTH`, and everything invalid. Strings are skipped 16 bytes at a
//! time (`simd::string_stop_mask`). On None, `parse_message_head_serde` runs
//! serde_json, which decides and words the error. Whatever the scanner
//! returns as Some, serde_json returns for the same bytes (tested on tricky
//! inputs, 30,000 random and damaged documents, and in `rust/fuzz.rs`).
//!
//! The scanner also notes where the last `payload` value lies; with the six
//! fields borrowed as written (no escapes), `MessageHead::spans` gives where
//! every field is, and the receive step hands the fields to Python as
//! strings with the payload's JSON, so that Python parses the payload only.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use super::envelope::{hex4, starts_with_object};
use super::simd::string_stop_mask;
use crate::error::CoreError;

/// The string fields of a transport Message, borrowed from its JSON where
/// possible; `payload` and unknown keys are skipped without being built.
#[derive(Debug, Default, Deserialize)]
pub struct MessageHead<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ts: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "replyTo")]
    pub reply_to: Option<Cow<'a, str>>,
    /// Where the JSON of the last `payload` value lies in the body, when the
    /// fast parser read it (serde_json's path leaves it unknown: None).
    #[serde(skip)]
    pub payload: Option<Range<usize>>,
    /// True when the fast parser read the whole message: `payload` is then
    /// exact (None: there is no payload) and every field is borrowed as written.
    #[serde(skip)]
    pub scanned: bool,
}

/// Where each field of a Message lies in its JSON (a string's text between
/// its quotes; the payload's whole JSON value), so that the fields can be
/// handed over without parsing the JSON again. None: the field is missing or
/// null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSpans {
    pub kind: Option<Range<usize>>,
    pub from: Option<Range<usize>>,
    pub to: Option<Range<usize>>,
    pub id: Option<Range<usize>>,
    pub ts: Option<Range<usize>>,
    pub reply_to: Option<Range<usize>>,
    pub payload: Option<Range<usize>>,
}

impl MessageHead<'_> {
    /// The spans of the fields in `body`, the JSON this head was read from:
    /// only when the fast parser read all of it and no field had an escape
    /// (every string is then the body's own bytes, as written); else None.
    pub fn spans(&self, body: &[u8]) -> Option<FieldSpans> {
        if !self.scanned {
            return None;
        }
        let base = body.as_ptr() as usize;
        let span = |field: &Option<Cow<'_, str>>| -> Option<Option<Range<usize>>> {
            match field {
                None => Some(None),
                Some(Cow::Borrowed(text)) => {
                    let start = (text.as_ptr() as usize).checked_sub(base)?;
                    let end = start + text.len();
                    (end <= body.len()).then_some(Some(start..end))
                }
                Some(Cow::Owned(_)) => None,
            }
        };
        Some(FieldSpans {
            kind: span(&self.kind)?,
            from: span(&self.from)?,
            to: span(&self.to)?,
            id: span(&self.id)?,
            ts: span(&self.ts)?,
            reply_to: span(&self.reply_to)?,
            payload: self.payload.clone(),
        })
    }
}

/// Parse the head of a transport Message; the JSON must be one object.
pub fn parse_message_head(body: &[u8]) -> Result<MessageHead<'_>, CoreError> {
    if let Some(head) = fast_message_head(body) {
        return Ok(head);
    }
    parse_message_head_serde(body)
}

/// The general Message parser, and the one that words every error.
pub(crate) fn parse_message_head_serde(body: &[u8]) -> Result<MessageHead<'_>, CoreError> {
    if !starts_with_object(body) {
        return Err(CoreError::MessageInvalid("not a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| CoreError::MessageInvalid(e.to_string()))
}

/// Deepest nesting the fast Message parser follows before it leaves the
/// decision to serde_json.
const FAST_JSON_DEPTH: u32 = 64;

/// A JSON checker over bytes that answers None ("not sure") for anything it
/// does not accept, never for less than serde_json accepts in the same place.
struct JsonScan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> JsonScan<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Move to the next `"`, `\` or control byte at or after `i`.
    #[inline(always)]
    fn skip_to_string_stop(&mut self) -> Option<u8> {
        let n = self.s.len();
        while self.i + 16 <= n {
            // SAFETY: 16 bytes readable at i.
            let mask = unsafe { string_stop_mask(self.s.as_ptr().add(self.i)) };
            if mask != 0 {
                self.i += mask.trailing_zeros() as usize;
                return Some(self.s[self.i]);
            }
            self.i += 16;
        }
        loop {
            let b = self.peek()?;
            if b == b'"' || b == b'\\' || b < 0x20 {
                return Some(b);
            }
            self.i += 1;
        }
    }

    /// The rest of a string without escapes (the opening quote is consumed),
    /// as raw bytes; None on an escape, a control byte or the end of input.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        if self.skip_to_string_stop()? != b'"' {
            return None;
        }
        let text = &self.s[start..self.i];
        self.i += 1;
        Some(text)
    }

    /// Skip the rest of a string (the opening quote is consumed), checking
    /// escapes the way serde_json does for a value it ignores: the escape
    /// letters and four hex digits after `\u`, nothing about surrogates or UTF-8.
    fn skip_string(&mut self) -> Option<()> {
        loop {
            match self.skip_to_string_stop()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match self.s.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        hex4(self.s.get(self.i + 2..)?)?;
                        self.i += 6;
                    }
                    _ => return None,
                },
                _ => return None, // control character
            }
        }
    }

    /// Skip one number the way serde_json's `ignore_integer` reads it.
    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Skip one value (whitespace before it already skipped).
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.skip_string()
            }
            b'-' | b'0'..=b'9' => self.skip_number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                if depth >= FAST_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= FAST_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.eat(b'"')?;
                    self.skip_string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

/// The head of a Message, or None ("not sure") for anything serde_json might
/// see differently: escapes in the top-level keys or in the six fields,
/// repeated fields, unusual nesting depth, and everything invalid. Whatever
/// this returns as Some, serde_json returns for the same bytes.
pub(crate) fn fast_message_head(body: &[u8]) -> Option<MessageHead<'_>> {
    let mut p = JsonScan { s: body, i: 0 };
    let mut head = MessageHead::default();
    let mut seen = 0u8;
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek()? == b'}' {
        p.i += 1;
    } else {
        loop {
            p.eat(b'"')?;
            let key = p.plain_string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            let (bit, field) = match key {
                b"id" => (1, &mut head.id),
                b"type" => (2, &mut head.kind),
                b"from" => (4, &mut head.from),
                b"to" => (8, &mut head.to),
                b"ts" => (16, &mut head.ts),
                b"replyTo" => (32, &mut head.reply_to),
                b"payload" => {
                    // a repeated payload: the last one counts, as in a parsed dict
                    let start = p.i;
                    p.skip_value(1)?;
                    head.payload = Some(start..p.i);
                    (0, &mut None)
                }
                _ => {
                    // serde_json checks the UTF-8 of every key it reads
                    std::str::from_utf8(key).ok()?;
                    p.skip_value(1)?;
                    (0, &mut None)
                }
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return None; // duplicate field
                }
                seen |= bit;
                match p.peek()? {
                    b'"' => {
                        p.i += 1;
                        let text = std::str::from_utf8(p.plain_string()?).ok()?;
                        *field = Some(Cow::Borrowed(text));
                    }
                    b'n' => p.literal(b"null")?,
                    _ => return None,
                }
            }
            p.ws();
            match p.peek()? {
                b',' => {
                    p.i += 1;
                    p.ws();
                }
                b'}' => {
                    p.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    p.ws();
    if p.i != body.len() {
        return None;
    }
    head.scanned = true;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smsg::test_util::Rng;

    fn head_text(r: &Result<MessageHead<'_>, CoreError>) -> String {
        match r {
            Ok(h) => format!(
                "ok {:?} {:?} {:?} {:?} {:?} {:?}",
                h.id.as_deref(),
                h.kind.as_deref(),
                h.from.as_deref(),
                h.to.as_deref(),
                h.ts.as_deref(),
                h.reply_to.as_deref()
            ),
            Err(e) => format!("err {e}"),
        }
    }

    fn check_head(input: &[u8]) -> bool {
        let serde = parse_message_head_serde(input);
        let fast = fast_message_head(input);
        if let Some(h) = &fast {
            assert_eq!(
                head_text(&Ok(MessageHead { ..clone_head(h) })),
                head_text(&serde),
                "fast path accepted {}",
                String::from_utf8_lossy(input)
            );
            // the payload span holds the value a JSON parser keeps (the last one)
            if let Ok(serde_json::Value::Object(whole)) = serde_json::from_slice::<serde_json::Value>(input) {
                let span = h.payload.clone().map(|r| serde_json::from_slice::<serde_json::Value>(&input[r]).unwrap());
                assert_eq!(whole.get("payload"), span.as_ref(), "{}", String::from_utf8_lossy(input));
            }
        }
        assert_eq!(head_text(&parse_message_head(input)), head_text(&serde), "{}", String::from_utf8_lossy(input));
        fast.is_some()
    }

    fn clone_head<'a>(h: &MessageHead<'a>) -> MessageHead<'a> {
        MessageHead {
            id: h.id.clone(),
            kind: h.kind.clone(),
            from: h.from.clone(),
            to: h.to.clone(),
            ts: h.ts.clone(),
            reply_to: h.reply_to.clone(),
            payload: None,
            scanned: false,
        }
    }

    #[test]
    fn spans_point_at_the_fields_as_written() {
        let body = br#"{"id":"m-1","type":"note","from":"f","to":null,"ts":"2025-01-01T00:00:00Z","payload":{"a":[1]}}"#;
        let spans = fast_message_head(body).unwrap().spans(body).unwrap();
        let text = |r: Option<Range<usize>>| r.map(|r| String::from_utf8(body[r].to_vec()).unwrap());
        assert_eq!(text(spans.id).as_deref(), Some("m-1"));
        assert_eq!(text(spans.kind).as_deref(), Some("note"));
        assert_eq!(text(spans.from).as_deref(), Some("f"));
        assert_eq!(text(spans.to), None);
        assert_eq!(text(spans.ts).as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(text(spans.reply_to), None);
        assert_eq!(text(spans.payload).as_deref(), Some(r#"{"a":[1]}"#));
        // serde_json's path (an escape): no spans
        let escaped = br#"{"id":"m\u002d1"}"#;
        assert_eq!(parse_message_head(escaped).unwrap().spans(escaped), None);
    }

    #[test]
    fn the_fast_parser_finds_the_last_payload() {
        let body = br#"{"id":"a","payload":{"x":[1,2]},"type":"t","payload" : "last" }"#;
        let head = fast_message_head(body).unwrap();
        assert_eq!(&body[head.payload.unwrap()], br#""last""#);
        let body = br#"{"id":"a","payload":null}"#;
        assert_eq!(&body[fast_message_head(body).unwrap().payload.unwrap()], b"null");
        assert_eq!(fast_message_head(br#"{"id":"a"}"#).unwrap().payload, None);
        assert!(fast_message_head(br#"{"id":"a"}"#).unwrap().scanned);
        // an escaped head string leaves the decision, and the span, to serde_json
        assert!(fast_message_head(br#"{"id":"a\u0041","payload":1}"#).is_none());
        let serde = parse_message_head(br#"{"id":"a\u0041","payload":1}"#).unwrap();
        assert!(serde.payload.is_none() && !serde.scanned);
    }

    /// The fast Message parser never disagrees with serde_json.
    #[test]
    fn fast_message_head_agrees_with_serde() {
        let tricky: &[&[u8]] = &[
            br#"{"id":"a","type":"ping","from":"f","to":"t","ts":"2025-01-01T00:00:00Z","replyTo":"r","payload":{"sentAt":1}}"#,
            br#"{}"#,
            br#" { } "#,
            br#"{"id":null,"type":null}"#,
            br#"{"id":"x","id":"y"}"#,
            br#"{"id":null,"id":"y"}"#,
            br#"{"id":1}"#,
            br#"{"id":true}"#,
            br#"{"id":{}}"#,
            br#"{"id":"a\"b"}"#,
            br#"{"id":"a\u0041"}"#,
            br#"{"\u0069d":"x"}"#,
            br#"{"i\d":"x"}"#,
            br#"{"other":"a\"b\\c\/\b\f\n\r\t\u00e9\uD800"}"#,
            br#"{"other":"\x"}"#,
            br#"{"other":"\u12"}"#,
            br#"{"other":"\u12x4"}"#,
            br#"{"other":[1,-2,3.5,-0.0e+10,1E5,0,true,false,null,[],{},[[]],{"a":{"b":[]}}]}"#,
            br#"{"other":01}"#,
            br#"{"other":-}"#,
            br#"{"other":1.}"#,
            br#"{"other":1.e5}"#,
            br#"{"other":1e}"#,
            br#"{"other":1e+}"#,
            br#"{"other":.5}"#,
            br#"{"other":+1}"#,
            br#"{"other":1x}"#,
            br#"{"other":tru}"#,
            br#"{"other":nul}"#,
            br#"{"other":True}"#,
            br#"{"other":[1,]}"#,
            br#"{"other":[,1]}"#,
            br#"{"other":[1 2]}"#,
            br#"{"other":{"a":1,}}"#,
            br#"{"other":{"a" 1}}"#,
            br#"{"other":{a:1}}"#,
            br#"{"other":{"a":}}"#,
            br#"{"id":"a",}"#,
            br#"{"id":"a" "type":"b"}"#,
            br#"{"id":"a"}x"#,
            br#"{"id":"a"} {}"#,
            br#"{"id":"a""#,
            br#"{"id":"a"#,
            br#"{"id":"#,
            br#"{"#,
            br#"{"id""a"}"#,
            br#"["a"]"#,
            br#""id""#,
            br#"null"#,
            b"",
            b"{\"id\":\"tab\tin value\"}",
            b"{\"other\":\"tab\tin ignored value\"}",
            b"{\"id\":\"\xff\"}",
            b"{\"other\":\"\xff not checked by serde\"}",
            b"{\"\xff\":1}",
            b"{\"k\xc3\xa9\":1}",
            b"{\"id\":\"\xc3\xa9t\xc3\xa9\"}",
            b"{\t\"id\"\r:\n\"a\" }",
            b"{\"id\":\"a\"}\x0c",
            b"{\"other\":\"a\x00b\"}",
        ];
        let mut accepted = 0;
        for input in tricky {
            accepted += check_head(input) as usize;
        }
        assert!(accepted >= 8, "the fast path took only {accepted}");
        // deep nesting: the fast path stops following, serde_json decides
        for depth in [10usize, 63, 64, 65, 200, 1000] {
            let mut s = Vec::from(&br#"{"id":"d","payload":"#[..]);
            s.extend(std::iter::repeat_n(b'[', depth));
            s.extend(std::iter::repeat_n(b']', depth));
            s.push(b'}');
            check_head(&s);
        }

        // random documents, and random damage to them
        let mut rng = Rng(0x2545F4914F6CDD1D);
        const ATOMS: &[&[u8]] = &[
            b"0", b"-1", b"12.5e-3", b"1E9", b"true", b"false", b"null", br#""s""#, br#""\u00e9\n""#, br#""a\"b""#,
            b"[]", b"{}", br#""x\ud800""#, "\"é🚀\"".as_bytes(), b"\"<&>\"",
        ];
        fn value(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
            match if depth > 4 { 0 } else { rng.below(4) } {
                0 | 1 => out.extend_from_slice(ATOMS[rng.below(ATOMS.len())]),
                2 => {
                    out.push(b'[');
                    for k in 0..rng.below(4) {
                        if k > 0 {
                            out.push(b',');
                        }
                        value(rng, depth + 1, out);
                    }
                    out.push(b']');
                }
                _ => {
                    out.push(b'{');
                    for k in 0..rng.below(4) {
                        if k > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(format!("\"k{k}\": ").as_bytes());
                        value(rng, depth + 1, out);
                    }
                    out.push(b'}');
                }
            }
        }
        const KEYS: &[&str] = &["id", "type", "from", "to", "ts", "replyTo", "payload", "x", "i\\u0064"];
        const DAMAGE: &[u8] = b"\"\\{}[],: \x01\xffa0-.eu";
        let mut accepted = 0;
        for round in 0..30000 {
            let mut doc = vec![b'{'];
            for k in 0..rng.below(7) {
                if k > 0 {
                    doc.push(b',');
                }
                doc.extend_from_slice(format!("\"{}\":", KEYS[rng.below(KEYS.len())]).as_bytes());
                if rng.below(3) == 0 {
                    doc.extend_from_slice(format!("\"v{round}\"").as_bytes());
                } else {
                    value(&mut rng, 1, &mut doc);
                }
            }
            doc.push(b'}');
            if rng.below(2) == 0 {
                for _ in 0..1 + rng.below(2) {
                    let at = rng.below(doc.len() + 1);
                    match rng.below(3) {
                        0 if at < doc.len() => {
                            doc.remove(at);
                        }
                        1 if at < doc.len() => doc[at] = DAMAGE[rng.below(DAMAGE.len())],
                        _ => doc.insert(at, DAMAGE[rng.below(DAMAGE.len())]),
                    }
                }
            }
            accepted += check_head(&doc) as usize;
        }
        assert!(accepted > 5000, "the fast path took only {accepted} of 30000");
    }
}
