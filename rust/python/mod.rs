//! PyO3 bindings: `smsgnet._core`. Thin wrappers over the pure-Rust modules;
//! every error goes through `errors::to_py_err`.

mod errors;
mod noise;

use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};

use std::cell::Cell;

use crate::dedup::{Deduplicator as CoreDedup, Limits, SlotHint};
use crate::ratelimit::TokenBucket as CoreBucket;
use crate::receive::{self, Origin, ReplayWindow, Verdict};
use crate::sizes::NONCE_LEN;
use crate::smsg::{self, Cipher, LARGE_FRAME};
use crate::{handshake_crypto, keys, rfc3339, wsframe};
use errors::to_py_err;

/// Borrow the bytes of a `bytes` or `str` (UTF-8) argument, or copy a `bytearray`.
enum Text<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Text<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Text::Borrowed(b) => b,
            Text::Owned(v) => v,
        }
    }
}

fn text_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str, allow_str: bool) -> PyResult<Text<'a>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Text::Borrowed(b.as_bytes()));
    }
    if allow_str {
        if let Ok(s) = obj.downcast::<PyString>() {
            return match s.to_str() {
                Ok(text) => Ok(Text::Borrowed(text.as_bytes())),
                Err(_) => Err(errors::SealError::new_err(format!(
                    "{what} is not valid UTF-8 (lone surrogate?)"
                ))),
            };
        }
    }
    if let Ok(b) = obj.downcast::<PyByteArray>() {
        return Ok(Text::Owned(b.to_vec()));
    }
    let want = if allow_str { "bytes or str" } else { "bytes" };
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{what} must be {want}, not {}",
        obj.get_type().name()?
    )))
}

fn now_or_clock(now: Option<f64>) -> PyResult<f64> {
    match now {
        Some(t) if t.is_finite() => Ok(t),
        Some(_) => Err(errors::invalid_argument("now must be a finite number")),
        None => Ok(match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(_) => 0.0,
        }),
    }
}

#[pyfunction]
fn generate_keypair(py: Python<'_>) -> PyResult<(Py<PyBytes>, Py<PyBytes>)> {
    let (private, public) = keys::generate_keypair().map_err(to_py_err)?;
    Ok((PyBytes::new(py, &private[..]).unbind(), PyBytes::new(py, &public).unbind()))
}

#[pyfunction]
fn public_key<'py>(py: Python<'py>, private: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &keys::public_key(private).map_err(to_py_err)?))
}

#[pyfunction]
fn node_id(public: &[u8]) -> PyResult<String> {
    keys::node_id(public).map_err(to_py_err)
}

#[pyfunction]
fn derive_shared_secret<'py>(
    py: Python<'py>,
    private: &[u8],
    peer_public: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let secret = keys::derive_shared_secret(private, peer_public).map_err(to_py_err)?;
    Ok(PyBytes::new(py, &secret[..]))
}

#[pyfunction]
fn sign_challenge<'py>(py: Python<'py>, challenge: &[u8], shared_secret: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &handshake_crypto::sign_challenge(challenge, shared_secret))
}

#[pyfunction]
fn verify_challenge(challenge: &[u8], response: &[u8], shared_secret: &[u8]) -> bool {
    handshake_crypto::verify_challenge(challenge, response, shared_secret)
}

/// SMSG password: base64 of the shared secret (for tests and vectors).
#[pyfunction]
fn smsg_password(shared_secret: &[u8]) -> String {
    smsg::password(shared_secret)
}

/// The XOR keystream for a nonce (for tests and vectors).
#[pyfunction]
fn keystream<'py>(py: Python<'py>, nonce: &[u8], length: usize) -> PyResult<Bound<'py, PyBytes>> {
    let nonce: &[u8; NONCE_LEN] =
        nonce.try_into().map_err(|_| errors::invalid_argument(format!("nonce must be {NONCE_LEN} bytes")))?;
    Ok(PyBytes::new(py, &smsg::keystream(nonce, length)))
}

/// The plaintext envelope the reference builds around a message (for tests and vectors).
#[pyfunction]
fn envelope<'py>(py: Python<'py>, message_json: &Bound<'py, PyAny>, timestamp: i64) -> PyResult<Bound<'py, PyBytes>> {
    let text = text_arg(message_json, "message_json", true)?;
    Ok(PyBytes::new(py, &smsg::envelope(text.as_slice(), timestamp)))
}

/// UNIX seconds of an RFC 3339 `ts`, or None when it does not parse.
#[pyfunction]
fn parse_timestamp(ts: &str) -> Option<f64> {
    rfc3339::parse_unix_seconds(ts)
}

/// Go's `time.RFC3339Nano` text of `ns` (UNIX nanoseconds; default: now) in
/// the zone `utc_offset_minutes` east of UTC.
#[pyfunction]
#[pyo3(signature = (ns=None, *, utc_offset_minutes=0))]
fn format_timestamp(ns: Option<i128>, utc_offset_minutes: i32) -> PyResult<String> {
    if utc_offset_minutes.unsigned_abs() >= 24 * 60 {
        return Err(errors::invalid_argument(format!(
            "utc_offset_minutes must be within ±23:59 (±1439), got {utc_offset_minutes}"
        )));
    }
    let ns = match ns {
        Some(ns) => ns,
        None => match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
    };
    rfc3339::format_nano(ns, utc_offset_minutes)
        .ok_or_else(|| errors::invalid_argument(format!("ns {ns} is too far from 1970 to format")))
}

/// A fresh message ID: a random UUID v4, canonical lower-case text.
#[pyfunction]
fn new_message_id() -> PyResult<String> {
    crate::random::message_id().map_err(to_py_err)
}

type TimestampFields = (i64, i64, i64, i64, i64, i64, i64, i64);

/// The fields of an RFC 3339 `ts` as written, or None when it does not parse:
/// (year, month, day, hour, minute, second, nanosecond, utc_offset_seconds).
#[pyfunction]
fn parse_timestamp_fields(ts: &str) -> Option<TimestampFields> {
    rfc3339::parse(ts).map(|t| (t.year, t.month, t.day, t.hour, t.minute, t.second, t.nanosecond, t.offset_seconds))
}

/// Seals and opens SMSG frames for one pair of nodes.
#[pyclass(module = "smsgnet._core", frozen)]
struct SmsgCipher {
    inner: Arc<Cipher>,
}

#[pymethods]
impl SmsgCipher {
    #[new]
    fn new(shared_secret: &[u8]) -> PyResult<Self> {
        Ok(SmsgCipher { inner: Arc::new(Cipher::new(shared_secret).map_err(to_py_err)?) })
    }

    #[pyo3(signature = (message_json, *, nonce=None, timestamp=None))]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        message_json: &Bound<'py, PyAny>,
        nonce: Option<&[u8]>,
        timestamp: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let text = text_arg(message_json, "message_json", true)?;
        let nonce: [u8; NONCE_LEN] = match nonce {
            Some(n) => n.try_into().map_err(|_| errors::invalid_argument(format!("nonce must be {NONCE_LEN} bytes, got {}", n.len())))?,
            None => smsg::random_nonce().map_err(to_py_err)?,
        };
        let timestamp = timestamp.unwrap_or_else(smsg::unix_seconds);
        let msg = text.as_slice();
        let frame = if msg.len() >= LARGE_FRAME {
            let cipher = &self.inner;
            py.allow_threads(|| cipher.seal(msg, &nonce, timestamp))
        } else {
            self.inner.seal(msg, &nonce, timestamp)
        }
        .map_err(to_py_err)?;
        Ok(PyBytes::new(py, &frame))
    }

    /// `seal` and `dedup.mark(message_id, now)` in one call: the frame is
    /// sealed first, so a message that cannot be sealed marks nothing.
    #[pyo3(signature = (dedup, message_id, message_json, *, now=None, nonce=None, timestamp=None))]
    #[allow(clippy::too_many_arguments)]
    fn seal_marked<'py>(
        &self,
        py: Python<'py>,
        dedup: &Bound<'py, Deduplicator>,
        message_id: &str,
        message_json: &Bound<'py, PyAny>,
        now: Option<f64>,
        nonce: Option<&[u8]>,
        timestamp: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let now = now_or_clock(now)?;
        let frame = self.seal(py, message_json, nonce, timestamp)?;
        dedup.try_borrow_mut()?.inner.mark(message_id, now);
        Ok(frame)
    }

    fn open<'py>(&self, py: Python<'py>, frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let frame = text_arg(frame, "frame", false)?;
        let frame = frame.as_slice();
        let body = if frame.len() >= LARGE_FRAME {
            let cipher = &self.inner;
            py.allow_threads(|| cipher.open(frame))
        } else {
            self.inner.open(frame)
        }
        .map_err(to_py_err)?;
        Ok(PyBytes::new(py, &body))
    }
}

/// One message sealed for several peers in one call: a fresh nonce per frame,
/// the envelope escaped once. The GIL is released when the total input
/// (message size × peers) is `LARGE_FRAME` or more.
#[pyfunction]
fn seal_for_all<'py>(
    py: Python<'py>,
    ciphers: Vec<Bound<'py, SmsgCipher>>,
    message_json: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let text = text_arg(message_json, "message_json", true)?;
    let msg = text.as_slice();
    let cores: Vec<&Cipher> = ciphers.iter().map(|c| &*c.get().inner).collect();
    let nonces = (0..cores.len()).map(|_| smsg::random_nonce()).collect::<Result<Vec<_>, _>>().map_err(to_py_err)?;
    let timestamp = smsg::unix_seconds();
    let frames = if msg.len().saturating_mul(cores.len()) >= LARGE_FRAME {
        py.allow_threads(|| smsg::seal_for_all(&cores, msg, &nonces, timestamp))
    } else {
        smsg::seal_for_all(&cores, msg, &nonces, timestamp)
    }
    .map_err(to_py_err)?;
    PyList::new(py, frames.iter().map(|f| PyBytes::new(py, f)))
}

/// The receive fast path of `smsgnet.wire` (`rust/wsframe.rs`): the whole,
/// final, unfragmented BINARY frames at the start of `data` (bytes, bytearray
/// or a memoryview of them), unmasked into new bytes objects, in one call for
/// every frame of a read. Returns (payloads, consumed, other): `consumed`
/// bytes were taken; `other` is True when a frame of another kind (or over
/// `max_size`, or with the wrong mask bit) starts there, False when the data
/// ends there or inside a frame.
#[pyfunction]
fn take_binary_frames<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    masked: bool,
    max_size: u64,
) -> PyResult<(Bound<'py, PyList>, usize, bool)> {
    let buffer = PyBuffer::<u8>::get(data)?;
    if !buffer.is_c_contiguous() {
        return Err(pyo3::exceptions::PyTypeError::new_err("data must be a contiguous buffer"));
    }
    // SAFETY: the buffer is contiguous, `item_count` bytes long, and stays
    // exported (so a bytearray cannot be resized) until `buffer` is dropped at
    // the end of this function. No Python code runs while the slice is in use:
    // the only calls into Python allocate bytes objects, which are not tracked
    // by the cyclic GC, so no collection (and no finalizer) can run and write
    // to the data; the list, a tracked object, is made after the last use.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.item_count()) };
    let (taken, consumed, stop) = wsframe::take_binary_frames(bytes, masked, max_size);
    let mut payloads = Vec::with_capacity(taken.len());
    for p in &taken {
        let payload = &bytes[p.start..p.end];
        payloads.push(PyBytes::new_with(py, payload.len(), |out| {
            wsframe::unmask_into(payload, p.key, out);
            Ok(())
        })?);
    }
    drop(buffer);
    Ok((PyList::new(py, payloads)?, consumed, stop == wsframe::Stop::Other))
}

/// Token bucket: `burst` tokens, refilled continuously at `rate` per second.
#[pyclass(module = "smsgnet._core")]
struct TokenBucket {
    inner: CoreBucket,
}

#[pymethods]
impl TokenBucket {
    #[new]
    fn new(burst: i64, rate: f64) -> PyResult<Self> {
        let burst = u32::try_from(burst).map_err(|_| errors::invalid_argument("burst must be between 1 and 2**32-1"))?;
        Ok(TokenBucket { inner: CoreBucket::new(burst, rate).map_err(errors::invalid_argument)? })
    }

    #[pyo3(signature = (now=None))]
    fn allow(&mut self, now: Option<f64>) -> PyResult<bool> {
        Ok(self.inner.allow(now_or_clock(now)?))
    }

    #[pyo3(signature = (now=None))]
    fn tokens(&mut self, now: Option<f64>) -> PyResult<f64> {
        Ok(self.inner.tokens(now_or_clock(now)?))
    }

    #[getter]
    fn burst(&self) -> u32 {
        self.inner.burst()
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.inner.rate()
    }
}

fn count_arg(v: Option<i64>, what: &str) -> PyResult<Option<usize>> {
    v.map(|n| usize::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| errors::invalid_argument(format!("{what} must be at least 1"))))
        .transpose()
}

fn limits_arg(ttl: f64, max_entries: i64, per_peer: Option<i64>, max_peers: Option<i64>) -> PyResult<Limits> {
    let max_entries = usize::try_from(max_entries).map_err(|_| errors::invalid_argument("max_entries must be at least 1"))?;
    Limits::new(ttl, max_entries, count_arg(per_peer, "per_peer")?, count_arg(max_peers, "max_peers")?)
        .map_err(errors::invalid_argument)
}

/// The replay table: message IDs per sender, remembered for `ttl` seconds.
#[pyclass(module = "smsgnet._core")]
struct Deduplicator {
    inner: CoreDedup,
}

#[pymethods]
impl Deduplicator {
    #[new]
    #[pyo3(signature = (ttl, max_entries, *, per_peer=None, max_peers=None))]
    fn new(ttl: f64, max_entries: i64, per_peer: Option<i64>, max_peers: Option<i64>) -> PyResult<Self> {
        Ok(Deduplicator { inner: CoreDedup::with_limits(limits_arg(ttl, max_entries, per_peer, max_peers)?) })
    }

    #[pyo3(signature = (message_id, now=None, *, sender=""))]
    fn check_and_mark(&mut self, message_id: &str, now: Option<f64>, sender: &str) -> PyResult<bool> {
        Ok(self.inner.check_and_mark(sender, message_id, now_or_clock(now)?))
    }

    #[pyo3(signature = (message_id, now=None))]
    fn mark(&mut self, message_id: &str, now: Option<f64>) -> PyResult<()> {
        self.inner.mark(message_id, now_or_clock(now)?);
        Ok(())
    }

    #[pyo3(signature = (message_id, now=None, *, sender=None))]
    fn contains(&self, message_id: &str, now: Option<f64>, sender: Option<&str>) -> PyResult<bool> {
        Ok(self.inner.contains(sender, message_id, now_or_clock(now)?))
    }

    #[pyo3(signature = (now=None))]
    fn sweep(&mut self, now: Option<f64>) -> PyResult<usize> {
        Ok(self.inner.sweep(now_or_clock(now)?))
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[pyo3(signature = (sender, now=None))]
    fn horizon(&self, sender: Option<&str>, now: Option<f64>) -> PyResult<Option<f64>> {
        let h = self.inner.horizon(sender, now_or_clock(now)?);
        Ok((h > f64::NEG_INFINITY).then_some(h))
    }

    #[pyo3(signature = (now=None))]
    fn to_bytes<'py>(&self, py: Python<'py>, now: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        // holds the GIL: with it released, a receive on another thread would
        // find the table borrowed and fail
        let bytes = self.inner.to_bytes(now_or_clock(now)?);
        Ok(PyBytes::new(py, &bytes))
    }

    #[staticmethod]
    #[pyo3(signature = (data, ttl, max_entries, *, per_peer=None, max_peers=None, now=None))]
    fn from_bytes(
        py: Python<'_>,
        data: &[u8],
        ttl: f64,
        max_entries: i64,
        per_peer: Option<i64>,
        max_peers: Option<i64>,
        now: Option<f64>,
    ) -> PyResult<Self> {
        let limits = limits_arg(ttl, max_entries, per_peer, max_peers)?;
        let now = now_or_clock(now)?;
        let inner = py
            .allow_threads(|| CoreDedup::from_bytes(data, limits, now))
            .map_err(|e| errors::invalid_argument(format!("replay table: {e}")))?;
        Ok(Deduplicator { inner })
    }

    #[getter]
    fn ttl(&self) -> f64 {
        self.inner.ttl()
    }

    #[getter]
    fn max_entries(&self) -> usize {
        self.inner.max_entries()
    }

    #[getter]
    fn per_peer(&self) -> usize {
        self.inner.limits().per_peer
    }

    #[getter]
    fn max_peers(&self) -> usize {
        self.inner.limits().max_peers
    }

    #[getter]
    fn evicted(&self) -> u64 {
        self.inner.evicted()
    }

    #[getter]
    fn forgotten(&self) -> u64 {
        self.inner.forgotten()
    }

    #[getter]
    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    #[getter]
    fn floor(&self) -> Option<f64> {
        let f = self.inner.floor();
        (f > f64::NEG_INFINITY).then_some(f)
    }

    #[setter]
    fn set_floor(&mut self, floor: Option<f64>) -> PyResult<()> {
        match floor {
            None => self.inner.set_floor(f64::NEG_INFINITY),
            Some(f) if f.is_finite() => self.inner.set_floor(f),
            Some(_) => return Err(errors::invalid_argument("floor must be a finite number or None")),
        }
        Ok(())
    }
}

/// The receive step of one connection: bucket → open → checks → dedup, in one call.
#[pyclass(module = "smsgnet._core")]
struct FrameReceiver {
    cipher: Arc<Cipher>,
    bucket: Option<Py<TokenBucket>>,
    dedup: Py<Deduplicator>,
    window: ReplayWindow,
    peer_id: Option<String>,
    sender: String,
    local_id: Option<String>,
    hint: SlotHint,
    last_error: String,
}

impl FrameReceiver {
    /// The receive step of a 1.0 frame: bucket, open, checks; `last_error` set.
    fn verdict(&mut self, py: Python<'_>, frame: &Bound<'_, PyAny>, now: Option<f64>) -> PyResult<Verdict> {
        let now = now_or_clock(now)?;
        let frame = text_arg(frame, "frame", false)?;
        let frame = frame.as_slice();
        if let Some(bucket) = &self.bucket {
            if !bucket.borrow_mut(py).inner.allow(now) {
                self.last_error.clear();
                return Ok(Verdict::Dropped(receive::DropReason::RateLimited, String::new()));
            }
        }
        let cipher = &self.cipher;
        let opened = if frame.len() >= LARGE_FRAME {
            py.allow_threads(|| cipher.open_body(frame))
        } else {
            cipher.open_body(frame)
        };
        let verdict = match opened {
            Ok(body) => {
                let mut dedup = self.dedup.borrow_mut(py);
                let hint = Cell::new(self.hint);
                let origin = Origin {
                    peer_id: self.peer_id.as_deref(),
                    sender: &self.sender,
                    local_id: self.local_id.as_deref(),
                    hint: Some(&hint),
                };
                let verdict = receive::check_message(body, &mut dedup.inner, self.window, origin, now);
                self.hint = hint.get();
                verdict
            }
            Err(e) => Verdict::Dropped(receive::DropReason::of_error(&e), e.to_string()),
        };
        match &verdict {
            Verdict::Accepted(..) => self.last_error.clear(),
            Verdict::Dropped(_, detail) => self.last_error.clone_from(detail),
        }
        Ok(verdict)
    }
}

/// What `receive_message` hands over for an accepted message: its fields
/// (`message_fields`) where the spans allow, else its JSON.
pub(crate) fn accepted(py: Python<'_>, body: &[u8], spans: Option<smsg::FieldSpans>) -> PyObject {
    match spans.and_then(|spans| message_fields(py, body, &spans)) {
        Some(fields) => fields,
        None => PyBytes::new(py, body).into_any().unbind(),
    }
}

/// Payloads longer than this are not copied out of the message for
/// `receive_message`: Python parses the whole JSON instead, which costs it
/// about a microsecond more and saves a copy of the payload.
const FIELDS_MAX_PAYLOAD: usize = 16 * 1024;

/// The 7-tuple `receive_message` hands over: (type, from, to, id, ts,
/// replyTo, payload JSON or None), "" for a missing field; None when the
/// payload is longer than `FIELDS_MAX_PAYLOAD` or a span is not UTF-8 text
/// (never for what the fast parser accepted).
pub(crate) fn message_fields(py: Python<'_>, body: &[u8], spans: &smsg::FieldSpans) -> Option<PyObject> {
    if spans.payload.as_ref().is_some_and(|r| r.len() > FIELDS_MAX_PAYLOAD) {
        return None;
    }
    let text = |span: &Option<std::ops::Range<usize>>| -> Option<Bound<'_, PyString>> {
        Some(match span {
            Some(r) => PyString::new(py, std::str::from_utf8(body.get(r.clone())?).ok()?),
            None => pyo3::intern!(py, "").clone(),
        })
    };
    let payload = match &spans.payload {
        Some(r) => PyBytes::new(py, body.get(r.clone())?).into_any().unbind(),
        None => py.None(),
    };
    let fields = (
        text(&spans.kind)?,
        text(&spans.from)?,
        text(&spans.to)?,
        text(&spans.id)?,
        text(&spans.ts)?,
        text(&spans.reply_to)?,
        payload,
    );
    fields.into_pyobject(py).ok().map(|t| t.into_any().unbind())
}

#[pymethods]
impl FrameReceiver {
    #[new]
    #[pyo3(signature = (cipher, dedup, *, bucket=None, max_age=300.0, max_future=60.0, peer_id=None, sender=None, local_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        cipher: PyRef<'_, SmsgCipher>,
        dedup: Py<Deduplicator>,
        bucket: Option<Py<TokenBucket>>,
        max_age: f64,
        max_future: f64,
        peer_id: Option<String>,
        sender: Option<String>,
        local_id: Option<String>,
    ) -> PyResult<Self> {
        if !(max_age.is_finite() && max_age > 0.0) {
            return Err(errors::invalid_argument("max_age must be a finite number > 0"));
        }
        if !(max_future.is_finite() && max_future >= 0.0) {
            return Err(errors::invalid_argument("max_future must be a finite number >= 0"));
        }
        let ttl = dedup.borrow(cipher.py()).inner.ttl();
        if max_age > ttl {
            return Err(errors::invalid_argument(format!(
                "max_age ({max_age}) must not exceed the dedup table's ttl ({ttl}): \
                 a frame could be replayed once its ID is forgotten"
            )));
        }
        let sender = sender.or_else(|| peer_id.clone()).unwrap_or_default();
        Ok(FrameReceiver {
            cipher: Arc::clone(&cipher.inner),
            bucket,
            dedup,
            window: ReplayWindow { max_age, max_future },
            peer_id,
            sender,
            local_id,
            hint: SlotHint::default(),
            last_error: String::new(),
        })
    }

    /// Returns ("ok", message_json) or (drop_reason, None).
    #[pyo3(signature = (frame, now=None))]
    fn receive<'py>(
        &mut self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyString>, PyObject)> {
        match self.verdict(py, frame, now)? {
            Verdict::Accepted(body, _) => Ok((pyo3::intern!(py, "ok").clone(), PyBytes::new(py, &body).into_any().unbind())),
            Verdict::Dropped(reason, _) => Ok((PyString::intern(py, reason.as_str()), py.None())),
        }
    }

    /// `receive`, handing over the Message's fields instead of its JSON where
    /// the fast parser read them: ("ok", (type, from, to, id, ts, replyTo,
    /// payload JSON or None)) with "" for a missing or null field;
    /// ("ok", message_json) otherwise; (drop_reason, None) as `receive`.
    #[pyo3(signature = (frame, now=None))]
    fn receive_message<'py>(
        &mut self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyString>, PyObject)> {
        match self.verdict(py, frame, now)? {
            Verdict::Accepted(body, spans) => Ok((pyo3::intern!(py, "ok").clone(), accepted(py, &body, spans))),
            Verdict::Dropped(reason, _) => Ok((PyString::intern(py, reason.as_str()), py.None())),
        }
    }

    /// The receive step for every frame of one read, in order, in one call: a
    /// list of (reason, value, fatal), where value is what `receive_message`
    /// hands over for an accepted frame and the detail of a dropped one (its
    /// `last_error`); fatal is always False on 1.0.
    #[pyo3(signature = (frames, now=None))]
    fn receive_messages<'py>(
        &mut self,
        py: Python<'py>,
        frames: &Bound<'py, PyList>,
        now: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let now = Some(now_or_clock(now)?);
        let out = PyList::empty(py);
        for frame in frames.iter() {
            match self.verdict(py, &frame, now)? {
                Verdict::Accepted(body, spans) => {
                    out.append((pyo3::intern!(py, "ok"), accepted(py, &body, spans), false))?
                }
                Verdict::Dropped(reason, detail) => out.append((PyString::intern(py, reason.as_str()), detail, false))?,
            }
        }
        Ok(out)
    }

    /// Detail of the last dropped frame ("" when the last frame was accepted).
    #[getter]
    fn last_error(&self) -> &str {
        &self.last_error
    }

    #[getter]
    fn peer_id(&self) -> Option<&str> {
        self.peer_id.as_deref()
    }

    #[getter]
    fn sender(&self) -> &str {
        &self.sender
    }

    #[getter]
    fn local_id(&self) -> Option<&str> {
        self.local_id.as_deref()
    }
}

/// Names of every drop reason `FrameReceiver.receive` can return.
#[pyfunction]
fn drop_reasons() -> Vec<&'static str> {
    receive::DropReason::ALL.iter().map(|r| r.as_str()).collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(generate_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(public_key, m)?)?;
    m.add_function(wrap_pyfunction!(node_id, m)?)?;
    m.add_function(wrap_pyfunction!(derive_shared_secret, m)?)?;
    m.add_function(wrap_pyfunction!(sign_challenge, m)?)?;
    m.add_function(wrap_pyfunction!(verify_challenge, m)?)?;
    m.add_function(wrap_pyfunction!(smsg_password, m)?)?;
    m.add_function(wrap_pyfunction!(keystream, m)?)?;
    m.add_function(wrap_pyfunction!(envelope, m)?)?;
    m.add_function(wrap_pyfunction!(parse_timestamp, m)?)?;
    m.add_function(wrap_pyfunction!(parse_timestamp_fields, m)?)?;
    m.add_function(wrap_pyfunction!(format_timestamp, m)?)?;
    m.add_function(wrap_pyfunction!(new_message_id, m)?)?;
    m.add_function(wrap_pyfunction!(drop_reasons, m)?)?;
    m.add_function(wrap_pyfunction!(seal_for_all, m)?)?;
    m.add_function(wrap_pyfunction!(take_binary_frames, m)?)?;
    m.add_class::<SmsgCipher>()?;
    m.add_class::<TokenBucket>()?;
    m.add_class::<Deduplicator>()?;
    m.add_class::<FrameReceiver>()?;
    m.add_function(wrap_pyfunction!(noise::noise_prologue, m)?)?;
    m.add_function(wrap_pyfunction!(noise::noise_sealed_len, m)?)?;
    m.add_class::<noise::NoiseHandshake>()?;
    m.add_class::<noise::NoiseLink>()?;
    m.add("NOISE_PATTERN", crate::noise::PATTERN)?;
    m.add("PROTOCOL_VERSION", "1.0")?;
    m.add("MAX_HEADER_LEN", smsg::MAX_HEADER_LEN)?;
    errors::add_to_module(m)?;
    Ok(())
}
