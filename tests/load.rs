//! Load on loopback, bounded in count and time: retry load stays within the budget, a flapping
//! server is ridden out, a dead or slow telemetry backend neither fails a call nor grows the
//! process. Each test prints its figures (`cargo test --all-features --test load -- --nocapture`;
//! `LOAD_CALLS=10000` for the telemetry runs RELIABILITY.md records); their speed is a figure to
//! read, not an assertion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest_llm_guard::evidence::FallbackDecision;
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::retry::{Retry, RetryBudget};
use reqwest_llm_guard::telemetry::otlp::{self, Protocol};
use reqwest_llm_guard::{Evidence, Guard};
use reqwest_middleware::ClientWithMiddleware;
use retry_policies::policies::ExponentialBackoff;

fn quick() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(2)
}

async fn call(client: &ClientWithMiddleware, url: &str, scenario: Scenario) -> Evidence {
    let response = client
        .post(url)
        .header("x-mock-scenario", scenario.as_str())
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let evidence = Evidence::of(&response);
    response.bytes().await.unwrap();
    evidence
}

/// The peak resident set of this process so far, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The budget's windows a run that started at `started` reached into: its reserve is earned
/// again in each (a run slowed past one window by a loaded machine spans more), so a bound
/// on attempts that counts them holds at any speed. One more than the whole windows elapsed,
/// for the window in progress and the one the slot turnover reaches into.
fn windows_spanned(started: Instant, budget: &RetryBudget) -> f64 {
    (started.elapsed().as_secs_f64() / budget.ttl().as_secs_f64()).ceil() + 1.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_stays_within_the_retry_budget() {
    const CLIENTS: usize = 10;
    const CALLS: usize = 1_000;
    let gateway = MockGateway::start_with(Scenario::RateLimitedMs, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    // One guard, its budget shared by every clone of the client (the server asks 20 ms waits).
    let budget = Arc::new(RetryBudget::default());
    let retry = Retry::new()
        .with_policy(quick())
        .with_min_backoff(Duration::ZERO)
        .with_budget(budget.clone());
    let client = Guard::new()
        .without_telemetry()
        .with_retry(retry)
        .client(reqwest::Client::new());
    let url = format!("{}/v1/chat/completions", gateway.url());
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut fallbacks = 0;
                for _ in 0..CALLS {
                    let r = client
                        .post(&url)
                        .body(r#"{"model":"m"}"#)
                        .send()
                        .await
                        .unwrap();
                    if Evidence::of(&r).fallback_decision == FallbackDecision::Fallback {
                        fallbacks += 1;
                    }
                    r.bytes().await.unwrap();
                }
                fallbacks
            })
        })
        .collect();
    let mut fallbacks = 0;
    for t in tasks {
        fallbacks += t.await.unwrap();
    }
    let calls = (CLIENTS * CALLS) as u64;
    let attempts = gateway.requests();
    let windows = windows_spanned(started, &budget);
    #[allow(clippy::cast_precision_loss)]
    let bound = calls as f64 * (1.0 + budget.ratio()) + budget.reserve() * windows;
    #[allow(clippy::cast_precision_loss)]
    let per_call = attempts as f64 / calls as f64;
    println!(
        "429 storm: {CLIENTS} clients x {CALLS} calls = {calls} calls, {attempts} attempts \
         ({per_call:.3} per call; bound {bound:.0} over {windows} window(s); 3.0 without a budget), \
         {fallbacks} fallbacks, {:?}",
        started.elapsed()
    );
    #[allow(clippy::cast_precision_loss)]
    let within = attempts as f64 <= bound;
    assert!(within, "{attempts} attempts > bound {bound}");
    assert_eq!(
        fallbacks, calls,
        "every call ends in fallback: the server never stops saying 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_server_is_ridden_out_within_the_budget() {
    const CALLS: usize = 2_000;
    // Without retries 40% of calls succeed. With 2 retries and no budget, 429-only retry would
    // reach 0.4 + 0.5*0.4 + 0.25*0.4 = 70%; the default budget caps retries at 20% of calls
    // plus its reserve, trading success for load on a server that is already failing.
    let presets: [(&str, f64, bool, f64); 3] = [
        ("429 only, default budget", 0.2, false, 0.45),
        ("429 only, budget 2.0", 2.0, false, 0.6),
        ("OpenAI SDK set, budget 2.0", 2.0, true, 0.65),
    ];
    for (name, ratio, sdk, floor) in presets {
        let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 10, ratio));
        let guard = Guard::new().without_telemetry();
        let guard = if sdk {
            guard.with_retry(
                Retry::openai_sdk()
                    .with_policy(quick())
                    .with_min_backoff(Duration::ZERO)
                    .with_budget(budget.clone()),
            )
        } else {
            guard.with_retry(
                Retry::new()
                    .with_policy(quick())
                    .with_min_backoff(Duration::ZERO)
                    .with_budget(budget.clone()),
            )
        };
        let gateway = MockGateway::start_with(Scenario::Flaky, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let client = guard.client(reqwest::Client::new());
        let url = format!("{}/v1/chat/completions", gateway.url());
        let started = Instant::now();
        let mut ok = 0u64;
        for _ in 0..CALLS {
            if call(&client, &url, Scenario::Flaky).await.fallback_decision
                == FallbackDecision::None
            {
                ok += 1;
            }
        }
        let attempts = gateway.requests();
        #[allow(clippy::cast_precision_loss)]
        let (rate, per_call, bound) = (
            ok as f64 / CALLS as f64,
            attempts as f64 / CALLS as f64,
            CALLS as f64 * (1.0 + budget.ratio())
                + budget.reserve() * windows_spanned(started, &budget),
        );
        println!(
            "flapping server (50% 429, 10% 503), {name}: {CALLS} calls, success {:.1}%, \
             {attempts} attempts ({per_call:.2} per call, bound {bound:.0})",
            rate * 100.0
        );
        assert!(rate > floor, "{name}: success rate {rate}");
        #[allow(clippy::cast_precision_loss)]
        let within = attempts as f64 <= bound;
        assert!(within, "{name}: {attempts} attempts > {bound}");
    }
}

/// An `Arc`'d middleware, to pick a retry preset at run time.
/// A TCP server that accepts and never answers: an OTLP backend that hangs.
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_slow_telemetry_backend_neither_fails_calls_nor_grows_memory() {
    // 2,000 calls per backend in the test suite; the figures in RELIABILITY.md use 10,000.
    let calls: usize = std::env::var("LOAD_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let gateway = MockGateway::start().await.unwrap();
    let url = format!("{}/v1/chat/completions", gateway.url());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hole = black_hole().await;
    let collector = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let rss_start = peak_rss_kib();
    for (name, endpoint) in [
        ("telemetry off", None),
        ("collector up", Some(collector.uri())),
        ("collector down", Some(format!("http://{closed}"))),
        ("collector hangs", Some(format!("http://{hole}"))),
    ] {
        let pipeline = match &endpoint {
            Some(e) => {
                let e = e.clone();
                Some(
                    tokio::task::spawn_blocking(move || {
                        otlp::pipeline(Protocol::HttpProtobuf, &e).unwrap()
                    })
                    .await
                    .unwrap(),
                )
            }
            None => None,
        };
        let guard = match &pipeline {
            Some(p) => Guard::new().with_telemetry(p.telemetry()),
            None => Guard::new().without_telemetry(),
        };
        let client = guard.client(reqwest::Client::new());
        let mut latencies = Vec::with_capacity(calls);
        let started = Instant::now();
        for _ in 0..calls {
            let t = Instant::now();
            let e = call(&client, &url, Scenario::Ok).await;
            latencies.push(t.elapsed());
            assert_eq!(e.fallback_decision, FallbackDecision::None);
        }
        let total = started.elapsed();
        latencies.sort_unstable();
        println!(
            "{name}: {calls} calls in {total:?}, p50 {:?}, p99 {:?}, peak RSS {} KiB (+{} KiB since the start)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            peak_rss_kib(),
            peak_rss_kib().saturating_sub(rss_start)
        );
        if let Some(p) = pipeline {
            // Shutting down waits out the exporter's timeout at most; it must not hang.
            let shutdown = tokio::time::timeout(
                Duration::from_secs(60),
                tokio::task::spawn_blocking(move || drop(p)),
            )
            .await;
            assert!(shutdown.is_ok(), "{name}: shutdown hung");
        }
    }
    // Spans pile up only to the batch processor's bounded queue (2,048 by default): the
    // process stays small whatever the backend does.
    let growth_mib = peak_rss_kib().saturating_sub(rss_start) / 1024;
    println!("peak RSS growth over all four runs: {growth_mib} MiB");
    assert!(growth_mib < 256, "{growth_mib} MiB");
}
