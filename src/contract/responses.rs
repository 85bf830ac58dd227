//! The Responses contract: `response` objects, and typed event streams checked as a state
//! machine over event order (the OpenAI API reference's streaming events).
//!
//! The stream grammar enforced:
//!
//! ```text
//! stream   := response.created [response.queued] [response.in_progress] item* terminal
//! item     := output_item.added(i) body(i) output_item.done(i)   (i strictly increasing)
//! body     := content_part.added(c) delta* done content_part.done(c) | tool events | …
//! terminal := response.completed | response.incomplete | response.failed   (nothing after it)
//! ```
//!
//! plus `sequence_number` increasing by one, and `error` events (flat or nested) as in-stream
//! API errors. What real traffic bends is tolerated in compat mode: no `sequence_number` (2025
//! recordings), `[DONE]` after the terminal event, a fresh stream without `response.created`.
//! What the spec allows passes in strict mode too: items interleaved (OpenAI's own
//! `mcp_list_tools`, OpenRouter), and a background stream resumed with `starting_after`, which
//! begins past `response.created` (its first `sequence_number` above 0).

use std::borrow::Cow;

use super::template::{Shape, Templates};
use super::view::{self, Response, ResponseHead, StreamEvent};
use super::{ApiError, Report, set_once};
use crate::evidence::{Violation, Warning};
use crate::sse::Event;

const STATUSES: &[&str] = &[
    "completed",
    "failed",
    "in_progress",
    "cancelled",
    "queued",
    "incomplete",
];

/// Checks a non-streaming 2xx body.
pub(super) fn check_response(body: &[u8], content_type: Option<&str>, report: &mut Report) {
    let Some(r) = view::parse::<Response<'_>>(body, content_type, report, None) else {
        return;
    };
    let facts = report.facts();
    set_once(&mut facts.response_id, r.id.as_deref());
    set_once(&mut facts.response_model, r.model.as_deref());
    set_once(&mut facts.service_tier, r.service_tier.as_deref());
    if let Some(usage) = &r.usage {
        facts.usage = Some(usage.tokens());
    }
    let Some(output) = &r.output else {
        match ApiError::from_body(body) {
            Some(e) if r.status.is_none() => {
                report.fail(Violation::ErrorIn2xx);
                report.set_api_error(e);
            }
            _ if r.object.as_deref().is_some_and(|o| o != "response") => {
                report.fail(Violation::WrongObject);
            }
            _ => report.fail(Violation::MissingField),
        }
        return;
    };
    match r.object.as_deref() {
        Some("response") => {}
        Some(_) => report.fail(Violation::WrongObject),
        None => report.warn(Warning::MissingObject),
    }
    if r.id.is_none() || r.model.is_none() || r.created_at.is_none() {
        report.warn(Warning::MissingMetadata);
    }
    if !r.has_required_keys() {
        report.strict(Violation::MissingField);
    }
    let mut function_call = false;
    for item in output {
        match item.kind.as_deref() {
            None => report.fail(Violation::MissingField),
            Some("function_call") => {
                function_call = true;
                if item.arguments.is_none() {
                    report.fail(Violation::MissingField);
                }
            }
            Some(_) => {}
        }
    }
    report.facts().tool_calls = function_call;
    let error = r.error.flatten();
    let reason = r
        .incomplete_details
        .as_ref()
        .and_then(|d| d.as_ref())
        .and_then(|d| d.reason.as_deref());
    check_status(r.status.as_deref(), error, reason, function_call, report);
}

/// The status rules shared by objects and terminal events: `failed` and `cancelled` fail,
/// `incomplete` passes with its reason as the finish reason.
fn check_status(
    status: Option<&str>,
    error: Option<&serde_json::value::RawValue>,
    incomplete_reason: Option<&str>,
    function_call: bool,
    report: &mut Report,
) {
    let finish = match status {
        None => {
            report.warn(Warning::MissingStatus);
            return;
        }
        Some("completed") if function_call => "tool_calls",
        Some("completed") => "stop",
        Some("incomplete") => incomplete_reason.unwrap_or("incomplete"),
        Some("failed") => {
            report.fail(Violation::ResponseFailed);
            if let Some(e) = error.and_then(|e| ApiError::from_body(e.get().as_bytes())) {
                report.set_api_error(e);
            }
            "error"
        }
        Some("cancelled") => {
            report.fail(Violation::ResponseCancelled);
            "cancelled"
        }
        Some(s) if STATUSES.contains(&s) => return,
        Some(_) => {
            report.warn(Warning::UnknownStatus);
            return;
        }
    };
    report.facts().finish_reasons.push(finish.to_owned());
}

/// What an event type means to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    /// `response.queued`, `response.in_progress`.
    Progress,
    Terminal,
    Error,
    ItemAdded,
    ItemDone,
    PartAdded,
    PartDone,
    /// A delta or done event of an open content (or summary) part.
    PartEvent,
    /// `function_call_arguments.done`: its `name` is missing in every real recording.
    ArgumentsDone,
    /// Another event of an open item (argument deltas, tool-call progress).
    ItemEvent,
    /// An event tied to no item (`response.audio.*`).
    Free,
    Unknown,
}

fn kind_of(t: &str) -> Kind {
    let Some(rest) = t.strip_prefix("response.") else {
        return if t == "error" {
            Kind::Error
        } else {
            Kind::Unknown
        };
    };
    match rest {
        "created" => Kind::Created,
        "queued" | "in_progress" => Kind::Progress,
        "completed" | "incomplete" | "failed" => Kind::Terminal,
        "output_item.added" => Kind::ItemAdded,
        "output_item.done" => Kind::ItemDone,
        "content_part.added" | "reasoning_summary_part.added" => Kind::PartAdded,
        "content_part.done" | "reasoning_summary_part.done" => Kind::PartDone,
        "output_text.delta"
        | "output_text.done"
        | "output_text.annotation.added"
        | "refusal.delta"
        | "refusal.done"
        | "reasoning_text.delta"
        | "reasoning_text.done"
        | "reasoning_summary_text.delta"
        | "reasoning_summary_text.done" => Kind::PartEvent,
        "function_call_arguments.done" => Kind::ArgumentsDone,
        "function_call_arguments.delta"
        | "custom_tool_call_input.delta"
        | "custom_tool_call_input.done"
        | "mcp_call_arguments.delta"
        | "mcp_call_arguments.done" => Kind::ItemEvent,
        "audio.delta" | "audio.done" | "audio.transcript.delta" | "audio.transcript.done" => {
            Kind::Free
        }
        _ if [
            "code_interpreter_call",
            "web_search_call.",
            "file_search_call.",
            "image_generation_call.",
            "mcp_call.",
            "mcp_list_tools.",
            "shell_call_command.",
            "shell_call_output_content.",
        ]
        .iter()
        .any(|p| rest.starts_with(p)) =>
        {
            Kind::ItemEvent
        }
        _ => Kind::Unknown,
    }
}

/// Open items and parts are tracked up to this many; a stream that opens more without closing
/// them is not followed further (memory stays bounded), and lookups past it are not violations.
const MAX_OPEN: usize = 1024;

/// The Responses stream's state.
#[derive(Debug, Default)]
pub(super) struct ResponsesStream {
    started: bool,
    created: bool,
    terminal: bool,
    done_marker: bool,
    errored: bool,
    next_sequence: Option<u64>,
    next_output_index: u64,
    open_items: Vec<u64>,
    /// (output index, content or summary index, is a summary part)
    open_parts: Vec<(u64, u64, bool)>,
    overflow: bool,
    function_call: bool,
    /// The last plain delta event, for the fast path ([`template`]).
    template: Templates<PlainEvent>,
}

/// A delta event (a part's or an item's) with no `item`, `response` or `name`, as its view
/// read it: what an event that matches its template is, but for its sequence number.
#[derive(Debug)]
struct PlainEvent {
    kind: String,
    output_index: Option<u64>,
    content_index: Option<u64>,
    summary_index: Option<u64>,
}

impl PlainEvent {
    fn of(ev: &StreamEvent<'_>) -> Option<Self> {
        let kind = ev.kind.as_deref()?;
        let plain = ev.item.is_none()
            && ev.response.is_none()
            && ev.name.is_none()
            && matches!(kind_of(kind), Kind::PartEvent | Kind::ItemEvent);
        plain.then(|| Self {
            kind: kind.to_owned(),
            output_index: ev.output_index,
            content_index: ev.content_index,
            summary_index: ev.summary_index,
        })
    }

    /// The view serde_json gives of an event that matches this one's template, whose integer
    /// slot (if the template has one) holds `sequence_number`.
    fn view(&self, sequence_number: Option<u64>) -> StreamEvent<'_> {
        StreamEvent {
            kind: Some(Cow::Borrowed(&self.kind)),
            sequence_number,
            output_index: self.output_index,
            content_index: self.content_index,
            summary_index: self.summary_index,
            item: None,
            response: None,
            name: None,
        }
    }
}

impl ResponsesStream {
    pub(super) fn on_event(&mut self, event: &Event<'_>, report: &mut Report) {
        let at = Some(event.offset());
        if !event.is_complete() {
            if super::cut_inside(event) {
                // The body ended inside this event: a cut, not the provider's bad JSON.
                report.fail_at(Violation::StreamTruncated, at);
                return;
            }
            report.warn_at(Warning::UnterminatedEvent, at);
        }
        let data = event.data();
        if data == b"[DONE]" {
            // OpenRouter ends with it; OpenAI never sends it on this surface.
            report.warn_at(Warning::DoneOnResponses, at);
            if self.done_marker {
                report.fail_at(Violation::EventAfterTerminal, at);
            }
            self.done_marker = true;
            return;
        }
        if self.terminal || self.done_marker {
            report.fail_at(Violation::EventAfterTerminal, at);
            return;
        }
        // The fast path: the same delta event as the last plain one but for its text and
        // sequence number.
        if let Some(mut kept) = self.template.take() {
            let slot = kept.matches(event);
            if let Some(sequence_number) = slot {
                self.on_parsed(&kept.plain.view(sequence_number), event, at, report);
            }
            self.template.put(kept);
            if slot.is_some() {
                return;
            }
        }
        let Some(ev) = view::parse::<StreamEvent<'_>>(data, None, report, at) else {
            return;
        };
        self.template
            .offer(event, Shape::ResponsesEvent, || PlainEvent::of(&ev));
        self.on_parsed(&ev, event, at, report);
    }

    /// The checks of one parsed event.
    fn on_parsed(
        &mut self,
        ev: &StreamEvent<'_>,
        event: &Event<'_>,
        at: Option<u64>,
        report: &mut Report,
    ) {
        let data = event.data();
        let kind_name: Option<Cow<'_, str>> = ev
            .kind
            .clone()
            .or_else(|| event.event_type().map(Cow::Borrowed));
        let Some(kind_name) = kind_name else {
            report.fail_at(Violation::MissingField, at);
            return;
        };
        self.check_sequence(ev.sequence_number, at, report);
        let kind = kind_of(&kind_name);
        let first = !std::mem::replace(&mut self.started, true);
        match kind {
            Kind::Created => {
                if !first {
                    report.fail_at(Violation::StreamOutOfOrder, at);
                }
                self.created = true;
            }
            Kind::Error => {}
            // A background stream resumed with `starting_after` legally begins after
            // `response.created`: its first sequence number is past 0.
            _ if !self.created && first && ev.sequence_number.is_none_or(|n| n == 0) => {
                report.warn_at(Warning::MissingCreated, at);
            }
            _ => {}
        }
        if let Some(head) = &ev.response {
            record_head(head, report);
        }
        match kind {
            Kind::Created | Kind::Progress | Kind::Free => {}
            Kind::Error => {
                self.errored = true;
                report.fail_at(Violation::ErrorInStream, at);
                if let Some(e) = ApiError::from_body(data) {
                    report.set_api_error(e);
                }
            }
            Kind::Terminal => self.on_terminal(ev, at, report),
            Kind::ItemAdded => self.on_item_added(ev, at, report),
            Kind::ItemDone => {
                if self.require_item(ev.output_index, at, report) {
                    let i = ev.output_index.unwrap_or_default();
                    self.open_items.retain(|&o| o != i);
                    self.open_parts.retain(|p| p.0 != i);
                }
            }
            Kind::PartAdded => {
                if self.require_item(ev.output_index, at, report)
                    && let Some(part) = part_key(ev)
                {
                    self.track_part(part);
                }
            }
            Kind::PartDone => {
                if self.require_item(ev.output_index, at, report)
                    && let Some(part) = part_key(ev)
                {
                    let before = self.open_parts.len();
                    self.open_parts.retain(|p| *p != part);
                    if before == self.open_parts.len() && !self.overflow {
                        report.warn_at(Warning::MissingContentPart, at);
                    }
                }
            }
            Kind::PartEvent => {
                if self.require_item(ev.output_index, at, report)
                    && !self.overflow
                    && let Some(part) = part_key(ev)
                    && !self.open_parts.contains(&part)
                {
                    report.warn_at(Warning::MissingContentPart, at);
                }
            }
            Kind::ArgumentsDone => {
                if ev.name.is_none() {
                    report.warn_at(Warning::MissingFunctionName, at);
                }
                self.require_item(ev.output_index, at, report);
            }
            Kind::ItemEvent => {
                self.require_item(ev.output_index, at, report);
            }
            Kind::Unknown => report.warn_at(Warning::UnknownEventType, at),
        }
    }

    fn check_sequence(&mut self, seq: Option<u64>, at: Option<u64>, report: &mut Report) {
        let Some(n) = seq else {
            report.warn_at(Warning::MissingSequenceNumber, at);
            return;
        };
        if let Some(expected) = self.next_sequence {
            if n < expected {
                report.fail_at(Violation::StreamOutOfOrder, at);
            } else if n > expected {
                report.warn_at(Warning::SequenceGap, at);
            }
        }
        self.next_sequence = Some(n.saturating_add(1));
    }

    fn on_terminal(&mut self, ev: &StreamEvent<'_>, at: Option<u64>, report: &mut Report) {
        self.terminal = true;
        let Some(head) = &ev.response else {
            report.fail_at(Violation::MissingField, at);
            return;
        };
        let reason = head
            .incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref());
        check_status(
            head.status.as_deref(),
            head.error,
            reason,
            self.function_call,
            report,
        );
        if let Some(usage) = &head.usage {
            report.facts().usage = Some(usage.tokens());
        }
        // `response.created` may say `auto`; the terminal event says which tier served it.
        if let Some(tier) = head.service_tier.as_deref().filter(|t| !t.is_empty()) {
            report.facts().service_tier = Some(tier.to_owned());
        }
        report.facts().tool_calls = self.function_call;
    }

    fn on_item_added(&mut self, ev: &StreamEvent<'_>, at: Option<u64>, report: &mut Report) {
        let i = ev.output_index.unwrap_or_else(|| {
            // Compat follows the item anyway, at the next index, so its own events still match.
            report.strict(Violation::MissingField);
            self.next_output_index
        });
        if i < self.next_output_index {
            report.fail_at(Violation::StreamOutOfOrder, at);
            return;
        }
        if !self.open_items.is_empty() {
            report.warn_at(Warning::InterleavedItems, at);
        }
        if ev.item.as_ref().and_then(|it| it.kind.as_deref()) == Some("function_call") {
            self.function_call = true;
        }
        self.next_output_index = i.saturating_add(1);
        if self.open_items.len() < MAX_OPEN {
            self.open_items.push(i);
        } else {
            self.overflow = true;
        }
    }

    /// An item event must name an open item.
    fn require_item(&mut self, index: Option<u64>, at: Option<u64>, report: &mut Report) -> bool {
        let Some(i) = index else {
            report.strict(Violation::MissingField);
            return false;
        };
        if self.open_items.contains(&i) {
            true
        } else {
            if !self.overflow {
                report.fail_at(Violation::StreamOutOfOrder, at);
            }
            false
        }
    }

    fn track_part(&mut self, part: (u64, u64, bool)) {
        if self.open_parts.len() < MAX_OPEN {
            self.open_parts.push(part);
        } else {
            self.overflow = true;
        }
    }

    /// A stream ends well with its terminal event (`[DONE]` after it is tolerated).
    pub(super) fn on_end(&mut self, end_offset: u64, report: &mut Report) {
        if !self.terminal && !self.errored {
            report.fail_at(Violation::StreamTruncated, Some(end_offset));
        }
    }

    pub(super) fn terminal_seen(&self) -> bool {
        self.terminal
    }

    /// Whether the stream carried its answer: the terminal event (or an error event, which is
    /// the answer too).
    pub(super) fn answered(&self) -> bool {
        self.terminal || self.errored
    }
}

fn part_key(ev: &StreamEvent<'_>) -> Option<(u64, u64, bool)> {
    let item = ev.output_index?;
    match (ev.summary_index, ev.content_index) {
        (Some(s), _) => Some((item, s, true)),
        (None, Some(c)) => Some((item, c, false)),
        (None, None) => None,
    }
}

fn record_head(head: &ResponseHead<'_>, report: &mut Report) {
    let facts = report.facts();
    set_once(&mut facts.response_id, head.id.as_deref());
    set_once(&mut facts.response_model, head.model.as_deref());
    set_once(&mut facts.service_tier, head.service_tier.as_deref());
}

#[cfg(test)]
mod stream_end_tests {
    use crate::contract::{Mode, StreamChecker};
    use crate::evidence::{ApiSurface, Violation};

    #[test]
    fn a_cut_inside_an_event_is_a_truncation_not_bad_json() {
        let mut c = StreamChecker::new(ApiSurface::Responses, Mode::Compat);
        c.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r");
        assert_eq!(c.finish().violation, Some(Violation::StreamTruncated));
    }
}
