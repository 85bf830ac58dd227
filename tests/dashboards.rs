//! The observability stack against what the crate emits (DESIGN §8).
//!
//! Every PromQL expression in `dashboards/` (panel targets, data links, template variables) must
//! parse and name only the Prometheus series and labels the crate's metrics become after the
//! OpenTelemetry Collector's `prometheus` exporter; every TraceQL query must name only span and
//! resource attributes the crate records. `docker-compose.yml` and the provisioning files must hold
//! together: pinned images, the collector's exporter scraped by Prometheus, Grafana loading
//! `dashboards/`, and data source uids that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

// ---------------------------------------------------------------------------------------------
// What the crate emits. These lists mirror the crate's `telemetry::metric` names (metric names,
// units, attributes) and `evidence::attr` constants (span attributes); when either changes, change
// these too, and the dashboards with them.
// ---------------------------------------------------------------------------------------------

/// Labels the collector's `prometheus` exporter adds to every series from the resource
/// (`service.name` -> `job`, `service.instance.id` -> `instance`).
const RESOURCE_LABELS: &[&str] = &["job", "instance"];

/// The Grafana dashboard schema version of the pinned Grafana (docker-compose.yml).
const GRAFANA_SCHEMA_VERSION: u64 = 42;

/// Data source uids the provisioning creates and the dashboards may reference.
const PROMETHEUS_UID: &str = "prometheus";
const TEMPO_UID: &str = "tempo";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Exposed as `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`.
    Histogram,
    /// Exposed as `<name>` (which already ends in `_total`).
    Counter,
    /// Exposed as `<name>`.
    Gauge,
}

/// One of the crate's instruments, as Prometheus sees it (`translation_strategy:
/// UnderscoreEscapingWithSuffixes`: dots to underscores, unit suffix `_seconds` for `s`, none for
/// annotations like `{token}`, `_total` on counters).
struct Metric {
    otel_name: &'static str,
    prometheus_name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

/// The labels every GenAI instrument carries (DESIGN §8; `telemetry::metric` docs).
macro_rules! genai_labels {
    ($($extra:literal),* $(,)?) => {
        &[
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "server_address",
            "server_port",
            $($extra),*
        ]
    };
}

/// The labels every evidence counter carries, then its own.
macro_rules! evidence_labels {
    ($($own:literal),* $(,)?) => {
        &[
            "api_surface",
            "server_address",
            "gen_ai_provider_name",
            "failover_upstream",
            $($own),*
        ]
    };
}

const METRICS: &[Metric] = &[
    // The default conventions (v1.41).
    Metric {
        otel_name: "gen_ai.client.operation.duration",
        prometheus_name: "gen_ai_client_operation_duration_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!("openai_response_service_tier", "error_type", "api_surface"),
    },
    Metric {
        otel_name: "gen_ai.client.token.usage",
        prometheus_name: "gen_ai_client_token_usage",
        kind: Kind::Histogram,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_type"),
    },
    Metric {
        otel_name: "gen_ai.client.operation.time_to_first_chunk",
        prometheus_name: "gen_ai_client_operation_time_to_first_chunk_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!(),
    },
    Metric {
        otel_name: "gen_ai.client.operation.time_per_output_chunk",
        prometheus_name: "gen_ai_client_operation_time_per_output_chunk_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!(),
    },
    // The latest conventions (`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`).
    Metric {
        otel_name: "gen_ai.client.inference.duration",
        prometheus_name: "gen_ai_client_inference_duration_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!("openai_response_service_tier", "error_type", "api_surface"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.time_to_first_chunk",
        prometheus_name: "gen_ai_client_inference_time_to_first_chunk_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!(),
    },
    Metric {
        otel_name: "gen_ai.client.inference.time_per_output_chunk",
        prometheus_name: "gen_ai_client_inference_time_per_output_chunk_seconds",
        kind: Kind::Histogram,
        labels: genai_labels!(),
    },
    Metric {
        otel_name: "gen_ai.client.inference.usage.input_tokens",
        prometheus_name: "gen_ai_client_inference_usage_input_tokens_total",
        kind: Kind::Counter,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_modality"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.usage.output_tokens",
        prometheus_name: "gen_ai_client_inference_usage_output_tokens_total",
        kind: Kind::Counter,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_modality"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.usage.cache_read.input_tokens",
        prometheus_name: "gen_ai_client_inference_usage_cache_read_input_tokens_total",
        kind: Kind::Counter,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_modality"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.usage.cache_write.input_tokens",
        prometheus_name: "gen_ai_client_inference_usage_cache_write_input_tokens_total",
        kind: Kind::Counter,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_modality"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.usage.reasoning.output_tokens",
        prometheus_name: "gen_ai_client_inference_usage_reasoning_output_tokens_total",
        kind: Kind::Counter,
        labels: genai_labels!("openai_response_service_tier", "gen_ai_token_modality"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.operation.input_tokens",
        prometheus_name: "gen_ai_client_inference_operation_input_tokens",
        kind: Kind::Histogram,
        labels: genai_labels!("openai_response_service_tier", "error_type"),
    },
    Metric {
        otel_name: "gen_ai.client.inference.operation.output_tokens",
        prometheus_name: "gen_ai_client_inference_operation_output_tokens",
        kind: Kind::Histogram,
        labels: genai_labels!("openai_response_service_tier", "error_type"),
    },
    // The crate's own, in both modes.
    Metric {
        otel_name: "llm_guard.calls",
        prometheus_name: "llm_guard_calls_total",
        kind: Kind::Counter,
        labels: evidence_labels!("status_class", "parse_check", "fallback_decision"),
    },
    Metric {
        otel_name: "llm_guard.retries",
        prometheus_name: "llm_guard_retries_total",
        kind: Kind::Counter,
        labels: evidence_labels!("retry_wait_reason"),
    },
    Metric {
        otel_name: "llm_guard.retries.exhausted",
        prometheus_name: "llm_guard_retries_exhausted_total",
        kind: Kind::Counter,
        labels: evidence_labels!("retry_stop_reason"),
    },
    Metric {
        otel_name: "llm_guard.waf.walls",
        prometheus_name: "llm_guard_waf_walls_total",
        kind: Kind::Counter,
        labels: evidence_labels!("waf_vendor", "waf_kind"),
    },
    Metric {
        otel_name: "llm_guard.contract.violations",
        prometheus_name: "llm_guard_contract_violations_total",
        kind: Kind::Counter,
        labels: evidence_labels!("contract_violation"),
    },
    Metric {
        otel_name: "llm_guard.lint.findings",
        prometheus_name: "llm_guard_lint_findings_total",
        kind: Kind::Counter,
        labels: &["lint_rule", "lint_family", "lint_phase"],
    },
    Metric {
        otel_name: "llm_guard.failover.hops",
        prometheus_name: "llm_guard_failover_hops_total",
        kind: Kind::Counter,
        labels: &[
            "api_surface",
            "failover_from",
            "failover_to",
            "failover_reason",
        ],
    },
    Metric {
        otel_name: "llm_guard.breaker.state",
        prometheus_name: "llm_guard_breaker_state",
        kind: Kind::Gauge,
        labels: &["failover_upstream", "breaker_state"],
    },
    Metric {
        otel_name: "llm_guard.breaker.transitions",
        prometheus_name: "llm_guard_breaker_transitions_total",
        kind: Kind::Counter,
        labels: &["failover_upstream"],
    },
];

const API_SURFACES: &[&str] = &["chat_completions", "responses", "other"];
const STATUS_CLASSES: &[&str] = &[
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "transport_error",
    "cancelled",
];
const PARSE_CHECKS: &[&str] = &["pass", "fail", "skipped"];
const VIOLATIONS: &[&str] = &[
    "not_json",
    "html_body",
    "empty_body",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "wrong_object",
    "no_choices",
    "error_in_2xx",
    "error_in_stream",
    "response_failed",
    "response_cancelled",
    "error_shape_invalid",
    "stream_truncated",
    "stream_out_of_order",
    "event_after_terminal",
    "body_read_error",
    "body_timeout",
    "body_stalled",
];
const WAIT_REASONS: &[&str] = &["backoff", "retry_after", "retry_after_ms"];
const STOP_REASONS: &[&str] = &[
    "attempts_exhausted",
    "deadline",
    "budget_exhausted",
    "retry_after_over_cap",
];
const WAF_VENDORS: &[&str] = &[
    "cloudflare",
    "aws",
    "akamai",
    "imperva",
    "sucuri",
    "f5",
    "azure_application_gateway",
    "azure_front_door",
    "google_cloud_armor",
    "modsecurity",
    "nginx",
    "fastly",
    "vercel",
    "perimeterx",
    "barracuda",
    "netscaler",
    "radware",
    "wordfence",
    "stackpath",
    "ddos_guard",
    "anubis",
    "datadome",
    "unknown",
];
const WAF_KINDS: &[&str] = &["block", "challenge", "suspected", "rate_limit"];

/// Closed value sets of metric labels: a literal matcher on one of these must use a listed value.
const METRIC_LABEL_VALUES: &[(&str, &[&str])] = &[
    ("api_surface", API_SURFACES),
    ("status_class", STATUS_CLASSES),
    ("parse_check", PARSE_CHECKS),
    // `retry` is an attempt-span value only; the calls counter counts finished calls.
    ("fallback_decision", &["none", "fallback", "hold"]),
    ("contract_violation", VIOLATIONS),
    ("retry_wait_reason", WAIT_REASONS),
    ("retry_stop_reason", STOP_REASONS),
    ("waf_vendor", WAF_VENDORS),
    ("waf_kind", WAF_KINDS),
    ("gen_ai_token_type", &["input", "output"]),
    ("gen_ai_token_modality", &["unknown"]),
    ("gen_ai_operation_name", GENAI_OPERATIONS),
];

/// `gen_ai.operation.name` values (no value on calls that are no GenAI operation).
const GENAI_OPERATIONS: &[&str] = &["chat", "fetch_response"];

/// Span attributes on the call span (`chat {model}`) and its attempt spans (`POST`).
const SPAN_ATTRIBUTES: &[&str] = &[
    // call span
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.request.stream",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.request.frequency_penalty",
    "gen_ai.request.presence_penalty",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.seed",
    "gen_ai.request.choice.count",
    "gen_ai.request.reasoning.level",
    "gen_ai.request.previous_response.id",
    "gen_ai.conversation.id",
    "gen_ai.output.type",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.input.messages",
    "gen_ai.system_instructions",
    "gen_ai.output.messages",
    "openai.api.type",
    "openai.request.service_tier",
    "openai.response.service_tier",
    "openai.response.system_fingerprint",
    "server.address",
    "server.port",
    "http.request.method",
    "http.response.status_code",
    "error.type",
    "api_surface",
    "status_class",
    "parse_check",
    "fallback_decision",
    "retry_count",
    "retry.stop_reason",
    "contract.violation",
    "contract.warnings",
    "contract.skip_reason",
    "waf.vendor",
    "waf.kind",
    "waf.reference",
    "request_check",
    "request_check.warnings",
    "response_check",
    "response_check.warnings",
    "redirect.followed",
    "redirect.server_address",
    "failover.upstream",
    "failover.hops",
    "failover.stop_reason",
    // attempt spans, besides the shared ones above
    "http.request.resend_count",
    "retry.wait",
    "retry.wait_reason",
];

/// Resource attributes the queries may use (set by the service, e.g. `OTEL_SERVICE_NAME`).
const RESOURCE_ATTRIBUTES: &[&str] = &["service.name"];

/// Closed value sets of span attributes.
const SPAN_ATTRIBUTE_VALUES: &[(&str, &[&str])] = &[
    ("api_surface", API_SURFACES),
    ("status_class", STATUS_CLASSES),
    ("parse_check", PARSE_CHECKS),
    ("fallback_decision", &["none", "retry", "fallback", "hold"]),
    ("contract.violation", VIOLATIONS),
    ("retry.wait_reason", WAIT_REASONS),
    ("waf.vendor", WAF_VENDORS),
    ("waf.kind", WAF_KINDS),
    ("gen_ai.operation.name", GENAI_OPERATIONS),
    ("gen_ai.output.type", &["json", "text"]),
    ("openai.api.type", &["chat_completions", "responses"]),
];

// ---------------------------------------------------------------------------------------------
// PromQL checks
// ---------------------------------------------------------------------------------------------

/// Stands in for a Grafana template variable inside a string literal; values containing it are
/// not checked against the closed value sets.
const VARIABLE_PLACEHOLDER: &str = "__grafana_variable__";

/// The labels of a Prometheus series name, or `None` when the crate emits no such series.
fn series_labels(series: &str) -> Option<BTreeSet<&'static str>> {
    for metric in METRICS {
        let mut labels: BTreeSet<&'static str> = metric.labels.iter().copied().collect();
        labels.extend(RESOURCE_LABELS);
        match metric.kind {
            Kind::Counter | Kind::Gauge if series == metric.prometheus_name => {
                return Some(labels);
            }
            Kind::Histogram => {
                let Some(suffix) = series.strip_prefix(metric.prometheus_name) else {
                    continue;
                };
                match suffix {
                    "_bucket" => {
                        labels.insert("le");
                        return Some(labels);
                    }
                    "_sum" | "_count" => return Some(labels),
                    _ => {}
                }
            }
            Kind::Counter | Kind::Gauge => {}
        }
    }
    None
}

fn known_values<'a>(table: &'a [(&str, &'a [&'a str])], name: &str) -> Option<&'a [&'a str]> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Checks a literal or a plain alternation (`a|b`) against a closed value set; regexes with other
/// syntax and values holding a template variable are not checked.
fn check_value(
    table: &[(&str, &[&str])],
    name: &str,
    value: &str,
    regex: bool,
    errors: &mut Vec<String>,
) {
    let Some(allowed) = known_values(table, name) else {
        return;
    };
    if value.is_empty() || value.contains(VARIABLE_PLACEHOLDER) || value.contains('$') {
        return;
    }
    let alternatives: Vec<&str> = if regex {
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
        {
            return;
        }
        value.split('|').collect()
    } else {
        vec![value]
    };
    for alternative in alternatives {
        if !allowed.contains(&alternative) {
            errors.push(format!(
                "`{name}` never has the value `{alternative}` (the crate emits: {})",
                allowed.join(", ")
            ));
        }
    }
}

/// Walks a parsed expression, checking names, and returns the labels its result can carry.
fn check_expr(expr: &Expr, errors: &mut Vec<String>) -> BTreeSet<String> {
    match expr {
        Expr::VectorSelector(vs) => check_selector(vs, errors),
        Expr::MatrixSelector(ms) => check_selector(&ms.vs, errors),
        Expr::Aggregate(agg) => {
            let inner = check_expr(&agg.expr, errors);
            if let Some(param) = &agg.param {
                check_expr(param, errors);
            }
            match &agg.modifier {
                Some(LabelModifier::Include(by)) => {
                    for label in &by.labels {
                        if !inner.contains(label) {
                            errors.push(format!(
                                "`by ({label})`: no series under this aggregation has the label `{label}`"
                            ));
                        }
                    }
                    by.labels.iter().cloned().collect()
                }
                Some(LabelModifier::Exclude(without)) => {
                    for label in &without.labels {
                        if !inner.contains(label) {
                            errors.push(format!(
                                "`without ({label})`: no series under this aggregation has the label `{label}`"
                            ));
                        }
                    }
                    inner
                        .into_iter()
                        .filter(|l| !without.labels.contains(l))
                        .collect()
                }
                // topk / bottomk keep the inner labels; a plain sum keeps none, which this
                // over-approximates harmlessly.
                None => inner,
            }
        }
        Expr::Binary(bin) => {
            let mut labels = check_expr(&bin.lhs, errors);
            labels.extend(check_expr(&bin.rhs, errors));
            if let Some(modifier) = &bin.modifier {
                let mut named: Vec<&String> = Vec::new();
                if let Some(matching) = &modifier.matching {
                    named.extend(&matching.labels().labels);
                }
                if let Some(group) = modifier.card.labels() {
                    named.extend(&group.labels);
                }
                for label in named {
                    if !labels.contains(label) {
                        errors.push(format!(
                            "vector matching names `{label}`, which neither side has"
                        ));
                    }
                }
            }
            labels
        }
        Expr::Call(call) => check_call(call, errors),
        Expr::Paren(paren) => check_expr(&paren.expr, errors),
        Expr::Unary(unary) => check_expr(&unary.expr, errors),
        Expr::Subquery(sub) => check_expr(&sub.expr, errors),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => BTreeSet::new(),
        Expr::Extension(_) => {
            errors.push("unexpected extension expression".to_owned());
            BTreeSet::new()
        }
    }
}

fn check_call(call: &parser::Call, errors: &mut Vec<String>) -> BTreeSet<String> {
    let args: Vec<&Expr> = call.args.args.iter().map(AsRef::as_ref).collect();
    let arg_labels: Vec<BTreeSet<String>> = args.iter().map(|a| check_expr(a, errors)).collect();
    let string_arg = |i: usize| match args.get(i) {
        Some(Expr::StringLiteral(s)) => Some(s.val.clone()),
        _ => None,
    };
    match call.func.name {
        "histogram_quantile" => {
            let inner = arg_labels.get(1).cloned().unwrap_or_default();
            if !inner.contains("le") {
                errors.push(
                    "histogram_quantile over an expression that dropped `le` (aggregate `by (le, ...)`)"
                        .to_owned(),
                );
            }
            inner.into_iter().filter(|l| l != "le").collect()
        }
        "label_replace" | "label_join" => {
            let mut labels = arg_labels.first().cloned().unwrap_or_default();
            let sources: Vec<String> = if call.func.name == "label_replace" {
                string_arg(3).into_iter().collect()
            } else {
                (3..args.len()).filter_map(string_arg).collect()
            };
            for source in sources {
                if !source.is_empty() && !labels.contains(&source) {
                    errors.push(format!(
                        "{} reads the label `{source}`, which the series do not have",
                        call.func.name
                    ));
                }
            }
            if let Some(dst) = string_arg(1) {
                labels.insert(dst);
            }
            labels
        }
        _ => arg_labels.into_iter().flatten().collect(),
    }
}

fn check_selector(vs: &parser::VectorSelector, errors: &mut Vec<String>) -> BTreeSet<String> {
    let name = vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op.to_string() == "=")
            .map(|m| m.value.clone())
    });
    let Some(name) = name else {
        errors.push("a selector without a literal metric name".to_owned());
        return BTreeSet::new();
    };
    let Some(labels) = series_labels(&name) else {
        errors.push(format!(
            "`{name}` is not a series the crate emits (known: {})",
            all_series().join(", ")
        ));
        return BTreeSet::new();
    };
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for matcher in matchers {
        if matcher.name == "__name__" {
            continue;
        }
        if !labels.contains(matcher.name.as_str()) {
            errors.push(format!(
                "`{name}` has no label `{}` (its labels: {})",
                matcher.name,
                labels.iter().copied().collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let op = matcher.op.to_string();
        let regex = op == "=~" || op == "!~";
        check_value(
            METRIC_LABEL_VALUES,
            &matcher.name,
            &matcher.value,
            regex,
            errors,
        );
    }
    labels.into_iter().map(str::to_owned).collect()
}

fn all_series() -> Vec<String> {
    let mut names = Vec::new();
    for metric in METRICS {
        match metric.kind {
            Kind::Counter | Kind::Gauge => names.push(metric.prometheus_name.to_owned()),
            Kind::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{}{suffix}", metric.prometheus_name));
                }
            }
        }
    }
    names
}

/// Replaces Grafana's template variables so the text parses as PromQL: the interval variables
/// become a duration, any other variable a placeholder, which must sit inside a string literal
/// (a variable in a metric name or a label name would escape the checks).
fn substitute_variables(query: &str) -> Result<String, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == '\\' && i + 1 < chars.len() {
                out.push(c);
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            quote = Some(c);
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        // `$name`, `${name}` or `${name:format}`; `[[name]]` is not used here.
        let (name, next) = if chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i + 2..].iter().position(|&ch| ch == '}') else {
                return Err(format!("unclosed `${{` in `{query}`"));
            };
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let name = inner.split(':').next().unwrap_or_default().to_owned();
            (name, i + 3 + close)
        } else {
            let len = chars[i + 1..]
                .iter()
                .take_while(|ch| ch.is_ascii_alphanumeric() || **ch == '_')
                .count();
            (chars[i + 1..=i + len].iter().collect(), i + 1 + len)
        };
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        match name.as_str() {
            "__rate_interval" | "__interval" | "__range" => out.push_str("5m"),
            "__interval_ms" | "__range_ms" | "__range_s" => out.push_str("300"),
            _ if quote.is_some() => out.push_str(VARIABLE_PLACEHOLDER),
            _ => {
                return Err(format!(
                    "template variable `${name}` outside a string literal in `{query}`"
                ));
            }
        }
        i = next;
    }
    Ok(out)
}

/// Parses one PromQL expression (Grafana variables allowed) and checks every name in it.
fn check_promql(query: &str) -> Result<(), Vec<String>> {
    let text = substitute_variables(query).map_err(|e| vec![e])?;
    let expr = parser::parse(&text).map_err(|e| vec![format!("does not parse: {e}")])?;
    let mut errors = Vec::new();
    check_expr(&expr, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks a Grafana Prometheus variable query: `label_values(selector, label)`,
/// `label_values(label)`, `label_names()` or `query_result(expr)`.
fn check_variable_query(query: &str) -> Result<(), Vec<String>> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return check_promql(inner);
    }
    if query == "label_names()" {
        return Ok(());
    }
    let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    else {
        return Err(vec![format!(
            "unsupported variable query `{query}` (use label_values, label_names or query_result)"
        )]);
    };
    // The label is after the last comma outside braces and quotes.
    let mut depth = 0i32;
    let mut in_string = false;
    let mut split = None;
    for (i, c) in inner.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '{' | '(' if !in_string => depth += 1,
            '}' | ')' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let (selector, label) = match split {
        Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    };
    let Some(selector) = selector else {
        let known = METRICS
            .iter()
            .flat_map(|m| m.labels.iter())
            .chain(RESOURCE_LABELS)
            .any(|l| *l == label);
        return if known {
            Ok(())
        } else {
            Err(vec![format!(
                "no series the crate emits has the label `{label}`"
            )])
        };
    };
    let text = substitute_variables(selector).map_err(|e| vec![e])?;
    let expr = parser::parse(&text).map_err(|e| vec![format!("does not parse: {e}")])?;
    let Expr::VectorSelector(vs) = &expr else {
        return Err(vec![format!(
            "label_values takes a series selector, got `{selector}`"
        )]);
    };
    let mut errors = Vec::new();
    let labels = check_selector(vs, &mut errors);
    if errors.is_empty() && !labels.contains(label) {
        errors.push(format!("`{selector}` has no label `{label}`"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// TraceQL checks
// ---------------------------------------------------------------------------------------------

/// One attribute reference in a TraceQL query, with the string it is compared to, if any.
#[derive(Debug)]
struct AttributeRef {
    scope: String,
    name: String,
    comparison: Option<(String, String)>,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a double-quoted or backtick string starting at `start` (the quote); returns its content
/// and the index after it.
fn read_string(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && quote == '"' && i + 1 < chars.len() {
            value.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == quote {
            return Ok((value, i + 1));
        }
        value.push(c);
        i += 1;
    }
    Err("unterminated string".to_owned())
}

/// Finds the attributes a TraceQL query names: `span.x`, `resource.x`, other scopes, and
/// unscoped `.x`. Intrinsics (`name`, `duration`, `status`, `kind`, `span:…`, `trace:…`) are not
/// attributes and are skipped, as are string literals.
fn traceql_attributes(query: &str) -> Result<Vec<AttributeRef>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let read_name = |from: usize| -> Result<(String, usize), String> {
        if chars.get(from) == Some(&'"') {
            return read_string(&chars, from);
        }
        let len = chars[from..]
            .iter()
            .take_while(|c| is_ident_char(**c) || **c == '.' || **c == '-')
            .count();
        let name: String = chars[from..from + len].iter().collect();
        let name = name.trim_end_matches('.').to_owned();
        if name.is_empty() {
            Err(format!("empty attribute name at {from}"))
        } else {
            Ok((name, from + len))
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        let at_boundary = prev.is_none_or(|p| !is_ident_char(p) && p != '.');
        if c == '"' || c == '`' {
            let (_, next) = read_string(&chars, i)?;
            i = next;
            continue;
        }
        let start_of_ref;
        let scope;
        if c.is_ascii_alphabetic() && at_boundary {
            let len = chars[i..]
                .iter()
                .take_while(|ch| is_ident_char(**ch))
                .count();
            let word: String = chars[i..i + len].iter().collect();
            if chars.get(i + len) != Some(&'.') {
                i += len;
                continue;
            }
            scope = word;
            start_of_ref = i + len + 1;
        } else if c == '.'
            && prev.is_none_or(|p| !(is_ident_char(p) || p == ')' || p == ']' || p == '"'))
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_' || *n == '"')
        {
            scope = String::new();
            start_of_ref = i + 1;
        } else {
            i += 1;
            continue;
        }
        let (name, mut next) = read_name(start_of_ref)?;
        // An optional comparison with a string literal right after the attribute.
        let mut j = next;
        while chars.get(j).is_some_and(|ch| ch.is_whitespace()) {
            j += 1;
        }
        let op: String = ["!=", "=~", "!~", "="]
            .iter()
            .find(|op| {
                let op_chars: Vec<char> = op.chars().collect();
                chars.get(j..j + op_chars.len()) == Some(&op_chars[..])
            })
            .map(|op| (*op).to_owned())
            .unwrap_or_default();
        let mut comparison = None;
        if !op.is_empty() {
            let mut k = j + op.len();
            while chars.get(k).is_some_and(|ch| ch.is_whitespace()) {
                k += 1;
            }
            if chars.get(k) == Some(&'"') {
                let (value, after) = read_string(&chars, k)?;
                comparison = Some((op, value));
                next = after;
            }
        }
        found.push(AttributeRef {
            scope,
            name,
            comparison,
        });
        i = next;
    }
    Ok(found)
}

/// Checks every attribute a TraceQL query names against what the crate records.
fn check_traceql(query: &str) -> Result<(), Vec<String>> {
    if !query.trim_start().starts_with('{') {
        return Err(vec![format!(
            "`{query}` is not a TraceQL span-set query (it must start with `{{`)"
        )]);
    }
    let attributes = traceql_attributes(query).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    for attribute in attributes {
        let name = attribute.name.as_str();
        let known = match attribute.scope.as_str() {
            "span" => SPAN_ATTRIBUTES.contains(&name),
            "resource" => RESOURCE_ATTRIBUTES.contains(&name),
            "" => SPAN_ATTRIBUTES.contains(&name) || RESOURCE_ATTRIBUTES.contains(&name),
            other => {
                errors.push(format!(
                    "`{other}.{name}`: the crate records no {other}-scoped attributes"
                ));
                continue;
            }
        };
        if !known {
            let scope = if attribute.scope.is_empty() {
                String::new()
            } else {
                attribute.scope.clone()
            };
            errors.push(format!(
                "`{scope}.{name}` is not an attribute the crate records"
            ));
            continue;
        }
        if let Some((op, value)) = &attribute.comparison {
            let regex = op == "=~" || op == "!~";
            check_value(SPAN_ATTRIBUTE_VALUES, name, value, regex, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    let path = repo().join(relative);
    serde_norway::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn dashboards() -> Vec<(PathBuf, Json)> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            (path, json)
        })
        .collect()
}

/// A query found in a dashboard, with where it was found.
#[derive(Debug)]
enum Query {
    PromQl(String),
    TraceQl(String),
    Variable(String),
}

/// Walks a dashboard and collects every query: Prometheus `expr`s, TraceQL `query`s (targets and
/// data links), and Prometheus template-variable queries. Every entry of a `targets` array must be
/// one of the first two, so a query of another kind cannot slip past unchecked.
fn collect_queries(value: &Json, path: &str, out: &mut Vec<(String, Query)>) {
    match value {
        Json::Object(map) => {
            if let Some(Json::String(expr)) = map.get("expr") {
                out.push((path.to_owned(), Query::PromQl(expr.clone())));
            }
            if map.get("queryType").and_then(Json::as_str) == Some("traceql") {
                let query = map
                    .get("query")
                    .and_then(Json::as_str)
                    .unwrap_or_else(|| panic!("{path}: a traceql query without `query`"));
                out.push((path.to_owned(), Query::TraceQl(query.to_owned())));
            }
            if let Some(Json::Array(targets)) = map.get("targets") {
                for (i, target) in targets.iter().enumerate() {
                    let is_prom = target.get("expr").is_some_and(Json::is_string);
                    let is_traceql =
                        target.get("queryType").and_then(Json::as_str) == Some("traceql");
                    assert!(
                        is_prom || is_traceql,
                        "{path}.targets[{i}]: neither a PromQL `expr` nor a TraceQL query: {target}"
                    );
                }
            }
            for (key, child) in map {
                if key == "templating" {
                    continue;
                }
                collect_queries(child, &format!("{path}.{key}"), out);
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_queries(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn variable_queries(dashboard: &Json, out: &mut Vec<(String, Query)>) {
    let Some(list) = dashboard
        .pointer("/templating/list")
        .and_then(Json::as_array)
    else {
        return;
    };
    for variable in list {
        let name = variable.get("name").and_then(Json::as_str).unwrap_or("?");
        if variable.get("type").and_then(Json::as_str) != Some("query") {
            continue;
        }
        let ds_type = variable.pointer("/datasource/type").and_then(Json::as_str);
        assert_eq!(
            ds_type,
            Some("prometheus"),
            "variable `{name}`: only Prometheus query variables are checked"
        );
        let path = format!("templating.{name}");
        match variable.get("query") {
            Some(Json::String(q)) => out.push((path.clone(), Query::Variable(q.clone()))),
            Some(obj @ Json::Object(_)) => {
                let q = obj
                    .get("query")
                    .and_then(Json::as_str)
                    .unwrap_or_else(|| panic!("variable `{name}`: query object without `query`"));
                out.push((path.clone(), Query::Variable(q.to_owned())));
            }
            _ => panic!("variable `{name}`: no query"),
        }
        if let Some(Json::String(definition)) = variable.get("definition") {
            out.push((path, Query::Variable(definition.clone())));
        }
    }
}

fn datasource_uids(value: &Json, out: &mut BTreeSet<String>) {
    match value {
        Json::Object(map) => {
            if let Some(Json::Object(ds)) = map.get("datasource")
                && let Some(uid) = ds.get("uid").and_then(Json::as_str)
            {
                out.insert(uid.to_owned());
            }
            if let Some(uid) = map.get("datasourceUid").and_then(Json::as_str) {
                out.insert(uid.to_owned());
            }
            for child in map.values() {
                datasource_uids(child, out);
            }
        }
        Json::Array(items) => items.iter().for_each(|i| datasource_uids(i, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboards
// ---------------------------------------------------------------------------------------------

#[test]
fn every_dashboard_query_names_only_what_the_crate_emits() {
    let mut failures = Vec::new();
    let mut counts = BTreeMap::new();
    for (path, dashboard) in dashboards() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut queries = Vec::new();
        collect_queries(&dashboard, "", &mut queries);
        variable_queries(&dashboard, &mut queries);
        let (mut prom, mut traceql, mut vars) = (0, 0, 0);
        for (at, query) in &queries {
            let (text, result) = match query {
                Query::PromQl(q) => {
                    prom += 1;
                    (q, check_promql(q))
                }
                Query::TraceQl(q) => {
                    traceql += 1;
                    (q, check_traceql(q))
                }
                Query::Variable(q) => {
                    vars += 1;
                    (q, check_variable_query(q))
                }
            };
            if let Err(errors) = result {
                failures.push(format!(
                    "{file} {at}\n    query: {text}\n    - {}",
                    errors.join("\n    - ")
                ));
            }
        }
        assert!(prom > 0, "{file}: no PromQL found");
        assert!(
            traceql > 0,
            "{file}: no TraceQL found (panels must link to traces)"
        );
        counts.insert(file, (prom, traceql, vars));
    }
    assert!(
        failures.is_empty(),
        "{} dashboard queries name what the crate does not emit:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("checked (PromQL, TraceQL, variable) queries per dashboard: {counts:?}");
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = path.display();
        let uid = dashboard["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_owned()), "{file}: duplicate uid {uid}");
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        assert_eq!(
            dashboard["schemaVersion"].as_u64(),
            Some(GRAFANA_SCHEMA_VERSION),
            "{file}: schemaVersion"
        );
        let variables: Vec<&str> = dashboard
            .pointer("/templating/list")
            .and_then(Json::as_array)
            .expect("templating.list")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for required in ["job", "api_surface"] {
            assert!(
                variables.contains(&required),
                "{file}: no `{required}` variable"
            );
        }
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: duplicate panel id {id}");
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: panel {id} has no title");
            if panel["type"] != "row" {
                assert!(
                    panel["description"].as_str().is_some_and(|d| d.len() > 20),
                    "{file}: panel `{title}` needs a description saying what it means on call"
                );
                assert!(
                    panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: panel `{title}` has no query"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml and the provisioning files
// ---------------------------------------------------------------------------------------------

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn strings(value: Option<&Yaml>) -> Vec<String> {
    value
        .and_then(Yaml::as_sequence)
        .map(|seq| {
            seq.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `(host, container)` pairs of a service's bind mounts and volumes (short syntax).
fn volumes(service: &Yaml) -> Vec<(String, String)> {
    strings(service.get("volumes"))
        .into_iter()
        .map(|v| {
            let mut parts = v.splitn(3, ':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().unwrap_or_default().to_owned();
            (host, container)
        })
        .collect()
}

/// The service's environment, from either the map or the list form.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Yaml::Mapping(map)) => {
            for (k, v) in map {
                let value = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                env.insert(k.as_str().unwrap_or_default().to_owned(), value);
            }
        }
        Some(Yaml::Sequence(seq)) => {
            for item in seq.iter().filter_map(Yaml::as_str) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => {}
    }
    env
}

/// The container path a host file or directory of the repository is mounted at.
fn mounted_at(service: &Yaml, host: &str) -> Option<String> {
    let host = host.trim_start_matches("./").trim_end_matches('/');
    volumes(service)
        .into_iter()
        .find(|(h, _)| h.trim_start_matches("./").trim_end_matches('/') == host)
        .map(|(_, c)| c)
}

fn port_of(endpoint: &str) -> u16 {
    let port = endpoint
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    port.parse()
        .unwrap_or_else(|_| panic!("no port in `{endpoint}`"))
}

/// `true` for tags like `0.160.0`, `v3.14.0`, `1.95.0-bookworm`: a version with at least a minor
/// number, not `latest`.
fn is_version_tag(tag: &str) -> bool {
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let mut parts = version.split(['.', '-']);
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    !major.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit())
}

fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

#[test]
fn every_image_is_pinned_to_a_version_tag() {
    let compose = compose();
    let services = compose
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("services");
    assert!(!services.is_empty());
    for (name, service) in services {
        let name = name.as_str().unwrap_or("?");
        let image = service
            .get("image")
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("service `{name}` has no image"));
        assert!(
            !image.contains('$'),
            "service `{name}`: image `{image}` depends on a variable"
        );
        let tag = image_tag(image)
            .unwrap_or_else(|| panic!("service `{name}`: image `{image}` has no tag"));
        assert!(
            tag != "latest" && is_version_tag(tag),
            "service `{name}`: image `{image}` is not pinned to a version tag"
        );
    }
}

#[test]
fn the_collectors_prometheus_exporter_is_scraped() {
    let compose = compose();
    let collector = yaml("observability/otel-collector.yaml");
    let exporter = collector
        .get("exporters")
        .and_then(|e| e.get("prometheus"))
        .expect("the collector has a `prometheus` exporter");
    // The metric names in METRICS hold only with this naming.
    assert_eq!(
        exporter.get("translation_strategy").and_then(Yaml::as_str),
        Some("UnderscoreEscapingWithSuffixes"),
        "the exporter's naming must stay explicit: METRICS assume dots -> underscores, unit and _total suffixes"
    );
    assert!(
        exporter
            .get("resource_to_telemetry_conversion")
            .and_then(|r| r.get("enabled"))
            .and_then(Yaml::as_bool)
            != Some(true),
        "resource attributes as labels would add labels the dashboards do not expect"
    );
    let port = port_of(
        exporter
            .get("endpoint")
            .and_then(Yaml::as_str)
            .expect("exporter endpoint"),
    );
    let pipeline = collector
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(|p| p.get("metrics"))
        .expect("a metrics pipeline");
    assert!(
        strings(pipeline.get("exporters")).contains(&"prometheus".to_owned()),
        "the metrics pipeline must export to `prometheus`"
    );

    // The compose service that runs this configuration, and the Prometheus that scrapes it.
    let services = compose
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("services");
    let collector_service = services
        .iter()
        .find(|(_, s)| mounted_at(s, "observability/otel-collector.yaml").is_some())
        .and_then(|(n, _)| n.as_str())
        .expect("a service mounts observability/otel-collector.yaml");
    let prometheus_service = service(&compose, "prometheus");
    let config_path = mounted_at(prometheus_service, "observability/prometheus.yml")
        .expect("prometheus mounts observability/prometheus.yml");
    assert!(
        strings(prometheus_service.get("command"))
            .contains(&format!("--config.file={config_path}")),
        "prometheus must be started with --config.file={config_path}"
    );

    let prometheus = yaml("observability/prometheus.yml");
    let target = format!("{collector_service}:{port}");
    let jobs = prometheus
        .get("scrape_configs")
        .and_then(Yaml::as_sequence)
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|job| {
            job.get("static_configs")
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .any(|sc| strings(sc.get("targets")).contains(&target))
        })
        .unwrap_or_else(|| panic!("no scrape job targets {target}"));
    assert_eq!(
        job.get("honor_labels").and_then(Yaml::as_bool),
        Some(true),
        "the scrape job must keep the exporter's job/instance labels (honor_labels: true)"
    );
}

#[test]
fn grafana_provisioning_loads_the_dashboards_folder() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let provisioning = yaml("observability/grafana/provisioning/dashboards/dashboards.yaml");
    let providers = provisioning
        .get("providers")
        .and_then(Yaml::as_sequence)
        .expect("providers");
    assert!(!providers.is_empty());
    let dashboards_mount = mounted_at(grafana, "dashboards").expect("grafana mounts ./dashboards");
    for provider in providers {
        assert_eq!(provider.get("type").and_then(Yaml::as_str), Some("file"));
        let path = provider
            .get("options")
            .and_then(|o| o.get("path"))
            .and_then(Yaml::as_str)
            .expect("provider options.path");
        assert_eq!(
            path.trim_end_matches('/'),
            dashboards_mount.trim_end_matches('/'),
            "the dashboard provider must read the folder where ./dashboards is mounted"
        );
    }
    for (dir, target) in [
        (
            "observability/grafana/provisioning/dashboards",
            "/etc/grafana/provisioning/dashboards",
        ),
        (
            "observability/grafana/provisioning/datasources",
            "/etc/grafana/provisioning/datasources",
        ),
    ] {
        assert_eq!(
            mounted_at(grafana, dir).as_deref(),
            Some(target),
            "grafana must mount {dir} at {target}"
        );
    }
    let env = environment(grafana);
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str),
        Some("true")
    );
    assert!(
        strings(grafana.get("ports"))
            .iter()
            .any(|p| p.ends_with(":3000")),
        "grafana must publish port 3000"
    );
    if let Some(home) = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let file = home
            .strip_prefix(&format!("{}/", dashboards_mount.trim_end_matches('/')))
            .expect("the home dashboard is one of ours");
        assert!(
            repo().join("dashboards").join(file).is_file(),
            "home dashboard {file} missing"
        );
    }
}

#[test]
fn data_sources_exist_and_link_traces_and_metrics() {
    let provisioning = yaml("observability/grafana/provisioning/datasources/datasources.yaml");
    let sources = provisioning
        .get("datasources")
        .and_then(Yaml::as_sequence)
        .expect("datasources");
    let by_uid: BTreeMap<&str, &Yaml> = sources
        .iter()
        .map(|s| (s.get("uid").and_then(Yaml::as_str).expect("uid"), s))
        .collect();
    let prometheus = by_uid
        .get(PROMETHEUS_UID)
        .expect("a `prometheus` data source");
    let tempo = by_uid.get(TEMPO_UID).expect("a `tempo` data source");
    assert_eq!(
        prometheus.get("type").and_then(Yaml::as_str),
        Some("prometheus")
    );
    assert_eq!(tempo.get("type").and_then(Yaml::as_str), Some("tempo"));

    // Every data source a dashboard references is provisioned.
    for (path, dashboard) in dashboards() {
        let mut uids = BTreeSet::new();
        datasource_uids(&dashboard, &mut uids);
        for uid in uids {
            assert!(
                uid == "-- Grafana --" || by_uid.contains_key(uid.as_str()),
                "{}: data source uid `{uid}` is not provisioned",
                path.display()
            );
        }
    }

    // Exemplars on Prometheus series open the trace in Tempo.
    let exemplar_targets: Vec<&str> = prometheus
        .get("jsonData")
        .and_then(|j| j.get("exemplarTraceIdDestinations"))
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("datasourceUid").and_then(Yaml::as_str))
        .collect();
    assert_eq!(exemplar_targets, [TEMPO_UID]);

    // Tempo -> Prometheus: the queries and the tag mapping name only what the crate emits.
    let traces_to_metrics = tempo
        .get("jsonData")
        .and_then(|j| j.get("tracesToMetrics"))
        .expect("tempo jsonData.tracesToMetrics");
    assert_eq!(
        traces_to_metrics
            .get("datasourceUid")
            .and_then(Yaml::as_str),
        Some(PROMETHEUS_UID)
    );
    let mut tag_labels = Vec::new();
    for tag in traces_to_metrics
        .get("tags")
        .and_then(Yaml::as_sequence)
        .expect("tracesToMetrics.tags")
    {
        let key = tag.get("key").and_then(Yaml::as_str).expect("tag key");
        assert!(
            SPAN_ATTRIBUTES.contains(&key) || RESOURCE_ATTRIBUTES.contains(&key),
            "tracesToMetrics tag `{key}` is not an attribute the crate records"
        );
        let label = tag.get("value").and_then(Yaml::as_str).unwrap_or(key);
        tag_labels.push(label.to_owned());
    }
    let queries = traces_to_metrics
        .get("queries")
        .and_then(Yaml::as_sequence)
        .expect("tracesToMetrics.queries");
    assert!(!queries.is_empty());
    for query in queries {
        let text = query.get("query").and_then(Yaml::as_str).expect("query");
        // Grafana fills `$__tags` with `label="value"` pairs from the mapped tags (`$$` is the
        // provisioning file's escape for `$`).
        let tags = tag_labels
            .iter()
            .map(|l| format!("{l}=\"{VARIABLE_PLACEHOLDER}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let expanded = text.replace("$$__tags", &tags).replace("$__tags", &tags);
        if let Err(errors) = check_promql(&expanded) {
            panic!(
                "tracesToMetrics query `{text}`:\n  - {}",
                errors.join("\n  - ")
            );
        }
    }
}

#[test]
fn the_traffic_service_runs_the_demo_against_the_collector() {
    let compose = compose();
    let traffic = service(&compose, "traffic");
    let command = strings(traffic.get("command"));
    for arg in ["run", "--release", "--example", "demo", "--loop"] {
        assert!(
            command.iter().any(|a| a == arg),
            "traffic command lacks `{arg}`: {command:?}"
        );
    }
    let env = environment(traffic);
    let collector = yaml("observability/otel-collector.yaml");
    let http = collector
        .get("receivers")
        .and_then(|r| r.get("otlp"))
        .and_then(|o| o.get("protocols"))
        .and_then(|p| p.get("http"))
        .and_then(|h| h.get("endpoint"))
        .and_then(Yaml::as_str)
        .expect("collector OTLP HTTP receiver endpoint");
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
        Some(format!("http://otel-collector:{}", port_of(http)).as_str())
    );
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
        Some("http/protobuf")
    );
    assert_eq!(
        env.get("OTEL_SERVICE_NAME").map(String::as_str),
        Some("llm-guard-demo")
    );
    assert!(
        volumes(traffic)
            .iter()
            .any(|(h, c)| (h == "." || h == "./") && c == "/src"),
        "traffic must mount the repository"
    );
}

// ---------------------------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------------------------

#[test]
fn checker_accepts_what_the_crate_emits() {
    for query in [
        r#"sum by (api_surface, fallback_decision) (rate(llm_guard_calls_total{job=~"$job", api_surface=~"${api_surface:regex}"}[$__rate_interval]))"#,
        "histogram_quantile(0.95, sum by (le, api_surface) (rate(gen_ai_client_operation_duration_seconds_bucket[5m])))",
        r#"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{gen_ai_token_type="input"}[5m]))"#,
        r#"sum(rate(llm_guard_retries_exhausted_total{retry_stop_reason=~"deadline|budget_exhausted"}[5m])) / on () group_left sum(rate(llm_guard_calls_total[5m]))"#,
        r#"(sum(increase(llm_guard_calls_total{fallback_decision="fallback"}[$__range])) or vector(0)) / sum(increase(llm_guard_calls_total[$__range]))"#,
    ] {
        assert_eq!(check_promql(query), Ok(()), "{query}");
    }
    for query in [
        r#"{ resource.service.name =~ "${job:regex}" && span.fallback_decision = "fallback" } | select(span.waf.reference)"#,
        r#"{ .api_surface = "responses" && span.retry_count > 0 && duration > 1.5s && kind = client }"#,
        r#"{ span.contract.violation =~ "html_body|not_json" && span.http.request.resend_count >= 1 }"#,
    ] {
        assert_eq!(check_traceql(query), Ok(()), "{query}");
    }
    assert_eq!(
        check_variable_query(r#"label_values(llm_guard_calls_total{job=~"$job"}, api_surface)"#),
        Ok(())
    );
}

#[test]
fn checker_rejects_an_unknown_metric() {
    let errors = check_promql("sum(rate(llm_guard_call_total[5m]))").unwrap_err();
    assert!(
        errors[0].contains("`llm_guard_call_total` is not a series"),
        "{errors:?}"
    );
    // The OpenTelemetry name is not what Prometheus sees either.
    assert!(check_promql("rate(gen_ai_client_operation_duration_bucket[5m])").is_err());
    assert!(check_variable_query("label_values(llm_guard_requests_total, job)").is_err());
    // A metric name hidden in a variable cannot be checked, so it is refused.
    assert!(check_promql("rate($metric[5m])").is_err());
}

#[test]
fn checker_rejects_an_unknown_label() {
    // A label no series has, in a matcher and in a grouping.
    assert!(check_promql(r#"llm_guard_calls_total{fallback="hold"}"#).is_err());
    let errors = check_promql("sum by (decision) (rate(llm_guard_calls_total[5m]))").unwrap_err();
    assert!(errors[0].contains("decision"), "{errors:?}");
    assert!(check_promql("sum without (surface) (rate(llm_guard_calls_total[5m]))").is_err());
    // A real label, but not on this metric: token usage has no api_surface.
    assert!(
        check_promql(r#"rate(gen_ai_client_token_usage_sum{api_surface="responses"}[5m])"#)
            .is_err()
    );
    // A value the crate never emits.
    assert!(check_promql(r#"llm_guard_calls_total{fallback_decision="retry"}"#).is_err());
    // A quantile over buckets that lost `le`.
    assert!(
        check_promql(
            "histogram_quantile(0.9, sum by (api_surface) (rate(gen_ai_client_operation_duration_seconds_bucket[5m])))"
        )
        .is_err()
    );
    assert!(
        check_variable_query("label_values(llm_guard_calls_total, gen_ai_token_type)").is_err()
    );
}

#[test]
fn checker_rejects_an_unknown_span_attribute() {
    assert!(check_traceql(r#"{ span.fallback = "hold" }"#).is_err());
    assert!(check_traceql(r#"{ resource.k8s.pod.name = "x" }"#).is_err());
    assert!(check_traceql(r#"{ .waf_vendor = "cloudflare" }"#).is_err());
    assert!(check_traceql(r#"{ span.fallback_decision = "fallbak" }"#).is_err());
    assert!(check_traceql(r#"{ event.name = "exception" }"#).is_err());
    // Attribute-like text inside strings is not an attribute.
    assert_eq!(
        check_traceql(r#"{ span.waf.reference = "span.nope" }"#),
        Ok(())
    );
}

#[test]
fn image_tags_are_read_correctly() {
    assert_eq!(image_tag("grafana/grafana:13.2.0"), Some("13.2.0"));
    assert_eq!(image_tag("localhost:5000/tempo"), None);
    assert_eq!(
        image_tag("rust:1.95.0-bookworm@sha256:abc"),
        Some("1.95.0-bookworm")
    );
    assert!(is_version_tag("v3.14.0") && is_version_tag("1.95.0-bookworm"));
    assert!(!is_version_tag("latest") && !is_version_tag("bookworm") && !is_version_tag("3"));
}

#[test]
fn metric_table_matches_the_naming_translation() {
    // UnderscoreEscapingWithSuffixes: dots -> underscores, `s` -> `_seconds`, `{…}` -> nothing,
    // counters get `_total`.
    for metric in METRICS {
        let base = metric.otel_name.replace('.', "_");
        // Only the `s` histograms get a unit suffix; the token ones are `{token}`.
        let seconds = !metric.otel_name.contains("token");
        let expected = match metric.kind {
            Kind::Counter => format!("{base}_total"),
            Kind::Histogram if seconds => format!("{base}_seconds"),
            Kind::Gauge | Kind::Histogram => base,
        };
        assert_eq!(metric.prometheus_name, expected);
    }
}

/// The mirrors above must not drift from the crate: every closed value set matches the crate's
/// own enum, and every metric the crate names is listed.
#[test]
fn the_mirrored_vocabulary_matches_the_crate() {
    use reqwest_llm_guard::evidence::{
        ApiSurface, ParseCheck, StatusClass, Violation, WafKind, WafVendor,
    };
    use reqwest_llm_guard::retry::{StopReason, WaitReason};
    use reqwest_llm_guard::telemetry::metric;
    fn same(mirror: &[&str], crate_values: Vec<&'static str>, what: &str) {
        let mut a: Vec<&str> = mirror.to_vec();
        let mut b = crate_values;
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{what} drifted from the crate");
    }
    same(
        API_SURFACES,
        ApiSurface::ALL.iter().map(|v| v.as_str()).collect(),
        "api surfaces",
    );
    same(
        STATUS_CLASSES,
        StatusClass::ALL.iter().map(|v| v.as_str()).collect(),
        "status classes",
    );
    same(
        PARSE_CHECKS,
        ParseCheck::ALL.iter().map(|v| v.as_str()).collect(),
        "parse checks",
    );
    same(
        VIOLATIONS,
        Violation::ALL.iter().map(|v| v.as_str()).collect(),
        "violations",
    );
    same(
        WAIT_REASONS,
        WaitReason::ALL.iter().map(|v| v.as_str()).collect(),
        "wait reasons",
    );
    same(
        WAF_VENDORS,
        WafVendor::ALL.iter().map(|v| v.as_str()).collect(),
        "WAF vendors",
    );
    same(
        WAF_KINDS,
        WafKind::ALL.iter().map(|v| v.as_str()).collect(),
        "WAF kinds",
    );
    same(
        STOP_REASONS,
        StopReason::ALL
            .iter()
            .filter(|s| s.is_exhausted())
            .map(|v| v.as_str())
            .collect(),
        "exhausted stop reasons",
    );
    let names: Vec<&str> = METRICS.iter().map(|m| m.otel_name).collect();
    same(
        &names,
        vec![
            metric::OPERATION_DURATION,
            metric::TOKEN_USAGE,
            metric::TIME_TO_FIRST_CHUNK,
            metric::TIME_PER_OUTPUT_CHUNK,
            metric::INFERENCE_DURATION,
            metric::INFERENCE_TIME_TO_FIRST_CHUNK,
            metric::INFERENCE_TIME_PER_OUTPUT_CHUNK,
            metric::INFERENCE_USAGE_INPUT_TOKENS,
            metric::INFERENCE_USAGE_OUTPUT_TOKENS,
            metric::INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS,
            metric::INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS,
            metric::INFERENCE_USAGE_REASONING_OUTPUT_TOKENS,
            metric::INFERENCE_OPERATION_INPUT_TOKENS,
            metric::INFERENCE_OPERATION_OUTPUT_TOKENS,
            metric::CALLS,
            metric::RETRIES,
            metric::RETRIES_EXHAUSTED,
            metric::WAF_WALLS,
            metric::CONTRACT_VIOLATIONS,
            metric::FAILOVER_HOPS,
            metric::BREAKER_STATE,
            metric::BREAKER_TRANSITIONS,
            metric::LINT_FINDINGS,
        ],
        "metric names",
    );
}
