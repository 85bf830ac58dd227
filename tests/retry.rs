//! The retry layer over real HTTP (wiremock), with exact attempt counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest_llm_guard::evidence::{FallbackDecision, WafKind, WafVendor, WafVerdict};
use reqwest_llm_guard::inspect::Inspect;
use reqwest_llm_guard::retry::{
    Retry, RetryBudget, RetryRecord, StopReason, WaitReason, default_policy,
};
use reqwest_llm_guard::{Error, ErrorKind};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};
use reqwest_retry::{Retryable, RetryableStrategy};
use retry_policies::policies::ExponentialBackoff;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}]}"#;
const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const CHAT: &str = "/v1/chat/completions";

fn stack(retry: impl Middleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(retry)
        .with(Inspect::new())
        .build()
}

/// Backoff fast enough for real-time tests.
fn quick() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(4))
        .build_with_max_retries(2)
}

/// The retry layer with [`quick`] backoff and no floor.
fn fast() -> Retry {
    Retry::new()
        .with_policy(quick())
        .with_min_backoff(Duration::ZERO)
}

fn rate_limited() -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_raw(RATE_LIMITED, "application/json")
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(OK, "application/json")
}

/// The call's decision: without the call layer, `Evidence` decides with the default table.
fn decision(response: &reqwest::Response) -> FallbackDecision {
    reqwest_llm_guard::Evidence::of(response).fallback_decision
}

fn record(response: &reqwest::Response) -> RetryRecord {
    response.extensions().get::<RetryRecord>().unwrap().clone()
}

/// A server that answers `first` once, then [`ok`]: each exactly once.
async fn once_then_ok(first: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(first)
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(CHAT))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    server
}

async fn post(client: &ClientWithMiddleware, server: &MockServer) -> reqwest::Response {
    client
        .post(format!("{}{CHAT}", server.uri()))
        .body(r#"{"model":"m","messages":[]}"#)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_429_then_200_takes_two_attempts_and_stands() {
    let server = once_then_ok(rate_limited()).await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(response.status(), 200);
    assert_eq!(decision(&response), FallbackDecision::None);
    let record = record(&response);
    assert_eq!(record.retries(), 1);
    assert_eq!(record.stop_reason(), Some(StopReason::Done));
    assert_eq!(record.attempts[0].status.map(|s| s.as_u16()), Some(429));
    assert_eq!(
        record.attempts[0].retry_after.map(|r| r.1),
        Some(WaitReason::Backoff)
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_on_tokios_clock() {
    let server = once_then_ok(rate_limited().insert_header("retry-after", "2")).await;
    let started = tokio::time::Instant::now();
    let response = post(&stack(Retry::new()), &server).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    let record = record(&response);
    assert_eq!(
        record.attempts[0].retry_after,
        Some((Duration::from_secs(2), WaitReason::RetryAfter))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_wins_over_retry_after() {
    let server = once_then_ok(
        rate_limited()
            .insert_header("retry-after-ms", "1500")
            .insert_header("retry-after", "30"),
    )
    .await;
    let response = post(&stack(Retry::new()), &server).await;
    assert_eq!(
        record(&response).attempts[0].retry_after,
        Some((Duration::from_millis(1500), WaitReason::RetryAfterMs))
    );
}

#[tokio::test]
async fn retry_after_over_the_cap_means_one_attempt_and_fallback() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited().insert_header("retry-after", "120"))
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&stack(Retry::new()), &server).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        record(&response).stop_reason(),
        Some(StopReason::RetryAfterOverCap)
    );
    assert_eq!(decision(&response), FallbackDecision::Fallback);
}

#[tokio::test]
async fn x_should_retry_false_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited().insert_header("x-should-retry", "false"))
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(
        record(&response).stop_reason(),
        Some(StopReason::ShouldRetryFalse)
    );
    assert_eq!(decision(&response), FallbackDecision::Fallback);
}

#[tokio::test]
async fn x_should_retry_true_retries_what_the_strategy_would_not() {
    let server = once_then_ok(
        ResponseTemplate::new(500)
            .set_body_raw(RATE_LIMITED, "application/json")
            .insert_header("x-should-retry", "true"),
    )
    .await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(response.status(), 200);
    assert_eq!(record(&response).retries(), 1);
}

#[tokio::test]
async fn waf_challenge_on_429_is_never_retried() {
    let page = "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
        <body><div id=\"challenge-error-text\"></div>\
        <script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1\"></script></body></html>";
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_raw(page, "text/html; charset=UTF-8")
                .insert_header("cf-mitigated", "challenge")
                .insert_header("server", "cloudflare")
                .insert_header("cf-ray", "8f1e2d3c4b5a6978-AMS"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&stack(fast()), &server).await;
    let wall = response.extensions().get::<WafVerdict>().cloned().unwrap();
    assert_eq!(
        (wall.vendor, wall.kind),
        (WafVendor::Cloudflare, WafKind::Challenge)
    );
    assert_eq!(wall.reference.as_deref(), Some("8f1e2d3c4b5a6978"));
    assert_eq!(record(&response).stop_reason(), Some(StopReason::WafWall));
    assert_eq!(decision(&response), FallbackDecision::Hold);
}

#[tokio::test]
async fn a_json_403_is_never_retried_even_by_a_strategy_that_asks() {
    struct RetryEverything;
    impl RetryableStrategy for RetryEverything {
        fn handle(
            &self,
            _: &Result<reqwest::Response, reqwest_middleware::Error>,
        ) -> Option<Retryable> {
            Some(Retryable::Transient)
        }
    }
    let body = r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#;
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_raw(body, "application/json")
                .insert_header("server", "cloudflare")
                .insert_header("cf-ray", "8f1e2d3c4b5a6978-AMS"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let retry = fast().with_strategy(RetryEverything);
    let response = post(&stack(retry), &server).await;
    assert!(
        response.extensions().get::<WafVerdict>().is_none(),
        "the API spoke, not a WAF"
    );
    assert_eq!(record(&response).stop_reason(), Some(StopReason::Forbidden));
    assert_eq!(decision(&response), FallbackDecision::Hold);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_retries() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited().insert_header("retry-after", "3"))
        .expect(1)
        .mount(&server)
        .await;
    let retry = Retry::new().with_deadline(Duration::from_secs(2));
    let response = post(&stack(retry), &server).await;
    assert_eq!(record(&response).stop_reason(), Some(StopReason::Deadline));
    assert_eq!(decision(&response), FallbackDecision::Fallback);
}

#[tokio::test]
async fn retries_run_out_and_the_429_is_returned_as_it_came() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited())
        .expect(3)
        .mount(&server)
        .await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(response.status(), 429);
    let record = record(&response);
    assert_eq!(record.retries(), 2);
    assert_eq!(record.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_eq!(decision(&response), FallbackDecision::Fallback);
    assert_eq!(response.text().await.unwrap(), RATE_LIMITED);
}

#[tokio::test]
async fn a_custom_strategy_is_obeyed() {
    /// Retries 503 only: not even 429.
    struct On503;
    impl RetryableStrategy for On503 {
        fn handle(
            &self,
            res: &Result<reqwest::Response, reqwest_middleware::Error>,
        ) -> Option<Retryable> {
            match res {
                Ok(r) if r.status() == 503 => Some(Retryable::Transient),
                Ok(r) if r.status().is_success() => None,
                _ => Some(Retryable::Fatal),
            }
        }
    }
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path(CHAT))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let client = stack(fast().with_strategy(On503));
    let response = post(&client, &server).await;
    assert_eq!(response.status(), 200);
    assert_eq!(record(&response).retries(), 2);

    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited())
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&client, &server).await;
    assert_eq!(
        record(&response).stop_reason(),
        Some(StopReason::NotRetryable)
    );
}

#[tokio::test]
async fn the_openai_sdk_preset_retries_5xx() {
    let server = once_then_ok(ResponseTemplate::new(502)).await;
    let response = post(
        &stack(
            Retry::openai_sdk()
                .with_policy(quick())
                .with_min_backoff(Duration::ZERO),
        ),
        &server,
    )
    .await;
    assert_eq!(response.status(), 200);
    // The default does not.
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(response.status(), 502);
}

#[tokio::test]
async fn a_streaming_request_body_gets_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(ok())
        .expect(0)
        .mount(&server)
        .await;
    let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![Ok(b"{}")];
    let err = stack(Retry::new())
        .post(format!("{}{CHAT}", server.uri()))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(e) = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        e.downcast_ref::<Error>().map(Error::kind),
        Some(ErrorKind::RequestNotCloneable)
    );
}

#[tokio::test]
async fn a_shared_budget_bounds_a_429_storm() {
    const CALLS: u32 = 200;
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited())
        .mount(&server)
        .await;
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 1, 0.2));
    let client = stack(fast().with_budget(budget.clone()));
    let exhausted = Arc::new(AtomicU32::new(0));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            // Clones of the client share the budget.
            let client = client.clone();
            let uri = server.uri();
            let exhausted = exhausted.clone();
            tokio::spawn(async move {
                let r = client
                    .post(format!("{uri}{CHAT}"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                if record(&r).stop_reason() == Some(StopReason::BudgetExhausted) {
                    exhausted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let attempts = u32::try_from(server.received_requests().await.unwrap().len()).unwrap();
    let bound = f64::from(CALLS) * (1.0 + budget.ratio()) + budget.reserve();
    println!(
        "429 storm: {CALLS} calls, {attempts} attempts ({:.2} per call), bound {bound}, \
         {} calls stopped by the budget; without a budget: {}",
        f64::from(attempts) / f64::from(CALLS),
        exhausted.load(Ordering::Relaxed),
        CALLS * 3
    );
    assert!(f64::from(attempts) <= bound, "{attempts} > {bound}");
    assert!(attempts >= CALLS);
    assert!(exhausted.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_default_policy_is_two_full_jitter_retries_from_half_a_second_to_eight() {
    let p = default_policy();
    assert_eq!(p.max_n_retries, Some(2));
    assert_eq!(p.min_retry_interval, Duration::from_millis(500));
    assert_eq!(p.max_retry_interval, Duration::from_secs(8));
}

/// Cloudflare's own rate limit (error 1015): the edge says "slow down", not "go away".
const CLOUDFLARE_1015: &str = "<!DOCTYPE html><html lang=\"en-US\"><head><title>Access denied | api.example.com used Cloudflare to restrict access</title>\
    <meta name=\"robots\" content=\"noindex, nofollow\" /></head><body><div id=\"cf-wrapper\">\
    <h1 data-translate=\"block_headline\">Error 1015</h1><h2>You are being rate limited</h2>\
    <script>var errorCode = 1015;</script><!-- errorcode:1015 --></div></body></html>";

#[tokio::test(start_paused = true)]
async fn an_edge_rate_limit_is_retried_after_its_retry_after() {
    let server = once_then_ok(
        ResponseTemplate::new(429)
            .set_body_raw(CLOUDFLARE_1015, "text/html; charset=UTF-8")
            .insert_header("server", "cloudflare")
            .insert_header("cf-ray", "8f1e2d3c4b5a6978-AMS")
            .insert_header("retry-after", "3"),
    )
    .await;
    let started = tokio::time::Instant::now();
    let response = post(&stack(Retry::new()), &server).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    let record = record(&response);
    let first = &record.attempts[0];
    assert_eq!(
        first.waf.as_ref().map(|w| w.kind),
        Some(WafKind::RateLimit),
        "{first:?}"
    );
    assert_eq!(
        first.retry_after,
        Some((Duration::from_secs(3), WaitReason::RetryAfter))
    );
    assert_eq!(decision(&response), FallbackDecision::None);
}

#[tokio::test]
async fn insufficient_quota_is_not_retried_and_falls_back() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(ResponseTemplate::new(429).set_body_raw(
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let response = post(&stack(fast()), &server).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        record(&response).stop_reason(),
        Some(StopReason::InsufficientQuota)
    );
    assert_eq!(decision(&response), FallbackDecision::Fallback);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_keeps_a_floor_after_a_429() {
    let server = MockServer::start().await;
    Mock::given(path(CHAT))
        .respond_with(rate_limited())
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(CHAT))
        .respond_with(ok())
        .mount(&server)
        .await;
    // A jitter that would retry at once; the default floor holds it to 100 ms.
    let started = tokio::time::Instant::now();
    let response = post(&stack(Retry::new().with_policy(quick())), &server).await;
    assert_eq!(response.status(), 200);
    let (wait, reason) = record(&response).attempts[0].retry_after.unwrap();
    assert_eq!(reason, WaitReason::Backoff);
    assert!(wait >= Duration::from_millis(100), "{wait:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
}
