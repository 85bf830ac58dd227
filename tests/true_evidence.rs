//! The evidence stays true when the crate acts: a call that fails over, retries before a hop,
//! or goes where the caller's URL does not say is recorded as it happened, read back from the
//! OpenTelemetry SDK's in-memory exporters over real HTTP upstreams on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{CHAT_OK, ROLE, STOP, TEXT};
use opentelemetry::Value;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest_llm_guard::evidence::FallbackDecision;
use reqwest_llm_guard::failover::{Failover, Upstream};
use reqwest_llm_guard::retry::Retry;
use reqwest_llm_guard::telemetry::{Telemetry, metric};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use retry_policies::policies::ExponentialBackoff;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHAT_PATH: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CF_CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
<script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8f1e2d3c4b5a6978\"></script></body></html>";

struct Harness {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

impl Harness {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Self {
            spans,
            tracer_provider,
            metrics,
            meter_provider,
        }
    }

    fn telemetry(&self) -> Telemetry {
        Telemetry::new()
            .with_tracer_provider(&self.tracer_provider)
            .with_meter_provider(&self.meter_provider)
    }

    /// The whole stack over these upstreams, in order.
    fn client(&self, upstreams: impl IntoIterator<Item = Upstream>) -> ClientWithMiddleware {
        Guard::new()
            .with_telemetry(self.telemetry())
            .with_retry(quick())
            .with_failover(
                Failover::builder(upstreams)
                    .with_meter_provider(&self.meter_provider)
                    .build(),
            )
            .client(reqwest::Client::new())
    }

    /// The one call span and its attempt spans, in the order they started.
    fn call(&self) -> (SpanData, Vec<SpanData>) {
        self.tracer_provider.force_flush().unwrap();
        let spans = self.spans.get_finished_spans().unwrap();
        let calls: Vec<&SpanData> = spans
            .iter()
            .filter(|s| {
                !spans
                    .iter()
                    .any(|p| p.span_context.span_id() == s.parent_span_id)
            })
            .collect();
        assert_eq!(calls.len(), 1, "one call span");
        let call = calls[0].clone();
        let mut attempts: Vec<SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == call.span_context.span_id())
            .cloned()
            .collect();
        attempts.sort_by_key(|s| s.start_time);
        (call, attempts)
    }

    fn metrics(&self) -> Vec<ResourceMetrics> {
        self.meter_provider.force_flush().unwrap();
        self.metrics.get_finished_metrics().unwrap()
    }
}

fn quick() -> Retry {
    Retry::new()
        .with_policy(
            ExponentialBackoff::builder()
                .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
                .build_with_max_retries(2),
        )
        .with_min_backoff(Duration::ZERO)
}

fn upstream(name: &str, server: &MockServer) -> Upstream {
    Upstream::new(name, &format!("{}/v1", server.uri())).unwrap()
}

async fn serving(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path(CHAT_PATH))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

fn port(server: &MockServer) -> String {
    server.address().port().to_string()
}

fn rate_limited() -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_raw(
        r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        "application/json",
    )
}

fn chat_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json")
}

/// One call to `url`; the status (0 for an error) and the call's final evidence.
async fn call(client: &ClientWithMiddleware, url: &str) -> (u16, Evidence) {
    let handle = EvidenceHandle::new();
    let result = client
        .post(url)
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await;
    let status = match result {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, handle.settled().await)
}

fn attrs(span: &SpanData) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

/// Each key at most once: a value set again would leave two, and a backend may read either.
fn assert_no_key_twice(span: &SpanData) {
    let mut seen = std::collections::HashSet::new();
    for kv in &span.attributes {
        assert!(
            seen.insert(kv.key.as_str()),
            "{} recorded twice on {}",
            kv.key,
            span.name
        );
    }
}

/// Every data point of every counter and histogram, with its attributes.
fn points(metrics: &[ResourceMetrics]) -> Vec<(String, HashMap<String, String>, f64)> {
    fn labels<'a>(
        kv: impl Iterator<Item = &'a opentelemetry::KeyValue>,
    ) -> HashMap<String, String> {
        kv.map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    }
    let mut out = Vec::new();
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let name = m.name().to_owned();
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        for p in sum.data_points() {
                            #[allow(clippy::cast_precision_loss)]
                            out.push((name.clone(), labels(p.attributes()), p.value() as f64));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            #[allow(clippy::cast_precision_loss)]
                            out.push((name.clone(), labels(p.attributes()), p.count() as f64));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            #[allow(clippy::cast_precision_loss)]
                            out.push((name.clone(), labels(p.attributes()), p.count() as f64));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn a_429_storm_on_a_then_b_names_b_and_counts_every_retry() {
    let harness = Harness::new();
    let (a, b) = (serving(rate_limited()).await, serving(chat_ok()).await);
    let client = harness.client([upstream("a", &a), upstream("b", &b)]);
    let (status, e) = call(&client, &format!("{}{CHAT_PATH}", a.uri())).await;
    assert_eq!(status, 200);
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.hops, 1);
    assert_eq!(e.retry_count, 2, "the call's retries: both made on a");
    assert_eq!(e.upstream_retry_count, 0, "b answered at once");

    let (span, attempts) = harness.call();
    assert_no_key_twice(&span);
    let s = attrs(&span);
    assert_eq!(s["server.address"], "127.0.0.1");
    assert_eq!(s["server.port"], port(&b), "the upstream that answered");
    assert_eq!(s["gen_ai.provider.name"], "openai");
    assert_eq!(s["failover.upstream"], "b");
    assert_eq!(s["retry_count"], "2");
    assert!(
        !s.contains_key("redirect.followed"),
        "a hop is no redirect: {s:?}"
    );
    let went: Vec<(String, String, String)> = attempts
        .iter()
        .map(|a| {
            let a = attrs(a);
            (
                a["server.port"].clone(),
                a["failover.upstream"].clone(),
                a["fallback_decision"].clone(),
            )
        })
        .collect();
    let (pa, pb) = (port(&a), port(&b));
    assert_eq!(
        went,
        [
            (pa.clone(), "a".into(), "retry".into()),
            (pa.clone(), "a".into(), "retry".into()),
            (pa, "a".into(), "fallback".into()),
            (pb.clone(), "b".into(), "none".into()),
        ],
        "each attempt names where it went and what became of it"
    );

    let points = points(&harness.metrics());
    let retries: f64 = points
        .iter()
        .filter(|(n, _, _)| n == metric::RETRIES)
        .map(|(_, _, v)| v)
        .sum();
    assert!(
        (retries - 2.0).abs() < f64::EPSILON,
        "retries before the hop are counted: {retries}"
    );
    for (name, labels, _) in points
        .iter()
        .filter(|(n, _, _)| n == metric::RETRIES || n == metric::RETRIES_EXHAUSTED)
    {
        assert_eq!(
            labels["failover.upstream"], "a",
            "{name}: counted under the upstream they were made on"
        );
    }
    let calls: Vec<_> = points
        .iter()
        .filter(|(n, _, _)| n == metric::CALLS)
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["failover.upstream"], "b");
    for (name, labels, _) in &points {
        if let Some(p) = labels.get("server.port") {
            assert_eq!(p, &pb, "{name} names the upstream that answered");
        }
    }
}

#[tokio::test]
async fn a_placeholder_url_is_never_named() {
    let harness = Harness::new();
    let (a, b) = (
        serving(ResponseTemplate::new(503)).await,
        serving(chat_ok()).await,
    );
    let client = harness.client([upstream("a", &a), upstream("b", &b)]);
    let (status, e) = call(&client, "http://upstream.invalid/v1/chat/completions").await;
    assert_eq!(status, 200);
    assert_eq!(e.fallback_decision, FallbackDecision::None);

    let (span, attempts) = harness.call();
    assert_no_key_twice(&span);
    let s = attrs(&span);
    assert_eq!(s["server.address"], "127.0.0.1");
    assert_eq!(s["server.port"], port(&b));
    assert_eq!(s["gen_ai.provider.name"], "openai");
    for span in std::iter::once(&span).chain(&attempts) {
        for kv in &span.attributes {
            assert!(
                !kv.value.to_string().contains("upstream.invalid"),
                "{} = {} on {}",
                kv.key,
                kv.value,
                span.name
            );
        }
    }
    for (name, labels, _) in points(&harness.metrics()) {
        for (k, v) in labels {
            assert!(!v.contains("upstream.invalid"), "{name} {k}={v}");
        }
    }
}

#[tokio::test]
async fn a_stream_cut_before_its_commit_names_the_upstream_that_answered() {
    let harness = Harness::new();
    // a: a stream that ends before its first byte; b: a whole one.
    let a = serving(ResponseTemplate::new(200).set_body_raw("", "text/event-stream")).await;
    let b = serving(
        ResponseTemplate::new(200).set_body_raw(format!("{ROLE}{TEXT}{STOP}"), "text/event-stream"),
    )
    .await;
    let client = harness.client([upstream("a", &a), upstream("b", &b)]);
    let handle = EvidenceHandle::new();
    let response = client
        .post(format!("{}{CHAT_PATH}", a.uri()))
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .body(
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let e = handle.settled().await;
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.fallback_decision, FallbackDecision::None);

    let (span, attempts) = harness.call();
    assert_no_key_twice(&span);
    let s = attrs(&span);
    assert_eq!(s["server.port"], port(&b));
    assert_eq!(s["failover.upstream"], "b");
    assert_eq!(s["parse_check"], "pass");
    let upstreams: Vec<String> = attempts
        .iter()
        .map(|a| attrs(a)["failover.upstream"].clone())
        .collect();
    assert_eq!(upstreams, ["a", "b"]);
}

#[tokio::test]
async fn content_capture_records_no_answer_the_model_never_gave() {
    let harness = Harness::new();
    let client = Guard::new()
        .with_telemetry(harness.telemetry().with_content_capture(1_000))
        .with_retry(quick())
        .client(reqwest::Client::new());
    let wall = ResponseTemplate::new(403)
        .set_body_raw(CF_CHALLENGE, "text/html")
        .insert_header("cf-mitigated", "challenge")
        .insert_header("server", "cloudflare");
    let page = ResponseTemplate::new(200).set_body_raw(
        "<!DOCTYPE html><html><head><title>Welcome</title></head><body><p>Hello</p></body></html>",
        "text/html",
    );
    for (name, answer, answered) in [
        ("429", rate_limited(), false),
        ("a wall", wall, false),
        ("an HTML page in a 200", page, false),
        ("an answer", chat_ok(), true),
    ] {
        let server = serving(answer).await;
        let _ = call(&client, &format!("{}{CHAT_PATH}", server.uri())).await;
        harness.tracer_provider.force_flush().unwrap();
        let spans = harness.spans.get_finished_spans().unwrap();
        let span = spans
            .iter()
            .find(|s| s.parent_span_id == opentelemetry::trace::SpanId::INVALID)
            .expect("the call span");
        let output = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "gen_ai.output.messages")
            .map(|kv| kv.value.clone());
        assert!(
            span.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "gen_ai.input.messages"),
            "{name}: the prompt is captured"
        );
        match output {
            Some(Value::String(s)) if answered => assert!(s.as_str().contains("PASS"), "{s}"),
            Some(v) => assert!(answered, "{name}: an assistant message it never gave: {v}"),
            None => assert!(!answered, "{name}: the answer is captured"),
        }
        harness.spans.reset();
    }
}

#[tokio::test]
async fn a_wall_on_a_holds_and_the_evidence_names_a() {
    let harness = Harness::new();
    let wall = ResponseTemplate::new(403)
        .set_body_raw(CF_CHALLENGE, "text/html")
        .insert_header("cf-mitigated", "challenge")
        .insert_header("server", "cloudflare");
    let (a, b) = (serving(wall).await, serving(chat_ok()).await);
    let client = harness.client([upstream("a", &a), upstream("b", &b)]);
    let (status, e) = call(&client, "http://upstream.invalid/v1/chat/completions").await;
    assert_eq!(status, 403);
    assert_eq!(e.fallback_decision, FallbackDecision::Hold);
    assert_eq!((e.upstream.as_deref(), e.hops), (Some("a"), 0));
    assert!(e.waf.is_some());

    let (span, attempts) = harness.call();
    assert_no_key_twice(&span);
    let s = attrs(&span);
    assert_eq!(
        s["server.port"],
        port(&a),
        "the upstream that answered: the wall's"
    );
    assert_eq!(s["failover.upstream"], "a");
    assert_eq!(s["fallback_decision"], "hold");
    assert_eq!(s["waf.vendor"], "cloudflare");
    assert_eq!(attempts.len(), 1, "a wall is never retried nor hopped from");
    assert_eq!(attrs(&attempts[0])["server.port"], port(&a));
    assert!(b.received_requests().await.unwrap().is_empty());
}
