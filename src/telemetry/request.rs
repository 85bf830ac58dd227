//! What the call span may say about a request: the model, whether it streams, where it goes.
//! Never the URL's userinfo or query, never a header, never the prompt (unless opted in).

use std::borrow::Cow;

use std::sync::Arc;

use opentelemetry::StringValue;
use serde::Deserialize;

use crate::evidence::ApiSurface;
use crate::lint::{self, Asked, AskedSummary, Finding, ModelFamily};

/// What the call span records about the request.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    /// Shared, not copied, into every attribute that carries them.
    pub(crate) model: Option<StringValue>,
    pub(crate) server_address: Option<StringValue>,
    pub(crate) server_port: Option<u16>,
    /// What a response cross-check compares with.
    pub(crate) asked: AskedSummary,
    pub(crate) family: ModelFamily,
    /// The request lint's findings.
    pub(crate) findings: Vec<Finding>,
}

impl RequestFacts {
    /// Reads the request's JSON body once (model, the linted parameters), never its text.
    pub(crate) fn of(
        request: &reqwest::Request,
        surface: ApiSurface,
        family: Option<ModelFamily>,
    ) -> Self {
        let url = request.url();
        let asked = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .and_then(|b| serde_json::from_slice::<Asked<'_>>(b).ok())
            .unwrap_or_default();
        let findings = if surface == ApiSurface::Other {
            Vec::new()
        } else {
            lint::lint(&asked, surface, family)
        };
        Self {
            // A model name is an identifier, but a hostile or buggy caller could put anything
            // there: keep it short.
            model: asked.model.as_deref().map(|m| shared(&truncate(m, 128))),
            server_address: url.host_str().map(shared),
            server_port: url.port_or_known_default(),
            family: lint::family_of(&asked, family),
            asked: asked.summary(),
            findings,
        }
    }
}

/// The prompt as sent (`messages` for Chat, `input` and `instructions` for Responses), as JSON
/// text cut at `max` characters: only for content capture.
pub(crate) fn prompt(request: &reqwest::Request, max: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Prompt<'a> {
        #[serde(borrow)]
        messages: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        input: Option<&'a serde_json::value::RawValue>,
    }
    let body = request.body()?.as_bytes()?;
    let p: Prompt<'_> = serde_json::from_slice(body).ok()?;
    let raw = p.messages.or(p.input)?;
    Some(truncate(raw.get(), max).into_owned())
}

fn shared(s: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(s))
}

/// At most `max` characters of `s`, cut on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_comes_from_the_body_and_nothing_else() {
        let client = reqwest::Client::new();
        let req = client
            .post("https://user:secret@gw.example:8443/v1/chat/completions?key=sk-CANARY")
            .header("authorization", "Bearer sk-CANARY")
            .body(r#"{"messages":[{"role":"user","content":"sk-CANARY"}],"model":"gpt-4o","stream":true}"#)
            .build()
            .unwrap();
        let facts = RequestFacts::of(&req, ApiSurface::ChatCompletions, None);
        assert_eq!(
            facts.model.as_ref().map(StringValue::as_str),
            Some("gpt-4o")
        );
        assert_eq!(
            facts.server_address.as_ref().map(StringValue::as_str),
            Some("gw.example")
        );
        assert_eq!(facts.server_port, Some(8443));
        assert!(!format!("{facts:?}").contains("CANARY"));
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
