//! `llm-guard`: the evidence drill and the mock gateway, from the command line.
//!
//!     llm-guard smoke                                     # against the embedded mock gateway
//!     llm-guard smoke --base-url https://api.cometapi.com/v1 --model gpt-4o-mini \
//!         --api-key-env COMETAPI_KEY --surface responses --json
//!     llm-guard mock --port 8080                          # serve the mock gateway

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use reqwest_llm_guard::drill::{self, DrillConfig};
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
    /// record and exits 0 only when it passes (decision `promote`).
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
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the mock gateway on 127.0.0.1 until interrupted.
    Mock {
        /// The port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The behaviour for requests that name none (`x-mock-scenario` overrides it).
        #[arg(long, default_value = "ok")]
        scenario: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Surface {
    /// Chat Completions (`/chat/completions`).
    Chat,
    /// Responses (`/responses`).
    Responses,
}

fn scenario(name: &str) -> Result<Scenario, String> {
    name.parse::<Scenario>().map_err(|e| {
        let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
        format!("{e}; known: {}", known.join(", "))
    })
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
            json,
        } => {
            let mock_scenario = match scenario(&mock_scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("llm-guard: {e}");
                    return ExitCode::from(2);
                }
            };
            let surface = match surface {
                Surface::Chat => ApiSurface::ChatCompletions,
                Surface::Responses => ApiSurface::Responses,
            };
            let config = DrillConfig::default()
                .with_base_url(base_url)
                .with_surface(surface)
                .with_model(model)
                .with_api_key_env(api_key_env)
                .with_mock_scenario(mock_scenario);
            match drill::run(config).await {
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
                    eprintln!("llm-guard: {e}");
                    ExitCode::from(2)
                }
            }
        }
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
