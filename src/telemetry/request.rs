//! What the call span may say about a request: the model, where it goes, the parameters the
//! conventions name. Never the URL's userinfo or query, never a header, never the prompt
//! (unless opted in, then as the conventions' messages JSON, its text cut).

use std::borrow::Cow;

use std::sync::Arc;

use opentelemetry::StringValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use opentelemetry::{Array, KeyValue, Value as OtelValue};

use super::attributes::{Flavor, MAX_ID_CHARS, Operation, provider_for_host, truncate};
use crate::evidence::ApiSurface;
use crate::evidence::attr;
use crate::lint::{self, Asked, AskedSummary, Finding, ModelFamily};

/// What the call span records about the request.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    /// Shared, not copied, into every attribute that carries them.
    pub(crate) model: Option<StringValue>,
    pub(crate) server_address: Option<StringValue>,
    pub(crate) server_port: Option<u16>,
    /// The GenAI operation, if the call is one.
    pub(crate) operation: Option<Operation>,
    /// `gen_ai.provider.name`: the layer's, else the host's.
    pub(crate) provider: StringValue,
    /// The parameters the conventions name (GenAI operations that run the model only).
    pub(crate) params: RequestParams,
    /// What a response cross-check compares with.
    pub(crate) asked: AskedSummary,
    pub(crate) family: ModelFamily,
    /// The request lint's findings.
    pub(crate) findings: Vec<Finding>,
}

impl RequestFacts {
    /// Reads the request's JSON body (model, the linted parameters, the conventions'
    /// parameters), never its text.
    pub(crate) fn of(
        request: &reqwest::Request,
        surface: ApiSurface,
        family: Option<ModelFamily>,
        provider: Option<&StringValue>,
    ) -> Self {
        let url = request.url();
        // One pass over the body (its messages can be most of it) for both readers: the
        // top-level fields are kept raw, then the lint's and the conventions' are read from
        // them. Two passes were 4.3 k instructions on a 100-byte request and grow with it.
        let raw = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .and_then(|b| serde_json::from_slice::<RawParams<'_>>(b).ok());
        let asked = raw.as_ref().and_then(asked).unwrap_or_default();
        let findings = if surface == ApiSurface::Other {
            Vec::new()
        } else {
            lint::lint(&asked, surface, family)
        };
        let operation = Operation::of(surface, request.method(), url.path());
        let params = match (operation, &raw) {
            (Some(Operation::Chat), Some(raw)) => RequestParams::of_raw(raw),
            _ => RequestParams::default(),
        };
        Self {
            // A model name is an identifier, but a hostile or buggy caller could put anything
            // there: keep it short.
            model: asked
                .model
                .as_deref()
                .map(|m| shared(&truncate(m, MAX_ID_CHARS))),
            server_address: url.host_str().map(shared),
            server_port: url.port_or_known_default(),
            operation,
            provider: provider
                .cloned()
                .unwrap_or_else(|| StringValue::from(provider_for_host(url.host_str()))),
            params,
            family: lint::family_of(&asked, family),
            asked: asked.summary(),
            findings,
        }
    }
}

impl RequestFacts {
    /// Points the facts at the target the call really went to (`server.*`, and the provider
    /// its host gives unless the layer names one): after a hop, never the URL the caller wrote.
    pub(crate) fn retarget(&mut self, url: &reqwest::Url, provider: Option<&StringValue>) {
        self.server_address = url.host_str().map(shared);
        self.server_port = url.port_or_known_default();
        self.provider = provider
            .cloned()
            .unwrap_or_else(|| StringValue::from(provider_for_host(url.host_str())));
    }
}

/// The request parameters the conventions name, as sent. Strings are cut at 128 characters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RequestParams {
    pub(crate) stream: Option<bool>,
    pub(crate) max_tokens: Option<i64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) top_k: Option<i64>,
    pub(crate) frequency_penalty: Option<f64>,
    pub(crate) presence_penalty: Option<f64>,
    /// At most 4 (the API's own limit).
    pub(crate) stop_sequences: Vec<StringValue>,
    pub(crate) seed: Option<i64>,
    pub(crate) choice_count: Option<i64>,
    pub(crate) reasoning_level: Option<StringValue>,
    pub(crate) previous_response_id: Option<StringValue>,
    pub(crate) conversation_id: Option<StringValue>,
    /// `json` or `text`.
    pub(crate) output_type: Option<&'static str>,
    pub(crate) service_tier: Option<StringValue>,
}

/// The body's fields, unparsed: each is read on its own, so one of an unexpected type loses
/// that parameter, not the others. The lint's fields are here too, so the body is read once.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawParams<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    top_logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    top_k: Option<&'a RawValue>,
    #[serde(borrow)]
    frequency_penalty: Option<&'a RawValue>,
    #[serde(borrow)]
    presence_penalty: Option<&'a RawValue>,
    #[serde(borrow)]
    stop: Option<&'a RawValue>,
    #[serde(borrow)]
    seed: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_effort: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    service_tier: Option<&'a RawValue>,
}

/// `raw` as a `T`, or nothing when it is absent, `null` or of another type.
fn get<T: DeserializeOwned>(raw: Option<&RawValue>) -> Option<T> {
    serde_json::from_str(raw?.get()).ok()
}

/// A string parameter, cut.
fn text(raw: Option<&RawValue>) -> Option<StringValue> {
    get::<String>(raw).map(|s| shared(&truncate(&s, MAX_ID_CHARS)))
}

/// A finite number (JSON has no others, but a float parse can still overflow to infinity).
fn number(raw: Option<&RawValue>) -> Option<f64> {
    get::<f64>(raw).filter(|x| x.is_finite())
}

#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct TextConfig {
    format: Option<Typed>,
}

#[derive(Deserialize)]
struct Effort {
    effort: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Conversation {
    Id(String),
    Object { id: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What the lint reads, from the raw fields: all or nothing, as a parse of the whole body into
/// [`Asked`] would give (a field of another type loses them all).
fn asked<'a>(raw: &RawParams<'a>) -> Option<Asked<'a>> {
    fn typed<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(r) => serde_json::from_str(r.get()).ok().map(Some),
        }
    }
    Some(Asked {
        model: typed::<Cow<'a, str>>(raw.model)?,
        stream: typed(raw.stream)?,
        n: typed(raw.n)?,
        temperature: typed(raw.temperature)?,
        logprobs: typed(raw.logprobs)?,
        top_logprobs: typed(raw.top_logprobs)?,
        reasoning_effort: typed(raw.reasoning_effort)?,
        reasoning: typed(raw.reasoning)?,
        max_tokens: typed(raw.max_tokens)?,
        previous_response_id: typed(raw.previous_response_id)?,
        tools: typed(raw.tools)?,
        tool_choice: typed(raw.tool_choice)?,
    })
}

impl RequestParams {
    /// The parameters of a Chat Completions or Responses request body (not JSON: none).
    #[cfg(test)]
    pub(crate) fn of(body: &[u8]) -> Self {
        serde_json::from_slice::<RawParams<'_>>(body)
            .map(|raw| Self::of_raw(&raw))
            .unwrap_or_default()
    }

    /// The parameters, from the body's raw fields.
    fn of_raw(raw: &RawParams<'_>) -> Self {
        let stop = match get::<Stop>(raw.stop) {
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
            None => Vec::new(),
        };
        let output_type = get::<Typed>(raw.response_format)
            .or_else(|| get::<TextConfig>(raw.text).and_then(|t| t.format))
            .and_then(|t| match t.kind.as_deref()? {
                "json_object" | "json_schema" => Some("json"),
                "text" => Some("text"),
                _ => None,
            });
        Self {
            stream: get(raw.stream),
            max_tokens: get(raw.max_completion_tokens)
                .or_else(|| get(raw.max_tokens))
                .or_else(|| get(raw.max_output_tokens)),
            temperature: number(raw.temperature),
            top_p: number(raw.top_p),
            top_k: get(raw.top_k),
            frequency_penalty: number(raw.frequency_penalty),
            presence_penalty: number(raw.presence_penalty),
            stop_sequences: stop
                .iter()
                .take(4)
                .map(|s| shared(&truncate(s, MAX_ID_CHARS)))
                .collect(),
            seed: get(raw.seed),
            choice_count: get(raw.n),
            reasoning_level: text(raw.reasoning_effort).or_else(|| {
                get::<Effort>(raw.reasoning)
                    .and_then(|r| r.effort)
                    .map(|e| shared(&truncate(&e, MAX_ID_CHARS)))
            }),
            previous_response_id: text(raw.previous_response_id),
            conversation_id: get::<Conversation>(raw.conversation).map(|c| match c {
                Conversation::Id(id) | Conversation::Object { id } => {
                    shared(&truncate(&id, MAX_ID_CHARS))
                }
            }),
            output_type,
            service_tier: text(raw.service_tier),
        }
    }
}

/// The prompt, for content capture only.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Prompt {
    /// `gen_ai.input.messages`.
    pub(crate) messages: Option<String>,
    /// `gen_ai.system_instructions` (Responses `instructions`).
    pub(crate) system_instructions: Option<String>,
}

/// Characters of text an attribute may still hold, and whether a text was cut.
struct Budget {
    left: usize,
    cut: bool,
}

impl Budget {
    fn new(max: usize) -> Self {
        Self {
            left: max,
            cut: false,
        }
    }

    /// `s`, cut to what is left (a cut ends with `…`).
    fn take(&mut self, s: &str) -> String {
        if let Some((i, _)) = s.char_indices().nth(self.left) {
            self.left = 0;
            self.cut = true;
            format!("{}…", &s[..i])
        } else {
            self.left -= s.chars().count();
            s.to_owned()
        }
    }

    /// A text was cut: what follows it is left out.
    fn spent(&self) -> bool {
        self.cut
    }
}

/// The prompt as the conventions' JSON: Chat `messages`, Responses `input` (a string, or its
/// message, `function_call` and `function_call_output` items) and `instructions`. Every text
/// (message text, tool-call arguments and results) is cut so that one attribute's texts hold
/// at most `max` characters together; messages past the cut are left out, so the JSON stays
/// whole. Parts that are not text (images, audio, files) are recorded by their type only.
pub(crate) fn prompt(body: &[u8], surface: ApiSurface, max: usize) -> Prompt {
    #[derive(Deserialize)]
    struct Body {
        messages: Option<Value>,
        input: Option<Value>,
        instructions: Option<Value>,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return Prompt::default();
    };
    let mut budget = Budget::new(max);
    let messages: Option<Vec<Value>> = match (surface, b.messages, b.input) {
        (ApiSurface::ChatCompletions, Some(Value::Array(messages)), _) => Some(
            messages
                .iter()
                .map_while(|m| (!budget.spent()).then(|| chat_message(m, &mut budget)))
                .flatten()
                .collect(),
        ),
        (ApiSurface::Responses, _, Some(Value::String(text))) => Some(vec![json!({
            "role": "user",
            "parts": [text_part(&text, &mut budget)],
        })]),
        (ApiSurface::Responses, _, Some(Value::Array(items))) => Some(
            items
                .iter()
                .map_while(|i| (!budget.spent()).then(|| responses_item(i, &mut budget)))
                .flatten()
                .collect(),
        ),
        _ => None,
    };
    let system_instructions = match b.instructions {
        Some(Value::String(text)) if surface == ApiSurface::Responses => {
            Some(Value::Array(vec![text_part(&text, &mut Budget::new(max))]).to_string())
        }
        _ => None,
    };
    Prompt {
        messages: messages.map(|m| Value::Array(m).to_string()),
        system_instructions,
    }
}

fn text_part(text: &str, budget: &mut Budget) -> Value {
    json!({"type": "text", "content": budget.take(text)})
}

/// An identifier (a role, a tool call's id or name), cut.
fn id(v: Option<&Value>) -> Value {
    v.and_then(Value::as_str)
        .map_or(Value::Null, |s| truncate(s, MAX_ID_CHARS).into())
}

/// The text of a content value: a string, or its text parts joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A message's content as parts: a string, or typed parts (`text`, `input_text`, `output_text`,
/// `refusal` are text; the others keep only their type).
fn content_parts(content: Option<&Value>, budget: &mut Budget, parts: &mut Vec<Value>) {
    match content {
        Some(Value::String(s)) => parts.push(text_part(s, budget)),
        Some(Value::Array(items)) => {
            for item in items {
                if budget.spent() {
                    return;
                }
                let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
                let text = match kind {
                    "text" | "input_text" | "output_text" => item.get("text"),
                    "refusal" => item.get("refusal"),
                    _ => None,
                };
                match text.and_then(Value::as_str) {
                    Some(t) => parts.push(text_part(t, budget)),
                    None => parts.push(json!({"type": truncate(kind, MAX_ID_CHARS)})),
                }
            }
        }
        _ => {}
    }
}

/// One Chat message: its text parts, the assistant's tool calls, or a tool's result.
fn chat_message(m: &Value, budget: &mut Budget) -> Option<Value> {
    let role = m.get("role").and_then(Value::as_str)?;
    let mut parts = Vec::new();
    if matches!(role, "tool" | "function") {
        parts.push(json!({
            "type": "tool_call_response",
            "id": id(m.get("tool_call_id")),
            "response": budget.take(&text_of(m.get("content"))),
        }));
    } else {
        content_parts(m.get("content"), budget, &mut parts);
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if budget.spent() {
                break;
            }
            let function = call.get("function");
            parts.push(tool_call(
                call.get("id"),
                function.and_then(|f| f.get("name")),
                function.and_then(|f| f.get("arguments")),
                budget,
            ));
        }
    }
    Some(message(role, parts))
}

/// One Responses input item: a message, a function call or a function call's output. Other
/// items (reasoning, built-in tool calls) are left out.
fn responses_item(item: &Value, budget: &mut Budget) -> Option<Value> {
    if let Some(role) = item.get("role").and_then(Value::as_str) {
        let mut parts = Vec::new();
        content_parts(item.get("content"), budget, &mut parts);
        return Some(message(role, parts));
    }
    match item.get("type").and_then(Value::as_str)? {
        "function_call" => Some(message(
            "assistant",
            vec![tool_call(
                item.get("call_id"),
                item.get("name"),
                item.get("arguments"),
                budget,
            )],
        )),
        "function_call_output" => Some(message(
            "tool",
            vec![json!({
                "type": "tool_call_response",
                "id": id(item.get("call_id")),
                "response": budget.take(&text_of(item.get("output"))),
            })],
        )),
        _ => None,
    }
}

fn tool_call(
    call_id: Option<&Value>,
    name: Option<&Value>,
    arguments: Option<&Value>,
    budget: &mut Budget,
) -> Value {
    let mut part = Map::new();
    part.insert("type".into(), "tool_call".into());
    part.insert("id".into(), id(call_id));
    part.insert("name".into(), id(name));
    // The API sends arguments as a string of JSON: kept as that string, cut like any text.
    if let Some(arguments) = arguments.and_then(Value::as_str) {
        part.insert("arguments".into(), budget.take(arguments).into());
    }
    part.into()
}

fn message(role: &str, parts: Vec<Value>) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), truncate(role, MAX_ID_CHARS).into());
    message.insert("parts".into(), Value::Array(parts));
    message.into()
}

fn shared(s: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(s))
}

/// What the request asked for, as the conventions' `gen_ai.request.*` attributes (never its
/// messages), and the `openai.*` request attribute for provider `openai`.
pub(super) fn request_attributes(p: &RequestParams, flavor: Flavor, kv: &mut Vec<KeyValue>) {
    kv.push(KeyValue::new(
        attr::GEN_AI_REQUEST_STREAM,
        p.stream.unwrap_or(false),
    ));
    for (name, n) in [
        (attr::GEN_AI_REQUEST_MAX_TOKENS, p.max_tokens),
        (attr::GEN_AI_REQUEST_TOP_K, p.top_k),
        (attr::GEN_AI_REQUEST_SEED, p.seed),
        // The conventions ask for it only when it is not 1.
        (
            attr::GEN_AI_REQUEST_CHOICE_COUNT,
            p.choice_count.filter(|&n| n != 1),
        ),
    ] {
        if let Some(n) = n {
            kv.push(KeyValue::new(name, n));
        }
    }
    for (name, x) in [
        (attr::GEN_AI_REQUEST_TEMPERATURE, p.temperature),
        (attr::GEN_AI_REQUEST_TOP_P, p.top_p),
        (attr::GEN_AI_REQUEST_FREQUENCY_PENALTY, p.frequency_penalty),
        (attr::GEN_AI_REQUEST_PRESENCE_PENALTY, p.presence_penalty),
    ] {
        if let Some(x) = x {
            kv.push(KeyValue::new(name, x));
        }
    }
    if !p.stop_sequences.is_empty() {
        kv.push(KeyValue::new(
            attr::GEN_AI_REQUEST_STOP_SEQUENCES,
            OtelValue::Array(Array::String(p.stop_sequences.clone())),
        ));
    }
    for (name, s) in [
        (attr::GEN_AI_REQUEST_REASONING_LEVEL, &p.reasoning_level),
        (
            attr::GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID,
            &p.previous_response_id,
        ),
        (attr::GEN_AI_CONVERSATION_ID, &p.conversation_id),
    ] {
        if let Some(s) = s {
            kv.push(KeyValue::new(name, s.clone()));
        }
    }
    if let Some(output) = p.output_type {
        kv.push(KeyValue::new(attr::GEN_AI_OUTPUT_TYPE, output));
    }
    if flavor.openai
        && let Some(tier) = &p.service_tier
    {
        kv.push(KeyValue::new(
            attr::OPENAI_REQUEST_SERVICE_TIER,
            tier.clone(),
        ));
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
        let facts = RequestFacts::of(&req, ApiSurface::ChatCompletions, None, None);
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
    fn parameters_are_read_one_by_one() {
        // Responses names; a wrong type loses that parameter only.
        let p = RequestParams::of(
            br#"{"model":"gpt-5","input":"hi","max_output_tokens":100,"temperature":"hot","top_k":40,"stop":"END","reasoning":{"effort":"high"},"previous_response_id":"resp_abc","conversation":{"id":"conv_1"},"text":{"format":{"type":"text"}}}"#,
        );
        assert_eq!(p.max_tokens, Some(100));
        assert_eq!(p.temperature, None);
        assert_eq!(p.top_k, Some(40));
        assert_eq!(p.stop_sequences, vec![StringValue::from("END")]);
        assert_eq!(
            p.reasoning_level.as_ref().map(StringValue::as_str),
            Some("high")
        );
        assert_eq!(
            p.previous_response_id.as_ref().map(StringValue::as_str),
            Some("resp_abc")
        );
        assert_eq!(
            p.conversation_id.as_ref().map(StringValue::as_str),
            Some("conv_1")
        );
        assert_eq!(p.output_type, Some("text"));
        let p = RequestParams::of(br#"{"conversation":"conv_2","stop":["a","b","c","d","e"]}"#);
        assert_eq!(
            p.conversation_id.as_ref().map(StringValue::as_str),
            Some("conv_2")
        );
        assert_eq!(p.stop_sequences.len(), 4);
        assert_eq!(RequestParams::of(b"not json"), RequestParams::default());
    }

    fn parsed(json: Option<&str>) -> serde_json::Value {
        serde_json::from_str(json.expect("recorded")).expect("valid JSON")
    }

    #[test]
    fn a_chat_prompt_becomes_role_and_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"look","arguments":"{\"q\":1}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"a cat"}
        ]}"#;
        let p = prompt(body, ApiSurface::ChatCompletions, 1000);
        assert_eq!(
            parsed(p.messages.as_deref()),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [
                    {"type": "text", "content": "What is this?"},
                    {"type": "image_url"}
                ]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "call_1", "name": "look", "arguments": "{\"q\":1}"}
                ]},
                {"role": "tool", "parts": [
                    {"type": "tool_call_response", "id": "call_1", "response": "a cat"}
                ]}
            ])
        );
        assert_eq!(p.system_instructions, None);
    }

    #[test]
    fn a_responses_prompt_becomes_role_and_parts_and_instructions() {
        let body = br#"{"model":"m","instructions":"Answer in French.","input":[
            {"role":"user","content":[{"type":"input_text","text":"Hello"}]},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"function_call","call_id":"call_9","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_9","output":"42"}
        ]}"#;
        let p = prompt(body, ApiSurface::Responses, 1000);
        assert_eq!(
            parsed(p.messages.as_deref()),
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "Hello"}]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "call_9", "name": "f", "arguments": "{}"}
                ]},
                {"role": "tool", "parts": [
                    {"type": "tool_call_response", "id": "call_9", "response": "42"}
                ]}
            ])
        );
        assert_eq!(
            parsed(p.system_instructions.as_deref()),
            json!([{"type": "text", "content": "Answer in French."}])
        );
        let p = prompt(br#"{"input":"Bonjour"}"#, ApiSurface::Responses, 1000);
        assert_eq!(
            parsed(p.messages.as_deref()),
            json!([{"role": "user", "parts": [{"type": "text", "content": "Bonjour"}]}])
        );
    }

    #[test]
    fn the_text_is_cut_never_the_json() {
        // Multi-byte characters, quotes and a backslash right at the cut.
        let body = r#"{"messages":[
            {"role":"user","content":"日本語の\"引用\"\\テキスト"},
            {"role":"assistant","content":"never reached"}
        ]}"#;
        for max in 0..20 {
            let p = prompt(body.as_bytes(), ApiSurface::ChatCompletions, max);
            let json = parsed(p.messages.as_deref());
            let messages = json.as_array().unwrap();
            let text = messages[0]["parts"][0]["content"].as_str().unwrap();
            let kept = text.trim_end_matches('…');
            assert!(kept.chars().count() <= max, "{max}: {text}");
            if max < 12 {
                assert!(text.ends_with('…'), "{max}: {text}");
                assert_eq!(messages.len(), 1, "messages past the cut are left out");
            }
        }
        // Exactly the budget: nothing cut, and the next message still has its say.
        let p = prompt(
            br#"{"messages":[{"role":"user","content":"abc"},{"role":"user","content":"d"}]}"#,
            ApiSurface::ChatCompletions,
            3,
        );
        assert_eq!(
            parsed(p.messages.as_deref()),
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "abc"}]},
                {"role": "user", "parts": [{"type": "text", "content": "…"}]}
            ])
        );
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
