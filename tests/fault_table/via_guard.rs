//! The library driver: each row through `Guard` with a `Failover` over the row's upstreams, the
//! retry layer on a fast backoff (1 to 2 ms, two retries), so a case never waits on the
//! client's own backoff. It checks everything the row expects: what the caller got, and the
//! call's `Evidence`, failover record, retry record and the primary's breaker.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck};
use reqwest_llm_guard::failover::{BreakerConfig, Failover, FailoverRecord, HopReason, Upstream};
use reqwest_llm_guard::mock::MockGateway;
use reqwest_llm_guard::retry::{Retry, RetryRecord};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use reqwest_retry::{RetryPolicy, RetryableStrategy};
use retry_policies::policies::ExponentialBackoff;

use crate::common::path;
use crate::table::{self, Driver, End, Expect, Fault, Preset, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_through_the_library() {
    crate::run_table(Driver::Library, run).await;
}

/// One row, one request kind: fresh gateways, one client for every call of the row.
async fn run(fault: &'static Fault, kind: (ApiSurface, bool), case: String) {
    let gateways = crate::gateways(fault).await;
    let failover = failover(fault, &gateways);
    let client = match fault.settings.retry {
        Preset::On429 => client(
            with_time_to_headers(
                Retry::new()
                    .with_policy(fast())
                    .with_min_backoff(Duration::ZERO),
                &fault.settings,
            ),
            failover.clone(),
        ),
        Preset::OpenAiSdk => client(
            with_time_to_headers(
                Retry::openai_sdk()
                    .with_policy(fast())
                    .with_min_backoff(Duration::ZERO),
                &fault.settings,
            ),
            failover.clone(),
        ),
    };
    for (i, call) in fault.calls.iter().enumerate() {
        tokio::time::sleep(call.after).await;
        let (surface, stream, body) = table::body(call.request, kind);
        let mut label = String::new();
        for time in 0..call.times {
            label = crate::call_label(&case, i, fault.calls.len(), time, call.times);
            let got = send(&client, surface, body.clone(), call.headers).await;
            check(&call.expect, &got, (surface, stream), &label);
            if let Some(state) = call.expect.primary_breaker {
                let primary = fault.upstreams[0].name;
                assert_eq!(
                    failover.breaker(primary).unwrap().state(),
                    state,
                    "{label}: the primary's breaker"
                );
            }
        }
        assert_eq!(
            crate::seen(&gateways),
            call.expect.seen.by(Driver::Library),
            "{label}: requests each upstream saw"
        );
    }
}

/// Retries within milliseconds, so a case never waits on the client's own backoff.
fn fast() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(2)
}

fn with_time_to_headers<S>(
    retry: Retry<ExponentialBackoff, S>,
    settings: &Settings,
) -> Retry<ExponentialBackoff, S> {
    match settings.time_to_headers {
        Some(limit) => retry.with_time_to_headers(limit),
        None => retry,
    }
}

/// The row's upstreams in order, with the row's failover and breaker settings.
fn failover(fault: &Fault, gateways: &[MockGateway]) -> Failover {
    let upstreams = fault.upstreams.iter().zip(gateways).map(|(up, gateway)| {
        let upstream = Upstream::new(up.name, &format!("{}/v1", gateway.url())).unwrap();
        match up.context_window {
            Some(tokens) => upstream.with_context_window(tokens),
            None => upstream,
        }
    });
    let s = &fault.settings;
    let mut builder = Failover::builder(upstreams);
    if let Some(commit) = s.commit {
        builder = builder.with_commit_point(commit);
    }
    if let Some(limit) = s.first_token_timeout {
        builder = builder.with_first_token_timeout(limit);
    }
    if let Some(limit) = s.idle_timeout {
        builder = builder.with_idle_timeout(limit);
    }
    if !s.breaker.is_default() {
        let b = &s.breaker;
        let d = BreakerConfig::default();
        let mut config = BreakerConfig::default().with_failure_rate(
            d.failure_rate,
            d.window,
            b.minimum_calls.unwrap_or(d.minimum_calls),
        );
        if let Some(n) = b.consecutive_failures {
            config = config.with_consecutive_failures(n);
        }
        if let Some((base, max)) = b.open {
            config = config.with_open_time(base, max);
        }
        if let Some(share) = b.jitter {
            config = config.with_jitter(share);
        }
        if let Some(wait) = b.rate_limit_cooldown {
            config = config.with_rate_limit_cooldown(wait);
        }
        builder = builder.with_breaker(&config);
    }
    builder.build()
}

fn client<P, S>(retry: Retry<P, S>, failover: Failover) -> ClientWithMiddleware
where
    P: RetryPolicy + Send + Sync + 'static,
    S: RetryableStrategy + Send + Sync + 'static,
{
    Guard::new()
        .without_telemetry()
        .with_retry(retry)
        .with_failover(failover)
        .client(reqwest::Client::new())
}

/// What the caller got.
struct Got {
    /// `None` when the call ended in an error, without a response.
    status: Option<u16>,
    body: String,
    /// The call, or the body read to its end, ended in an error rather than cleanly.
    failed: bool,
    evidence: Evidence,
    /// Why each hop was made (only when a response came back).
    hops: Vec<HopReason>,
    /// The answering upstream's retries (only when a response came back).
    retry: Option<RetryRecord>,
    /// From the request to the call's final evidence.
    elapsed: Duration,
}

/// Sends `body` to `surface` with `headers` (the failover layer sends them to every upstream),
/// reads the answer to its end and waits for the call's final evidence.
async fn send(
    client: &ClientWithMiddleware,
    surface: ApiSurface,
    body: String,
    headers: &[(&str, &str)],
) -> Got {
    let started = Instant::now();
    let handle = EvidenceHandle::new();
    // A placeholder: the failover layer points the request at each upstream in turn.
    let mut request = client
        .post(format!("http://127.0.0.1:9{}", path(surface)))
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (mut status, mut text, mut failed, mut hops, mut retry) =
        (None, String::new(), false, Vec::new(), None);
    match request.send().await {
        Ok(response) => {
            status = Some(response.status().as_u16());
            if let Some(record) = response.extensions().get::<FailoverRecord>() {
                hops = record.hops.iter().map(|h| h.reason).collect();
            }
            retry = response.extensions().get::<RetryRecord>().cloned();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                let Ok(bytes) = chunk else {
                    failed = true;
                    break;
                };
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        Err(_) => failed = true,
    }
    let evidence = handle.settled().await;
    Got {
        status,
        body: text,
        failed,
        evidence,
        hops,
        retry,
        elapsed: started.elapsed(),
    }
}

/// Everything the row expects of one call, as the library shows it.
fn check(expect: &Expect, got: &Got, (surface, stream): (ApiSurface, bool), label: &str) {
    let e = &got.evidence;
    let body = &got.body;
    assert_eq!(
        got.status,
        Some(expect.status),
        "{label}: status; body: {body}"
    );
    let whole =
        got.status == Some(200) && !got.failed && table::has_last_word(body, surface, stream);
    match expect.end {
        End::Whole => assert!(whole, "{label}: the whole answer: {body}"),
        End::Clean => assert!(!got.failed, "{label}: the body ends cleanly: {body}"),
        End::Broken(violation) => {
            assert!(
                got.failed,
                "{label}: the body ends in an error, not cleanly: {body}"
            );
            assert!(!whole, "{label}: {body}");
            assert_eq!(e.parse_check, Some(ParseCheck::Fail), "{label}");
            assert_eq!(e.violation, Some(violation), "{label}: the violation");
        }
    }
    assert_eq!(
        e.upstream.as_deref(),
        Some(expect.upstream),
        "{label}: the upstream that answered"
    );
    assert_eq!(
        usize::try_from(e.hops).unwrap(),
        expect.hops.len(),
        "{label}: hops"
    );
    assert_eq!(got.hops, expect.hops, "{label}: why each hop was made");
    assert_eq!(
        e.fallback_decision, expect.decision,
        "{label}: the decision"
    );
    if let Some(stop) = expect.stop {
        assert_eq!(
            e.failover_stop,
            Some(stop),
            "{label}: why the failover stopped"
        );
    }
    if let Some(n) = expect.retries {
        assert_eq!(
            e.retry_count, n,
            "{label}: the call's retries, on every upstream"
        );
    }
    if let Some(n) = expect.upstream_retries {
        assert_eq!(
            e.upstream_retry_count, n,
            "{label}: the retries on the upstream that answered"
        );
    }
    assert!(
        e.retry_count >= e.upstream_retry_count,
        "{label}: the call's retries count every upstream's"
    );
    if let Some(check) = expect.parse_check {
        assert_eq!(e.parse_check, Some(check), "{label}: the parse check");
    }
    if let Some(code) = expect.error_code {
        assert_eq!(
            e.api_error
                .as_ref()
                .and_then(|a| a.code.as_ref())
                .map(|c| c.as_text().into_owned())
                .as_deref(),
            Some(code),
            "{label}: the evidence's API error"
        );
    }
    if let Some(wait) = expect.server_wait {
        let first = &got.retry.as_ref().expect("a retry record").attempts[0];
        assert_eq!(
            first.server_wait,
            Some(wait),
            "{label}: the server's wait, read in its unit"
        );
        assert!(
            got.elapsed + Duration::from_millis(100) >= wait,
            "{label}: the retry came after the server's wait: {:?}",
            got.elapsed
        );
    }
    if let Some(limit) = expect.within {
        assert!(
            got.elapsed < limit,
            "{label}: the fault's own delay was not waited out: {:?}",
            got.elapsed
        );
    }
    table::check_body(expect, body, surface, stream, label);
}
