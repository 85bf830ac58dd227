//! The fallback decision for a call: a pure, replaceable table.

use std::fmt;

use http::StatusCode;

use super::verdict::{ApiError, ContractVerdict};
use super::{FallbackDecision, ParseCheck, StatusClass, Violation, WafKind, WafVerdict, str_enum};

str_enum! {
    /// Why no response arrived (attribute `error.type` when `status_class=transport_error`).
    #[non_exhaustive]
    pub enum TransportErrorKind {
        /// The request timed out before the response's headers (the client's timeout).
        Timeout => "timeout",
        /// The connection could not be made (DNS, refused, TLS).
        Connect => "connect",
        /// The connection was reset or closed by the other side before the response's headers.
        Reset => "reset",
        /// No response headers within the retry layer's per-attempt limit.
        TimeToHeaders => "time_to_headers",
        /// The request failed while being sent or while its headers were awaited.
        Request => "request",
        /// Any other failure before a response (a middleware error, a redirect loop).
        Other => "other",
    }
}

impl TransportErrorKind {
    /// Classifies a `reqwest-middleware` error.
    pub fn of(error: &reqwest_middleware::Error) -> Self {
        match error {
            reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => Self::Timeout,
            reqwest_middleware::Error::Reqwest(e) if e.is_connect() => Self::Connect,
            reqwest_middleware::Error::Reqwest(e) if was_reset(e) => Self::Reset,
            reqwest_middleware::Error::Reqwest(e) if e.is_request() => Self::Request,
            reqwest_middleware::Error::Middleware(e)
                if e.downcast_ref::<crate::Error>()
                    .is_some_and(|e| e.kind() == crate::ErrorKind::TimeToHeaders) =>
            {
                Self::TimeToHeaders
            }
            _ => Self::Other,
        }
    }
}

/// Whether the error's causes say the peer reset or closed the connection: an I/O reset, or
/// hyper's "connection closed before message completed".
pub(crate) fn was_reset(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_closed())
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What came back from a call's last attempt: the input of a [`DecisionPolicy`].
///
/// Every call is decided from one of these, whatever its kind: a checked body, a stream at its
/// end, a transport error, a cancelled call.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// The status, or `None` when no response arrived.
    pub status: Option<StatusCode>,
    /// Set when no response arrived.
    pub transport_error: Option<TransportErrorKind>,
    /// The contract check's result for the body.
    pub parse_check: ParseCheck,
    /// The first hard violation, when `parse_check` is `fail`.
    pub violation: Option<Violation>,
    /// The API's error, normalised ([`ApiError`]: type, code, status), when the body carried
    /// one: a non-2xx envelope, an error payload in a 2xx, an in-stream error event.
    pub api_error: Option<&'a ApiError>,
    /// Set when a WAF or bot wall answered.
    pub waf: Option<&'a WafVerdict>,
    /// The caller cancelled the call (dropped its future, or a stream before its end).
    pub cancelled: bool,
}

impl<'a> Outcome<'a> {
    /// A response with this status whose body was checked with this result.
    pub fn response(
        status: StatusCode,
        parse_check: ParseCheck,
        violation: Option<Violation>,
    ) -> Self {
        Self {
            status: Some(status),
            transport_error: None,
            parse_check,
            violation,
            api_error: None,
            waf: None,
            cancelled: false,
        }
    }

    /// A response with this status and its contract verdict (its API error included).
    pub fn checked(status: StatusCode, verdict: &'a ContractVerdict) -> Self {
        Self {
            api_error: verdict.api_error.as_ref(),
            cancelled: verdict.skip_reason == Some(super::SkipReason::Cancelled),
            ..Self::response(status, verdict.parse_check, verdict.violation)
        }
    }

    /// No response arrived.
    pub fn transport_error(kind: TransportErrorKind) -> Self {
        Self {
            status: None,
            transport_error: Some(kind),
            parse_check: ParseCheck::Skipped,
            violation: None,
            api_error: None,
            waf: None,
            cancelled: false,
        }
    }

    /// The caller cancelled the call; `status` is the response's when one had arrived.
    pub fn cancelled(status: Option<StatusCode>) -> Self {
        Self {
            status,
            transport_error: None,
            parse_check: ParseCheck::Skipped,
            violation: None,
            api_error: None,
            waf: None,
            cancelled: true,
        }
    }

    /// The same outcome, answered by a wall.
    #[must_use]
    pub fn with_waf(mut self, waf: &'a WafVerdict) -> Self {
        self.waf = Some(waf);
        self
    }

    /// The same outcome, carrying the API's error.
    #[must_use]
    pub fn with_api_error(mut self, error: &'a ApiError) -> Self {
        self.api_error = Some(error);
        self
    }

    /// The status class (`transport_error` when no response arrived, `cancelled` when the
    /// caller cancelled before one did).
    pub fn status_class(&self) -> StatusClass {
        match self.status {
            Some(s) => StatusClass::of(s),
            None if self.cancelled => StatusClass::Cancelled,
            None => StatusClass::TransportError,
        }
    }

    /// The API error's code as text (`context_length_exceeded`, `insufficient_quota`, `429`).
    pub fn error_code(&self) -> Option<std::borrow::Cow<'a, str>> {
        self.api_error
            .and_then(|e| e.code.as_ref())
            .map(super::super::contract::ErrorCode::as_text)
    }
}

/// Decides with `policy`: the one place every decision of the crate is made. A policy that
/// answers [`FallbackDecision::Retry`] (which only the retry layer may say, per attempt) is
/// read as `fallback`.
pub fn decide(policy: &dyn DecisionPolicy, outcome: &Outcome<'_>) -> FallbackDecision {
    match policy.decide(outcome) {
        FallbackDecision::Retry => FallbackDecision::Fallback,
        d => d,
    }
}

/// Decides `fallback_decision` for a call from its final [`Outcome`].
///
/// [`DecisionTable::default()`] is the default; replace it with another table or any type (or
/// closure) implementing this trait. It must be pure: same outcome, same decision.
///
/// ```
/// use reqwest_llm_guard::evidence::{DecisionPolicy, FallbackDecision, Outcome, ParseCheck};
///
/// // Send everything that is not a clean success to the fallback provider.
/// let eager = |o: &Outcome<'_>| {
///     if o.status.is_some_and(|s| s.is_success()) && o.violation.is_none() {
///         FallbackDecision::None
///     } else {
///         FallbackDecision::Fallback
///     }
/// };
/// let o = Outcome::response(http::StatusCode::NOT_FOUND, ParseCheck::Pass, None);
/// assert_eq!(eager.decide(&o), FallbackDecision::Fallback);
/// ```
pub trait DecisionPolicy: Send + Sync + 'static {
    /// The decision for this outcome. Never [`FallbackDecision::Retry`]: retrying is the retry
    /// layer's call, made per attempt.
    fn decide(&self, outcome: &Outcome<'_>) -> FallbackDecision;
}

impl<F> DecisionPolicy for F
where
    F: Fn(&Outcome<'_>) -> FallbackDecision + Send + Sync + 'static,
{
    fn decide(&self, outcome: &Outcome<'_>) -> FallbackDecision {
        self(outcome)
    }
}

/// One row's condition in a [`DecisionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// A WAF or bot wall answered, at any status (an edge's rate limit is not one: see
    /// [`Rule::EdgeRateLimit`]).
    Waf,
    /// An edge's own rate limit answered (`waf.kind=rate_limit`, Cloudflare's 1015), at any
    /// status.
    EdgeRateLimit,
    /// No response arrived.
    TransportError,
    /// A 2xx whose body broke its contract.
    ContractFailOn2xx,
    /// Exactly this status.
    Status(u16),
    /// A status in this inclusive range.
    StatusRange(u16, u16),
    /// The caller cancelled the call.
    Cancelled,
    /// A 2xx whose body carried an API error stating a 4xx status of its own (Groq's in-stream
    /// `status_code: 400`), other than 408 and 429: the request itself was refused.
    ClientErrorInBody,
    /// The API's error code (`error.code`) is exactly this (`context_length_exceeded`,
    /// `insufficient_quota`, …).
    ApiErrorCode(&'static str),
    /// The API's error type (`error.type`) is exactly this (`invalid_request_error`, …).
    ApiErrorType(&'static str),
}

impl Rule {
    /// Whether the outcome meets this condition.
    pub fn matches(&self, o: &Outcome<'_>) -> bool {
        let code = o.status.map(|s| s.as_u16());
        match *self {
            Rule::Waf => o.waf.is_some_and(|w| w.kind != WafKind::RateLimit),
            Rule::EdgeRateLimit => o.waf.is_some_and(|w| w.kind == WafKind::RateLimit),
            Rule::TransportError => o.status.is_none(),
            Rule::ContractFailOn2xx => {
                o.status.is_some_and(|s| s.is_success()) && o.parse_check == ParseCheck::Fail
            }
            Rule::Status(s) => code == Some(s),
            Rule::StatusRange(lo, hi) => code.is_some_and(|c| (lo..=hi).contains(&c)),
            Rule::Cancelled => o.cancelled,
            Rule::ClientErrorInBody => {
                o.status.is_some_and(|s| s.is_success())
                    && o.api_error
                        .and_then(|e| e.status)
                        .is_some_and(|s| (400..=499).contains(&s) && s != 408 && s != 429)
            }
            Rule::ApiErrorCode(want) => o.error_code().is_some_and(|c| c == want),
            Rule::ApiErrorType(want) => o
                .api_error
                .and_then(|e| e.error_type.as_deref())
                .is_some_and(|t| t == want),
        }
    }
}

/// The decision table: rows tried in order, the first match decides.
///
/// The default rows:
///
/// | # | rule | decision | why |
/// |---|---|---|---|
/// | 1 | the caller cancelled | `none` | nothing to act on: the caller stopped waiting |
/// | 2 | WAF or bot wall, any status (not a rate limit) | `hold` | no path gets through; a human must act |
/// | 3 | an edge's own rate limit, any status | `fallback` | as a 429 whose retries ran out |
/// | 4 | transport error, timeout | `fallback` | the endpoint is unreachable |
/// | 5 | 2xx whose error (in-stream or in the body) states a 4xx, not 408/429 | `hold` | the request was refused; it fails anywhere |
/// | 6 | error code `context_length_exceeded` | `fallback` | a model with a larger context window can answer |
/// | 7 | 2xx breaking its contract | `fallback` | HTML, error payload, `failed`, truncated stream |
/// | 8 | 2xx | `none` | |
/// | 9 | 429 | `fallback` | retries, deadline or budget ran out (the retry layer retries first); `insufficient_quota` is not retried |
/// | 10 | 402, 408 | `fallback` | credits or a timeout on this provider |
/// | 11 | 400, 401, 403, 404, 409, 422 | `hold` | the same request fails on any path |
/// | 12 | other 4xx | `hold` | a request problem |
/// | 13 | 5xx | `fallback` | the provider is failing |
/// | 14 | 1xx, 3xx | `fallback` | not an API answer: the endpoint is misconfigured |
///
/// Rows can also match the API's error ([`Rule::ApiErrorCode`], [`Rule::ApiErrorType`]), so a
/// table can route on `context_length_exceeded` or `insufficient_quota`.
///
/// ```
/// use reqwest_llm_guard::evidence::{
///     DecisionPolicy, DecisionTable, FallbackDecision, Outcome, ParseCheck, Rule,
/// };
/// use http::StatusCode;
///
/// // This gateway answers 404 for a model that only the fallback provider has.
/// let table = DecisionTable::default().with_first(Rule::Status(404), FallbackDecision::Fallback);
/// let o = Outcome::response(StatusCode::NOT_FOUND, ParseCheck::Pass, None);
/// assert_eq!(table.decide(&o), FallbackDecision::Fallback);
///
/// // A prompt too long for this model fits a larger one elsewhere.
/// let table = table.with_first(Rule::ApiErrorCode("context_length_exceeded"), FallbackDecision::Fallback);
/// let body = br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
/// let error = reqwest_llm_guard::contract::ApiError::from_body(body).unwrap();
/// let o = Outcome::response(StatusCode::BAD_REQUEST, ParseCheck::Pass, None).with_api_error(&error);
/// assert_eq!(table.decide(&o), FallbackDecision::Fallback);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DecisionTable {
    rows: Vec<(Rule, FallbackDecision)>,
    otherwise: FallbackDecision,
}

impl Default for DecisionTable {
    fn default() -> Self {
        use FallbackDecision::{Fallback, Hold, None};
        let rows = vec![
            (Rule::Cancelled, None),
            (Rule::Waf, Hold),
            (Rule::EdgeRateLimit, Fallback),
            (Rule::TransportError, Fallback),
            (Rule::ClientErrorInBody, Hold),
            (Rule::ApiErrorCode("context_length_exceeded"), Fallback),
            (Rule::ContractFailOn2xx, Fallback),
            (Rule::StatusRange(200, 299), None),
            (Rule::Status(429), Fallback),
            (Rule::Status(402), Fallback),
            (Rule::Status(408), Fallback),
            (Rule::Status(400), Hold),
            (Rule::Status(401), Hold),
            (Rule::Status(403), Hold),
            (Rule::Status(404), Hold),
            (Rule::Status(409), Hold),
            (Rule::Status(422), Hold),
            (Rule::StatusRange(400, 499), Hold),
            (Rule::StatusRange(500, 599), Fallback),
        ];
        Self {
            rows,
            otherwise: Fallback,
        }
    }
}

impl DecisionTable {
    /// A table with no rows: everything gets `otherwise`.
    pub fn empty(otherwise: FallbackDecision) -> Self {
        Self {
            rows: Vec::new(),
            otherwise,
        }
    }

    /// The rows, in the order they are tried.
    pub fn rows(&self) -> &[(Rule, FallbackDecision)] {
        &self.rows
    }

    /// The decision when no row matches.
    pub fn otherwise(&self) -> FallbackDecision {
        self.otherwise
    }

    /// Adds a row tried before all others.
    #[must_use]
    pub fn with_first(mut self, rule: Rule, decision: FallbackDecision) -> Self {
        self.rows.insert(0, (rule, decision));
        self
    }

    /// Adds a row tried after all others (before `otherwise`).
    #[must_use]
    pub fn with_last(mut self, rule: Rule, decision: FallbackDecision) -> Self {
        self.rows.push((rule, decision));
        self
    }
}

impl DecisionPolicy for DecisionTable {
    fn decide(&self, outcome: &Outcome<'_>) -> FallbackDecision {
        self.rows
            .iter()
            .find(|(rule, _)| rule.matches(outcome))
            .map_or(self.otherwise, |(_, d)| *d)
    }
}

impl fmt::Debug for DecisionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionTable")
            .field("rows", &self.rows)
            .field("otherwise", &self.otherwise)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::WafVendor;
    use FallbackDecision::{Fallback, Hold, None};

    fn status(code: u16, check: ParseCheck) -> Outcome<'static> {
        let violation = (check == ParseCheck::Fail).then_some(Violation::HtmlBody);
        Outcome::response(StatusCode::from_u16(code).unwrap(), check, violation)
    }

    /// The default table, row by row, through the default policy.
    #[test]
    fn default_table_row_by_row() {
        let table = DecisionTable::default();
        let wall = WafVerdict::new(WafVendor::Cloudflare, WafKind::Challenge);
        let rate_limit = WafVerdict::new(WafVendor::Cloudflare, WafKind::RateLimit);
        let rows: Vec<(&str, Outcome<'_>, FallbackDecision)> = vec![
            ("2xx pass", status(200, ParseCheck::Pass), None),
            ("2xx skipped", status(200, ParseCheck::Skipped), None),
            ("2xx fail", status(200, ParseCheck::Fail), Fallback),
            ("202 fail", status(202, ParseCheck::Fail), Fallback),
            ("429", status(429, ParseCheck::Pass), Fallback),
            (
                "waf on 403",
                status(403, ParseCheck::Fail).with_waf(&wall),
                Hold,
            ),
            (
                "waf on 200",
                status(200, ParseCheck::Fail).with_waf(&wall),
                Hold,
            ),
            (
                "waf on 429",
                status(429, ParseCheck::Fail).with_waf(&wall),
                Hold,
            ),
            (
                "waf on 503",
                status(503, ParseCheck::Fail).with_waf(&wall),
                Hold,
            ),
            (
                "edge rate limit on 429",
                status(429, ParseCheck::Fail).with_waf(&rate_limit),
                Fallback,
            ),
            (
                "edge rate limit on 403",
                status(403, ParseCheck::Fail).with_waf(&rate_limit),
                Fallback,
            ),
            ("401", status(401, ParseCheck::Pass), Hold),
            ("403 json", status(403, ParseCheck::Pass), Hold),
            ("400", status(400, ParseCheck::Pass), Hold),
            ("404", status(404, ParseCheck::Pass), Hold),
            ("409", status(409, ParseCheck::Pass), Hold),
            ("422", status(422, ParseCheck::Pass), Hold),
            ("413 other 4xx", status(413, ParseCheck::Pass), Hold),
            ("402", status(402, ParseCheck::Pass), Fallback),
            ("408", status(408, ParseCheck::Pass), Fallback),
            ("500", status(500, ParseCheck::Pass), Fallback),
            ("502 html", status(502, ParseCheck::Fail), Fallback),
            ("503", status(503, ParseCheck::Pass), Fallback),
            ("529 anthropic", status(529, ParseCheck::Pass), Fallback),
            (
                "timeout",
                Outcome::transport_error(TransportErrorKind::Timeout),
                Fallback,
            ),
            (
                "connect",
                Outcome::transport_error(TransportErrorKind::Connect),
                Fallback,
            ),
            ("301", status(301, ParseCheck::Skipped), Fallback),
        ];
        for (name, outcome, want) in rows {
            assert_eq!(table.decide(&outcome), want, "{name}");
        }
    }

    #[test]
    fn rows_are_tried_in_order_and_replaceable() {
        let table = DecisionTable::default()
            .with_first(Rule::Status(404), Fallback)
            .with_first(Rule::Waf, Fallback);
        assert_eq!(table.decide(&status(404, ParseCheck::Pass)), Fallback);
        let wall = WafVerdict::new(WafVendor::Aws, WafKind::Block);
        assert_eq!(
            table.decide(&status(403, ParseCheck::Fail).with_waf(&wall)),
            Fallback
        );
        let empty = DecisionTable::empty(Hold);
        assert_eq!(empty.decide(&status(200, ParseCheck::Pass)), Hold);
        assert!(empty.rows().is_empty());
    }

    #[test]
    fn a_cancelled_call_is_decided_none_and_error_codes_route() {
        let table = DecisionTable::default();
        assert_eq!(
            table.decide(&Outcome::cancelled(Option::None)),
            FallbackDecision::None
        );
        assert_eq!(
            table.decide(&Outcome::cancelled(Some(StatusCode::OK))),
            FallbackDecision::None
        );
        let body =
            br#"{"error":{"message":"m","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let error = crate::contract::ApiError::from_body(body).unwrap();
        let o = status(429, ParseCheck::Pass).with_api_error(&error);
        assert_eq!(o.error_code().as_deref(), Some("insufficient_quota"));
        let routed = DecisionTable::default()
            .with_first(Rule::ApiErrorType("insufficient_quota"), Hold)
            .with_first(Rule::ApiErrorCode("nope"), FallbackDecision::None);
        assert_eq!(routed.decide(&o), Hold);
        assert_eq!(table.decide(&o), Fallback);
    }

    #[test]
    fn an_in_stream_client_error_holds_and_an_in_stream_rate_limit_does_not() {
        let table = DecisionTable::default();
        let groq = br#"{"error":{"message":"m","type":"invalid_request_error","code":"tool_use_failed","status_code":400}}"#;
        let groq = crate::contract::ApiError::from_body(groq).unwrap();
        let o = Outcome::response(
            StatusCode::OK,
            ParseCheck::Fail,
            Some(Violation::ErrorInStream),
        )
        .with_api_error(&groq);
        assert_eq!(table.decide(&o), Hold);
        let limited = br#"{"error":{"message":"m","code":429}}"#;
        let limited = crate::contract::ApiError::from_body(limited).unwrap();
        let o = Outcome::response(
            StatusCode::OK,
            ParseCheck::Fail,
            Some(Violation::ErrorInStream),
        )
        .with_api_error(&limited);
        assert_eq!(table.decide(&o), Fallback);
        let server = br#"{"error":{"message":"m","type":"server_error","code":null}}"#;
        let server = crate::contract::ApiError::from_body(server).unwrap();
        let o = Outcome::response(
            StatusCode::OK,
            ParseCheck::Fail,
            Some(Violation::ErrorInStream),
        )
        .with_api_error(&server);
        assert_eq!(table.decide(&o), Fallback);
    }

    #[test]
    fn decide_reads_a_retry_answer_as_fallback() {
        let says_retry = |_: &Outcome<'_>| FallbackDecision::Retry;
        assert_eq!(
            decide(&says_retry, &status(200, ParseCheck::Pass)),
            Fallback
        );
    }

    #[test]
    fn the_policy_never_says_retry() {
        let table = DecisionTable::default();
        for code in 100..=599 {
            for check in ParseCheck::ALL {
                let d = table.decide(&status(code, *check));
                assert_ne!(d, FallbackDecision::Retry, "{code} {check}");
            }
        }
    }
}
