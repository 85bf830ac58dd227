//! Faults on the wire, each with its verdict: no panic, no hang, no lost byte.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{chunk, raw_server};
use futures_util::StreamExt;
use reqwest_llm_guard::evidence::StatusClass;
use reqwest_llm_guard::evidence::{FallbackDecision, ParseCheck, SkipReason, Violation};
use reqwest_llm_guard::inspect::{self, Inspect, VerdictHandle};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use tokio::io::AsyncWriteExt;

fn client(inspect: Inspect) -> ClientWithMiddleware {
    Guard::new()
        .without_telemetry()
        .without_retry()
        .with_inspect(inspect)
        .client(reqwest::Client::new())
}

async fn post(
    client: &ClientWithMiddleware,
    url: &str,
) -> Result<reqwest::Response, reqwest_middleware::Error> {
    client
        .post(url)
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
}

/// Reads a body to its end, whatever happens; the bytes that arrived and whether it failed.
async fn drain(response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut failed = false;
    let mut stream = response.bytes_stream();
    while let Some(c) = stream.next().await {
        if let Ok(b) = c {
            bytes.extend_from_slice(&b);
        } else {
            // A body may keep answering its error (reqwest's timeout does): one is enough.
            failed = true;
            break;
        }
    }
    (bytes, failed)
}

fn response_head(content_type: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra}\r\n").into_bytes()
}

#[tokio::test]
async fn a_reset_before_the_headers_is_a_transport_error_and_a_fallback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // SO_LINGER 0: the close is a reset, not a clean FIN. (Deprecated because the drop may
        // block the thread; with a zero linger it does not.)
        #[allow(deprecated)]
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket);
    });
    let handle = EvidenceHandle::new();
    let result = Guard::new()
        .without_telemetry()
        .client(reqwest::Client::new())
        .post(format!("http://{addr}/v1/chat/completions"))
        .with_extension(handle.clone())
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await;
    assert!(result.is_err());
    let evidence = handle.get().expect("settled before the call returned");
    assert_eq!(evidence.status_class, StatusClass::TransportError);
    assert_eq!(
        evidence.transport_error,
        Some(reqwest_llm_guard::evidence::TransportErrorKind::Reset),
        "a reset is told from other request errors"
    );
    assert_eq!(evidence.fallback_decision, FallbackDecision::Fallback);
}

#[tokio::test]
async fn a_disconnect_mid_body_keeps_the_bytes_and_fails_the_check() {
    let gateway = MockGateway::start().await.unwrap();
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .header("x-mock-scenario", Scenario::Drop.as_str())
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        inspect::verdict(&response).unwrap().violation,
        Some(Violation::BodyReadError)
    );
    let (bytes, failed) = drain(response).await;
    assert!(failed);
    assert!(
        !bytes.is_empty(),
        "the half that arrived reaches the caller"
    );
}

#[tokio::test]
async fn a_disconnect_mid_stream_fails_the_stream() {
    let gateway = MockGateway::start().await.unwrap();
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .header("x-mock-scenario", Scenario::Drop.as_str())
        .body(r#"{"model":"m","stream":true}"#)
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .cloned()
        .unwrap();
    let (bytes, failed) = drain(response).await;
    assert!(failed && !bytes.is_empty());
    assert_eq!(
        verdict.wait().await.violation,
        Some(Violation::BodyReadError)
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_stops_being_read_at_the_idle_timeout() {
    let gateway = MockGateway::start().await.unwrap();
    let inspect = Inspect::new().with_body_idle_timeout(Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let response = client(inspect)
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .header("x-mock-scenario", Scenario::Stall.as_str())
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    // The layer gave up at its deadline and handed the response back, not stuck in the read.
    assert!(started.elapsed() >= Duration::from_secs(5));
    let v = inspect::verdict(&response).unwrap();
    assert_eq!(v.violation, Some(Violation::BodyStalled));
    assert_eq!(
        Evidence::of(&response).fallback_decision,
        FallbackDecision::Fallback
    );
    // The bytes that came are still there for the caller, first in line.
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"id\""));
}

#[tokio::test]
async fn truncated_json_and_invalid_utf8_get_a_verdict() {
    let truncated =
        br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"mess"#.to_vec();
    let mut invalid =
        br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[],"model":""#.to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    for (body, want) in [
        (truncated, Violation::NotJson),
        (invalid, Violation::NotJson),
    ] {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let addr = raw_server(vec![[head.into_bytes(), body.clone()].concat()], None).await;
        let response = post(
            &client(Inspect::new()),
            &format!("http://{addr}/v1/chat/completions"),
        )
        .await
        .unwrap();
        assert_eq!(inspect::verdict(&response).unwrap().violation, Some(want));
        let (bytes, failed) = drain(response).await;
        assert!(!failed);
        assert_eq!(bytes, body, "byte-identical");
    }
}

#[tokio::test]
async fn a_200_mb_body_is_skipped_at_the_cap_and_passes_through_whole() {
    const SIZE: usize = 200 * 1024 * 1024;
    const PIECE: usize = 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
        // Chunked, so the layer cannot know the size from a header: it must stop at the cap.
        socket
            .write_all(&response_head(
                "application/json",
                "transfer-encoding: chunked\r\n",
            ))
            .await
            .unwrap();
        let piece = chunk(&vec![b' '; PIECE]);
        for _ in 0..SIZE / PIECE {
            if socket.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    let response = post(
        &client(Inspect::new()),
        &format!("http://{addr}/v1/chat/completions"),
    )
    .await
    .unwrap();
    let v = inspect::verdict(&response).unwrap();
    assert_eq!(
        (v.parse_check, v.skip_reason),
        (ParseCheck::Skipped, Some(SkipReason::TooLarge))
    );
    let mut total = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(c) = stream.next().await {
        total += c.unwrap().len();
    }
    assert_eq!(total, SIZE, "every byte reaches the caller");
}

#[tokio::test]
async fn json_nested_100000_deep_is_refused_without_a_stack_overflow() {
    let mut body = "[".repeat(100_000);
    body.push_str(&"]".repeat(100_000));
    for status in [200u16, 400] {
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let addr = raw_server(
            vec![[head.into_bytes(), body.clone().into_bytes()].concat()],
            None,
        )
        .await;
        let response = post(
            &client(Inspect::new()),
            &format!("http://{addr}/v1/chat/completions"),
        )
        .await
        .unwrap();
        let v = inspect::verdict(&response).unwrap();
        assert_eq!(v.parse_check, ParseCheck::Fail, "{status}");
        assert_eq!(response.bytes().await.unwrap().len(), body.len());
    }
}

/// A Chat stream as raw SSE text with `lines` between the events.
fn chat_events(padding: &str) -> Vec<u8> {
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
        )
    };
    let mut out = Vec::new();
    write!(out, "{padding}{}\n\n", chunk(r#"{"content":"hi"}"#, "null")).unwrap();
    write!(out, "{padding}{}\r\n\r\n", chunk("{}", r#""stop""#)).unwrap();
    write!(out, "{padding}data: [DONE]\r\n\n").unwrap();
    out
}

async fn stream_through(
    body: Vec<u8>,
    inspect: Inspect,
) -> (reqwest_llm_guard::contract::ContractVerdict, Vec<u8>) {
    let head = response_head("text/event-stream", "transfer-encoding: chunked\r\n");
    let mut raw = head;
    for piece in body.chunks(64 * 1024) {
        raw.extend(chunk(piece));
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let addr = raw_server(vec![raw], None).await;
    let response = post(
        &client(inspect),
        &format!("http://{addr}/v1/chat/completions"),
    )
    .await
    .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .cloned()
        .unwrap();
    let (bytes, failed) = drain(response).await;
    assert!(!failed);
    (verdict.wait().await, bytes)
}

#[tokio::test]
async fn a_hundred_thousand_comment_lines_pass_untouched() {
    let padding = ": keep-alive\n".repeat(100_000);
    let body = chat_events(&padding);
    let (v, bytes) = stream_through(body.clone(), Inspect::new()).await;
    assert_eq!(v.parse_check, ParseCheck::Pass);
    assert_eq!(v.facts.events, 3);
    assert_eq!(bytes, body);
}

#[tokio::test]
async fn a_50_mb_event_hits_the_event_cap_and_still_reaches_the_caller() {
    let huge = format!("data: {{\"pad\":\"{}\"}}\n\n", "x".repeat(50 * 1024 * 1024));
    let mut body = huge.into_bytes();
    body.extend(chat_events(""));
    let (v, bytes) = stream_through(body.clone(), Inspect::new()).await;
    assert_eq!(
        (v.parse_check, v.skip_reason),
        (ParseCheck::Skipped, Some(SkipReason::TooLarge))
    );
    assert_eq!(bytes.len(), body.len());
    assert!(bytes == body, "byte-identical");
}

#[tokio::test]
async fn mixed_crlf_and_lf_line_ends_pass() {
    let body = chat_events("");
    assert!(body.windows(2).any(|w| w == b"\r\n") && body.windows(2).any(|w| w == b"\n\n"));
    let (v, _) = stream_through(body, Inspect::new()).await;
    assert_eq!(v.parse_check, ParseCheck::Pass);
}

#[tokio::test]
async fn a_gzip_body_that_lies_about_its_length_gets_a_verdict() {
    let json = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}]}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json).unwrap();
    let gz = gz.finish().unwrap();
    // Claims more bytes than it sends, then closes: the decoder hits a truncated stream.
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        gz.len() + 100
    );
    let addr = raw_server(
        vec![[head.into_bytes(), gz[..gz.len() - 8].to_vec()].concat()],
        None,
    )
    .await;
    let gzip_client = Guard::new()
        .without_telemetry()
        .without_retry()
        .client(reqwest::Client::builder().gzip(true).build().unwrap());
    let response = post(&gzip_client, &format!("http://{addr}/v1/chat/completions"))
        .await
        .unwrap();
    let v = inspect::verdict(&response).unwrap();
    assert_eq!(v.parse_check, ParseCheck::Fail);
    assert!(
        matches!(
            v.violation,
            Some(Violation::BodyReadError | Violation::NotJson)
        ),
        "{:?}",
        v.violation
    );
    let (_, failed) = drain(response).await;
    assert!(failed, "the caller sees the same failure");
}

#[tokio::test]
async fn a_client_timeout_mid_stream_is_a_body_timeout_not_a_read_error() {
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let first = chunk(b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"PA\"},\"finish_reason\":null}]}\n\n");
    // The rest is held back for good: the client's own timeout ends the read.
    let (_keep, hold) = tokio::sync::oneshot::channel::<()>();
    let addr = raw_server(
        vec![[head.to_vec(), first].concat(), chunk(b"never")],
        Some(hold),
    )
    .await;
    let client = Guard::new().without_telemetry().without_retry().client(
        reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let response = post(&client, &format!("http://{addr}/v1/chat/completions"))
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .cloned()
        .unwrap();
    let (_, failed) = drain(response).await;
    assert!(failed);
    let v = verdict.wait().await;
    assert_eq!(v.violation, Some(Violation::BodyTimeout));
}
