//! Application-level failover that acts on `fallback_decision`: try the primary, move on to the
//! next endpoint on `fallback`, stop on `hold` (a wall or a request error fails everywhere).
//!
//!     cargo run --features mock --example failover

use reqwest_llm_guard::evidence::FallbackDecision;
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
    let client = Guard::new().client(reqwest::Client::new());

    for route in [vec![&failing, &healthy], vec![&walled, &healthy]] {
        println!(
            "route: {}",
            route
                .iter()
                .map(|g| g.url())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        for gateway in route {
            let handle = EvidenceHandle::new();
            // The answer (or the error) is the caller's as usual; the evidence says what next.
            let _answer = client
                .post(format!("{}/v1/chat/completions", gateway.url()))
                .with_extension(handle.clone())
                .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await;
            let evidence = handle.settled().await;
            println!(
                "  {} -> {} ({}), decision {}",
                gateway.url(),
                evidence
                    .status
                    .map_or("no response".to_owned(), |s| s.to_string()),
                evidence.violation.map_or("in contract", |v| v.as_str()),
                evidence.fallback_decision
            );
            match evidence.fallback_decision {
                FallbackDecision::None => {
                    println!("  answered");
                    break;
                }
                FallbackDecision::Fallback => {} // the next endpoint
                _ => {
                    let wall = evidence.waf.as_ref().map_or(String::new(), |w| {
                        format!(
                            ": {} {} {}",
                            w.vendor,
                            w.kind,
                            w.reference.as_deref().unwrap_or("")
                        )
                    });
                    println!("  hold{wall}; not failing over, a human must look");
                    break;
                }
            }
        }
    }
    Ok(())
}
