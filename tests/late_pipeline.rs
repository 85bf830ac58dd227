//! A guard built before the OpenTelemetry pipeline is installed still exports: the global
//! providers are read at the first call. (Its own binary: it sets the global providers.)

use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use reqwest_llm_guard::Guard;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_guard_built_before_the_pipeline_still_exports() {
    // Built first, as a service that makes its client before it sets up telemetry would.
    let client = Guard::new().client(reqwest::Client::new());

    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let response = client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    tracer_provider.force_flush().unwrap();
    let finished = spans.get_finished_spans().unwrap();
    assert!(
        finished.iter().any(|s| s.name == "chat gpt-4o-mini"),
        "the call span reached the pipeline installed after the guard: {:?}",
        finished
            .iter()
            .map(|s| s.name.to_string())
            .collect::<Vec<_>>()
    );
    meter_provider.force_flush().unwrap();
    let exported = metrics.get_finished_metrics().unwrap();
    let names: Vec<String> = exported
        .iter()
        .flat_map(opentelemetry_sdk::metrics::data::ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .map(|m| m.name().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "llm_guard.calls"),
        "the metrics too: {names:?}"
    );
}
