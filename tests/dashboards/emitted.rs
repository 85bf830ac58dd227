//! What the crate really emits: the demo's kind of traffic (every mock scenario on both surfaces,
//! streaming and not, a transport error, a non-GenAI call, request lint, an exhausted retry
//! budget, and failover with a breaker that opens) through `Guard`, with the SDK's providers.
//!
//! The metrics are read the way Prometheus sees them behind the OpenTelemetry Collector's
//! `prometheus` exporter (observability/otel-collector.yaml): opentelemetry-prometheus names
//! them (`UnderscoreEscapingWithSuffixes`: dots to underscores, `_seconds` for unit `s`,
//! nothing for `{...}` units, `_total` on counters, `otel_scope_*` labels), and this module adds
//! what the collector adds from the resource: `job` (`service.namespace/service.name`),
//! `instance` (`service.instance.id`) and `target_info` (the other resource attributes). A few
//! snapshots a scrape interval apart make an OpenMetrics file that `promtool tsdb
//! create-blocks-from openmetrics` loads into a real Prometheus (see `real_prometheus.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use prometheus::proto::{MetricFamily, MetricType};
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::failover::{BreakerConfig, Failover, Upstream};
use reqwest_llm_guard::inspect::Inspect;
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::retry::{Retry, RetryBudget};
use reqwest_llm_guard::telemetry::Telemetry;
use reqwest_llm_guard::{EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use retry_policies::policies::ExponentialBackoff;

/// The resource of the traffic: a service in a namespace, so that `job` is not `service.name`
/// and every link from metrics to traces has to cope with that.
pub(crate) const SERVICE_NAME: &str = "llm-guard-demo";
pub(crate) const SERVICE_NAMESPACE: &str = "llm-guard";
pub(crate) const SERVICE_INSTANCE_ID: &str = "demo-1";

/// The first snapshot's time (2026-01-01T00:00:00Z) and the time between snapshots (a scrape
/// interval), in seconds.
pub(crate) const FIRST_SAMPLE_AT: i64 = 1_767_225_600;
pub(crate) const SCRAPE_INTERVAL: i64 = 15;

/// The crate's emission, read once per test binary (the traffic takes a few seconds).
pub(crate) fn emitted() -> &'static Emitted {
    static EMITTED: OnceLock<Emitted> = OnceLock::new();
    EMITTED.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(Emitted::from_traffic())
    })
}

/// One Prometheus metric family: its series, each with a point per snapshot it was in.
#[derive(Debug)]
pub(crate) struct Family {
    /// The name in `# TYPE`: without `_total` for a counter.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) help: String,
    pub(crate) series: BTreeMap<Labels, Vec<(i64, Value)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

pub(crate) type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Number(f64),
    /// Cumulative bucket counts by upper bound (`+Inf` last), count and sum.
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

/// An instrument as the SDK exports it over OTLP: what the collector translates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instrument {
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) kind: Kind,
}

fn instruments(exports: &[ResourceMetrics]) -> Vec<Instrument> {
    let mut out: Vec<Instrument> = exports
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .map(|m| {
            let kind = match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) if s.is_monotonic() => Kind::Counter,
                AggregatedMetrics::F64(MetricData::Histogram(_))
                | AggregatedMetrics::U64(MetricData::Histogram(_)) => Kind::Histogram,
                AggregatedMetrics::U64(MetricData::Gauge(_)) => Kind::Gauge,
                other => panic!(
                    "{}: an instrument of an unexpected kind: {other:?}",
                    m.name()
                ),
            };
            Instrument {
                name: m.name().to_owned(),
                unit: m.unit().to_owned(),
                kind,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Attribute names with every value they took, as text (an array's elements one by one: TraceQL
/// compares them so).
pub(crate) type Attributes = BTreeMap<String, BTreeSet<String>>;

/// The metrics (as Prometheus series) and spans of the traffic.
pub(crate) struct Emitted {
    pub(crate) families: Vec<Family>,
    /// The instruments as the SDK holds them.
    pub(crate) instruments: Vec<Instrument>,
    pub(crate) span_attributes: Attributes,
    /// The attributes of the spans' events (TraceQL's `event.` scope).
    pub(crate) event_attributes: Attributes,
    /// The resource's attributes (on every span, and behind `job`, `instance`, `target_info`).
    pub(crate) resource: BTreeMap<String, String>,
}

impl Emitted {
    async fn from_traffic() -> Self {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", SERVICE_NAME),
                KeyValue::new("service.namespace", SERVICE_NAMESPACE),
                KeyValue::new("service.instance.id", SERVICE_INSTANCE_ID),
                KeyValue::new("telemetry.sdk.language", "rust"),
                KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            ])
            .build();
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // The collector's target_info differs (no service.* labels, job and instance
            // instead): it is rendered below.
            .without_target_info()
            .build()
            .expect("the Prometheus exporter");
        // The same instruments as the SDK holds them (names, units, kinds), to check the naming.
        let in_memory = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(exporter)
            .with_reader(PeriodicReader::builder(in_memory.clone()).build())
            .build();
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(spans.clone())
            .build();
        let telemetry = Telemetry::new()
            .with_tracer_provider(&tracer_provider)
            .with_meter_provider(&meter_provider);

        let traffic = Traffic::start(&telemetry, &meter_provider).await;
        // Two rounds of the same traffic, a snapshot after each, and one more a scrape later:
        // every series has at least two samples, which `rate` and `increase` need.
        let mut snapshots = Vec::new();
        for round in 0..2 {
            traffic.round(round).await;
            snapshots.push(registry.gather());
        }
        snapshots.push(registry.gather());
        meter_provider.force_flush().expect("flushing metrics");
        let instruments = instruments(&in_memory.get_finished_metrics().expect("metrics"));

        tracer_provider.force_flush().expect("flushing spans");
        let mut span_attributes = Attributes::new();
        let mut event_attributes = Attributes::new();
        for span in spans.get_finished_spans().expect("spans") {
            record(&mut span_attributes, &span.attributes);
            for event in span.events.iter() {
                record(&mut event_attributes, &event.attributes);
            }
        }
        let resource: BTreeMap<String, String> = resource
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_str().into_owned()))
            .collect();
        Self {
            families: exposition(&snapshots, &resource),
            instruments,
            span_attributes,
            event_attributes,
            resource,
        }
    }

    /// The time of the last snapshot: where the queries are evaluated.
    pub(crate) fn last_sample_at(&self) -> i64 {
        self.families
            .iter()
            .flat_map(|f| f.series.values().flatten())
            .map(|(at, _)| *at)
            .max()
            .expect("samples")
    }

    /// Every series name Prometheus holds (`_bucket`, `_sum`, `_count` for a histogram,
    /// `_total` for a counter) with every label any of its series carries.
    pub(crate) fn series(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for family in &self.families {
            for labels in family.series.keys() {
                let names: BTreeSet<String> = labels.keys().cloned().collect();
                for (suffix, extra) in family.kind.samples() {
                    let entry = out.entry(format!("{}{suffix}", family.name)).or_default();
                    entry.extend(names.iter().cloned());
                    entry.extend(extra.iter().map(|l| (*l).to_owned()));
                }
            }
        }
        out
    }

    /// Every value each label takes, over all series.
    pub(crate) fn label_values(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for labels in self.families.iter().flat_map(|f| f.series.keys()) {
            for (name, value) in labels {
                out.entry(name.clone()).or_default().insert(value.clone());
            }
        }
        out
    }

    /// The `job` label of every series.
    pub(crate) fn job(&self) -> String {
        job(&self.resource).expect("service.name")
    }

    /// The OpenMetrics text of every snapshot, with timestamps.
    pub(crate) fn openmetrics(&self) -> String {
        openmetrics(&self.families)
    }
}

impl Kind {
    /// The sample names' suffixes and the labels they add.
    fn samples(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Kind::Counter => &[("_total", &[])],
            Kind::Gauge => &[("", &[])],
            Kind::Info => &[("_info", &[])],
            Kind::Histogram => &[("_bucket", &["le"]), ("_sum", &[]), ("_count", &[])],
        }
    }

    fn openmetrics_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Info => "info",
        }
    }
}

fn record(into: &mut Attributes, attributes: &[KeyValue]) {
    for kv in attributes {
        let values = into.entry(kv.key.to_string()).or_default();
        match &kv.value {
            opentelemetry::Value::Array(opentelemetry::Array::String(items)) => {
                values.extend(items.iter().map(|s| s.as_str().to_owned()));
            }
            other => {
                values.insert(other.as_str().into_owned());
            }
        }
    }
}

/// The collector's `job`: `service.namespace/service.name`, or `service.name` alone.
pub(crate) fn job(resource: &BTreeMap<String, String>) -> Option<String> {
    let name = resource.get("service.name")?;
    Some(match resource.get("service.namespace") {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.clone(),
    })
}

/// The collector's `instance`: `service.instance.id`. Without one the exporter sets no
/// `instance`, and Prometheus (`honor_labels: true`) fills in its scrape target's.
fn instance(resource: &BTreeMap<String, String>) -> String {
    resource
        .get("service.instance.id")
        .cloned()
        .unwrap_or_else(|| "otel-collector:8889".to_owned())
}

/// The snapshots as Prometheus families, with the collector's resource labels, a scrape
/// interval apart from `FIRST_SAMPLE_AT`.
fn exposition(snapshots: &[Vec<MetricFamily>], resource: &BTreeMap<String, String>) -> Vec<Family> {
    let job = job(resource).expect("a service.name");
    let instance = instance(resource);
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut at = FIRST_SAMPLE_AT;
    for snapshot in snapshots {
        for mf in snapshot {
            let (kind, name) = match mf.get_field_type() {
                MetricType::COUNTER => (
                    Kind::Counter,
                    mf.name()
                        .strip_suffix("_total")
                        .expect("counters end in _total")
                        .to_owned(),
                ),
                MetricType::GAUGE => (Kind::Gauge, mf.name().to_owned()),
                MetricType::HISTOGRAM => (Kind::Histogram, mf.name().to_owned()),
                other => panic!("{}: unexpected metric type {other:?}", mf.name()),
            };
            let family = families.entry(name.clone()).or_insert_with(|| Family {
                name,
                kind,
                help: mf.help().to_owned(),
                series: BTreeMap::new(),
            });
            for metric in mf.get_metric() {
                let mut labels: Labels = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    // Prometheus keeps no empty label.
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                labels.insert("job".to_owned(), job.clone());
                labels.insert("instance".to_owned(), instance.clone());
                let value = match kind {
                    Kind::Counter => Value::Number(metric.get_counter().get_value()),
                    Kind::Gauge => Value::Number(metric.get_gauge().get_value()),
                    Kind::Histogram => {
                        let h = metric.get_histogram();
                        let mut buckets: Vec<(f64, u64)> = h
                            .get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .collect();
                        buckets.push((f64::INFINITY, h.get_sample_count()));
                        Value::Histogram {
                            buckets,
                            count: h.get_sample_count(),
                            sum: h.get_sample_sum(),
                        }
                    }
                    Kind::Info => unreachable!("the exporter makes no info metric"),
                };
                family.series.entry(labels).or_default().push((at, value));
            }
        }
        at += SCRAPE_INTERVAL;
    }
    // target_info: the resource without what job and instance already say, in every snapshot
    // (the collector exports it on every scrape).
    let mut info: Labels = resource
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .map(|(k, v)| (prometheus_label(k), v.clone()))
        .collect();
    info.insert("job".to_owned(), job);
    info.insert("instance".to_owned(), instance);
    let points = (0..snapshots.len())
        .map(|i| {
            let i = i64::try_from(i).expect("a few snapshots");
            (FIRST_SAMPLE_AT + i * SCRAPE_INTERVAL, Value::Number(1.0))
        })
        .collect();
    families.insert(
        "target".to_owned(),
        Family {
            name: "target".to_owned(),
            kind: Kind::Info,
            help: "Target metadata".to_owned(),
            series: BTreeMap::from([(info, points)]),
        },
    );
    families.into_values().collect()
}

/// An attribute name as a Prometheus label: every character that is not `[a-zA-Z0-9_]`
/// becomes `_` (the collector's `UnderscoreEscapingWithSuffixes`).
pub(crate) fn prometheus_label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// OpenMetrics text: each family once, each series' points in time order, `# EOF` at the end.
pub(crate) fn openmetrics(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let name = &family.name;
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.openmetrics_type());
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        for (labels, points) in &family.series {
            for (at, value) in points {
                match value {
                    Value::Number(v) => {
                        let sample = match family.kind {
                            Kind::Counter => format!("{name}_total"),
                            Kind::Info => format!("{name}_info"),
                            Kind::Gauge | Kind::Histogram => name.clone(),
                        };
                        line(&mut out, &sample, labels, None, &number(*v), *at);
                    }
                    Value::Histogram {
                        buckets,
                        count,
                        sum,
                    } => {
                        for (le, n) in buckets {
                            let le = if le.is_infinite() {
                                "+Inf".to_owned()
                            } else {
                                number(*le)
                            };
                            let bucket = format!("{name}_bucket");
                            line(&mut out, &bucket, labels, Some(&le), &n.to_string(), *at);
                        }
                        line(
                            &mut out,
                            &format!("{name}_count"),
                            labels,
                            None,
                            &count.to_string(),
                            *at,
                        );
                        line(
                            &mut out,
                            &format!("{name}_sum"),
                            labels,
                            None,
                            &number(*sum),
                            *at,
                        );
                    }
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn line(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, value: &str, at: i64) {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    let _ = writeln!(out, "{name}{{{}}} {value} {at}", pairs.join(","));
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

// ---------------------------------------------------------------------------------------------
// The traffic
// ---------------------------------------------------------------------------------------------

/// Requests' knobs for the mock gateway: short waits, so that a round takes about a second.
const MOCK_HEADERS: &[(&str, &str)] = &[
    ("x-mock-delay-ms", "20"),
    ("x-mock-first-token-ms", "300"),
    ("x-mock-down-ms", "300"),
];

struct Traffic {
    gateway: MockGateway,
    /// The default stack, quick: one retry, server waits honoured up to 1 s, silences cut
    /// after half a second.
    client: ClientWithMiddleware,
    /// A retry budget with nothing in it: every retry is refused (`budget_exhausted`).
    broke: ClientWithMiddleware,
    /// Failover from a primary that is down for a while to a backup; from a walled one (which
    /// holds); to one that rate limits once (retried, then answers); between two that rate limit
    /// every call (retried, left, retried again, handed back).
    failover: ClientWithMiddleware,
    walled: ClientWithMiddleware,
    limited: ClientWithMiddleware,
    saturated: ClientWithMiddleware,
    _upstreams: Vec<MockGateway>,
}

fn quick_backoff() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(20), Duration::from_millis(50))
        .build_with_max_retries(1)
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        // A silent body (`stream_stall`, `stall`) ends at this, not at the test's patience.
        .read_timeout(Duration::from_millis(500))
        .build()
        .expect("a reqwest client")
}

impl Traffic {
    async fn start(telemetry: &Telemetry, meter_provider: &SdkMeterProvider) -> Self {
        let gateway = MockGateway::start().await.expect("the mock gateway");
        let retry = || {
            Retry::new()
                .with_policy(quick_backoff())
                .with_min_backoff(Duration::from_millis(10))
                .with_max_server_wait(Duration::from_secs(1))
                // `hang` answers nothing at all.
                .with_time_to_headers(Duration::from_millis(500))
        };
        let inspect = || Inspect::new().with_body_idle_timeout(Duration::from_millis(400));
        let client = Guard::new()
            .with_telemetry(telemetry.clone())
            .with_retry(retry())
            .with_inspect(inspect())
            .client(reqwest_client());
        let broke = Guard::new()
            .with_telemetry(telemetry.clone())
            .with_retry(retry().with_budget(Arc::new(RetryBudget::new(
                Duration::from_secs(1),
                0,
                0.0,
            ))))
            .with_inspect(inspect())
            .client(reqwest_client());

        let local: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        let flaky = MockGateway::start_with(Scenario::DownThenUp, local)
            .await
            .expect("a mock upstream");
        let wall = MockGateway::start_with(Scenario::WafCloudflare, local)
            .await
            .expect("a mock upstream");
        let limits_once = MockGateway::start_with(Scenario::RateLimitedOnce, local)
            .await
            .expect("a mock upstream");
        let limits = MockGateway::start_with(Scenario::RateLimitedMs, local)
            .await
            .expect("a mock upstream");
        let backup = MockGateway::start().await.expect("a mock upstream");
        let upstream = |name: &str, gateway: &MockGateway| {
            Upstream::new(name, &format!("{}/v1", gateway.url())).expect("an upstream")
        };
        let failover =
            Failover::builder([upstream("primary", &flaky), upstream("backup", &backup)])
                .with_breaker(
                    &BreakerConfig::default()
                        .with_consecutive_failures(2)
                        .with_open_time(Duration::from_millis(200), Duration::from_secs(1)),
                )
                .with_meter_provider(meter_provider)
                .build();
        let walled = Failover::builder([upstream("walled", &wall), upstream("backup", &backup)])
            .with_meter_provider(meter_provider)
            .build();
        let limited = Failover::builder([
            upstream("limited", &limits_once),
            upstream("backup", &backup),
        ])
        .with_meter_provider(meter_provider)
        .build();
        let saturated = Failover::builder([
            upstream("saturated", &limits),
            upstream("saturated-too", &limits),
        ])
        .with_meter_provider(meter_provider)
        .build();
        let failover_client = |f: Failover| {
            Guard::new()
                .with_telemetry(telemetry.clone())
                .with_retry(retry())
                .with_failover(f)
                .client(reqwest_client())
        };
        Self {
            client,
            broke,
            failover: failover_client(failover),
            walled: failover_client(walled),
            limited: failover_client(limited),
            saturated: failover_client(saturated),
            gateway,
            _upstreams: vec![flaky, wall, limits_once, limits, backup],
        }
    }

    /// Every scenario on both surfaces, streaming and not, and the rest, all at once.
    async fn round(&self, round: u32) {
        let url = self.gateway.url();
        let mut calls = Vec::new();
        for &scenario in Scenario::ALL {
            for surface in [ApiSurface::ChatCompletions, ApiSurface::Responses] {
                for stream in [false, true] {
                    let session = format!("{round}-{scenario}-{}-{stream}", surface.as_str());
                    let request = self
                        .client
                        .post(format!("{url}{}", path(surface)))
                        .header("x-mock-scenario", scenario.as_str())
                        .header("x-mock-session", session)
                        .body(body(surface, "gpt-4o-mini", stream, ""));
                    calls.push(request);
                }
            }
        }
        // Request lint (an o-series model on Chat with `max_tokens`) and a cross-check finding
        // (a tool call required, plain text back).
        calls.push(self.client.post(format!("{url}/v1/chat/completions")).body(body(
            ApiSurface::ChatCompletions,
            "o3-mini",
            false,
            r#","max_tokens":64,"tool_choice":"required","tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]"#,
        )));
        // No GenAI operation: `api_surface=other`.
        calls.push(self.client.get(format!("{url}/v1/models")));
        // Nobody listening: a transport error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        calls.push(
            self.client
                .post(format!("http://{closed}/v1/chat/completions"))
                .body(body(ApiSurface::ChatCompletions, "gpt-4o-mini", false, "")),
        );
        // 429s with a budget that refuses every retry.
        for surface in [ApiSurface::ChatCompletions, ApiSurface::Responses] {
            calls.push(
                self.broke
                    .post(format!("{url}{}", path(surface)))
                    .header("x-mock-scenario", Scenario::RateLimitedMs.as_str())
                    .body(body(surface, "gpt-4.1-mini", false, "")),
            );
        }
        let sends = calls.into_iter().map(|request| async move {
            let handle = EvidenceHandle::new();
            let sent = request
                .with_extension(handle.clone())
                .header("content-type", "application/json")
                .headers(mock_headers())
                .send()
                .await;
            read_to_end(sent).await;
            handle.settled().await;
        });
        let failover = self.failover_calls(round);
        futures_util::future::join(futures_util::future::join_all(sends), failover).await;
    }

    /// The primary is down for 300 ms: two calls move to the backup and open its breaker, the
    /// next skips it, and once it is back a probe closes the breaker again. A wall holds and is
    /// never failed over.
    async fn failover_calls(&self, round: u32) {
        let session = format!("failover-{round}");
        for step in 0..5 {
            if step == 3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.failover_call(&self.failover, &session).await;
        }
        self.failover_call(&self.walled, &session).await;
        self.failover_call(&self.limited, &session).await;
        self.failover_call(&self.saturated, &session).await;
    }

    async fn failover_call(&self, client: &ClientWithMiddleware, session: &str) {
        let handle = EvidenceHandle::new();
        let sent = client
            .post("http://upstream.invalid/v1/chat/completions")
            .with_extension(handle.clone())
            .header("content-type", "application/json")
            .header("x-mock-session", session)
            .headers(mock_headers())
            .body(body(ApiSurface::ChatCompletions, "gpt-4o-mini", false, ""))
            .send()
            .await;
        read_to_end(sent).await;
        handle.settled().await;
    }
}

fn mock_headers() -> reqwest::header::HeaderMap {
    MOCK_HEADERS
        .iter()
        .map(|(k, v)| {
            (
                reqwest::header::HeaderName::from_static(k),
                reqwest::header::HeaderValue::from_static(v),
            )
        })
        .collect()
}

fn path(surface: ApiSurface) -> &'static str {
    match surface {
        ApiSurface::Responses => "/v1/responses",
        _ => "/v1/chat/completions",
    }
}

fn body(surface: ApiSurface, model: &str, stream: bool, extra: &str) -> String {
    match surface {
        ApiSurface::Responses => format!(
            r#"{{"model":"{model}","input":"Reply with exactly the word PASS.","stream":{stream}{extra}}}"#
        ),
        _ => format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"Reply with exactly the word PASS."}}],"stream":{stream}{extra}}}"#
        ),
    }
}

/// Reads a body as a caller would: a stream's evidence is final at its end.
async fn read_to_end(sent: Result<reqwest::Response, reqwest_middleware::Error>) {
    if let Ok(response) = sent {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rendering, as a specification
// ---------------------------------------------------------------------------------------------

/// The collector's `UnderscoreEscapingWithSuffixes` name of an instrument's samples: every
/// character outside `[a-zA-Z0-9_:]` becomes `_`, the unit is appended (`s` as `_seconds`; a
/// `{...}` annotation adds nothing), and a counter's samples end in `_total`.
fn collector_sample_name(instrument: &Instrument) -> String {
    let mut name: String = instrument
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let unit = match instrument.unit.as_str() {
        "s" => Some("seconds"),
        "" => None,
        u if u.starts_with('{') && u.ends_with('}') => None,
        other => panic!(
            "{}: unit `{other}` has no translation here yet",
            instrument.name
        ),
    };
    if let Some(unit) = unit
        && !name.ends_with(unit)
    {
        name = format!("{name}_{unit}");
    }
    if instrument.kind == Kind::Counter {
        name.push_str("_total");
    }
    name
}

/// Two renderings agree: opentelemetry-prometheus' names for the crate's instruments are the
/// collector's translation of what the SDK exports over OTLP, instrument by instrument.
#[test]
fn the_prometheus_names_are_the_collectors_translation_of_the_instruments() {
    let emitted = emitted();
    let rendered: BTreeSet<String> = emitted
        .families
        .iter()
        .filter(|f| f.kind != Kind::Info)
        .map(|f| match f.kind {
            Kind::Counter => format!("{}_total", f.name),
            _ => f.name.clone(),
        })
        .collect();
    let translated: BTreeSet<String> = emitted
        .instruments
        .iter()
        .map(collector_sample_name)
        .collect();
    assert_eq!(rendered, translated);
}

/// The traffic makes every instrument of the default conventions record something, so that
/// what the checks know of the crate's metrics is all of it.
#[test]
fn the_traffic_exercises_every_instrument_of_the_default_conventions() {
    use reqwest_llm_guard::telemetry::metric;
    let emitted: BTreeSet<&str> = emitted()
        .instruments
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    // The latest conventions' instruments (OTEL_SEMCONV_STABILITY_OPT_IN) take the place of
    // some of these; the dashboards and alerts follow the defaults.
    for name in [
        metric::OPERATION_DURATION,
        metric::TOKEN_USAGE,
        metric::TIME_TO_FIRST_CHUNK,
        metric::TIME_PER_OUTPUT_CHUNK,
        metric::CALLS,
        metric::RETRIES,
        metric::RETRIES_EXHAUSTED,
        metric::WAF_WALLS,
        metric::CONTRACT_VIOLATIONS,
        metric::LINT_FINDINGS,
        metric::FAILOVER_HOPS,
        metric::BREAKER_STATE,
        metric::BREAKER_TRANSITIONS,
    ] {
        assert!(
            emitted.contains(name),
            "the traffic records nothing in {name}"
        );
    }
}

#[test]
fn job_is_the_namespace_and_the_name_instance_the_instance_id() {
    let mut resource = BTreeMap::from([("service.name".to_owned(), "checkout".to_owned())]);
    assert_eq!(job(&resource).as_deref(), Some("checkout"));
    assert_eq!(instance(&resource), "otel-collector:8889");
    resource.insert("service.namespace".to_owned(), "shop".to_owned());
    resource.insert("service.instance.id".to_owned(), "pod-1".to_owned());
    assert_eq!(job(&resource).as_deref(), Some("shop/checkout"));
    assert_eq!(instance(&resource), "pod-1");
    // target_info carries the rest of the resource, under Prometheus label names.
    let families = exposition(&[], &resource);
    let info = families
        .iter()
        .find(|f| f.kind == Kind::Info)
        .expect("target_info");
    assert_eq!(info.name, "target");
    let only: Vec<&Labels> = info.series.keys().collect();
    assert_eq!(
        only,
        [&BTreeMap::from([
            ("instance".to_owned(), "pod-1".to_owned()),
            ("job".to_owned(), "shop/checkout".to_owned()),
        ])],
        "service.* are job and instance, not target_info labels"
    );
    assert_eq!(prometheus_label("telemetry.sdk.name"), "telemetry_sdk_name");
}

#[test]
fn openmetrics_has_each_family_once_each_series_in_time_order_and_an_end() {
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let families = vec![
        Family {
            name: "llm_guard_calls".to_owned(),
            kind: Kind::Counter,
            help: "Calls.".to_owned(),
            series: BTreeMap::from([(
                labels(&[("job", "shop/checkout"), ("waf_reference", "a\"b")]),
                vec![(10, Value::Number(1.0)), (25, Value::Number(3.0))],
            )]),
        },
        Family {
            name: "d_seconds".to_owned(),
            kind: Kind::Histogram,
            help: "D.".to_owned(),
            series: BTreeMap::from([(
                labels(&[("job", "j")]),
                vec![(
                    10,
                    Value::Histogram {
                        buckets: vec![(0.5, 1), (f64::INFINITY, 2)],
                        count: 2,
                        sum: 1.25,
                    },
                )],
            )]),
        },
    ];
    assert_eq!(
        openmetrics(&families),
        "# TYPE llm_guard_calls counter\n\
         # HELP llm_guard_calls Calls.\n\
         llm_guard_calls_total{job=\"shop/checkout\",waf_reference=\"a\\\"b\"} 1.0 10\n\
         llm_guard_calls_total{job=\"shop/checkout\",waf_reference=\"a\\\"b\"} 3.0 25\n\
         # TYPE d_seconds histogram\n\
         # HELP d_seconds D.\n\
         d_seconds_bucket{job=\"j\",le=\"0.5\"} 1 10\n\
         d_seconds_bucket{job=\"j\",le=\"+Inf\"} 2 10\n\
         d_seconds_count{job=\"j\"} 2 10\n\
         d_seconds_sum{job=\"j\"} 1.25 10\n\
         # EOF\n"
    );
}
