//! The crate's one error type.

use std::fmt;

/// What went wrong. Match on it; the message text is not API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The retry layer needs to resend the request, but its body is a stream that cannot be
    /// cloned. Buffer the body (`.body(bytes)` or `.json(..)`), or send such requests through a
    /// client without the retry layer.
    RequestNotCloneable,
}

/// An error raised by this crate's layers, inside `reqwest_middleware::Error::Middleware`.
///
/// ```
/// use reqwest_llm_guard::{Error, ErrorKind};
///
/// fn kind(e: &reqwest_middleware::Error) -> Option<ErrorKind> {
///     match e {
///         reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<Error>().map(Error::kind),
///         _ => None,
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::RequestNotCloneable => f.write_str(
                "the request body is a stream and cannot be cloned for a retry; \
                 buffer it or send it without the retry layer",
            ),
        }
    }
}

impl From<Error> for reqwest_middleware::Error {
    fn from(e: Error) -> Self {
        reqwest_middleware::Error::middleware(e)
    }
}
