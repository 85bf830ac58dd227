//! `llm-guard` as a user runs it.
#![cfg(feature = "cli")]

mod common;

use std::process::{Command, Output};

use common::proxy::llm_guard;
use reqwest_llm_guard::mock::{MockGateway, Scenario};

const KEY: &str = "sk-CANARY-cli-9d1e";
const FIELDS: &[&str] = &[
    "run_id",
    "api_surface",
    "request_profile",
    "status_class",
    "parse_check",
    "fallback_decision",
    "retry_count",
    "credential_logged",
    "body_redacted",
    "support_packet_ready",
    "operator_note",
    "http_status",
    "finish_reason_present",
    "content_non_null",
    "error_shape_valid_on_4xx",
    "endpoint_host",
    "model",
    "waf_vendor",
    "waf_kind",
    "waf_reference",
    "error_type",
    "error_code",
    "test_timestamp_utc",
    "pass",
];

fn smoke(args: &[&str]) -> Output {
    llm_guard()
        .arg("smoke")
        .args(args)
        .env("DRILL_KEY", KEY)
        .output()
        .expect("llm-guard runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[test]
fn smoke_against_the_mock_gateway_passes_and_prints_every_field() {
    for surface in ["chat", "responses"] {
        let o = smoke(&["--surface", surface, "--api-key-env", "DRILL_KEY"]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        for f in FIELDS {
            field(&out, f);
        }
        assert_eq!(field(&out, "fallback_decision"), "promote");
        assert_eq!(field(&out, "pass"), "true");
        assert_eq!(field(&out, "credential_logged"), "false");
        assert_eq!(field(&out, "error_shape_valid_on_4xx"), "true");
        assert_eq!(field(&out, "http_status"), "200");
        assert_eq!(field(&out, "endpoint_host"), "127.0.0.1");
        assert_eq!(field(&out, "model"), "gpt-4o-mini");
        for empty in [
            "waf_vendor",
            "waf_kind",
            "waf_reference",
            "error_type",
            "error_code",
        ] {
            assert_eq!(field(&out, empty), "", "{empty}");
        }
        assert!(!out.contains(KEY), "the key leaked: {out}");
        assert!(
            !out.contains("Reply with exactly"),
            "the prompt leaked: {out}"
        );
    }
}

#[test]
fn a_waf_page_on_the_happy_path_holds_and_fails() {
    let o = smoke(&[
        "--mock-scenario",
        "waf_cloudflare",
        "--api-key-env",
        "DRILL_KEY",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "fallback_decision"), "hold");
    assert_eq!(field(&out, "pass"), "false");
    assert!(field(&out, "operator_note").contains("cloudflare"));
    assert_eq!(field(&out, "waf_vendor"), "cloudflare");
    assert_eq!(field(&out, "waf_kind"), "block");
    let reference = field(&out, "waf_reference");
    assert!(
        reference.len() == 16 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
        "a bare Ray ID: {out}"
    );
    assert_eq!(field(&out, "support_packet_ready"), "true");
    assert!(!out.contains(KEY));
}

#[test]
fn a_rejected_key_holds_with_the_error_code_but_never_its_message() {
    let o = smoke(&[
        "--mock-scenario",
        "unauthorized",
        "--api-key-env",
        "DRILL_KEY",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "fallback_decision"), "hold");
    assert_eq!(field(&out, "http_status"), "401");
    assert_eq!(field(&out, "error_type"), "invalid_request_error");
    assert_eq!(field(&out, "error_code"), "invalid_api_key");
    assert!(field(&out, "operator_note").contains("401 invalid_api_key"));
    assert!(!out.contains("Incorrect API key"), "the message: {out}");
}

#[test]
fn json_output_carries_the_same_record() {
    let o = smoke(&["--json", "--api-key-env", "DRILL_KEY"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for f in FIELDS {
        assert!(v.get(f).is_some(), "no {f} in {v}");
    }
    assert_eq!(v["pass"], true);
    assert_eq!(v["http_status"], 200);
    assert_eq!(v["api_surface"], "chat_completions");
    assert_eq!(v["request_profile"], "happy_path+missing_model");
    assert_eq!(v["status_class"], "2xx");
    assert_eq!(v["parse_check"], "pass");
    assert_eq!(v["fallback_decision"], "promote");
    assert_eq!(v["waf_vendor"], serde_json::Value::Null);
    assert!(!text(&o).contains(KEY));
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn no_response_leaves_the_status_empty_not_zero() {
    let base = format!("http://127.0.0.1:{}/v1", closed_port());
    let o = smoke(&["--base-url", &base, "--api-key-env", "DRILL_KEY"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "http_status"), "");
    assert_eq!(field(&out, "status_class"), "transport_error");
    assert_eq!(field(&out, "fallback_decision"), "rollback");
    assert!(field(&out, "operator_note").contains("no response arrived"));
    let o = smoke(&["--base-url", &base, "--api-key-env", "DRILL_KEY", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["http_status"], serde_json::Value::Null);
}

#[test]
fn timeout_is_a_flag_shown_in_help() {
    let help = llm_guard().args(["smoke", "--help"]).output().unwrap();
    let help = text(&help);
    assert!(help.contains("--timeout"), "{help}");
    assert!(help.contains("60s"), "the default: {help}");
    // The mock's slow answer waits 300 ms before its headers.
    let o = smoke(&[
        "--mock-scenario",
        "slow",
        "--timeout",
        "50ms",
        "--api-key-env",
        "DRILL_KEY",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "status_class"), "transport_error");
    assert_eq!(field(&out, "fallback_decision"), "rollback");
    let o = smoke(&["--mock-scenario", "slow", "--timeout", "2s"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = smoke(&["--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_host_is_the_host_alone() {
    let gateway = MockGateway::start_with(Scenario::Ok, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!(
        "http://drill:sk-userinfo-secret@{}/v1?key=sk-query-secret",
        gateway.addr()
    );
    let o = tokio::task::spawn_blocking(move || {
        smoke(&["--base-url", &base, "--api-key-env", "DRILL_KEY"])
    })
    .await
    .unwrap();
    let out = text(&o);
    assert_eq!(field(&out, "endpoint_host"), "127.0.0.1");
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn a_base_url_that_is_not_one_is_a_clear_error_without_the_url() {
    let o = smoke(&[
        "--base-url",
        "api.example.com/v1?key=sk-query-secret",
        "--api-key-env",
        "DRILL_KEY",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("base URL"), "{out}");
    assert!(!out.contains("sk-query-secret"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_rate_limit_rolls_back_like_an_exhausted_429() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let edge = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("server", "cloudflare")
                .insert_header("cf-ray", "9d8e7f6a5b4c3d2e-AMS")
                .insert_header("retry-after", "0")
                .insert_header("content-type", "text/plain")
                .set_body_string("error code: 1015"),
        )
        .mount(&edge)
        .await;
    let base = format!("{}/v1", edge.uri());
    let o = tokio::task::spawn_blocking(move || {
        smoke(&["--base-url", &base, "--api-key-env", "DRILL_KEY"])
    })
    .await
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "waf_kind"), "rate_limit");
    assert_eq!(field(&out, "waf_reference"), "9d8e7f6a5b4c3d2e");
    assert_eq!(field(&out, "fallback_decision"), "rollback");
    assert!(
        field(&out, "operator_note").contains("rate-limited"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn smoke_exports_its_spans_through_otlp_only_when_the_endpoint_is_set() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let collector = MockServer::start().await;
    for p in ["/v1/traces", "/v1/metrics"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200))
            .mount(&collector)
            .await;
    }
    let uri = collector.uri();
    let o = tokio::task::spawn_blocking(move || {
        llm_guard()
            .args(["smoke", "--api-key-env", "DRILL_KEY"])
            .env("DRILL_KEY", KEY)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &uri)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_SERVICE_NAME", "llm-guard-smoke")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let requests = collector.received_requests().await.unwrap();
    let traces: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .collect();
    assert!(!traces.is_empty(), "no trace export before exit");
    let sent: Vec<u8> = traces.iter().flat_map(|r| r.body.clone()).collect();
    let contains = |needle: &str| memchr::memmem::find(&sent, needle.as_bytes()).is_some();
    assert!(contains("chat gpt-4o-mini"), "the call span");
    assert!(contains("llm-guard-smoke"), "the service name");
    assert!(!contains(KEY), "the key went out");
    assert!(
        requests.iter().any(|r| r.url.path() == "/v1/metrics"),
        "no metric export before exit"
    );

    // Without OTEL_EXPORTER_OTLP_ENDPOINT, nothing goes out, even to a signal's own endpoint.
    let quiet = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&quiet)
        .await;
    let traces_endpoint = format!("{}/v1/traces", quiet.uri());
    let o = tokio::task::spawn_blocking(move || {
        llm_guard()
            .args(["smoke", "--api-key-env", "DRILL_KEY"])
            .env("DRILL_KEY", KEY)
            .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_endpoint)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(quiet.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_endpoint_given_by_url_rolls_back() {
    let gateway = MockGateway::start_with(Scenario::ServerError, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("{}/v1", gateway.url());
    let o = tokio::task::spawn_blocking(move || {
        smoke(&["--base-url", &base, "--api-key-env", "DRILL_KEY"])
    })
    .await
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "fallback_decision"), "rollback");
    assert_eq!(field(&out, "http_status"), "500");
    assert!(!out.contains(KEY));
}

#[test]
fn a_missing_key_for_a_real_endpoint_is_a_clear_error() {
    let o = smoke(&[
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--api-key-env",
        "LLM_GUARD_NO_SUCH_VAR",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("LLM_GUARD_NO_SUCH_VAR"));
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_guard_mock_serves_the_mock_gateway() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-guard"))
        .args(["mock", "--port", "0", "--scenario", "waf_akamai"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let http = reqwest::Client::new();
    let walled = http
        .post(format!("{url}/v1/chat/completions"))
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(walled.status(), 403, "the default scenario");
    let ok = http
        .post(format!("{url}/v1/responses"))
        .header("x-mock-scenario", "ok")
        .body(r#"{"model":"m","input":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    child.kill().unwrap();
    let _ = child.wait();
}

// `llm-guard check`: saved responses judged offline.

/// A file in this test target's scratch directory.
fn saved(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-check");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&file, bytes).unwrap();
    file
}

fn check(args: &[&str]) -> Output {
    llm_guard()
        .arg("check")
        .args(args)
        .output()
        .expect("llm-guard runs")
}

fn check_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = llm_guard()
        .arg("check")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

const CHAT_OK: &str = r#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

#[test]
fn check_names_a_cloudflare_challenge_and_never_echoes_credentials() {
    let page = "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head>\
        <body><noscript>Enable JavaScript and cookies to continue</noscript>\
        <script>window._cf_chl_opt={cRay: '8f1c2d3e4a5b6c7d'};</script></body></html>";
    let raw = format!(
        "HTTP/2 403\r\ndate: Mon, 01 Jun 2026 10:00:00 GMT\r\ncontent-type: text/html; charset=UTF-8\r\n\
         cf-mitigated: challenge\r\nserver: cloudflare\r\ncf-ray: 8f1c2d3e4a5b6c7d-FRA\r\n\
         set-cookie: __cf_bm=sk-cookie-secret; path=/\r\nauthorization: Bearer sk-auth-secret\r\n\
         api-key: sk-azure-secret\r\n\r\n{page}"
    );
    let file = saved("challenge.txt", raw.as_bytes());
    let o = check(&[file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "http_status"), "403");
    assert_eq!(field(&out, "status_class"), "4xx");
    assert_eq!(field(&out, "waf_vendor"), "cloudflare");
    assert_eq!(field(&out, "waf_kind"), "challenge");
    assert_eq!(field(&out, "waf_reference"), "8f1c2d3e4a5b6c7d");
    assert_eq!(field(&out, "waf_location"), "FRA");
    assert_eq!(field(&out, "parse_check"), "fail");
    assert_eq!(field(&out, "violation"), "html_body");
    assert_eq!(field(&out, "api_surface"), "chat_completions");
    assert_eq!(field(&out, "api_surface_source"), "assumed");
    assert_eq!(field(&out, "fallback_decision"), "hold");
    assert!(!out.contains("secret"), "a credential was echoed: {out}");
}

#[test]
fn check_passes_a_chat_answer_at_the_end_of_a_redirect_chain() {
    let raw = format!(
        "HTTP/1.1 301 Moved Permanently\nlocation: https://api.example.com/v1/chat/completions\n\n\
         HTTP/1.1 200 OK\ncontent-type: application/json\nx-request-id: req_1\n\n{CHAT_OK}\n"
    );
    let file = saved("chat-ok.txt", raw.as_bytes());
    let o = check(&[file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(field(&out, "heads"), "2");
    assert_eq!(field(&out, "http_status"), "200");
    assert_eq!(field(&out, "api_surface"), "chat_completions");
    assert_eq!(field(&out, "api_surface_source"), "guessed");
    assert_eq!(field(&out, "parse_check"), "pass");
    assert_eq!(field(&out, "violation"), "");
    assert_eq!(field(&out, "warnings"), "");
    assert_eq!(field(&out, "response_id"), "chatcmpl-9");
    assert_eq!(field(&out, "finish_reasons"), "stop");
    assert_eq!(field(&out, "waf_vendor"), "");
    assert_eq!(field(&out, "fallback_decision"), "none");
}

#[test]
fn check_normalises_an_error_envelope_given_as_a_body() {
    let body = r#"{"error":{"message":"you must provide a model parameter","type":"invalid_request_error","param":"model","code":"missing_required_parameter"}}"#;
    let file = saved("error-400.json", body.as_bytes());
    let args = [
        "--status",
        "400",
        "--header",
        "content-type: application/json",
        "--header",
        "x-request-id: req_2",
        "--json",
        file.to_str().unwrap(),
    ];
    let o = check(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["http_status"], 400);
    assert_eq!(v["heads"], 0);
    assert_eq!(v["status_class"], "4xx");
    assert_eq!(v["parse_check"], "pass");
    assert_eq!(v["error_shape"], "envelope");
    assert_eq!(v["error_type"], "invalid_request_error");
    assert_eq!(v["error_code"], "missing_required_parameter");
    assert_eq!(v["error_param"], "model");
    assert_eq!(v["error_status"], 400);
    assert_eq!(v["error_message"], "you must provide a model parameter");
    assert_eq!(v["waf_vendor"], serde_json::Value::Null);
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(v["fallback_decision"], "hold");
}

#[test]
fn check_finds_a_truncated_chat_stream() {
    let dump = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"PA\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    );
    let file = saved("truncated.sse", dump.as_bytes());
    let o = check(&["--stream", file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(field(&out, "http_status"), "200");
    assert_eq!(field(&out, "api_surface"), "chat_completions");
    assert_eq!(field(&out, "api_surface_source"), "guessed");
    assert_eq!(field(&out, "events"), "2");
    assert_eq!(field(&out, "parse_check"), "fail");
    assert_eq!(field(&out, "violation"), "stream_truncated");
    assert_eq!(field(&out, "fallback_decision"), "fallback");
    // The same dump saved with its head: the content-type says it is a stream.
    let raw = format!("HTTP/2 200\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\n{dump}");
    let o = check_stdin(&["-"], raw.as_bytes());
    assert_eq!(field(&text(&o), "violation"), "stream_truncated");
}

#[test]
fn check_reads_stdin_and_takes_the_surface_it_is_given() {
    let body = r#"{"id":"resp_1","object":"response","created_at":1,"model":"gpt-4.1-mini","status":"completed","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"PASS","annotations":[]}]}]}"#;
    let raw = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{body}");
    let o = check_stdin(&["-", "--surface", "responses"], raw.as_bytes());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(field(&out, "api_surface"), "responses");
    assert_eq!(field(&out, "api_surface_source"), "given");
    assert_eq!(field(&out, "parse_check"), "pass");
    assert_eq!(field(&out, "response_model"), "gpt-4.1-mini");
    // Checked as Chat, the same body breaks that contract.
    let o = check_stdin(&["-", "--surface", "chat"], raw.as_bytes());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(field(&text(&o), "fallback_decision"), "fallback");
}

#[test]
fn check_refuses_unusable_input_with_exit_2_and_a_reason() {
    let missing = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-response.txt");
    let o = check(&[missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no-such-response.txt"), "{}", text(&o));

    let body_alone = saved("body-alone.json", CHAT_OK.as_bytes());
    let o = check(&[body_alone.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--status"), "{}", text(&o));

    let bad_header = b"HTTP/1.1 401 Unauthorized\r\nAuthorization Bearer sk-line-secret\r\n\r\n{}";
    let o = check_stdin(&["-"], bad_header);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("line 2"), "{out}");
    assert!(!out.contains("sk-line-secret"), "{out}");
    assert!(o.stdout.is_empty(), "no evidence for unusable input");

    let o = check_stdin(
        &["-", "--header", "cookie: sk-flag-secret"],
        b"HTTP/2 200\r\n\r\n{}",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!text(&o).contains("sk-flag-secret"));

    let o = check(&["--status", "1000", body_alone.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));

    let mut gzip = b"HTTP/2 200\r\ncontent-encoding: gzip\r\n\r\n".to_vec();
    gzip.extend_from_slice(&[0x1f, 0x8b, 0x08, 0x00, 0x00]);
    let o = check_stdin(&["-"], &gzip);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--compressed"), "{}", text(&o));
}

/// Real recorded walls and ordinary pages (../shared/fixtures/waf/, format in its README), saved
/// as `curl -i` would and judged by the command: the verdict the inspect layer's own corpus test
/// expects. Read at run time, never copied here; skipped with a note when absent outside CI.
#[test]
fn check_judges_the_recorded_waf_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/waf");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the WAF fixtures {} are missing in CI: {e}", dir.display())
        }
        Err(e) => {
            eprintln!(
                "skipped: the WAF fixtures {} are not readable: {e}",
                dir.display()
            );
            return;
        }
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let (mut walls, mut ordinary) = (0, 0);
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let split = memchr::memmem::find(&bytes, b"\n---\n").expect("a `---` line");
        let head = std::str::from_utf8(&bytes[..split]).unwrap();
        let body = &bytes[split + 5..];
        let line = |key: &'static str| {
            head.lines()
                .filter_map(move |l| l.strip_prefix(key))
                .map(str::trim)
        };
        let status = line("STATUS:").next().expect("a STATUS line");
        let expect = line("EXPECT:").next().expect("an EXPECT line");
        if expect.starts_with("ambiguous") {
            continue;
        }
        // What a faithful classifier may report: `vendor/kind` pairs, or none.
        let accepted: Vec<(String, String)> = expect
            .split(" or ")
            .filter_map(|alt| {
                let alt = alt.split_whitespace().next()?;
                let (vendor, kind) = alt.split_once('/')?;
                Some((vendor.to_owned(), kind.to_owned()))
            })
            .collect();
        let mut raw = format!("HTTP/1.1 {status}\r\n").into_bytes();
        for header in line("HEADER:") {
            raw.extend_from_slice(header.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        let o = check_stdin(&["-", "--json"], &raw);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{name}: {}",
            text(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", text(&o)));
        let got = (v["waf_vendor"].as_str(), v["waf_kind"].as_str());
        if accepted.is_empty() {
            assert!(expect.starts_with("none"), "{name}: EXPECT {expect}");
            assert_eq!(got, (None, None), "{name}: an ordinary page");
            ordinary += 1;
        } else {
            assert!(
                accepted
                    .iter()
                    .any(|(vendor, kind)| got == (Some(vendor.as_str()), Some(kind.as_str()))),
                "{name}: got {got:?}, EXPECT {expect}"
            );
            let decision = if got.1 == Some("rate_limit") {
                "fallback"
            } else {
                "hold"
            };
            assert_eq!(v["fallback_decision"], decision, "{name}");
            walls += 1;
        }
    }
    assert!(
        walls >= 20 && ordinary >= 60,
        "{walls} walls, {ordinary} ordinary pages read"
    );
    eprintln!("WAF corpus through llm-guard check: {walls} walls, {ordinary} ordinary pages");
}

/// One response to judge both ways: its status, headers (name, value) and body.
struct Judged {
    name: String,
    surface: reqwest_llm_guard::evidence::ApiSurface,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Every shared fixture as a response: the WAF corpus (status, headers, body as recorded)
/// and the provider recordings (status, content type, body).
fn every_fixture() -> Vec<Judged> {
    use reqwest_llm_guard::evidence::ApiSurface;
    let Some(dir) = common::fixtures_dir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut waf: Vec<_> = std::fs::read_dir(dir.join("waf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    waf.sort();
    for path in waf {
        let bytes = std::fs::read(&path).unwrap();
        let split = memchr::memmem::find(&bytes, b"\n---\n").expect("a `---` line");
        let head = std::str::from_utf8(&bytes[..split]).unwrap();
        let status = head
            .lines()
            .find_map(|l| l.strip_prefix("STATUS:"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(403);
        let headers = head
            .lines()
            .filter_map(|l| l.strip_prefix("HEADER:"))
            .filter_map(|h| h.trim().split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        out.push(Judged {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            surface: ApiSurface::ChatCompletions,
            status,
            headers,
            body: bytes[split + 5..].to_vec(),
        });
    }
    for file in common::all_files() {
        for r in common::load(&file) {
            out.push(Judged {
                surface: if r.path.contains("/responses") {
                    ApiSurface::Responses
                } else {
                    ApiSurface::ChatCompletions
                },
                name: r.name,
                status: r.status.as_u16(),
                headers: r
                    .content_type
                    .map(|ct| vec![("content-type".to_owned(), ct)])
                    .unwrap_or_default(),
                body: r.body,
            });
        }
    }
    out
}

/// `llm-guard check` promises the evidence a live call would leave: for every shared fixture,
/// the live inspect layer (the response served on loopback) and the command (the same response
/// saved as `curl -i` would) give the same verdict and the same wall.
#[tokio::test]
async fn check_and_the_live_inspect_layer_agree_on_every_fixture() {
    use reqwest_llm_guard::evidence::{ApiSurface, SkipReason, Violation, WafVerdict};
    use reqwest_llm_guard::inspect::{Inspect, VerdictHandle};
    let fixtures = every_fixture();
    if fixtures.is_empty() {
        return;
    }
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(Inspect::new())
        .build();
    for f in &fixtures {
        // Framing is the server's: the recorded framing and encodings are not replayed.
        let kept: Vec<&(String, String)> = f
            .headers
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.to_ascii_lowercase().as_str(),
                    "content-length" | "transfer-encoding" | "content-encoding" | "connection"
                )
            })
            .collect();
        let mut head = format!("HTTP/1.1 {}\r\n", f.status);
        for (n, v) in &kept {
            head.push_str(n);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        let mut saved = head.clone().into_bytes();
        saved.extend_from_slice(b"\r\n");
        saved.extend_from_slice(&f.body);
        let mut live = head.into_bytes();
        live.extend_from_slice(format!("content-length: {}\r\n\r\n", f.body.len()).as_bytes());
        live.extend_from_slice(&f.body);

        let addr = common::raw_server(vec![live], None).await;
        let path = if f.surface == ApiSurface::Responses {
            "/v1/responses"
        } else {
            "/v1/chat/completions"
        };
        let response = client
            .post(format!("http://{addr}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let wall = response.extensions().get::<WafVerdict>().cloned();
        let stream = response.extensions().get::<VerdictHandle>().cloned();
        let whole = reqwest_llm_guard::inspect::verdict(&response);
        let _ = response.bytes().await;
        let verdict = match stream {
            Some(handle) => handle.wait().await,
            None => whole.expect("a verdict"),
        };

        let surface = if f.surface == ApiSurface::Responses {
            "responses"
        } else {
            "chat"
        };
        let o = check_stdin(&["-", "--json", "--surface", surface], &saved);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", f.name, text(&o)));
        let name = &f.name;
        assert_eq!(v["parse_check"], verdict.parse_check.as_str(), "{name}");
        assert_eq!(
            v["violation"].as_str(),
            verdict.violation.map(Violation::as_str),
            "{name}"
        );
        assert_eq!(
            v["skip_reason"].as_str(),
            verdict.skip_reason.map(SkipReason::as_str),
            "{name}"
        );
        assert_eq!(
            v["waf_vendor"].as_str(),
            wall.as_ref().map(|w| w.vendor.as_str()),
            "{name}"
        );
        assert_eq!(
            v["waf_kind"].as_str(),
            wall.as_ref().map(|w| w.kind.as_str()),
            "{name}"
        );
        let warnings: Vec<String> = verdict.warnings.iter().map(|w| w.to_string()).collect();
        let offline: Vec<String> = v["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(offline, warnings, "{name}");
    }
    assert!(fixtures.len() > 100, "{} fixtures judged", fixtures.len());
    eprintln!(
        "{} fixtures: check and the live inspect layer agree",
        fixtures.len()
    );
}
