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

/// `gen_ai.operation.name` for a surface.
pub(super) fn operation(surface: ApiSurface) -> &'static str {
    match surface {
        ApiSurface::ChatCompletions | ApiSurface::Responses => "chat",
        ApiSurface::Other => "http",
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
    super::request::truncate(s, MAX_ID_CHARS).into_owned()
}

/// The contract verdict's attributes: violation, warnings, skip reason, and what the body said
/// about itself (model, id, finish reasons, usage). A stream that failed has `error` among its
/// finish reasons: it ended early, whatever reasons came before.
pub(super) fn verdict_attributes(v: &ContractVerdict, streamed: bool, kv: &mut Vec<KeyValue>) {
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
    let ended_early = streamed && v.parse_check == crate::evidence::ParseCheck::Fail;
    if !facts.finish_reasons.is_empty() || ended_early {
        let mut reasons: Vec<StringValue> = facts
            .finish_reasons
            .iter()
            .take(16)
            .map(|r| StringValue::from(truncated(r)))
            .collect();
        if ended_early {
            reasons.push(StringValue::from("error"));
        }
        kv.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(reasons)),
        ));
    }
    if let Some(usage) = facts.usage {
        if let Some(n) = usage.input_tokens.and_then(|n| i64::try_from(n).ok()) {
            kv.push(KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, n));
        }
        if let Some(n) = usage.output_tokens.and_then(|n| i64::try_from(n).ok()) {
            kv.push(KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, n));
        }
    }
}

/// The wall's vendor, kind and reference.
pub(super) fn waf_attributes(waf: &WafVerdict, kv: &mut Vec<KeyValue>) {
    kv.push(KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()));
    kv.push(KeyValue::new(attr::WAF_KIND, waf.kind.as_str()));
    if let Some(reference) = &waf.reference {
        kv.push(KeyValue::new(attr::WAF_REFERENCE, reference.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Mode, check_body};
    use crate::evidence::{WafKind, WafVendor};
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
        verdict_attributes(&v, false, &mut kv);
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
        verdict_attributes(&v, true, &mut kv);
        assert_eq!(
            find(&kv, attr::GEN_AI_RESPONSE_FINISH_REASONS).map(ToString::to_string),
            Some("[\"error\"]".to_owned())
        );
        let mut kv = Vec::new();
        verdict_attributes(&v, false, &mut kv);
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
        assert_eq!(operation(ApiSurface::Responses), "chat");
        assert_eq!(operation(ApiSurface::Other), "http");
        assert!(matches!(
            method_name(&http::Method::POST),
            Cow::Borrowed("POST")
        ));
        assert_eq!(method_name(&http::Method::PATCH), "PATCH");
    }
}
