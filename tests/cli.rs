//! `llm-guard` as a user runs it.
#![cfg(feature = "cli")]

use std::process::{Command, Output};

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
    "test_timestamp_utc",
    "pass",
];

fn smoke(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llm-guard"))
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
    assert!(!out.contains(KEY));
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
    assert!(!text(&o).contains(KEY));
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
