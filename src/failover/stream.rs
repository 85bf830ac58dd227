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
    /// error, a stream cut before content, or a slow first token still fails over.
    FirstContent,
    /// At the end, the whole answer held up to `max_bytes` (then committed as it stands): any
    /// failure fails over transparently.
    End {
        /// The most the layer holds before handing the stream on.
        max_bytes: usize,
    },
}

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
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Seen::Nothing;
    };
    if value.get("error").is_some_and(|e| !e.is_null()) {
        return Seen::Error;
    }
    if let Some(kind) = value.get("type").and_then(|t| t.as_str()) {
        return match kind {
            "error" | "response.failed" => Seen::Error,
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta" => Seen::Content,
            _ => Seen::Nothing,
        };
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
                    match (sign, seen(&event)) {
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

pin_project! {
    /// The caller's body after the commit point: the frames read, then the rest within the
    /// idle limit; a stream whose verdict failed ends with an error, never cleanly.
    pub(crate) struct Committed {
        prefix: VecDeque<Bytes>,
        #[pin]
        rest: Option<reqwest::Body>,
        verdict: VerdictHandle,
        idle: Option<Duration>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        done: bool,
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
            done: false,
        }
    }
}

impl Body for Committed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(bytes) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(rest) = this.rest.as_mut().as_pin_mut() else {
            return Poll::Ready(end(this.verdict, this.done));
        };
        if let Some(idle) = *this.idle {
            if this.timer.is_none() {
                this.timer.set(Some(tokio::time::sleep(idle)));
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut()
                && timer.poll(cx).is_ready()
            {
                // Stalled after the commit point: a failure the caller must see.
                *this.done = true;
                this.verdict
                    .complete(ContractVerdict::failed(Violation::BodyStalled));
                this.rest.set(None);
                return Poll::Ready(Some(Err(Box::new(StreamFailed {
                    violation: Violation::BodyStalled,
                }))));
            }
        }
        let frame = ready!(rest.poll_frame(cx));
        this.timer.set(None);
        match frame {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(e)) => {
                *this.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => {
                this.rest.set(None);
                Poll::Ready(end(this.verdict, this.done))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The body's end: clean only when the stream kept its contract.
fn end(verdict: &VerdictHandle, done: &mut bool) -> Option<Result<Frame<Bytes>, BoxError>> {
    *done = true;
    match verdict.get() {
        Some(v) if v.parse_check == ParseCheck::Fail => Some(Err(Box::new(StreamFailed {
            violation: v.violation.unwrap_or(Violation::StreamTruncated),
        }))),
        _ => None,
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
    }
}
