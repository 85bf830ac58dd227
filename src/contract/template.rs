//! A fast path for the events a stream repeats.
//!
//! A streamed answer is hundreds of events of one shape: Chat's content chunks differ from one
//! another only in the text of `delta.content` (and OpenAI's `obfuscation` padding), Responses'
//! text deltas only in `delta`, `obfuscation` and `sequence_number`. Parsing each one with
//! serde_json was 6-7 k instructions per 230-byte event, 90 % of what checking a stream cost
//! (BENCHMARKS.md, "Where the time goes").
//!
//! After an event has been parsed and checked the usual way, a [`Template`] is made of its
//! bytes: the literal bytes, with holes where the event holds a string the view never reads
//! (an unknown field's text, a delta's text) or the integer slot the check reads as a number
//! (`sequence_number`). A later event that is the template's bytes exactly, with valid JSON
//! strings (and plain integers) in the holes, is the same JSON document as the template but
//! for values the view skips: serde_json would give the same view, so the checker uses the
//! view kept with the template (and the slot's new value) instead of parsing. Anything else
//! (another shape, a whitespace change, an escape in a key, a string the fast scanner cannot
//! vouch for) is parsed by serde_json as before. Written by hand because no JSON crate matches
//! a document against a previous one; its verdicts are held equal to serde_json's by the
//! property test in this module and the conformance and split-stream tests.

use memchr::memchr2;

use crate::sse::Event;

/// The largest event a template is made of: content chunks are a few hundred bytes.
const MAX_TEMPLATE_BYTES: usize = 4096;

/// Nesting past this depth makes no template (events that deep are not content chunks).
const MAX_DEPTH: usize = 16;

/// Which fields the view reads: the holes are made of everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A `chat.completion.chunk`: the view reads the top-level fields below and, in a choice's
    /// `delta`, `tool_calls`.
    ChatChunk,
    /// A Responses stream event: the view reads the top-level fields below;
    /// `sequence_number` is the integer slot.
    ResponsesEvent,
}

const CHAT_READ: &[&[u8]] = &[
    b"id",
    b"object",
    b"created",
    b"model",
    b"choices",
    b"usage",
    b"error",
    b"service_tier",
    b"system_fingerprint",
];

const RESPONSES_READ: &[&[u8]] = &[
    b"type",
    b"sequence_number",
    b"output_index",
    b"content_index",
    b"summary_index",
    b"item",
    b"response",
    b"name",
];

/// Templates made in a row that no event matched, past which a stream makes no more: its
/// events differ each time in what the view reads (Chat chunks with `logprobs`, say), and a
/// template would only add a walk and a copy to every event's parse.
const MAX_FRUITLESS: u8 = 4;

/// A stream checker's template: the one kept (taken out while it is used, then put back), and
/// how many were made in a row for nothing.
#[derive(Debug)]
pub(super) struct Templates<P> {
    kept: Option<Kept<P>>,
    fruitless: u8,
}

impl<P> Default for Templates<P> {
    fn default() -> Self {
        Self {
            kept: None,
            fruitless: 0,
        }
    }
}

impl<P> Templates<P> {
    /// The kept template, if any; [`put`](Self::put) it back after use.
    pub(super) fn take(&mut self) -> Option<Kept<P>> {
        self.kept.take()
    }

    pub(super) fn put(&mut self, kept: Kept<P>) {
        self.kept = Some(kept);
    }

    /// After `event` missed the kept template and was parsed: keep a template of it instead
    /// (see [`Kept::of`]), unless the stream's templates keep coming to nothing.
    pub(super) fn offer(
        &mut self,
        event: &Event<'_>,
        shape: Shape,
        plain: impl FnOnce() -> Option<P>,
    ) {
        if self.fruitless >= MAX_FRUITLESS {
            return;
        }
        let Some(new) = Kept::of(event, shape, plain) else {
            return;
        };
        match self.kept.replace(new) {
            Some(old) if !old.hit => {
                self.fruitless += 1;
                if self.fruitless >= MAX_FRUITLESS {
                    self.kept = None;
                }
            }
            _ => self.fruitless = 0,
        }
    }
}

/// A template and what its event's view read (`P`), kept by a stream's checker for the next
/// events.
#[derive(Debug)]
pub(super) struct Kept<P> {
    template: Template,
    /// What the view read, to check a matching event with.
    pub(super) plain: P,
    /// Whether an event matched it.
    hit: bool,
}

impl<P> Kept<P> {
    /// Kept of `event`, parsed into a view that `plain` takes what it needs from: only a whole
    /// event (not one the body ended inside), at most [`MAX_TEMPLATE_BYTES`], whose view
    /// `plain` accepts and which has holes.
    pub(super) fn of(
        event: &Event<'_>,
        shape: Shape,
        plain: impl FnOnce() -> Option<P>,
    ) -> Option<Self> {
        if !event.is_complete() || event.data().len() > MAX_TEMPLATE_BYTES {
            return None;
        }
        let plain = plain()?;
        Some(Self {
            template: Template::of(event.data(), shape)?,
            plain,
            hit: false,
        })
    }

    /// [`Template::matches`] for a whole event.
    pub(super) fn matches(&mut self, event: &Event<'_>) -> Option<Option<u64>> {
        if !event.is_complete() {
            return None;
        }
        let slot = self.template.matches(event.data());
        self.hit |= slot.is_some();
        slot
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// A JSON string's contents (between its quotes) that the view does not read.
    Text,
    /// A non-negative integer the view reads (`sequence_number`).
    Integer,
}

/// An event's bytes with holes; see the module's documentation.
#[derive(Debug)]
pub(super) struct Template {
    /// The literal segments, concatenated.
    literal: Box<[u8]>,
    /// Per hole: the end of the literal segment before it, and what it holds.
    holes: Box<[(usize, Hole)]>,
}

impl Template {
    /// The template of `data`, an event serde_json has parsed into the view of `shape`; `None`
    /// when it has no hole or its layout is not one the walker vouches for.
    pub(super) fn of(data: &[u8], shape: Shape) -> Option<Self> {
        #[cfg(test)]
        if tests::OFF.with(std::cell::Cell::get) {
            return None;
        }
        if data.len() > MAX_TEMPLATE_BYTES {
            return None;
        }
        let mut walk = Walk {
            b: data,
            i: 0,
            literal: Vec::with_capacity(data.len()),
            from: 0,
            holes: Vec::new(),
        };
        walk.ws();
        walk.value(Ctx::Top(shape), 0)?;
        walk.ws();
        if walk.i != data.len() || walk.holes.is_empty() {
            return None;
        }
        walk.literal.extend_from_slice(&data[walk.from..]);
        Some(Self {
            literal: walk.literal.into_boxed_slice(),
            holes: walk.holes.into_boxed_slice(),
        })
    }

    /// Whether `data` is this template with valid values in its holes: `Some` with the integer
    /// slot's value (if the template has one), `None` when it is not (parse it instead).
    pub(super) fn matches(&self, data: &[u8]) -> Option<Option<u64>> {
        let (mut lit, mut pos, mut slot) = (0, 0, None);
        for &(end, hole) in &*self.holes {
            let segment = &self.literal[lit..end];
            if data.get(pos..pos + segment.len())? != segment {
                return None;
            }
            pos += segment.len();
            lit = end;
            match hole {
                Hole::Text => pos = string_end(data, pos)?,
                Hole::Integer => {
                    let (n, len) = integer(data.get(pos..)?)?;
                    slot = Some(n);
                    pos += len;
                }
            }
        }
        (data.get(pos..)? == &self.literal[lit..]).then_some(slot)
    }
}

/// Where `start` (just past an opening quote) is the contents of a JSON string serde_json
/// accepts: the index of its closing quote. `None` for anything the scan does not vouch for
/// (control characters, an unknown escape, a `\u` surrogate, invalid UTF-8, no end): those
/// events are parsed instead.
fn string_end(data: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        let j = i + memchr2(b'"', b'\\', data.get(i..)?)?;
        if data[i..j].iter().any(|&b| b < 0x20) {
            return None;
        }
        if data[j] == b'"' {
            std::str::from_utf8(&data[start..j]).ok()?;
            return Some(j);
        }
        match *data.get(j + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i = j + 2,
            b'u' => {
                let hex = std::str::from_utf8(data.get(j + 2..j + 6)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let unit = u16::from_str_radix(hex, 16).ok()?;
                if (0xD800..=0xDFFF).contains(&unit) {
                    return None;
                }
                i = j + 6;
            }
            _ => return None,
        }
    }
}

/// A JSON integer serde_json reads as a `u64`: `0` or `[1-9][0-9]*`, at most 19 digits (so it
/// cannot overflow); its value and length.
fn integer(data: &[u8]) -> Option<(u64, usize)> {
    let len = data.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 || (len > 1 && data[0] == b'0') {
        return None;
    }
    let n = data[..len]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some((n, len))
}

/// Where the walker is, for what a value there becomes.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// The event itself.
    Top(Shape),
    /// A value the view reads: all literal.
    Literal,
    /// A value the view skips: a string there is a hole, anything else literal.
    Skipped,
    /// Chat's `choices` array.
    Choices,
    /// One Chat choice.
    Choice,
    /// A Chat choice's `delta`.
    Delta,
    /// Responses' `sequence_number`.
    Slot,
}

/// A walk over a document serde_json has accepted, finding its holes. It still checks what it
/// relies on and gives up (`None`) on anything unexpected, never panics.
struct Walk<'a> {
    b: &'a [u8],
    i: usize,
    literal: Vec<u8>,
    /// Where the current literal segment began in `b`.
    from: usize,
    holes: Vec<(usize, Hole)>,
}

impl Walk<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn hole(&mut self, start: usize, end: usize, hole: Hole) {
        self.literal.extend_from_slice(&self.b[self.from..start]);
        self.holes.push((self.literal.len(), hole));
        self.from = end;
    }

    fn value(&mut self, ctx: Ctx, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.b.get(self.i)? {
            b'{' => self.object(ctx, depth),
            b'[' => self.array(ctx, depth),
            b'"' => {
                let start = self.i + 1;
                let end = string_end(self.b, start)?;
                if matches!(ctx, Ctx::Skipped) {
                    self.hole(start, end, Hole::Text);
                }
                self.i = end + 1;
                Some(())
            }
            b'0'..=b'9' if matches!(ctx, Ctx::Slot) => {
                let (_, len) = integer(&self.b[self.i..])?;
                self.hole(self.i, self.i + len, Hole::Integer);
                self.i += len;
                Some(())
            }
            b'-' | b'0'..=b'9' => {
                let len = self.b[self.i..]
                    .iter()
                    .take_while(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .count();
                self.i += len;
                Some(())
            }
            _ => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.b[self.i..].starts_with(word) {
                        self.i += word.len();
                        return Some(());
                    }
                }
                None
            }
        }
    }

    fn object(&mut self, ctx: Ctx, depth: usize) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let start = self.i + 1;
            let end = string_end(self.b, start)?;
            let key = &self.b[start..end];
            // A key spelled with an escape may be a field the view reads: no template.
            if key.contains(&b'\\') {
                return None;
            }
            self.i = end + 1;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return None;
            }
            self.i += 1;
            self.ws();
            self.value(child(ctx, key), depth + 1)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, ctx: Ctx, depth: usize) -> Option<()> {
        let element = match ctx {
            Ctx::Choices => Ctx::Choice,
            Ctx::Skipped => Ctx::Skipped,
            _ => Ctx::Literal,
        };
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(element, depth + 1)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The context of the value of `key` in an object at `ctx`.
fn child(ctx: Ctx, key: &[u8]) -> Ctx {
    match ctx {
        Ctx::Top(Shape::ChatChunk) if key == b"choices" => Ctx::Choices,
        Ctx::Top(Shape::ChatChunk) if CHAT_READ.contains(&key) => Ctx::Literal,
        Ctx::Top(Shape::ResponsesEvent) if key == b"sequence_number" => Ctx::Slot,
        Ctx::Top(Shape::ResponsesEvent) if RESPONSES_READ.contains(&key) => Ctx::Literal,
        Ctx::Top(_) | Ctx::Skipped => Ctx::Skipped,
        Ctx::Choice if key == b"delta" => Ctx::Delta,
        Ctx::Delta if key != b"tool_calls" => Ctx::Skipped,
        Ctx::Literal | Ctx::Choices | Ctx::Choice | Ctx::Delta | Ctx::Slot => Ctx::Literal,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::contract::{Mode, StreamChecker};
    use crate::evidence::ApiSurface;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    thread_local! {
        /// Turns the fast path off on this thread, for the differential test.
        pub(in crate::contract) static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The verdict of `body` fed in `pieces`-byte pieces, with the fast path on or off.
    fn verdict(surface: ApiSurface, mode: Mode, body: &[u8], piece: usize, fast: bool) -> String {
        OFF.with(|off| off.set(!fast));
        let mut c = StreamChecker::new(surface, mode);
        for p in body.chunks(piece.max(1)) {
            c.feed(p);
        }
        let v = c.finish();
        OFF.with(|off| off.set(false));
        format!("{v:?}")
    }

    /// A text as it may come: quotes, escapes, control characters, non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("PASS ".to_owned()),
                Just(r#"\""#.to_owned()),
                Just(r"\\".to_owned()),
                Just(r"\n".to_owned()),
                Just(r"\u00e9".to_owned()),
                Just("é🌍".to_owned()),
                Just(r"\ud83c\udf0d".to_owned()),
                Just(r"\ud800".to_owned()),
                Just(r"\x".to_owned()),
                Just(r"\u12".to_owned()),
                Just("\u{1}".to_owned()),
                Just(r"\t\r".to_owned()),
                Just("\"".to_owned()),
                "[a-z ]{0,8}",
            ],
            0..4,
        )
        .prop_map(|parts| parts.concat())
    }

    /// One Chat event, mostly a content chunk, sometimes something else.
    fn chat_event() -> impl Strategy<Value = String> {
        (0u8..12, text(), text(), 0u8..2).prop_map(|(kind, content, pad, id)| {
            let head = format!(
                r#""id":"chatcmpl-{id}","object":"chat.completion.chunk","created":1,"model":"gpt-4o""#
            );
            match kind {
                0 => format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"{content}"}},"logprobs":null,"finish_reason":"stop"}}]}}"#),
                1 => format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"c"}}]}},"finish_reason":null}}]}}"#),
                2 => format!(r#"{{{head},"choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":{id}}}}}"#),
                3 => format!(r#"{{{head},"choices":[{{"index":1,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#),
                4 => format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}],"error":{{"message":"x"}}}}"#),
                5 => format!(r#"{{{head}, "choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#),
                6 => format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}],"obfuscation":{id}}}"#),
                _ => format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"{content}"}},"logprobs":null,"finish_reason":null}}],"obfuscation":"{pad}"}}"#),
            }
        })
    }

    /// One Responses event, mostly a text delta, sometimes something else.
    fn responses_event() -> impl Strategy<Value = (String, i8)> {
        (0u8..10, text(), text(), -1i8..3).prop_map(|(kind, delta, pad, step)| {
            let event = match kind {
                0 => format!(r#"{{"type":"response.output_text.done","SEQ","item_id":"m","output_index":0,"content_index":0,"text":"{delta}"}}"#),
                1 => format!(r#"{{"type":"response.output_text.delta","SEQ","item_id":"m","output_index":1,"content_index":0,"delta":"{delta}"}}"#),
                2 => format!(r#"{{"type":"response.function_call_arguments.delta","SEQ","item_id":"f","output_index":0,"delta":"{delta}"}}"#),
                3 => r#"{"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"x"}"#.to_owned(),
                _ => format!(r#"{{"type":"response.output_text.delta","SEQ","item_id":"m","output_index":0,"content_index":0,"delta":"{delta}","logprobs":[],"obfuscation":"{pad}"}}"#),
            };
            (event, step)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The fast path never changes a Chat verdict: any mix of chunks, any text, any split,
        /// both modes.
        #[test]
        fn chat_verdicts_are_serde_jsons(
            events in prop::collection::vec(chat_event(), 0..24),
            piece in 1usize..600,
            strict in any::<bool>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let role = r#"{"id":"chatcmpl-0","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
            let mut body = format!("data: {role}\n\n");
            for e in &events {
                let _ = write!(body, "data: {e}\n\n");
            }
            body.push_str("data: [DONE]\n\n");
            let mut body = body.into_bytes();
            if let Some((at, byte)) = flip {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let mode = if strict { Mode::Strict } else { Mode::Compat };
            let surface = ApiSurface::ChatCompletions;
            prop_assert_eq!(
                verdict(surface, mode, &body, piece, true),
                verdict(surface, mode, &body, piece, false)
            );
        }

        /// The same for Responses streams, sequence numbers in order, with gaps, or going back.
        #[test]
        fn responses_verdicts_are_serde_jsons(
            events in prop::collection::vec(responses_event(), 0..24),
            piece in 1usize..600,
            strict in any::<bool>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut body = String::from(concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4o\"}}\n\n",
                "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"m\"}}\n\n",
                "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\",\"sequence_number\":2,\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\"}}\n\n",
            ));
            let mut seq: i64 = 3;
            for (e, step) in &events {
                seq = (seq + i64::from(*step)).max(0);
                let e = e.replace("\"SEQ\"", &format!("\"sequence_number\":{seq}"));
                let _ = write!(body, "data: {e}\n\n");
            }
            let mut body = body.into_bytes();
            if let Some((at, byte)) = flip {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let mode = if strict { Mode::Strict } else { Mode::Compat };
            let surface = ApiSurface::Responses;
            prop_assert_eq!(
                verdict(surface, mode, &body, piece, true),
                verdict(surface, mode, &body, piece, false)
            );
        }
    }

    const CHUNK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"obfuscation":"xY1"}"#;
    const DELTA: &str = r#"{"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel","logprobs":[],"obfuscation":"ab"}"#;

    fn chat(data: &str) -> Template {
        Template::of(data.as_bytes(), Shape::ChatChunk).expect("a template")
    }

    #[test]
    fn a_chat_chunk_with_other_text_matches() {
        let t = chat(CHUNK);
        for text in [
            "",
            "lo, world",
            r#"a \"quoted\" line\n"#,
            r"\u00e9t\u00e9",
            "été 🌍",
        ] {
            let other = CHUNK
                .replace(r#""content":"Hel""#, &format!(r#""content":"{text}""#))
                .replace(r#""obfuscation":"xY1""#, r#""obfuscation":"q""#);
            assert_eq!(t.matches(other.as_bytes()), Some(None), "{other}");
        }
    }

    #[test]
    fn anything_the_view_reads_must_be_the_same() {
        let t = chat(CHUNK);
        for (from, to) in [
            (r#""id":"chatcmpl-1""#, r#""id":"chatcmpl-2""#),
            (r#""model":"gpt-4o""#, r#""model":"gpt-4o-mini""#),
            (r#""finish_reason":null"#, r#""finish_reason":"stop""#),
            (r#""index":0"#, r#""index":1"#),
            (r#""created":1"#, r#""created":2"#),
            (r#""logprobs":null"#, r#""logprobs":{}"#),
            (r#""content":"Hel""#, r#""content":7"#),
            (r#""content":"Hel""#, r#""content":"a\x""#),
            (r#""content":"Hel""#, r#""content":"a\ud800""#),
            (r#""content":"Hel""#, "\"content\":\"a\u{1}\""),
            (r#""content":"Hel""#, r#""content":"Hel"#),
            (r#","obfuscation":"xY1"}"#, r#","obfuscation":"xY1"} "#),
        ] {
            let other = CHUNK.replace(from, to);
            assert_ne!(other, CHUNK);
            assert_eq!(t.matches(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn the_sequence_number_is_read_from_its_slot() {
        let t = Template::of(DELTA.as_bytes(), Shape::ResponsesEvent).expect("a template");
        let next = DELTA
            .replace(r#""sequence_number":7"#, r#""sequence_number":8"#)
            .replace(r#""delta":"Hel""#, r#""delta":"lo""#);
        assert_eq!(t.matches(next.as_bytes()), Some(Some(8)));
        for bad in ["-1", "08", "8.0", "1e3", "\"8\"", "99999999999999999999"] {
            let other = DELTA.replace(
                r#""sequence_number":7"#,
                &format!(r#""sequence_number":{bad}"#),
            );
            assert_eq!(t.matches(other.as_bytes()), None, "{other}");
        }
    }

    /// The field names a derived view reads, as serde gives them to a deserializer.
    fn fields_of<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
        struct Recorder(&'static [&'static str]);
        impl<'de> serde::Deserializer<'de> for &mut Recorder {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields;
                Err(serde::de::Error::custom("recorded"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut recorder = Recorder(&[]);
        let _ = T::deserialize(&mut recorder);
        let mut fields = recorder.0.to_vec();
        fields.sort_unstable();
        fields
    }

    fn sorted(names: &[&'static [u8]]) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = names
            .iter()
            .map(|n| std::str::from_utf8(n).expect("ASCII"))
            .collect();
        v.sort_unstable();
        v
    }

    /// The walker's lists of what the views read are the views' own fields: a field added to
    /// a view (and read by a check) must not become a hole.
    #[test]
    fn the_walker_knows_every_field_the_views_read() {
        use crate::contract::view::{ChatChunk, Delta, StreamEvent};
        assert_eq!(sorted(CHAT_READ), fields_of::<ChatChunk<'_>>());
        assert_eq!(sorted(RESPONSES_READ), fields_of::<StreamEvent<'_>>());
        // In a choice's delta, only `tool_calls` is read (see `child`).
        assert_eq!(fields_of::<Delta<'_>>(), vec!["tool_calls"]);
    }

    #[test]
    fn a_stream_whose_templates_never_match_stops_making_them() {
        let mut templates = Templates::<()>::default();
        let mut made = 0;
        for i in 0..10 {
            // Each chunk differs from the last in its id, which the view reads.
            let data = CHUNK.replace("chatcmpl-1", &format!("chatcmpl-{i}"));
            let body = format!("data: {data}\n\n");
            crate::sse::Decoder::new().feed(body.as_bytes(), &mut |frame| {
                if let crate::sse::Frame::Event(event) = frame {
                    if let Some(mut kept) = templates.take() {
                        assert_eq!(kept.matches(&event), None);
                        templates.put(kept);
                    }
                    templates.offer(&event, Shape::ChatChunk, || Some(()));
                    made += usize::from(templates.kept.is_some());
                }
            });
        }
        assert_eq!(templates.fruitless, MAX_FRUITLESS);
        assert!(templates.kept.is_none());
        assert_eq!(made, usize::from(MAX_FRUITLESS));
        // A template that matches keeps the stream's count at nothing.
        let mut templates = Templates::<()>::default();
        for text in ["a", "b", "c", "d", "e", "f"] {
            let data = CHUNK.replace("Hel", text);
            let body = format!("data: {data}\n\ndata: {data}\n\n");
            crate::sse::Decoder::new().feed(body.as_bytes(), &mut |frame| {
                if let crate::sse::Frame::Event(event) = frame {
                    let kept = templates.take();
                    let hit = kept.map(|mut k| {
                        let hit = k.matches(&event).is_some();
                        templates.put(k);
                        hit
                    });
                    if hit != Some(true) {
                        templates.offer(&event, Shape::ChatChunk, || Some(()));
                    }
                }
            });
        }
        assert_eq!(templates.fruitless, 0);
        assert!(templates.kept.is_some());
    }

    #[test]
    fn escaped_keys_and_deep_or_large_events_make_no_template() {
        let escaped = CHUNK.replace(r#""obfuscation""#, r#""obfusc\u0061tion""#);
        assert!(Template::of(escaped.as_bytes(), Shape::ChatChunk).is_none());
        let no_hole = r#"{"id":"x","object":"chat.completion.chunk","choices":[]}"#;
        assert!(Template::of(no_hole.as_bytes(), Shape::ChatChunk).is_none());
        let deep = format!(
            r#"{{"x":"y","deep":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(Template::of(deep.as_bytes(), Shape::ChatChunk).is_none());
        let large = CHUNK.replace("xY1", &"x".repeat(MAX_TEMPLATE_BYTES));
        assert!(Template::of(large.as_bytes(), Shape::ChatChunk).is_none());
    }
}
