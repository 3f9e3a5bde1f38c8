//! The one mapping from core errors to Python exceptions. The classes are
//! defined in Python (`smsgnet/exceptions.py`) so the whole tree is drawn in
//! one place; this file only imports them.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::error::CoreError;

pyo3::import_exception!(smsgnet.exceptions, ConfigError);
pyo3::import_exception!(smsgnet.exceptions, InvalidKeyError);
pyo3::import_exception!(smsgnet.exceptions, SealError);
pyo3::import_exception!(smsgnet.exceptions, SmsgError);
pyo3::import_exception!(smsgnet.exceptions, FrameTruncatedError);
pyo3::import_exception!(smsgnet.exceptions, BadMagicError);
pyo3::import_exception!(smsgnet.exceptions, UnsupportedContainerVersionError);
pyo3::import_exception!(smsgnet.exceptions, HeaderTooLargeError);
pyo3::import_exception!(smsgnet.exceptions, InvalidHeaderError);
pyo3::import_exception!(smsgnet.exceptions, UnsupportedCompressionError);
pyo3::import_exception!(smsgnet.exceptions, UnsupportedFormatError);
pyo3::import_exception!(smsgnet.exceptions, AuthenticationFailedError);
pyo3::import_exception!(smsgnet.exceptions, InvalidEnvelopeError);
pyo3::import_exception!(smsgnet.exceptions, InvalidMessageError);
pyo3::import_exception!(smsgnet.exceptions, InvalidRecordError);
pyo3::import_exception!(smsgnet.exceptions, PeerAuthenticationError);

/// Map a core error to the matching `smsgnet.exceptions` class.
pub fn to_py_err(e: CoreError) -> PyErr {
    let text = e.to_string();
    match e {
        CoreError::KeyLength { .. } | CoreError::LowOrderPoint => InvalidKeyError::new_err(text),
        CoreError::Random => PyOSError::new_err(text),
        CoreError::InvalidInput(_) => SealError::new_err(text),
        CoreError::Truncated(_) => FrameTruncatedError::new_err(text),
        CoreError::BadMagic => BadMagicError::new_err(text),
        CoreError::UnsupportedContainerVersion(_) => UnsupportedContainerVersionError::new_err(text),
        CoreError::HeaderTooLarge(_) => HeaderTooLargeError::new_err(text),
        CoreError::HeaderInvalid(_) => InvalidHeaderError::new_err(text),
        CoreError::UnsupportedCompression(_) => UnsupportedCompressionError::new_err(text),
        CoreError::UnsupportedFormat(_) => UnsupportedFormatError::new_err(text),
        CoreError::AuthenticationFailed => AuthenticationFailedError::new_err(text),
        CoreError::EnvelopeInvalid(_) => InvalidEnvelopeError::new_err(text),
        CoreError::MessageInvalid(_) => InvalidMessageError::new_err(text),
        CoreError::NoiseHandshake(_) => PeerAuthenticationError::new_err(text),
        CoreError::RecordInvalid(_) => InvalidRecordError::new_err(text),
    }
}

/// A binding called with an argument out of its range ("you called it wrong"):
/// `ConfigError`, which is also a `ValueError`. The message names the argument.
pub fn invalid_argument(text: impl Into<String>) -> PyErr {
    ConfigError::new_err(text.into())
}

/// Names re-exported by `smsgnet._core`, so the module carries its own errors.
pub fn add_to_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SmsgError", py.get_type::<SmsgError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("InvalidKeyError", py.get_type::<InvalidKeyError>())?;
    m.add("SealError", py.get_type::<SealError>())?;
    m.add("FrameTruncatedError", py.get_type::<FrameTruncatedError>())?;
    m.add("BadMagicError", py.get_type::<BadMagicError>())?;
    m.add("UnsupportedContainerVersionError", py.get_type::<UnsupportedContainerVersionError>())?;
    m.add("HeaderTooLargeError", py.get_type::<HeaderTooLargeError>())?;
    m.add("InvalidHeaderError", py.get_type::<InvalidHeaderError>())?;
    m.add("UnsupportedCompressionError", py.get_type::<UnsupportedCompressionError>())?;
    m.add("UnsupportedFormatError", py.get_type::<UnsupportedFormatError>())?;
    m.add("AuthenticationFailedError", py.get_type::<AuthenticationFailedError>())?;
    m.add("InvalidEnvelopeError", py.get_type::<InvalidEnvelopeError>())?;
    m.add("InvalidMessageError", py.get_type::<InvalidMessageError>())?;
    m.add("InvalidRecordError", py.get_type::<InvalidRecordError>())?;
    m.add("PeerAuthenticationError", py.get_type::<PeerAuthenticationError>())?;
    Ok(())
}
