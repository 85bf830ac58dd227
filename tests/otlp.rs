//! Export over real OTLP: gRPC to a real collector (fake-opentelemetry-collector), HTTP/protobuf
//! to a receiver that decodes the protobuf; and an unreachable collector costing calls nothing.
#![cfg(feature = "otlp")]

use std::time::{Duration, Instant};

use fake_opentelemetry_collector::FakeCollectorServer;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use reqwest_llm_guard::Guard;
use reqwest_llm_guard::telemetry::otlp::{self, OtlpGuard, Protocol};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

async fn api() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&server)
        .await;
    server
}

async fn call(guard: &OtlpGuard, api: &MockServer) {
    let client = Guard::new()
        .with_telemetry(guard.telemetry())
        .client(reqwest::Client::new());
    let response = client
        .post(format!("{}/v1/chat/completions", api.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

/// Flushing blocks on the export: keep it off the async workers.
async fn flush(guard: OtlpGuard) {
    tokio::task::spawn_blocking(move || {
        guard.flush();
        drop(guard);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_a_real_grpc_collector() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let guard = otlp::pipeline(Protocol::Grpc, &collector.endpoint()).unwrap();
    let api = api().await;
    call(&guard, &api).await;
    flush(guard).await;

    let spans = collector.exported_spans(2, Duration::from_secs(30)).await;
    let call_span = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .unwrap_or_else(|| {
            panic!(
                "no call span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(call_span.kind, "SPAN_KIND_CLIENT");
    for (key, value) in [
        ("fallback_decision", "none"),
        ("parse_check", "pass"),
        ("api_surface", "chat_completions"),
        ("status_class", "2xx"),
    ] {
        let got = call_span
            .attributes
            .get(key)
            .unwrap_or_else(|| panic!("no {key}"));
        assert!(got.contains(&format!("{value:?}")), "{key}: {got}");
    }
    let attempt = spans
        .iter()
        .find(|s| s.name == "POST")
        .expect("an attempt span");
    assert_eq!(attempt.parent_span_id, call_span.span_id);

    let metrics = collector.exported_metrics(1, Duration::from_secs(30)).await;
    let names: Vec<&str> = metrics
        .iter()
        .flat_map(|m| m.metrics.iter().map(|m| m.name.as_str()))
        .collect();
    for want in [
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "llm_guard.calls",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
}

fn string_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_http_protobuf_receiver() {
    let receiver = MockServer::start().await;
    for p in ["/v1/traces", "/v1/metrics"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200))
            .mount(&receiver)
            .await;
    }
    let endpoint = receiver.uri();
    // The HTTP exporter's blocking client must be built off the async workers.
    let guard = tokio::task::spawn_blocking(move || {
        otlp::pipeline(Protocol::HttpProtobuf, &endpoint).unwrap()
    })
    .await
    .unwrap();
    let api = api().await;
    call(&guard, &api).await;
    flush(guard).await;

    let requests = receiver.received_requests().await.unwrap();
    let mut spans = Vec::new();
    let mut metric_names = Vec::new();
    for r in &requests {
        assert_eq!(
            r.headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/x-protobuf")
        );
        match r.url.path() {
            "/v1/traces" => {
                let export = ExportTraceServiceRequest::decode(&r.body[..]).unwrap();
                for rs in export.resource_spans {
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
            }
            "/v1/metrics" => {
                let export = ExportMetricsServiceRequest::decode(&r.body[..]).unwrap();
                for rm in export.resource_metrics {
                    for sm in rm.scope_metrics {
                        metric_names.extend(sm.metrics.into_iter().map(|m| m.name));
                    }
                }
            }
            other => panic!("unexpected export to {other}"),
        }
    }
    let call_span = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .expect("the call span");
    assert_eq!(
        string_attr(&call_span.attributes, "fallback_decision").as_deref(),
        Some("none")
    );
    assert_eq!(
        string_attr(&call_span.attributes, "gen_ai.usage.input_tokens").as_deref(),
        Some("5")
    );
    assert!(
        metric_names
            .iter()
            .any(|n| n == "gen_ai.client.operation.duration"),
        "{metric_names:?}"
    );
    // The exporter's own HTTP traffic never passed through the guard: no export request was
    // inspected, retried or traced.
    assert!(spans.iter().all(|s| s.name != "POST /v1/traces"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_call_and_shuts_down() {
    const CALLS: usize = 500;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let guard = tokio::task::spawn_blocking(move || {
        otlp::pipeline(Protocol::HttpProtobuf, &endpoint).unwrap()
    })
    .await
    .unwrap();
    let api = api().await;
    let client = Guard::new()
        .with_telemetry(guard.telemetry())
        .client(reqwest::Client::new());
    let started = Instant::now();
    for _ in 0..CALLS {
        let r = client
            .post(format!("{}/v1/chat/completions", api.uri()))
            .body(r#"{"model":"gpt-4o-mini"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    println!(
        "{CALLS} calls with the collector unreachable: {:?} in all, {:?} per call",
        started.elapsed(),
        started.elapsed() / u32::try_from(CALLS).unwrap()
    );
    flush(guard).await;
}
