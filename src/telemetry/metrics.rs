//! The instruments: the GenAI semantic conventions' histograms and this crate's counters.

use std::borrow::Cow;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::{KeyValue, StringValue};

use crate::contract::ContractVerdict;
use crate::evidence::{ParseCheck, attr};
use crate::guard::Evidence;
use crate::retry::RetryRecord;

/// Bucket boundaries the GenAI conventions give for `gen_ai.client.operation.duration` and
/// `gen_ai.client.operation.time_to_first_chunk` (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Bucket boundaries the GenAI conventions give for `gen_ai.client.token.usage`.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Metric names, in one place. In Prometheus (through the OpenTelemetry Collector) dots become
/// underscores, units are appended to histograms (`_seconds`) and counters end in `_total`.
pub mod name {
    /// Histogram, `s`: the call, from the request to the last byte (of the stream, too).
    pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
    /// Histogram, `{token}`, with `gen_ai.token.type` = `input` | `output`.
    pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
    /// Histogram, `s`: streaming calls only, from the request to the first body bytes.
    pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
    /// Counter, `{call}`: by `api_surface`, `status_class`, `parse_check`, `fallback_decision`.
    pub const CALLS: &str = "llm_guard.calls";
    /// Counter, `{retry}`: retries made, by `api_surface` and `retry.wait_reason`.
    pub const RETRIES: &str = "llm_guard.retries";
    /// Counter, `{call}`: calls whose retries ran out, by `api_surface` and `retry.stop_reason`
    /// (`attempts_exhausted`, `deadline`, `budget_exhausted`, `retry_after_over_cap`).
    pub const RETRIES_EXHAUSTED: &str = "llm_guard.retries.exhausted";
    /// Counter, `{wall}`: WAF and bot walls, by `waf.vendor`, `waf.kind`, `api_surface`.
    pub const WAF_WALLS: &str = "llm_guard.waf.walls";
    /// Counter, `{violation}`: hard contract violations, by `api_surface`, `contract.violation`.
    pub const CONTRACT_VIOLATIONS: &str = "llm_guard.contract.violations";
    /// Counter, `{finding}`: request-lint and cross-check findings, by `lint.rule`,
    /// `lint.family`, `lint.phase` (`request` | `response`).
    pub const LINT_FINDINGS: &str = "llm_guard.lint.findings";
    /// Counter, `{hop}`: moves from one upstream to the next, by `failover.from`,
    /// `failover.to`, `failover.reason`, `api_surface` (upstream names are the configured
    /// ones: bounded).
    pub const FAILOVER_HOPS: &str = "llm_guard.failover.hops";
    /// Gauge, `{breaker}`: 1 for each upstream's current breaker state, 0 for the others, by
    /// `failover.upstream` and `breaker.state` (`closed`, `open`, `half_open`).
    pub const BREAKER_STATE: &str = "llm_guard.breaker.state";
    /// Counter, `{transition}`: breaker state changes, by `failover.upstream`.
    pub const BREAKER_TRANSITIONS: &str = "llm_guard.breaker.transitions";
}

#[derive(Clone)]
pub(crate) struct Instruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) tokens: Histogram<u64>,
    pub(crate) ttfc: Histogram<f64>,
    pub(crate) calls: Counter<u64>,
    pub(crate) retries: Counter<u64>,
    pub(crate) exhausted: Counter<u64>,
    pub(crate) walls: Counter<u64>,
    pub(crate) violations: Counter<u64>,
    pub(crate) lint: Counter<u64>,
    pub(crate) hops: Counter<u64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram(name::OPERATION_DURATION)
                .with_unit("s")
                .with_description("GenAI operation duration.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            tokens: meter
                .u64_histogram(name::TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            ttfc: meter
                .f64_histogram(name::TIME_TO_FIRST_CHUNK)
                .with_unit("s")
                .with_description(
                    "Time to receive the first chunk, from when the client issues the request.",
                )
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            calls: meter
                .u64_counter(name::CALLS)
                .with_unit("{call}")
                .with_description(
                    "LLM API calls by surface, status class, contract check and decision.",
                )
                .build(),
            retries: meter
                .u64_counter(name::RETRIES)
                .with_unit("{retry}")
                .with_description("Retries made by the retry layer.")
                .build(),
            exhausted: meter
                .u64_counter(name::RETRIES_EXHAUSTED)
                .with_unit("{call}")
                .with_description(
                    "Calls whose retries ran out (attempts, deadline, budget, server wait).",
                )
                .build(),
            walls: meter
                .u64_counter(name::WAF_WALLS)
                .with_unit("{wall}")
                .with_description("WAF and bot walls that answered instead of the API.")
                .build(),
            violations: meter
                .u64_counter(name::CONTRACT_VIOLATIONS)
                .with_unit("{violation}")
                .with_description("Hard response-contract violations.")
                .build(),
            lint: meter
                .u64_counter(name::LINT_FINDINGS)
                .with_unit("{finding}")
                .with_description("Request-lint and request/response cross-check findings.")
                .build(),
            hops: meter
                .u64_counter(name::FAILOVER_HOPS)
                .with_unit("{hop}")
                .with_description("Moves from one upstream to the next.")
                .build(),
        }
    }
}

/// Attributes every GenAI metric carries.
pub(crate) fn genai_attributes(
    operation: &'static str,
    provider: &StringValue,
    model: Option<&StringValue>,
    server: (Option<&StringValue>, Option<u16>),
    extra: usize,
) -> Vec<KeyValue> {
    // Sized for the callers' additions; the strings are shared, not copied.
    let mut kv = Vec::with_capacity(5 + extra);
    kv.push(KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation));
    kv.push(KeyValue::new(attr::GEN_AI_PROVIDER_NAME, provider.clone()));
    if let Some(model) = model {
        kv.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()));
    }
    if let Some(address) = server.0 {
        kv.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
        if let Some(port) = server.1 {
            kv.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
        }
    }
    kv
}

/// What one finished call gives the metrics.
pub(super) struct CallRecord<'a> {
    pub(super) operation: &'static str,
    pub(super) provider: &'a StringValue,
    pub(super) model: Option<&'a StringValue>,
    pub(super) server: (Option<&'a StringValue>, Option<u16>),
    pub(super) evidence: &'a Evidence,
    pub(super) verdict: Option<&'a ContractVerdict>,
    pub(super) retry: Option<&'a RetryRecord>,
    pub(super) error: Option<Cow<'static, str>>,
    pub(super) ttfc: Option<f64>,
    pub(super) duration: f64,
    pub(super) failover: Option<&'a crate::failover::FailoverRecord>,
}

/// Records one call in every instrument it concerns.
pub(super) fn record_call(m: &Instruments, call: &CallRecord<'_>) {
    let evidence = call.evidence;
    // One vector, extended and shrunk in place, for the three GenAI instruments.
    let mut kv = genai_attributes(call.operation, call.provider, call.model, call.server, 4);
    if let Some(ttfc) = call.ttfc {
        m.ttfc.record(ttfc, &kv);
    }
    if let Some(usage) = call.verdict.and_then(|v| v.facts.usage) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            if let Some(n) = n {
                kv.push(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind));
                m.tokens.record(n, &kv);
                kv.pop();
            }
        }
    }
    if let Some(model) = call.verdict.and_then(|v| v.facts.response_model.as_deref()) {
        kv.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_MODEL,
            super::attributes::truncated(model),
        ));
    }
    if let Some(e) = &call.error {
        kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
    }
    let surface = KeyValue::new(attr::API_SURFACE, evidence.api_surface.as_str());
    kv.push(surface.clone());
    m.duration.record(call.duration, &kv);
    m.calls.add(
        1,
        &[
            surface.clone(),
            KeyValue::new(attr::STATUS_CLASS, evidence.status_class.as_str()),
            KeyValue::new(
                attr::PARSE_CHECK,
                evidence.parse_check.unwrap_or(ParseCheck::Skipped).as_str(),
            ),
            KeyValue::new(attr::FALLBACK_DECISION, evidence.fallback_decision.as_str()),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, call.provider.clone()),
        ],
    );
    if let Some(failover) = call.failover {
        for hop in &failover.hops {
            m.hops.add(
                1,
                &[
                    surface.clone(),
                    KeyValue::new(attr::FAILOVER_FROM, StringValue::from(hop.from.clone())),
                    KeyValue::new(attr::FAILOVER_TO, StringValue::from(hop.to.clone())),
                    KeyValue::new(attr::FAILOVER_REASON, hop.reason.as_str()),
                ],
            );
        }
    }
    if let Some(retry) = call.retry {
        for attempt in &retry.attempts {
            if let Some((_, reason)) = attempt.retry_after {
                m.retries.add(
                    1,
                    &[
                        surface.clone(),
                        KeyValue::new(attr::RETRY_WAIT_REASON, reason.as_str()),
                    ],
                );
            }
        }
        if let Some(stop) = retry.stop_reason().filter(|s| s.is_exhausted()) {
            m.exhausted.add(
                1,
                &[
                    surface.clone(),
                    KeyValue::new(attr::RETRY_STOP_REASON, stop.as_str()),
                ],
            );
        }
    }
    if let Some(waf) = &evidence.waf {
        m.walls.add(
            1,
            &[
                surface.clone(),
                KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()),
                KeyValue::new(attr::WAF_KIND, waf.kind.as_str()),
            ],
        );
    }
    if let Some(v) = evidence.violation {
        m.violations.add(
            1,
            &[surface, KeyValue::new(attr::CONTRACT_VIOLATION, v.as_str())],
        );
    }
}
