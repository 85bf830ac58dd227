//! Every fault the mock gateway knows (tests/mock_faults.rs has each through the library),
//! through the built `llm-guard proxy` as a service in another language meets it: the binary as
//! a child process with a configuration file, a primary upstream with the fault as its default
//! scenario (the proxy sends the caller's headers to every upstream, so `x-mock-scenario`
//! would reach the healthy one too), a healthy secondary, and a plain HTTP caller.
//!
//! Each test says what the caller got (the whole answer, an upstream's error as it came, or a
//! stream read chunk by chunk that ends in an error: never a cut answer that ends cleanly), the
//! proxy's `x-llm-guard-upstream` / `x-llm-guard-hops` / `x-llm-guard-decision` headers, and
//! exactly how many requests each upstream saw.
//!
//! The proxy's retry backoff is not configurable (500 ms to 8 s, full jitter): a case that
//! retries without a server wait costs up to a second or so, so the cases of one test run at
//! once, each with its own gateways and proxy.
#![cfg(feature = "cli")]

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{SURFACES, json, path, request_body};
use futures_util::StreamExt as _;
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::mock::{MockGateway, Scenario};

/// Both surfaces, streaming and not.
const CASES: [(ApiSurface, bool); 4] = [
    (ApiSurface::ChatCompletions, false),
    (ApiSurface::ChatCompletions, true),
    (ApiSurface::Responses, false),
    (ApiSurface::Responses, true),
];

/// The OpenAI SDKs' retry set (429, 5xx, transport errors).
const SDK: &str = "[retry]\npreset = \"openai_sdk\"\n";

/// Holds a stream until its end: nothing reaches the caller before the answer is whole.
const AT_END: &str = "[failover]\ncommit = \"end\"\n";

/// The limit each timing test sets: short enough that the test is quick, long enough that a
/// healthy loopback upstream on a busy machine is never caught by it.
const LIMIT: &str = "500ms";

/// An upper bound only: the call did not wait out a fault that lasts 10 s or forever.
const NOT_THE_FAULTS_DELAY: Duration = Duration::from_secs(5);

fn upstream(name: &str, gateway: &MockGateway, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{}/v1\"\n{extra}\n",
        gateway.url()
    )
}

// ---- A faulty primary, a healthy secondary, the proxy in front.

struct Stack {
    primary: MockGateway,
    secondary: MockGateway,
    proxy: Proxy,
}

impl Stack {
    /// The fault on the primary, the secondary healthy, `settings` after the upstreams.
    async fn start(fault: Scenario, settings: &str) -> Self {
        Self::start_with(fault, Scenario::Ok, ("", ""), settings).await
    }

    /// Any secondary, and each upstream's own extra fields.
    async fn start_with(
        fault: Scenario,
        second: Scenario,
        (primary_extra, secondary_extra): (&str, &str),
        settings: &str,
    ) -> Self {
        let primary = MockGateway::start_with(fault, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let secondary = MockGateway::start_with(second, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let config = format!(
            "listen = \"127.0.0.1:0\"\n\n{}{}\n{settings}",
            upstream("primary", &primary, primary_extra),
            upstream("secondary", &secondary, secondary_extra),
        );
        let proxy = proxy(config).await;
        Self {
            primary,
            secondary,
            proxy,
        }
    }

    /// Requests each gateway saw: (primary, secondary).
    fn seen(&self) -> (u64, u64) {
        (self.primary.requests(), self.secondary.requests())
    }

    async fn call(&self, surface: ApiSurface, stream: bool, headers: &[(&str, &str)]) -> Got {
        send(&self.proxy, surface, request_body(surface, stream), headers).await
    }
}

/// Starts the proxy off the async workers (it waits on a pipe for its listening line).
async fn proxy(config: String) -> Proxy {
    tokio::task::spawn_blocking(move || Proxy::start(&config, &[], &[]))
        .await
        .unwrap()
}

/// Runs `case` for every item at once, each on gateways and a proxy of its own: the waits
/// (backoff, limits) overlap instead of adding up.
async fn each<T, F, Fut>(items: impl IntoIterator<Item = T>, case: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    futures_util::future::join_all(items.into_iter().map(case)).await;
}

fn name(surface: ApiSurface, stream: bool) -> String {
    format!("{surface} stream={stream}")
}

// ---- What the caller got.

struct Got {
    status: u16,
    /// `x-llm-guard-upstream` (empty when absent).
    upstream: String,
    /// `x-llm-guard-hops`.
    hops: String,
    /// `x-llm-guard-decision`.
    decision: String,
    body: String,
    /// The body ended in an error (the connection cut, the chunked body unfinished) rather
    /// than cleanly.
    failed: bool,
    /// From the request to the body's end.
    elapsed: Duration,
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
        self.status == 200 && !self.failed && last_word
    }

    /// The proxy's three headers.
    fn assert_marked(&self, upstream: &str, hops: u32, decision: &str, name: &str) {
        assert_eq!(
            (
                self.upstream.as_str(),
                self.hops.as_str(),
                self.decision.as_str()
            ),
            (upstream, hops.to_string().as_str(), decision),
            "{name}: x-llm-guard-upstream, -hops, -decision; body: {}",
            self.body
        );
    }

    /// The whole answer, from the primary, with nothing to act on.
    fn assert_served_by_primary(&self, surface: ApiSurface, stream: bool, name: &str) {
        assert!(self.is_complete(surface, stream), "{name}: {}", self.body);
        self.assert_marked("primary", 0, "none", name);
    }

    /// The whole answer, from the secondary after one hop.
    fn assert_failed_over(&self, surface: ApiSurface, stream: bool, name: &str) {
        assert!(self.is_complete(surface, stream), "{name}: {}", self.body);
        self.assert_marked("secondary", 1, "none", name);
    }

    /// A stream handed on at its first byte that broke later: a 200 from the primary, the
    /// part that came, then an error, never a clean end. The decision header is the one at
    /// the headers (a stream's final word is on its telemetry), and there is no hop.
    fn assert_broken_after_commit(&self, surface: ApiSurface, name: &str) {
        assert_eq!(self.status, 200, "{name}");
        assert!(
            self.failed,
            "{name}: the body must end in an error, not cleanly: {}",
            self.body
        );
        assert!(!self.is_complete(surface, true), "{name}");
        self.assert_marked("primary", 0, "none", name);
    }
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Sends `body` through the proxy and reads the answer chunk by chunk to its end, or to the
/// first error. 30 s at most: a proxy that holds a call is a failure, not a hung test.
async fn send(proxy: &Proxy, surface: ApiSurface, body: String, headers: &[(&str, &str)]) -> Got {
    let started = Instant::now();
    let mut request = reqwest::Client::new()
        .post(format!("{}{}", proxy.url, path(surface)))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let read = async {
        // The proxy answers every call: an upstream's status, or its own 502.
        let response = request.send().await.expect("the proxy answers");
        let h = response.headers().clone();
        let status = response.status().as_u16();
        let (mut text, mut failed) = (String::new(), false);
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let Ok(bytes) = chunk else {
                failed = true;
                break;
            };
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        Got {
            status,
            upstream: header(&h, "x-llm-guard-upstream"),
            hops: header(&h, "x-llm-guard-hops"),
            decision: header(&h, "x-llm-guard-decision"),
            body: text,
            failed,
            elapsed: started.elapsed(),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the proxy held the call for 30 s")
}

// ---- 1. 429 once, `retry-after: 1` in seconds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_once_with_retry_after_is_waited_out_on_the_primary() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::RateLimitedOnceRetryAfter, "").await;
        let got = s.call(surface, false, &[]).await;
        let name = name(surface, false);
        got.assert_served_by_primary(surface, false, &name);
        assert_eq!(s.seen(), (2, 0), "{name}: the one retry, on the primary");
        // A lower bound only: the second attempt came after the server's second.
        assert!(
            got.elapsed >= Duration::from_millis(900),
            "{name}: retry-after: 1 is seconds: {:?}",
            got.elapsed
        );
    })
    .await;
}

// ---- 2. 429 forever, no `retry-after` at all.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_is_retried_on_the_backoff_then_fails_over() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::RateLimitedNoRetryAfter, "").await;
        let got = s.call(surface, false, &[]).await;
        let name = name(surface, false);
        got.assert_failed_over(surface, false, &name);
        assert_eq!(
            s.seen(),
            (3, 1),
            "{name}: 1 + 2 retries, then the secondary"
        );
        assert!(
            got.elapsed < NOT_THE_FAULTS_DELAY,
            "{name}: no server wait to honour: {:?}",
            got.elapsed
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_upstream_rate_limits_the_last_429_reaches_the_caller_as_fallback() {
    // One retry each: the count still shows it, the backoff costs half as much.
    let s = Stack::start_with(
        Scenario::RateLimitedNoRetryAfter,
        Scenario::RateLimitedNoRetryAfter,
        ("", ""),
        "[retry]\nmax_retries = 1\n",
    )
    .await;
    let got = s.call(ApiSurface::ChatCompletions, false, &[]).await;
    assert_eq!(got.status, 429, "{}", got.body);
    assert!(!got.failed);
    assert_eq!(
        json(&got.body)["error"]["code"],
        "rate_limit_exceeded",
        "the upstream's envelope as it came: {}",
        got.body
    );
    got.assert_marked("secondary", 1, "fallback", "all rate limited");
    assert_eq!(s.seen(), (2, 2));
}

// ---- 3. 500 once, then correct.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_once_is_retried_on_the_primary_with_the_openai_sdk_preset() {
    each(CASES, |(surface, stream)| async move {
        let s = Stack::start(Scenario::ServerErrorOnce, SDK).await;
        let got = s.call(surface, stream, &[]).await;
        let name = name(surface, stream);
        got.assert_served_by_primary(surface, stream, &name);
        assert_eq!(s.seen(), (2, 0), "{name}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_once_fails_over_with_the_default_preset_which_retries_only_429() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::ServerErrorOnce, "").await;
        let got = s.call(surface, false, &[]).await;
        let name = name(surface, false);
        got.assert_failed_over(surface, false, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

// ---- 4. 503 forever.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_forever_is_retried_within_bounds_then_fails_over() {
    each(CASES, |(surface, stream)| async move {
        let s = Stack::start(Scenario::ServiceUnavailable, SDK).await;
        let got = s.call(surface, stream, &[]).await;
        let name = name(surface, stream);
        got.assert_failed_over(surface, stream, &name);
        assert_eq!(
            s.seen(),
            (3, 1),
            "{name}: 1 + 2 retries, then the secondary"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_upstream_is_down_the_last_503_reaches_the_caller_as_fallback() {
    let s = Stack::start_with(
        Scenario::ServiceUnavailable,
        Scenario::ServiceUnavailable,
        ("", ""),
        "",
    )
    .await;
    let got = s.call(ApiSurface::Responses, true, &[]).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert!(!got.body.contains("response.completed"), "{}", got.body);
    got.assert_marked("secondary", 1, "fallback", "all down");
    assert_eq!(
        s.seen(),
        (1, 1),
        "a 503 is not retried by the default preset"
    );
}

// ---- 5. A reset before the headers, once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_headers_is_retried_on_the_primary_with_the_openai_sdk_preset() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::ResetOnce, SDK).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        got.assert_served_by_primary(surface, true, &name);
        assert_eq!(s.seen(), (2, 0), "{name}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_headers_fails_over_when_transport_errors_are_not_retried() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::ResetOnce, "").await;
        let got = s.call(surface, false, &[]).await;
        let name = name(surface, false);
        got.assert_failed_over(surface, false, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

// ---- 6. Accepts and never answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_left_at_time_to_headers_and_not_retried() {
    let settings = format!("[retry]\npreset = \"openai_sdk\"\ntime_to_headers = \"{LIMIT}\"\n");
    let settings = settings.as_str();
    each(CASES, |(surface, stream)| async move {
        let s = Stack::start(Scenario::Hang, settings).await;
        let got = s.call(surface, stream, &[]).await;
        let name = name(surface, stream);
        got.assert_failed_over(surface, stream, &name);
        assert_eq!(s.seen(), (1, 1), "{name}: a silent route is not retried");
        assert!(
            got.elapsed < NOT_THE_FAULTS_DELAY,
            "{name}: the primary holds forever: {:?}",
            got.elapsed
        );
    })
    .await;
}

// ---- 7. The first token late.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_first_token_is_late_fails_over_at_first_token_timeout() {
    let settings = format!("[failover]\nfirst_token_timeout = \"{LIMIT}\"\n");
    let settings = settings.as_str();
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::SlowFirstToken, settings).await;
        let got = s
            .call(surface, true, &[("x-mock-first-token-ms", "10000")])
            .await;
        let name = name(surface, true);
        got.assert_failed_over(surface, true, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
        assert!(
            got.elapsed < NOT_THE_FAULTS_DELAY,
            "{name}: the primary's first token is 10 s away: {:?}",
            got.elapsed
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_non_streaming_answer_is_waited_for_since_first_token_timeout_is_for_streams() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(
            Scenario::SlowFirstToken,
            "[failover]\nfirst_token_timeout = \"100ms\"\n",
        )
        .await;
        let got = s
            .call(surface, false, &[("x-mock-first-token-ms", "600")])
            .await;
        let name = name(surface, false);
        got.assert_served_by_primary(surface, false, &name);
        assert_eq!(s.seen(), (1, 0), "{name}");
    })
    .await;
}

// ---- 8. A stream cut after K of N tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_its_first_tokens_reaches_the_caller_ending_in_an_error() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamCut, SDK).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        assert_eq!(
            got.body.matches("PASS ").count(),
            2,
            "{name}: the 2 tokens that came reach the caller: {}",
            got.body
        );
        got.assert_broken_after_commit(surface, &name);
        assert_eq!(s.seen(), (1, 0), "{name}: committed at the first byte");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_the_end_commit_point_fails_over_transparently() {
    let settings = format!("{SDK}{AT_END}");
    let settings = settings.as_str();
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamCut, settings).await;
        let got = s.call(surface, true, &[("x-mock-cut-after", "4")]).await;
        let name = name(surface, true);
        got.assert_failed_over(surface, true, &name);
        assert!(
            !got.body.contains("PASS "),
            "{name}: nothing of the primary's: {}",
            got.body
        );
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_any_content_fails_over_when_committing_at_the_first_content() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(
            Scenario::StreamCut,
            "[failover]\ncommit = \"first_content\"\n",
        )
        .await;
        let got = s.call(surface, true, &[("x-mock-cut-after", "0")]).await;
        let name = name(surface, true);
        got.assert_failed_over(surface, true, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_answer_cut_in_half_fails_over() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamCut, "").await;
        let got = s.call(surface, false, &[]).await;
        let name = name(surface, false);
        got.assert_failed_over(surface, false, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

// ---- 9. A stream that stalls after K tokens, the connection open.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_after_the_commit_ends_in_an_error_at_idle_timeout() {
    let settings = format!("{SDK}[failover]\nidle_timeout = \"{LIMIT}\"\n");
    let settings = settings.as_str();
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamStall, settings).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        assert_eq!(got.body.matches("PASS ").count(), 2, "{name}: {}", got.body);
        got.assert_broken_after_commit(surface, &name);
        assert_eq!(s.seen(), (1, 0), "{name}");
        assert!(
            got.elapsed < NOT_THE_FAULTS_DELAY,
            "{name}: the primary stays silent forever: {:?}",
            got.elapsed
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_before_the_end_commit_point_fails_over_at_idle_timeout() {
    let settings = format!("{SDK}{AT_END}idle_timeout = \"{LIMIT}\"\n");
    let settings = settings.as_str();
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamStall, settings).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        got.assert_failed_over(surface, true, &name);
        assert!(!got.body.contains("PASS "), "{name}: {}", got.body);
        assert_eq!(s.seen(), (1, 1), "{name}");
        assert!(
            got.elapsed < NOT_THE_FAULTS_DELAY,
            "{name}: {:?}",
            got.elapsed
        );
    })
    .await;
}

// ---- 10. One malformed chunk mid-stream.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_mid_stream_fails_the_stream_after_the_commit() {
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamMalformedChunk, SDK).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        // Committed at the first byte, the stream goes on as it comes and is judged at its
        // end: the body then ends in an error, even after the terminator. (Which of its last
        // bytes reach the caller is `every_byte_handed_on_before_a_stream_fails_reaches_the_caller`.)
        got.assert_broken_after_commit(surface, &name);
        assert_eq!(s.seen(), (1, 0), "{name}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_before_the_end_commit_point_fails_over_transparently() {
    let settings = format!("{SDK}{AT_END}");
    let settings = settings.as_str();
    each(SURFACES, |surface| async move {
        let s = Stack::start(Scenario::StreamMalformedChunk, settings).await;
        let got = s.call(surface, true, &[]).await;
        let name = name(surface, true);
        got.assert_failed_over(surface, true, &name);
        assert_eq!(s.seen(), (1, 1), "{name}");
    })
    .await;
}

// ---- 11. A stream without its terminator, otherwise complete.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stream_without_done_but_with_its_finish_reason_is_passed_on_as_an_answer() {
    let s = Stack::start(Scenario::StreamNoTerminator, SDK).await;
    let got = s.call(ApiSurface::ChatCompletions, true, &[]).await;
    assert_eq!(got.status, 200);
    assert!(!got.failed, "a clean end: {}", got.body);
    assert!(!got.body.contains("[DONE]"), "{}", got.body);
    assert!(
        got.body.contains(r#""finish_reason":"stop""#),
        "{}",
        got.body
    );
    got.assert_marked("primary", 0, "none", "chat");
    assert_eq!(s.seen(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_stream_without_its_terminal_event_ends_in_an_error_or_fails_over_at_end() {
    let first_byte = async {
        let s = Stack::start(Scenario::StreamNoTerminator, SDK).await;
        let got = s.call(ApiSurface::Responses, true, &[]).await;
        assert!(!got.body.contains("response.completed"), "{}", got.body);
        got.assert_broken_after_commit(ApiSurface::Responses, "first byte");
        assert_eq!(s.seen(), (1, 0));
    };
    // Committed at the end, it never reaches the caller: the secondary answers.
    let at_end = async {
        let s = Stack::start(Scenario::StreamNoTerminator, &format!("{SDK}{AT_END}")).await;
        let got = s.call(ApiSurface::Responses, true, &[]).await;
        got.assert_failed_over(ApiSurface::Responses, true, "end");
        assert_eq!(s.seen(), (1, 1));
    };
    tokio::join!(first_byte, at_end);
}

// ---- 12. context_length_exceeded.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_length_error_moves_to_the_upstream_with_the_larger_configured_window() {
    each(SURFACES, |surface| async move {
        // A healthy but equally small upstream stands between: the hop skips it, so the
        // windows in the file are what chose.
        let primary =
            MockGateway::start_with(Scenario::ContextLengthExceeded, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
        let small = MockGateway::start().await.unwrap();
        let large = MockGateway::start().await.unwrap();
        let proxy = proxy(format!(
            "listen = \"127.0.0.1:0\"\n\n{}{}{}\n{SDK}",
            upstream("primary", &primary, "context_window = 8000"),
            upstream("small", &small, "context_window = 8000"),
            upstream("large", &large, "context_window = 128000"),
        ))
        .await;
        let got = send(&proxy, surface, request_body(surface, false), &[]).await;
        let name = name(surface, false);
        assert!(got.is_complete(surface, false), "{name}: {}", got.body);
        got.assert_marked("large", 1, "none", &name);
        assert_eq!(
            (primary.requests(), small.requests(), large.requests()),
            (1, 0, 1),
            "{name}: a 400 is never retried"
        );
    })
    .await;
}

// ---- 13. A content-policy refusal.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_policy_refusal_holds_and_is_never_masked_by_a_hop() {
    each(CASES, |(surface, stream)| async move {
        let s = Stack::start(Scenario::ContentPolicy, SDK).await;
        let got = s.call(surface, stream, &[]).await;
        let name = name(surface, stream);
        assert_eq!(got.status, 400, "{name}");
        assert!(!got.failed, "{name}");
        assert_eq!(
            json(&got.body)["error"]["code"],
            "content_policy_violation",
            "{name}: the refusal as it came: {}",
            got.body
        );
        got.assert_marked("primary", 0, "hold", &name);
        assert_eq!(s.seen(), (1, 0), "{name}");
    })
    .await;
}

// ---- 14. A model that takes no assistant prefill (continuation does not exist yet: the
// mock's own behaviour, through the proxy).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_is_refused_with_hold_and_a_plain_request_served() {
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
    each(prefills, |(surface, prefill)| async move {
        let s = Stack::start(Scenario::PrefillRejected, SDK).await;
        let refused = send(&s.proxy, surface, prefill.to_owned(), &[]).await;
        let name = format!("{surface}");
        assert_eq!(refused.status, 400, "{name}");
        assert!(
            json(&refused.body)["error"]["message"]
                .as_str()
                .is_some_and(
                    |m| m.starts_with("This model does not support assistant message prefill")
                ),
            "{name}: {}",
            refused.body
        );
        refused.assert_marked("primary", 0, "hold", &name);
        assert_eq!(s.seen(), (1, 0), "{name}: a refused request fails anywhere");
        let served = s.call(surface, false, &[]).await;
        served.assert_served_by_primary(surface, false, &name);
        assert_eq!(s.seen(), (2, 0), "{name}");
    })
    .await;
}

// ---- 15. Down for a while, then healthy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_down_for_a_while_is_failed_over_then_serves_again() {
    let s = Stack::start(Scenario::DownThenUp, "").await;
    let down = [("x-mock-down-ms", "300")];
    let got = s.call(ApiSurface::ChatCompletions, false, &down).await;
    got.assert_failed_over(ApiSurface::ChatCompletions, false, "while down");
    assert_eq!(s.seen(), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // One failure is far from the default breaker's 5: the primary is tried first again.
    let got = s.call(ApiSurface::Responses, true, &down).await;
    got.assert_served_by_primary(ApiSurface::Responses, true, "up again");
    assert_eq!(s.seen(), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_upstreams_breaker_from_the_file_opens_then_a_probe_finds_it_healthy() {
    // The open time is long next to three loopback calls, so the third surely falls inside
    // it; the sleep is past both the outage and the open time.
    let s = Stack::start(
        Scenario::DownThenUp,
        "[breaker]\nconsecutive_failures = 2\nopen_base = \"1s\"\nopen_max = \"2s\"\njitter = 0\n",
    )
    .await;
    let down = [("x-mock-down-ms", "800")];
    for call in 0..3 {
        let got = s.call(ApiSurface::ChatCompletions, false, &down).await;
        assert!(
            got.is_complete(ApiSurface::ChatCompletions, false),
            "{}",
            got.body
        );
        assert_eq!(got.upstream, "secondary", "call {call}");
        if call == 2 {
            got.assert_marked(
                "secondary",
                0,
                "none",
                "breaker open: the primary is skipped",
            );
        }
    }
    assert_eq!(
        s.seen(),
        (2, 3),
        "open after 2 failures: the third call goes straight to the secondary"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for call in ["probe", "closed again"] {
        let got = s.call(ApiSurface::ChatCompletions, false, &down).await;
        got.assert_served_by_primary(ApiSurface::ChatCompletions, false, call);
    }
    assert_eq!(s.seen(), (4, 3));
}

// ---- What came before a failure, through the proxy as through the library.

/// The failure the proxy reports at a stream's end, right after its last bytes: the caller
/// must get those bytes, then the error (through the library it always does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_handed_on_before_a_stream_fails_reaches_the_caller() {
    // The breaker never opens, so every call goes to the faulty primary; 20 calls each make an
    // intermittent loss all but certain to show.
    let settings =
        format!("{SDK}[breaker]\nconsecutive_failures = 1000000\nminimum_calls = 1000000\n");
    let settings = settings.as_str();
    let cases = [
        // The bad line, the rest of the stream and its terminator, then the error.
        (
            Scenario::StreamMalformedChunk,
            ApiSurface::ChatCompletions,
            "data: [DONE]\n\n",
        ),
        (
            Scenario::StreamMalformedChunk,
            ApiSurface::Responses,
            "event: response.completed\n",
        ),
        // Every `.done` event, then the error for the missing `response.completed`.
        (
            Scenario::StreamNoTerminator,
            ApiSurface::Responses,
            "\"type\":\"response.output_item.done\"",
        ),
    ];
    each(cases, |(fault, surface, last)| async move {
        let s = Stack::start(fault, settings).await;
        for call in 0..20 {
            let got = s.call(surface, true, &[]).await;
            let name = format!("{fault} {surface} call {call}");
            got.assert_broken_after_commit(surface, &name);
            assert!(
                got.body.contains(last),
                "{name}: the stream's last bytes ({last:?}) were lost: {}",
                got.body
            );
        }
        assert_eq!(s.seen(), (20, 0), "{fault} {surface}");
    })
    .await;
}
