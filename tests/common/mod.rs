//! Reading the recorded fixtures in ../shared/fixtures (never copied into this repo).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::case_sensitive_file_extension_comparisons
)]

use std::path::PathBuf;

use serde_json::Value;

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
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "SOURCES.md")
        .collect();
    names.sort();
    names
}
