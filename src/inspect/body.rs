//! Bodies the inspect layer hands back: a checking pass-through for streams, and a replay of
//! bytes already read for bodies it did not (or could not) read to the end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::VerdictHandle;
use crate::contract::StreamChecker;

pin_project! {
    /// Passes every frame through unchanged while the checker reads a copy of the data.
    pub(super) struct CheckedBody {
        #[pin]
        inner: reqwest::Body,
        tap: Tap,
    }
}

/// The checker and where its verdict goes; dropping it unfinished means the caller cancelled
/// the stream.
struct Tap {
    checker: Option<StreamChecker>,
    verdict: VerdictHandle,
    first_chunk_seen: bool,
}

impl CheckedBody {
    pub(super) fn new(
        inner: reqwest::Body,
        checker: StreamChecker,
        verdict: VerdictHandle,
    ) -> Self {
        Self {
            inner,
            tap: Tap {
                checker: Some(checker),
                verdict,
                first_chunk_seen: false,
            },
        }
    }
}

impl Tap {
    fn finish(&mut self, end: impl FnOnce(StreamChecker) -> crate::contract::ContractVerdict) {
        if let Some(checker) = self.checker.take() {
            self.verdict.complete(end(checker));
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish(StreamChecker::cancelled);
    }
}

impl Body for CheckedBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    if !this.tap.first_chunk_seen {
                        this.tap.first_chunk_seen = true;
                        this.tap.verdict.mark_first_chunk();
                    }
                    if let Some(checker) = &mut this.tap.checker {
                        checker.feed(data);
                    }
                }
                // Some consumers stop polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.tap.finish(StreamChecker::finish);
                }
            }
            Some(Err(e)) if e.is_timeout() => this.tap.finish(StreamChecker::timed_out),
            Some(Err(_)) => this.tap.finish(StreamChecker::interrupted),
            None => this.tap.finish(StreamChecker::finish),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Bytes already read, then an error or the rest of the body.
    pub(super) struct Replay {
        prefix: Option<Bytes>,
        error: Option<reqwest::Error>,
        #[pin]
        rest: Option<reqwest::Body>,
    }
}

impl Replay {
    /// The bytes read, then the rest of the body.
    pub(super) fn then_rest(prefix: Bytes, rest: reqwest::Body) -> Self {
        Self {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            error: None,
            rest: Some(rest),
        }
    }

    /// The bytes read, then the error the connection failed with.
    pub(super) fn then_error(prefix: Bytes, error: reqwest::Error) -> Self {
        Self {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            error: Some(error),
            rest: None,
        }
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let this = self.project();
        if let Some(bytes) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // Upper bound first: `SizeHint` panics on a lower bound above the upper one, which a
        // replay of bytes read before an error (its rest an exact 0) would otherwise set.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint.set_lower(hint.lower().saturating_add(buffered));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_counts_the_bytes_it_holds_in_its_size() {
        // The lower bound used to be raised before the upper one: over a rest of known length
        // (a stalled body with a `Content-Length`), `size_hint` panicked.
        let replay = Replay::then_rest(Bytes::from_static(b"abc"), reqwest::Body::from("defg"));
        assert_eq!(replay.size_hint().exact(), Some(7));
        let nothing_held = Replay::then_rest(Bytes::new(), reqwest::Body::from("defg"));
        assert_eq!(nothing_held.size_hint().exact(), Some(4));
    }
}
