//! Streams under failover: read up to the commit point before the caller sees anything, then
//! hand the body on, bounded in time between events, never ending cleanly after a failure.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use pin_project_lite::pin_project;

use crate::contract::ContractVerdict;
use crate::evidence::{ParseCheck, Violation};
use crate::inspect::VerdictHandle;
use crate::sse;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// When a streamed answer is handed to the caller. Before that point any failure moves the
/// call to the next upstream; after it, a failure ends the caller's body with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CommitPoint {
    /// At the first body bytes (the default): a stream that fails or stays silent before any
    /// byte fails over.
    #[default]
    FirstByte,
    /// At the first content event (text, a refusal, tool-call arguments): an early in-stream
    /// error, a stream cut before content, or a slow first token still fails over. At most
    /// [`FIRST_CONTENT_MAX_HELD`] bytes (1 MiB) are held waiting for it; past that, the
    /// stream is committed as it stands.
    FirstContent,
    /// At the end, the whole answer held up to `max_bytes` (then committed as it stands): any
    /// failure fails over transparently.
    End {
        /// The most the layer holds before handing the stream on.
        max_bytes: usize,
    },
}

/// The most the first-content commit point holds before handing a stream on without content.
pub const FIRST_CONTENT_MAX_HELD: usize = 1 << 20;

/// Why a stream failed before it was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreCommitFailure {
    /// Nothing (or no content) came within the first-token limit.
    FirstTokenTimeout,
    /// No event for the idle limit.
    Stalled,
    /// The stream ended, or its connection failed, before the commit point.
    Ended,
    /// An in-stream error, or a stream that broke its contract, before the commit point.
    Broken,
}

/// An error the caller's body ends with after the commit point.
#[derive(Debug)]
pub(crate) struct StreamFailed {
    violation: Violation,
}

impl fmt::Display for StreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the stream failed after it was handed on ({}): the answer is incomplete",
            self.violation
        )
    }
}

impl std::error::Error for StreamFailed {}

/// What an SSE event means for the commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    Content,
    Error,
}

fn seen(event: &sse::Event<'_>) -> Seen {
    let data = event.data();
    if event.event_type() == Some("error") {
        return Seen::Error;
    }
    if data == b"[DONE]" || data.is_empty() {
        return Seen::Nothing;
    }
    // Invalid UTF-8 anywhere is not JSON (and no `Value` either).
    let Ok(text) = std::str::from_utf8(data) else {
        return Seen::Nothing;
    };
    // A borrowed view of the few fields read (a fifth of a `Value`'s cost); anything it does
    // not take as written (another type, a duplicate key) goes to the `Value` reading below,
    // which decides as before.
    match serde_json::from_str::<sign::Event<'_>>(text) {
        Ok(view) => view.seen(),
        Err(_) => seen_value(data),
    }
}

/// Borrowed views for [`seen`]: each field typed as the `Value` reading takes it.
mod sign {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde::de::IgnoredAny;
    use serde_json::value::RawValue;

    use super::Seen;

    #[derive(Deserialize)]
    pub(super) struct Event<'a> {
        #[serde(default, borrow)]
        error: Option<&'a RawValue>,
        #[serde(rename = "type", default, borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        choices: Option<Vec<Choice<'a>>>,
    }

    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        delta: Option<Delta<'a>>,
    }

    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(default, borrow)]
        content: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        refusal: Option<Cow<'a, str>>,
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
    }

    impl Event<'_> {
        pub(super) fn seen(&self) -> Seen {
            // `null` reads as absent here, as `is_null` there.
            if self.error.is_some() {
                return Seen::Error;
            }
            if let Some(kind) = &self.kind {
                return super::seen_kind(kind);
            }
            let text = |s: &Option<Cow<'_, str>>| s.as_deref().is_some_and(|s| !s.is_empty());
            let content = self.choices.iter().flatten().any(|c| {
                c.delta.as_ref().is_some_and(|d| {
                    text(&d.content)
                        || text(&d.refusal)
                        || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                })
            });
            if content {
                Seen::Content
            } else {
                Seen::Nothing
            }
        }
    }
}

/// What a `type` names.
fn seen_kind(kind: &str) -> Seen {
    match kind {
        "error" | "response.failed" => Seen::Error,
        "response.output_text.delta"
        | "response.refusal.delta"
        | "response.function_call_arguments.delta" => Seen::Content,
        _ => Seen::Nothing,
    }
}

/// [`seen`] by a whole `serde_json::Value`: the reference, for what the view does not take.
fn seen_value(data: &[u8]) -> Seen {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Seen::Nothing;
    };
    if value.get("error").is_some_and(|e| !e.is_null()) {
        return Seen::Error;
    }
    if let Some(kind) = value.get("type").and_then(|t| t.as_str()) {
        return seen_kind(kind);
    }
    let content = value
        .get("choices")
        .and_then(|c| c.as_array())
        .is_some_and(|choices| {
            choices.iter().any(|c| {
                let d = &c["delta"];
                d["content"].as_str().is_some_and(|s| !s.is_empty())
                    || d["refusal"].as_str().is_some_and(|s| !s.is_empty())
                    || d["tool_calls"].as_array().is_some_and(|t| !t.is_empty())
            })
        });
    if content {
        Seen::Content
    } else {
        Seen::Nothing
    }
}

/// [`seen`] for errors only: [`Seen::Error`] or [`Seen::Nothing`]. An event that names no
/// error (`error`, `response.failed`) and has no `\u` escape (which could spell one) cannot be
/// one, and is not parsed: holding a stream to its end no longer parses every event twice.
fn seen_error(event: &sse::Event<'_>) -> Seen {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // Built once: a finder made per call cost more than the search.
    static MARKERS: LazyLock<[Finder<'static>; 3]> = LazyLock::new(|| {
        [
            Finder::new(b"error"),
            Finder::new(b"failed"),
            Finder::new(b"\\u"),
        ]
    });
    let data = event.data();
    let may = event.event_type() == Some("error") || MARKERS.iter().any(|m| m.find(data).is_some());
    match may.then(|| seen(event)) {
        Some(Seen::Error) => Seen::Error,
        _ => Seen::Nothing,
    }
}

/// A streamed body read up to its commit point.
pub(crate) struct PreCommit {
    /// The frames read, in order.
    pub(crate) prefix: Vec<Bytes>,
    /// The rest, unless the stream ended before the commit point.
    pub(crate) rest: Option<reqwest::Body>,
}

/// Reads `body` up to `commit`: its first byte (or content) by `first_token` (counted from the
/// attempt's start, headers included), then within `idle` between frames.
pub(crate) async fn read_to_commit(
    mut body: reqwest::Body,
    commit: CommitPoint,
    first_token: Option<tokio::time::Instant>,
    idle: Option<Duration>,
    verdict: &VerdictHandle,
) -> Result<PreCommit, PreCommitFailure> {
    let started = tokio::time::Instant::now();
    let mut prefix: Vec<Bytes> = Vec::new();
    let mut held = 0usize;
    let mut decoder = sse::Decoder::new();
    let mut last_frame = started;
    loop {
        // The wait for this frame: the first-token limit until the commit point's first sign,
        // and the idle limit between frames.
        let first_pending = commit == CommitPoint::FirstContent || prefix.is_empty();
        let by_first = first_token.filter(|_| first_pending);
        let by_idle = idle.map(|t| last_frame + t);
        let until = match (by_first, by_idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let frame = match until {
            Some(until) => match tokio::time::timeout_at(until, body.frame()).await {
                Ok(frame) => frame,
                // The verdict is set before the body (and its checker) is dropped.
                Err(_) if by_first == Some(until) => {
                    verdict.complete(ContractVerdict::failed(Violation::BodyStalled));
                    return Err(PreCommitFailure::FirstTokenTimeout);
                }
                Err(_) => {
                    verdict.complete(ContractVerdict::failed(Violation::BodyStalled));
                    return Err(PreCommitFailure::Stalled);
                }
            },
            None => body.frame().await,
        };
        last_frame = tokio::time::Instant::now();
        let data = match frame {
            None => {
                // The end: the inspect layer has its verdict now.
                return match (commit, verdict.get()) {
                    (CommitPoint::End { .. }, Some(v)) if v.parse_check != ParseCheck::Fail => {
                        Ok(PreCommit { prefix, rest: None })
                    }
                    (CommitPoint::End { .. }, Some(_)) => Err(PreCommitFailure::Broken),
                    _ => Err(PreCommitFailure::Ended),
                };
            }
            Some(Err(_)) => return Err(PreCommitFailure::Ended),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        held += data.len();
        let mut sign = Seen::Nothing;
        if commit != CommitPoint::FirstByte {
            decoder.feed(&data, &mut |frame| {
                if let sse::Frame::Event(event) = frame {
                    let s = match commit {
                        // Held to the end, only an error matters before it.
                        CommitPoint::End { .. } => seen_error(&event),
                        _ => seen(&event),
                    };
                    match (sign, s) {
                        (Seen::Error, _) | (_, Seen::Nothing) => {}
                        (_, s) => sign = s,
                    }
                }
            });
        }
        prefix.push(data);
        match commit {
            CommitPoint::FirstByte => {
                return Ok(PreCommit {
                    prefix,
                    rest: Some(body),
                });
            }
            CommitPoint::FirstContent => match sign {
                Seen::Error => {
                    verdict.complete(ContractVerdict::failed(Violation::ErrorInStream));
                    return Err(PreCommitFailure::Broken);
                }
                Seen::Content => {
                    return Ok(PreCommit {
                        prefix,
                        rest: Some(body),
                    });
                }
                // No content yet past the most held: committed as it stands, so a stream
                // that never gets to its content cannot fill the memory before its limit.
                Seen::Nothing if held > FIRST_CONTENT_MAX_HELD => {
                    return Ok(PreCommit {
                        prefix,
                        rest: Some(body),
                    });
                }
                Seen::Nothing => {}
            },
            CommitPoint::End { max_bytes } => {
                if sign == Seen::Error {
                    verdict.complete(ContractVerdict::failed(Violation::ErrorInStream));
                    return Err(PreCommitFailure::Broken);
                }
                if held > max_bytes {
                    return Ok(PreCommit {
                        prefix,
                        rest: Some(body),
                    });
                }
            }
        }
    }
}

type Continuing = super::continuation::Pending;

pin_project! {
    #[project = CommittedProj]
    /// The caller's body after the commit point: the frames read, then the rest within the
    /// idle limit; a stream whose verdict failed ends with an error, never cleanly. With a
    /// continuation plan, a stream cut after the commit is continued on the plan's upstream
    /// (its answer follows on the same body); the caller's verdict handle (`outer`) then
    /// judges the whole answer, and a failed continuation surfaces the original failure.
    pub(crate) struct Committed {
        prefix: VecDeque<Bytes>,
        #[pin]
        rest: Option<reqwest::Body>,
        verdict: VerdictHandle,
        idle: Option<Duration>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        // When the last frame came (the idle limit counts from it).
        last_frame: Option<tokio::time::Instant>,
        done: bool,
        plan: Option<super::continuation::Plan>,
        partial: super::continuation::Partial,
        outer: Option<VerdictHandle>,
        continuing: Option<Continuing>,
        // The first stream's failure, while a continuation runs or after it failed.
        original: Option<ContractVerdict>,
        first_chunk: bool,
    }
}

impl Committed {
    pub(crate) fn new(read: PreCommit, verdict: VerdictHandle, idle: Option<Duration>) -> Self {
        Self {
            prefix: read.prefix.into(),
            rest: read.rest,
            verdict,
            idle,
            timer: None,
            last_frame: None,
            done: false,
            plan: None,
            partial: super::continuation::Partial::default(),
            outer: None,
            continuing: None,
            original: None,
            first_chunk: false,
        }
    }

    /// Continues a cut stream with `plan`; the caller's call is judged through `outer`.
    pub(crate) fn with_continuation(
        mut self,
        plan: super::continuation::Plan,
        outer: VerdictHandle,
    ) -> Self {
        self.plan = Some(plan);
        self.outer = Some(outer);
        self
    }
}

/// `idle` after `last`, or a far future for a limit too long to add.
fn idle_deadline(last: tokio::time::Instant, idle: Duration) -> tokio::time::Instant {
    last.checked_add(idle)
        .unwrap_or_else(|| last + Duration::from_secs(60 * 60 * 24 * 365))
}

/// What a failure after the commit point leads to.
enum Next {
    /// A continuation was started: poll it.
    Continue,
    /// The body ends with this error.
    Fail(BoxError),
}

impl Body for Committed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            if let Some(bytes) = this.prefix.pop_front() {
                deliver(this.partial, this.outer.as_ref(), this.first_chunk, &bytes);
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if let Some(continuing) = this.continuing.as_mut() {
                let started = ready!(super::continuation::poll(continuing, cx));
                *this.continuing = None;
                if let Some((body, verdict)) = started {
                    this.rest.set(Some(body));
                    *this.verdict = verdict;
                    this.timer.set(None);
                    *this.last_frame = None;
                    continue;
                }
                return Poll::Ready(fail_original(
                    this.original.take(),
                    this.outer.as_ref(),
                    this.done,
                ));
            }
            if this.rest.is_none() {
                // No body left. A clean end only for an answer that kept its contract: a stream
                // that failed before its commit point, handed back with no hop left, ends in
                // its error, never cleanly.
                if this
                    .verdict
                    .get()
                    .is_some_and(|v| v.parse_check == ParseCheck::Fail)
                {
                    match fail(&mut this, None) {
                        Some(end) => return Poll::Ready(Some(end)),
                        None => continue,
                    }
                }
                return Poll::Ready(None);
            }
            let Some(rest) = this.rest.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            // The body first: a frame that is ready is handed on without touching the timer
            // (the idle limit is only looked at while the body is waiting).
            let frame = match rest.poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Some(idle) = *this.idle {
                        // One timer for the whole body, moved only when it fires: a frame
                        // just notes its time (a timer set anew for every frame was ~500
                        // instructions a frame).
                        let last = *this
                            .last_frame
                            .get_or_insert_with(tokio::time::Instant::now);
                        let deadline = idle_deadline(last, idle);
                        if this.timer.is_none() {
                            this.timer.set(Some(tokio::time::sleep_until(deadline)));
                        }
                        if let Some(mut timer) = this.timer.as_mut().as_pin_mut()
                            && timer.as_mut().poll(cx).is_ready()
                            && {
                                // Fired: stalled only if no frame came since it was set.
                                if deadline > tokio::time::Instant::now() {
                                    timer.as_mut().reset(deadline);
                                    timer.poll(cx).is_ready()
                                } else {
                                    true
                                }
                            }
                        {
                            // Stalled after the commit point: a failure the caller must see.
                            this.verdict
                                .complete(ContractVerdict::failed(Violation::BodyStalled));
                            this.timer.set(None);
                            match fail(&mut this, None) {
                                Some(end) => return Poll::Ready(Some(end)),
                                None => continue,
                            }
                        }
                    }
                    return Poll::Pending;
                }
            };
            if this.idle.is_some() {
                *this.last_frame = Some(tokio::time::Instant::now());
            }
            match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        deliver(this.partial, this.outer.as_ref(), this.first_chunk, data);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    if let Some(end) = fail(&mut this, Some(Box::new(e))) {
                        return Poll::Ready(Some(end));
                    }
                }
                None => {
                    let verdict = this.verdict.get();
                    if verdict
                        .as_ref()
                        .is_none_or(|v| v.parse_check != ParseCheck::Fail)
                    {
                        // A clean end: the answer (continued or not) kept its contract.
                        this.rest.set(None);
                        *this.done = true;
                        // The caller's call is judged by the last stream's verdict (the
                        // continuation's, when one completed the answer: its end is the
                        // answer's end).
                        complete_outer(this.outer.as_ref(), verdict);
                        return Poll::Ready(None);
                    }
                    if let Some(end) = fail(&mut this, None) {
                        return Poll::Ready(Some(end));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Bytes handed to the caller: the text so far grows, and the first one marks the time to
/// first chunk on the caller's own verdict handle.
fn deliver(
    partial: &mut super::continuation::Partial,
    outer: Option<&VerdictHandle>,
    first_chunk: &mut bool,
    data: &[u8],
) {
    if let Some(outer) = outer {
        partial.feed(data);
        if !std::mem::replace(first_chunk, true) {
            outer.mark_first_chunk();
        }
    }
}

/// After a failure: a continuation when one is planned, not tried yet, and the failure was a
/// cut; else the error the body ends with (the original failure's, after a failed
/// continuation).
fn after_failure(
    plan: Option<&super::continuation::Plan>,
    partial: &super::continuation::Partial,
    original: &mut Option<ContractVerdict>,
    failed: Option<ContractVerdict>,
    continuing: &mut Option<Continuing>,
) -> Next {
    if let Some(first) = original.as_ref() {
        // The continuation itself failed: the original failure stands.
        return Next::Fail(Box::new(StreamFailed {
            violation: first.violation.unwrap_or(Violation::StreamTruncated),
        }));
    }
    let violation = failed.as_ref().and_then(|v| v.violation);
    *original = failed.or_else(|| Some(ContractVerdict::failed(Violation::BodyReadError)));
    if let (Some(plan), Some(text)) = (plan, partial.text())
        && super::continuation::continuable(violation)
        && let Some(future) = super::continuation::start(plan, text)
    {
        *continuing = Some(future);
        return Next::Continue;
    }
    Next::Fail(Box::new(StreamFailed {
        violation: violation.unwrap_or(Violation::BodyReadError),
    }))
}

/// The original failure, after a continuation that could not take over (as the `Poll::Ready`
/// payload it is used as).
#[allow(clippy::unnecessary_wraps)]
fn fail_original(
    original: Option<ContractVerdict>,
    outer: Option<&VerdictHandle>,
    done: &mut bool,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    *done = true;
    let violation = original
        .as_ref()
        .and_then(|v| v.violation)
        .unwrap_or(Violation::StreamTruncated);
    complete_outer(outer, original);
    Some(Err(Box::new(StreamFailed { violation })))
}

/// The one failure path of a committed body, whatever failed it (a stall, a broken
/// connection, a verdict that failed at the end): a continuation takes over where the plan
/// allows one (`None`: poll it); else the body ends with the failure, and the caller's call is
/// judged by it. A failed continuation surfaces the original failure. A transport error with
/// no continuation plan reaches the caller as it came (its kind and timeout flag intact), the
/// call judged by the checker's verdict.
fn fail(
    this: &mut CommittedProj<'_>,
    transport: Option<BoxError>,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    this.rest.set(None);
    let failed = this.verdict.get();
    match after_failure(
        this.plan.as_ref(),
        this.partial,
        this.original,
        failed,
        this.continuing,
    ) {
        Next::Continue => None,
        Next::Fail(failure) => {
            *this.done = true;
            let broke = transport.is_some();
            if let Some(e) = transport
                && this.plan.is_none()
            {
                complete_outer(this.outer.as_ref(), this.verdict.get());
                return Some(Err(e));
            }
            let original = this.original.take();
            let violation = original.as_ref().and_then(|v| v.violation);
            complete_outer(this.outer.as_ref(), original);
            Some(Err(match violation {
                // With a plan, a broken connection is the stream's failure as first seen.
                Some(violation) if broke => Box::new(StreamFailed { violation }),
                _ => failure,
            }))
        }
    }
}

fn complete_outer(outer: Option<&VerdictHandle>, verdict: Option<ContractVerdict>) {
    if let (Some(outer), Some(v)) = (outer, verdict) {
        outer.complete(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &str) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut d = sse::Decoder::new();
        d.feed(body.as_bytes(), &mut |f| {
            if let sse::Frame::Event(e) = f {
                out.push(seen(&e));
            }
        });
        out
    }

    #[test]
    fn content_errors_and_the_rest_are_told_apart() {
        use Seen::{Content, Error, Nothing};
        let got = events(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n",
            "data: {\"error\":{\"code\":400,\"message\":\"m\"}}\n\n",
            "event: error\ndata: {\"message\":\"m\"}\n\n",
            "data: {\"type\":\"response.created\"}\n\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n",
            "data: {\"type\":\"response.failed\"}\n\n",
            "data: [DONE]\n\n",
        ));
        assert_eq!(
            got,
            vec![
                Nothing, Content, Content, Error, Error, Nothing, Content, Error, Nothing
            ]
        );
        // Held to the end, only errors count, and the same ones.
        let mut errors = Vec::new();
        let mut d = sse::Decoder::new();
        d.feed(
            concat!(
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"an error\"}}]}\n\n",
                "data: {\"\\u0065rror\":{\"message\":\"m\"}}\n\n",
                "data: {\"type\":\"response.failed\"}\n\n",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
                "event: error\ndata: {}\n\n",
            )
            .as_bytes(),
            &mut |f| {
                if let sse::Frame::Event(e) = f {
                    errors.push(seen_error(&e));
                }
            },
        );
        assert_eq!(errors, vec![Nothing, Error, Error, Nothing, Error]);
    }

    mod view_against_value {
        use super::super::{Seen, seen, seen_value};
        use crate::sse;
        use proptest::prelude::*;

        fn one_of(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
            proptest::sample::select(options)
        }

        fn delta() -> impl Strategy<Value = String> {
            let field = |name: &'static str, values: &'static [&'static str]| {
                proptest::option::of(one_of(values))
                    .prop_map(move |v| v.map_or(String::new(), |v| format!(r#""{name}":{v},"#)))
            };
            (
                field("content", &["null", r#""""#, r#""x""#, "5", r#""\u0041""#]),
                field("refusal", &["null", r#""""#, r#""no""#, "[]"]),
                field("tool_calls", &["null", "[]", "[1]", r#""x""#, "{}"]),
            )
                .prop_map(|(a, b, c)| format!("{{{a}{b}{c}\"k\":1}}"))
        }

        fn choice() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("3".to_owned()),
                Just("{}".to_owned()),
                Just(r#"{"delta":null}"#.to_owned()),
                Just(r#"{"delta":7}"#.to_owned()),
                delta().prop_map(|d| format!(r#"{{"index":0,"delta":{d}}}"#)),
                (delta(), delta()).prop_map(|(a, b)| format!(r#"{{"delta":{a},"delta":{b}}}"#)),
            ]
        }

        fn event() -> impl Strategy<Value = String> {
            let error = proptest::option::of(one_of(&["null", "{}", r#""e""#, "0"]));
            let kind = proptest::option::of(one_of(&[
                "null",
                "3",
                r#""error""#,
                r#""response.failed""#,
                r#""response.output_text.delta""#,
                r#""response.created""#,
                r#""response.refusal.delta""#,
            ]));
            let choices = proptest::option::of(prop_oneof![
                Just("null".to_owned()),
                Just(r#""x""#.to_owned()),
                prop::collection::vec(choice(), 0..3).prop_map(|c| format!("[{}]", c.join(","))),
            ]);
            (error, kind, choices, any::<bool>()).prop_map(|(e, k, c, twice)| {
                let mut fields = vec![r#""id":"x""#.to_owned()];
                if let Some(e) = e {
                    fields.push(format!(r#""error":{e}"#));
                }
                if let Some(k) = k {
                    fields.push(format!(r#""type":{k}"#));
                    if twice {
                        fields.push(r#""type":"response.created""#.to_owned());
                    }
                }
                if let Some(c) = c {
                    fields.push(format!(r#""choices":{c}"#));
                }
                format!("{{{}}}", fields.join(","))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// The borrowed view decides every event as the `Value` reading does.
            #[test]
            fn the_view_decides_as_the_value(data in event(), bad_byte in any::<bool>()) {
                let mut bytes = data.into_bytes();
                if bad_byte {
                    let at = bytes.len() / 2;
                    bytes.insert(at, 0xff);
                }
                let mut frame = b"data: ".to_vec();
                frame.extend_from_slice(&bytes);
                frame.extend_from_slice(b"\n\n");
                let mut got: Vec<Seen> = Vec::new();
                sse::Decoder::new().feed(&frame, &mut |f| {
                    if let sse::Frame::Event(e) = f {
                        got.push(seen(&e));
                    }
                });
                prop_assert_eq!(got, vec![seen_value(&bytes)]);
            }
        }
    }

    /// A stream that sends no content holds at most `FIRST_CONTENT_MAX_HELD` at the
    /// first-content point: then it is handed on as it stands, not held until its limit.
    #[tokio::test(start_paused = true)]
    async fn the_first_content_point_holds_a_bounded_prefix() {
        use futures_util::StreamExt as _;
        let filler = Bytes::from(format!(": {}\n\n", "x".repeat(256 * 1024)));
        let pieces = std::iter::repeat_n(filler, 5).map(Ok::<_, std::io::Error>);
        // Then silence: no content ever comes.
        let body = futures_util::stream::iter(pieces).chain(futures_util::stream::pending());
        let verdict = VerdictHandle::new();
        let started = tokio::time::Instant::now();
        let read = read_to_commit(
            reqwest::Body::wrap_stream(body),
            CommitPoint::FirstContent,
            Some(tokio::time::Instant::now() + Duration::from_secs(60)),
            Some(Duration::from_secs(60)),
            &verdict,
        )
        .await;
        let Ok(read) = read else {
            panic!("committed, not failed");
        };
        let held: usize = read.prefix.iter().map(Bytes::len).sum();
        assert!(held > FIRST_CONTENT_MAX_HELD && held < FIRST_CONTENT_MAX_HELD + 300 * 1024);
        assert!(read.rest.is_some());
        // Handed on at once, not when the first-token limit ran out.
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
