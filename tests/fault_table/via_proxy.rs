//! The proxy driver: each row through the built `llm-guard proxy` as a child process, its
//! configuration file written from the row (the row's upstreams in order, each with the row's
//! scenario as its gateway's default: the proxy sends the caller's headers to every upstream,
//! so an `x-mock-scenario` header would reach the healthy one too), and a plain HTTP caller
//! that reads the body chunk by chunk.
//!
//! What the proxy shows of a row's expectation: the status and the body as they came, how the
//! body ended, `x-llm-guard-upstream` (the upstream), `x-llm-guard-hops` (the number of hops,
//! not their reasons), `x-llm-guard-decision` (the decision when the headers came: `none` for
//! a stream broken after its commit, whose final `fallback` is on its telemetry), the time the
//! call took and the requests each gateway saw. The evidence's other fields (retry counts,
//! failover stop, parse check, violation, breaker state) are the library driver's.
//!
//! The proxy's retry backoff is not configurable (500 ms to 8 s, full jitter): a case that
//! retries without a server wait costs up to a second or so, which is why the cases run
//! several at once.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest_llm_guard::evidence::{ApiSurface, FallbackDecision};
use reqwest_llm_guard::failover::CommitPoint;
use reqwest_llm_guard::mock::MockGateway;

use crate::common::path;
use crate::common::proxy::Proxy;
use crate::table::{self, Driver, End, Expect, Fault, Preset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_through_the_proxy() {
    crate::run_table(Driver::Proxy, run).await;
}

/// One row, one request kind: fresh gateways and a proxy of its own, for every call of the row.
async fn run(fault: &'static Fault, kind: (ApiSurface, bool), case: String) {
    let gateways = crate::gateways(fault).await;
    let proxy = proxy(config(fault, &gateways)).await;
    for (i, call) in fault.calls.iter().enumerate() {
        tokio::time::sleep(call.after).await;
        let (surface, stream, body) = table::body(call.request, kind);
        let mut label = String::new();
        for time in 0..call.times {
            label = crate::call_label(&case, i, fault.calls.len(), time, call.times);
            let got = send(&proxy, surface, body.clone(), call.headers).await;
            check(&call.expect, &got, (surface, stream), &label);
        }
        assert_eq!(
            crate::seen(&gateways),
            call.expect.seen.by(Driver::Proxy),
            "{label}: requests each upstream saw"
        );
    }
}

/// A duration as the file takes it.
fn ms(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

/// The proxy's file for the row: its upstreams in order, then the sections the row's settings
/// change (none at all for the defaults).
fn config(fault: &Fault, gateways: &[MockGateway]) -> String {
    let mut out = String::from("listen = \"127.0.0.1:0\"\n\n");
    for (up, gateway) in fault.upstreams.iter().zip(gateways) {
        let _ = writeln!(
            out,
            "[[upstreams]]\nname = \"{}\"\nbase_url = \"{}/v1\"",
            up.name,
            gateway.url()
        );
        if let Some(tokens) = up.context_window {
            let _ = writeln!(out, "context_window = {tokens}");
        }
        out.push('\n');
    }
    let s = &fault.settings;
    let mut retry = String::new();
    if s.retry == Preset::OpenAiSdk {
        retry.push_str("preset = \"openai_sdk\"\n");
    }
    if let Some(n) = s.proxy_max_retries {
        let _ = writeln!(retry, "max_retries = {n}");
    }
    if let Some(limit) = s.time_to_headers {
        let _ = writeln!(retry, "time_to_headers = {}", ms(limit));
    }
    let mut failover = String::new();
    match s.commit {
        None => {}
        Some(CommitPoint::FirstByte) => failover.push_str("commit = \"first_byte\"\n"),
        Some(CommitPoint::FirstContent) => failover.push_str("commit = \"first_content\"\n"),
        Some(CommitPoint::End { max_bytes }) => {
            let _ = writeln!(failover, "commit = \"end\"\nend_buffer_bytes = {max_bytes}");
        }
        Some(other) => panic!("[{}]: no file setting for {other:?}", fault.name),
    }
    if let Some(limit) = s.first_token_timeout {
        let _ = writeln!(failover, "first_token_timeout = {}", ms(limit));
    }
    if let Some(limit) = s.idle_timeout {
        let _ = writeln!(failover, "idle_timeout = {}", ms(limit));
    }
    let b = &s.breaker;
    assert!(
        b.rate_limit_cooldown.is_none(),
        "[{}]: the proxy's file has no rate-limit cooldown",
        fault.name
    );
    let mut breaker = String::new();
    if let Some(n) = b.consecutive_failures {
        let _ = writeln!(breaker, "consecutive_failures = {n}");
    }
    if let Some(n) = b.minimum_calls {
        let _ = writeln!(breaker, "minimum_calls = {n}");
    }
    if let Some((base, max)) = b.open {
        let _ = writeln!(breaker, "open_base = {}\nopen_max = {}", ms(base), ms(max));
    }
    if let Some(share) = b.jitter {
        let _ = writeln!(breaker, "jitter = {share}");
    }
    for (section, text) in [
        ("retry", retry),
        ("failover", failover),
        ("breaker", breaker),
    ] {
        if !text.is_empty() {
            let _ = write!(out, "[{section}]\n{text}\n");
        }
    }
    out
}

/// Starts the proxy off the async workers (it waits on a pipe for its listening line).
async fn proxy(config: String) -> Proxy {
    tokio::task::spawn_blocking(move || Proxy::start(&config, &[], &[]))
        .await
        .unwrap()
}

/// What the caller got.
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

/// What the row expects of one call, as far as the proxy shows it.
fn check(expect: &Expect, got: &Got, (surface, stream): (ApiSurface, bool), label: &str) {
    let body = &got.body;
    assert_eq!(got.status, expect.status, "{label}: status; body: {body}");
    let whole = got.status == 200 && !got.failed && table::has_last_word(body, surface, stream);
    // The decision when the headers came: a stream broken after its commit was `none` then.
    let decision = match expect.end {
        End::Whole => {
            assert!(whole, "{label}: the whole answer: {body}");
            expect.decision
        }
        End::Clean => {
            assert!(!got.failed, "{label}: the body ends cleanly: {body}");
            expect.decision
        }
        End::Broken(_) => {
            assert!(
                got.failed,
                "{label}: the body must end in an error, not cleanly: {body}"
            );
            assert!(!whole, "{label}: {body}");
            FallbackDecision::None
        }
    };
    assert_eq!(
        (
            got.upstream.as_str(),
            got.hops.as_str(),
            got.decision.as_str()
        ),
        (
            expect.upstream,
            expect.hops.len().to_string().as_str(),
            decision.as_str()
        ),
        "{label}: x-llm-guard-upstream, -hops, -decision; body: {body}"
    );
    if let Some(wait) = expect.server_wait {
        // A lower bound only: the retry came after the server's wait.
        assert!(
            got.elapsed + Duration::from_millis(100) >= wait,
            "{label}: the server's wait, read in its unit: {:?}",
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
