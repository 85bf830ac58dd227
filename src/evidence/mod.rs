//! The evidence vocabulary: what every call leaves behind.
//!
//! Each type here is a low-cardinality value with a stable string form ([`ApiSurface::as_str`]
//! and friends): these strings are the values of the span attributes named in [`attr`] and of
//! metric labels, so they never change once released.

pub mod attr;
mod call;
mod decision;
pub mod metric;
mod records;
mod surface;
pub(crate) mod verdict;
mod waf;

pub(crate) use call::CallFacts;
pub use call::{Evidence, EvidenceHandle};
pub use decision::{DecisionPolicy, DecisionTable, Outcome, Rule, TransportErrorKind, decide};
pub use records::{
    AttemptRecord, FailoverRecord, FailoverStop, Hop, HopReason, PassReason, PassedOver,
    RetryRecord, StopReason, WaitReason,
};
pub(crate) use records::{CallLog, Leg};
pub use verdict::{
    ApiError, ContractVerdict, ErrorCode, ErrorShape, ResponseFacts, TokenUsage, VerdictHandle,
};
pub use waf::{WafKind, WafVendor, WafVerdict};

use std::fmt;

macro_rules! str_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $s:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string form used in spans, metrics and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// As its stable string form, the same as on spans and metrics.
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use str_enum;

str_enum! {
    /// Which OpenAI-compatible API a request speaks (attribute `api_surface`).
    ///
    /// Classified from the request's method and path by [`ApiSurface::classify`], or set per
    /// request by inserting an `ApiSurface` into the request's extensions.
    pub enum ApiSurface {
        /// `POST …/chat/completions` (and Azure's `/openai/deployments/{d}/chat/completions`).
        ChatCompletions => "chat_completions",
        /// `POST …/responses`, `GET …/responses/{id}` and `POST …/responses/{id}/cancel`.
        Responses => "responses",
        /// Anything else: not checked (`parse_check=skipped`).
        Other => "other",
    }
}

str_enum! {
    /// The class of the HTTP status, or `transport_error` when no response arrived
    /// (attribute `status_class`).
    pub enum StatusClass {
        /// 100-199.
        Informational => "1xx",
        /// 200-299.
        Success => "2xx",
        /// 300-399.
        Redirection => "3xx",
        /// 400-499.
        ClientError => "4xx",
        /// 500-599 (and anything above).
        ServerError => "5xx",
        /// No response: connect failure, timeout, reset before the headers.
        TransportError => "transport_error",
        /// No response: the caller cancelled the call before one arrived.
        Cancelled => "cancelled",
    }
}

impl StatusClass {
    /// The class of an HTTP status code.
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            0..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }
}

str_enum! {
    /// Whether the body kept its contract (attribute `parse_check`).
    pub enum ParseCheck {
        /// The body (or the error envelope, on a non-2xx) kept the contract; warnings allowed.
        Pass => "pass",
        /// A hard violation: `contract.violation` says which.
        Fail => "fail",
        /// Not checked: `contract.skip_reason` says why.
        Skipped => "skipped",
    }
}

str_enum! {
    /// What the caller should do next (attribute `fallback_decision`).
    pub enum FallbackDecision {
        /// Use the answer.
        None => "none",
        /// This attempt will be retried (attempt spans only).
        Retry => "retry",
        /// Send the call to the fallback endpoint, provider or surface.
        Fallback => "fallback",
        /// Don't fail over: the same request fails on any path, or a human must act
        /// (a WAF wall, bad credentials, a bad request).
        Hold => "hold",
    }
}

str_enum! {
    /// Why a body was not checked (attribute `contract.skip_reason`).
    #[non_exhaustive]
    pub enum SkipReason {
        /// The surface is [`ApiSurface::Other`].
        OtherSurface => "other_surface",
        /// The body (or one SSE event) was larger than the configured cap.
        TooLarge => "too_large",
        /// The caller cancelled the call: dropped its future, or dropped a stream before it
        /// ended.
        Cancelled => "cancelled",
        /// A 1xx/3xx or empty-bodied response (204, 304, `HEAD`) has nothing to check.
        NoBody => "no_body",
    }
}

str_enum! {
    /// The first hard contract violation of a body (attribute `contract.violation`).
    #[non_exhaustive]
    pub enum Violation {
        /// The body (or an SSE `data:` payload) is not JSON.
        NotJson => "not_json",
        /// The body is an HTML page.
        HtmlBody => "html_body",
        /// The body is empty.
        EmptyBody => "empty_body",
        /// A required field is missing.
        MissingField => "missing_field",
        /// A field has the wrong JSON type.
        WrongType => "wrong_type",
        /// A field holds a value outside its enum (strict mode).
        InvalidValue => "invalid_value",
        /// `object` names another kind of object.
        WrongObject => "wrong_object",
        /// A Chat Completion without a single choice.
        NoChoices => "no_choices",
        /// A 2xx body that carries an error payload instead of a result.
        ErrorIn2xx => "error_in_2xx",
        /// An error event or error payload inside a 2xx stream.
        ErrorInStream => "error_in_stream",
        /// A Responses object or stream that ended `failed`.
        ResponseFailed => "response_failed",
        /// A Responses object that ended `cancelled`.
        ResponseCancelled => "response_cancelled",
        /// A non-2xx body that is not a recognisable error envelope.
        ErrorShapeInvalid => "error_shape_invalid",
        /// The stream ended without its terminator.
        StreamTruncated => "stream_truncated",
        /// Events out of order: a delta before its item, a sequence number going back.
        StreamOutOfOrder => "stream_out_of_order",
        /// An event after the terminal event.
        EventAfterTerminal => "event_after_terminal",
        /// The connection failed while the body was being read.
        BodyReadError => "body_read_error",
        /// The client's own timeout ran out while the body was being read (reqwest's
        /// `timeout` or `read_timeout`): told apart from a failing connection.
        BodyTimeout => "body_timeout",
        /// The body stopped arriving (no byte for the inspect layer's idle timeout).
        BodyStalled => "body_stalled",
    }
}

impl Violation {
    /// Whether the body was cut off while it was being read (the connection failed, the
    /// client's timeout ran out, or no byte came for the idle limit), not refused or malformed.
    pub(crate) fn is_cut_off(self) -> bool {
        matches!(
            self,
            Self::BodyReadError | Self::BodyTimeout | Self::BodyStalled
        )
    }
}

str_enum! {
    /// A tolerated deviation from the spec, counted in `contract.warnings` (compat mode).
    ///
    /// Each was seen in real traffic from OpenAI itself or a well-known gateway
    /// (OpenAI's own streams, Azure, OpenRouter, Groq, vLLM, Ollama). In strict mode most of them are hard violations:
    /// [`Warning::strict_violation`] says which.
    #[non_exhaustive]
    pub enum Warning {
        /// `object` is absent.
        MissingObject => "missing_object",
        /// `object` is present but not the expected value (Azure's empty prelude chunk).
        UnexpectedObject => "unexpected_object",
        /// `id`, `model` or `created` is absent.
        MissingMetadata => "missing_metadata",
        /// A message lacks `refusal`.
        MissingRefusal => "missing_refusal",
        /// A choice lacks `logprobs`.
        MissingLogprobs => "missing_logprobs",
        /// A message lacks `content` but has tool calls.
        MissingContent => "missing_content",
        /// `finish_reason` is missing or null where a value was expected.
        MissingFinishReason => "missing_finish_reason",
        /// A `finish_reason` outside the spec's enum (`eos_token`, `end_turn`, `""`).
        UnknownFinishReason => "unknown_finish_reason",
        /// More than one chunk carried a finish reason for the same choice.
        RepeatedFinishReason => "repeated_finish_reason",
        /// A tool call without `type`.
        MissingToolCallType => "missing_tool_call_type",
        /// A tool call with an empty `id`.
        EmptyToolCallId => "empty_tool_call_id",
        /// A streamed tool call without `index`.
        MissingToolCallIndex => "missing_tool_call_index",
        /// Streamed tool-call indexes that do not start at 0 (Claude through OpenAI-compatible
        /// layers starts at 1 after text).
        ToolCallIndexOffset => "tool_call_index_offset",
        /// A chunk without `choices`.
        MissingChoices => "missing_choices",
        /// A Chat stream that ended after its finish reason but without `data: [DONE]`.
        MissingDone => "missing_done",
        /// A Responses stream that sent `data: [DONE]` (OpenAI does not; OpenRouter does).
        DoneOnResponses => "done_on_responses",
        /// A 2xx body of server-sent events whose `Content-Type` is not `text/event-stream`.
        NotEventStream => "not_event_stream",
        /// The last event had no blank line after it.
        UnterminatedEvent => "unterminated_event",
        /// A Responses event without `sequence_number` (recordings before mid-2025).
        MissingSequenceNumber => "missing_sequence_number",
        /// `sequence_number` skipped values.
        SequenceGap => "sequence_gap",
        /// A Responses event type not in the spec.
        UnknownEventType => "unknown_event_type",
        /// A Responses stream that did not start with `response.created`
        /// (a resumed background stream does this).
        MissingCreated => "missing_created",
        /// Output items interleaved (a new item added before the previous one was done): legal,
        /// never a violation even in strict mode (OpenAI interleaves `mcp_list_tools` items),
        /// but worth seeing.
        InterleavedItems => "interleaved_items",
        /// A delta for a content part that was never added.
        MissingContentPart => "missing_content_part",
        /// `function_call_arguments.done` without `name` (every real recording).
        MissingFunctionName => "missing_function_name",
        /// A Responses object without `status`.
        MissingStatus => "missing_status",
        /// A Responses `status` outside the spec's enum.
        UnknownStatus => "unknown_status",
        /// An error envelope without `error.type`.
        MissingErrorType => "missing_error_type",
        /// An error envelope without the `error.code` key.
        MissingErrorCode => "missing_error_code",
        /// An error envelope without `error.param`.
        MissingErrorParam => "missing_error_param",
        /// An integer `error.code` (OpenRouter, vLLM).
        IntegerErrorCode => "integer_error_code",
        /// An error body in a recognised non-OpenAI shape (Gemini's array, vLLM, Anthropic,
        /// `{"detail": …}`, `{"error": "…"}`).
        NonOpenaiErrorShape => "non_openai_error_shape",
    }
}

impl Warning {
    /// The hard violation this deviation becomes in strict mode, or `None` where even the spec
    /// is ambiguous and it stays a warning.
    pub const fn strict_violation(self) -> Option<Violation> {
        use Violation as V;
        use Warning as W;
        Some(match self {
            W::MissingObject
            | W::MissingMetadata
            | W::MissingRefusal
            | W::MissingLogprobs
            | W::MissingContent
            | W::MissingFinishReason
            | W::MissingToolCallType
            | W::MissingToolCallIndex
            | W::MissingChoices
            | W::MissingSequenceNumber
            | W::MissingFunctionName
            | W::MissingStatus => V::MissingField,
            W::UnexpectedObject => V::WrongObject,
            W::UnknownFinishReason | W::UnknownStatus | W::EmptyToolCallId => V::InvalidValue,
            W::MissingDone | W::UnterminatedEvent => V::StreamTruncated,
            W::SequenceGap
            | W::MissingCreated
            | W::MissingContentPart
            | W::RepeatedFinishReason => V::StreamOutOfOrder,
            W::MissingErrorType
            | W::MissingErrorCode
            | W::MissingErrorParam
            | W::IntegerErrorCode
            | W::NonOpenaiErrorShape => V::ErrorShapeInvalid,
            // The spec is silent (tool-call indexes, output items open side by side: OpenAI
            // itself interleaves `mcp_list_tools` items) or split (Open Responses requires
            // `[DONE]`, OpenAI never sends it); new event types are how the API grows.
            W::InterleavedItems
            | W::DoneOnResponses
            | W::UnknownEventType
            | W::ToolCallIndexOffset
            | W::NotEventStream => return None,
        })
    }

    const fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// The set of [`Warning`]s a body raised, with how often each kind occurred.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Warnings {
    kinds: u64,
    occurrences: u64,
}

impl Warnings {
    /// Records one occurrence.
    pub fn add(&mut self, warning: Warning) {
        self.kinds |= warning.bit();
        self.occurrences += 1;
    }

    /// Distinct kinds raised: the value of `contract.warnings`. A stream whose every chunk lacks
    /// `logprobs` has one warning, not one per chunk, so the figure does not grow with length.
    pub fn len(&self) -> u32 {
        self.kinds.count_ones()
    }

    /// No warning at all.
    pub fn is_empty(&self) -> bool {
        self.kinds == 0
    }

    /// Total occurrences, counting repeats.
    pub fn occurrences(&self) -> u64 {
        self.occurrences
    }

    /// Whether this kind was raised.
    pub fn contains(&self, warning: Warning) -> bool {
        self.kinds & warning.bit() != 0
    }

    /// The kinds raised, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = Warning> + '_ {
        Warning::ALL.iter().copied().filter(|w| self.contains(*w))
    }
}

impl fmt::Debug for Warnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Warning::as_str))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_code() {
        let cases = [
            (100, "1xx"),
            (204, "2xx"),
            (308, "3xx"),
            (429, "4xx"),
            (503, "5xx"),
            (599, "5xx"),
        ];
        for (code, class) in cases {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(StatusClass::of(status).as_str(), class);
        }
        assert_eq!(StatusClass::TransportError.as_str(), "transport_error");
    }

    #[test]
    fn warning_kinds_fit_the_bitset() {
        assert!(Warning::ALL.len() <= 64);
        let mut w = Warnings::default();
        w.add(Warning::MissingLogprobs);
        w.add(Warning::MissingLogprobs);
        w.add(Warning::SequenceGap);
        assert_eq!(w.len(), 2);
        assert_eq!(w.occurrences(), 3);
        assert_eq!(
            w.iter().collect::<Vec<_>>(),
            [Warning::MissingLogprobs, Warning::SequenceGap]
        );
        assert_eq!(format!("{w:?}"), r#"{"missing_logprobs", "sequence_gap"}"#);
    }

    #[test]
    fn string_forms_are_unique_snake_case() {
        let mut all: Vec<&str> = Violation::ALL.iter().map(|v| v.as_str()).collect();
        all.extend(Warning::ALL.iter().map(|w| w.as_str()));
        for s in &all {
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
