//! The failover layer through the whole stack, against real HTTP upstreams on loopback: what
//! the caller gets, and exactly how many requests each upstream saw.

mod common;

use std::time::Duration;

use common::{ROLE, STOP, TEXT, chat_ok, responses_ok};
use reqwest_llm_guard::evidence::{ApiSurface, FallbackDecision};
use reqwest_llm_guard::failover::{
    BreakerConfig, BreakerState, Credential, Failover, FailoverBuilder, FailoverStop, HopReason,
    PassReason, Upstream,
};
use reqwest_llm_guard::retry::{Retry, RetryBudget};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use retry_policies::policies::ExponentialBackoff;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn error(status: u16, kind: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        format!(r#"{{"error":{{"message":"m","type":"{kind}","param":null,"code":"{code}"}}}}"#),
        "application/json",
    )
}

fn quick() -> Retry {
    Retry::new()
        .with_policy(
            ExponentialBackoff::builder()
                .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
                .build_with_max_retries(2),
        )
        .with_min_backoff(Duration::ZERO)
}

fn upstream(name: &str, server: &MockServer) -> Upstream {
    Upstream::new(name, &format!("{}/v1", server.uri())).unwrap()
}

fn client(failover: Failover) -> ClientWithMiddleware {
    Guard::new()
        .without_telemetry()
        .with_retry(quick())
        .with_failover(failover)
        .client(reqwest::Client::new())
}

async fn chat(client: &ClientWithMiddleware, to: &MockServer) -> (u16, Evidence) {
    chat_with(client, &to.uri(), &[]).await
}

/// A Chat call to `to` with these headers: its status (0 for an error) and its evidence.
async fn chat_with(
    client: &ClientWithMiddleware,
    to: &str,
    headers: &[(&str, &str)],
) -> (u16, Evidence) {
    let handle = EvidenceHandle::new();
    let mut request = client
        .post(format!("{to}/v1/chat/completions"))
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let status = match request.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (status, handle.settled().await)
}

async fn seen(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

/// An upstream with one answer on /v1/chat/completions.
async fn serving(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

/// `a` answers `first`, `b` a chat completion.
async fn a_then_b(first: ResponseTemplate) -> (MockServer, MockServer) {
    (serving(first).await, serving(chat_ok()).await)
}

#[tokio::test]
async fn a_5xx_moves_to_the_next_upstream_and_says_so() {
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 200);
    assert_eq!(e.fallback_decision, FallbackDecision::None);
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.hops, 1);
    assert_eq!(
        (seen(&a).await, seen(&b).await),
        (1, 1),
        "5xx is not retried by default"
    );
}

#[tokio::test]
async fn a_request_error_holds_and_is_never_masked_by_a_hop() {
    let (a, b) = a_then_b(error(400, "invalid_request_error", "invalid_value")).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 400);
    assert_eq!(e.fallback_decision, FallbackDecision::Hold);
    assert_eq!(e.failover_stop, Some(FailoverStop::Decided));
    assert_eq!((seen(&a).await, seen(&b).await), (1, 0));
}

#[tokio::test]
async fn a_wall_holds() {
    let wall = ResponseTemplate::new(403)
        .set_body_raw(
            "<html><head><title>Just a moment...</title></head><body>\
             <script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1\"></script></body></html>",
            "text/html",
        )
        .insert_header("cf-mitigated", "challenge")
        .insert_header("server", "cloudflare");
    let (a, b) = a_then_b(wall).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.fallback_decision, FallbackDecision::Hold);
    assert!(e.waf.is_some());
    assert_eq!((seen(&a).await, seen(&b).await), (1, 0));
}

#[tokio::test]
async fn context_length_moves_to_a_larger_window_first() {
    let (small, same, large) = (
        serving(error(
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ))
        .await,
        serving(chat_ok()).await,
        serving(chat_ok()).await,
    );
    let client = client(Failover::new([
        upstream("small", &small).with_context_window(8_000),
        upstream("same", &same).with_context_window(8_000),
        upstream("large", &large).with_context_window(128_000),
    ]));
    let (status, e) = chat(&client, &small).await;
    assert_eq!(status, 200);
    assert_eq!(e.upstream.as_deref(), Some("large"));
    assert_eq!(
        (seen(&small).await, seen(&same).await, seen(&large).await),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn insufficient_quota_moves_on_without_a_retry() {
    let (a, b) = a_then_b(error(429, "insufficient_quota", "insufficient_quota")).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 200);
    assert_eq!(e.hops, 1);
    assert_eq!((seen(&a).await, seen(&b).await), (1, 1));
}

#[tokio::test]
async fn a_persistent_429_is_retried_within_bounds_then_moves_on() {
    let (a, b) = a_then_b(error(429, "requests", "rate_limit_exceeded")).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 200);
    assert_eq!(
        (seen(&a).await, seen(&b).await),
        (3, 1),
        "1 + 2 retries, then b"
    );
    assert_eq!(e.retry_count, 2, "the call's retries, a's included");
    assert_eq!(e.upstream_retry_count, 0, "b answered at once");
}

#[tokio::test]
async fn hops_are_bounded_and_the_last_failure_is_handed_back() {
    let servers = [
        serving(ResponseTemplate::new(500)).await,
        serving(ResponseTemplate::new(500)).await,
        serving(ResponseTemplate::new(500)).await,
    ];
    let client = client(
        Failover::builder([
            upstream("a", &servers[0]),
            upstream("b", &servers[1]),
            upstream("c", &servers[2]),
        ])
        .with_max_hops(1)
        .build(),
    );
    let (status, e) = chat(&client, &servers[0]).await;
    assert_eq!(status, 500);
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!(e.failover_stop, Some(FailoverStop::HopsExhausted));
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(
        (
            seen(&servers[0]).await,
            seen(&servers[1]).await,
            seen(&servers[2]).await
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_refused_connection_moves_on() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = serving(chat_ok()).await;
    let client = client(Failover::new([
        Upstream::new("down", &format!("http://{closed}/v1")).unwrap(),
        upstream("b", &b),
    ]));
    let (status, e) = chat(&client, &b).await;
    assert_eq!(status, 200);
    assert_eq!(e.upstream.as_deref(), Some("b"));
}

#[tokio::test]
async fn requests_go_only_to_upstreams_serving_their_surface() {
    let (chat_only, both) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/responses"))
        .respond_with(responses_ok("resp_1"))
        .mount(&both)
        .await;
    let client = client(Failover::new([
        upstream("chat_only", &chat_only).with_surfaces(&[ApiSurface::ChatCompletions]),
        upstream("both", &both),
    ]));
    let response = client
        .post(format!("{}/v1/responses", chat_only.uri()))
        .body(r#"{"model":"gpt-5","input":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(Evidence::of(&response).upstream.as_deref(), Some("both"));
    assert_eq!((seen(&chat_only).await, seen(&both).await), (0, 1));
}

#[tokio::test]
async fn state_stays_with_the_upstream_that_minted_it_and_holds_when_it_fails() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    // `a` is down for new conversations: the first response is minted by `b`.
    Mock::given(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&a)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(responses_ok("resp_from_b"))
        .up_to_n_times(1)
        .mount(&b)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&b)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(responses_ok("resp_from_a"))
        .mount(&a)
        .await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let first = client
        .post(format!("{}/v1/responses", a.uri()))
        .body(r#"{"model":"gpt-5","input":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(Evidence::of(&first).upstream.as_deref(), Some("b"));
    // The follow-up continues `b`'s state: only `b`, and its failure holds, never a hop to `a`.
    let follow = client
        .post(format!("{}/v1/responses", a.uri()))
        .body(r#"{"model":"gpt-5","input":"and then?","previous_response_id":"resp_from_b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 500);
    let e = Evidence::of(&follow);
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.failover_stop, Some(FailoverStop::StateAffinity));
    assert_eq!((seen(&a).await, seen(&b).await), (1, 2));
}

#[tokio::test]
async fn an_upstreams_key_replaces_the_callers_and_the_model_is_overridden() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-b-key"))
        .respond_with(chat_ok())
        .mount(&b)
        .await;
    let client = client(Failover::new([
        upstream("a", &a),
        upstream("b", &b)
            .with_credential(Credential::value("sk-b-key"))
            .with_model("openai/gpt-4o-mini"),
    ]));
    let response = client
        .post(format!("{}/v1/chat/completions", a.uri()))
        .bearer_auth("sk-caller")
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let to_a = &a.received_requests().await.unwrap()[0];
    assert_eq!(
        to_a.headers["authorization"], "Bearer sk-caller",
        "no key configured: the caller's"
    );
    let to_b = &b.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&to_b.body).unwrap();
    assert_eq!(body["model"], "openai/gpt-4o-mini");
}

// Real time, short open times: tokio's paused clock would jump ahead while the calls wait on
// loopback I/O (the breaker's own timing is tested on the paused clock in its unit tests).
#[tokio::test]
async fn a_failing_upstreams_breaker_opens_and_calls_skip_it_until_it_recovers() {
    let (a, b) = a_then_b(ResponseTemplate::new(500)).await;
    let failover = Failover::builder([upstream("a", &a), upstream("b", &b)])
        .with_breaker(
            &BreakerConfig::default()
                .with_consecutive_failures(3)
                .with_open_time(Duration::from_millis(300), Duration::from_secs(1))
                .with_jitter(0.0),
        )
        .build();
    let client = client(failover.clone());
    for _ in 0..5 {
        let (status, _) = chat(&client, &a).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        seen(&a).await,
        3,
        "open after 3 failures: calls go straight to b"
    );
    assert_eq!(seen(&b).await, 5);
    let breaker = failover.breaker("a").unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    // Recovered: after the open time one probe goes to `a` and closes its breaker.
    a.reset().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&a)
        .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.upstream.as_deref(), Some("a"));
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.force_open();
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.upstream.as_deref(), Some("b"), "forced open");
    breaker.reset();
}

#[tokio::test]
async fn the_hops_are_on_the_record() {
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let client = client(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let response = client
        .post(format!("{}/v1/chat/completions", a.uri()))
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    let record = response
        .extensions()
        .get::<reqwest_llm_guard::failover::FailoverRecord>()
        .unwrap();
    assert_eq!(record.served_by(), Some("b"));
    assert_eq!(record.hops.len(), 1);
    assert_eq!(record.hops[0].reason, HopReason::UpstreamFailed);
    assert_eq!((&*record.hops[0].from, &*record.hops[0].to), ("a", "b"));
}

// ---- Streams: before the commit point any failure fails over; after it, never a clean end.

const GROQ_ERROR: &str = "event: error\ndata: {\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"code\":null}}\n\n";

/// How a raw upstream ends its stream after the chunks.
#[derive(Clone, Copy)]
enum End {
    /// The chunked terminator: a clean end of the body.
    Clean,
    /// Nothing more, the connection held open.
    Hold,
    /// The connection closed without the terminator.
    Close,
}

/// A raw HTTP/1.1 upstream streaming `chunks` (one HTTP chunk each), then ending as told.
async fn raw_stream(chunks: &'static [&'static str], end: End) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for c in chunks {
                    let _ = socket
                        .write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                        .await;
                    let _ = socket.flush().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                match end {
                    End::Clean => {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                    }
                    End::Hold => tokio::time::sleep(Duration::from_secs(30)).await,
                    End::Close => {}
                }
            });
        }
    });
    addr
}

async fn good_stream() -> MockServer {
    serving(
        ResponseTemplate::new(200).set_body_raw(format!("{ROLE}{TEXT}{STOP}"), "text/event-stream"),
    )
    .await
}

fn raw(name: &str, addr: std::net::SocketAddr) -> Upstream {
    Upstream::new(name, &format!("http://{addr}/v1")).unwrap()
}

/// Sends a streaming chat call, reads the body to its end; the bytes read, whether the body
/// ended in an error, and the evidence.
async fn stream_call(client: &ClientWithMiddleware) -> (String, bool, Evidence) {
    use futures_util::StreamExt as _;
    let handle = EvidenceHandle::new();
    let response = client
        .post("http://127.0.0.1:9/v1/chat/completions")
        .with_extension(handle.clone())
        .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let (mut text, mut failed) = (String::new(), false);
    while let Some(chunk) = body.next().await {
        if let Ok(b) = chunk {
            text.push_str(&String::from_utf8_lossy(&b));
        } else {
            failed = true;
            break;
        }
    }
    drop(body);
    (text, failed, handle.settled().await)
}

#[tokio::test]
async fn a_stream_that_ends_before_its_first_byte_fails_over() {
    let a = raw_stream(&[], End::Close).await;
    let b = good_stream().await;
    let client = client(Failover::new([raw("a", a), upstream("b", &b)]));
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.hops, 1);
    assert_eq!(e.fallback_decision, FallbackDecision::None);
}

#[tokio::test]
async fn a_silent_stream_fails_over_at_the_first_token_limit() {
    let a = raw_stream(&[], End::Hold).await;
    let b = good_stream().await;
    let client = client(
        Failover::builder([raw("a", a), upstream("b", &b)])
            .with_first_token_timeout(Duration::from_millis(200))
            .build(),
    );
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed && text.contains("PA"), "{text}");
    assert_eq!(e.upstream.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_stream_cut_after_the_first_byte_ends_in_an_error_never_cleanly() {
    // A clean end of the HTTP body, but no finish reason and no [DONE]: truncated.
    let a = raw_stream(&[ROLE, TEXT], End::Clean).await;
    let b = good_stream().await;
    let client = client(Failover::new([raw("a", a), upstream("b", &b)]));
    let (text, failed, e) = stream_call(&client).await;
    assert!(
        text.contains("PA"),
        "the caller had the part that came: {text}"
    );
    assert!(failed, "the body ends with an error, not cleanly");
    assert_eq!(
        e.parse_check,
        Some(reqwest_llm_guard::evidence::ParseCheck::Fail)
    );
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!(e.hops, 0, "committed at the first byte: no hop after it");
    assert_eq!(seen(&b).await, 0);
}

#[tokio::test]
async fn committing_at_the_first_content_fails_over_an_early_in_stream_error() {
    let a = raw_stream(&[ROLE, GROQ_ERROR], End::Clean).await;
    let b = good_stream().await;
    let client = client(
        Failover::builder([raw("a", a), upstream("b", &b)])
            .with_commit_point(reqwest_llm_guard::failover::CommitPoint::FirstContent)
            .build(),
    );
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed);
    assert!(
        !text.contains("event: error"),
        "nothing of a's stream reached the caller"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(e.upstream.as_deref(), Some("b"));
}

#[tokio::test]
async fn committing_at_the_end_fails_over_a_truncated_answer_transparently() {
    let a = raw_stream(&[ROLE, TEXT, TEXT], End::Clean).await;
    let b = good_stream().await;
    let client = client(
        Failover::builder([raw("a", a), upstream("b", &b)])
            .with_commit_point(reqwest_llm_guard::failover::CommitPoint::End { max_bytes: 1 << 20 })
            .build(),
    );
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed);
    assert_eq!(text, format!("{ROLE}{TEXT}{STOP}"), "exactly b's answer");
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(
        e.parse_check,
        Some(reqwest_llm_guard::evidence::ParseCheck::Pass)
    );
}

#[tokio::test]
async fn a_stream_that_stalls_after_the_commit_ends_in_an_error() {
    let a = raw_stream(&[ROLE, TEXT], End::Hold).await;
    let client = client(
        Failover::builder([raw("a", a)])
            .with_idle_timeout(Duration::from_millis(200))
            .build(),
    );
    let (text, failed, e) = stream_call(&client).await;
    assert!(text.contains("PA"));
    assert!(failed);
    assert_eq!(
        e.violation,
        Some(reqwest_llm_guard::evidence::Violation::BodyStalled)
    );
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
}

#[tokio::test]
async fn a_silent_route_is_left_at_the_time_to_headers_limit_and_not_retried() {
    let (a, b) = a_then_b(chat_ok().set_delay(Duration::from_secs(5))).await;
    let client = Guard::new()
        .without_telemetry()
        .with_retry(
            Retry::openai_sdk()
                .with_time_to_headers(Duration::from_millis(200))
                .with_min_backoff(Duration::ZERO),
        )
        .with_failover(Failover::new([upstream("a", &a), upstream("b", &b)]))
        .client(reqwest::Client::new());
    let started = std::time::Instant::now();
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 200);
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.hops, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        seen(&a).await,
        1,
        "the OpenAI SDK preset retries timeouts, never this one"
    );
}

#[tokio::test]
async fn an_upstream_that_must_pass_the_drill_gets_traffic_only_once_promoted() {
    let (a, b) = (serving(chat_ok()).await, serving(chat_ok()).await);
    let failover = Failover::builder([
        upstream("new", &a).with_drill_required(true),
        upstream("known", &b),
    ])
    .with_breaker(&BreakerConfig::default().with_consecutive_failures(1))
    .build();
    let client = client(failover.clone());
    let (_, e) = chat(&client, &a).await;
    assert_eq!(
        e.upstream.as_deref(),
        Some("known"),
        "not drilled yet: passed over"
    );
    assert_eq!(failover.awaiting_drill().len(), 1);
    assert!(failover.promote("new"));
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.upstream.as_deref(), Some("new"));
    assert!(failover.awaiting_drill().is_empty());

    // Its breaker opens: demoted until the drill passes again.
    a.reset().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&a)
        .await;
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.upstream.as_deref(), Some("known"), "failed over");
    assert_eq!(
        failover.awaiting_drill().len(),
        1,
        "demoted when its breaker opened"
    );
    assert!(!failover.promote("nobody"));
}

#[tokio::test]
async fn a_streaming_call_to_an_upstream_that_never_answers_fails_over_at_the_first_token_limit() {
    // Accepts, reads, never sends a header.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let b = good_stream().await;
    let client = client(
        Failover::builder([raw("silent", silent), upstream("b", &b)])
            .with_first_token_timeout(Duration::from_millis(200))
            .build(),
    );
    let started = std::time::Instant::now();
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

// ---- Continuation: opt-in, only towards upstreams that declare prefill support.

const TEXT2: &str = "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SS\"},\"finish_reason\":null}]}\n\n";

/// An upstream that continues from an assistant prefill, and says what it was sent.
async fn continuing_upstream() -> MockServer {
    serving(
        ResponseTemplate::new(200)
            .set_body_raw(format!("{ROLE}{TEXT2}{STOP}"), "text/event-stream"),
    )
    .await
}

fn continuing(failover: FailoverBuilder) -> ClientWithMiddleware {
    client(failover.with_continuation(reqwest::Client::new()).build())
}

#[tokio::test]
async fn a_stream_cut_after_the_commit_is_continued_on_an_upstream_that_takes_a_prefill() {
    let a = raw_stream(&[ROLE, TEXT], End::Clean).await;
    let b = continuing_upstream().await;
    let client = continuing(Failover::builder([
        raw("a", a),
        upstream("b", &b).with_prefill(true),
    ]));
    let (text, failed, e) = stream_call(&client).await;
    assert!(!failed, "the continued answer ends cleanly: {text}");
    assert_eq!(
        text,
        format!("{ROLE}{TEXT}{ROLE}{TEXT2}{STOP}"),
        "a's part, then b's"
    );
    assert_eq!(e.fallback_decision, FallbackDecision::None);
    assert_eq!(
        e.parse_check,
        Some(reqwest_llm_guard::evidence::ParseCheck::Pass)
    );
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!(e.hops, 1);
    let sent = &b.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        serde_json::json!({"role": "assistant", "content": "PA"})
    );
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn an_upstream_that_does_not_declare_prefill_never_gets_one() {
    let a = raw_stream(&[ROLE, TEXT], End::Clean).await;
    let b = continuing_upstream().await;
    let client = continuing(Failover::builder([raw("a", a), upstream("b", &b)]));
    let (_, failed, e) = stream_call(&client).await;
    assert!(failed, "no continuation: the cut stays an error");
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!(seen(&b).await, 0);
}

#[tokio::test]
async fn a_failed_continuation_surfaces_the_original_failure() {
    let a = raw_stream(&[ROLE, TEXT], End::Clean).await;
    let b = serving(error(400, "invalid_request_error", "prefill_not_supported")).await;
    let client = continuing(Failover::builder([
        raw("a", a),
        upstream("b", &b).with_prefill(true),
    ]));
    let (text, failed, e) = stream_call(&client).await;
    assert!(failed);
    assert!(
        !text.contains("prefill_not_supported"),
        "b's own error never reaches the caller"
    );
    assert_eq!(
        e.violation,
        Some(reqwest_llm_guard::evidence::Violation::StreamTruncated),
        "the original failure"
    );
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!(seen(&b).await, 1);
}

/// The caller's key, in every header a key travels in, on a call to `to`.
async fn keyed_chat(client: &ClientWithMiddleware, to: &str) -> (u16, Evidence) {
    chat_with(
        client,
        to,
        &[
            ("authorization", "Bearer sk-caller-canary"),
            ("api-key", "sk-caller-canary"),
            ("ocp-apim-subscription-key", "sk-caller-canary"),
            ("proxy-authorization", "Basic sk-caller-canary"),
            ("x-session-token", "sk-caller-canary"),
            ("cookie", "session=sk-caller-canary"),
        ],
    )
    .await
}

/// Whether any request `server` saw carried the caller's key, in any header.
async fn saw_the_callers_key(server: &MockServer) -> bool {
    server.received_requests().await.unwrap().iter().any(|r| {
        r.headers
            .values()
            .any(|v| v.to_str().unwrap_or_default().contains("sk-caller-canary"))
    })
}

#[tokio::test]
async fn an_upstream_whose_key_cannot_be_had_is_passed_over_and_never_gets_the_callers() {
    for (credential, reason) in [
        (
            Credential::env("LLM_GUARD_TEST_KEY_THAT_IS_NEVER_SET"),
            PassReason::CredentialUnresolved,
        ),
        (
            Credential::value("sk-line\nbreak"),
            PassReason::CredentialInvalid,
        ),
    ] {
        let (keyed, b) = (serving(chat_ok()).await, serving(chat_ok()).await);
        let client = client(Failover::new([
            upstream("keyed", &keyed).with_credential(credential),
            upstream("b", &b).with_credential(Credential::value("sk-b-key")),
        ]));
        // The caller addressed the keyed upstream itself: still not its key to get.
        let (status, e) = keyed_chat(&client, &keyed.uri()).await;
        assert_eq!(status, 200);
        assert_eq!(seen(&keyed).await, 0, "{reason}: no request at all");
        assert_eq!(e.upstream.as_deref(), Some("b"));
        assert_eq!(e.hops, 0, "{reason}: passing over is no hop");
        let to_b = &b.received_requests().await.unwrap()[0];
        assert_eq!(to_b.headers["authorization"], "Bearer sk-b-key");
        assert!(!to_b.headers.contains_key("api-key"), "{reason}");
        assert!(!saw_the_callers_key(&b).await);

        // Alone, it leaves the call no upstream: an error, with the reason on the record.
        let client = Guard::new()
            .without_telemetry()
            .with_failover(Failover::new([upstream("keyed", &keyed).with_credential(
                match reason {
                    PassReason::CredentialUnresolved => {
                        Credential::env("LLM_GUARD_TEST_KEY_THAT_IS_NEVER_SET")
                    }
                    _ => Credential::value("sk-line\nbreak"),
                },
            )]))
            .client(reqwest::Client::new());
        let (status, e) = keyed_chat(&client, &keyed.uri()).await;
        assert_eq!(status, 0, "{reason}");
        assert_eq!(e.failover_stop, Some(FailoverStop::NoEligibleUpstream));
        assert_eq!(seen(&keyed).await, 0, "{reason}");
    }
}

#[tokio::test]
async fn the_callers_key_goes_to_another_host_only_when_the_upstream_opts_in() {
    for opt_in in [false, true] {
        let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
        let client = client(Failover::new([
            upstream("a", &a),
            upstream("b", &b).with_forward_caller_auth(opt_in),
        ]));
        let (status, e) = keyed_chat(&client, &a.uri()).await;
        assert_eq!(status, 200);
        assert_eq!(e.upstream.as_deref(), Some("b"));
        assert!(
            saw_the_callers_key(&a).await,
            "a is where the caller sent it"
        );
        assert_eq!(
            saw_the_callers_key(&b).await,
            opt_in,
            "b is another host (opted in: {opt_in})"
        );
    }
}

#[tokio::test]
async fn failover_without_the_retry_layer_keeps_the_calls_deadline_and_budget() {
    // A deadline already passed when the first upstream fails: no hop.
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let client = Guard::new()
        .without_telemetry()
        .without_retry()
        .with_deadline(Duration::ZERO)
        .with_failover(Failover::new([upstream("a", &a), upstream("b", &b)]))
        .client(reqwest::Client::new());
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 503);
    assert_eq!(e.failover_stop, Some(FailoverStop::Deadline));
    assert_eq!((seen(&a).await, seen(&b).await), (1, 0));

    // A spent budget: no hop either.
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let client = Guard::new()
        .without_telemetry()
        .without_retry()
        .with_budget(std::sync::Arc::new(RetryBudget::new(
            Duration::from_secs(10),
            0,
            0.0,
        )))
        .with_failover(Failover::new([upstream("a", &a), upstream("b", &b)]))
        .client(reqwest::Client::new());
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 503);
    assert_eq!(e.failover_stop, Some(FailoverStop::BudgetExhausted));
    assert_eq!((seen(&a).await, seen(&b).await), (1, 0));
}

#[tokio::test]
async fn a_deadline_set_on_the_retry_layer_still_bounds_the_guards_hops() {
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let client = client_with(
        quick().with_deadline(Duration::ZERO),
        Failover::new([upstream("a", &a), upstream("b", &b)]),
    );
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.failover_stop, Some(FailoverStop::Deadline));
    assert_eq!((seen(&a).await, seen(&b).await), (1, 0));
}

fn client_with(retry: Retry, failover: Failover) -> ClientWithMiddleware {
    Guard::new()
        .without_telemetry()
        .with_retry(retry)
        .with_failover(failover)
        .client(reqwest::Client::new())
}

#[tokio::test]
async fn the_handle_acts_on_the_layer_in_the_client() {
    let (a, b) = (serving(chat_ok()).await, serving(chat_ok()).await);
    let (failover, handle) = Failover::builder([
        upstream("a", &a),
        upstream("b", &b).with_drill_required(true),
    ])
    .with_max_hops(1)
    .build_with_handle();
    let client = client(failover);
    // Forced open through the handle: the client's layer passes `a` over.
    handle.breaker("a").unwrap().force_open();
    // `b` awaits the drill until the handle promotes it.
    assert_eq!(handle.awaiting_drill().len(), 1);
    assert!(handle.promote("b"));
    let (status, e) = chat(&client, &a).await;
    assert_eq!(status, 200);
    assert_eq!(e.upstream.as_deref(), Some("b"));
    assert_eq!((seen(&a).await, seen(&b).await), (0, 1));
    handle.breaker("a").unwrap().reset();
    let (_, e) = chat(&client, &a).await;
    assert_eq!(e.upstream.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_stream_that_fails_before_its_commit_with_no_hop_left_ends_in_an_error() {
    // One upstream: a stream that ends before its first byte, and nowhere to go.
    let a = serving(ResponseTemplate::new(200).set_body_raw("", "text/event-stream")).await;
    let client = client(Failover::new([upstream("a", &a)]));
    let (text, failed, e) = stream_call(&client).await;
    assert!(text.is_empty(), "{text}");
    assert!(failed, "never a clean end after a failure");
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!(e.failover_stop, Some(FailoverStop::NoEligibleUpstream));
}

#[tokio::test]
async fn a_lone_failover_layer_above_a_guard_leaves_the_guard_its_call() {
    let (a, b) = a_then_b(ResponseTemplate::new(503)).await;
    let builder = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(Failover::new([upstream("a", &a), upstream("b", &b)]));
    let client = Guard::new()
        .without_telemetry()
        .with_retry(quick())
        .layer(builder)
        .build();
    let handle = EvidenceHandle::new();
    let response = client
        .post(format!("{}/v1/chat/completions", a.uri()))
        .with_extension(handle.clone())
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Each hop of the layer above is a call of the guard's own: its call layer decided the
    // first (a's 503) and settled the handle with it, where it used to pass the call through
    // and leave the handle unsettled.
    let e = tokio::time::timeout(Duration::from_secs(5), handle.settled())
        .await
        .expect("the call layer under a lone failover layer still owns its call");
    assert_eq!(e.status.map(|s| s.as_u16()), Some(503));
    assert_eq!(e.fallback_decision, FallbackDecision::Fallback);
    assert_eq!((seen(&a).await, seen(&b).await), (1, 1));
}
