//! The Chat Completions contract: `chat.completion` objects and `chat.completion.chunk` streams.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::template::{Shape, Templates};
use super::view::{self, ChatChunk, ChatCompletion, Choice, Choices, ChunkChoice, Delta};
use super::{ApiError, Report, TokenUsage, set_once};
use crate::evidence::{Violation, Warning};
use crate::sse::Event;

const FINISH_REASONS: &[&str] = &[
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
];

/// Checks a non-streaming 2xx body.
pub(super) fn check_completion(body: &[u8], content_type: Option<&str>, report: &mut Report) {
    let Some(c) = view::parse::<ChatCompletion<'_>>(body, content_type, report, None) else {
        return;
    };
    let facts = report.facts();
    set_once(&mut facts.response_id, c.id.as_deref());
    set_once(&mut facts.response_model, c.model.as_deref());
    set_once(&mut facts.service_tier, c.service_tier.as_deref());
    set_once(
        &mut facts.system_fingerprint,
        c.system_fingerprint.as_deref(),
    );
    if let Some(usage) = &c.usage {
        facts.usage = Some(usage.tokens());
    }
    let Some(choices) = c.choices else {
        // No result: an error payload in a 2xx, or simply the wrong object.
        match ApiError::from_body(body) {
            Some(e) => {
                report.fail(Violation::ErrorIn2xx);
                report.set_api_error(e);
            }
            None if c.object.as_deref().is_some_and(|o| o != "chat.completion") => {
                report.fail(Violation::WrongObject);
            }
            None => report.fail(Violation::MissingField),
        }
        return;
    };
    if c.error.is_some_and(|e| e.get() != "null") {
        report.fail(Violation::ErrorIn2xx);
        if let Some(e) = c
            .error
            .and_then(|e| ApiError::from_body(e.get().as_bytes()))
        {
            report.set_api_error(e);
        }
    }
    match c.object.as_deref() {
        Some("chat.completion") => {}
        Some(_) => report.fail(Violation::WrongObject),
        None => report.warn(Warning::MissingObject),
    }
    if c.id.is_none() || c.model.is_none() || c.created.is_none() {
        report.warn(Warning::MissingMetadata);
    }
    if choices.is_empty() {
        report.fail(Violation::NoChoices);
    }
    let facts = report.facts();
    facts.choices = Some(choices.len() as u64);
    facts.tool_calls = choices.iter().any(|c| {
        c.message
            .as_ref()
            .and_then(|m| m.tool_calls.as_ref())
            .is_some_and(|t| !t.is_empty())
    });
    for choice in &choices {
        check_choice(choice, report);
    }
}

fn check_choice(choice: &Choice<'_>, report: &mut Report) {
    match &choice.finish_reason {
        Some(Some(reason)) => {
            if !FINISH_REASONS.contains(&reason.as_ref()) {
                report.warn(Warning::UnknownFinishReason);
            }
            report
                .facts()
                .finish_reasons
                .push(reason.clone().into_owned());
        }
        _ => report.warn(Warning::MissingFinishReason),
    }
    if choice.logprobs.is_none() {
        report.warn(Warning::MissingLogprobs);
    }
    let Some(message) = &choice.message else {
        report.fail(Violation::MissingField);
        return;
    };
    let tool_calls = message.tool_calls.as_deref().unwrap_or_default();
    if message.content.is_none() {
        if tool_calls.is_empty() {
            report.fail(Violation::MissingField);
        } else {
            report.warn(Warning::MissingContent);
        }
    }
    if message.refusal.is_none() {
        report.warn(Warning::MissingRefusal);
    }
    for call in tool_calls {
        if call.kind.is_none() {
            report.warn(Warning::MissingToolCallType);
        }
        if call.id.as_deref().is_none_or(str::is_empty) {
            report.warn(Warning::EmptyToolCallId);
        }
        match &call.function {
            Some(f) if f.name.is_some() && f.arguments.is_some() => {}
            None if call.custom.is_some() => {}
            _ => report.fail(Violation::MissingField),
        }
    }
}

/// The Chat stream's state: chunk shape, one finish reason per choice, `[DONE]` last.
#[derive(Debug, Default)]
pub(super) struct ChatStream {
    done: bool,
    /// Chunks seen (events other than `[DONE]` and errors).
    chunks: u64,
    /// Per choice index (bounded): a finish reason was seen; the first tool-call index seen.
    choices: Vec<ChoiceState>,
    finish_seen: bool,
    /// The last plain chunk, for the fast path ([`template`]).
    template: Templates<PlainChunk>,
}

/// A chunk with one choice, no tool calls, no usage and no error, as its view read it: what a
/// chunk that matches its template is, without parsing it again.
#[derive(Debug)]
struct PlainChunk {
    id: Option<String>,
    object: Option<String>,
    created: bool,
    model: Option<String>,
    service_tier: Option<String>,
    system_fingerprint: Option<String>,
    index: Option<u64>,
    delta: bool,
    finish_reason: Option<Option<String>>,
}

impl PlainChunk {
    /// The chunk kept if `chunk` is plain.
    fn of(chunk: &ChatChunk<'_>) -> Option<Self> {
        if chunk.error.is_some() || chunk.usage.is_some() {
            return None;
        }
        let mut choices = chunk.choices.as_ref()?.iter();
        let (choice, None) = (choices.next()?, choices.next()) else {
            return None;
        };
        if choice
            .delta
            .as_ref()
            .is_some_and(|d| d.tool_calls.is_some())
        {
            return None;
        }
        let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_owned);
        Some(Self {
            id: owned(&chunk.id),
            object: owned(&chunk.object),
            created: chunk.created.is_some(),
            model: owned(&chunk.model),
            service_tier: owned(&chunk.service_tier),
            system_fingerprint: owned(&chunk.system_fingerprint),
            index: choice.index,
            delta: choice.delta.is_some(),
            finish_reason: choice
                .finish_reason
                .as_ref()
                .map(|r| r.as_deref().map(str::to_owned)),
        })
    }

    /// The view serde_json gives of any chunk that matches this one's template.
    fn view(&self) -> ChatChunk<'_> {
        fn borrowed(s: Option<&String>) -> Option<Cow<'_, str>> {
            s.map(|s| Cow::Borrowed(s.as_str()))
        }
        ChatChunk {
            id: borrowed(self.id.as_ref()),
            object: borrowed(self.object.as_ref()),
            created: self.created.then_some(IgnoredAny),
            model: borrowed(self.model.as_ref()),
            choices: Some(Choices::one(ChunkChoice {
                index: self.index,
                delta: self.delta.then_some(Delta { tool_calls: None }),
                finish_reason: self
                    .finish_reason
                    .as_ref()
                    .map(|r| r.as_deref().map(Cow::Borrowed)),
            })),
            usage: None,
            error: None,
            service_tier: borrowed(self.service_tier.as_ref()),
            system_fingerprint: borrowed(self.system_fingerprint.as_ref()),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ChoiceState {
    finished: bool,
    first_tool_index: Option<u64>,
}

/// More choices than any provider allows (`n` ≤ 128): past it, per-choice state is not kept.
const MAX_TRACKED_CHOICES: u64 = 128;

impl ChatStream {
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
        if self.done {
            report.fail_at(Violation::EventAfterTerminal, at);
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        if event.event_type() == Some("error") {
            // Groq: `event: error` with the error envelope as data, HTTP 200.
            report.fail_at(Violation::ErrorInStream, at);
            if let Some(e) = ApiError::from_body(data) {
                report.set_api_error(e);
            }
            return;
        }
        // The fast path: the same chunk as the last plain one but for the text it carries.
        if let Some(mut kept) = self.template.take() {
            let matched = kept.matches(event).is_some();
            if matched {
                self.chunks += 1;
                self.check_chunk(&kept.plain.view(), report);
            }
            self.template.put(kept);
            if matched {
                return;
            }
        }
        let Some(chunk) = view::parse::<ChatChunk<'_>>(data, None, report, at) else {
            return;
        };
        self.chunks += 1;
        self.template
            .offer(event, Shape::ChatChunk, || PlainChunk::of(&chunk));
        if let Some(raw) = chunk.error.filter(|e| e.get() != "null") {
            // OpenRouter: an error inside an otherwise ordinary chunk.
            report.fail_at(Violation::ErrorInStream, at);
            if let Some(e) =
                ApiError::from_body(data).or_else(|| ApiError::from_body(raw.get().as_bytes()))
            {
                report.set_api_error(e);
            }
        }
        self.check_chunk(&chunk, report);
    }

    fn check_chunk(&mut self, chunk: &ChatChunk<'_>, report: &mut Report) {
        match chunk.object.as_deref() {
            Some("chat.completion.chunk") => {}
            Some(_) => report.warn(Warning::UnexpectedObject),
            None => report.warn(Warning::MissingObject),
        }
        let empty = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().is_none_or(str::is_empty);
        if empty(&chunk.id) || empty(&chunk.model) || chunk.created.is_none() {
            report.warn(Warning::MissingMetadata);
        }
        let facts = report.facts();
        set_once(&mut facts.response_id, chunk.id.as_deref());
        set_once(&mut facts.response_model, chunk.model.as_deref());
        set_once(&mut facts.service_tier, chunk.service_tier.as_deref());
        set_once(
            &mut facts.system_fingerprint,
            chunk.system_fingerprint.as_deref(),
        );
        if let Some(usage) = &chunk.usage {
            let tokens: TokenUsage = usage.tokens();
            if tokens.input_tokens.is_some() || tokens.output_tokens.is_some() {
                facts.usage = Some(tokens);
            }
        }
        let Some(choices) = &chunk.choices else {
            report.warn(Warning::MissingChoices);
            return;
        };
        for choice in choices.iter() {
            let index = choice.index.unwrap_or(0);
            if index < MAX_TRACKED_CHOICES {
                let seen = report.facts().choices.unwrap_or(0).max(index + 1);
                report.facts().choices = Some(seen);
            }
            match &choice.finish_reason {
                None => report.warn(Warning::MissingFinishReason),
                Some(None) => {}
                Some(Some(reason)) if reason.is_empty() => {
                    report.warn(Warning::UnknownFinishReason);
                }
                Some(Some(reason)) => {
                    if !FINISH_REASONS.contains(&reason.as_ref()) {
                        report.warn(Warning::UnknownFinishReason);
                    }
                    self.finish_seen = true;
                    // Past the tracked choices nothing is recorded: a hostile stream cannot grow
                    // the list.
                    match self
                        .state(index)
                        .map(|s| std::mem::replace(&mut s.finished, true))
                    {
                        Some(true) => report.warn(Warning::RepeatedFinishReason),
                        Some(false) => {
                            report
                                .facts()
                                .finish_reasons
                                .push(reason.clone().into_owned());
                        }
                        None => {}
                    }
                }
            }
            let calls = choice.delta.as_ref().and_then(|d| d.tool_calls.as_deref());
            if calls.is_some_and(|c| !c.is_empty()) {
                report.facts().tool_calls = true;
            }
            for call in calls.unwrap_or_default() {
                match call.index {
                    None => report.warn(Warning::MissingToolCallIndex),
                    Some(i) => {
                        if let Some(state) = self.state(index)
                            && *state.first_tool_index.get_or_insert(i) != 0
                        {
                            report.warn(Warning::ToolCallIndexOffset);
                        }
                    }
                }
                if call.id.as_deref() == Some("") {
                    report.warn(Warning::EmptyToolCallId);
                }
            }
        }
    }

    fn state(&mut self, index: u64) -> Option<&mut ChoiceState> {
        if index >= MAX_TRACKED_CHOICES {
            return None;
        }
        let i = usize::try_from(index).ok()?;
        if self.choices.len() <= i {
            self.choices.resize(i + 1, ChoiceState::default());
        }
        self.choices.get_mut(i)
    }

    /// A stream ends well with `[DONE]`; compat accepts a finish reason without it.
    pub(super) fn on_end(&mut self, end_offset: u64, report: &mut Report) {
        if self.done && self.chunks == 0 {
            // `data: [DONE]` and nothing before it: an empty answer is not an answer.
            report.fail_at(Violation::NoChoices, Some(end_offset));
        } else if self.done {
            if !self.finish_seen {
                report.warn(Warning::MissingFinishReason);
            }
        } else if self.finish_seen {
            report.warn_at(Warning::MissingDone, Some(end_offset));
        } else {
            report.fail_at(Violation::StreamTruncated, Some(end_offset));
        }
    }

    pub(super) fn terminal_seen(&self) -> bool {
        self.done
    }

    /// Whether the stream carried its answer: `[DONE]`, or a finish reason (which compat
    /// accepts without `[DONE]`; strict still flags it in [`on_end`](Self::on_end)).
    pub(super) fn answered(&self) -> bool {
        self.done || self.finish_seen
    }
}

#[cfg(test)]
mod stream_end_tests {
    use crate::contract::{Mode, StreamChecker};
    use crate::evidence::{ApiSurface, ParseCheck, Violation};

    fn check(body: &[u8]) -> crate::contract::ContractVerdict {
        let mut c = StreamChecker::new(ApiSurface::ChatCompletions, Mode::Compat);
        c.feed(body);
        c.finish()
    }

    #[test]
    fn a_stream_of_only_done_is_an_empty_answer() {
        let v = check(b"data: [DONE]\n\n");
        assert_eq!(v.parse_check, ParseCheck::Fail);
        assert_eq!(v.violation, Some(Violation::NoChoices));
    }

    #[test]
    fn a_cut_inside_an_event_is_a_truncation_not_bad_json() {
        let whole = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
        let mut body = whole.to_vec();
        body.extend_from_slice(b"data: {\"id\":\"c\",\"object\":\"chat.completion.ch");
        let v = check(&body);
        assert_eq!(v.violation, Some(Violation::StreamTruncated));
        assert_eq!(v.violation_offset, Some(whole.len() as u64));
        // Garbage that is not JSON at all is still the provider's.
        let mut body = whole.to_vec();
        body.extend_from_slice(b"data: nonsense");
        assert_eq!(check(&body).violation, Some(Violation::NotJson));
    }
}
