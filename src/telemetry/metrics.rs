//! The instruments: the GenAI semantic conventions' histograms and this crate's counters.

use std::borrow::Cow;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::{KeyValue, StringValue};
use tokio::time::Instant;

use super::attributes::Operation;

use crate::contract::ContractVerdict;
use crate::evidence::CallLog;
use crate::evidence::Evidence;
use crate::evidence::{ParseCheck, attr};

/// Bucket boundaries the GenAI conventions give for the duration, time-to-first-chunk and
/// time-per-output-chunk histograms, by either name (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Bucket boundaries the GenAI conventions give for `gen_ai.client.token.usage` and
/// `gen_ai.client.inference.operation.{input,output}_tokens`.
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

use crate::evidence::metric as name;

/// Which GenAI conventions' names the metrics (and the few span attributes that were renamed)
/// use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Conventions {
    /// The last release, v1.41: what collectors and dashboards expect today.
    #[default]
    V1_41,
    /// The GenAI repository's current names (`gen_ai_latest_experimental`).
    Latest,
}

impl Conventions {
    /// From `OTEL_SEMCONV_STABILITY_OPT_IN`.
    pub(crate) fn from_env() -> Self {
        std::env::var(super::OTEL_SEMCONV_STABILITY_OPT_IN)
            .map_or(Self::V1_41, |v| Self::from_opt_in(&v))
    }

    /// From the value of `OTEL_SEMCONV_STABILITY_OPT_IN`: a comma-separated list.
    pub(crate) fn from_opt_in(value: &str) -> Self {
        if value
            .split(',')
            .any(|v| v.trim() == super::GEN_AI_LATEST_EXPERIMENTAL)
        {
            Self::Latest
        } else {
            Self::V1_41
        }
    }
}

/// The token instruments of one mode.
#[derive(Clone)]
enum Tokens {
    V1_41(Histogram<u64>),
    Latest {
        input: Counter<u64>,
        output: Counter<u64>,
        cache_read: Counter<u64>,
        cache_write: Counter<u64>,
        reasoning: Counter<u64>,
        per_call_input: Histogram<u64>,
        per_call_output: Histogram<u64>,
    },
}

#[derive(Clone)]
pub(crate) struct Instruments {
    /// `gen_ai.client.operation.duration`: every GenAI call (v1.41), `fetch_response` (latest).
    duration: Histogram<f64>,
    /// `gen_ai.client.inference.duration` (latest only).
    inference_duration: Option<Histogram<f64>>,
    tokens: Tokens,
    ttfc: Histogram<f64>,
    tpoc: Histogram<f64>,
    pub(crate) calls: Counter<u64>,
    pub(crate) retries: Counter<u64>,
    pub(crate) exhausted: Counter<u64>,
    pub(crate) walls: Counter<u64>,
    pub(crate) violations: Counter<u64>,
    pub(crate) lint: Counter<u64>,
    pub(crate) hops: Counter<u64>,
}

fn seconds(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BUCKETS.to_vec())
        .build()
}

fn token_histogram(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<u64> {
    meter
        .u64_histogram(name)
        .with_unit("{token}")
        .with_description(description)
        .with_boundaries(TOKEN_BUCKETS.to_vec())
        .build()
}

fn token_counter(meter: &Meter, name: &'static str, description: &'static str) -> Counter<u64> {
    meter
        .u64_counter(name)
        .with_unit("{token}")
        .with_description(description)
        .build()
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, conventions: Conventions) -> Self {
        const DURATION: &str = "GenAI operation duration.";
        const TTFC: &str =
            "Time to receive the first chunk, from when the client issues the request.";
        const TPOC: &str = "Time per output chunk after the first (a stream's mean).";
        let latest = conventions == Conventions::Latest;
        let (ttfc, tpoc) = if latest {
            (
                name::INFERENCE_TIME_TO_FIRST_CHUNK,
                name::INFERENCE_TIME_PER_OUTPUT_CHUNK,
            )
        } else {
            (name::TIME_TO_FIRST_CHUNK, name::TIME_PER_OUTPUT_CHUNK)
        };
        let tokens = if latest {
            Tokens::Latest {
                input: token_counter(
                    meter,
                    name::INFERENCE_USAGE_INPUT_TOKENS,
                    "Input tokens used, cached tokens included.",
                ),
                output: token_counter(
                    meter,
                    name::INFERENCE_USAGE_OUTPUT_TOKENS,
                    "Output tokens used, reasoning tokens included.",
                ),
                cache_read: token_counter(
                    meter,
                    name::INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS,
                    "Input tokens served from the provider's cache.",
                ),
                cache_write: token_counter(
                    meter,
                    name::INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS,
                    "Input tokens written to the provider's cache.",
                ),
                reasoning: token_counter(
                    meter,
                    name::INFERENCE_USAGE_REASONING_OUTPUT_TOKENS,
                    "Output tokens used for reasoning.",
                ),
                per_call_input: token_histogram(
                    meter,
                    name::INFERENCE_OPERATION_INPUT_TOKENS,
                    "Input tokens per inference operation.",
                ),
                per_call_output: token_histogram(
                    meter,
                    name::INFERENCE_OPERATION_OUTPUT_TOKENS,
                    "Output tokens per inference operation.",
                ),
            }
        } else {
            Tokens::V1_41(token_histogram(
                meter,
                name::TOKEN_USAGE,
                "Number of input and output tokens used.",
            ))
        };
        Self {
            duration: seconds(meter, name::OPERATION_DURATION, DURATION),
            inference_duration: latest.then(|| seconds(meter, name::INFERENCE_DURATION, DURATION)),
            tokens,
            ttfc: seconds(meter, ttfc, TTFC),
            tpoc: seconds(meter, tpoc, TPOC),
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
                .with_description(
                    "Retries made by the retry layer, on every upstream a call went to.",
                )
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
    operation: Operation,
    provider: &StringValue,
    model: Option<&StringValue>,
    server: (Option<&StringValue>, Option<u16>),
    extra: usize,
) -> Vec<KeyValue> {
    // Sized for the callers' additions; the strings are shared, not copied.
    let mut kv = Vec::with_capacity(5 + extra);
    kv.push(KeyValue::new(
        attr::GEN_AI_OPERATION_NAME,
        operation.as_str(),
    ));
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

/// The conventions' time per output chunk for one stream: from its first chunk to its last,
/// divided by the chunks after the first. Nothing for fewer than two chunks.
pub(crate) fn time_per_output_chunk(first: Instant, last: Instant, chunks: u64) -> Option<f64> {
    let after_first = chunks.checked_sub(1).filter(|&n| n > 0)?;
    // Chunk counts stay far below 2^52: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let after_first = after_first as f64;
    Some(last.saturating_duration_since(first).as_secs_f64() / after_first)
}

/// What one finished call gives the metrics.
pub(super) struct CallRecord<'a> {
    /// `None`: no GenAI operation, so only the evidence counters.
    pub(super) operation: Option<Operation>,
    pub(super) provider: &'a StringValue,
    pub(super) openai: bool,
    pub(super) model: Option<&'a StringValue>,
    pub(super) server: (Option<&'a StringValue>, Option<u16>),
    pub(super) evidence: &'a Evidence,
    pub(super) verdict: Option<&'a ContractVerdict>,
    /// Every leg of the call, with its attempts, and the failover record.
    pub(super) log: &'a CallLog,
    /// The host the caller addressed, when the call ended elsewhere.
    pub(super) caller_host: Option<&'a str>,
    pub(super) error: Option<Cow<'static, str>>,
    pub(super) ttfc: Option<f64>,
    pub(super) tpoc: Option<f64>,
    pub(super) duration: f64,
}

/// The common labels with a left leg's own upstream and host in place of the answering one's.
fn leg_labels(
    common: &[KeyValue],
    leg: &crate::evidence::Leg,
    caller_host: Option<&str>,
) -> Vec<KeyValue> {
    // A leg that kept the caller's URL went to the host the caller addressed.
    let host = leg.url.as_ref().map_or(caller_host, |u| u.host_str());
    common
        .iter()
        .map(|kv| match kv.key.as_str() {
            attr::SERVER_ADDRESS => match host {
                Some(host) => KeyValue::new(attr::SERVER_ADDRESS, host.to_owned()),
                None => kv.clone(),
            },
            attr::FAILOVER_UPSTREAM => match &leg.upstream {
                Some(name) => {
                    KeyValue::new(attr::FAILOVER_UPSTREAM, StringValue::from(name.clone()))
                }
                None => kv.clone(),
            },
            _ => kv.clone(),
        })
        .collect()
}

/// Records one call in every instrument it concerns.
pub(super) fn record_call(m: &Instruments, call: &CallRecord<'_>) {
    if let Some(operation) = call.operation {
        record_genai(m, call, operation);
    }
    record_evidence(m, call);
}

/// The GenAI instruments.
fn record_genai(m: &Instruments, call: &CallRecord<'_>, operation: Operation) {
    let facts = call.verdict.map(|v| &v.facts);
    // One vector, extended and shrunk in place, for every GenAI instrument.
    let mut kv = genai_attributes(operation, call.provider, call.model, call.server, 6);
    if let Some(model) = facts.and_then(|f| f.response_model.as_deref()) {
        kv.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_MODEL,
            super::attributes::truncated(model),
        ));
    }
    // The surface first: every GenAI instrument carries it, so each dashboard panel can filter
    // on it.
    kv.push(KeyValue::new(
        attr::API_SURFACE,
        call.evidence.api_surface.as_str(),
    ));
    if operation.is_inference() {
        if let Some(ttfc) = call.ttfc {
            m.ttfc.record(ttfc, &kv);
        }
        if let Some(tpoc) = call.tpoc {
            m.tpoc.record(tpoc, &kv);
        }
    }
    // The OpenAI refinements of the token and duration instruments.
    if call.openai
        && let Some(tier) = facts.and_then(|f| f.service_tier.as_deref())
    {
        kv.push(KeyValue::new(
            attr::OPENAI_RESPONSE_SERVICE_TIER,
            super::attributes::truncated(tier),
        ));
    }
    if operation.is_inference() {
        record_tokens(m, call, &mut kv);
    }
    if let Some(e) = &call.error {
        kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
    }
    let duration = match &m.inference_duration {
        Some(inference) if operation.is_inference() => inference,
        _ => &m.duration,
    };
    duration.record(call.duration, &kv);
}

/// Token usage: by `gen_ai.token.type` (v1.41), or the usage counters and per-call histograms
/// (latest). `kv` holds the GenAI attributes and is left as it was found.
fn record_tokens(m: &Instruments, call: &CallRecord<'_>, kv: &mut Vec<KeyValue>) {
    let usage = call.verdict.and_then(|v| v.facts.usage);
    match &m.tokens {
        Tokens::V1_41(tokens) => {
            let Some(usage) = usage else { return };
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                if let Some(n) = n {
                    kv.push(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, kind));
                    tokens.record(n, kv);
                    kv.pop();
                }
            }
        }
        Tokens::Latest {
            input,
            output,
            cache_read,
            cache_write,
            reasoning,
            per_call_input,
            per_call_output,
        } => {
            // The conventions: every inference operation, failed ones too, 0 without usage.
            let usage = usage.unwrap_or_default();
            kv.push(KeyValue::new(attr::GEN_AI_TOKEN_MODALITY, "unknown"));
            for (counter, n) in [
                (input, usage.input_tokens),
                (output, usage.output_tokens),
                (cache_read, usage.cache_read_input_tokens),
                (cache_write, usage.cache_write_input_tokens),
                (reasoning, usage.reasoning_output_tokens),
            ] {
                counter.add(n.unwrap_or(0), kv);
            }
            kv.pop();
            let at = kv.len();
            if let Some(e) = &call.error {
                kv.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
            }
            per_call_input.record(usage.input_tokens.unwrap_or(0), kv);
            per_call_output.record(usage.output_tokens.unwrap_or(0), kv);
            kv.truncate(at);
        }
    }
}

/// The evidence counters, with their common attributes: `api_surface`, `server.address`,
/// `gen_ai.provider.name`, and `failover.upstream` when the failover layer ran.
fn record_evidence(m: &Instruments, call: &CallRecord<'_>) {
    let evidence = call.evidence;
    let mut kv = Vec::with_capacity(8);
    kv.push(KeyValue::new(
        attr::API_SURFACE,
        evidence.api_surface.as_str(),
    ));
    if let Some(address) = call.server.0 {
        kv.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
    }
    kv.push(KeyValue::new(
        attr::GEN_AI_PROVIDER_NAME,
        call.provider.clone(),
    ));
    if let Some(upstream) = &call.evidence.upstream {
        kv.push(KeyValue::new(
            attr::FAILOVER_UPSTREAM,
            StringValue::from(upstream.clone()),
        ));
    }
    let common = kv.len();
    // A leg the call left (an upstream before a hop) is counted under its own upstream and
    // host, not the answering one's: its labels, made only when there is such a leg.
    let left: Vec<(usize, Vec<KeyValue>)> = call
        .log
        .legs
        .iter()
        .enumerate()
        .take(call.log.legs.len().saturating_sub(1))
        .filter(|(_, leg)| leg.retry.is_some())
        .map(|(i, leg)| (i, leg_labels(&kv, leg, call.caller_host)))
        .collect();
    // Each counter: the common attributes and its own, then back to the common ones.
    let mut add = |counter: &Counter<u64>, n: u64, own: &[KeyValue]| {
        kv.extend_from_slice(own);
        counter.add(n, &kv);
        kv.truncate(common);
    };
    add(
        &m.calls,
        1,
        &[
            KeyValue::new(attr::STATUS_CLASS, evidence.status_class.as_str()),
            KeyValue::new(
                attr::PARSE_CHECK,
                evidence.parse_check.unwrap_or(ParseCheck::Skipped).as_str(),
            ),
            KeyValue::new(attr::FALLBACK_DECISION, evidence.fallback_decision.as_str()),
        ],
    );
    let surface = KeyValue::new(attr::API_SURFACE, evidence.api_surface.as_str());
    if let Some(failover) = &call.log.failover {
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
    // Every leg's retries: those made on an upstream the call then left count too, under
    // that upstream.
    for (i, leg) in call.log.legs.iter().enumerate() {
        let Some(retry) = &leg.retry else { continue };
        let own = left.iter().find(|(l, _)| *l == i).map(|(_, kv)| kv);
        let mut count = |counter: &Counter<u64>, label: KeyValue| match own {
            Some(labels) => {
                let mut labels = labels.clone();
                labels.push(label);
                counter.add(1, &labels);
            }
            None => add(counter, 1, &[label]),
        };
        for attempt in &retry.attempts {
            if let Some((_, reason)) = attempt.retry_after {
                count(
                    &m.retries,
                    KeyValue::new(attr::RETRY_WAIT_REASON, reason.as_str()),
                );
            }
        }
        if let Some(stop) = retry.stop_reason().filter(|s| s.is_exhausted()) {
            count(
                &m.exhausted,
                KeyValue::new(attr::RETRY_STOP_REASON, stop.as_str()),
            );
        }
    }
    if let Some(waf) = &evidence.waf {
        add(
            &m.walls,
            1,
            &[
                KeyValue::new(attr::WAF_VENDOR, waf.vendor.as_str()),
                KeyValue::new(attr::WAF_KIND, waf.kind.as_str()),
            ],
        );
    }
    if let Some(v) = evidence.violation {
        add(
            &m.violations,
            1,
            &[KeyValue::new(attr::CONTRACT_VIOLATION, v.as_str())],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_opt_in_is_one_entry_of_a_comma_separated_list() {
        for (value, want) in [
            ("gen_ai_latest_experimental", Conventions::Latest),
            ("http, gen_ai_latest_experimental", Conventions::Latest),
            (
                "database/dup,gen_ai_latest_experimental ",
                Conventions::Latest,
            ),
            ("", Conventions::V1_41),
            ("http", Conventions::V1_41),
            ("gen_ai_latest_experimental_not", Conventions::V1_41),
        ] {
            assert_eq!(Conventions::from_opt_in(value), want, "{value:?}");
        }
    }

    #[test]
    fn time_per_output_chunk_is_the_mean_gap_after_the_first_chunk() {
        let first = Instant::now();
        let last = first + Duration::from_millis(900);
        assert_eq!(time_per_output_chunk(first, last, 4), Some(0.3));
        assert_eq!(time_per_output_chunk(first, last, 1), None);
        assert_eq!(time_per_output_chunk(first, last, 0), None);
        // A clock that went backwards gives 0, not a negative time.
        assert_eq!(time_per_output_chunk(last, first, 2), Some(0.0));
    }
}
