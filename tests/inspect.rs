//! The inspect layer over real HTTP on 127.0.0.1: wiremock for recorded exchanges, a raw TCP
//! server for streams that must not be buffered and connections that fail mid-body.

mod common;

use common::{chunk, chunked_response, raw_server};

use futures_util::StreamExt;
use reqwest_llm_guard::contract::{ContractVerdict, Mode, check_body};
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck, SkipReason, Violation};
use reqwest_llm_guard::inspect::{Inspect, VerdictHandle};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::sync::oneshot;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(inspect: Inspect) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(inspect)
        .build()
}

const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"PASS","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

const CHAT_STREAM: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";

/// Every recorded exchange, served by wiremock and read through the layer: the caller reads
/// the server's bytes unchanged, and the verdict in the extensions is the checker's.
#[tokio::test]
async fn recorded_exchanges_pass_through_byte_identical_with_their_verdict() {
    let files = common::all_files();
    if files.is_empty() {
        return;
    }
    let client = client(Inspect::new());
    let mut exchanges = 0;
    for file in &files {
        for r in common::load(file) {
            let server = MockServer::start().await;
            let mut template = ResponseTemplate::new(r.status.as_u16()).set_body_raw(
                r.body.clone(),
                r.content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
            );
            if let Some(ct) = &r.content_type {
                template = template.insert_header("content-type", ct.as_str());
            }
            Mock::given(path(r.path.split('?').next().unwrap()))
                .respond_with(template)
                .expect(1)
                .mount(&server)
                .await;
            let url = format!("{}{}", server.uri(), r.path);
            let response = client
                .request(r.method.clone(), &url)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), r.status, "{}", r.name);
            assert_eq!(response.url().as_str(), url, "{}", r.name);
            let surface = *response.extensions().get::<ApiSurface>().unwrap();
            let buffered = response.extensions().get::<ContractVerdict>().cloned();
            let streamed = response.extensions().get::<VerdictHandle>().cloned();
            let body = response.bytes().await.unwrap();
            assert_eq!(&body[..], &r.body[..], "{}: body changed", r.name);
            let verdict = match (buffered, streamed) {
                (Some(v), None) => v,
                (None, Some(s)) => s.get().expect("verdict ready once the body is read"),
                other => panic!("{}: {other:?}", r.name),
            };
            let want = check_body(
                surface,
                r.status,
                r.content_type.as_deref(),
                &r.body,
                Mode::Compat,
            );
            assert_eq!(verdict, want, "{}", r.name);
            exchanges += 1;
        }
    }
    assert!(exchanges >= 26);
}

#[tokio::test]
async fn a_non_streaming_verdict_is_in_the_extensions() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/api/v1/chat/completions", server.uri()))
        .body("{}")
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.parse_check, ParseCheck::Pass);
    assert_eq!(v.facts.response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(v.facts.finish_reasons, ["stop"]);
    assert_eq!(response.text().await.unwrap(), CHAT_OK);
}

#[tokio::test]
async fn html_on_200_fails_and_is_handed_back_unchanged() {
    let page =
        "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body></body></html>";
    let server = MockServer::start().await;
    Mock::given(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(page, "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/responses", server.uri()))
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.violation, Some(Violation::HtmlBody));
    assert_eq!(response.text().await.unwrap(), page);
}

#[tokio::test]
async fn other_surfaces_are_skipped_and_untouched() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("not json at all", "text/plain"))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/embeddings", server.uri()))
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.parse_check, ParseCheck::Skipped);
    assert_eq!(v.skip_reason, Some(SkipReason::OtherSurface));
    assert_eq!(response.text().await.unwrap(), "not json at all");
}

#[tokio::test]
async fn a_surface_set_on_the_request_overrides_the_path() {
    let server = MockServer::start().await;
    Mock::given(path("/llm/generate"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(r#"{"ok":true}"#, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/llm/generate", server.uri()))
        .with_extension(ApiSurface::ChatCompletions)
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.violation, Some(Violation::MissingField));
}

#[tokio::test]
async fn a_body_over_the_cap_is_skipped_and_handed_back_whole() {
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(10_000));
    // With a Content-Length the layer does not read at all.
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big.clone(), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let inspect = Inspect::new().with_max_body_bytes(1024);
    let response = client(inspect.clone())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.skip_reason, Some(SkipReason::TooLarge));
    assert_eq!(response.text().await.unwrap(), big);

    // Chunked, with no length: read up to the cap, then the rest streams on.
    let chunked = chunked_response("application/json", &[big.as_bytes()], true);
    let addr = raw_server(vec![chunked], None).await;
    let response = client(inspect)
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.skip_reason, Some(SkipReason::TooLarge));
    assert_eq!(response.text().await.unwrap(), big);
}

#[tokio::test]
async fn a_stream_is_passed_on_as_it_arrives_and_judged_at_its_end() {
    let (first, rest) = CHAT_STREAM.split_at(CHAT_STREAM.find("\n\n").unwrap() + 2);
    let (go_tx, go_rx) = oneshot::channel();
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    let parts = vec![
        [head, chunk(first.as_bytes())].concat(),
        [chunk(rest.as_bytes()), b"0\r\n\r\n".to_vec()].concat(),
    ];
    let addr = raw_server(parts, Some(go_rx)).await;
    let response = client(Inspect::new())
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    assert!(response.extensions().get::<ContractVerdict>().is_none());
    let mut stream = response.bytes_stream();
    // The server holds the rest back until we have the first event: nothing is buffered.
    let got = stream.next().await.unwrap().unwrap();
    assert_eq!(&got[..], first.as_bytes());
    assert!(!verdict.is_ready());
    assert!(verdict.first_chunk_at().is_some());
    go_tx.send(()).unwrap();
    let mut all = got.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(all, CHAT_STREAM.as_bytes());
    let v = verdict.wait().await;
    assert_eq!(v.parse_check, ParseCheck::Pass);
    assert_eq!(v.facts.finish_reasons, ["stop"]);
    assert_eq!(v.facts.events, 3);
}

#[tokio::test]
async fn a_stream_dropped_early_is_cancelled_and_callbacks_still_run() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_STREAM, "text/event-stream"))
        .expect(1)
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    let (tx, rx) = oneshot::channel();
    verdict.on_verdict(move |v| {
        let _ = tx.send(v.clone());
    });
    assert!(!verdict.is_ready());
    drop(response);
    let v = rx.await.unwrap();
    assert_eq!(v.parse_check, ParseCheck::Skipped);
    assert_eq!(v.skip_reason, Some(SkipReason::Cancelled));
    assert_eq!(verdict.wait().await, v);
    // A callback registered after the verdict runs at once.
    let (tx, rx) = oneshot::channel();
    verdict.on_verdict(move |v| {
        let _ = tx.send(v.parse_check);
    });
    assert_eq!(rx.await.unwrap(), ParseCheck::Skipped);
}

#[tokio::test]
async fn a_stream_truncated_by_the_server_fails() {
    let body = CHAT_STREAM
        .split("data: [DONE]")
        .next()
        .unwrap()
        .replace("\"stop\"", "null");
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "text/event-stream"))
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    assert_eq!(response.text().await.unwrap(), body);
    let v = verdict.get().unwrap();
    assert_eq!(v.violation, Some(Violation::StreamTruncated));
    assert_eq!(v.violation_offset, Some(body.len() as u64));
}

#[tokio::test]
async fn a_connection_cut_mid_stream_fails_with_body_read_error() {
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let first = &CHAT_STREAM[..CHAT_STREAM.find("\n\n").unwrap() + 2];
    // No terminating chunk: the server just closes.
    let addr = raw_server(
        vec![[head.to_vec(), chunk(first.as_bytes())].concat()],
        None,
    )
    .await;
    let response = client(Inspect::new())
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    let mut stream = response.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(c) = stream.next().await {
        match c {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "the caller sees the connection error");
    assert_eq!(got, first.as_bytes());
    let v = verdict.get().unwrap();
    assert_eq!(v.violation, Some(Violation::BodyReadError));
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_replayed_then_fails() {
    let partial = &CHAT_OK[..40];
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{partial}",
        CHAT_OK.len()
    );
    let addr = raw_server(vec![response.into_bytes()], None).await;
    let response = client(Inspect::new())
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let v = response
        .extensions()
        .get::<ContractVerdict>()
        .unwrap()
        .clone();
    assert_eq!(v.violation, Some(Violation::BodyReadError));
    let mut stream = response.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(c) = stream.next().await {
        match c {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    assert_eq!(
        got,
        partial.as_bytes(),
        "the bytes that arrived still reach the caller"
    );
    assert!(failed, "then the same failure");
}

#[tokio::test]
async fn a_stream_mislabelled_as_json_is_still_streamed_not_buffered() {
    let (first, rest) = CHAT_STREAM.split_at(CHAT_STREAM.find("\n\n").unwrap() + 2);
    let (go_tx, go_rx) = oneshot::channel();
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    let parts = vec![
        [head, chunk(first.as_bytes())].concat(),
        [chunk(rest.as_bytes()), b"0\r\n\r\n".to_vec()].concat(),
    ];
    let addr = raw_server(parts, Some(go_rx)).await;
    let response = client(Inspect::new())
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    let mut stream = response.bytes_stream();
    let got = stream.next().await.unwrap().unwrap();
    assert_eq!(
        &got[..],
        first.as_bytes(),
        "the first event arrives before the rest is sent"
    );
    go_tx.send(()).unwrap();
    let mut all = got.to_vec();
    while let Some(c) = stream.next().await {
        all.extend_from_slice(&c.unwrap());
    }
    assert_eq!(all, CHAT_STREAM.as_bytes());
    let v = verdict.wait().await;
    assert_eq!(v.parse_check, ParseCheck::Pass);
    assert!(
        v.warnings
            .contains(reqwest_llm_guard::evidence::Warning::NotEventStream)
    );
}

#[tokio::test]
async fn a_valid_answer_is_the_api_speaking_whatever_the_headers() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(CHAT_OK, "application/json")
                .insert_header("cf-mitigated", "challenge")
                .insert_header("server", "cloudflare"),
        )
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    assert!(
        response
            .extensions()
            .get::<reqwest_llm_guard::evidence::WafVerdict>()
            .is_none()
    );
    assert_eq!(
        reqwest_llm_guard::inspect::verdict(&response)
            .unwrap()
            .parse_check,
        ParseCheck::Pass
    );
}

#[tokio::test]
async fn cloudflares_json_problem_document_is_a_wall_with_its_ray_id() {
    let problem = r#"{"type":"https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-1xxx-errors/error-1020/","title":"Error 1020: Access denied","status":403,"detail":"The site owner has blocked access based on your browser's signature.","instance":"9d8e7f6a5b4c3d2e"}"#;
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_raw(problem, "application/problem+json; charset=utf-8")
                .insert_header("server", "cloudflare"),
        )
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    let wall = response
        .extensions()
        .get::<reqwest_llm_guard::evidence::WafVerdict>()
        .cloned()
        .unwrap();
    assert_eq!(
        wall.vendor,
        reqwest_llm_guard::evidence::WafVendor::Cloudflare
    );
    assert_eq!(wall.reference.as_deref(), Some("9d8e7f6a5b4c3d2e"));
}

#[tokio::test]
async fn a_stream_dropped_right_after_done_is_judged_as_ended() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    let response = client(Inspect::new())
        .post(format!("{}/v1/chat/completions", server.uri()))
        .send()
        .await
        .unwrap();
    let verdict = response
        .extensions()
        .get::<VerdictHandle>()
        .unwrap()
        .clone();
    let mut stream = response.bytes_stream();
    // wiremock sends the body in one piece: after the first chunk the caller has `[DONE]`.
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    let v = verdict.wait().await;
    assert_eq!(v.parse_check, ParseCheck::Pass);
    assert_eq!(v.skip_reason, None);
}
