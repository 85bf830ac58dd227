//! Telemetry through the whole stack, read back from the SDK's in-memory exporters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest_llm_guard::Guard;
use reqwest_llm_guard::retry::Retry;
use reqwest_llm_guard::telemetry::{DURATION_BUCKETS, TOKEN_BUCKETS, Telemetry, metric};
use reqwest_middleware::ClientWithMiddleware;
use retry_policies::policies::ExponentialBackoff;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CANARY: &str = "sk-CANARY-7f3a9c";

const CHAT_OK: &str = r#"{"id":"chatcmpl-42","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"PASS sk-CANARY-7f3a9c","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;
const RESP_FAILED: &str = r#"{"id":"resp_1","object":"response","created_at":1,"status":"failed","model":"gpt-5","output":[],"error":{"code":"server_error","message":"sk-CANARY-7f3a9c exploded"},"incomplete_details":null}"#;
const STREAM: &str = "data: {\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"sk-CANARY-7f3a9c\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";
/// A Responses answer whose text has multi-byte characters, quotes and a backslash.
const RESP_OK_MULTIBYTE: &str = r#"{"id":"resp_mb","object":"response","created_at":1,"status":"completed","model":"gpt-5","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"答え: \"はい\" \\ 🎉","annotations":[]}]}],"error":null,"incomplete_details":null,"usage":{"input_tokens":5,"output_tokens":4,"total_tokens":9}}"#;
const CF_CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
<script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8f1e2d3c4b5a6978\"></script></body></html>";

struct Harness {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
    client: ClientWithMiddleware,
}

fn quick() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(2)
}

impl Harness {
    fn new() -> Self {
        Self::with(|t| t)
    }

    fn with(configure: impl FnOnce(Telemetry) -> Telemetry) -> Self {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let telemetry = configure(
            Telemetry::new()
                .with_tracer_provider(&tracer_provider)
                .with_meter_provider(&meter_provider),
        );
        let client = Guard::new()
            .with_telemetry(telemetry)
            .with_retry(
                Retry::new()
                    .with_policy(quick())
                    .with_min_backoff(Duration::ZERO),
            )
            .client(reqwest::Client::new());
        Self {
            spans,
            tracer_provider,
            metrics,
            meter_provider,
            client,
        }
    }

    fn finished(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    /// The one call span and its attempt spans, in order.
    fn call(&self) -> (SpanData, Vec<SpanData>) {
        let spans = self.finished();
        let calls: Vec<&SpanData> = spans
            .iter()
            .filter(|s| {
                !spans
                    .iter()
                    .any(|p| p.span_context.span_id() == s.parent_span_id)
            })
            .collect();
        assert_eq!(calls.len(), 1, "one call span: {:?}", names(&spans));
        let call = calls[0].clone();
        let mut attempts: Vec<SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == call.span_context.span_id())
            .cloned()
            .collect();
        attempts.sort_by_key(|s| attr(s, "http.request.resend_count"));
        (call, attempts)
    }

    fn metrics(&self) -> Vec<ResourceMetrics> {
        self.meter_provider.force_flush().unwrap();
        self.metrics.get_finished_metrics().unwrap()
    }
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn attrs(span: &SpanData) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
        .collect()
}

async fn chat(h: &Harness, server: &MockServer) -> reqwest::Response {
    h.client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap()
}

struct Row {
    name: &'static str,
    path: &'static str,
    /// Served in order; the last one repeats.
    responses: Vec<ResponseTemplate>,
    call: &'static [(&'static str, &'static str)],
    attempts: usize,
}

fn json(status: u16, body: &'static str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body, "application/json")
}

fn rows() -> Vec<Row> {
    let err = |code: &'static str| {
        Box::leak(format!(r#"{{"error":{{"message":"{CANARY} {code}","type":"t","param":null,"code":"{code}"}}}}"#).into_boxed_str())
            as &'static str
    };
    vec![
        Row {
            name: "2xx pass",
            path: "/v1/chat/completions",
            responses: vec![json(200, CHAT_OK)],
            call: &[
                ("api_surface", "chat_completions"),
                ("status_class", "2xx"),
                ("parse_check", "pass"),
                ("fallback_decision", "none"),
                ("retry_count", "0"),
                ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                ("gen_ai.response.id", "chatcmpl-42"),
                ("gen_ai.usage.input_tokens", "11"),
                ("gen_ai.usage.output_tokens", "3"),
                ("gen_ai.request.model", "gpt-4o-mini"),
                ("gen_ai.operation.name", "chat"),
                ("http.response.status_code", "200"),
            ],
            attempts: 1,
        },
        Row {
            name: "429 then 200",
            path: "/v1/chat/completions",
            responses: vec![json(429, err("rate_limit_exceeded")), json(200, CHAT_OK)],
            call: &[
                ("status_class", "2xx"),
                ("fallback_decision", "none"),
                ("retry_count", "1"),
            ],
            attempts: 2,
        },
        Row {
            name: "429 exhausted",
            path: "/v1/chat/completions",
            responses: vec![json(429, err("rate_limit_exceeded"))],
            call: &[
                ("status_class", "4xx"),
                ("fallback_decision", "fallback"),
                ("retry_count", "2"),
                ("error.type", "429"),
            ],
            attempts: 3,
        },
        Row {
            name: "waf challenge on 403",
            path: "/v1/chat/completions",
            responses: vec![
                ResponseTemplate::new(403)
                    .set_body_raw(CF_CHALLENGE, "text/html")
                    .insert_header("cf-mitigated", "challenge")
                    .insert_header("cf-ray", "8f1e2d3c4b5a6978-AMS"),
            ],
            call: &[
                ("fallback_decision", "hold"),
                ("waf.vendor", "cloudflare"),
                ("waf.kind", "challenge"),
                ("waf.reference", "8f1e2d3c4b5a6978"),
                ("parse_check", "fail"),
                ("contract.violation", "html_body"),
                ("retry_count", "0"),
            ],
            attempts: 1,
        },
        Row {
            name: "waf challenge on 429",
            path: "/v1/chat/completions",
            responses: vec![
                ResponseTemplate::new(429)
                    .set_body_raw(CF_CHALLENGE, "text/html")
                    .insert_header("cf-mitigated", "challenge"),
            ],
            call: &[
                ("fallback_decision", "hold"),
                ("waf.kind", "challenge"),
                ("retry_count", "0"),
            ],
            attempts: 1,
        },
        Row {
            name: "401",
            path: "/v1/chat/completions",
            responses: vec![json(401, err("invalid_api_key"))],
            call: &[
                ("fallback_decision", "hold"),
                ("parse_check", "pass"),
                ("error.type", "401"),
            ],
            attempts: 1,
        },
        Row {
            name: "json 403",
            path: "/v1/chat/completions",
            responses: vec![json(403, err("unsupported_country_region_territory"))],
            call: &[("fallback_decision", "hold")],
            attempts: 1,
        },
        Row {
            name: "400",
            path: "/v1/responses",
            responses: vec![json(400, err("invalid_value"))],
            call: &[("fallback_decision", "hold"), ("api_surface", "responses")],
            attempts: 1,
        },
        Row {
            name: "404",
            path: "/v1/chat/completions",
            responses: vec![json(404, err("model_not_found"))],
            call: &[("fallback_decision", "hold")],
            attempts: 1,
        },
        Row {
            name: "402",
            path: "/v1/chat/completions",
            responses: vec![json(402, err("insufficient_credits"))],
            call: &[("fallback_decision", "fallback")],
            attempts: 1,
        },
        Row {
            name: "500",
            path: "/v1/chat/completions",
            responses: vec![json(500, err("server_error"))],
            call: &[
                ("fallback_decision", "fallback"),
                ("status_class", "5xx"),
                ("error.type", "500"),
            ],
            attempts: 1,
        },
        Row {
            name: "html 200",
            path: "/v1/chat/completions",
            responses: vec![
                ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"),
            ],
            call: &[
                ("fallback_decision", "fallback"),
                ("parse_check", "fail"),
                ("contract.violation", "html_body"),
                ("error.type", "html_body"),
            ],
            attempts: 1,
        },
        Row {
            name: "error payload in 200",
            path: "/v1/chat/completions",
            responses: vec![json(200, err("upstream_error"))],
            call: &[
                ("fallback_decision", "fallback"),
                ("contract.violation", "error_in_2xx"),
            ],
            attempts: 1,
        },
        Row {
            name: "responses failed",
            path: "/v1/responses",
            responses: vec![json(200, RESP_FAILED)],
            call: &[
                ("fallback_decision", "fallback"),
                ("contract.violation", "response_failed"),
                ("openai.api.type", "responses"),
            ],
            attempts: 1,
        },
    ]
}

async fn serve(row: &Row) -> MockServer {
    let server = MockServer::start().await;
    let n = row.responses.len();
    for (i, r) in row.responses.iter().enumerate() {
        let mock = Mock::given(path(row.path)).respond_with(r.clone());
        if i + 1 < n {
            mock.up_to_n_times(1).mount(&server).await;
        } else {
            mock.mount(&server).await;
        }
    }
    server
}

#[tokio::test]
async fn every_row_of_the_decision_table_leaves_its_evidence_on_the_spans() {
    for row in rows() {
        let h = Harness::new();
        let server = serve(&row).await;
        let logs = LogSink::default();
        let _logging = {
            use tracing_subscriber::layer::SubscriberExt as _;
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.clone()))
        };
        // Every place a credential or a prompt can travel.
        let response = h
            .client
            .post(format!("{}{}?key={CANARY}&api_key={CANARY}", server.uri(), row.path))
            .bearer_auth(CANARY)
            .header("api-key", CANARY)
            .header("x-api-key", CANARY)
            .header("cookie", format!("session={CANARY}"))
            .body(format!(r#"{{"model":"gpt-4o-mini","input":"{CANARY}","messages":[{{"role":"user","content":"{CANARY}"}}]}}"#))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await.unwrap();
        for line in logs.0.lock().unwrap().iter() {
            assert!(!line.contains("CANARY"), "{}: log leaks: {line}", row.name);
        }
        let (call, attempts) = h.call();
        let got = attrs(&call);
        for (k, v) in row.call {
            assert_eq!(
                got.get(*k).map(String::as_str),
                Some(*v),
                "{}: {k} in {got:#?}",
                row.name
            );
        }
        assert_eq!(call.span_kind, SpanKind::Client, "{}", row.name);
        assert_eq!(call.name, "chat gpt-4o-mini", "{}", row.name);
        assert_eq!(
            attempts.len(),
            row.attempts,
            "{}: {:?}",
            row.name,
            names(&h.finished())
        );
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(
                attr(a, "http.request.resend_count"),
                Some(i.to_string()),
                "{}",
                row.name
            );
            let want = if i + 1 < attempts.len() {
                "retry".to_owned()
            } else {
                got["fallback_decision"].clone()
            };
            assert_eq!(
                attr(a, "fallback_decision"),
                Some(want),
                "{}: attempt {i}",
                row.name
            );
            assert_eq!(a.span_context.trace_id(), call.span_context.trace_id());
        }
        if row.attempts > 1 {
            assert_eq!(
                attr(&attempts[0], "retry.wait_reason").as_deref(),
                Some("backoff")
            );
        }
        assert_no_canary(&h, row.name);
    }
}

#[tokio::test]
async fn a_transport_error_is_a_fallback_with_its_error_type() {
    let h = Harness::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = h
        .client
        .post(format!(
            "http://127.0.0.1:{port}/v1/chat/completions?key={CANARY}"
        ))
        .header("x-api-key", CANARY)
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let (call, attempts) = h.call();
    assert_eq!(
        attr(&call, "status_class").as_deref(),
        Some("transport_error")
    );
    assert_eq!(attr(&call, "error.type").as_deref(), Some("connect"));
    assert_eq!(
        attr(&call, "fallback_decision").as_deref(),
        Some("fallback")
    );
    assert_eq!(attempts.len(), 1);
    assert_no_canary(&h, "transport error");
}

#[tokio::test]
async fn a_streaming_span_ends_with_its_stream_and_carries_time_to_first_chunk() {
    let h = Harness::new();
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .header("api-key", CANARY)
        .body(r#"{"model":"gpt-4o-mini","stream":true}"#)
        .send()
        .await
        .unwrap();
    // Headers are in, the body is not read: the call span is still open.
    let open = h.finished();
    assert!(
        open.iter().all(|s| s.name != "chat gpt-4o-mini"),
        "the call span ended before its stream: {:?}",
        names(&open)
    );
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
    }
    drop(body);
    let (call, attempts) = h.call();
    assert_eq!(attempts.len(), 1);
    let a = attrs(&call);
    assert_eq!(a["parse_check"], "pass");
    assert_eq!(a["fallback_decision"], "none");
    assert_eq!(a["gen_ai.response.finish_reasons"], r#"["stop"]"#);
    assert_eq!(a["gen_ai.usage.input_tokens"], "7");
    assert_eq!(a["gen_ai.usage.output_tokens"], "2");
    let ttfc: f64 = a["gen_ai.response.time_to_first_chunk"].parse().unwrap();
    assert!(ttfc > 0.0 && ttfc < 10.0, "{ttfc}");
    assert!(call.end_time >= attempts[0].end_time);

    let metrics = h.metrics();
    let ttfc_points = histogram(&metrics, metric::TIME_TO_FIRST_CHUNK);
    assert_eq!(ttfc_points.len(), 1);
    assert_eq!(ttfc_points[0].count, 1);
    // Three events: one value for the stream, the mean gap after its first chunk.
    let tpoc = histogram(&metrics, metric::TIME_PER_OUTPUT_CHUNK);
    assert_eq!(tpoc.len(), 1);
    assert_eq!(tpoc[0].count, 1);
    assert_eq!(tpoc[0].bounds, DURATION_BUCKETS);
    assert_eq!(tpoc[0].attributes["gen_ai.operation.name"], "chat");
    assert_no_canary(&h, "stream");
}

#[tokio::test]
async fn a_cancelled_stream_still_ends_its_span() {
    let h = Harness::new();
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    let response = chat(&h, &server).await;
    drop(response);
    let (call, _) = h.call();
    assert_eq!(attr(&call, "parse_check").as_deref(), Some("skipped"));
    assert_eq!(
        attr(&call, "contract.skip_reason").as_deref(),
        Some("cancelled")
    );
}

struct Point {
    attributes: HashMap<String, String>,
    count: u64,
    bounds: Vec<f64>,
}

fn histogram(metrics: &[ResourceMetrics], name: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        out.extend(h.data_points().map(|p| {
                            Point {
                                attributes: p
                                    .attributes()
                                    .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                                    .collect(),
                                count: p.count(),
                                bounds: p.bounds().collect(),
                            }
                        }));
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        out.extend(h.data_points().map(|p| {
                            Point {
                                attributes: p
                                    .attributes()
                                    .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                                    .collect(),
                                count: p.count(),
                                bounds: p.bounds().collect(),
                            }
                        }));
                    }
                    other => panic!("{name} is not a histogram: {other:?}"),
                }
            }
        }
    }
    out
}

fn counter(metrics: &[ResourceMetrics], name: &str) -> Vec<(HashMap<String, String>, u64)> {
    let mut out = Vec::new();
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() else {
                    panic!("{name} is not a u64 sum");
                };
                out.extend(s.data_points().map(|p| {
                    (
                        p.attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                            .collect(),
                        p.value(),
                    )
                }));
            }
        }
    }
    out
}

fn unit(metrics: &[ResourceMetrics], name: &str) -> String {
    let metric = metrics
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .find(|m| m.name() == name);
    metric.expect(name).unit().to_owned()
}

#[tokio::test]
async fn metrics_carry_the_conventions_names_units_buckets_and_low_cardinality_attributes() {
    let h = Harness::new();
    // A 429 retried into a 200, then a Cloudflare wall, then an HTML 200.
    for row in rows()
        .into_iter()
        .filter(|r| ["429 then 200", "waf challenge on 403", "html 200"].contains(&r.name))
    {
        let server = serve(&row).await;
        let _ = h
            .client
            .post(format!("{}{}", server.uri(), row.path))
            .body(r#"{"model":"gpt-4o-mini"}"#)
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    let m = h.metrics();
    assert_eq!(unit(&m, metric::OPERATION_DURATION), "s");
    assert_eq!(unit(&m, metric::TOKEN_USAGE), "{token}");
    assert_eq!(unit(&m, metric::CALLS), "{call}");

    let durations = histogram(&m, metric::OPERATION_DURATION);
    assert_eq!(durations.iter().map(|p| p.count).sum::<u64>(), 3);
    for p in &durations {
        assert_eq!(p.bounds, DURATION_BUCKETS);
        assert_eq!(p.attributes["gen_ai.operation.name"], "chat");
        assert_eq!(p.attributes["gen_ai.provider.name"], "openai");
        assert_eq!(p.attributes["gen_ai.request.model"], "gpt-4o-mini");
        assert_eq!(p.attributes["server.address"], "127.0.0.1");
        assert!(p.attributes.contains_key("server.port"));
    }
    let tokens = histogram(&m, metric::TOKEN_USAGE);
    let types: Vec<&str> = tokens
        .iter()
        .map(|p| p.attributes["gen_ai.token.type"].as_str())
        .collect();
    assert!(
        types.contains(&"input") && types.contains(&"output"),
        "{types:?}"
    );
    assert!(tokens.iter().all(|p| p.bounds == TOKEN_BUCKETS));

    let calls = counter(&m, metric::CALLS);
    let allowed = [
        "api_surface",
        "status_class",
        "parse_check",
        "fallback_decision",
        "gen_ai.provider.name",
        "server.address",
    ];
    for (attributes, _) in &calls {
        let mut keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = allowed.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
    let decisions: HashMap<String, u64> = calls
        .iter()
        .map(|(a, n)| (a["fallback_decision"].clone(), *n))
        .fold(HashMap::new(), |mut acc, (d, n)| {
            *acc.entry(d).or_default() += n;
            acc
        });
    assert_eq!(decisions.get("none"), Some(&1));
    assert_eq!(decisions.get("hold"), Some(&1));
    assert_eq!(decisions.get("fallback"), Some(&1));

    // Every evidence counter carries the host and the provider; no failover layer ran.
    for name in [
        metric::CALLS,
        metric::RETRIES,
        metric::WAF_WALLS,
        metric::CONTRACT_VIOLATIONS,
    ] {
        for (labels, _) in counter(&m, name) {
            assert_eq!(labels["server.address"], "127.0.0.1", "{name}");
            assert_eq!(labels["gen_ai.provider.name"], "openai", "{name}");
            assert!(!labels.contains_key("failover.upstream"), "{name}");
        }
    }
    let retries = counter(&m, metric::RETRIES);
    assert_eq!(retries.iter().map(|r| r.1).sum::<u64>(), 1);
    assert_eq!(retries[0].0["retry.wait_reason"], "backoff");
    let walls = counter(&m, metric::WAF_WALLS);
    assert_eq!(walls.len(), 1);
    assert_eq!(walls[0].0["waf.vendor"], "cloudflare");
    let violations = counter(&m, metric::CONTRACT_VIOLATIONS);
    let codes: Vec<&str> = violations
        .iter()
        .map(|v| v.0["contract.violation"].as_str())
        .collect();
    assert!(codes.contains(&"html_body"), "{codes:?}");
}

/// A tracing subscriber layer that keeps every event and span field it sees, as text.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogSink {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(format!("{attrs:?}"));
    }
}

fn assert_no_canary(h: &Harness, scenario: &str) {
    for span in h.finished() {
        let text = format!("{span:?}");
        assert!(
            !text.contains("CANARY"),
            "{scenario}: span {} leaks: {text}",
            span.name
        );
    }
    for rm in h.metrics() {
        let text = format!("{rm:?}");
        assert!(!text.contains("CANARY"), "{scenario}: metrics leak: {text}");
    }
}

#[tokio::test]
async fn the_callers_tracing_span_is_the_parent_and_traceparent_reaches_the_server() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let h = Harness::new();
    let logs = LogSink::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(h.tracer_provider.tracer("app")))
        .with(logs.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&server)
        .await;
    let handler = tracing::info_span!("handle_request");
    async {
        let _ = h
            .client
            .post(format!(
                "{}/v1/chat/completions?api_key={CANARY}",
                server.uri()
            ))
            .bearer_auth(CANARY)
            .body(format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{CANARY}"}}]}}"#
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    .instrument(handler.clone())
    .await;
    drop(handler);

    let spans = h.finished();
    let app = spans
        .iter()
        .find(|s| s.name == "handle_request")
        .expect("the caller's span");
    let call = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .expect("the call span");
    assert_eq!(
        call.parent_span_id,
        app.span_context.span_id(),
        "parented under the caller"
    );
    assert_eq!(call.span_context.trace_id(), app.span_context.trace_id());
    let attempt = spans
        .iter()
        .find(|s| s.parent_span_id == call.span_context.span_id())
        .expect("an attempt");

    let requests: Vec<Request> = server.received_requests().await.unwrap();
    let traceparent = requests[0]
        .headers
        .get("traceparent")
        .expect("traceparent sent")
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], call.span_context.trace_id().to_string());
    assert_eq!(
        parts[2],
        attempt.span_context.span_id().to_string(),
        "the server sees the attempt span"
    );
    assert_ne!(attempt.span_context.span_id(), SpanId::INVALID);

    for line in logs.0.lock().unwrap().iter() {
        assert!(!line.contains("CANARY"), "log leaks: {line}");
    }
    assert_no_canary(&h, "tracing parent");
}

/// A content attribute, which must be valid JSON whatever was cut.
fn content(span: &SpanData, key: &str) -> serde_json::Value {
    let text = attr(span, key).unwrap_or_else(|| panic!("{key} recorded"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {text}"))
}

#[tokio::test]
async fn content_is_recorded_only_when_asked_and_then_truncated() {
    let h = Harness::with(|t| t.with_content_capture(20));
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&server)
        .await;
    let prompt = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{CANARY} and a long tail"}},{{"role":"user","content":"past the cut"}}]}}"#
    );
    h.client
        .post(format!("{}/v1/chat/completions?key={CANARY}", server.uri()))
        .bearer_auth(CANARY)
        .body(prompt)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (call, _) = h.call();
    // 20 characters and an ellipsis; the message past the cut is left out.
    assert_eq!(
        content(&call, "gen_ai.input.messages"),
        serde_json::json!([{"role": "user", "parts": [{"type": "text", "content": "sk-CANARY-7f3a9c and…"}]}])
    );
    assert_eq!(
        content(&call, "gen_ai.output.messages"),
        serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "PASS sk-CANARY-7f3a9…"}], "finish_reason": "stop"}])
    );
    // Only the two content attributes carry it: never a header or the URL.
    for kv in &call.attributes {
        let k = kv.key.as_str();
        if k != "gen_ai.input.messages" && k != "gen_ai.output.messages" {
            assert!(!kv.value.as_str().contains("CANARY"), "{k}");
        }
    }

    // Off by default.
    let h = Harness::new();
    chat(&h, &server).await.bytes().await.unwrap();
    let (call, _) = h.call();
    assert_eq!(attr(&call, "gen_ai.input.messages"), None);
    assert_eq!(attr(&call, "gen_ai.output.messages"), None);
}

#[tokio::test]
async fn captured_content_stays_json_when_cut_inside_multibyte_text() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/responses"))
        .respond_with(json(200, RESP_OK_MULTIBYTE))
        .mount(&server)
        .await;
    // Cut after 5, 6 and 7 characters: inside the kana, at the quote, at the backslash.
    for max in [5, 6, 7, 40] {
        let h = Harness::with(|t| t.with_content_capture(max));
        h.client
            .post(format!("{}/v1/responses", server.uri()))
            .body(r#"{"model":"gpt-5","instructions":"日本語で\"答えて\"\\ください","input":[{"role":"user","content":[{"type":"input_text","text":"こんにちは\"世界\"\\です"}]}]}"#)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (call, _) = h.call();
        let input = content(&call, "gen_ai.input.messages");
        let text = input[0]["parts"][0]["content"].as_str().unwrap();
        assert!(
            text.trim_end_matches('…').chars().count() <= max,
            "{max}: {text}"
        );
        assert_eq!(input[0]["role"], "user");
        let system = content(&call, "gen_ai.system_instructions");
        assert_eq!(system[0]["type"], "text");
        let output = content(&call, "gen_ai.output.messages");
        let text = output[0]["parts"][0]["content"].as_str().unwrap();
        assert!(
            text.trim_end_matches('…').chars().count() <= max,
            "{max}: {text}"
        );
        if max == 40 {
            assert_eq!(text, "答え: \"はい\" \\ 🎉");
        }
    }
}

#[tokio::test]
async fn streamed_content_is_captured_from_the_deltas() {
    let h = Harness::with(|t| t.with_content_capture(100));
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    chat(&h, &server).await.bytes().await.unwrap();
    let (call, _) = h.call();
    assert_eq!(
        content(&call, "gen_ai.output.messages"),
        serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": CANARY}], "finish_reason": "stop"}])
    );
}

fn events(span: &SpanData, name: &str) -> Vec<HashMap<String, String>> {
    span.events
        .iter()
        .filter(|e| e.name == name)
        .map(|e| {
            e.attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn n_3_of_a_claude_model_through_the_mock_gateway_leaves_the_lint_and_the_mismatch() {
    let h = Harness::new();
    let gateway = reqwest_llm_guard::mock::MockGateway::start().await.unwrap();
    h.client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .body(r#"{"model":"claude-sonnet-4-5","n":3,"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (call, _) = h.call();
    assert_eq!(attr(&call, "request_check").as_deref(), Some("warn"));
    assert_eq!(attr(&call, "request_check.warnings").as_deref(), Some("1"));
    let lint = events(&call, "llm_guard.request_check");
    assert_eq!(lint.len(), 1);
    assert_eq!(lint[0]["lint.rule"], "n_unsupported");
    assert_eq!(lint[0]["lint.family"], "claude");
    assert_eq!(attr(&call, "response_check").as_deref(), Some("warn"));
    let check = events(&call, "llm_guard.response_check");
    assert_eq!(check.len(), 1, "{check:?}");
    assert_eq!(check[0]["lint.rule"], "choices_mismatch");
    // Evidence, not a verdict: the call itself stands.
    assert_eq!(attr(&call, "fallback_decision").as_deref(), Some("none"));
    let findings = counter(&h.metrics(), metric::LINT_FINDINGS);
    let mut got: Vec<(String, String)> = findings
        .iter()
        .map(|(a, _)| (a["lint.rule"].clone(), a["lint.phase"].clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("choices_mismatch".to_owned(), "response".to_owned()),
            ("n_unsupported".to_owned(), "request".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_clean_request_passes_both_checks() {
    let h = Harness::new();
    let gateway = reqwest_llm_guard::mock::MockGateway::start().await.unwrap();
    h.client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .body(r#"{"model":"gpt-4o-mini","n":2,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (call, _) = h.call();
    assert_eq!(attr(&call, "request_check").as_deref(), Some("pass"));
    assert_eq!(attr(&call, "response_check").as_deref(), Some("pass"));
    assert!(call.events.is_empty());
}

/// A policy unlike the default table in every case it is tried on below.
fn always_hold(_: &reqwest_llm_guard::evidence::Outcome<'_>) -> FallbackDecision {
    FallbackDecision::Hold
}

use reqwest_llm_guard::evidence::{FallbackDecision, ParseCheck, SkipReason, StatusClass};
use reqwest_llm_guard::{Evidence, EvidenceHandle};

#[tokio::test]
async fn one_policy_decides_json_streams_errors_and_cancelled_calls_alike() {
    let h = Harness::with(|t| t.with_decision_policy(always_hold));
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&server)
        .await;
    Mock::given(path("/stream/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    Mock::given(path("/slow/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let mut seen: Vec<(&str, Evidence)> = Vec::new();

    // A JSON answer the default table would call `none`.
    let response = chat(&h, &server).await;
    seen.push(("json", Evidence::of(&response)));

    // A stream, decided at its end.
    let response = h
        .client
        .post(format!("{}/stream/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","stream":true}"#)
        .send()
        .await
        .unwrap();
    let pending = Evidence::handle(&response);
    assert_eq!(Evidence::of(&response).parse_check, None, "not ended yet");
    let _ = response.bytes().await.unwrap();
    seen.push(("stream", pending.settled().await));

    // A transport error: the default table says `fallback`.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let handle = EvidenceHandle::new();
    let err = h
        .client
        .post(format!("http://{closed}/v1/chat/completions"))
        .with_extension(handle.clone())
        .body("{}")
        .send()
        .await;
    assert!(err.is_err());
    seen.push(("transport error", handle.get().unwrap()));

    // A call the caller gives up on: its future is dropped mid-flight.
    let handle = EvidenceHandle::new();
    let call = h
        .client
        .post(format!("{}/slow/v1/chat/completions", server.uri()))
        .with_extension(handle.clone())
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    seen.push((
        "cancelled",
        handle.get().expect("settled when the future was dropped"),
    ));

    for (name, e) in &seen {
        assert_eq!(e.fallback_decision, FallbackDecision::Hold, "{name}: {e:?}");
    }
    let cancelled = &seen[3].1;
    assert_eq!(cancelled.status_class, StatusClass::Cancelled);
    assert_eq!(cancelled.parse_check, Some(ParseCheck::Skipped));
    assert_eq!(cancelled.skip_reason, Some(SkipReason::Cancelled));
    assert_eq!(seen[2].1.status_class, StatusClass::TransportError);

    // The spans say the same.
    let spans = h.finished();
    let calls: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client && s.name.starts_with("chat"))
        .collect();
    assert_eq!(calls.len(), 4, "{:?}", names(&spans));
    for call in &calls {
        assert_eq!(
            attr(call, "fallback_decision").as_deref(),
            Some("hold"),
            "{}",
            call.name
        );
    }
    let cancelled_span = calls
        .iter()
        .find(|s| attr(s, "contract.skip_reason").as_deref() == Some("cancelled"))
        .expect("the cancelled call's span ended with its evidence");
    assert_eq!(
        attr(cancelled_span, "parse_check").as_deref(),
        Some("skipped")
    );
    assert_eq!(
        attr(cancelled_span, "status_class").as_deref(),
        Some("cancelled")
    );

    // And so do the metrics: four calls, all `hold`, the cancelled one counted.
    let metrics = h.metrics();
    let calls = counter(&metrics, metric::CALLS);
    let total: u64 = calls.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 4, "{calls:?}");
    assert!(
        calls.iter().all(|(l, _)| l["fallback_decision"] == "hold"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|(l, n)| l["status_class"] == "cancelled" && *n == 1),
        "{calls:?}"
    );
}

#[tokio::test]
async fn the_guards_policy_reaches_evidence_without_telemetry() {
    let client = Guard::new()
        .without_telemetry()
        .with_decision_policy(always_hold)
        .client(reqwest::Client::new());
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    let response = client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","stream":true}"#)
        .send()
        .await
        .unwrap();
    let evidence = Evidence::handle(&response);
    assert_eq!(
        Evidence::of(&response).fallback_decision,
        FallbackDecision::Hold
    );
    drop(response);
    let evidence = evidence.settled().await;
    assert_eq!(evidence.fallback_decision, FallbackDecision::Hold);
    assert_eq!(evidence.skip_reason, Some(SkipReason::Cancelled));
}

#[tokio::test]
async fn the_attempt_layer_follows_its_call_layer_configured_after_it() {
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let telemetry = Telemetry::new();
    // Taken before the call layer is pointed at its provider.
    let attempts = telemetry.attempt_layer();
    let telemetry = telemetry.with_tracer_provider(&provider);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(telemetry)
        .with(
            Retry::new()
                .with_policy(quick())
                .with_min_backoff(Duration::ZERO),
        )
        .with(attempts)
        .with(reqwest_llm_guard::inspect::Inspect::new())
        .build();
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&server)
        .await;
    let _ = client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let finished = spans.get_finished_spans().unwrap();
    assert_eq!(
        finished.len(),
        2,
        "call and attempt: {:?}",
        names(&finished)
    );
    let call = finished
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .unwrap();
    let attempt = finished.iter().find(|s| s.name == "POST").unwrap();
    assert_eq!(attempt.parent_span_id, call.span_context.span_id());
}

#[tokio::test]
async fn a_guard_nested_in_a_guard_records_and_retries_the_call_once() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(
            429,
            r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
        ))
        .expect(3)
        .mount(&server)
        .await;
    let inner = Guard::new()
        .with_retry(
            Retry::new()
                .with_policy(quick())
                .with_min_backoff(Duration::ZERO),
        )
        .without_telemetry();
    let outer = Guard::new().with_retry(
        Retry::new()
            .with_policy(quick())
            .with_min_backoff(Duration::ZERO),
    );
    let client = inner
        .layer(outer.layer(reqwest_middleware::ClientBuilder::new(
            reqwest::Client::new(),
        )))
        .build();
    let response = client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let evidence = Evidence::of(&response);
    assert_eq!(evidence.retry_count, 2);
    assert_eq!(evidence.fallback_decision, FallbackDecision::Fallback);
}

#[tokio::test]
async fn a_followed_redirect_and_why_retrying_stopped_are_on_the_call_span() {
    let h = Harness::new();
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/moved/v1/chat/completions", server.uri()),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/moved/v1/chat/completions"))
        .respond_with(json(429, r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#))
        .mount(&server)
        .await;
    let response = chat(&h, &server).await;
    assert_eq!(response.status(), 429);
    let (call, attempts) = h.call();
    assert_eq!(attempts.len(), 3);
    let a = attrs(&call);
    assert_eq!(a["redirect.followed"], "true");
    assert_eq!(a["redirect.server_address"], "127.0.0.1");
    assert_eq!(a["retry.stop_reason"], "attempts_exhausted");
    assert_eq!(a["fallback_decision"], "fallback");
}

#[tokio::test]
async fn failover_is_on_the_trace_and_in_the_metrics() {
    use reqwest_llm_guard::failover::{Failover, Upstream};
    let h = Harness::new();
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&a)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&b)
        .await;
    let failover = Failover::builder([
        Upstream::new("primary", &format!("{}/v1", a.uri())).unwrap(),
        Upstream::new("secondary", &format!("{}/v1", b.uri())).unwrap(),
    ])
    .with_meter_provider(&h.meter_provider)
    .build();
    let client = Guard::new()
        .with_telemetry(
            Telemetry::new()
                .with_tracer_provider(&h.tracer_provider)
                .with_meter_provider(&h.meter_provider),
        )
        .with_retry(
            Retry::new()
                .with_policy(quick())
                .with_min_backoff(Duration::ZERO),
        )
        .with_failover(failover)
        .client(reqwest::Client::new());
    let response = chat_to(&client, &a).await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;

    let (call, attempts) = h.call();
    let a_ = attrs(&call);
    assert_eq!(a_["failover.upstream"], "secondary");
    assert_eq!(a_["failover.hops"], "1");
    assert_eq!(a_["failover.stop_reason"], "decided");
    assert_eq!(a_["fallback_decision"], "none");
    let hops = events(&call, "llm_guard.failover_hop");
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0]["failover.from"], "primary");
    assert_eq!(hops[0]["failover.to"], "secondary");
    assert_eq!(hops[0]["failover.reason"], "upstream_failed");
    let upstreams: Vec<String> = attempts
        .iter()
        .map(|s| attr(s, "failover.upstream").unwrap_or_default())
        .collect();
    assert_eq!(
        upstreams,
        ["primary", "secondary"],
        "each hop's attempt names its upstream"
    );

    let metrics = h.metrics();
    // The evidence counters name the upstream that answered, the host and the provider.
    let calls = counter(&metrics, metric::CALLS);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0["failover.upstream"], "secondary");
    assert_eq!(calls[0].0["server.address"], "127.0.0.1");
    assert_eq!(calls[0].0["gen_ai.provider.name"], "openai");
    let hops = counter(&metrics, metric::FAILOVER_HOPS);
    assert_eq!(hops.len(), 1, "{hops:?}");
    assert_eq!(hops[0].0["failover.from"], "primary");
    assert_eq!(hops[0].0["failover.reason"], "upstream_failed");
    let states = gauge(&metrics, metric::BREAKER_STATE);
    assert!(
        states
            .iter()
            .any(|(l, v)| l["failover.upstream"] == "primary"
                && l["breaker.state"] == "closed"
                && *v == 1),
        "{states:?}"
    );
    assert_no_canary(&h, "failover");
}

async fn chat_to(client: &ClientWithMiddleware, server: &MockServer) -> reqwest::Response {
    client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap()
}

fn gauge(metrics: &[ResourceMetrics], name: &str) -> Vec<(HashMap<String, String>, u64)> {
    let mut out = Vec::new();
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                let AggregatedMetrics::U64(MetricData::Gauge(g)) = m.data() else {
                    panic!("{name} is not a u64 gauge");
                };
                out.extend(g.data_points().map(|p| {
                    (
                        p.attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                            .collect(),
                        p.value(),
                    )
                }));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The conventions as they stand: provider, operation, request parameters, usage details, modes
// ---------------------------------------------------------------------------------------------

/// OpenAI's recorded usage shapes (cached tokens in the input details, reasoning tokens in the
/// output details), with its service tier and fingerprint.
const CHAT_USAGE: &str = r#"{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
const RESPONSES_USAGE: &str = r#"{"input_tokens":2006,"input_tokens_details":{"cached_tokens":1920,"cache_write_tokens":64},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":192},"total_tokens":2306}"#;

fn chat_details() -> String {
    format!(
        r#"{{"id":"chatcmpl-7","object":"chat.completion","created":1,"model":"gpt-5-2025-08-07","service_tier":"default","system_fingerprint":"fp_d0469e1700","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{CHAT_USAGE}}}"#
    )
}

fn chat_stream_details() -> String {
    format!(
        "data: {{\"id\":\"c7\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_d0469e1700\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"ok\"}},\"finish_reason\":null}}]}}\n\n\
         data: {{\"id\":\"c7\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_d0469e1700\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n\
         data: {{\"id\":\"c7\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-5\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_d0469e1700\",\"choices\":[],\"usage\":{CHAT_USAGE}}}\n\n\
         data: [DONE]\n\n"
    )
}

fn responses_details() -> String {
    format!(
        r#"{{"id":"resp_7","object":"response","created_at":1,"status":"completed","model":"gpt-5","service_tier":"default","output":[],"error":null,"incomplete_details":null,"usage":{RESPONSES_USAGE}}}"#
    )
}

fn responses_stream_details() -> String {
    format!(
        "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"resp_7\",\"status\":\"in_progress\",\"model\":\"gpt-5\",\"service_tier\":\"auto\"}}}}\n\n\
         event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":1,\"response\":{{\"id\":\"resp_7\",\"status\":\"completed\",\"model\":\"gpt-5\",\"service_tier\":\"default\",\"usage\":{RESPONSES_USAGE}}}}}\n\n"
    )
}

/// A server answering Chat and Responses, whole under `/json` and streamed under `/sse`.
async fn detailed_server() -> MockServer {
    let server = MockServer::start().await;
    let sse = |body: String| ResponseTemplate::new(200).set_body_raw(body, "text/event-stream");
    let whole = |body: String| ResponseTemplate::new(200).set_body_raw(body, "application/json");
    for (p, r) in [
        ("/json/v1/chat/completions", whole(chat_details())),
        ("/sse/v1/chat/completions", sse(chat_stream_details())),
        ("/json/v1/responses", whole(responses_details())),
        ("/sse/v1/responses", sse(responses_stream_details())),
        ("/json/v1/responses/resp_7", whole(responses_details())),
    ] {
        Mock::given(path(p)).respond_with(r).mount(&server).await;
    }
    server
}

async fn post(h: &Harness, url: String, body: &str) {
    h.client
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
}

#[tokio::test]
async fn cached_and_reasoning_tokens_from_either_surface_whole_or_streamed() {
    let server = detailed_server().await;
    for (route, cache_write) in [
        ("/json/v1/chat/completions", None),
        ("/sse/v1/chat/completions", None),
        ("/json/v1/responses", Some("64")),
        ("/sse/v1/responses", Some("64")),
    ] {
        let h = Harness::new();
        post(
            &h,
            format!("{}{route}", server.uri()),
            r#"{"model":"gpt-5","stream":true,"input":"hi","messages":[]}"#,
        )
        .await;
        let (call, _) = h.call();
        let a = attrs(&call);
        assert_eq!(a["parse_check"], "pass", "{route}");
        assert_eq!(a["gen_ai.usage.input_tokens"], "2006", "{route}");
        assert_eq!(a["gen_ai.usage.output_tokens"], "300", "{route}");
        assert_eq!(a["gen_ai.usage.cache_read.input_tokens"], "1920", "{route}");
        assert_eq!(a["gen_ai.usage.reasoning.output_tokens"], "192", "{route}");
        // v1.41's name by default.
        assert_eq!(
            a.get("gen_ai.usage.cache_creation.input_tokens")
                .map(String::as_str),
            cache_write,
            "{route}"
        );
        assert!(!a.contains_key("gen_ai.usage.cache_write.input_tokens"));
        // The tier that served it (a Responses stream's terminal event, not `auto`).
        assert_eq!(a["openai.response.service_tier"], "default", "{route}");
        if route.ends_with("chat/completions") {
            assert_eq!(a["openai.response.system_fingerprint"], "fp_d0469e1700");
        }
    }
}

#[tokio::test]
async fn the_provider_set_on_the_layer_wins_and_openai_attributes_follow_it() {
    let server = detailed_server().await;
    let body =
        r#"{"model":"gpt-5","service_tier":"flex","messages":[{"role":"user","content":"hi"}]}"#;

    // 127.0.0.1 is no known provider's host: the flavour of the API it speaks, `openai`.
    let h = Harness::new();
    post(
        &h,
        format!("{}/json/v1/chat/completions", server.uri()),
        body,
    )
    .await;
    let (call, _) = h.call();
    let a = attrs(&call);
    assert_eq!(a["gen_ai.provider.name"], "openai");
    assert_eq!(a["openai.api.type"], "chat_completions");
    assert_eq!(a["openai.request.service_tier"], "flex");
    assert_eq!(a["openai.response.service_tier"], "default");
    let durations = histogram(&h.metrics(), metric::OPERATION_DURATION);
    assert_eq!(
        durations[0].attributes["openai.response.service_tier"],
        "default"
    );

    // Set on the layer, it wins over the host; no `openai.*` anywhere for another provider.
    let h = Harness::with(|t| t.with_provider_name("groq"));
    post(
        &h,
        format!("{}/json/v1/chat/completions", server.uri()),
        body,
    )
    .await;
    let (call, attempts) = h.call();
    let a = attrs(&call);
    assert_eq!(a["gen_ai.provider.name"], "groq");
    for span in attempts.iter().chain([&call]) {
        for kv in &span.attributes {
            assert!(!kv.key.as_str().starts_with("openai."), "{}", kv.key);
        }
    }
    // The token usage and cache figures stay: they are the conventions' own.
    assert_eq!(a["gen_ai.usage.cache_read.input_tokens"], "1920");
    let metrics = h.metrics();
    for p in histogram(&metrics, metric::OPERATION_DURATION)
        .iter()
        .chain(&histogram(&metrics, metric::TOKEN_USAGE))
    {
        assert_eq!(p.attributes["gen_ai.provider.name"], "groq");
        assert!(p.attributes.keys().all(|k| !k.starts_with("openai.")));
    }
    for (labels, _) in counter(&metrics, metric::CALLS) {
        assert_eq!(labels["gen_ai.provider.name"], "groq");
    }
}

#[tokio::test]
async fn a_call_that_is_no_genai_operation_has_no_operation_name() {
    let h = Harness::new();
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(json(200, r#"{"object":"list","data":[],"model":"e"}"#))
        .mount(&server)
        .await;
    post(
        &h,
        format!("{}/v1/embeddings", server.uri()),
        r#"{"model":"text-embedding-3-small","input":"hi","stream":false}"#,
    )
    .await;
    let (call, _) = h.call();
    // Named as the HTTP conventions name a client span.
    assert_eq!(call.name, "POST");
    let a = attrs(&call);
    assert_eq!(a["api_surface"], "other");
    for key in [
        "gen_ai.operation.name",
        "openai.api.type",
        "gen_ai.request.stream",
    ] {
        assert!(!a.contains_key(key), "{key} on an `other` call");
    }
    let metrics = h.metrics();
    assert!(histogram(&metrics, metric::OPERATION_DURATION).is_empty());
    let calls = counter(&metrics, metric::CALLS);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0["api_surface"], "other");

    // A stored response read back is `fetch_response`: no token usage.
    let server = detailed_server().await;
    let h = Harness::new();
    h.client
        .get(format!("{}/json/v1/responses/resp_7", server.uri()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (call, _) = h.call();
    assert_eq!(call.name, "fetch_response");
    let a = attrs(&call);
    assert_eq!(a["gen_ai.operation.name"], "fetch_response");
    assert!(a.keys().all(|k| !k.starts_with("gen_ai.usage.")), "{a:?}");
    assert!(histogram(&h.metrics(), metric::TOKEN_USAGE).is_empty());
}

#[tokio::test]
async fn the_request_parameters_are_on_the_call_span() {
    let server = detailed_server().await;
    let h = Harness::new();
    post(
        &h,
        format!("{}/sse/v1/chat/completions", server.uri()),
        &format!(
            r#"{{"model":"gpt-5","messages":[{{"role":"user","content":"{CANARY}"}}],"stream":true,"max_completion_tokens":512,"temperature":0.2,"top_p":0.9,"frequency_penalty":0.5,"presence_penalty":0.25,"stop":["END"],"seed":7,"n":2,"reasoning_effort":"low","response_format":{{"type":"json_object"}}}}"#
        ),
    )
    .await;
    let (call, _) = h.call();
    let a = attrs(&call);
    for (k, v) in [
        ("gen_ai.request.stream", "true"),
        ("gen_ai.request.max_tokens", "512"),
        ("gen_ai.request.temperature", "0.2"),
        ("gen_ai.request.top_p", "0.9"),
        ("gen_ai.request.frequency_penalty", "0.5"),
        ("gen_ai.request.presence_penalty", "0.25"),
        ("gen_ai.request.stop_sequences", r#"["END"]"#),
        ("gen_ai.request.seed", "7"),
        ("gen_ai.request.choice.count", "2"),
        ("gen_ai.request.reasoning.level", "low"),
        ("gen_ai.output.type", "json"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_no_canary(&h, "request parameters");

    // Responses: the state it continues.
    let h = Harness::new();
    post(
        &h,
        format!("{}/json/v1/responses", server.uri()),
        r#"{"model":"gpt-5","input":"again","previous_response_id":"resp_6","conversation":{"id":"conv_68a"},"max_output_tokens":64,"reasoning":{"effort":"high"}}"#,
    )
    .await;
    let (call, _) = h.call();
    let a = attrs(&call);
    assert_eq!(a["gen_ai.request.previous_response.id"], "resp_6");
    assert_eq!(a["gen_ai.conversation.id"], "conv_68a");
    assert_eq!(a["gen_ai.request.max_tokens"], "64");
    assert_eq!(a["gen_ai.request.reasoning.level"], "high");
    assert_eq!(a["gen_ai.request.stream"], "false");
    assert!(!a.contains_key("gen_ai.request.choice.count"));
}

fn metric_names(metrics: &[ResourceMetrics]) -> std::collections::BTreeSet<String> {
    metrics
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .map(|m| m.name().to_owned())
        .collect()
}

/// The three calls the opt-in tests make: Chat whole and streamed, and a stored response read
/// back.
async fn three_calls(h: &Harness, server: &MockServer) {
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    post(
        h,
        format!("{}/json/v1/chat/completions", server.uri()),
        body,
    )
    .await;
    post(h, format!("{}/sse/v1/chat/completions", server.uri()), body).await;
    h.client
        .get(format!("{}/json/v1/responses/resp_7", server.uri()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
}

/// What the latest conventions' instruments hold after [`three_calls`].
fn assert_latest_names(metrics: &[ResourceMetrics]) {
    let names = metric_names(metrics);
    for name in [
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
        // For `fetch_response`, which is no inference.
        metric::OPERATION_DURATION,
        metric::CALLS,
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    for name in [
        metric::TOKEN_USAGE,
        metric::TIME_TO_FIRST_CHUNK,
        metric::TIME_PER_OUTPUT_CHUNK,
    ] {
        assert!(!names.contains(name), "{name} in {names:?}");
    }
    let inference = histogram(metrics, metric::INFERENCE_DURATION);
    assert_eq!(inference.iter().map(|p| p.count).sum::<u64>(), 2);
    let operation = histogram(metrics, metric::OPERATION_DURATION);
    assert_eq!(operation.len(), 1);
    assert_eq!(
        operation[0].attributes["gen_ai.operation.name"],
        "fetch_response"
    );
    assert_eq!(
        unit(metrics, metric::INFERENCE_USAGE_INPUT_TOKENS),
        "{token}"
    );
    let total = |name| -> u64 { counter(metrics, name).iter().map(|(_, n)| n).sum() };
    assert_eq!(total(metric::INFERENCE_USAGE_INPUT_TOKENS), 2 * 2006);
    assert_eq!(
        total(metric::INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS),
        2 * 1920
    );
    assert_eq!(
        total(metric::INFERENCE_USAGE_REASONING_OUTPUT_TOKENS),
        2 * 192
    );
    assert_eq!(total(metric::INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS), 0);
    for (labels, _) in counter(metrics, metric::INFERENCE_USAGE_OUTPUT_TOKENS) {
        assert_eq!(labels["gen_ai.token.modality"], "unknown");
        assert_eq!(labels["gen_ai.operation.name"], "chat");
    }
    let per_call = histogram(metrics, metric::INFERENCE_OPERATION_INPUT_TOKENS);
    assert_eq!(per_call.iter().map(|p| p.count).sum::<u64>(), 2);
    assert!(per_call.iter().all(|p| p.bounds == TOKEN_BUCKETS));
    assert!(
        per_call
            .iter()
            .all(|p| !p.attributes.contains_key("gen_ai.token.modality"))
    );
}

#[tokio::test]
async fn the_latest_conventions_rename_the_metrics_when_asked() {
    let server = detailed_server().await;
    let h = Harness::with(Telemetry::with_latest_genai_conventions);
    three_calls(&h, &server).await;
    assert_latest_names(&h.metrics());
    // The renamed span attribute too.
    let h = Harness::with(Telemetry::with_latest_genai_conventions);
    post(
        &h,
        format!("{}/json/v1/responses", server.uri()),
        r#"{"model":"gpt-5","input":"hi"}"#,
    )
    .await;
    let (call, _) = h.call();
    let a = attrs(&call);
    assert_eq!(a["gen_ai.usage.cache_write.input_tokens"], "64");
    assert!(!a.contains_key("gen_ai.usage.cache_creation.input_tokens"));
}

#[tokio::test]
async fn the_default_conventions_keep_todays_names() {
    let server = detailed_server().await;
    let h = Harness::new();
    three_calls(&h, &server).await;
    let names = metric_names(&h.metrics());
    for name in [
        metric::OPERATION_DURATION,
        metric::TOKEN_USAGE,
        metric::TIME_TO_FIRST_CHUNK,
        metric::TIME_PER_OUTPUT_CHUNK,
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("gen_ai.client.inference.")),
        "{names:?}"
    );
}

/// Environment variable that marks the child process of
/// [`the_opt_in_is_read_from_the_environment`].
const CHILD: &str = "LLM_GUARD_TELEMETRY_TEST_CHILD";

#[tokio::test]
async fn opt_in_child() {
    // Runs for real only in the child process, whose environment holds the opt-in: environment
    // variables are process-wide, and the tests of this binary run in parallel.
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let server = detailed_server().await;
    let h = Harness::new();
    three_calls(&h, &server).await;
    assert_latest_names(&h.metrics());
}

#[test]
fn the_opt_in_is_read_from_the_environment() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "opt_in_child", "--test-threads=1"])
        .env(
            "OTEL_SEMCONV_STABILITY_OPT_IN",
            "http, gen_ai_latest_experimental",
        )
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
