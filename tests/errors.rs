//! Every error a call can hand back, printed as a service would log it: no credential in it.

use std::time::Duration;

use reqwest_llm_guard::Guard;
use reqwest_llm_guard::retry::Retry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANARY: &str = "sk-CANARY-err-5d1e";

fn client(timeout: Option<Duration>) -> reqwest_middleware::ClientWithMiddleware {
    let mut builder = reqwest::Client::builder();
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    Guard::new()
        .with_retry(
            Retry::openai_sdk().with_policy(
                retry_policies::policies::ExponentialBackoff::builder()
                    .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
                    .build_with_max_retries(1),
            ),
        )
        .client(builder.build().unwrap())
}

/// A URL that carries the canary where keys are put: userinfo and query.
fn url(addr: std::net::SocketAddr) -> String {
    format!("http://user:{CANARY}@{addr}/v1/chat/completions?key={CANARY}&api_key={CANARY}")
}

fn assert_clean(what: &str, e: &dyn std::error::Error) {
    let mut texts = vec![format!("{e}"), format!("{e:?}")];
    let mut source = e.source();
    while let Some(s) = source {
        texts.push(format!("{s}"));
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for t in texts {
        assert!(
            !t.contains(CANARY),
            "{what}: the error carries the credential: {t}"
        );
    }
}

/// A server that answers every connection with `reply`, then holds or closes it.
async fn raw(reply: &'static [u8], hold: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_refused_connection_hands_back_no_credential() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client(None)
        .post(url(closed))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "still a reqwest connect error: {err:?}");
    assert!(err.url().is_some(), "the URL stays, redacted");
    assert_clean("connect", &err);
}

#[tokio::test]
async fn a_timeout_hands_back_no_credential() {
    let addr = raw(b"", true).await;
    let err = client(Some(Duration::from_millis(100)))
        .post(url(addr))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "still a reqwest timeout: {err:?}");
    assert_clean("timeout", &err);
}

#[tokio::test]
async fn a_body_cut_short_hands_back_no_credential() {
    // Promises 100 bytes, sends 10, closes.
    let addr = raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":\"x\",",
        false,
    )
    .await;
    let response = client(None)
        .post(url(addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    let err = response.bytes().await.unwrap_err();
    assert_clean("body", &err);
}

#[tokio::test]
async fn a_stream_cut_short_hands_back_no_credential() {
    let addr = raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n10\r\ndata: {\"id\":1}\n\n\r\n",
        false,
    )
    .await;
    let response = client(None)
        .post(url(addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    let err = response.bytes().await.unwrap_err();
    assert_clean("stream", &err);
}

#[tokio::test]
async fn a_request_that_cannot_be_resent_hands_back_no_credential() {
    let addr = raw(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false).await;
    let body = reqwest::Body::wrap_stream(futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}"))
    }));
    let err = client(None)
        .post(url(addr))
        .body(body)
        .send()
        .await
        .unwrap_err();
    assert_clean("not cloneable", &err);
}
