//! The inspect layer's judgement of a response, as pure functions of its status, headers and
//! body: the contract verdict and the wall. The [`Inspect`](crate::inspect::Inspect) layer
//! reads live bodies through them, and [`saved`] judges a response saved whole (what
//! `llm-guard check` does), so the offline judgement is the live one by construction.
//!
//! The rules, in order:
//! 1. a surface that is neither Chat nor Responses, or a response with no body (`HEAD`, 1xx,
//!    3xx, 204): not checked; a wall only from the headers;
//! 2. a 2xx labelled `text/event-stream`: checked as a stream as it passes, a wall only from
//!    the headers (a stream's body is never held to look for one);
//! 3. a body longer than the cap (by its `Content-Length`, or as read): not checked
//!    (`too_large`); a wall from the headers and, when it was read, its first bytes;
//! 4. a 2xx whose first bytes are server-sent events without the label: checked as a stream,
//!    with the warning `not_event_stream`;
//! 5. any other body: its contract, and a wall unless the body kept its contract or carried an
//!    error the API recognisably sent (then only an edge's own JSON answer can still be one).

use http::{HeaderMap, Method, StatusCode};

use crate::contract::{self, ContractVerdict, Mode, StreamChecker};
use crate::evidence::{ApiSurface, SkipReason, WafVerdict, Warning};
use crate::waf;

/// Default cap on a non-streaming body the inspect layer reads: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the inspect layer does with a response before it reads a byte of its body.
// Returned once a call and matched at once, never kept: boxing the verdict would cost an
// allocation on the paths that skip the body.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Before {
    /// Judged already, body unread (rules 1 and 3 by `Content-Length`).
    Done(ContractVerdict, Option<WafVerdict>),
    /// A labelled stream: checked as it passes (rule 2).
    Stream,
    /// Read the body, up to the cap; `sniff`: look for an unlabelled stream first (rule 4).
    Read {
        /// Whether its first bytes may make it a stream.
        sniff: bool,
    },
}

/// Rules 1 to 3, before the body: from the request's method, the status and the headers.
pub fn before_body(
    surface: ApiSurface,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    max_body: usize,
) -> Before {
    if surface == ApiSurface::Other {
        return Before::Done(
            ContractVerdict::skipped(SkipReason::OtherSurface),
            waf::classify_headers(headers),
        );
    }
    if method == Method::HEAD
        || status.is_informational()
        || status.is_redirection()
        || status == StatusCode::NO_CONTENT
    {
        return Before::Done(
            ContractVerdict::skipped(SkipReason::NoBody),
            waf::classify_headers(headers),
        );
    }
    if status.is_success() && labelled_stream(headers) {
        return Before::Stream;
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Before::Done(
            ContractVerdict::skipped(SkipReason::TooLarge),
            waf::classify_headers(headers),
        );
    }
    Before::Read {
        sniff: status.is_success(),
    }
}

/// Whether the headers label the body a stream (`text/event-stream`).
pub fn labelled_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(contract::is_event_stream)
}

/// Rule 5: a body read whole.
pub fn whole_body(
    surface: ApiSurface,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    mode: Mode,
) -> (ContractVerdict, Option<WafVerdict>) {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let verdict = contract::check_body(surface, status, content_type, body, mode);
    // A body that keeps its contract, or an error the API recognisably sent, is the API
    // speaking whatever the headers say (the `waf` module docs); only an edge's own JSON error
    // can still be a wall then.
    let wall = if verdict.is_pass() || verdict.api_error.is_some() {
        waf::classify_problem(headers, body)
    } else {
        waf::classify(status, headers, body)
    };
    (verdict, wall)
}

/// Rule 3, as read: a body that passed the cap, of which `first` are the first bytes read.
/// The wall is judged on at most [`waf::SNIFF_BYTES`] of them and never more than the cap,
/// however the body was split.
pub fn body_too_large(
    status: StatusCode,
    headers: &HeaderMap,
    first: &[u8],
    max_body: usize,
) -> (ContractVerdict, Option<WafVerdict>) {
    let head = &first[..first.len().min(waf::SNIFF_BYTES).min(max_body)];
    (
        ContractVerdict::skipped(SkipReason::TooLarge),
        waf::classify(status, headers, head),
    )
}

/// Rule 4's test on a body's first bytes: `Some(true)` when they start like server-sent events,
/// `Some(false)` when they cannot, `None` while they do not tell.
pub fn starts_like_events(first: &[u8]) -> Option<bool> {
    crate::sse::starts_like_events(first)
}

/// A response saved whole (a log, `curl -i`), judged as the inspect layer judges it live, with
/// its default caps: the same rules, in the same order. `as_stream` says the body was a stream
/// whatever its headers (no `not_event_stream` warning then).
pub fn saved(
    surface: ApiSurface,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    mode: Mode,
    as_stream: bool,
) -> (ContractVerdict, Option<WafVerdict>) {
    let max_body = DEFAULT_MAX_BODY_BYTES;
    let stream = |warn: bool| {
        let mut checker = StreamChecker::new(surface, mode);
        if warn {
            checker.warn(Warning::NotEventStream);
        }
        checker.feed(body);
        (checker.finish(), waf::classify_headers(headers))
    };
    match before_body(surface, &Method::POST, status, headers, max_body) {
        Before::Done(verdict, wall) => (verdict, wall),
        Before::Stream => stream(false),
        Before::Read { sniff } => {
            // As the layer reads: the first bytes tell a stream before the cap is reached.
            if as_stream && sniff {
                stream(false)
            } else if sniff && starts_like_events(body) == Some(true) {
                stream(true)
            } else if body.len() > max_body {
                body_too_large(status, headers, body, max_body)
            } else {
                whole_body(surface, status, headers, body, mode)
            }
        }
    }
}
