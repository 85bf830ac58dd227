//! Shared test scaffolding: reading the recorded fixtures in ../shared/fixtures (never copied
//! into this repo), canned upstream answers and requests, raw HTTP on loopback, and (with the
//! `cli` feature) the `llm-guard` binary as a child process.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::case_sensitive_file_extension_comparisons
)]

#[cfg(feature = "cli")]
pub mod proxy;

use std::path::PathBuf;

use reqwest_llm_guard::evidence::ApiSurface;
use serde_json::Value;
use wiremock::ResponseTemplate;

/// The fixtures folder, or `None` (with a note) when it is absent outside CI. Under `CI=true` a
/// missing folder fails the test: CI must never pass by skipping the conformance suite.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing and CI=true: the fixtures are required",
        dir.display()
    );
    eprintln!(
        "skipped: {} not found (set CI=true to make this a failure)",
        dir.display()
    );
    None
}

/// One recorded HTTP exchange.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `file#index`
    pub name: String,
    pub method: http::Method,
    pub path: String,
    pub status: http::StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Every exchange in a fixture file: pydantic-ai cassettes (YAML), vercel chunk files (one
/// SSE `data:` payload per line; framed here as SSE exactly as recorded, with no `[DONE]`
/// added), raw `.sse` streams, a raw `.json` error body (a 400) and the `.html` page (served
/// here as a 403).
pub fn load(file: &str) -> Vec<Recorded> {
    let dir = fixtures_dir().expect("fixtures present");
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let one = |method: http::Method, p: &str, status: u16, ct: &str, body: Vec<u8>| Recorded {
        name: file.to_owned(),
        method,
        path: p.to_owned(),
        status: http::StatusCode::from_u16(status).unwrap(),
        content_type: Some(ct.to_owned()),
        body,
    };
    if file.ends_with(".chunks.jsonl") {
        let text = String::from_utf8(bytes).unwrap();
        let mut sse = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            sse.push_str("data: ");
            sse.push_str(line);
            sse.push_str("\n\n");
        }
        let p = if file.contains("responses") {
            "/v1/responses"
        } else {
            "/v1/chat/completions"
        };
        return vec![one(
            http::Method::POST,
            p,
            200,
            "text/event-stream",
            sse.into_bytes(),
        )];
    }
    if file.ends_with(".sse") {
        return vec![one(
            http::Method::POST,
            "/v1/chat/completions",
            200,
            "text/event-stream",
            bytes,
        )];
    }
    if file.ends_with(".json") {
        return vec![one(
            http::Method::POST,
            "/v1/chat/completions",
            400,
            "application/json",
            bytes,
        )];
    }
    if file.ends_with(".html") {
        return vec![one(
            http::Method::POST,
            "/v1/chat/completions",
            403,
            "text/html",
            bytes,
        )];
    }
    let doc: Value = serde_norway::from_slice(&bytes).unwrap();
    let interactions = doc["interactions"].as_array().unwrap();
    interactions
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let req = &it["request"];
            let resp = &it["response"];
            let uri = req["uri"].as_str().unwrap();
            let path = uri
                .splitn(4, '/')
                .nth(3)
                .map_or("/".to_owned(), |p| format!("/{p}"));
            let content_type = resp["headers"]["content-type"][0]
                .as_str()
                .map(str::to_owned);
            let body = match resp["body"]["string"].as_str() {
                Some(s) => s.as_bytes().to_vec(),
                None => serde_json::to_vec(&resp["parsed_body"]).unwrap(),
            };
            Recorded {
                name: format!("{file}#{i}"),
                method: req["method"].as_str().unwrap().parse().unwrap(),
                path,
                status: http::StatusCode::from_u16(
                    u16::try_from(resp["status"]["code"].as_u64().unwrap()).unwrap(),
                )
                .unwrap(),
                content_type,
                body,
            }
        })
        .collect()
}

/// Every fixture file name.
pub fn all_files() -> Vec<String> {
    let Some(dir) = fixtures_dir() else {
        return Vec::new();
    };
    // Provider recordings only: `waf/` holds the WAF captures, read by their own test.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != "SOURCES.md")
        .collect();
    names.sort();
    names
}

// ---- Canned upstream answers.

pub const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

pub fn chat_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json")
}

pub fn responses_ok(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(
            r#"{{"id":"{id}","object":"response","created_at":1,"status":"completed","model":"gpt-5","output":[{{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"PASS","annotations":[]}}]}}],"usage":{{"input_tokens":3,"output_tokens":1,"total_tokens":4}}}}"#
        ),
        "application/json",
    )
}

/// A chat stream's first event (the role), a content event and the last (stop, then `[DONE]`).
pub const ROLE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
pub const TEXT: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"PA\"},\"finish_reason\":null}]}\n\n";
pub const STOP: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

// ---- Requests of either surface.

pub const SURFACES: [ApiSurface; 2] = [ApiSurface::ChatCompletions, ApiSurface::Responses];

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_default()
}

/// A plain request of this surface: `messages` for Chat, `input` for Responses.
pub fn request_body(surface: ApiSurface, stream: bool) -> String {
    match surface {
        ApiSurface::Responses => {
            format!(r#"{{"model":"gpt-5","input":"hi","stream":{stream}}}"#)
        }
        _ => format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
        ),
    }
}

pub fn path(surface: ApiSurface) -> &'static str {
    match surface {
        ApiSurface::Responses => "/v1/responses",
        _ => "/v1/chat/completions",
    }
}

// ---- Raw HTTP on loopback, for what wiremock cannot do: hold a stream back, cut a connection.

/// One HTTP/1.1 chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    [
        format!("{:x}\r\n", data.len()).into_bytes(),
        data.to_vec(),
        b"\r\n".to_vec(),
    ]
    .concat()
}

/// A 200 with a chunked body, ended or not.
pub fn chunked_response(content_type: &str, chunks: &[&[u8]], end: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        out.extend(chunk(c));
    }
    if end {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// Serves one connection: reads the request head, writes `parts[0]`, waits for `go` (if
/// given), writes the rest, then closes.
pub async fn raw_server(
    parts: Vec<Vec<u8>>,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let mut go = go;
        for (i, part) in parts.iter().enumerate() {
            if i == 1
                && let Some(go) = go.take()
            {
                let _ = go.await;
            }
            if socket.write_all(part).await.is_err() {
                return;
            }
            let _ = socket.flush().await;
        }
        let _ = socket.shutdown().await;
    });
    addr
}
