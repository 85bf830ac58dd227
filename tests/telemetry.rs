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

#[tokio::test]
async fn content_is_recorded_only_when_asked_and_then_truncated() {
    let h = Harness::with(|t| t.with_content_capture(20));
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(json(200, CHAT_OK))
        .mount(&server)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    let prompt = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{CANARY} and a long tail"}}]}}"#
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
    let input = attr(&call, "gen_ai.input.messages").expect("prompt recorded");
    assert!(input.starts_with(r#"[{"role":"user""#), "{input}");
    assert_eq!(
        input.chars().count(),
        21,
        "20 characters and an ellipsis: {input}"
    );
    assert_eq!(
        attr(&call, "gen_ai.output.messages").as_deref(),
        Some("PASS sk-CANARY-7f3a9…")
    );
    // Only the two content attributes carry it: never a header or the URL.
    for kv in &call.attributes {
        let k = kv.key.as_str();
        if k != "gen_ai.input.messages" && k != "gen_ai.output.messages" {
            assert!(!kv.value.as_str().contains("CANARY"), "{k}");
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
        attr(&call, "gen_ai.output.messages").as_deref(),
        Some(CANARY)
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
    let failover = Failover::new([
        Upstream::new("primary", &format!("{}/v1", a.uri())).unwrap(),
        Upstream::new("secondary", &format!("{}/v1", b.uri())).unwrap(),
    ])
    .with_meter_provider(&h.meter_provider);
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
