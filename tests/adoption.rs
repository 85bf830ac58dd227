//! The set-ups the crate docs recommend to services that already run reqwest-retry and
//! reqwest-tracing ("Already using reqwest-retry or reqwest-tracing?"), each with the exact
//! number of upstream requests for a persistent 429 and for a Cloudflare challenge on a 429.

use std::time::Duration;

use reqwest_llm_guard::Guard;
use reqwest_llm_guard::evidence::FallbackDecision;
use reqwest_llm_guard::retry::{RefuseWalls, Retry};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::{DefaultRetryableStrategy, RetryTransientMiddleware};
use reqwest_tracing::TracingMiddleware;
use retry_policies::policies::ExponentialBackoff;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
    <body><script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1\"></script></body></html>";

/// The service's own reqwest-retry policy: 3 retries (fast here; the counts do not depend on
/// the waits).
fn three_retries() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(3)
}

/// The guard's default 2 retries, fast.
fn guard_retry() -> Retry {
    Retry::new()
        .with_policy(
            ExponentialBackoff::builder()
                .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
                .build_with_max_retries(2),
        )
        .with_min_backoff(Duration::ZERO)
}

fn service() -> ClientBuilder {
    ClientBuilder::new(reqwest::Client::new()).with(TracingMiddleware::default())
}

#[derive(Clone, Copy, Debug)]
enum Answer {
    Persistent429,
    ChallengeOn429,
}

/// Upstream requests for one call, and the call's decision.
async fn requests(client: &ClientWithMiddleware, answer: Answer) -> (u64, FallbackDecision) {
    let server = MockServer::start().await;
    let template = match answer {
        Answer::Persistent429 => ResponseTemplate::new(429).set_body_raw(
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            "application/json",
        ),
        Answer::ChallengeOn429 => ResponseTemplate::new(429)
            .set_body_raw(CHALLENGE, "text/html; charset=UTF-8")
            .insert_header("cf-mitigated", "challenge")
            .insert_header("server", "cloudflare"),
    };
    Mock::given(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    let response = client
        .post(format!("{}/v1/chat/completions", server.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    let decision = reqwest_llm_guard::Evidence::of(&response).fallback_decision;
    let n = server.received_requests().await.unwrap().len() as u64;
    (n, decision)
}

async fn counts(client: &ClientWithMiddleware) -> [(u64, FallbackDecision); 2] {
    [
        requests(client, Answer::Persistent429).await,
        requests(client, Answer::ChallengeOn429).await,
    ]
}

/// Recommended: the guard replaces reqwest-retry; reqwest-tracing stays outside.
#[tokio::test]
async fn the_guard_in_place_of_reqwest_retry() {
    let client = Guard::new()
        .with_retry(guard_retry())
        .layer(service())
        .build();
    assert_eq!(
        counts(&client).await,
        [(3, FallbackDecision::Fallback), (1, FallbackDecision::Hold)]
    );
}

/// Recommended when the service's retry policy must stay as it is: the same policy and
/// reqwest-retry's own strategy, moved into the guard's retry layer.
#[tokio::test]
async fn the_services_policy_moved_into_the_guard() {
    let client = Guard::new()
        .with_retry(
            Retry::new()
                .with_policy(three_retries())
                .with_strategy(DefaultRetryableStrategy),
        )
        .layer(service())
        .build();
    assert_eq!(
        counts(&client).await,
        [(4, FallbackDecision::Fallback), (1, FallbackDecision::Hold)]
    );
}

/// Recommended when reqwest-retry must stay where it is: its strategy wrapped in
/// `RefuseWalls`, the guard's own retry off.
#[tokio::test]
async fn reqwest_retry_kept_outside_with_refuse_walls() {
    let builder = service().with(RetryTransientMiddleware::new_with_policy_and_strategy(
        three_retries(),
        RefuseWalls::default(),
    ));
    let client = Guard::new().without_retry().layer(builder).build();
    assert_eq!(
        counts(&client).await,
        [(4, FallbackDecision::Fallback), (1, FallbackDecision::Hold)]
    );
}

/// Not recommended, and what it costs: reqwest-retry kept as it was, the guard added with its
/// retry on. The guard retries only the first time the stack runs (it sees the outer retry
/// re-run it and makes one attempt after that: 3 + 3 = 6, not 4 × 3 = 12), but reqwest-retry's
/// own strategy retries the challenge.
#[tokio::test]
async fn reqwest_retry_kept_as_it_was_costs_extra_requests() {
    let builder = service().with(RetryTransientMiddleware::new_with_policy(three_retries()));
    let client = Guard::new()
        .with_retry(guard_retry())
        .layer(builder)
        .build();
    assert_eq!(
        counts(&client).await,
        [(6, FallbackDecision::Fallback), (4, FallbackDecision::Hold)]
    );
}
