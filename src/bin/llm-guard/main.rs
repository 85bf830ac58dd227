//! `llm-guard`: the evidence drill, the offline check of a saved response, and the mock
//! gateway, from the command line.
//!
//! ```text
//! llm-guard smoke                                     # against the embedded mock gateway
//! llm-guard smoke --base-url https://api.cometapi.com/v1 --model gpt-4o-mini \
//!     --api-key-env COMETAPI_KEY --surface responses --timeout 30s --json
//! curl -si https://api.example.com/v1/chat/completions -d @request.json | llm-guard check -
//! llm-guard check --status 403 --header 'cf-ray: 8f1c2d3e4a5b6c7d-FRA' page.html
//! llm-guard check --stream --surface responses events.sse
//! llm-guard mock --port 8080                          # serve the mock gateway
//! llm-guard proxy --config proxy.toml --log           # an OpenAI-compatible failover proxy
//! ```

mod check;
mod config;
mod drill;
mod forward;
mod proxy;
mod saved;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use drill::{DrillConfig, DrillExport};
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::mock::{MockGateway, Scenario};

#[derive(Parser)]
#[command(
    name = "llm-guard",
    version,
    about = "Evidence for OpenAI-compatible LLM API calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One happy-path and one invalid request through one API surface; prints the evidence
    /// record and exits 0 only when it passes (decision `promote`). With
    /// OTEL_EXPORTER_OTLP_ENDPOINT set, its spans and metrics also go to that OTLP collector.
    Smoke {
        /// The API's base URL, up to the version (`https://api.openai.com/v1`). Without it, the
        /// embedded mock gateway answers.
        #[arg(long)]
        base_url: Option<String>,
        /// The API surface to drill.
        #[arg(long, value_enum, default_value_t = Surface::Chat)]
        surface: Surface,
        /// The model for the happy path.
        #[arg(long, default_value = "gpt-4o-mini")]
        model: String,
        /// The name of the environment variable holding the API key (never the key itself).
        #[arg(long, default_value = "OPENAI_API_KEY")]
        api_key_env: String,
        /// The embedded mock gateway's behaviour (without --base-url), e.g. `waf_cloudflare`.
        #[arg(long, default_value = "ok")]
        mock_scenario: String,
        /// How long each request may take (`30s`, `1m 30s`, `500ms`).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Judge a saved response offline and print the evidence a live call would leave (surface,
    /// status class, contract check, WAF wall, API error, decision); exits 0 when the decision
    /// is `none`, 1 for any other, 2 when the input cannot be judged.
    Check(check::CheckArgs),
    /// Serve the mock gateway on 127.0.0.1 until interrupted.
    Mock {
        /// The port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The behaviour for requests that name none (`x-mock-scenario` overrides it).
        #[arg(long, default_value = "ok")]
        scenario: String,
    },
    /// Serve an OpenAI-compatible proxy on loopback that sends every request through the whole
    /// guard with failover between the configured upstreams (retry, circuit breakers, checks,
    /// evidence headers; OTLP export with OTEL_EXPORTER_OTLP_ENDPOINT set) until Ctrl-C.
    /// Exits 2 when the configuration cannot be used.
    #[command(after_long_help = proxy::CONFIG_EXAMPLE)]
    Proxy(proxy::ProxyArgs),
}

/// An API surface, as the flags name it.
#[derive(Clone, Copy, ValueEnum)]
enum Surface {
    /// Chat Completions (`/chat/completions`).
    Chat,
    /// Responses (`/responses`).
    Responses,
}

impl Surface {
    fn api(self) -> ApiSurface {
        match self {
            Surface::Chat => ApiSurface::ChatCompletions,
            Surface::Responses => ApiSurface::Responses,
        }
    }
}

fn scenario(name: &str) -> Result<Scenario, String> {
    name.parse::<Scenario>().map_err(|e| {
        let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
        format!("{e}; known: {}", known.join(", "))
    })
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Smoke {
            base_url,
            surface,
            model,
            api_key_env,
            mock_scenario,
            timeout,
            json,
        } => {
            let mock_scenario = match scenario(&mock_scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("llm-guard: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = DrillConfig::default()
                .with_base_url(base_url)
                .with_surface(surface.api())
                .with_model(model)
                .with_api_key_env(api_key_env)
                .with_mock_scenario(mock_scenario)
                .with_timeout(timeout);
            smoke(config, json).await
        }
        Command::Check(args) => check::run(&args),
        Command::Proxy(args) => proxy::run(&args).await,
        Command::Mock {
            port,
            scenario: name,
        } => {
            let default = match scenario(&name) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("llm-guard: {e}");
                    return ExitCode::from(2);
                }
            };
            let gateway =
                match MockGateway::start_with(default, SocketAddr::from(([127, 0, 0, 1], port)))
                    .await
                {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!("llm-guard: cannot listen on port {port}: {e}");
                        return ExitCode::from(2);
                    }
                };
            println!(
                "mock gateway listening on {} (default scenario {default}); Ctrl-C to stop",
                gateway.url()
            );
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }
    }
}

/// Runs the drill, exporting through OTLP when the environment names a collector, and prints
/// its record.
async fn smoke(config: DrillConfig, json: bool) -> ExitCode {
    let export = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty()) {
        // The HTTP exporter builds a blocking client: off the async workers.
        match tokio::task::spawn_blocking(DrillExport::from_env).await {
            Ok(Ok(export)) => Some(export),
            Ok(Err(e)) => {
                eprintln!("llm-guard: {}", chain(&e));
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("llm-guard: cannot build the OTLP export: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    // The drill flushes and shuts the export down before it returns.
    match drill::run_with_export(config, export).await {
        Ok(record) => {
            if json {
                println!("{}", record.to_json());
            } else {
                print!("{}", record.to_text());
            }
            if record.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("llm-guard: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}
