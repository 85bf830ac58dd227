//! Failover that acts on the evidence: a failing primary is left for the next upstream, its
//! breaker opens, and a wall holds where it is instead of being hidden behind a hop.
//!
//!     cargo run --features mock --example failover

use reqwest_llm_guard::failover::{BreakerConfig, Failover, Upstream};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::{EvidenceHandle, Guard};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three "providers": one failing, one behind a WAF, one healthy.
    let failing =
        MockGateway::start_with(Scenario::ServerError, ([127, 0, 0, 1], 0).into()).await?;
    let walled =
        MockGateway::start_with(Scenario::WafCloudflare, ([127, 0, 0, 1], 0).into()).await?;
    let healthy = MockGateway::start().await?;
    let upstream =
        |name: &str, gateway: &MockGateway| Upstream::new(name, &format!("{}/v1", gateway.url()));

    // The failing primary first: after 3 failures in a row its breaker opens and calls go
    // straight to the backup.
    let failover = Failover::builder([
        upstream("primary", &failing)?,
        upstream("backup", &healthy)?,
    ])
    .with_breaker(&BreakerConfig::default().with_consecutive_failures(3))
    .build();
    let client = Guard::new()
        .with_failover(failover.clone())
        .client(reqwest::Client::new());
    println!("primary answers 500, backup is healthy:");
    for _ in 0..5 {
        let e = chat(&client).await;
        println!(
            "  answered by {:<8} after {} hop(s), decision {}; primary's breaker {}",
            e.upstream.as_deref().unwrap_or("-"),
            e.hops,
            e.fallback_decision,
            failover
                .breaker("primary")
                .map_or("-", |b| b.state().as_str()),
        );
    }
    println!(
        "  the primary saw {} requests, the backup {}",
        failing.requests(),
        healthy.requests()
    );

    // A wall in front of the primary: the call holds, the backup is never asked.
    let client = Guard::new()
        .with_failover(Failover::new([
            upstream("primary", &walled)?,
            upstream("backup", &healthy)?,
        ]))
        .client(reqwest::Client::new());
    let before = healthy.requests();
    let e = chat(&client).await;
    let wall = e.waf.as_ref().map_or(String::new(), |w| {
        format!(
            "{} {} {}",
            w.vendor,
            w.kind,
            w.reference.as_deref().unwrap_or("")
        )
    });
    println!(
        "\nprimary behind a WAF: decision {} ({wall}), {} hop(s), backup asked {} time(s): a human must look",
        e.fallback_decision,
        e.hops,
        healthy.requests() - before
    );
    Ok(())
}

async fn chat(client: &reqwest_middleware::ClientWithMiddleware) -> reqwest_llm_guard::Evidence {
    let handle = EvidenceHandle::new();
    // The URL's host is rewritten to each upstream's; the path picks the surface.
    if let Ok(response) = client
        .post("http://upstream.invalid/v1/chat/completions")
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
    {
        let _ = response.bytes().await;
    }
    handle.settled().await
}
