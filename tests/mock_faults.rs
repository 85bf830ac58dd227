//! Every fault the mock gateway knows, through the failover layer: a primary upstream with the
//! fault as its default scenario and a healthy secondary. Each test says what the caller got
//! (the whole answer, or a clean error where no answer exists: never a cut answer passed off
//! as a success), the evidence, and exactly how many requests each upstream saw.

mod common;

use std::time::{Duration, Instant};

use common::{SURFACES, json, path, request_body};
use futures_util::StreamExt as _;
use reqwest_llm_guard::evidence::{
    ApiSurface, FallbackDecision as D, ParseCheck, TransportErrorKind, Violation,
};
use reqwest_llm_guard::failover::{
    BreakerConfig, BreakerState, CommitPoint, Failover, FailoverBuilder, FailoverRecord,
    FailoverStop, HopReason, Upstream,
};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::retry::{Retry, RetryRecord};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use reqwest_retry::{RetryPolicy, RetryableStrategy};
use retry_policies::policies::ExponentialBackoff;

/// The faulty primary and the healthy secondary, fresh for each case so the counts are its own.
struct Upstreams {
    primary: MockGateway,
    secondary: MockGateway,
}

impl Upstreams {
    async fn start(fault: Scenario) -> Self {
        Self {
            primary: MockGateway::start_with(fault, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap(),
            secondary: MockGateway::start().await.unwrap(),
        }
    }

    /// Primary first, then secondary; both with the layer's defaults.
    fn failover(&self) -> FailoverBuilder {
        Failover::builder([self.upstream("primary"), self.upstream("secondary")])
    }

    fn upstream(&self, name: &str) -> Upstream {
        let gateway = if name == "primary" {
            &self.primary
        } else {
            &self.secondary
        };
        Upstream::new(name, &format!("{}/v1", gateway.url())).unwrap()
    }

    /// Requests each gateway saw: (primary, secondary).
    fn seen(&self) -> (u64, u64) {
        (self.primary.requests(), self.secondary.requests())
    }
}

/// Retries within milliseconds, so a test never waits on the client's own backoff.
fn fast() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(2)
}

/// The default strategy (429 only), fast.
fn retry_429() -> Retry {
    Retry::new()
        .with_policy(fast())
        .with_min_backoff(Duration::ZERO)
}

/// The OpenAI SDKs' strategy (429, 5xx, transport errors), fast.
fn retry_sdk() -> Retry<ExponentialBackoff, reqwest_llm_guard::retry::OpenAiSdk> {
    Retry::openai_sdk()
        .with_policy(fast())
        .with_min_backoff(Duration::ZERO)
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
}

impl Got {
    /// The whole answer: a 200 read to a clean end, with the surface's last word in it.
    fn is_complete(&self, surface: ApiSurface, stream: bool) -> bool {
        let last_word = match (surface, stream) {
            (ApiSurface::Responses, true) => self.body.contains("event: response.completed\n"),
            (_, true) => self.body.ends_with("data: [DONE]\n\n"),
            (ApiSurface::Responses, false) => json(&self.body)["status"] == "completed",
            (_, false) => json(&self.body)["choices"][0]["finish_reason"] == "stop",
        };
        self.status == Some(200) && !self.failed && last_word
    }
}

/// Sends `body` to `surface` with `headers` (the failover layer sends them to every upstream),
/// reads the answer to its end and waits for the call's final evidence.
async fn send(
    client: &ClientWithMiddleware,
    surface: ApiSurface,
    body: String,
    headers: &[(&str, &str)],
) -> Got {
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
    Got {
        status,
        body: text,
        failed,
        evidence: handle.settled().await,
        hops,
        retry,
    }
}

async fn call(
    client: &ClientWithMiddleware,
    surface: ApiSurface,
    stream: bool,
    headers: &[(&str, &str)],
) -> Got {
    send(client, surface, request_body(surface, stream), headers).await
}

/// The answer stood where it was: primary, no hop, nothing to act on.
fn assert_served_by_primary(got: &Got, name: &str) {
    let e = &got.evidence;
    assert_eq!(e.upstream.as_deref(), Some("primary"), "{name}");
    assert_eq!(e.hops, 0, "{name}");
    assert_eq!(e.fallback_decision, D::None, "{name}");
    assert_eq!(e.failover_stop, Some(FailoverStop::Decided), "{name}");
}

/// One hop, for `reason`, and the secondary's answer stood.
fn assert_failed_over(got: &Got, reason: HopReason, name: &str) {
    let e = &got.evidence;
    assert_eq!(e.upstream.as_deref(), Some("secondary"), "{name}");
    assert_eq!(e.hops, 1, "{name}");
    assert_eq!(got.hops, vec![reason], "{name}");
    assert_eq!(e.fallback_decision, D::None, "{name}");
    assert_eq!(
        e.upstream_retry_count, 0,
        "{name}: the secondary answered at once"
    );
    assert!(
        e.retry_count >= e.upstream_retry_count,
        "{name}: the call's retries count the primary's too"
    );
}

/// A stream that broke after it was handed on: the part that came, then an error, and the
/// decision left to the caller. Never a hop after the commit point.
fn assert_broken_after_commit(got: &Got, violation: Violation, name: &str) {
    let e = &got.evidence;
    assert_eq!(got.status, Some(200), "{name}");
    assert!(got.failed, "{name}: the body ends in an error, not cleanly");
    assert_eq!(e.parse_check, Some(ParseCheck::Fail), "{name}");
    assert_eq!(e.violation, Some(violation), "{name}");
    assert_eq!(e.fallback_decision, D::Fallback, "{name}");
    assert_eq!(e.upstream.as_deref(), Some("primary"), "{name}");
    assert_eq!(e.hops, 0, "{name}");
}

// ---- 1. 429 once, `retry-after: 1` in seconds.

#[tokio::test]
async fn a_429_once_with_retry_after_in_seconds_is_waited_out_on_the_same_upstream() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::RateLimitedOnceRetryAfter).await;
        let client = client(retry_429(), up.failover().build());
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_served_by_primary(&got, &name);
        assert_eq!(got.evidence.retry_count, 1, "{name}");
        let first = &got.retry.as_ref().unwrap().attempts[0];
        assert_eq!(
            first.server_wait,
            Some(Duration::from_secs(1)),
            "{name}: seconds, read as seconds"
        );
        assert_eq!(up.seen(), (2, 0), "{name}");
    }
}

// ---- 2. 429 forever, no `retry-after` at all.

#[tokio::test]
async fn a_429_without_retry_after_is_retried_on_the_clients_backoff_then_fails_over() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::RateLimitedNoRetryAfter).await;
        let client = client(retry_429(), up.failover().build());
        let started = Instant::now();
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::RateLimited, &name);
        assert_eq!(
            up.seen(),
            (3, 1),
            "{name}: 1 + 2 retries, then the secondary"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: no server wait to honour: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn after_a_429_without_retry_after_the_next_call_skips_the_cooling_upstream() {
    let up = Upstreams::start(Scenario::RateLimitedNoRetryAfter).await;
    // A cooldown far longer than the test, so the second call surely falls inside it.
    let failover = up
        .failover()
        .with_breaker(&BreakerConfig::default().with_rate_limit_cooldown(Duration::from_secs(60)))
        .build();
    let client = client(retry_429(), failover.clone());
    let first = call(&client, ApiSurface::ChatCompletions, false, &[]).await;
    assert_failed_over(&first, HopReason::RateLimited, "first");
    let second = call(&client, ApiSurface::ChatCompletions, false, &[]).await;
    assert!(second.is_complete(ApiSurface::ChatCompletions, false));
    assert_eq!(second.evidence.upstream.as_deref(), Some("secondary"));
    assert_eq!(second.evidence.hops, 0, "the primary was never tried");
    assert_eq!(
        up.seen(),
        (3, 2),
        "a 429 is a cooldown: no request to the primary"
    );
    assert_eq!(
        failover.breaker("primary").unwrap().state(),
        BreakerState::Open
    );
}

#[tokio::test]
async fn when_every_upstream_rate_limits_the_last_429_comes_back_as_fallback() {
    let up = Upstreams::start(Scenario::RateLimitedNoRetryAfter).await;
    let other = MockGateway::start_with(
        Scenario::RateLimitedNoRetryAfter,
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    let client = client(
        retry_429(),
        Failover::new([
            up.upstream("primary"),
            Upstream::new("other", &format!("{}/v1", other.url())).unwrap(),
        ]),
    );
    let got = call(&client, ApiSurface::ChatCompletions, false, &[]).await;
    assert_eq!(got.status, Some(429));
    assert_eq!(got.evidence.fallback_decision, D::Fallback);
    assert_eq!(got.evidence.upstream.as_deref(), Some("other"));
    assert_eq!(
        got.evidence.failover_stop,
        Some(FailoverStop::NoEligibleUpstream)
    );
    assert_eq!((up.primary.requests(), other.requests()), (3, 3));
}

// ---- 3. 500 once, then correct.

#[tokio::test]
async fn a_500_once_is_retried_on_the_same_upstream_by_the_openai_sdk_preset() {
    for surface in SURFACES {
        for stream in [false, true] {
            let up = Upstreams::start(Scenario::ServerErrorOnce).await;
            let client = client(retry_sdk(), up.failover().build());
            let got = call(&client, surface, stream, &[]).await;
            let name = format!("{surface} stream={stream}");
            assert!(got.is_complete(surface, stream), "{name}: {}", got.body);
            assert_served_by_primary(&got, &name);
            assert_eq!(got.evidence.retry_count, 1, "{name}");
            assert_eq!(up.seen(), (2, 0), "{name}");
        }
    }
}

#[tokio::test]
async fn a_500_once_fails_over_when_5xx_is_not_retried() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::ServerErrorOnce).await;
        let client = client(retry_429(), up.failover().build());
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::UpstreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

// ---- 4. 503 forever.

#[tokio::test]
async fn a_503_forever_is_retried_within_bounds_then_fails_over() {
    for surface in SURFACES {
        for stream in [false, true] {
            let up = Upstreams::start(Scenario::ServiceUnavailable).await;
            let client = client(retry_sdk(), up.failover().build());
            let got = call(&client, surface, stream, &[]).await;
            let name = format!("{surface} stream={stream}");
            assert!(got.is_complete(surface, stream), "{name}: {}", got.body);
            assert_failed_over(&got, HopReason::UpstreamFailed, &name);
            assert_eq!(
                up.seen(),
                (3, 1),
                "{name}: 1 + 2 retries, then the secondary"
            );
        }
    }
}

#[tokio::test]
async fn when_every_upstream_is_down_the_last_503_comes_back_as_fallback() {
    let up = Upstreams::start(Scenario::ServiceUnavailable).await;
    let other = MockGateway::start_with(Scenario::ServiceUnavailable, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client = client(
        retry_429(),
        Failover::new([
            up.upstream("primary"),
            Upstream::new("other", &format!("{}/v1", other.url())).unwrap(),
        ]),
    );
    let got = call(&client, ApiSurface::Responses, true, &[]).await;
    assert_eq!(got.status, Some(503));
    assert!(!got.body.contains("response.completed"));
    assert_eq!(got.evidence.fallback_decision, D::Fallback);
    assert_eq!(got.evidence.upstream.as_deref(), Some("other"));
    assert_eq!((up.primary.requests(), other.requests()), (1, 1));
}

// ---- 5. A reset before the headers, once.

#[tokio::test]
async fn the_mock_resets_the_connection_before_the_headers_with_an_rst() {
    let gateway = MockGateway::start_with(Scenario::ResetOnce, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client = Guard::new()
        .without_telemetry()
        .without_retry()
        .client(reqwest::Client::new());
    let handle = EvidenceHandle::new();
    let result = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .with_extension(handle.clone())
        .body(request_body(ApiSurface::ChatCompletions, false))
        .send()
        .await;
    assert!(result.is_err(), "no response at all");
    assert_eq!(
        handle.settled().await.transport_error,
        Some(TransportErrorKind::Reset),
        "a reset, not a clean close"
    );
    let again = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .body(request_body(ApiSurface::ChatCompletions, false))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "once per session");
    assert_eq!(gateway.requests(), 2);
}

#[tokio::test]
async fn a_reset_before_the_headers_is_retried_on_the_same_upstream_by_the_openai_sdk_preset() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::ResetOnce).await;
        let client = client(retry_sdk(), up.failover().build());
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert_served_by_primary(&got, &name);
        assert_eq!(got.evidence.retry_count, 1, "{name}");
        assert_eq!(up.seen(), (2, 0), "{name}");
    }
}

#[tokio::test]
async fn a_reset_before_the_headers_fails_over_when_transport_errors_are_not_retried() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::ResetOnce).await;
        let client = client(retry_429(), up.failover().build());
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::TransportError, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

// ---- 6. Accepts and never answers.

#[tokio::test]
async fn a_silent_upstream_is_left_at_the_time_to_headers_limit_and_not_retried() {
    for surface in SURFACES {
        for stream in [false, true] {
            let up = Upstreams::start(Scenario::Hang).await;
            let client = client(
                retry_sdk().with_time_to_headers(Duration::from_millis(200)),
                up.failover().build(),
            );
            let started = Instant::now();
            let got = call(&client, surface, stream, &[]).await;
            let name = format!("{surface} stream={stream}");
            assert!(got.is_complete(surface, stream), "{name}: {}", got.body);
            assert_failed_over(&got, HopReason::TransportError, &name);
            assert_eq!(up.seen(), (1, 1), "{name}: a silent route is not retried");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{name}: the primary holds forever: {:?}",
                started.elapsed()
            );
        }
    }
}

// ---- 7. The first token late.

#[tokio::test]
async fn a_stream_whose_first_token_is_late_fails_over_at_the_first_token_limit() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::SlowFirstToken).await;
        let client = client(
            retry_429(),
            up.failover()
                .with_first_token_timeout(Duration::from_millis(200))
                .build(),
        );
        let started = Instant::now();
        let got = call(
            &client,
            surface,
            true,
            &[("x-mock-first-token-ms", "10000")],
        )
        .await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::StreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: the primary's first token is 10 s away: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_late_non_streaming_answer_is_waited_for_the_first_token_limit_is_for_streams() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::SlowFirstToken).await;
        let client = client(
            retry_429(),
            up.failover()
                .with_first_token_timeout(Duration::from_millis(50))
                .build(),
        );
        let got = call(&client, surface, false, &[("x-mock-first-token-ms", "300")]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_served_by_primary(&got, &name);
        assert_eq!(up.seen(), (1, 0), "{name}");
    }
}

// ---- 8. A stream cut after K of N tokens.

#[tokio::test]
async fn a_stream_cut_after_its_first_tokens_ends_in_an_error_never_cleanly() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamCut).await;
        let client = client(retry_sdk(), up.failover().build());
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert_eq!(
            got.body.matches("PASS ").count(),
            2,
            "{name}: the 2 tokens that came reach the caller: {}",
            got.body
        );
        assert!(!got.is_complete(surface, true), "{name}");
        assert_broken_after_commit(&got, Violation::BodyReadError, &name);
        assert_eq!(up.seen(), (1, 0), "{name}: committed at the first byte");
    }
}

#[tokio::test]
async fn a_stream_cut_before_the_end_commit_point_fails_over_transparently() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamCut).await;
        let client = client(
            retry_sdk(),
            up.failover()
                .with_commit_point(CommitPoint::End { max_bytes: 1 << 20 })
                .build(),
        );
        let got = call(&client, surface, true, &[("x-mock-cut-after", "4")]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert!(
            !got.body.contains("PASS "),
            "{name}: nothing of the primary's"
        );
        assert_failed_over(&got, HopReason::StreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

#[tokio::test]
async fn a_stream_cut_before_any_content_fails_over_when_committing_at_the_first_content() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamCut).await;
        let client = client(
            retry_429(),
            up.failover()
                .with_commit_point(CommitPoint::FirstContent)
                .build(),
        );
        let got = call(&client, surface, true, &[("x-mock-cut-after", "0")]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::StreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

#[tokio::test]
async fn a_non_streaming_answer_cut_in_half_fails_over() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamCut).await;
        let client = client(retry_429(), up.failover().build());
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::UpstreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

// ---- 9. A stream that stalls after K tokens, the connection open.

#[tokio::test]
async fn a_stream_that_stalls_after_the_commit_ends_in_an_error_at_the_idle_limit() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamStall).await;
        let client = client(
            retry_sdk(),
            up.failover()
                .with_idle_timeout(Duration::from_millis(200))
                .build(),
        );
        let started = Instant::now();
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert_eq!(got.body.matches("PASS ").count(), 2, "{name}: {}", got.body);
        assert_broken_after_commit(&got, Violation::BodyStalled, &name);
        assert_eq!(up.seen(), (1, 0), "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: the primary stays silent forever: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_stream_that_stalls_before_the_end_commit_point_fails_over_at_the_idle_limit() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamStall).await;
        let client = client(
            retry_sdk(),
            up.failover()
                .with_commit_point(CommitPoint::End { max_bytes: 1 << 20 })
                .with_idle_timeout(Duration::from_millis(200))
                .build(),
        );
        let started = Instant::now();
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::StreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    }
}

// ---- 10. One malformed chunk mid-stream.

#[tokio::test]
async fn a_malformed_chunk_mid_stream_fails_the_stream_after_the_commit() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamMalformedChunk).await;
        let client = client(retry_sdk(), up.failover().build());
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert_broken_after_commit(&got, Violation::NotJson, &name);
        assert_eq!(up.seen(), (1, 0), "{name}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_before_the_end_commit_point_fails_over_transparently() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::StreamMalformedChunk).await;
        let client = client(
            retry_sdk(),
            up.failover()
                .with_commit_point(CommitPoint::End { max_bytes: 1 << 20 })
                .build(),
        );
        let got = call(&client, surface, true, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, true), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::StreamFailed, &name);
        assert_eq!(up.seen(), (1, 1), "{name}");
    }
}

// ---- 11. A stream without its terminator, otherwise complete.

#[tokio::test]
async fn a_chat_stream_without_done_but_with_its_finish_reason_is_an_answer() {
    let up = Upstreams::start(Scenario::StreamNoTerminator).await;
    let client = client(retry_sdk(), up.failover().build());
    let got = call(&client, ApiSurface::ChatCompletions, true, &[]).await;
    assert!(!got.failed, "{}", got.body);
    assert!(!got.body.contains("[DONE]"));
    assert!(got.body.contains(r#""finish_reason":"stop""#));
    assert_eq!(got.evidence.parse_check, Some(ParseCheck::Pass));
    assert_served_by_primary(&got, "chat");
    assert_eq!(up.seen(), (1, 0));
}

#[tokio::test]
async fn a_responses_stream_without_its_terminal_event_is_truncated() {
    let up = Upstreams::start(Scenario::StreamNoTerminator).await;
    let first_byte = client(retry_sdk(), up.failover().build());
    let got = call(&first_byte, ApiSurface::Responses, true, &[]).await;
    assert!(
        got.body.contains("response.output_item.done"),
        "{}",
        got.body
    );
    assert!(!got.body.contains("response.completed"));
    assert_broken_after_commit(&got, Violation::StreamTruncated, "responses");
    assert_eq!(up.seen(), (1, 0));
    // Committed at the end, it never reaches the caller: the secondary answers.
    let up = Upstreams::start(Scenario::StreamNoTerminator).await;
    let at_end = client(
        retry_sdk(),
        up.failover()
            .with_commit_point(CommitPoint::End { max_bytes: 1 << 20 })
            .build(),
    );
    let got = call(&at_end, ApiSurface::Responses, true, &[]).await;
    assert!(got.is_complete(ApiSurface::Responses, true), "{}", got.body);
    assert_failed_over(&got, HopReason::StreamFailed, "responses, end");
    assert_eq!(up.seen(), (1, 1));
}

// ---- 12. context_length_exceeded.

#[tokio::test]
async fn a_context_length_error_moves_to_the_upstream_with_the_larger_window() {
    for surface in SURFACES {
        let up = Upstreams::start(Scenario::ContextLengthExceeded).await;
        let client = client(
            retry_sdk(),
            Failover::new([
                up.upstream("primary").with_context_window(8_000),
                up.upstream("secondary").with_context_window(128_000),
            ]),
        );
        let got = call(&client, surface, false, &[]).await;
        let name = format!("{surface}");
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        assert_failed_over(&got, HopReason::ContextLength, &name);
        assert_eq!(up.seen(), (1, 1), "{name}: a 400 is never retried");
    }
}

#[tokio::test]
async fn the_context_length_error_is_openais_envelope() {
    for (surface, param) in [
        (ApiSurface::ChatCompletions, "messages"),
        (ApiSurface::Responses, "input"),
    ] {
        let gateway =
            MockGateway::start_with(Scenario::ContextLengthExceeded, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}{}", gateway.url(), path(surface)))
            .body(request_body(surface, false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        assert_eq!(body["error"]["param"], param);
    }
}

// ---- 13. A content-policy refusal.

#[tokio::test]
async fn a_content_policy_refusal_holds_and_is_never_masked_by_a_hop() {
    for surface in SURFACES {
        for stream in [false, true] {
            let up = Upstreams::start(Scenario::ContentPolicy).await;
            let client = client(retry_sdk(), up.failover().build());
            let got = call(&client, surface, stream, &[]).await;
            let name = format!("{surface} stream={stream}");
            let e = &got.evidence;
            assert_eq!(got.status, Some(400), "{name}");
            assert_eq!(e.fallback_decision, D::Hold, "{name}");
            assert_eq!(
                e.api_error
                    .as_ref()
                    .and_then(|a| a.code.as_ref())
                    .map(|c| c.as_text().into_owned())
                    .as_deref(),
                Some("content_policy_violation"),
                "{name}"
            );
            assert_eq!(e.upstream.as_deref(), Some("primary"), "{name}");
            assert_eq!(e.hops, 0, "{name}");
            assert_eq!(e.failover_stop, Some(FailoverStop::Decided), "{name}");
            assert_eq!(up.seen(), (1, 0), "{name}");
        }
    }
}

// ---- 14. A model that takes no assistant prefill (continuation does not exist yet: the mock's
// own behaviour, through the stack).

#[tokio::test]
async fn a_prefill_is_refused_and_a_plain_request_served() {
    let prefills = [
        (
            ApiSurface::ChatCompletions,
            r#"{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"PA"}]}"#,
        ),
        (
            ApiSurface::Responses,
            r#"{"model":"claude-sonnet-4-6","input":[{"role":"user","content":"hi"},{"role":"assistant","content":"PA"}]}"#,
        ),
    ];
    for (surface, prefill) in prefills {
        let up = Upstreams::start(Scenario::PrefillRejected).await;
        let client = client(retry_sdk(), up.failover().build());
        let refused = send(&client, surface, prefill.to_owned(), &[]).await;
        let name = format!("{surface}");
        assert_eq!(refused.status, Some(400), "{name}");
        assert!(
            json(&refused.body)["error"]["message"]
                .as_str()
                .is_some_and(
                    |m| m.starts_with("This model does not support assistant message prefill")
                ),
            "{name}: {}",
            refused.body
        );
        assert_eq!(refused.evidence.fallback_decision, D::Hold, "{name}");
        assert_eq!(
            up.seen(),
            (1, 0),
            "{name}: a refused request fails anywhere"
        );
        let served = call(&client, surface, false, &[]).await;
        assert!(
            served.is_complete(surface, false),
            "{name}: {}",
            served.body
        );
        assert_served_by_primary(&served, &name);
        assert_eq!(up.seen(), (2, 0), "{name}");
    }
}

// ---- 15. Down for a while, then healthy.

#[tokio::test]
async fn an_upstream_down_for_a_while_is_failed_over_then_serves_again() {
    let up = Upstreams::start(Scenario::DownThenUp).await;
    let client = client(retry_429(), up.failover().build());
    let down = [("x-mock-down-ms", "300")];
    let got = call(&client, ApiSurface::ChatCompletions, false, &down).await;
    assert!(got.is_complete(ApiSurface::ChatCompletions, false));
    assert_failed_over(&got, HopReason::UpstreamFailed, "while down");
    assert_eq!(up.seen(), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = call(&client, ApiSurface::Responses, true, &down).await;
    assert!(got.is_complete(ApiSurface::Responses, true), "{}", got.body);
    assert_served_by_primary(&got, "up again");
    assert_eq!(up.seen(), (2, 1));
}

// Real time, short open times: tokio's paused clock would jump ahead while the calls wait on
// loopback I/O.
#[tokio::test]
async fn a_flapping_upstreams_breaker_opens_and_a_probe_finds_it_healthy_again() {
    let up = Upstreams::start(Scenario::DownThenUp).await;
    let failover = up
        .failover()
        .with_breaker(
            &BreakerConfig::default()
                .with_consecutive_failures(2)
                .with_open_time(Duration::from_millis(400), Duration::from_secs(1))
                .with_jitter(0.0),
        )
        .build();
    let client = client(retry_429(), failover.clone());
    let down = [("x-mock-down-ms", "200")];
    for _ in 0..3 {
        let got = call(&client, ApiSurface::ChatCompletions, false, &down).await;
        assert!(got.is_complete(ApiSurface::ChatCompletions, false));
        assert_eq!(got.evidence.upstream.as_deref(), Some("secondary"));
    }
    assert_eq!(
        up.seen(),
        (2, 3),
        "open after 2 failures: the third call goes straight to the secondary"
    );
    let breaker = failover.breaker("primary").unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    // Past both the outage and the open time: one probe, and the breaker closes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = call(&client, ApiSurface::ChatCompletions, false, &down).await;
    assert!(got.is_complete(ApiSurface::ChatCompletions, false));
    assert_served_by_primary(&got, "probe");
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(up.seen(), (3, 3));
}

// ---- On the wire: the faults look as documented, read from a raw socket.

/// Sends one raw HTTP/1.1 request for `scenario` and reads for up to `wait`: the bytes that
/// came, and whether the server closed the connection (else it was still open at the end).
/// `connection: close`, so that a complete answer ends with the close, not a keep-alive.
async fn raw(scenario: Scenario, body: &str, extra: &str, wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gateway = MockGateway::start_with(scenario, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn on_the_wire_the_stream_faults_are_what_they_say() {
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let long = Duration::from_secs(2);

    let (cut, closed) = raw(Scenario::StreamCut, stream, "", long).await;
    assert!(closed, "the connection is closed");
    assert_eq!(cut.matches(r#""content":"PASS "#).count(), 2, "{cut}");
    assert!(!cut.contains("finish_reason\":\"stop") && !cut.contains("[DONE]"));
    assert!(
        !cut.ends_with("0\r\n\r\n"),
        "no end of the chunked body: {cut}"
    );

    let (stall, closed) = raw(
        Scenario::StreamStall,
        stream,
        "x-mock-cut-after: 3\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(!closed, "the connection stays open");
    assert_eq!(stall.matches(r#""content":"PASS "#).count(), 3, "{stall}");

    let (bad, _) = raw(Scenario::StreamMalformedChunk, stream, "", long).await;
    let data: Vec<&str> = bad
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let broken = data
        .iter()
        .filter(|d| **d != "[DONE]" && serde_json::from_str::<serde_json::Value>(d).is_err())
        .count();
    assert_eq!(broken, 1, "{bad}");
    assert!(bad.contains("[DONE]"), "the rest is fine");

    let (open_ended, _) = raw(Scenario::StreamNoTerminator, stream, "", long).await;
    assert!(open_ended.contains(r#""finish_reason":"stop""#) && !open_ended.contains("[DONE]"));
    assert!(
        open_ended.ends_with("0\r\n\r\n"),
        "the body itself ends cleanly"
    );

    // The headers at once, the first event 10 s later.
    let (late, closed) = raw(
        Scenario::SlowFirstToken,
        stream,
        "x-mock-first-token-ms: 10000\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(!closed && late.starts_with("HTTP/1.1 200 OK"), "{late}");
    assert!(!late.contains("data:"), "{late}");

    let (hang, closed) = raw(Scenario::Hang, stream, "", Duration::from_millis(500)).await;
    assert!(!closed && hang.is_empty(), "{hang}");
}
