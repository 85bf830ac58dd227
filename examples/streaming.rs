//! A streaming call: chunks reach the caller as they arrive, the verdict comes at the end.
//!
//!     cargo run --features mock --example streaming
//!     cargo run --features mock --example streaming -- stream_truncated    # a mock scenario by name

use std::time::Instant;

use futures_util::StreamExt;
use reqwest_llm_guard::mock::MockGateway;
use reqwest_llm_guard::{Evidence, Guard};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "ok".to_owned());
    let gateway = MockGateway::start().await?;
    let client = Guard::new().client(reqwest::Client::new());

    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/responses", gateway.url()))
        .header("x-mock-scenario", scenario.as_str())
        // Space the events out, as a real model would.
        .header("x-mock-delay-ms", "40")
        .body(r#"{"model":"gpt-5","input":"Reply with exactly the word PASS.","stream":true}"#)
        .send()
        .await?;
    // Final when the stream ends: its contract checked on the way, never buffered.
    let evidence = Evidence::handle(&response);
    let mut chunks = response.bytes_stream();
    let mut n = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        n += 1;
        if n == 1 {
            println!(
                "first chunk after {:?} ({} bytes)",
                started.elapsed(),
                chunk.len()
            );
        }
    }
    println!("{n} chunks in {:?}", started.elapsed());
    let evidence = evidence.settled().await;
    println!(
        "parse_check={} violation={} fallback_decision={}",
        evidence.parse_check.map_or("-", |p| p.as_str()),
        evidence.violation.map_or("-", |v| v.as_str()),
        evidence.fallback_decision
    );
    Ok(())
}
