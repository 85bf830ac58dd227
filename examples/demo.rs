//! A tour of what goes wrong between a service and an LLM gateway, through the whole stack,
//! against the embedded mock gateway.
//!
//!     cargo run --features mock,otlp --example demo              # one tour, one line per call
//!     cargo run --features mock,otlp --example demo -- --loop    # forever (the compose stack's traffic service)
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set (and `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`
//! as you like), spans and metrics go to that OTLP backend.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::failover::{BreakerConfig, Failover, Upstream};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::retry::Retry;
use reqwest_llm_guard::telemetry::otlp;
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};

/// The tour: every decision of the decision table, on both surfaces, streaming and not.
const TOUR: &[(Scenario, ApiSurface, bool)] = &[
    (Scenario::Ok, ApiSurface::ChatCompletions, false),
    (Scenario::Ok, ApiSurface::Responses, false),
    (Scenario::Ok, ApiSurface::ChatCompletions, true),
    (Scenario::Ok, ApiSurface::Responses, true),
    (Scenario::Incomplete, ApiSurface::Responses, false),
    (
        Scenario::RateLimitedOnce,
        ApiSurface::ChatCompletions,
        false,
    ),
    (Scenario::RateLimitedMs, ApiSurface::ChatCompletions, false),
    (Scenario::RateLimitedLong, ApiSurface::Responses, false),
    (Scenario::WafCloudflare, ApiSurface::ChatCompletions, false),
    (
        Scenario::WafCloudflareChallenge,
        ApiSurface::ChatCompletions,
        false,
    ),
    (Scenario::WafAkamai, ApiSurface::Responses, false),
    (Scenario::WafF5, ApiSurface::ChatCompletions, false),
    (Scenario::WafAwsCaptcha, ApiSurface::Responses, false),
    (Scenario::Unauthorized, ApiSurface::ChatCompletions, false),
    (Scenario::NotFound, ApiSurface::Responses, false),
    (Scenario::GeminiError, ApiSurface::ChatCompletions, false),
    (
        Scenario::OpenrouterCredits,
        ApiSurface::ChatCompletions,
        false,
    ),
    (
        Scenario::AnthropicOverloaded,
        ApiSurface::ChatCompletions,
        false,
    ),
    (Scenario::ServerError, ApiSurface::Responses, false),
    (Scenario::Html200, ApiSurface::ChatCompletions, false),
    (Scenario::ErrorIn200, ApiSurface::ChatCompletions, false),
    (Scenario::ResponsesFailed, ApiSurface::Responses, false),
    (Scenario::StreamTruncated, ApiSurface::ChatCompletions, true),
    (Scenario::StreamOutOfOrder, ApiSurface::Responses, true),
    (Scenario::StreamError, ApiSurface::ChatCompletions, true),
    (Scenario::StreamError, ApiSurface::Responses, true),
    (Scenario::Slow, ApiSurface::ChatCompletions, false),
    (Scenario::Drop, ApiSurface::ChatCompletions, false),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let looping = std::env::args().any(|a| a == "--loop");
    let otel = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        // The HTTP exporter builds a blocking client: do it off the async workers.
        Some(tokio::task::spawn_blocking(otlp::init_from_env).await??)
    } else {
        None
    };
    let gateway = MockGateway::start().await?;
    // Quick retries so the tour stays short; everything else is the default stack.
    let retry = Retry::new().with_max_server_wait(Duration::from_secs(5));
    let client = Guard::new()
        .with_retry(retry)
        .client(reqwest::Client::new());
    println!("mock gateway at {}", gateway.url());
    let mut round = 0u64;
    loop {
        round += 1;
        println!(
            "\n{:<26} {:<17} {:<6} {:<15} {:<8} {:<9} {:<7} {:<10} violation",
            "scenario", "surface", "stream", "status", "parse", "decision", "retries", "waf"
        );
        for (i, &(scenario, surface, stream)) in TOUR.iter().enumerate() {
            let evidence = call(
                &client,
                &gateway,
                scenario,
                surface,
                stream,
                format!("{round}-{i}"),
            )
            .await;
            print_line(scenario, stream, &evidence);
        }
        // And an endpoint that is not there at all: a transport error.
        // An error hands back no response: a handle attached to the request gets its evidence.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let handle = EvidenceHandle::new();
        let _ = client
            .post(format!("http://{closed}/v1/chat/completions"))
            .with_extension(handle.clone())
            .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
            .send()
            .await;
        print_line("unreachable", false, &handle.settled().await);
        failover_tour(round).await?;
        if let Some(otel) = &otel {
            otel.flush();
        }
        if !looping {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if let Some(otel) = otel {
        tokio::task::spawn_blocking(move || drop(otel)).await?;
    }
    Ok(())
}

async fn call(
    client: &reqwest_middleware::ClientWithMiddleware,
    gateway: &MockGateway,
    scenario: Scenario,
    surface: ApiSurface,
    stream: bool,
    session: String,
) -> Evidence {
    let path = match surface {
        ApiSurface::Responses => "/v1/responses",
        _ => "/v1/chat/completions",
    };
    let body = match surface {
        ApiSurface::Responses => format!(
            r#"{{"model":"gpt-4.1-mini","input":"Reply with exactly the word PASS.","stream":{stream}}}"#
        ),
        _ => format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Reply with exactly the word PASS."}}],"stream":{stream}}}"#
        ),
    };
    let handle = EvidenceHandle::new();
    let sent = client
        .post(format!("{}{path}", gateway.url()))
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-demo-not-a-real-key")
        .header("x-mock-scenario", scenario.as_str())
        .header("x-mock-session", session)
        .body(body)
        .send()
        .await;
    if let Ok(response) = sent {
        // Read the body as a caller would; a stream's evidence is final at its end.
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    }
    handle.settled().await
}

/// Failover acting on the evidence: a primary that is down for a while is left for the backup,
/// its breaker opens, probes it once it is back and closes; a wall holds and is never failed
/// over.
async fn failover_tour(round: u64) -> Result<(), Box<dyn std::error::Error>> {
    let flaky = MockGateway::start_with(Scenario::DownThenUp, ([127, 0, 0, 1], 0).into()).await?;
    let walled =
        MockGateway::start_with(Scenario::WafCloudflare, ([127, 0, 0, 1], 0).into()).await?;
    let backup = MockGateway::start().await?;
    let upstream =
        |name: &str, gateway: &MockGateway| Upstream::new(name, &format!("{}/v1", gateway.url()));
    let failover = Failover::builder([upstream("primary", &flaky)?, upstream("backup", &backup)?])
        .with_breaker(
            &BreakerConfig::default()
                .with_consecutive_failures(2)
                .with_open_time(Duration::from_secs(1), Duration::from_secs(8)),
        )
        .build();
    let client = Guard::new()
        .with_failover(failover.clone())
        .client(reqwest::Client::new());
    let session = format!("failover-{round}");
    println!(
        "\nfailover: primary down for 1.5 s, backup healthy; primary's breaker opens after 2 failures"
    );
    for step in 0..5 {
        if step == 3 {
            // The primary is back; its breaker lets a probe through after its open time.
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        let e = failover_call(&client, &session).await;
        println!(
            "  call {}: answered by {:<8} hops {} decision {:<8} primary's breaker {}",
            step + 1,
            e.upstream.as_deref().unwrap_or("-"),
            e.hops,
            e.fallback_decision.as_str(),
            failover
                .breaker("primary")
                .map_or("-", |b| b.state().as_str()),
        );
    }
    let client = Guard::new()
        .with_failover(Failover::new([
            upstream("primary", &walled)?,
            upstream("backup", &backup)?,
        ]))
        .client(reqwest::Client::new());
    let e = failover_call(&client, &session).await;
    println!(
        "  a wall in front of the primary: decision {} ({}), hops {}: held, not failed over",
        e.fallback_decision,
        e.waf
            .as_ref()
            .map_or(String::new(), |w| format!("{} {}", w.vendor, w.kind)),
        e.hops
    );
    Ok(())
}

async fn failover_call(
    client: &reqwest_middleware::ClientWithMiddleware,
    session: &str,
) -> Evidence {
    let handle = EvidenceHandle::new();
    if let Ok(response) = client
        .post("http://upstream.invalid/v1/chat/completions")
        .with_extension(handle.clone())
        .header("content-type", "application/json")
        .header("x-mock-session", session)
        .header("x-mock-down-ms", "1500")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Reply with exactly the word PASS."}]}"#)
        .send()
        .await
    {
        let _ = response.bytes().await;
    }
    handle.settled().await
}

fn print_line(scenario: impl std::fmt::Display, stream: bool, e: &Evidence) {
    let waf = e
        .waf
        .as_ref()
        .map_or("-".to_owned(), |w| w.vendor.as_str().to_owned());
    println!(
        "{:<26} {:<17} {:<6} {:<15} {:<8} {:<9} {:<7} {:<10} {}",
        scenario.to_string(),
        e.api_surface.as_str(),
        if stream { "yes" } else { "no" },
        e.status_class.as_str(),
        e.parse_check.map_or("-", |p| p.as_str()),
        e.fallback_decision.as_str(),
        e.retry_count,
        waf,
        e.violation.map_or("-", |v| v.as_str()),
    );
}
