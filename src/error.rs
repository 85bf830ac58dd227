//! The crate's one error type.

use std::error::Error as StdError;
use std::fmt;

/// What went wrong. Match on it; the message text is not API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The retry or the failover layer needs a copy of the request (to resend it, or to send
    /// it to an upstream), but its body is a stream that cannot be cloned. Buffer the body
    /// (`.body(bytes)` or `.json(..)`), or send such requests through a client without those
    /// layers.
    RequestNotCloneable,
    /// The OTLP export pipeline could not be built from its configuration (feature `otlp`).
    /// The cause is in [`source`](std::error::Error::source).
    OtlpConfig,
    /// The failover layer has no upstream to send the call to: none serves the request's
    /// surface, or those that do await the drill, or every one was passed over because its own
    /// key could not be had (the call's `FailoverRecord` says which, with the reason).
    NoUpstream,
    /// An attempt got no response headers within the retry layer's time-to-headers limit.
    TimeToHeaders,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::RequestNotCloneable => {
                "the request body is a stream and cannot be cloned for a retry or a hop; \
                 buffer it or send it without the retry and failover layers"
            }
            ErrorKind::OtlpConfig => "the OTLP export pipeline could not be built",
            ErrorKind::NoUpstream => "no upstream to send this request to",
            ErrorKind::TimeToHeaders => "no response headers within the time-to-headers limit",
        })
    }
}

/// An error raised by this crate: inside `reqwest_middleware::Error::Middleware` when a layer
/// raises it, or returned directly by the OTLP set-up.
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
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind, source: None }
    }

    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn with_source(
        kind: ErrorKind,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            source: Some(Box::new(source)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<Error> for reqwest_middleware::Error {
    fn from(e: Error) -> Self {
        reqwest_middleware::Error::middleware(e)
    }
}
