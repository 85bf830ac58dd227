//! What is not a row of the table: the mock gateway's faults on their own, with no failover in
//! front (a connection reset as the library's evidence names it, the context-length error's
//! envelope, and the stream faults as they look on the wire, read from a raw socket). A row is a
//! fault through a stack over a faulty primary and a healthy secondary; these check the fault
//! itself, so neither driver runs them.

use std::time::Duration;

use reqwest_llm_guard::evidence::{ApiSurface, TransportErrorKind};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::{EvidenceHandle, Guard};

use crate::common::{path, request_body};

// ---- 5. A reset before the headers, once.
#[tokio::test]
async fn the_mock_resets_the_connection_before_the_headers_with_an_rst() {
    let gateway = MockGateway::start_with(Scenario::ResetOnce, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client = Guard::new()
        .without_telemetry()
        .without_retry()
        .client(reqwest::Client::new());
    let handle = EvidenceHandle::new();
    let result = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .with_extension(handle.clone())
        .body(request_body(ApiSurface::ChatCompletions, false))
        .send()
        .await;
    assert!(result.is_err(), "no response at all");
    assert_eq!(
        handle.settled().await.transport_error,
        Some(TransportErrorKind::Reset),
        "a reset, not a clean close"
    );
    let again = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .body(request_body(ApiSurface::ChatCompletions, false))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "once per session");
    assert_eq!(gateway.requests(), 2);
}

// ---- 12. context_length_exceeded.

#[tokio::test]
async fn the_context_length_error_is_openais_envelope() {
    for (surface, param) in [
        (ApiSurface::ChatCompletions, "messages"),
        (ApiSurface::Responses, "input"),
    ] {
        let gateway =
            MockGateway::start_with(Scenario::ContextLengthExceeded, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}{}", gateway.url(), path(surface)))
            .body(request_body(surface, false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        assert_eq!(body["error"]["param"], param);
    }
}

// ---- On the wire: the faults look as documented, read from a raw socket.

/// Sends one raw HTTP/1.1 request for `scenario` and reads for up to `wait`: the bytes that
/// came, and whether the server closed the connection (else it was still open at the end).
/// `connection: close`, so that a complete answer ends with the close, not a keep-alive.
async fn raw(scenario: Scenario, body: &str, extra: &str, wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gateway = MockGateway::start_with(scenario, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn on_the_wire_the_stream_faults_are_what_they_say() {
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let long = Duration::from_secs(2);

    let (cut, closed) = raw(Scenario::StreamCut, stream, "", long).await;
    assert!(closed, "the connection is closed");
    assert_eq!(cut.matches(r#""content":"PASS "#).count(), 2, "{cut}");
    assert!(!cut.contains("finish_reason\":\"stop") && !cut.contains("[DONE]"));
    assert!(
        !cut.ends_with("0\r\n\r\n"),
        "no end of the chunked body: {cut}"
    );

    let (stall, closed) = raw(
        Scenario::StreamStall,
        stream,
        "x-mock-cut-after: 3\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(!closed, "the connection stays open");
    assert_eq!(stall.matches(r#""content":"PASS "#).count(), 3, "{stall}");

    let (bad, _) = raw(Scenario::StreamMalformedChunk, stream, "", long).await;
    let data: Vec<&str> = bad
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let broken = data
        .iter()
        .filter(|d| **d != "[DONE]" && serde_json::from_str::<serde_json::Value>(d).is_err())
        .count();
    assert_eq!(broken, 1, "{bad}");
    assert!(bad.contains("[DONE]"), "the rest is fine");

    let (open_ended, _) = raw(Scenario::StreamNoTerminator, stream, "", long).await;
    assert!(open_ended.contains(r#""finish_reason":"stop""#) && !open_ended.contains("[DONE]"));
    assert!(
        open_ended.ends_with("0\r\n\r\n"),
        "the body itself ends cleanly"
    );

    // The headers at once, the first event 10 s later.
    let (late, closed) = raw(
        Scenario::SlowFirstToken,
        stream,
        "x-mock-first-token-ms: 10000\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(!closed && late.starts_with("HTTP/1.1 200 OK"), "{late}");
    assert!(!late.contains("data:"), "{late}");

    let (hang, closed) = raw(Scenario::Hang, stream, "", Duration::from_millis(500)).await;
    assert!(!closed && hang.is_empty(), "{hang}");
}
