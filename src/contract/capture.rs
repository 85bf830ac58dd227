//! Completion text, kept only when the caller opted in to recording content (telemetry's
//! [`with_content_capture`](crate::telemetry::Telemetry::with_content_capture)), and cut at a
//! character limit. A separate pass from the contract check, so a check that captures nothing
//! pays nothing.

use std::borrow::Cow;

use serde::Deserialize;

use crate::evidence::ApiSurface;

#[derive(Debug, Clone)]
pub(crate) struct Capture {
    surface: ApiSurface,
    max_chars: usize,
    chars: usize,
    text: String,
}

#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChatChoice<'a>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow)]
    message: Option<Content<'a>>,
    #[serde(borrow)]
    delta: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponsesBody<'a> {
    #[serde(borrow, default)]
    output: Vec<OutputItem<'a>>,
}

#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(borrow, default)]
    content: Vec<OutputPart<'a>>,
}

#[derive(Deserialize)]
struct OutputPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TextDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
}

impl Capture {
    pub(crate) fn new(surface: ApiSurface, max_chars: usize) -> Self {
        Self {
            surface,
            max_chars,
            chars: 0,
            text: String::new(),
        }
    }

    fn push(&mut self, s: &str) {
        for c in s.chars() {
            if self.chars == self.max_chars {
                self.text.push('…');
                self.chars += 1;
                return;
            }
            if self.chars > self.max_chars {
                return;
            }
            self.text.push(c);
            self.chars += 1;
        }
    }

    /// Takes the text of a whole non-streaming body.
    pub(crate) fn body(&mut self, body: &[u8]) {
        match self.surface {
            ApiSurface::ChatCompletions => {
                if let Ok(b) = serde_json::from_slice::<ChatBody<'_>>(body) {
                    for c in b
                        .choices
                        .iter()
                        .filter_map(|c| c.message.as_ref()?.content.as_deref())
                    {
                        self.push(c);
                    }
                }
            }
            ApiSurface::Responses => {
                if let Ok(b) = serde_json::from_slice::<ResponsesBody<'_>>(body) {
                    for part in b.output.iter().flat_map(|i| &i.content) {
                        if part.kind.as_deref() == Some("output_text")
                            && let Some(t) = &part.text
                        {
                            self.push(t);
                        }
                    }
                }
            }
            ApiSurface::Other => {}
        }
    }

    /// Takes the text of one SSE event's data.
    pub(crate) fn event(&mut self, data: &[u8]) {
        if self.chars > self.max_chars {
            return;
        }
        match self.surface {
            ApiSurface::ChatCompletions => {
                if let Ok(b) = serde_json::from_slice::<ChatBody<'_>>(data) {
                    for c in b
                        .choices
                        .iter()
                        .filter_map(|c| c.delta.as_ref()?.content.as_deref())
                    {
                        self.push(c);
                    }
                }
            }
            ApiSurface::Responses => {
                if let Ok(d) = serde_json::from_slice::<TextDelta<'_>>(data)
                    && d.kind.as_deref() == Some("response.output_text.delta")
                    && let Some(t) = &d.delta
                {
                    self.push(t);
                }
            }
            ApiSurface::Other => {}
        }
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_the_limit_on_a_character_boundary() {
        let mut c = Capture::new(ApiSurface::ChatCompletions, 3);
        c.body(r#"{"choices":[{"message":{"content":"héllo"}}]}"#.as_bytes());
        assert_eq!(c.into_text(), "hél…");
        let mut c = Capture::new(ApiSurface::Responses, 100);
        c.event(br#"{"type":"response.output_text.delta","delta":"a"}"#);
        c.event(br#"{"type":"response.reasoning_text.delta","delta":"secret thoughts"}"#);
        c.event(br#"{"type":"response.output_text.delta","delta":"b"}"#);
        assert_eq!(c.into_text(), "ab");
    }
}
