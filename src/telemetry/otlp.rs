//! OTLP export from the standard `OTEL_*` environment variables (feature `otlp`).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), reqwest_llm_guard::Error> {
//! use reqwest_llm_guard::Guard;
//! use reqwest_llm_guard::telemetry::otlp;
//!
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=checkout …
//! let otel = otlp::init_from_env()?; // flushes and shuts down when dropped
//! let client = Guard::new().client(reqwest::Client::new());
//! // … calls …
//! drop(otel);
//! # Ok(()) }
//! ```
//!
//! The variables read (by this module and by `opentelemetry-otlp` and the SDK underneath):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `…_TRACES_…`, `…_METRICS_…`) | `grpc` or `http/protobuf` | `http/protobuf` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (and `…_TRACES_…`, `…_METRICS_…`) | the collector | `http://localhost:4318` (HTTP), `http://localhost:4317` (gRPC) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (and per signal) | `key=value,…` sent with each export | none |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (and per signal) | export timeout, ms | 10000 |
//! | `OTEL_SERVICE_NAME` | `service.name` | the SDK's `unknown_service` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` resource attributes | none |
//!
//! The exporters use their own HTTP clients (`reqwest`'s blocking client for HTTP/protobuf, on
//! the SDK's export threads; tonic for gRPC): their traffic never passes through this crate's
//! layers. Spans are batched and metrics read every 60 s (the SDK's defaults,
//! `OTEL_BSP_*` and `OTEL_METRIC_EXPORT_INTERVAL`); a collector that is down or slow costs
//! the calls nothing, and the batch queue is bounded (spans beyond it are dropped).
//!
//! gRPC export needs a tokio runtime: build the pipeline inside one.

use opentelemetry::global;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::Telemetry;
use crate::error::{Error, ErrorKind};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

impl Protocol {
    /// The protocol for a signal (`"TRACES"` or `"METRICS"`): the signal's variable, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, then `http/protobuf`. `http/json` is not supported.
    pub fn from_env(signal: &str) -> Result<Self, Error> {
        let value = std::env::var(format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        match value.trim() {
            "" | "http/protobuf" => Ok(Self::HttpProtobuf),
            "grpc" => Ok(Self::Grpc),
            other => Err(Error::with_source(
                ErrorKind::OtlpConfig,
                UnsupportedProtocol(other.to_owned()),
            )),
        }
    }
}

#[derive(Debug)]
struct UnsupportedProtocol(String);

impl std::fmt::Display for UnsupportedProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unsupported OTLP protocol {:?} (use grpc or http/protobuf)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedProtocol {}

/// The trace and metric pipelines. Dropping it flushes what is buffered and shuts both down.
#[must_use = "dropping the guard shuts the pipelines down"]
#[derive(Debug)]
pub struct OtlpGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl OtlpGuard {
    /// The tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// A [`Telemetry`] layer exporting through these pipelines (whatever the global providers
    /// are).
    pub fn telemetry(&self) -> Telemetry {
        Telemetry::new()
            .with_tracer_provider(&self.tracer_provider)
            .with_meter_provider(&self.meter_provider)
    }

    /// Exports what is buffered now.
    pub fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        let _ = self.meter_provider.force_flush();
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

fn config_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::OtlpConfig, e)
}

/// The span and metric exporters the `OTEL_*` variables describe (protocol, endpoint,
/// headers, timeout per signal). The HTTP exporter builds a blocking client, and the gRPC one
/// needs a tokio runtime: call it inside `tokio::task::spawn_blocking`.
pub fn exporters_from_env() -> Result<(SpanExporter, MetricExporter), Error> {
    let spans = match Protocol::from_env("TRACES")? {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => SpanExporter::builder().with_http().build(),
    }
    .map_err(config_error)?;
    let metrics = match Protocol::from_env("METRICS")? {
        Protocol::Grpc => MetricExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => MetricExporter::builder().with_http().build(),
    }
    .map_err(config_error)?;
    Ok((spans, metrics))
}

/// The meter provider every pipeline of this crate builds on an exporter: a periodic reader,
/// the resource from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn meter_provider(metrics: MetricExporter) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics).build())
        .with_resource(Resource::builder().build())
        .build()
}

/// Both providers on these exporters: spans batched, metrics read periodically, one resource.
fn providers(spans: SpanExporter, metrics: MetricExporter) -> OtlpGuard {
    OtlpGuard {
        tracer_provider: SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(Resource::builder().build())
            .build(),
        meter_provider: meter_provider(metrics),
    }
}

/// Builds both pipelines from the environment, without touching any global.
pub fn pipeline_from_env() -> Result<OtlpGuard, Error> {
    let (spans, metrics) = exporters_from_env()?;
    Ok(providers(spans, metrics))
}

/// Builds both pipelines from the environment and installs them as the global tracer and
/// meter providers, with the W3C trace-context propagator, so [`Telemetry::new`] and
/// [`Guard::new`](crate::Guard::new) export through them.
pub fn init_from_env() -> Result<OtlpGuard, Error> {
    let guard = pipeline_from_env()?;
    global::set_tracer_provider(guard.tracer_provider.clone());
    global::set_meter_provider(guard.meter_provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(guard)
}

/// Explicit endpoints, for tests and programs that do not use the environment.
pub fn pipeline(protocol: Protocol, endpoint: &str) -> Result<OtlpGuard, Error> {
    let base = endpoint.trim_end_matches('/');
    let (spans, metrics) = match protocol {
        Protocol::Grpc => (
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(base)
                .build(),
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(base)
                .build(),
        ),
        Protocol::HttpProtobuf => (
            SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .build(),
            MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/metrics"))
                .build(),
        ),
    };
    Ok(providers(
        spans.map_err(config_error)?,
        metrics.map_err(config_error)?,
    ))
}
