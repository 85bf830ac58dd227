//! Response contracts for both surfaces, streaming included.
//!
//! Pure functions over bytes, free of I/O:
//! - [`check_body`] checks a complete body: a Chat Completion or a Responses object on a 2xx, the
//!   error envelope on anything else;
//! - [`StreamChecker`] checks an SSE body fed chunk by chunk, with memory constant in the
//!   stream's length;
//! - [`ApiError::from_body`] normalises every error shape seen in the wild into one error.
//!
//! Each returns a [`ContractVerdict`]: `parse_check`, the first hard [`Violation`], the tolerated
//! [`Warning`]s, the normalised API error when the body carried one, and the [`ResponseFacts`]
//! telemetry wants (response id and model, finish reasons, token usage).
//!
//! # Modes
//!
//! [`Mode::Compat`] (the default) tolerates the deviations real providers and gateways send —
//! a missing `refusal` or `logprobs`, an integer `error.code`, a Responses stream without
//! `sequence_number`, `[DONE]` where it does not belong — and counts them as warnings.
//! [`Mode::Strict`] holds bodies to the OpenAI spec literally: most warnings become violations
//! ([`Warning::strict_violation`] lists which) and the Responses object's required keys are
//! checked too.
//!
//! ```
//! use http::StatusCode;
//! use reqwest_llm_guard::contract::{check_body, Mode};
//! use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck, Violation};
//!
//! // A gateway answered 200 with an error payload: not a success.
//! let body = br#"{"error":{"message":"upstream timed out","type":"server_error","code":null}}"#;
//! let verdict = check_body(ApiSurface::ChatCompletions, StatusCode::OK, None, body, Mode::Compat);
//! assert_eq!(verdict.parse_check, ParseCheck::Fail);
//! assert_eq!(verdict.violation, Some(Violation::ErrorIn2xx));
//! assert_eq!(verdict.api_error.unwrap().message, "upstream timed out");
//! ```

mod capture;
mod chat;
mod error;
mod responses;
mod stream;
mod template;
mod view;

pub use crate::evidence::{
    ApiError, ContractVerdict, ErrorCode, ErrorShape, ResponseFacts, TokenUsage,
};
pub(crate) use capture::Capture;
pub use stream::StreamChecker;

use http::StatusCode;

use crate::evidence::{ApiSurface, ParseCheck, SkipReason, Violation, Warning, Warnings};

/// Whether an event the body ended in the middle of was cut inside its data: the JSON it
/// started is unfinished (a complete JSON value, or `[DONE]`, only lost its blank line).
fn cut_inside(event: &crate::sse::Event<'_>) -> bool {
    let data = event.data();
    data != b"[DONE]"
        && !data.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err_and(|e| e.is_eof())
}

/// How literally contracts are enforced. See the [module docs](self#modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Tolerate what real providers and gateways send; count it as warnings. The default.
    #[default]
    Compat,
    /// The OpenAI spec, literally.
    Strict,
}

impl ContractVerdict {
    /// A verdict for a body that failed before it could be checked.
    pub(crate) fn failed(violation: Violation) -> Self {
        let mut report = Report::new(Mode::Compat);
        report.fail(violation);
        report.into_verdict()
    }
}

/// Checks a complete body.
///
/// - [`ApiSurface::Other`]: skipped (`other_surface`).
/// - 1xx, 204, 304, or any 3xx: skipped (`no_body`).
/// - Other 2xx: the surface's object (a `text/event-stream` body is checked as a whole
///   stream). A 2xx carrying an error payload fails with `error_in_2xx`.
/// - Non-2xx: the error envelope (the evidence drill's `error_shape_valid_on_4xx`).
pub fn check_body(
    surface: ApiSurface,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    mode: Mode,
) -> ContractVerdict {
    if surface == ApiSurface::Other {
        return ContractVerdict::skipped(SkipReason::OtherSurface);
    }
    if status.is_informational() || status.is_redirection() || status == StatusCode::NO_CONTENT {
        return ContractVerdict::skipped(SkipReason::NoBody);
    }
    if status.is_success() && content_type.is_some_and(is_event_stream) {
        let mut checker = StreamChecker::new(surface, mode);
        checker.feed(body);
        return checker.finish();
    }
    let mut report = Report::new(mode);
    if status.is_success() {
        match surface {
            ApiSurface::ChatCompletions => chat::check_completion(body, content_type, &mut report),
            ApiSurface::Responses => responses::check_response(body, content_type, &mut report),
            ApiSurface::Other => {}
        }
    } else if let Some(value) = parse_json(body, content_type, &mut report) {
        error::check_envelope(&value, Some(status.as_u16()), &mut report);
    }
    report.into_verdict()
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters and case ignored).
pub fn is_event_stream(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case("text/event-stream")
}

fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Parses a whole body as JSON, or records why it is not JSON.
fn parse_json(
    body: &[u8],
    content_type: Option<&str>,
    report: &mut Report,
) -> Option<serde_json::Value> {
    let parsed = serde_json::from_slice(body).ok();
    if parsed.is_none() {
        report.fail(not_json(body, content_type));
    }
    parsed
}

/// Why a body that failed to parse is not JSON: empty, HTML, or anything else.
fn not_json(body: &[u8], content_type: Option<&str>) -> Violation {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        Violation::EmptyBody
    } else if trimmed.first() == Some(&b'<')
        || content_type.is_some_and(|ct| media_type(ct).eq_ignore_ascii_case("text/html"))
    {
        Violation::HtmlBody
    } else {
        Violation::NotJson
    }
}

/// Collects what a check finds, then turns into a [`ContractVerdict`].
#[derive(Debug)]
pub(crate) struct Report {
    mode: Mode,
    violation: Option<(Violation, Option<u64>)>,
    skip: Option<SkipReason>,
    warnings: Warnings,
    api_error: Option<ApiError>,
    facts: ResponseFacts,
}

impl Report {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            mode,
            violation: None,
            skip: None,
            warnings: Warnings::default(),
            api_error: None,
            facts: ResponseFacts::default(),
        }
    }

    /// A tolerated deviation (a violation in strict mode, where the warning has one).
    pub(crate) fn warn(&mut self, warning: Warning) {
        self.warn_at(warning, None);
    }

    pub(crate) fn warn_at(&mut self, warning: Warning, offset: Option<u64>) {
        match (self.mode, warning.strict_violation()) {
            (Mode::Strict, Some(v)) => self.fail_at(v, offset),
            _ => self.warnings.add(warning),
        }
    }

    /// A violation of the spec that compat mode does not even count (strict's extra rules).
    pub(crate) fn strict(&mut self, violation: Violation) {
        if self.mode == Mode::Strict {
            self.fail(violation);
        }
    }

    pub(crate) fn fail(&mut self, violation: Violation) {
        self.fail_at(violation, None);
    }

    /// Records a hard violation; the first one is the one reported.
    pub(crate) fn fail_at(&mut self, violation: Violation, offset: Option<u64>) {
        if self.violation.is_none() {
            self.violation = Some((violation, offset));
        }
    }

    pub(crate) fn skip(&mut self, reason: SkipReason) {
        self.skip.get_or_insert(reason);
    }

    pub(crate) fn set_api_error(&mut self, error: ApiError) {
        self.api_error.get_or_insert(error);
    }

    pub(crate) fn facts(&mut self) -> &mut ResponseFacts {
        &mut self.facts
    }

    pub(crate) fn into_verdict(self) -> ContractVerdict {
        let (parse_check, skip_reason) = match (self.violation, self.skip) {
            (Some(_), _) => (ParseCheck::Fail, None),
            (None, Some(reason)) => (ParseCheck::Skipped, Some(reason)),
            (None, None) => (ParseCheck::Pass, None),
        };
        ContractVerdict {
            parse_check,
            violation: self.violation.map(|(v, _)| v),
            violation_offset: self.violation.and_then(|(_, at)| at),
            skip_reason,
            warnings: self.warnings,
            api_error: self.api_error,
            facts: self.facts,
        }
    }
}

/// Keeps the first value of an optional fact.
fn set_once(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none()
        && let Some(v) = value.filter(|v| !v.is_empty())
    {
        *slot = Some(v.to_owned());
    }
}
