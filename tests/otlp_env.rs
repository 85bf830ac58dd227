//! The OTLP pipeline from the standard environment variables. The variables are process-wide,
//! so each case runs in a child process of this test binary, with its own environment.
#![cfg(feature = "otlp")]

use std::process::Command;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use reqwest_llm_guard::Guard;
use reqwest_llm_guard::telemetry::otlp;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Runs the ignored test `name` in a child process with `env` set.
fn in_child(name: &str, env: &[(&str, String)]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran nothing: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_protocol_headers_service_name_and_resource_come_from_the_environment() {
    let receiver = MockServer::start().await;
    for p in ["/v1/traces", "/v1/metrics"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200))
            .mount(&receiver)
            .await;
    }
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme".to_owned()),
        ("OTEL_SERVICE_NAME", "checkout".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=ci".to_owned(),
        ),
    ];
    tokio::task::spawn_blocking(move || in_child("child_exports_with_the_environment", &env))
        .await
        .unwrap();

    let requests = receiver.received_requests().await.unwrap();
    let traces: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .collect();
    assert!(!traces.is_empty(), "no trace export");
    for r in &traces {
        assert_eq!(
            r.headers.get("x-tenant").map(|v| v.to_str().unwrap()),
            Some("acme")
        );
    }
    let export = ExportTraceServiceRequest::decode(&traces[0].body[..]).unwrap();
    let resource = export.resource_spans[0].resource.as_ref().unwrap();
    let attr = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    assert_eq!(attr("service.name").as_deref(), Some("checkout"));
    assert_eq!(attr("deployment.environment.name").as_deref(), Some("ci"));
    let names: Vec<&str> = export
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert!(names.contains(&"chat m"), "{names:?}");
    assert!(
        requests.iter().any(|r| r.url.path() == "/v1/metrics"),
        "no metric export"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by endpoint_protocol_headers_service_name_and_resource_come_from_the_environment"]
async fn child_exports_with_the_environment() {
    let api = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"logprobs":null,"finish_reason":"stop"}]}"#,
            "application/json",
        ))
        .mount(&api)
        .await;
    let guard = tokio::task::spawn_blocking(|| otlp::init_from_env().unwrap())
        .await
        .unwrap();
    // The global providers now export: the plain Guard uses them.
    let client = Guard::new().client(reqwest::Client::new());
    client
        .post(format!("{}/v1/chat/completions", api.uri()))
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        guard.flush();
        drop(guard);
    })
    .await
    .unwrap();
}

#[test]
fn an_unsupported_protocol_is_a_typed_error() {
    in_child(
        "child_rejects_the_protocol",
        &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json".to_owned())],
    );
}

#[test]
#[ignore = "run in a child process by an_unsupported_protocol_is_a_typed_error"]
fn child_rejects_the_protocol() {
    let err = otlp::pipeline_from_env().unwrap_err();
    assert_eq!(err.kind(), reqwest_llm_guard::ErrorKind::OtlpConfig);
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("http/json")
    );
}
