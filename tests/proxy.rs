//! `llm-guard proxy` as a service in another language uses it: the built binary as a child
//! process with a configuration file, HTTP upstreams on loopback, and exact request counts on
//! each upstream.
#![cfg(feature = "cli")]

mod common;

use std::io::Read as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Proxy, config_file, llm_guard};
use common::{CHAT_OK, ROLE, STOP, TEXT, chat_ok, responses_ok};
use futures_util::StreamExt as _;
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLER_KEY: &str = "sk-CALLER-proxy-7c2a";
const UPSTREAM_KEY: &str = "sk-UPSTREAM-proxy-41fe";

/// A Cloudflare challenge page, as walls serve it.
const CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
<script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8f1e2d3c4b5a6978\"></script></body></html>";

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

async fn seen(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

fn upstream(name: &str, base: &str, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nbase_url = \"{base}/v1\"\n{extra}\n")
}

fn config(upstreams: &[String]) -> String {
    format!("listen = \"127.0.0.1:0\"\n\n{}", upstreams.concat())
}

/// An upstream that sends these events as a stream, then ends the connection without the
/// chunked terminator: a stream cut after it started. Its base URL.
async fn cut_stream(events: &[&str]) -> String {
    let events: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let addr = common::raw_server(
        vec![common::chunked_response(
            "text/event-stream",
            &events,
            false,
        )],
        None,
    )
    .await;
    format!("http://{addr}")
}

/// A streaming Chat call through the proxy (`query` after the path, these headers), read to
/// its end: the status, the text that came, and whether the body ended in an error.
async fn stream_through(
    proxy: &Proxy,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, String, bool) {
    use futures_util::StreamExt as _;
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions{query}", proxy.url))
        .header("content-type", "application/json")
        .body(
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.bytes_stream();
    let (mut text, mut cut) = (String::new(), false);
    while let Some(chunk) = body.next().await {
        let Ok(b) = chunk else {
            cut = true;
            break;
        };
        text.push_str(&String::from_utf8_lossy(&b));
    }
    (status, text, cut)
}

async fn post(
    proxy: &Proxy,
    path: &str,
    body: &'static str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", proxy.url))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {CALLER_KEY}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_primary_fails_over_to_a_healthy_secondary() {
    let primary = MockGateway::start_with(Scenario::ServerError, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let secondary = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&secondary)
        .await;
    let proxy = Proxy::start(
        &config(&[
            upstream("primary", &primary.url(), ""),
            upstream("secondary", &secondary.uri(), ""),
        ]),
        &[],
        &[],
    );
    let (status, headers, body) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, CHAT_OK, "the body passes through as it came");
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "secondary");
    assert_eq!(header(&headers, "x-llm-guard-hops"), "1");
    assert_eq!(header(&headers, "x-llm-guard-decision"), "none");
    assert_eq!(
        header(&headers, "content-length"),
        CHAT_OK.len().to_string(),
        "a whole answer keeps its length"
    );
    assert_eq!(primary.requests(), 1, "a 5xx is not retried by default");
    assert_eq!(seen(&secondary).await.len(), 1);
    let (status, _, _) = proxy.stop();
    assert!(status.success(), "Ctrl-C stops it cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_error_holds_and_the_secondary_sees_nothing() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    let invalid = r#"{"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":"invalid_value"}}"#;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(invalid, "application/json"))
        .mount(&a)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&b)
        .await;
    let proxy = Proxy::start(
        &config(&[upstream("a", &a.uri(), ""), upstream("b", &b.uri(), "")]),
        &[],
        &[],
    );
    let (status, headers, body) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 400);
    assert_eq!(body, invalid);
    assert_eq!(header(&headers, "x-llm-guard-decision"), "hold");
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "a");
    assert_eq!(header(&headers, "x-llm-guard-hops"), "0");
    assert_eq!((seen(&a).await.len(), seen(&b).await.len()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_gets_its_own_key_or_the_callers_and_no_key_is_printed() {
    let (keyed, open) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&keyed)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&open)
        .await;
    let proxy = Proxy::start(
        &config(&[
            upstream(
                "keyed",
                &keyed.uri(),
                "api_key_env = \"LLM_GUARD_PROXY_TEST_KEY\"",
            ),
            upstream("open", &open.uri(), "forward_caller_auth = true"),
        ]),
        &[("LLM_GUARD_PROXY_TEST_KEY", UPSTREAM_KEY)],
        &["--log"],
    );
    let (status, headers, _) =
        post(&proxy, "/v1/chat/completions?api-key=QUERY-SECRET-1", CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "open");
    let auth = |r: &wiremock::Request| {
        r.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let to_keyed = seen(&keyed).await;
    let to_open = seen(&open).await;
    assert_eq!((to_keyed.len(), to_open.len()), (1, 1));
    assert_eq!(auth(&to_keyed[0]), format!("Bearer {UPSTREAM_KEY}"));
    assert!(
        !format!("{:?}", to_keyed[0].headers).contains(CALLER_KEY),
        "an upstream with a key never sees the caller's"
    );
    assert_eq!(auth(&to_open[0]), format!("Bearer {CALLER_KEY}"));
    assert_eq!(
        to_open[0].url.query(),
        Some("api-key=QUERY-SECRET-1"),
        "the query goes on"
    );
    let (exit, out, err) = proxy.stop();
    assert!(exit.success(), "{err}");
    for secret in [CALLER_KEY, UPSTREAM_KEY, "QUERY-SECRET"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed: {out}{err}"
        );
    }
    assert!(
        out.contains("POST /v1/chat/completions 200 upstream=open hops=1 decision=none"),
        "{out}"
    );
    assert!(out.contains("(upstreams: keyed, open)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_go_only_to_upstreams_serving_them() {
    let (chat_only, both) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&chat_only)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(responses_ok("resp_proxy1"))
        .mount(&chat_only)
        .await;
    Mock::given(path("/v1/responses"))
        .respond_with(responses_ok("resp_proxy1"))
        .mount(&both)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/responses/resp_proxy1"))
        .respond_with(responses_ok("resp_proxy1"))
        .mount(&both)
        .await;
    let proxy = Proxy::start(
        &config(&[
            upstream(
                "chat-only",
                &chat_only.uri(),
                "surfaces = [\"chat_completions\"]",
            ),
            upstream("both", &both.uri(), ""),
        ]),
        &[],
        &[],
    );
    let (status, headers, _) =
        post(&proxy, "/v1/responses", r#"{"model":"gpt-5","input":"hi"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "both");
    assert_eq!(header(&headers, "x-llm-guard-hops"), "0");
    let r = reqwest::get(format!("{}/v1/responses/resp_proxy1", proxy.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-llm-guard-upstream"), "both");
    let (status, headers, _) = post(&proxy, "/openai/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "any prefix");
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "chat-only");
    assert_eq!(
        (seen(&chat_only).await.len(), seen(&both).await.len()),
        (1, 2)
    );
    assert!(
        seen(&chat_only)
            .await
            .iter()
            .all(|r| r.url.path() == "/v1/chat/completions")
    );
}

/// A raw upstream that streams a chat answer's first two events, then waits for `release`
/// before the last one: the caller must see the first before the upstream sends the last.
async fn held_stream(release: Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let release = release.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for c in [ROLE, TEXT] {
                    let _ = socket
                        .write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                        .await;
                    let _ = socket.flush().await;
                }
                release.notified().await;
                let _ = socket
                    .write_all(format!("{:x}\r\n{STOP}\r\n0\r\n\r\n", STOP.len()).as_bytes())
                    .await;
                let _ = socket.flush().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_passes_through_as_it_arrives() {
    let release = Arc::new(tokio::sync::Notify::new());
    let addr = held_stream(release.clone()).await;
    let proxy = Proxy::start(
        &config(&[upstream("raw", &format!("http://{addr}"), "")]),
        &[],
        &[],
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(header(response.headers(), "x-llm-guard-upstream"), "raw");
    assert_eq!(
        header(response.headers(), "content-type"),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    // The first events arrive while the upstream still holds its last one.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("\"PA\"") {
            match body.next().await {
                Some(Ok(b)) => text.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("the stream ended early: {other:?} after {text:?}"),
            }
        }
    })
    .await;
    assert!(first.is_ok(), "the first events were held back: {text:?}");
    assert!(!text.contains("[DONE]"));
    release.notify_one();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("a clean end")));
    }
    assert_eq!(text, format!("{ROLE}{TEXT}{STOP}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_are_404_and_no_answer_is_a_502_without_the_url() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = Proxy::start(
        &config(&[format!(
            "[[upstreams]]\nname = \"down\"\nbase_url = \"http://127.0.0.1:{port}/v1?api-version=QSECRET\"\n"
        )]),
        &[],
        &[],
    );
    let (status, _, body) = post(&proxy, "/v1/embeddings", "{}").await;
    assert_eq!(status, 404);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["type"], "proxy_error");
    assert_eq!(e["error"]["code"], "not_found");
    assert!(e["error"]["param"].is_null());

    let (status, headers, body) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 502);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["type"], "proxy_error");
    assert_eq!(e["error"]["code"], "connect");
    assert!(e["error"]["message"].is_string());
    assert!(e["error"]["param"].is_null());
    assert!(
        !body.contains("QSECRET") && !body.contains(&port.to_string()),
        "{body}"
    );
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "down");
    assert_eq!(header(&headers, "x-llm-guard-decision"), "fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_an_open_request_finish_then_stops() {
    let slow = MockGateway::start_with(Scenario::Slow, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let proxy = Proxy::start(&config(&[upstream("slow", &slow.url(), "")]), &[], &[]);
    let call = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", proxy.url))
            .header("x-mock-delay-ms", "1500")
            .body(CHAT)
            .send(),
    );
    // The request is in flight (the upstream holds its headers for 1.5 s) when Ctrl-C comes.
    let started = Instant::now();
    while slow.requests() == 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.interrupt();
    let response = call.await.unwrap().expect("the open request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "x-llm-guard-upstream"), "slow");
    let body = response.text().await.unwrap();
    assert!(body.contains("chat.completion"), "{body}");
    let (status, out, err) = tokio::task::spawn_blocking(move || proxy.exited())
        .await
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(out.contains("llm-guard proxy stopped"), "{out}");
    assert!(
        err.contains("waiting up to 30s for 1 open connection"),
        "{err}"
    );
}

/// Runs the proxy to its exit (it must not start): exit code, stdout, stderr.
fn refused(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let file = config_file(config);
    let mut child = llm_guard()
        .arg("proxy")
        .arg("--config")
        .arg(&file)
        .envs(env.iter().copied())
        .env_remove("LLM_GUARD_PROXY_TEST_UNSET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("llm-guard runs");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a bad configuration started the proxy:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

#[test]
fn a_bad_configuration_exits_2_naming_the_field_before_listening() {
    let ok = "[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let cases: &[(String, &[&str])] = &[
        (
            format!("listen = \"127.0.0.1:0\"\n{ok}[failover]\nmax_hop = 3\n"),
            &["failover", "unknown field `max_hop`"],
        ),
        (
            format!("listen = \"127.0.0.1:0\"\n{ok}api_key = \"sk-FILEKEY-1\"\n"),
            &["upstreams[0] (\"a\").api_key", "api_key_env"],
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\n{ok}[[upstreams]]\nname = \"b\"\nbase_url = \"ftp://h/v1?k=sk-FILEKEY-2\"\n"
            ),
            &["upstreams[1] (\"b\").base_url"],
        ),
        (
            format!("listen = \"127.0.0.1:0\"\n{ok}[retry]\ndeadline = \"soon\"\n"),
            &["retry.deadline", "duration"],
        ),
        (
            format!("listen = \"127.0.0.1:0\"\n{ok}[breaker]\nwindow = \"sk-FILEKEY-3\"\n"),
            &["breaker.window"],
        ),
        (
            "listen = \"127.0.0.1:0\"\nupstreams = []\n".to_owned(),
            &["upstreams", "at least one"],
        ),
        (
            format!("listen = \"0.0.0.0:0\"\n{ok}"),
            &["listen", "allow_non_loopback"],
        ),
        (
            format!("listen = \"0.0.0.0:0\"\nallow_non_loopback = true\n{ok}"),
            &["auth.keys_env", "inbound keys"],
        ),
        (
            format!("listen = \"127.0.0.1:0\"\n{ok}api_key_env = \"LLM_GUARD_PROXY_TEST_UNSET\"\n"),
            &[
                "upstreams[0] (\"a\").api_key_env",
                "LLM_GUARD_PROXY_TEST_UNSET",
            ],
        ),
        (
            "listen = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"sk-FILEKEY-4"
                .to_owned(),
            &["line 4"],
        ),
    ];
    for (text, expected) in cases {
        let (code, out, err) = refused(text, &[]);
        assert_eq!(code, Some(2), "{text}\n{out}{err}");
        assert!(!out.contains("listening"), "{text}\n{out}");
        for e in *expected {
            assert!(err.contains(e), "{text}\nexpected {e:?} in: {err}");
        }
        assert!(!err.contains("FILEKEY"), "a value was repeated: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = refused("", &[]);
    assert_eq!(code, Some(2), "{err}");
    let missing = llm_guard()
        .args(["proxy", "--config", "/nonexistent/llm-guard-proxy.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn drill_needs_a_key_of_its_own() {
    let (code, _, err) = refused(
        "listen = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\ndrill = true\n",
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("drill") && err.contains("api_key_env"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_must_pass_the_drill_gets_traffic_only_after_it_did() {
    // `new` is healthy but undrilled: until its drill passes, calls go to `known`.
    let new = MockGateway::start().await.unwrap();
    let known = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&known)
        .await;
    let proxy = Proxy::start(
        &config(&[
            upstream(
                "new",
                &new.url(),
                "api_key_env = \"DRILLED_KEY\"\ndrill = true",
            ),
            upstream("known", &known.uri(), ""),
        ]),
        &[("DRILLED_KEY", "sk-drilled-0000")],
        &[],
    );
    let started = Instant::now();
    while !proxy
        .stderr
        .lock()
        .unwrap()
        .contains("drill passed for new")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the drill never passed: {}",
            proxy.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drill_requests = new.requests();
    assert!(
        drill_requests >= 2,
        "the drill's happy path and invalid request"
    );
    let (status, headers, _) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "new", "promoted");
    assert_eq!(new.requests(), drill_requests + 1);
    let (status, _, err) = proxy.stop();
    assert!(status.success());
    assert!(!err.contains("sk-drilled-0000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_chat_stream_is_continued_where_the_config_allows_a_prefill() {
    // `a` sends a role chunk and one token, then ends without a finish reason.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let body = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"PA\"},\"finish_reason\":null}]}\n\n";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let b = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "data: {\"id\":\"d\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SS\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            "text/event-stream",
        ))
        .mount(&b)
        .await;
    let proxy = Proxy::start(
        &format!(
            "{}[failover]\ncontinuation = true\n",
            config(&[
                upstream("a", &format!("http://{a}"), ""),
                upstream("b", &b.uri(), "prefill = true"),
            ])
        ),
        &[],
        &[],
    );
    let (status, _, body) = post(
        &proxy,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"PA\"") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    let sent: serde_json::Value = serde_json::from_slice(&seen(&b).await[0].body).unwrap();
    assert_eq!(
        sent["messages"].as_array().unwrap().last().unwrap()["content"],
        "PA"
    );
    let (status, _, _) = proxy.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_drill_fails_gets_no_caller_traffic() {
    // `new` answers 500: its drill cannot pass, so callers are served by `known`.
    let new = MockGateway::start_with(Scenario::ServerError, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let known = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&known)
        .await;
    let proxy = Proxy::start(
        &config(&[
            upstream(
                "new",
                &new.url(),
                "api_key_env = \"DRILLED_KEY\"\ndrill = true",
            ),
            upstream("known", &known.uri(), ""),
        ]),
        &[("DRILLED_KEY", "sk-drilled-0000")],
        &[],
    );
    let started = Instant::now();
    while !proxy
        .stderr
        .lock()
        .unwrap()
        .contains("drill did not pass for new")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no drill record: {}",
            proxy.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drill_requests = new.requests();
    let (status, headers, _) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-guard-upstream"), "known");
    assert_eq!(
        header(&headers, "x-llm-guard-hops"),
        "0",
        "passed over, not failed over"
    );
    assert_eq!(
        new.requests(),
        drill_requests,
        "no caller request reached it"
    );
    let (status, _, _) = proxy.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_a_key_gets_no_caller_key_unless_it_opts_in() {
    let open = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&open)
        .await;
    let proxy = Proxy::start(&config(&[upstream("open", &open.uri(), "")]), &[], &[]);
    let (status, _, _) = post(&proxy, "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200);
    let to_open = seen(&open).await;
    assert_eq!(to_open.len(), 1);
    assert!(
        !format!("{:?}", to_open[0].headers).contains(CALLER_KEY),
        "not opted in: no caller credential at all"
    );
    let _ = proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_proxy_retried_failed_over_or_held_tells_the_sdk_not_to_retry() {
    let storm = || {
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "10")
            .set_body_raw(
                r#"{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                "application/json",
            )
    };
    let refused = ResponseTemplate::new(400).set_body_raw(
        r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"invalid_value"}}"#,
        "application/json",
    );
    for (name, first, second, want) in [
        ("a 429 storm on both", storm(), storm(), Some("false")),
        ("a request error held", refused, chat_ok(), Some("false")),
        ("a clean answer", chat_ok(), chat_ok(), None),
    ] {
        let (a, b) = (MockServer::start().await, MockServer::start().await);
        for (server, answer) in [(&a, first), (&b, second)] {
            Mock::given(path("/v1/chat/completions"))
                .respond_with(answer)
                .mount(server)
                .await;
        }
        let proxy = Proxy::start(
            &config(&[upstream("a", &a.uri(), ""), upstream("b", &b.uri(), "")]),
            &[],
            &[],
        );
        let (_, headers, _) = post(&proxy, "/v1/chat/completions", CHAT).await;
        assert_eq!(
            headers.get("x-should-retry").and_then(|v| v.to_str().ok()),
            want,
            "{name}"
        );
        let _ = proxy.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_at_any_status_reaches_the_sdk_as_an_error_naming_it() {
    for (status, want) in [(200, 502), (403, 403)] {
        let a = MockServer::start().await;
        Mock::given(path("/v1/chat/completions"))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_raw(CHALLENGE, "text/html")
                    .insert_header("cf-mitigated", "challenge")
                    .insert_header("cf-ray", "8f1e2d3c4b5a6978-FRA")
                    .insert_header("server", "cloudflare"),
            )
            .mount(&a)
            .await;
        let proxy = Proxy::start(&config(&[upstream("a", &a.uri(), "")]), &[], &[]);
        let (got, headers, body) = post(&proxy, "/v1/chat/completions", CHAT).await;
        assert_eq!(got, want, "a wall in a {status}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["type"], "waf_wall", "{body}");
        assert_eq!(v["error"]["code"], "cloudflare_challenge", "{body}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("8f1e2d3c4b5a6978"), "{message}");
        assert!(
            !body.contains("Just a moment"),
            "the wall's page is not passed on"
        );
        assert_eq!(header(&headers, "x-llm-guard-waf-vendor"), "cloudflare");
        assert_eq!(header(&headers, "x-llm-guard-waf-kind"), "challenge");
        assert_eq!(
            header(&headers, "x-llm-guard-waf-reference"),
            "8f1e2d3c4b5a6978"
        );
        assert_eq!(header(&headers, "x-llm-guard-decision"), "hold");
        assert_eq!(header(&headers, "x-should-retry"), "false");
        assert_eq!(header(&headers, "content-type"), "application/json");
        let _ = proxy.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_after_it_started_ends_with_an_error_event_the_sdks_raise() {
    // The upstream sends the role and some text, then the connection ends without the
    // chunked terminator: a stream cut after the proxy committed it to the caller.
    let base = cut_stream(&[ROLE, TEXT]).await;
    let proxy = Proxy::start(&config(&[upstream("a", &base, "")]), &[], &[]);
    let (status, text, cut) = stream_through(&proxy, "", &[]).await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with(ROLE),
        "what came is passed on first: {text}"
    );
    assert!(text.contains(TEXT));
    // One event, on its own: `event: error` for the Node SDK, an `error` object for Python.
    let event = text
        .split("\n\n")
        .find(|e| e.starts_with("event: error"))
        .expect(&text);
    let data: serde_json::Value =
        serde_json::from_str(event.strip_prefix("event: error\ndata: ").unwrap()).unwrap();
    assert_eq!(data["error"]["code"], "stream_failed");
    assert_eq!(data["type"], "error");
    assert!(!text.contains("[DONE]"));
    assert!(cut, "and the connection is still cut: never a clean end");
    let _ = proxy.stop();
}

// ---- The official `openai` package for Python against the proxy (installed by .ci/run; a
// run without it says it skipped, and fails under CI=true).

/// Runs tests/sdk/openai_call.py against the proxy; `None` when the package is not installed.
fn openai_sdk(proxy: &Proxy, kind: &str, retries: u32) -> Option<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_call.py");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the openai package is required in CI (.ci/run installs it)"
        );
        eprintln!("skipped: python3 with the openai package not found");
        return None;
    }
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("{}/v1", proxy.url))
        .arg(kind)
        .arg(retries.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr))),
    )
}

/// One SDK call (`kind`, with the SDK's `retries`) through a proxy over these upstreams,
/// started and stopped off the async workers (the proxy's start and the SDK block); `None`
/// when the package is not installed.
async fn sdk_call(
    upstreams: Vec<String>,
    kind: &'static str,
    retries: u32,
) -> Option<serde_json::Value> {
    tokio::task::spawn_blocking(move || {
        let proxy = Proxy::start(&config(&upstreams), &[], &[]);
        let got = openai_sdk(&proxy, kind, retries);
        let _ = proxy.stop();
        got
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_raises_what_the_proxy_means_and_retries_nothing_twice() {
    // A 429 storm on both upstreams, with the SDK's own default of 2 retries: the upstreams
    // see the proxy's bound (1 + 2 retries on each), not three times it.
    let storm = || {
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "10")
            .set_body_raw(
                r#"{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                "application/json",
            )
    };
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    for server in [&a, &b] {
        Mock::given(path("/v1/chat/completions"))
            .respond_with(storm())
            .mount(server)
            .await;
    }
    let upstreams = vec![upstream("a", &a.uri(), ""), upstream("b", &b.uri(), "")];
    let Some(got) = sdk_call(upstreams, "chat", 2).await else {
        return;
    };
    assert_eq!(got["result"], "raised", "{got}");
    assert_eq!(got["exception"], "RateLimitError", "{got}");
    assert_eq!(got["status"], 429, "{got}");
    assert_eq!(
        (seen(&a).await.len(), seen(&b).await.len()),
        (3, 3),
        "the SDK's retries did not run the sequence again: {got}"
    );

    // A wall in a 200: a typed error naming it, not a string where a completion should be.
    let wall = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(CHALLENGE, "text/html")
                .insert_header("cf-mitigated", "challenge")
                .insert_header("server", "cloudflare"),
        )
        .mount(&wall)
        .await;
    let got = sdk_call(vec![upstream("wall", &wall.uri(), "")], "chat", 2)
        .await
        .expect("probed above");
    assert_eq!(got["result"], "raised", "{got}");
    assert_eq!(got["exception"], "InternalServerError", "{got}");
    assert_eq!(got["status"], 502, "{got}");
    assert_eq!(got["type"], "waf_wall", "{got}");
    assert_eq!(got["code"], "cloudflare_challenge", "{got}");
    assert_eq!(seen(&wall).await.len(), 1, "a wall is asked once: {got}");

    // A stream cut after it started: an API error, not an untyped transport error.
    let base = cut_stream(&[ROLE, TEXT]).await;
    let got = sdk_call(vec![upstream("cut", &base, "")], "chat_stream", 0)
        .await
        .expect("probed above");
    assert_eq!(got["result"], "raised", "{got}");
    assert_eq!(got["exception"], "APIError", "{got}");
    assert_eq!(got["code"], "stream_failed", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_after_its_terminal_event_gets_no_error_event() {
    // A whole answer, `[DONE]` included, then the connection ends without the terminator.
    let base = cut_stream(&[ROLE, TEXT, STOP]).await;
    let proxy = Proxy::start(&config(&[upstream("a", &base, "")]), &[], &[]);
    let (_, text, _) = stream_through(&proxy, "", &[]).await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("event: error"),
        "an answer that reached its end is not turned into an error: {text}"
    );
    let _ = proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_alive_and_readyz_whether_an_upstream_is_in_rotation() {
    let ok = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&ok)
        .await;
    let get = |proxy_url: String, at: &'static str| async move {
        let r = reqwest::get(format!("{proxy_url}{at}")).await.unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        (status, v)
    };
    let proxy = Proxy::start(&config(&[upstream("ok", &ok.uri(), "")]), &[], &[]);
    assert_eq!(get(proxy.url.clone(), "/healthz").await.0, 200);
    let (status, v) = get(proxy.url.clone(), "/readyz").await;
    assert_eq!(
        (status, v["in_rotation"][0].as_str()),
        (200, Some("ok")),
        "{v}"
    );
    let _ = proxy.stop();
    assert!(
        seen(&ok).await.is_empty(),
        "health checks never reach an upstream"
    );

    // Its only upstream awaits the evidence drill (which fails against a 503): not ready.
    let down = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let proxy = Proxy::start(
        &config(&[upstream(
            "gated",
            &down.uri(),
            "api_key_env = \"LLM_GUARD_PROXY_TEST_KEY\"\ndrill = true",
        )]),
        &[("LLM_GUARD_PROXY_TEST_KEY", UPSTREAM_KEY)],
        &[],
    );
    assert_eq!(get(proxy.url.clone(), "/healthz").await.0, 200);
    let (status, v) = get(proxy.url.clone(), "/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "not_ready");
    let _ = proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_log_line_per_call_written_when_it_ends() {
    // A stream cut after it started: its line says so, and is written once it ended.
    let base = cut_stream(&[ROLE, TEXT]).await;
    let proxy = Proxy::start(
        &config(&[upstream("cut", &base, "")]),
        &[],
        &["--log", "--log-format", "json"],
    );
    let caller = format!("Bearer {CALLER_KEY}");
    let _ = stream_through(
        &proxy,
        "?api-key=QUERY-SECRET",
        &[("authorization", caller.as_str())],
    )
    .await;
    // A request for nothing the proxy serves: a line too, with no upstream.
    let (status, _, _) = post(&proxy, "/v1/nothing", CHAT).await;
    assert_eq!(status, 404);
    let (_, out, _) = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let stream = lines
        .iter()
        .find(|l| l["path"] == "/v1/chat/completions")
        .expect(&out);
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["upstream"], "cut");
    assert_eq!(stream["stream"], "failed", "{stream}");
    assert_eq!(
        stream["decision"], "fallback",
        "judged at its end: {stream}"
    );
    assert!(stream["duration_ms"].as_f64().is_some());
    assert!(
        humantime::parse_rfc3339(stream["time"].as_str().unwrap()).is_ok(),
        "{stream}"
    );
    let other = lines
        .iter()
        .find(|l| l["path"] == "/v1/nothing")
        .expect(&out);
    assert_eq!(
        (other["status"].as_u64(), other["stream"].as_str()),
        (Some(404), Some("-"))
    );
    assert!(
        !out.contains("QUERY-SECRET") && !out.contains(CALLER_KEY),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ok = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&ok)
        .await;
    let start = |settings: &str| {
        Proxy::start(
            &format!("{settings}\n{}", config(&[upstream("ok", &ok.uri(), "")])),
            &[],
            &[],
        )
    };
    // Headers begun and never finished.
    let stuck = |addr: String| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        c
    };

    // The bound: while A holds the one connection allowed (its header limit far off), B is
    // not served; once A goes, B is. No timing decides it: B cannot be served before A goes.
    let proxy = start("header_read_timeout = \"60s\"\nmax_connections = 1");
    let a = stuck(proxy.url.trim_start_matches("http://").to_owned()).await;
    let b = tokio::spawn({
        let url = proxy.url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(CHAT)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.is_finished(),
        "a second connection was served past max_connections = 1"
    );
    drop(a);
    let status = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("B answered once A closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    let _ = proxy.stop();

    // The header limit: a connection stuck in its headers is closed (an upper bound only:
    // 1 s set, 20 s allowed).
    let proxy = start("header_read_timeout = \"1s\"");
    let mut c = stuck(proxy.url.trim_start_matches("http://").to_owned()).await;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection stuck in its headers stays open"
    );
    let _ = proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_keys_admit_callers_and_are_never_forwarded() {
    const INBOUND: &str = "sk-INBOUND-proxy-5b1e";
    let open = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat_ok())
        .mount(&open)
        .await;
    let proxy = Proxy::start(
        &format!(
            "listen = \"127.0.0.1:0\"\n[auth]\nkeys_env = [\"LLM_GUARD_PROXY_INBOUND\"]\n\n{}",
            upstream("open", &open.uri(), "forward_caller_auth = true")
        ),
        &[("LLM_GUARD_PROXY_INBOUND", INBOUND)],
        &["--log"],
    );
    let send = |key: Option<&'static str>| {
        let url = format!("{}/v1/chat/completions", proxy.url);
        async move {
            let mut r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(CHAT);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send().await.unwrap()
        }
    };
    for (key, want) in [
        (None, 401),
        (Some("sk-INBOUND-proxy-5b1f"), 401),
        (Some(INBOUND), 200),
    ] {
        let r = send(key).await;
        assert_eq!(r.status().as_u16(), want, "{key:?}");
        if want == 401 {
            assert_eq!(header(r.headers(), "x-should-retry"), "false");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }
    }
    let to_open = seen(&open).await;
    assert_eq!(to_open.len(), 1, "refusals never reach an upstream");
    assert!(
        !format!("{:?}", to_open[0].headers).contains(INBOUND),
        "the inbound key is the proxy's, never forwarded"
    );
    // Health checks need no key.
    let health = reqwest::get(format!("{}/healthz", proxy.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (_, out, err) = proxy.stop();
    assert!(!out.contains(INBOUND) && !err.contains(INBOUND));
    assert_eq!(
        out.matches(" 401 ").count(),
        2,
        "refusals are logged: {out}"
    );
}
