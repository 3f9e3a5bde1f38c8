//! Bindings of protocol 2.0 (`crate::noise`): `NoiseHandshake`, `NoiseLink`,
//! `noise_prologue`, `noise_sealed_len`.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use super::errors::{self, to_py_err};
use super::{message_fields, now_or_clock, text_arg, Deduplicator, TokenBucket};
use crate::error::CoreError;
use crate::noise::{self, Handshake, Link};
use crate::receive::DropReason;
use crate::smsg::{parse_message_head, MessageHead, LARGE_FRAME};

/// The prologue of a 2.0 handshake: the hello and the ack as sent.
#[pyfunction]
pub fn noise_prologue<'py>(py: Python<'py>, hello: &[u8], ack: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &noise::prologue(hello, ack))
}

/// Length of the frame that seals a message of `length` bytes.
#[pyfunction]
pub fn noise_sealed_len(length: usize) -> usize {
    noise::sealed_len(length)
}

/// One side of the 2.0 handshake (see `rust/noise.rs`).
#[pyclass(module = "smsgnet._core")]
pub struct NoiseHandshake {
    inner: Option<Handshake>,
}

impl NoiseHandshake {
    fn state(&mut self) -> PyResult<&mut Handshake> {
        self.inner
            .as_mut()
            .ok_or_else(|| errors::invalid_argument("the handshake was already turned into a link"))
    }
}

#[pymethods]
impl NoiseHandshake {
    /// The acceptor's side (it writes the first message); `dialler_public`
    /// comes from the dialler's hello. `ephemeral` fixes the ephemeral key
    /// (test vectors only).
    #[staticmethod]
    #[pyo3(signature = (private_key, dialler_public, prologue, *, ephemeral=None))]
    fn acceptor(private_key: &[u8], dialler_public: &[u8], prologue: &[u8], ephemeral: Option<&[u8]>) -> PyResult<Self> {
        let hs = match ephemeral {
            Some(e) => Handshake::with_ephemeral_for_tests(private_key, Some(dialler_public), prologue, e),
            None => Handshake::acceptor(private_key, dialler_public, prologue),
        }
        .map_err(to_py_err)?;
        Ok(NoiseHandshake { inner: Some(hs) })
    }

    /// The dialler's side (it reads the first message).
    #[staticmethod]
    #[pyo3(signature = (private_key, prologue, *, ephemeral=None))]
    fn dialler(private_key: &[u8], prologue: &[u8], ephemeral: Option<&[u8]>) -> PyResult<Self> {
        let hs = match ephemeral {
            Some(e) => Handshake::with_ephemeral_for_tests(private_key, None, prologue, e),
            None => Handshake::dialler(private_key, prologue),
        }
        .map_err(to_py_err)?;
        Ok(NoiseHandshake { inner: Some(hs) })
    }

    fn write_message<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let msg = self.state()?.write_message().map_err(to_py_err)?;
        Ok(PyBytes::new(py, &msg))
    }

    fn read_message(&mut self, message: &[u8]) -> PyResult<()> {
        self.state()?.read_message(message).map_err(to_py_err)
    }

    #[getter]
    fn finished(&self) -> bool {
        self.inner.as_ref().is_some_and(|h| h.is_finished())
    }

    #[getter]
    fn remote_public<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.as_ref().and_then(|h| h.remote_static()).map(|k| PyBytes::new(py, &k))
    }

    #[getter]
    fn handshake_hash<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.as_ref().map(|h| PyBytes::new(py, &h.handshake_hash()))
    }

    /// The link of a finished handshake (this object is spent afterwards).
    /// With `dedup`, `receive` drops a message whose ID `sender` already sent;
    /// with `peer_id`, one whose non-empty `from` is another node (strict sender).
    #[pyo3(signature = (*, rekey_interval=0, bucket=None, dedup=None, sender=None, peer_id=None))]
    fn into_link(
        &mut self,
        rekey_interval: i64,
        bucket: Option<Py<TokenBucket>>,
        dedup: Option<Py<Deduplicator>>,
        sender: Option<String>,
        peer_id: Option<String>,
    ) -> PyResult<NoiseLink> {
        let sender = sender.unwrap_or_default();
        let interval = u64::try_from(rekey_interval)
            .map_err(|_| errors::invalid_argument("rekey_interval must be >= 0"))?;
        let hs = self
            .inner
            .take()
            .ok_or_else(|| errors::invalid_argument("the handshake was already turned into a link"))?;
        let link = hs.into_link(interval).map_err(to_py_err)?;
        Ok(NoiseLink { inner: link, bucket, dedup, sender, peer_id, last_error: Mutex::new(String::new()) })
    }
}

/// The record layer of one 2.0 link. Seal and open may run on two threads at once.
#[pyclass(module = "smsgnet._core", frozen)]
pub struct NoiseLink {
    inner: Link,
    bucket: Option<Py<TokenBucket>>,
    dedup: Option<Py<Deduplicator>>,
    sender: String,
    /// Strict sender: a message whose non-empty `from` is not this is dropped.
    peer_id: Option<String>,
    last_error: Mutex<String>,
}

impl NoiseLink {
    /// Open `frame` straight into a new bytes object (the GIL released for large frames).
    fn open_bytes<'py>(&self, py: Python<'py>, frame: &[u8]) -> Result<Bound<'py, PyBytes>, CoreError> {
        let link = &self.inner;
        let len = match noise::opened_len(frame.len()) {
            Ok(len) => len,
            Err(e) => {
                link.mark_broken(); // as any other bad frame
                return Err(e);
            }
        };
        let mut failure = None;
        let opened = PyBytes::new_with(py, len, |out| {
            let result =
                if frame.len() >= LARGE_FRAME { py.allow_threads(|| link.open_into(frame, out)) } else { link.open_into(frame, out) };
            result.map_err(|e| {
                failure = Some(e);
                pyo3::exceptions::PyValueError::new_err("")
            })
        });
        match (opened, failure) {
            (Ok(bytes), _) => Ok(bytes),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(CoreError::RecordInvalid(format!("cannot allocate the message: {e}"))),
        }
    }

    /// The checks on the message head, as on 1.0 minus the `ts` window:
    /// an `id` is required; with `peer_id` (strict sender) a non-empty `from`
    /// must be the peer's; with `dedup`, the same ID twice from this peer is
    /// delivered once (replays need no table here: the counters refuse them).
    fn check_head(&self, py: Python<'_>, body: &[u8], now: f64) -> Option<DropReason> {
        self.checked_head(py, body, now).err()
    }

    /// `check_head`, giving the parsed head of a message that passed.
    fn checked_head<'b>(&self, py: Python<'_>, body: &'b [u8], now: f64) -> Result<MessageHead<'b>, DropReason> {
        let head = match parse_message_head(body) {
            Ok(head) => head,
            Err(e) => {
                self.set_error(e.to_string());
                return Err(DropReason::InvalidMessage);
            }
        };
        let id = match head.id.as_deref() {
            Some(id) if !id.is_empty() => id,
            _ => {
                self.set_error("message has no id".into());
                return Err(DropReason::InvalidMessage);
            }
        };
        if let (Some(expected), Some(from)) = (self.peer_id.as_deref(), head.from.as_deref()) {
            if !from.is_empty() && from != expected {
                let shown: String = from.chars().take(64).collect();
                self.set_error(format!("from {shown:?}"));
                return Err(DropReason::WrongSender);
            }
        }
        if let Some(dedup) = &self.dedup {
            if !dedup.borrow_mut(py).inner.check_and_mark(&self.sender, id, now) {
                return Err(DropReason::Duplicate);
            }
        }
        Ok(head)
    }

    /// The receive step of one frame: what `receive_message` hands over, or
    /// why it was dropped and whether the frame broke the link (it did not open).
    fn message_of(&self, py: Python<'_>, frame: &[u8], now: f64) -> Result<PyObject, (DropReason, bool)> {
        let bytes = self.open_counted(py, frame, now).map_err(|reason| (reason, reason != DropReason::RateLimited))?;
        let body = bytes.as_bytes();
        let head = self.checked_head(py, body, now).map_err(|reason| (reason, false))?;
        Ok(match head.spans(body).and_then(|spans| message_fields(py, body, &spans)) {
            Some(fields) => fields,
            None => bytes.clone().into_any().unbind(), // serde_json's path: Python parses the whole message
        })
    }

    /// Open, then the token bucket: the opened message, or why it was dropped.
    fn open_counted<'py>(&self, py: Python<'py>, frame: &[u8], now: f64) -> Result<Bound<'py, PyBytes>, DropReason> {
        match self.open_bytes(py, frame) {
            Ok(bytes) => {
                // Counted after opening: a frame the bucket refuses still moves
                // the receiving counter, so the link stays in step.
                if let Some(bucket) = &self.bucket {
                    if !bucket.borrow_mut(py).inner.allow(now) {
                        self.set_error(String::new());
                        return Err(DropReason::RateLimited);
                    }
                }
                Ok(bytes)
            }
            Err(e) => {
                self.set_error(e.to_string());
                Err(DropReason::of_error(&e))
            }
        }
    }

    fn set_error(&self, text: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = text;
        }
    }
}

#[pymethods]
impl NoiseLink {
    /// Seal one encoded Message. Frames must be written in the order they were sealed.
    fn seal<'py>(&self, py: Python<'py>, message_json: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let text = text_arg(message_json, "message_json", true)?;
        let msg = text.as_slice();
        let link = &self.inner;
        // sealed straight into the bytes object: no intermediate buffer
        PyBytes::new_with(py, noise::sealed_len(msg.len()), |out| {
            if msg.len() >= LARGE_FRAME { py.allow_threads(|| link.seal_into(msg, out)) } else { link.seal_into(msg, out) }
                .map_err(to_py_err)
        })
    }

    /// Open one frame: the encoded Message. Raises on any failure, after which
    /// the link is broken (see `broken`).
    fn open<'py>(&self, py: Python<'py>, frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let frame = text_arg(frame, "frame", false)?;
        self.open_bytes(py, frame.as_slice()).map_err(to_py_err)
    }

    /// The receive step of a 2.0 link: open, then the token bucket, then the
    /// head checks (`check_head`).
    /// Returns ("ok", message_json) or (drop_reason, None); after a frame that
    /// does not open, `broken` is True and the link must be closed.
    #[pyo3(signature = (frame, now=None))]
    fn receive<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyString>, PyObject)> {
        let now = now_or_clock(now)?;
        let frame = text_arg(frame, "frame", false)?;
        let checked = self.open_counted(py, frame.as_slice(), now).and_then(|bytes| {
            if self.dedup.is_some() || self.peer_id.is_some() {
                if let Some(reason) = self.check_head(py, bytes.as_bytes(), now) {
                    return Err(reason);
                }
            }
            Ok(bytes)
        });
        Ok(match checked {
            Ok(bytes) => (pyo3::intern!(py, "ok").clone(), bytes.into_any().unbind()),
            Err(reason) => (PyString::intern(py, reason.as_str()), py.None()),
        })
    }

    /// `receive`, handing over the Message's fields instead of its JSON where
    /// the head was read without escapes: ("ok", (type, from, to, id, ts,
    /// replyTo, payload JSON or None)) with "" for a missing or null field, so
    /// that only the payload is left to parse; ("ok", message_json) otherwise;
    /// (drop_reason, None) as `receive`.
    #[pyo3(signature = (frame, now=None))]
    fn receive_message<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyString>, PyObject)> {
        let now = now_or_clock(now)?;
        let frame = text_arg(frame, "frame", false)?;
        Ok(match self.message_of(py, frame.as_slice(), now) {
            Ok(got) => (pyo3::intern!(py, "ok").clone(), got),
            Err((reason, _)) => (PyString::intern(py, reason.as_str()), py.None()),
        })
    }

    /// The receive step for every frame of one read, in order, in one call: a
    /// list of (reason, value, fatal), where value is what `receive_message`
    /// hands over for an accepted frame and the detail of a dropped one (its
    /// `last_error`); fatal is True for a frame that did not open (the link is
    /// broken from there on).
    #[pyo3(signature = (frames, now=None))]
    fn receive_messages<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyList>,
        now: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let now = now_or_clock(now)?;
        let out = PyList::empty(py);
        for frame in frames.iter() {
            let frame = text_arg(&frame, "frame", false)?;
            match self.message_of(py, frame.as_slice(), now) {
                Ok(got) => out.append((pyo3::intern!(py, "ok").clone(), got, false))?,
                Err((reason, fatal)) => {
                    out.append((PyString::intern(py, reason.as_str()), self.last_error(), fatal))?;
                }
            }
        }
        Ok(out)
    }

    /// Detail of the last dropped frame ("" when the last frame was accepted).
    #[getter]
    fn last_error(&self) -> String {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// True once a frame failed to open: nothing more will.
    #[getter]
    fn broken(&self) -> bool {
        self.inner.is_broken()
    }

    /// (sending-key rekeys, receiving-key rekeys) so far.
    #[getter]
    fn rekeys(&self) -> (u64, u64) {
        self.inner.rekeys()
    }

    #[getter]
    fn rekey_interval(&self) -> u64 {
        self.inner.rekey_interval()
    }
}
