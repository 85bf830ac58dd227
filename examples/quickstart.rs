//! Add the layers to the client you already have, and call a real API.
//!
//!     OPENAI_API_KEY=sk-… cargo run --example quickstart
//!     OPENAI_BASE_URL=https://api.cometapi.com/v1 OPENAI_API_KEY=… MODEL=gpt-4o-mini cargo run --example quickstart
//!
//! Without `OPENAI_API_KEY` it says so and exits.

use reqwest_llm_guard::{Evidence, Guard};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(key) = std::env::var("OPENAI_API_KEY") else {
        eprintln!("set OPENAI_API_KEY (and OPENAI_BASE_URL for a gateway) to run this example");
        return Ok(());
    };
    let base =
        std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".to_owned());
    let model = std::env::var("MODEL").unwrap_or_else(|_| "gpt-4o-mini".to_owned());

    // The client you already have, with its own settings…
    let existing = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    // …and the guard's layers around it. Call sites do not change.
    let client = Guard::new().client(existing);

    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Reply with exactly the word PASS."}],
    });
    let response = client
        .post(format!("{}/chat/completions", base.trim_end_matches('/')))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let evidence = Evidence::of(&response);
    println!(
        "api_surface={} status_class={} parse_check={} fallback_decision={} retry_count={} waf={} violation={}",
        evidence.api_surface,
        evidence.status_class,
        evidence.parse_check.map_or("-", |p| p.as_str()),
        evidence.fallback_decision,
        evidence.retry_count,
        evidence
            .waf
            .as_ref()
            .map_or("-".to_owned(), |w| format!("{}/{}", w.vendor, w.kind)),
        evidence.violation.map_or("-", |v| v.as_str()),
    );
    let answer: serde_json::Value = response.json().await?;
    println!("answer: {}", answer["choices"][0]["message"]["content"]);
    Ok(())
}
