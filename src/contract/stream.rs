//! Checking an SSE body chunk by chunk.

use super::chat::ChatStream;
use super::responses::ResponsesStream;
use super::{Capture, ContractVerdict, Mode, Report};
use crate::evidence::{ApiSurface, SkipReason, Violation};
use crate::sse::{DEFAULT_MAX_EVENT_BYTES, Decoder, Frame};

#[derive(Debug)]
enum Machine {
    Chat(ChatStream),
    Responses(ResponsesStream),
    /// Not checked: an `other` surface, or past an oversized event.
    Off,
}

/// Checks a streaming body fed in chunks of any size, with memory bounded by the largest event
/// (at most the per-event cap).
///
/// Feed every chunk the caller receives, then end with exactly one of [`finish`](Self::finish)
/// (the body ended), [`interrupted`](Self::interrupted) (the connection failed) or
/// [`cancelled`](Self::cancelled) (the caller dropped the stream). Splitting the body
/// differently never changes the verdict.
///
/// ```
/// use reqwest_llm_guard::contract::{Mode, StreamChecker};
/// use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck, Violation};
///
/// let mut checker = StreamChecker::new(ApiSurface::ChatCompletions, Mode::Compat);
/// checker.feed(b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,");
/// checker.feed(b"\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},");
/// checker.feed(b"\"finish_reason\":null}]}\n\n");
/// // The connection closed here: no finish reason, no [DONE].
/// let verdict = checker.finish();
/// assert_eq!(verdict.parse_check, ParseCheck::Fail);
/// assert_eq!(verdict.violation, Some(Violation::StreamTruncated));
/// ```
#[derive(Debug)]
pub struct StreamChecker {
    decoder: Decoder,
    machine: Machine,
    report: Report,
    surface: ApiSurface,
    capture: Option<Capture>,
}

impl StreamChecker {
    /// A checker for this surface (an `other` surface gives a `skipped` verdict), with the
    /// default per-event cap ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new(surface: ApiSurface, mode: Mode) -> Self {
        Self::with_max_event_bytes(surface, mode, DEFAULT_MAX_EVENT_BYTES)
    }

    /// A checker whose events may hold at most `max` bytes. A larger event ends the check
    /// with `parse_check=skipped`, `contract.skip_reason=too_large` (unless a violation came
    /// first): nothing after it is counted or captured, however the body is split. The bytes
    /// themselves are unaffected.
    pub fn with_max_event_bytes(surface: ApiSurface, mode: Mode, max: usize) -> Self {
        let mut report = Report::new(mode);
        let machine = match surface {
            ApiSurface::ChatCompletions => Machine::Chat(ChatStream::default()),
            ApiSurface::Responses => Machine::Responses(ResponsesStream::default()),
            ApiSurface::Other => {
                report.skip(SkipReason::OtherSurface);
                Machine::Off
            }
        };
        Self {
            decoder: Decoder::with_max_event_bytes(max),
            machine,
            report,
            surface,
            capture: None,
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if matches!(self.machine, Machine::Off) {
            return;
        }
        let Self {
            decoder,
            machine,
            report,
            capture,
            ..
        } = self;
        decoder.feed(chunk, &mut |frame| {
            on_frame(machine, report, capture.as_mut(), frame);
        });
    }

    /// Whether the stream's terminal event has been seen (`[DONE]` for Chat, the terminal
    /// `response.*` event for Responses).
    pub fn terminal_seen(&self) -> bool {
        match &self.machine {
            Machine::Chat(c) => c.terminal_seen(),
            Machine::Responses(r) => r.terminal_seen(),
            Machine::Off => false,
        }
    }

    /// Keeps up to `max_chars` of completion text for the verdict (content capture).
    pub(crate) fn capture(&mut self, max_chars: usize) {
        self.capture = Some(Capture::new(self.surface, max_chars));
    }

    /// Records a tolerated deviation found outside the body (the inspect layer's
    /// content-type check).
    pub(crate) fn warn(&mut self, warning: crate::evidence::Warning) {
        self.report.warn(warning);
    }

    /// SSE events seen so far.
    pub fn events(&self) -> u64 {
        self.report.facts.events
    }

    fn verdict(self) -> ContractVerdict {
        let mut report = self.report;
        if let Some(capture) = self.capture {
            report.facts.output_text = Some(capture.into_text());
        }
        report.into_verdict()
    }

    /// Whether the body carried its answer (Chat: `[DONE]` or a finish reason; Responses: the
    /// terminal or an error event). A stream that did is judged as ended even if the connection
    /// then fails or the caller drops it.
    fn answered(&self) -> bool {
        match &self.machine {
            Machine::Chat(c) => c.answered(),
            Machine::Responses(r) => r.answered(),
            Machine::Off => false,
        }
    }

    /// The body ended cleanly: the verdict.
    pub fn finish(mut self) -> ContractVerdict {
        self.end();
        self.verdict()
    }

    fn end(&mut self) {
        let Self {
            decoder,
            machine,
            report,
            capture,
            ..
        } = self;
        let end = decoder.bytes_seen();
        if !matches!(machine, Machine::Off) {
            decoder.finish(&mut |frame| on_frame(machine, report, capture.as_mut(), frame));
        }
        match machine {
            Machine::Chat(c) if end > 0 => c.on_end(end, report),
            Machine::Responses(r) if end > 0 => r.on_end(end, report),
            Machine::Chat(_) | Machine::Responses(_) => report.fail(Violation::EmptyBody),
            Machine::Off => {}
        }
    }

    /// The connection failed mid-body: `body_read_error`, unless a violation came first or
    /// the stream had already carried its answer (then it is judged as if it had ended there).
    pub fn interrupted(self) -> ContractVerdict {
        self.interrupted_by(Violation::BodyReadError)
    }

    /// The client's timeout ran out mid-body: `body_timeout`, with the same exceptions as
    /// [`interrupted`](Self::interrupted).
    pub fn timed_out(self) -> ContractVerdict {
        self.interrupted_by(Violation::BodyTimeout)
    }

    fn interrupted_by(mut self, violation: Violation) -> ContractVerdict {
        if self.answered() {
            self.end();
        } else if !matches!(self.machine, Machine::Off) {
            let end = self.decoder.bytes_seen();
            self.report.fail_at(violation, Some(end));
        }
        self.verdict()
    }

    /// The caller dropped the stream before its end: `skipped` (`cancelled`), unless a
    /// violation came first or the stream had already carried its answer (then it is judged as
    /// if it had ended there: most SDKs stop reading at `[DONE]`).
    pub fn cancelled(mut self) -> ContractVerdict {
        if self.answered() {
            self.end();
        } else {
            self.report.skip(SkipReason::Cancelled);
        }
        self.verdict()
    }
}

fn on_frame(
    machine: &mut Machine,
    report: &mut Report,
    capture: Option<&mut Capture>,
    frame: Frame<'_>,
) {
    // Past an oversized event the checker is off, and `feed` stops decoding: an event decoded
    // from the same chunk as the oversized one must not count either, or the verdict (events,
    // captured text) would depend on where the body was split.
    if matches!(machine, Machine::Off) {
        return;
    }
    match frame {
        Frame::Event(event) => {
            report.facts.events += 1;
            if let Some(capture) = capture {
                capture.event(event.data());
            }
            match machine {
                Machine::Chat(c) => c.on_event(&event, report),
                Machine::Responses(r) => r.on_event(&event, report),
                Machine::Off => {}
            }
        }
        Frame::Oversized { .. } => {
            report.skip(SkipReason::TooLarge);
            *machine = Machine::Off;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::ParseCheck;

    fn chat(body: &str) -> StreamChecker {
        let mut c = StreamChecker::new(ApiSurface::ChatCompletions, Mode::Compat);
        c.feed(body.as_bytes());
        c
    }

    /// Checks `pieces` with an event cap of `max_event` bytes, capturing up to `capture`
    /// characters of text when asked.
    fn check_pieces(pieces: &[&[u8]], max_event: usize, capture: Option<usize>) -> ContractVerdict {
        let mut c = StreamChecker::with_max_event_bytes(
            ApiSurface::ChatCompletions,
            Mode::Compat,
            max_event,
        );
        if let Some(max) = capture {
            c.capture(max);
        }
        for piece in pieces {
            c.feed(piece);
        }
        c.finish()
    }

    /// The verdict of `body` whole, after checking that every cut into two or three pieces
    /// gives the same one.
    fn split_invariant(body: &[u8], max_event: usize, capture: Option<usize>) -> ContractVerdict {
        let whole = check_pieces(&[body], max_event, capture);
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let pieces = [&body[..i], &body[i..j], &body[j..]];
                assert_eq!(
                    check_pieces(&pieces, max_event, capture),
                    whole,
                    "cut at {i} and {j}, capture {capture:?}"
                );
            }
        }
        whole
    }

    #[test]
    fn events_after_an_oversized_one_count_for_nothing_however_the_body_is_split() {
        // The reported case: with an 8-byte cap, fed whole the second event was counted (the
        // decoder hands it over in the same call), cut after the first event it was not.
        let body = b"data: xxxxxxxxxx\n\ndata: 1\n\n";
        assert_eq!(body.len(), 27);
        for capture in [None, Some(100)] {
            let v = split_invariant(body, 8, capture);
            assert_eq!(v.parse_check, ParseCheck::Skipped);
            assert_eq!(v.skip_reason, Some(SkipReason::TooLarge));
            assert_eq!(v.facts.events, 0);
            assert_eq!(v.facts.output_text, capture.map(|_| String::new()));
        }
        // With content capture: text before the oversized event is kept, text after it never.
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"EARLY\"}}]}\n\n",
            "data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"LATE\"}}]}\n\n",
        );
        for capture in [None, Some(100)] {
            let v = split_invariant(body.as_bytes(), 64, capture);
            assert_eq!(v.skip_reason, Some(SkipReason::TooLarge));
            assert_eq!(v.facts.events, 1);
            assert_eq!(v.facts.output_text.as_deref(), capture.map(|_| "EARLY"));
        }
    }

    #[test]
    fn finish_reasons_past_the_tracked_choices_do_not_grow() {
        let chunk = r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":500,"delta":{},"finish_reason":"stop"}]}

"#;
        let v = chat(&chunk.repeat(1000)).finish();
        assert!(v.facts.finish_reasons.is_empty());
    }

    #[test]
    fn an_answered_stream_is_judged_the_same_however_it_ends() {
        let body = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let ended = chat(body).finish();
        assert_eq!(chat(body).cancelled(), ended);
        assert_eq!(chat(body).interrupted(), ended);
        // Not answered yet: dropped is cancelled, a reset is a read error.
        let half = &body[..40];
        assert_eq!(
            chat(half).cancelled().skip_reason,
            Some(SkipReason::Cancelled)
        );
        assert_eq!(
            chat(half).interrupted().violation,
            Some(Violation::BodyReadError)
        );
    }

    #[test]
    fn an_item_without_output_index_is_followed_in_compat() {
        let body = concat!(
            "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\",\"status\":\"in_progress\"}}\n\n",
            "data: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"item\":{\"type\":\"message\"}}\n\n",
            "data: {\"type\":\"response.content_part.added\",\"sequence_number\":2,\"output_index\":0,\"content_index\":0}\n\n",
            "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"output_index\":0,\"content_index\":0,\"delta\":\"x\"}\n\n",
            "data: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":{\"id\":\"r\",\"status\":\"completed\"}}\n\n",
        );
        let mut c = StreamChecker::new(ApiSurface::Responses, Mode::Compat);
        c.feed(body.as_bytes());
        assert_eq!(c.finish().parse_check, ParseCheck::Pass);
        let mut c = StreamChecker::new(ApiSurface::Responses, Mode::Strict);
        c.feed(body.as_bytes());
        assert_eq!(c.finish().violation, Some(Violation::MissingField));
    }
}
