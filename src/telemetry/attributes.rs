//! Span attributes from the evidence: pure functions over values, no I/O.

use std::borrow::Cow;

use opentelemetry::{Array, KeyValue, StringValue, Value};

use crate::contract::ContractVerdict;
use crate::evidence::{ApiSurface, TransportErrorKind, WafVerdict, attr};

/// Model names, response ids and finish reasons are cut at this many characters.
pub(super) const MAX_ID_CHARS: usize = 128;

/// The method's name, without an allocation for the usual ones.
pub(super) fn method_name(method: &http::Method) -> Cow<'static, str> {
    match *method {
        http::Method::POST => Cow::Borrowed("POST"),
        http::Method::GET => Cow::Borrowed("GET"),
        http::Method::DELETE => Cow::Borrowed("DELETE"),
        _ => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The GenAI operation a call is, by the conventions' names. Calls that are none (an `other`
/// surface, a stored completion's update, a response's cancellation) carry no
/// `gen_ai.operation.name`, and their span is named like an HTTP client span, `{method}`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Operation {
    /// A Chat Completions or Responses request that runs the model (`POST …/chat/completions`,
    /// `POST …/responses`).
    Chat,
    /// A stored response read back by its id (`GET …/responses/{id}`, `GET
    /// …/chat/completions/{id}`): no inference, so no token usage and no inference metrics.
    FetchResponse,
}

impl Operation {
    /// The operation of a request on `surface`.
    pub(crate) fn of(surface: ApiSurface, method: &http::Method, path: &str) -> Option<Self> {
        if surface == ApiSurface::Other {
            return None;
        }
        if *method == http::Method::GET {
            return Some(Self::FetchResponse);
        }
        let last = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        (*method == http::Method::POST && matches!(last, "completions" | "responses"))
            .then_some(Self::Chat)
    }

    /// `gen_ai.operation.name`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::FetchResponse => "fetch_response",
        }
    }

    /// Whether the model ran: token usage and the inference metrics are recorded.
    pub(crate) fn is_inference(self) -> bool {
        self == Self::Chat
    }
}

/// How the call's attributes are spelled: which provider's flavour, which conventions.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Flavor {
    /// `gen_ai.provider.name` is `openai`: the `openai.*` attributes apply. The conventions
    /// make the provider name a discriminator: other providers' spans do not carry them.
    pub(crate) openai: bool,
    /// The latest GenAI conventions (`gen_ai_latest_experimental`), not v1.41's.
    pub(crate) latest: bool,
}

/// `gen_ai.provider.name` for a host: the conventions' well-known value for a provider's own
/// API host, a gateway's own name (`openrouter`, `cometapi`: the conventions allow custom
/// values), else `openai`. An unknown host speaks the OpenAI API, and `openai` is the flavour
/// of telemetry that describes it (the conventions: "the instrumentation's best knowledge");
/// `server.address` tells the hosts apart.
pub(crate) fn provider_for_host(host: Option<&str>) -> &'static str {
    let Some(host) = host else { return "openai" };
    let host = host.trim_end_matches('.');
    // A domain and its subdomains, on a label boundary (`evilopenai.com` is not `openai.com`).
    let under = |domain: &str| {
        let (host, domain) = (host.as_bytes(), domain.as_bytes());
        match host.len().checked_sub(domain.len()) {
            Some(0) => host.eq_ignore_ascii_case(domain),
            Some(dot) => host[dot - 1] == b'.' && host[dot..].eq_ignore_ascii_case(domain),
            None => false,
        }
    };
    // Region-named hosts: `bedrock-runtime.us-east-1.amazonaws.com`,
    // `us-central1-aiplatform.googleapis.com`.
    let first_label = host.split('.').next().unwrap_or_default();
    if under("api.openai.com") {
        "openai"
    } else if under("openai.azure.com")
        || under("openai.azure.us")
        || under("cognitiveservices.azure.com")
    {
        "azure.ai.openai"
    } else if under("models.inference.ai.azure.com") {
        "azure.ai.inference"
    } else if under("api.groq.com") {
        "groq"
    } else if under("api.deepseek.com") {
        "deepseek"
    } else if under("openrouter.ai") {
        "openrouter"
    } else if under("api.anthropic.com") {
        "anthropic"
    } else if under("api.mistral.ai") {
        "mistral_ai"
    } else if under("api.x.ai") {
        "x_ai"
    } else if under("generativelanguage.googleapis.com") {
        "gcp.gemini"
    } else if under("googleapis.com")
        && (first_label == "aiplatform" || first_label.ends_with("-aiplatform"))
    {
        "gcp.vertex_ai"
    } else if under("api.perplexity.ai") {
        "perplexity"
    } else if under("api.cohere.ai") || under("api.cohere.com") {
        "cohere"
    } else if under("api.moonshot.ai") || under("api.moonshot.cn") {
        "moonshot_ai"
    } else if (under("amazonaws.com") && first_label == "bedrock-runtime")
        || (under("api.aws") && first_label == "bedrock-mantle")
    {
        "aws.bedrock"
    } else if under("ml.cloud.ibm.com") {
        "ibm.watsonx.ai"
    } else if under("cometapi.com") {
        "cometapi"
    } else {
        "openai"
    }
}

/// `error.type`: the transport error's kind, a 4xx/5xx status, or a 2xx's violation; nothing
/// for a clean answer or a cancelled call.
pub(super) fn error_type(
    status: Option<http::StatusCode>,
    transport: Option<TransportErrorKind>,
    verdict: Option<&ContractVerdict>,
    cancelled: bool,
) -> Option<Cow<'static, str>> {
    match status {
        None if cancelled => None,
        None => Some(
            transport
                .unwrap_or(TransportErrorKind::Other)
                .as_str()
                .into(),
        ),
        Some(s) if s.as_u16() >= 400 => Some(s.as_u16().to_string().into()),
        Some(_) => verdict.and_then(|v| v.violation).map(|v| v.as_str().into()),
    }
}

pub(super) fn truncated(s: &str) -> String {
    truncate(s, MAX_ID_CHARS).into_owned()
}

/// A count as an attribute value (counts past `i64::MAX` are not recorded).
fn count(n: Option<u64>) -> Option<i64> {
    n.and_then(|n| i64::try_from(n).ok())
}

/// The contract verdict's attributes: violation, warnings, skip reason, and what the body said
/// about itself (model, id, finish reasons, usage when `usage` is asked for, the `openai.*`
/// response attributes for provider `openai`). A stream that failed has `error` among its finish
/// reasons: it ended early, whatever reasons came before.
pub(super) fn verdict_attributes(
    v: &ContractVerdict,
    streamed: bool,
    usage: bool,
    flavor: Flavor,
    kv: &mut Vec<KeyValue>,
) {
    if let Some(violation) = v.violation {
        kv.push(KeyValue::new(attr::CONTRACT_VIOLATION, violation.as_str()));
    }
    kv.push(KeyValue::new(
        attr::CONTRACT_WARNINGS,
        i64::from(v.warnings.len()),
    ));
    let facts = &v.facts;
    if let Some(model) = &facts.response_model {
        kv.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, truncated(model)));
    }
    if let Some(id) = &facts.response_id {
        kv.push(KeyValue::new(attr::GEN_AI_RESPONSE_ID, truncated(id)));
    }
    if let Some(reasons) = finish_reasons(v, streamed) {
        kv.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(reasons)),
        ));
    }
    if let Some(tokens) = facts.usage.filter(|_| usage) {
        let cache_write = if flavor.latest {
            attr::GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
        } else {
            attr::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
        };
        for (name, n) in [
            (attr::GEN_AI_USAGE_INPUT_TOKENS, tokens.input_tokens),
            (attr::GEN_AI_USAGE_OUTPUT_TOKENS, tokens.output_tokens),
            (
                attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                tokens.cache_read_input_tokens,
            ),
            (cache_write, tokens.cache_write_input_tokens),
            (
                attr::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
                tokens.reasoning_output_tokens,
            ),
        ] {
            if let Some(n) = count(n) {
                kv.push(KeyValue::new(name, n));
            }
        }
    }
    if flavor.openai {
        if let Some(tier) = &facts.service_tier {
            kv.push(KeyValue::new(
                attr::OPENAI_RESPONSE_SERVICE_TIER,
                truncated(tier),
            ));
        }
        if let Some(fingerprint) = &facts.system_fingerprint {
            kv.push(KeyValue::new(
                attr::OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
                truncated(fingerprint),
            ));
        }
    }
}

/// `gen_ai.response.finish_reasons`: the body's (at most 16), and `error` for a stream that
/// ended early (the conventions: `error` where a finish reason never arrived).
fn finish_reasons(v: &ContractVerdict, streamed: bool) -> Option<Vec<StringValue>> {
    let ended_early = streamed && v.parse_check == crate::evidence::ParseCheck::Fail;
    if v.facts.finish_reasons.is_empty() && !ended_early {
        return None;
    }
    let mut reasons: Vec<StringValue> = v
        .facts
        .finish_reasons
        .iter()
        .take(16)
        .map(|r| StringValue::from(truncated(r)))
        .collect();
    if ended_early {
        reasons.push(StringValue::from("error"));
    }
    Some(reasons)
}

/// `gen_ai.output.messages` for captured completion text: the conventions' JSON, one assistant
/// message with the text as its one part (already cut by the capture, so the JSON is whole).
/// v1.41's schema requires the message's `finish_reason`; the latest deprecates it for
/// `gen_ai.response.finish_reasons`, so it is left out there.
pub(super) fn output_messages(
    text: &str,
    v: &ContractVerdict,
    streamed: bool,
    flavor: Flavor,
) -> String {
    let mut message = serde_json::Map::new();
    message.insert("role".into(), "assistant".into());
    let parts: Vec<serde_json::Value> = if text.is_empty() {
        Vec::new()
    } else {
        vec![serde_json::json!({"type": "text", "content": text})]
    };
    message.insert("parts".into(), parts.into());
    if !flavor.latest
        && let Some(reason) = finish_reasons(v, streamed).and_then(|r| {
            // The message is every choice's text at once: the first reason stands for it, and
            // `error` for a stream that ended early.
            r.iter()
                .find(|r| r.as_str() == "error")
                .or_else(|| r.first())
                .map(ToString::to_string)
        })
    {
        message.insert("finish_reason".into(), reason.into());
    }
    serde_json::Value::Array(vec![message.into()]).to_string()
}

/// The wall's vendor, kind and reference.
pub(super) fn waf_attributes(waf: &WafVerdict, kv: &mut Vec<KeyValue>) {
    kv.push(KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()));
    kv.push(KeyValue::new(attr::WAF_KIND, waf.kind.as_str()));
    if let Some(reference) = &waf.reference {
        kv.push(KeyValue::new(attr::WAF_REFERENCE, reference.clone()));
    }
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
    use crate::contract::{Mode, check_body};
    use crate::evidence::{WafKind, WafVendor};
    use crate::telemetry::request::{RequestParams, request_attributes};
    use http::StatusCode;

    fn find<'a>(kv: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        kv.iter().find(|k| k.key.as_str() == key).map(|k| &k.value)
    }

    type Row<'a> = (
        Option<u16>,
        Option<TransportErrorKind>,
        Option<&'a ContractVerdict>,
        bool,
        Option<&'a str>,
    );

    #[test]
    fn error_type_by_what_came_back() {
        let html = check_body(
            ApiSurface::ChatCompletions,
            StatusCode::OK,
            Some("text/html"),
            b"<html></html>",
            Mode::Compat,
        );
        let rows: [Row<'_>; 7] = [
            (
                None,
                Some(TransportErrorKind::Timeout),
                None,
                false,
                Some("timeout"),
            ),
            (None, None, None, false, Some("other")),
            (None, None, None, true, None),
            (Some(429), None, None, false, Some("429")),
            (Some(503), None, None, false, Some("503")),
            (Some(200), None, Some(&html), false, Some("html_body")),
            (Some(200), None, None, false, None),
        ];
        for (status, transport, verdict, cancelled, want) in rows {
            let status = status.map(|s| StatusCode::from_u16(s).unwrap());
            assert_eq!(
                error_type(status, transport, verdict, cancelled).as_deref(),
                want,
                "{status:?} {transport:?} cancelled={cancelled}"
            );
        }
    }

    #[test]
    fn verdict_attributes_cut_long_values_and_carry_usage() {
        let long = "m".repeat(500);
        let body = format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"{long}","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}}}"#
        );
        let v = check_body(
            ApiSurface::ChatCompletions,
            StatusCode::OK,
            Some("application/json"),
            body.as_bytes(),
            Mode::Compat,
        );
        let mut kv = Vec::new();
        verdict_attributes(&v, false, true, Flavor::default(), &mut kv);
        let model = find(&kv, attr::GEN_AI_RESPONSE_MODEL).unwrap().as_str();
        assert!(model.chars().count() <= MAX_ID_CHARS + 1, "{model}");
        assert_eq!(
            find(&kv, attr::GEN_AI_USAGE_INPUT_TOKENS),
            Some(&Value::I64(3))
        );
        assert_eq!(
            find(&kv, attr::GEN_AI_USAGE_OUTPUT_TOKENS),
            Some(&Value::I64(5))
        );
        assert_eq!(find(&kv, attr::CONTRACT_VIOLATION), None);
    }

    #[test]
    fn a_failed_stream_has_error_among_its_finish_reasons() {
        let mut checker =
            crate::contract::StreamChecker::new(ApiSurface::ChatCompletions, Mode::Compat);
        checker.feed(b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n");
        let v = checker.finish();
        let mut kv = Vec::new();
        verdict_attributes(&v, true, true, Flavor::default(), &mut kv);
        assert_eq!(
            find(&kv, attr::GEN_AI_RESPONSE_FINISH_REASONS).map(ToString::to_string),
            Some("[\"error\"]".to_owned())
        );
        let mut kv = Vec::new();
        verdict_attributes(&v, false, true, Flavor::default(), &mut kv);
        assert_eq!(find(&kv, attr::GEN_AI_RESPONSE_FINISH_REASONS), None);
    }

    #[test]
    fn waf_attributes_carry_the_reference_only_when_known() {
        let mut kv = Vec::new();
        waf_attributes(&WafVerdict::new(WafVendor::Akamai, WafKind::Block), &mut kv);
        assert_eq!(kv.len(), 2);
        let mut kv = Vec::new();
        waf_attributes(
            &WafVerdict::new(WafVendor::Cloudflare, WafKind::Challenge)
                .with_reference("8f2a1b3c4d5e6f70"),
            &mut kv,
        );
        assert_eq!(
            find(&kv, attr::WAF_REFERENCE).map(Value::as_str).as_deref(),
            Some("8f2a1b3c4d5e6f70")
        );
    }

    #[test]
    fn operation_and_method_names() {
        use http::Method;
        let chat = ApiSurface::ChatCompletions;
        let rows: [(ApiSurface, Method, &str, Option<Operation>); 8] = [
            (
                chat,
                Method::POST,
                "/v1/chat/completions",
                Some(Operation::Chat),
            ),
            (
                ApiSurface::Responses,
                Method::POST,
                "/openai/v1/responses/",
                Some(Operation::Chat),
            ),
            (
                ApiSurface::Responses,
                Method::GET,
                "/v1/responses/resp_1",
                Some(Operation::FetchResponse),
            ),
            (
                chat,
                Method::GET,
                "/v1/chat/completions/chatcmpl-1",
                Some(Operation::FetchResponse),
            ),
            // Updating a stored completion, cancelling a response: no model runs.
            (chat, Method::POST, "/v1/chat/completions/chatcmpl-1", None),
            (
                ApiSurface::Responses,
                Method::POST,
                "/v1/responses/resp_1/cancel",
                None,
            ),
            (ApiSurface::Other, Method::POST, "/v1/embeddings", None),
            (ApiSurface::Other, Method::GET, "/v1/models", None),
        ];
        for (surface, method, path, want) in rows {
            assert_eq!(
                Operation::of(surface, &method, path),
                want,
                "{method} {path}"
            );
        }
        assert_eq!(Operation::Chat.as_str(), "chat");
        assert_eq!(Operation::FetchResponse.as_str(), "fetch_response");
        assert!(Operation::Chat.is_inference() && !Operation::FetchResponse.is_inference());
        assert!(matches!(
            method_name(&http::Method::POST),
            Cow::Borrowed("POST")
        ));
        assert_eq!(method_name(&http::Method::PATCH), "PATCH");
    }

    #[test]
    fn the_provider_comes_from_the_host() {
        let rows = [
            ("api.openai.com", "openai"),
            ("eu.api.openai.com", "openai"),
            ("my-resource.openai.azure.com", "azure.ai.openai"),
            ("my-resource.cognitiveservices.azure.com", "azure.ai.openai"),
            ("models.inference.ai.azure.com", "azure.ai.inference"),
            ("api.groq.com", "groq"),
            ("api.deepseek.com", "deepseek"),
            ("openrouter.ai", "openrouter"),
            ("API.Anthropic.com", "anthropic"),
            ("api.mistral.ai", "mistral_ai"),
            ("api.x.ai", "x_ai"),
            ("generativelanguage.googleapis.com", "gcp.gemini"),
            ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
            ("aiplatform.googleapis.com", "gcp.vertex_ai"),
            ("api.perplexity.ai", "perplexity"),
            ("api.cohere.ai", "cohere"),
            ("api.moonshot.ai", "moonshot_ai"),
            ("bedrock-runtime.us-east-1.amazonaws.com", "aws.bedrock"),
            ("bedrock-mantle.us-east-1.api.aws", "aws.bedrock"),
            ("us-south.ml.cloud.ibm.com", "ibm.watsonx.ai"),
            ("api.cometapi.com", "cometapi"),
            ("cometapi.com", "cometapi"),
            ("api.openai.com.", "openai"),
            // Anything else speaks the OpenAI API: its flavour.
            ("127.0.0.1", "openai"),
            ("llm.internal.example", "openai"),
            ("[::1]", "openai"),
            // A label boundary, not a suffix: these are not the providers'.
            ("evilapi.openai.com", "openai"),
            ("notopenrouter.ai", "openai"),
            ("api.groq.com.evil.example", "openai"),
            ("s3.amazonaws.com", "openai"),
            ("storage.googleapis.com", "openai"),
        ];
        for (host, want) in rows {
            assert_eq!(provider_for_host(Some(host)), want, "{host}");
        }
        assert_eq!(provider_for_host(None), "openai");
        assert_eq!(provider_for_host(Some("évil.example")), "openai");
    }

    /// A Chat Completion with OpenAI's recorded usage shape, tier and fingerprint.
    fn chat_with_details() -> ContractVerdict {
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-5","service_tier":"default","system_fingerprint":"fp_d0469e1700","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0,"cache_write_tokens":64},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#;
        check_body(
            ApiSurface::ChatCompletions,
            StatusCode::OK,
            Some("application/json"),
            body.as_bytes(),
            Mode::Compat,
        )
    }

    #[test]
    fn cached_and_reasoning_tokens_by_each_conventions_name() {
        let v = chat_with_details();
        let openai = Flavor {
            openai: true,
            latest: false,
        };
        let mut kv = Vec::new();
        verdict_attributes(&v, false, true, openai, &mut kv);
        for (name, want) in [
            (attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 1920),
            (attr::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 64),
            (attr::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, 192),
        ] {
            assert_eq!(find(&kv, name), Some(&Value::I64(want)), "{name}");
        }
        assert_eq!(find(&kv, attr::GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS), None);
        assert_eq!(
            find(&kv, attr::OPENAI_RESPONSE_SERVICE_TIER)
                .map(Value::as_str)
                .as_deref(),
            Some("default")
        );
        assert_eq!(
            find(&kv, attr::OPENAI_RESPONSE_SYSTEM_FINGERPRINT)
                .map(Value::as_str)
                .as_deref(),
            Some("fp_d0469e1700")
        );

        let mut kv = Vec::new();
        let latest = Flavor {
            openai: false,
            latest: true,
        };
        verdict_attributes(&v, false, true, latest, &mut kv);
        assert_eq!(
            find(&kv, attr::GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS),
            Some(&Value::I64(64))
        );
        assert_eq!(
            find(&kv, attr::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
            None
        );
        // Not `openai`: none of its attributes.
        assert!(kv.iter().all(|k| !k.key.as_str().starts_with("openai.")));

        // `fetch_response`: no usage at all.
        let mut kv = Vec::new();
        verdict_attributes(&v, false, false, openai, &mut kv);
        assert!(
            kv.iter()
                .all(|k| !k.key.as_str().starts_with("gen_ai.usage."))
        );
    }

    #[test]
    fn request_parameters_become_the_conventions_attributes() {
        let p = RequestParams::of(
            br#"{"model":"gpt-5","messages":[{"role":"user","content":"SECRET"}],"stream":true,"max_completion_tokens":512,"max_tokens":9,"temperature":0.2,"top_p":0.9,"frequency_penalty":0.5,"presence_penalty":-0.5,"stop":["END","STOP"],"seed":42,"n":2,"reasoning_effort":"low","response_format":{"type":"json_schema","json_schema":{}},"service_tier":"flex"}"#,
        );
        let mut kv = Vec::new();
        request_attributes(
            &p,
            Flavor {
                openai: true,
                latest: false,
            },
            &mut kv,
        );
        let text: Vec<String> = kv
            .iter()
            .map(|k| format!("{}={}", k.key, k.value))
            .collect();
        for want in [
            "gen_ai.request.stream=true",
            "gen_ai.request.max_tokens=512",
            "gen_ai.request.temperature=0.2",
            "gen_ai.request.top_p=0.9",
            "gen_ai.request.frequency_penalty=0.5",
            "gen_ai.request.presence_penalty=-0.5",
            "gen_ai.request.stop_sequences=[\"END\",\"STOP\"]",
            "gen_ai.request.seed=42",
            "gen_ai.request.choice.count=2",
            "gen_ai.request.reasoning.level=low",
            "gen_ai.output.type=json",
            "openai.request.service_tier=flex",
        ] {
            assert!(text.iter().any(|t| t == want), "{want} in {text:?}");
        }
        assert!(!text.iter().any(|t| t.contains("SECRET")));
        // Another provider: no `openai.*`; a single choice: no count.
        let p = RequestParams::of(br#"{"n":1,"service_tier":"flex","stream":false}"#);
        let mut kv = Vec::new();
        request_attributes(&p, Flavor::default(), &mut kv);
        let keys: Vec<&str> = kv.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, [attr::GEN_AI_REQUEST_STREAM]);
    }

    #[test]
    fn output_messages_are_the_conventions_json() {
        let v = chat_with_details();
        let json: serde_json::Value =
            serde_json::from_str(&output_messages("héllo…", &v, false, Flavor::default())).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "héllo…"}], "finish_reason": "stop"}])
        );
        let latest = Flavor {
            openai: false,
            latest: true,
        };
        let json: serde_json::Value =
            serde_json::from_str(&output_messages("", &v, false, latest)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"role": "assistant", "parts": []}])
        );
    }
}
