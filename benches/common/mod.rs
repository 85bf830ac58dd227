//! What the benchmarks share: a runtime, the mock gateway in a process of its own, the clients
//! compared, no-op exporters, and the statistics printed beside criterion's.
//!
//! The clients compared, each reused for every call of its variant:
//!
//! - `bare`: a plain `reqwest::Client`;
//! - `today`: what a service runs today without this crate: reqwest-middleware with
//!   `TracingMiddleware` (reqwest-tracing, its spans bridged to OpenTelemetry by the
//!   `tracing-opentelemetry` layer of a global `tracing` subscriber) and
//!   `RetryTransientMiddleware` (exponential backoff, 2 retries);
//! - `guard`: this crate's whole stack ([`Guard`]) with its own tracer and meter providers,
//!   with or without the failover layer (two upstreams, no call failing over).
//!
//! The mock gateway runs in a process of its own ([`Gateway`]).
//!
//! Every provider exports through a batch span processor (or a periodic metric reader) to a sink
//! that drops what it is given, so the cost measured is making and recording the telemetry, not
//! shipping it.

use std::future::{Future, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use reqwest_llm_guard::Guard;
use reqwest_llm_guard::failover::{CommitPoint, Failover, Upstream};
use reqwest_llm_guard::mock::MockGateway;
use reqwest_llm_guard::telemetry::Telemetry;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_tracing::TracingMiddleware;
use retry_policies::policies::ExponentialBackoff;
use tracing_subscriber::layer::SubscriberExt as _;

pub(crate) mod in_flight;

/// A non-streaming Chat request (the answer's size comes from `x-mock-content-bytes`).
pub(crate) const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say PASS"}]}"#;
/// The same request, streaming (its length comes from `x-mock-chunks`).
pub(crate) const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say PASS"}]}"#;

/// A span exporter that drops every batch, counting the spans it was given.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkSpans(Arc<AtomicU64>);

impl SinkSpans {
    /// Spans exported so far.
    pub(crate) fn exported(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl SpanExporter for SinkSpans {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        drop(batch);
        ready(Ok(()))
    }
}

/// A metric exporter that drops what it is given.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SinkMetrics;

impl PushMetricExporter for SinkMetrics {
    fn export(&self, _metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        ready(Ok(()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// A client of one variant: its requests differ in type, its responses do not.
pub(crate) enum Client {
    Bare(reqwest::Client),
    Layered(ClientWithMiddleware),
}

impl Client {
    /// POSTs `body` as JSON with `headers`; panics on a transport error or a non-2xx.
    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, &str)],
        body: &'static str,
    ) -> reqwest::Response {
        let response = match self {
            Client::Bare(c) => {
                let mut rb = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.send().await.expect("bare call")
            }
            Client::Layered(c) => {
                let mut rb = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.send().await.expect("layered call")
            }
        };
        assert!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        response
    }
}

/// The tracing pipeline of the `today` variant, installed as the global `tracing` subscriber
/// (what a reqwest-tracing user runs): registry + `tracing-opentelemetry` layer + an SDK
/// tracer provider with a batch processor to a sink.
pub(crate) struct TodayTelemetry {
    pub(crate) provider: SdkTracerProvider,
    pub(crate) spans: SinkSpans,
}

impl TodayTelemetry {
    pub(crate) fn install() -> Self {
        let spans = SinkSpans::default();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench-service")));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        Self { provider, spans }
    }

    /// Flushes, then says how many spans reached the sink.
    pub(crate) fn exported(&self) -> u64 {
        let _ = self.provider.force_flush();
        self.spans.exported()
    }

    /// reqwest-middleware with reqwest-tracing outside reqwest-retry (their READMEs' order).
    #[allow(
        clippy::unused_self,
        reason = "the client is only meaningful once the pipeline is installed"
    )]
    pub(crate) fn client(&self) -> Client {
        let policy = ExponentialBackoff::builder().build_with_max_retries(2);
        Client::Layered(
            ClientBuilder::new(reqwest::Client::new())
                .with(TracingMiddleware::default())
                .with(RetryTransientMiddleware::new_with_policy(policy))
                .build(),
        )
    }
}

/// The providers of the `guard` variant.
pub(crate) struct GuardTelemetry {
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) meter_provider: SdkMeterProvider,
    pub(crate) spans: SinkSpans,
}

impl GuardTelemetry {
    pub(crate) fn new() -> Self {
        let spans = SinkSpans::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(SinkMetrics).build())
            .build();
        Self {
            tracer_provider,
            meter_provider,
            spans,
        }
    }

    /// The whole stack: `Guard::new()` with these providers.
    pub(crate) fn client(&self) -> Client {
        let telemetry = Telemetry::new()
            .with_tracer_provider(&self.tracer_provider)
            .with_meter_provider(&self.meter_provider);
        Client::Layered(
            Guard::new()
                .with_telemetry(telemetry)
                .client(reqwest::Client::new()),
        )
    }

    /// The whole stack with the failover layer configured: two upstreams, both this
    /// gateway (`base` is its URL), so no call fails over; streams commit at `commit`.
    pub(crate) fn client_with_failover(&self, base: &str, commit: CommitPoint) -> Client {
        let telemetry = Telemetry::new()
            .with_tracer_provider(&self.tracer_provider)
            .with_meter_provider(&self.meter_provider);
        let upstream = |name: &str| Upstream::new(name, &format!("{base}/v1")).expect("base URL");
        let failover = Failover::builder([upstream("primary"), upstream("backup")])
            .with_meter_provider(&self.meter_provider)
            .with_commit_point(commit)
            .build();
        Client::Layered(
            Guard::new()
                .with_telemetry(telemetry)
                .with_failover(failover)
                .client(reqwest::Client::new()),
        )
    }

    /// Flushes, then says how many spans reached the sink.
    pub(crate) fn exported(&self) -> u64 {
        let _ = self.tracer_provider.force_flush();
        self.spans.exported()
    }
}

/// The environment variable that makes a bench binary the mock gateway of its parent.
const GATEWAY_CHILD: &str = "LLM_GUARD_BENCH_GATEWAY";

/// The mock gateway in a process of its own: the bench's own binary, started again with
/// [`GATEWAY_CHILD`] set. Its work (parsing requests, making answers, writing them) is then
/// outside the measured process and its runtime, as a remote gateway's would be; the two
/// processes share only the machine's cores and loopback.
pub(crate) struct Gateway {
    child: std::process::Child,
    url: String,
}

impl Gateway {
    /// The gateway's base URL (`http://127.0.0.1:PORT`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Stops the gateway; the number of requests it served.
    pub(crate) fn stop(mut self) -> u64 {
        use std::io::BufRead as _;
        drop(self.child.stdin.take());
        let mut line = String::new();
        if let Some(out) = self.child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let _ = self.child.wait();
        line.trim()
            .strip_prefix("served ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Call first in a bench's `main`: in the gateway's process (see [`Gateway`]) this serves the
/// mock gateway on one thread until the parent closes its standard input, then exits.
pub(crate) fn serve_if_gateway() {
    use std::io::{Read as _, Write as _};
    if std::env::var_os(GATEWAY_CHILD).is_none() {
        return;
    }
    // One thread, as one core of a remote machine: the bench's process keeps the other.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("gateway runtime");
    let gateway = rt.block_on(MockGateway::start()).expect("mock gateway");
    println!("listening {}", gateway.url());
    std::io::stdout().flush().expect("stdout");
    let served = rt.block_on(async {
        // The parent's end of standard input closes when it stops (or dies).
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        gateway.requests()
    });
    println!("served {served}");
    std::process::exit(0);
}

/// Starts the mock gateway in a child process (see [`Gateway`]).
pub(crate) fn gateway() -> Gateway {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("this bench's path"))
        .env(GATEWAY_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the gateway process");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("gateway stdout");
    let mut reader = std::io::BufReader::new(stdout);
    reader.read_line(&mut line).expect("the gateway's address");
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the gateway said {line:?}"))
        .to_owned();
    child.stdout = Some(reader.into_inner());
    Gateway { child, url }
}

/// The bench's runtime: multi-thread, one worker per core, as a service's; with the mock
/// gateway in its own process.
pub(crate) fn runtime_with_gateway() -> (tokio::runtime::Runtime, Gateway) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (rt, gateway())
}

/// When criterion profiles one benchmark (`--profile-time N` with a `group/name` filter): its
/// filter, so the bench warms up that variant alone and the profile holds nothing else.
pub(crate) fn profiled_filter() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a.starts_with("--profile-time")) {
        return None;
    }
    args.into_iter()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.contains('/'))
}

/// Whether the variant `group/name` is to be warmed up (all are, unless one is profiled).
pub(crate) fn warm(group: &str, name: &str) -> bool {
    profiled_filter().is_none_or(|f| f == format!("{group}/{name}"))
}

/// Runs `work` as a task on the runtime's workers (where a service's own code runs), not on
/// the thread that blocks on it, and waits for its result.
pub(crate) fn on_worker<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async { tokio::spawn(work).await.expect("bench task") })
}

/// CPU time this process has used so far, all its threads (the exporters' among them): what
/// the calls cost the service's machine, whatever the gateway's process did meanwhile.
pub(crate) fn cpu_time() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Sorted samples, for percentiles.
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    /// The `p`-th percentile (nearest rank), `p` in 0..=100.
    pub(crate) fn percentile(&self, p: usize) -> Duration {
        let n = self.0.len();
        let rank = (n * p).div_ceil(100).clamp(1, n);
        self.0[rank - 1]
    }

    pub(crate) fn median(&self) -> Duration {
        self.percentile(50)
    }
}

/// Microseconds, for printing.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `a / b` as a ratio.
pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// CPU time the hypervisor took from this virtual machine while a bench ran (the `steal`
/// column of `/proc/stat`): on a shared host it is the main source of noise, so each bench
/// prints it with its results.
pub(crate) struct Steal(Option<(u64, u64)>);

impl Steal {
    fn read() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        Some((*cpu.get(7)?, cpu.iter().sum()))
    }

    pub(crate) fn start() -> Self {
        Self(Self::read())
    }

    /// Prints the share of CPU time stolen since [`Steal::start`].
    pub(crate) fn report(&self) {
        if let (Some((s0, t0)), Some((s1, t1))) = (self.0, Self::read()) {
            let (stolen, total) = (s1.saturating_sub(s0), t1.saturating_sub(t0).max(1));
            println!(
                "steal: {:.1}% of this VM's CPU time was taken by the hypervisor during the run",
                100.0 * f64::from(u32::try_from(stolen).unwrap_or(u32::MAX))
                    / f64::from(u32::try_from(total).unwrap_or(u32::MAX))
            );
        }
    }
}

/// The machine, for the report.
pub(crate) fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("machine: {cores} cores, {model}");
}
