//! The evidence drill (feature `cli`): one happy-path request and one deliberately invalid
//! request through one API surface, before fallback traffic is promoted (DESIGN §7,
//! seeds/000 and 004).
//!
//! The verdict is the seed's: `promote` (both paths kept their contracts and nothing leaked),
//! `hold` (a wall, a credential or request problem, or an error shape retry logic would
//! misread: a human must look) or `rollback` (the endpoint failed: 5xx, exhausted 429s, a broken
//! 2xx). The record never holds the key, the prompt or a body.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_llm_guard::drill::{self, DrillConfig};
//!
//! let record = drill::run(DrillConfig::default()).await?; // against the embedded mock gateway
//! assert!(record.pass);
//! println!("{}", record.to_text());
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde::Serialize;

use crate::contract::{ContractVerdict, ErrorShape};
use crate::evidence::{ApiSurface, FallbackDecision, ParseCheck, StatusClass, Warning};
use crate::mock::{MockGateway, Scenario};
use crate::telemetry::Telemetry;
use crate::{Evidence, EvidenceHandle, Guard, inspect};

/// What to drill.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DrillConfig {
    /// The API's base URL, up to and including the version (`https://api.cometapi.com/v1`);
    /// `None` starts the embedded mock gateway.
    pub base_url: Option<String>,
    /// Which surface to drill.
    pub surface: ApiSurface,
    /// The model for the happy path.
    pub model: String,
    /// The name of the environment variable that holds the API key (never the key itself).
    pub api_key_env: String,
    /// The embedded mock gateway's scenario, when no base URL is given.
    pub mock_scenario: Scenario,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for DrillConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            surface: ApiSurface::ChatCompletions,
            model: "gpt-4o-mini".to_owned(),
            api_key_env: "OPENAI_API_KEY".to_owned(),
            mock_scenario: Scenario::Ok,
            timeout: Duration::from_secs(60),
        }
    }
}

impl DrillConfig {
    /// Against this base URL.
    #[must_use]
    pub fn with_base_url(mut self, url: Option<String>) -> Self {
        self.base_url = url;
        self
    }

    /// Through this surface.
    #[must_use]
    pub fn with_surface(mut self, surface: ApiSurface) -> Self {
        self.surface = surface;
        self
    }

    /// With this model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// With the key in this environment variable.
    #[must_use]
    pub fn with_api_key_env(mut self, name: impl Into<String>) -> Self {
        self.api_key_env = name.into();
        self
    }

    /// With the embedded mock gateway answering this way.
    #[must_use]
    pub fn with_mock_scenario(mut self, scenario: Scenario) -> Self {
        self.mock_scenario = scenario;
        self
    }
}

/// The drill's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillDecision {
    /// Both paths kept their contracts: fallback traffic may go here.
    Promote,
    /// A human must look before any traffic goes here.
    Hold,
    /// The endpoint is failing: keep (or put back) traffic on the primary.
    Rollback,
}

impl DrillDecision {
    /// `promote`, `hold` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Hold => "hold",
            Self::Rollback => "rollback",
        }
    }
}

/// The seed's record of one drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Record {
    /// A fresh id for this run.
    pub run_id: String,
    /// `chat_completions` or `responses`.
    pub api_surface: &'static str,
    /// What was sent: the happy path and the invalid request.
    pub request_profile: &'static str,
    /// The happy path's status class.
    pub status_class: &'static str,
    /// The happy path's contract check.
    pub parse_check: &'static str,
    /// `promote`, `hold` or `rollback`.
    pub fallback_decision: DrillDecision,
    /// Retries the happy path needed.
    pub retry_count: u32,
    /// Whether the key's value appeared in any span, event or in this record.
    pub credential_logged: bool,
    /// Whether the prompt and the bodies stayed out of the telemetry.
    pub body_redacted: bool,
    /// Whether there is something to quote to support: a response or request id, or a WAF
    /// reference.
    pub support_packet_ready: bool,
    /// One line for the operator.
    pub operator_note: String,
    /// The happy path's HTTP status (0 when none arrived).
    pub http_status: u16,
    /// A finish reason came back (Chat: `choices[0].finish_reason`; Responses: the status).
    pub finish_reason_present: bool,
    /// The answer's text is a non-null string.
    pub content_non_null: bool,
    /// The invalid request got a 4xx whose body is the error envelope retry logic expects:
    /// `error.message` a non-empty string, `error.type` a string, `error.code` present.
    pub error_shape_valid_on_4xx: bool,
    /// When the drill ran (RFC 3339, UTC).
    pub test_timestamp_utc: String,
    /// `fallback_decision == promote`, nothing logged, bodies redacted.
    pub pass: bool,
}

impl Record {
    /// `field: value` lines, in the seed's order.
    pub fn to_text(&self) -> String {
        let fields: [(&str, String); 17] = [
            ("run_id", self.run_id.clone()),
            ("api_surface", self.api_surface.to_owned()),
            ("request_profile", self.request_profile.to_owned()),
            ("status_class", self.status_class.to_owned()),
            ("parse_check", self.parse_check.to_owned()),
            (
                "fallback_decision",
                self.fallback_decision.as_str().to_owned(),
            ),
            ("retry_count", self.retry_count.to_string()),
            ("credential_logged", self.credential_logged.to_string()),
            ("body_redacted", self.body_redacted.to_string()),
            (
                "support_packet_ready",
                self.support_packet_ready.to_string(),
            ),
            ("operator_note", self.operator_note.clone()),
            ("http_status", self.http_status.to_string()),
            (
                "finish_reason_present",
                self.finish_reason_present.to_string(),
            ),
            ("content_non_null", self.content_non_null.to_string()),
            (
                "error_shape_valid_on_4xx",
                self.error_shape_valid_on_4xx.to_string(),
            ),
            ("test_timestamp_utc", self.test_timestamp_utc.clone()),
            ("pass", self.pass.to_string()),
        ];
        let mut out = String::new();
        for (k, v) in fields {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(&v);
            out.push('\n');
        }
        out
    }

    /// The record as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The drill's own failures (the endpoint's failures are findings in the record instead).
#[derive(Debug)]
pub struct DrillError(String);

impl std::fmt::Display for DrillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DrillError {}

const PROMPT: &str = "Reply with exactly the word PASS.";

struct Sent {
    evidence: Evidence,
    /// The inspect layer's verdict, as the response carried it (a stream's once it ended).
    verdict: Option<ContractVerdict>,
    body: Vec<u8>,
    request_id: bool,
}

/// Runs the drill.
pub async fn run(config: DrillConfig) -> Result<Record, DrillError> {
    let run_id = run_id();
    let mock = match &config.base_url {
        Some(_) => None,
        None => Some(
            MockGateway::start_with(config.mock_scenario, ([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| DrillError(format!("cannot start the mock gateway: {e}")))?,
        ),
    };
    let base = match (&config.base_url, &mock) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(m)) => format!("{}/v1", m.url()),
        (None, None) => unreachable!("a mock is started when no base URL is given"),
    };
    let key = std::env::var(&config.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let key = match (key, &mock) {
        (Some(k), _) => k,
        // The mock needs no key: send a unique one, so a leak would still be caught.
        (None, Some(_)) => format!("sk-drill-{run_id}"),
        (None, None) => {
            return Err(DrillError(format!(
                "the environment variable {} holds no API key",
                config.api_key_env
            )));
        }
    };

    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let telemetry = Telemetry::new().with_tracer_provider(&provider);
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| DrillError(format!("cannot build the HTTP client: {e}")))?;
    let client = Guard::new().with_telemetry(telemetry).client(http);

    let path = match config.surface {
        ApiSurface::Responses => "/responses",
        _ => "/chat/completions",
    };
    let url = format!("{base}{path}");
    let happy_body = match config.surface {
        ApiSurface::Responses => serde_json::json!({"model": config.model, "input": PROMPT}),
        _ => {
            serde_json::json!({"model": config.model, "messages": [{"role": "user", "content": PROMPT}]})
        }
    };
    let mut invalid_body = happy_body.clone();
    if let Some(o) = invalid_body.as_object_mut() {
        o.remove("model");
    }
    let happy = send(&client, &url, &key, &happy_body, config.surface).await;
    let invalid = send(&client, &url, &key, &invalid_body, config.surface).await;
    let _ = provider.force_flush();
    let exported = spans.get_finished_spans().unwrap_or_default();

    let (finish_reason_present, content_text) = answer(config.surface, &happy);
    let content_non_null = content_text.is_some();
    let error_shape_valid_on_4xx = error_shape_valid(&invalid);
    let telemetry_text: Vec<String> = exported.iter().map(|s| format!("{s:?}")).collect();
    let credential_logged = telemetry_text.iter().any(|t| t.contains(&key));
    let secret_texts: Vec<&str> = [
        Some(PROMPT),
        content_text.as_deref().filter(|t| t.len() >= 4),
    ]
    .into_iter()
    .flatten()
    .collect();
    let body_redacted = !telemetry_text
        .iter()
        .any(|t| secret_texts.iter().any(|s| t.contains(s)));
    let e = &happy.evidence;
    let support_packet_ready = happy.request_id
        || e.waf.as_ref().is_some_and(|w| w.reference.is_some())
        || happy
            .verdict
            .as_ref()
            .is_some_and(|v| v.facts.response_id.is_some());

    let (decision, note) = decide(
        e,
        finish_reason_present,
        content_non_null,
        error_shape_valid_on_4xx,
    );
    let mut record = Record {
        run_id,
        api_surface: config.surface.as_str(),
        request_profile: "happy_path+missing_model",
        status_class: e.status_class.as_str(),
        parse_check: e.parse_check.map_or("skipped", ParseCheck::as_str),
        fallback_decision: decision,
        retry_count: e.retry_count,
        credential_logged,
        body_redacted,
        support_packet_ready,
        operator_note: note,
        http_status: e.status.map_or(0, |s| s.as_u16()),
        finish_reason_present,
        content_non_null,
        error_shape_valid_on_4xx,
        test_timestamp_utc: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        pass: false,
    };
    // The record itself is output: it must not carry the key either.
    if record.to_text().contains(&key) {
        record.credential_logged = true;
    }
    record.pass =
        decision == DrillDecision::Promote && !record.credential_logged && record.body_redacted;
    drop(mock);
    Ok(record)
}

async fn send(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    surface: ApiSurface,
) -> Sent {
    let handle = EvidenceHandle::new();
    let sent = client
        .post(url)
        .with_extension(handle.clone())
        .with_extension(surface)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    match sent {
        Err(_) => Sent {
            evidence: handle.settled().await,
            verdict: None,
            body: Vec::new(),
            request_id: false,
        },
        Ok(response) => {
            let request_id = response.headers().contains_key("x-request-id");
            let stream = response
                .extensions()
                .get::<inspect::VerdictHandle>()
                .cloned();
            let mut verdict = inspect::verdict(&response);
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let evidence = handle.settled().await;
            if let Some(v) = stream {
                verdict = v.get();
            }
            Sent {
                evidence,
                verdict,
                body,
                request_id,
            }
        }
    }
}

/// Whether a finish reason came back, and the answer's text (the seed's two happy-path checks).
fn answer(surface: ApiSurface, sent: &Sent) -> (bool, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&sent.body) else {
        return (false, None);
    };
    if surface == ApiSurface::Responses {
        let finished = v["status"]
            .as_str()
            .is_some_and(|s| s == "completed" || s == "incomplete");
        let text = v["output"].as_array().and_then(|items| {
            items
                .iter()
                .filter_map(|i| i["content"].as_array())
                .flatten()
                .find(|p| p["type"] == "output_text")
                .and_then(|p| p["text"].as_str())
                .map(str::to_owned)
        });
        (finished, text)
    } else {
        let choice = &v["choices"][0];
        let finished = choice["finish_reason"]
            .as_str()
            .is_some_and(|r| ["stop", "length", "tool_calls", "content_filter"].contains(&r));
        (
            finished,
            choice["message"]["content"].as_str().map(str::to_owned),
        )
    }
}

/// The seed's `error_shape_valid_on_4xx`: a 4xx, and the OpenAI envelope with a message, a type
/// and the code key (`param` may be absent, as on CometAPI).
fn error_shape_valid(sent: &Sent) -> bool {
    let (Some(_), Some(v)) = (
        sent.evidence
            .status
            .filter(http::StatusCode::is_client_error),
        &sent.verdict,
    ) else {
        return false;
    };
    v.parse_check == ParseCheck::Pass
        && v.api_error
            .as_ref()
            .is_some_and(|e| e.shape == ErrorShape::Envelope && !e.message.is_empty())
        && !v.warnings.contains(Warning::MissingErrorType)
        && !v.warnings.contains(Warning::MissingErrorCode)
        && sent.evidence.waf.is_none()
}

fn decide(
    e: &Evidence,
    finish_reason_present: bool,
    content_non_null: bool,
    error_shape_valid: bool,
) -> (DrillDecision, String) {
    if let Some(w) = &e.waf {
        let reference = w.reference.as_deref().unwrap_or("no reference");
        return (
            DrillDecision::Hold,
            format!(
                "hold: a {} {} wall answered the happy path ({reference}); talk to the gateway, do not retry",
                w.vendor, w.kind
            ),
        );
    }
    match e.fallback_decision {
        FallbackDecision::Hold => (
            DrillDecision::Hold,
            format!(
                "hold: the happy path got {} ({}); fix the credentials or the request before promoting",
                e.status.map_or(0, |s| s.as_u16()),
                e.status_class
            ),
        ),
        FallbackDecision::None if finish_reason_present && content_non_null && error_shape_valid => (
            DrillDecision::Promote,
            "promote: the happy path answered in contract and the error path kept the error envelope".to_owned(),
        ),
        FallbackDecision::None => {
            let mut missing = Vec::new();
            if !finish_reason_present {
                missing.push("no finish reason");
            }
            if !content_non_null {
                missing.push("null content");
            }
            if !error_shape_valid {
                missing.push("the invalid request did not get a 4xx error envelope");
            }
            (DrillDecision::Hold, format!("hold: {}", missing.join(", ")))
        }
        _ => {
            let why = match (e.status_class, e.violation) {
                (StatusClass::TransportError, _) => "no response arrived".to_owned(),
                (_, Some(v)) => format!("the body broke its contract ({v})"),
                (class, None) => format!("the endpoint answered {class}"),
            };
            (DrillDecision::Rollback, format!("rollback: {why}; keep traffic on the primary"))
        }
    }
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("drill-{:x}{:04x}", nanos, std::process::id() & 0xffff)
}
