//! The evidence drill (`llm-guard smoke`, and the proxy's promotion of upstreams marked
//! `drill = true`): one happy-path request and one deliberately invalid request through one API
//! surface, before fallback traffic is promoted. Application code of the command, built on the
//! library's public API only.
//!
//! The verdict is the promotion decision: `promote` (both paths kept their contracts and nothing leaked),
//! `hold` (a wall, a credential or request problem, or an error shape retry logic would
//! misread: a human must look) or `rollback` (the endpoint failed: 5xx, exhausted 429s or an
//! edge's rate limit, a broken 2xx, no answer at all). The record never holds the key, the
//! prompt, a body or the API's error message.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde::{Deserialize, Serialize};

use reqwest_llm_guard::contract::{ContractVerdict, ErrorShape};
use reqwest_llm_guard::evidence::{
    ApiSurface, FallbackDecision, ParseCheck, StatusClass, Violation, WafKind, WafVendor, Warning,
};
use reqwest_llm_guard::mock::{MockGateway, Scenario};
use reqwest_llm_guard::telemetry::Telemetry;
use reqwest_llm_guard::telemetry::otlp;
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard, inspect};

/// What to drill.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) struct DrillConfig {
    /// The API's base URL, up to and including the version (`https://api.cometapi.com/v1`);
    /// `None` starts the embedded mock gateway.
    pub(crate) base_url: Option<String>,
    /// Which surface to drill.
    pub(crate) surface: ApiSurface,
    /// The model for the happy path.
    pub(crate) model: String,
    /// The name of the environment variable that holds the API key (never the key itself).
    pub(crate) api_key_env: String,
    /// The embedded mock gateway's scenario, when no base URL is given.
    pub(crate) mock_scenario: Scenario,
    /// Per-request timeout (default 60 s).
    pub(crate) timeout: Duration,
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
    pub(crate) fn with_base_url(mut self, url: Option<String>) -> Self {
        self.base_url = url;
        self
    }

    /// Through this surface.
    #[must_use]
    pub(crate) fn with_surface(mut self, surface: ApiSurface) -> Self {
        self.surface = surface;
        self
    }

    /// With this model.
    #[must_use]
    pub(crate) fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// With the key in this environment variable.
    #[must_use]
    pub(crate) fn with_api_key_env(mut self, name: impl Into<String>) -> Self {
        self.api_key_env = name.into();
        self
    }

    /// With the embedded mock gateway answering this way.
    #[must_use]
    pub(crate) fn with_mock_scenario(mut self, scenario: Scenario) -> Self {
        self.mock_scenario = scenario;
        self
    }

    /// With this per-request timeout.
    #[must_use]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The drill's verdict (field `fallback_decision` of the [`Record`]), written as its stable
/// string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DrillDecision {
    /// Both paths kept their contracts: fallback traffic may go here.
    Promote,
    /// A human must look before any traffic goes here.
    Hold,
    /// The endpoint is failing: keep (or put back) traffic on the primary.
    Rollback,
}

impl DrillDecision {
    /// The stable string form.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Hold => "hold",
            Self::Rollback => "rollback",
        }
    }
}

impl fmt::Display for DrillDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the drill sent (field `request_profile` of the [`Record`]): a minimal request with the
/// model and a fixed prompt, then the same request without its `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum RequestProfile {
    /// The only profile.
    #[serde(rename = "happy_path+missing_model")]
    HappyPathMissingModel,
}

impl fmt::Display for RequestProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("happy_path+missing_model")
    }
}

/// The record of one drill. Its enums are written as their stable strings, absent
/// values as `null` in JSON and empty in text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub(crate) struct Record {
    /// A fresh id for this run.
    pub(crate) run_id: String,
    /// `chat_completions` or `responses`.
    pub(crate) api_surface: ApiSurface,
    /// What was sent: the happy path and the invalid request.
    pub(crate) request_profile: RequestProfile,
    /// The happy path's status class (`transport_error` when no response arrived).
    pub(crate) status_class: StatusClass,
    /// The happy path's contract check.
    pub(crate) parse_check: ParseCheck,
    /// `promote`, `hold` or `rollback`.
    pub(crate) fallback_decision: DrillDecision,
    /// Retries the happy path needed.
    pub(crate) retry_count: u32,
    /// Whether the key's value appeared in any span, event or in this record.
    pub(crate) credential_logged: bool,
    /// Whether the prompt and the bodies stayed out of the telemetry.
    pub(crate) body_redacted: bool,
    /// Whether there is something to quote to support: a response or request id, or a WAF
    /// reference.
    pub(crate) support_packet_ready: bool,
    /// One line for the operator.
    pub(crate) operator_note: String,
    /// The happy path's HTTP status; `None` when no response arrived.
    pub(crate) http_status: Option<u16>,
    /// A finish reason came back, one the contract checker knows (Chat: every choice's
    /// `finish_reason`; Responses: a `completed` or `incomplete` status).
    pub(crate) finish_reason_present: bool,
    /// The answer's text is a non-null string.
    pub(crate) content_non_null: bool,
    /// The invalid request got a 4xx whose body is the error envelope retry logic expects:
    /// `error.message` a non-empty string, `error.type` a string, `error.code` present.
    pub error_shape_valid_on_4xx: bool,
    /// The host drilled, from the base URL: no userinfo, port, path or query.
    pub(crate) endpoint_host: String,
    /// The model the happy path asked for.
    pub(crate) model: String,
    /// The vendor of the wall that answered the happy path, if one did.
    pub(crate) waf_vendor: Option<WafVendor>,
    /// `block`, `challenge`, `suspected` or `rate_limit`.
    pub(crate) waf_kind: Option<WafKind>,
    /// The wall's reference for the vendor's support (Cloudflare Ray ID, Akamai Reference #, …).
    pub(crate) waf_reference: Option<String>,
    /// The happy path's API error type (`invalid_request_error`, …), if its body carried one.
    pub(crate) error_type: Option<String>,
    /// The happy path's API error code (`invalid_api_key`, `429`, …). The error's message is
    /// never recorded: it may quote the request.
    pub(crate) error_code: Option<String>,
    /// When the drill ran (RFC 3339, UTC).
    pub(crate) test_timestamp_utc: String,
    /// `fallback_decision == promote`, nothing logged, bodies redacted.
    pub(crate) pass: bool,
}

fn text_or_empty<T: fmt::Display>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl Record {
    /// `field: value` lines: the record's original fields in their order, then the newer ones.
    pub(crate) fn to_text(&self) -> String {
        let fields: [(&str, String); 24] = [
            ("run_id", self.run_id.clone()),
            ("api_surface", self.api_surface.to_string()),
            ("request_profile", self.request_profile.to_string()),
            ("status_class", self.status_class.to_string()),
            ("parse_check", self.parse_check.to_string()),
            ("fallback_decision", self.fallback_decision.to_string()),
            ("retry_count", self.retry_count.to_string()),
            ("credential_logged", self.credential_logged.to_string()),
            ("body_redacted", self.body_redacted.to_string()),
            (
                "support_packet_ready",
                self.support_packet_ready.to_string(),
            ),
            ("operator_note", self.operator_note.clone()),
            ("http_status", text_or_empty(self.http_status)),
            (
                "finish_reason_present",
                self.finish_reason_present.to_string(),
            ),
            ("content_non_null", self.content_non_null.to_string()),
            (
                "error_shape_valid_on_4xx",
                self.error_shape_valid_on_4xx.to_string(),
            ),
            ("endpoint_host", self.endpoint_host.clone()),
            ("model", self.model.clone()),
            ("waf_vendor", text_or_empty(self.waf_vendor)),
            ("waf_kind", text_or_empty(self.waf_kind)),
            ("waf_reference", text_or_empty(self.waf_reference.as_ref())),
            ("error_type", text_or_empty(self.error_type.as_ref())),
            ("error_code", text_or_empty(self.error_code.as_ref())),
            ("test_timestamp_utc", self.test_timestamp_utc.clone()),
            ("pass", self.pass.to_string()),
        ];
        let mut out = String::new();
        for (k, v) in fields {
            out.push_str(k);
            out.push_str(": ");
            // One field a line, whatever a provider put in a code or a model name.
            out.extend(v.chars().map(|c| if c.is_control() { ' ' } else { c }));
            out.push('\n');
        }
        out
    }

    /// The record as one JSON object.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why the drill could not run. Match on [`DrillError::kind`]; the message text is not API,
/// the cause is in [`source`](std::error::Error::source).
///
/// The endpoint's own failures are not errors: they are findings in the [`Record`].
#[derive(Debug)]
pub(crate) struct DrillError {
    kind: DrillErrorKind,
    /// The environment variable concerned, for [`DrillErrorKind::MissingApiKey`].
    variable: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// What kept the drill from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum DrillErrorKind {
    /// The embedded mock gateway could not start (no loopback port to listen on).
    MockGateway,
    /// The environment variable named in [`DrillConfig::api_key_env`] holds no key, and a base
    /// URL was given (the mock gateway needs none).
    MissingApiKey,
    /// The base URL is not an absolute `http` or `https` URL with a host.
    InvalidBaseUrl,
    /// The HTTP client could not be built (its TLS set-up).
    HttpClient,
    /// The OTLP export could not be built from the `OTEL_*` variables.
    Export,
    /// The drill's own spans could not be read back to look for the key and the prompt.
    LeakCheck,
}

impl DrillError {
    fn new(kind: DrillErrorKind) -> Self {
        Self {
            kind,
            variable: None,
            source: None,
        }
    }

    fn with_source(kind: DrillErrorKind, source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            source: Some(Box::new(source)),
            ..Self::new(kind)
        }
    }

    /// What kept the drill from running.
    pub(crate) fn kind(&self) -> DrillErrorKind {
        self.kind
    }
}

impl fmt::Display for DrillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DrillErrorKind::MockGateway => f.write_str("cannot start the mock gateway"),
            DrillErrorKind::MissingApiKey => write!(
                f,
                "the environment variable {} holds no API key",
                self.variable.as_deref().unwrap_or_default()
            ),
            // The URL itself is not repeated: it may carry a key in its userinfo or query.
            DrillErrorKind::InvalidBaseUrl => {
                f.write_str("the base URL is not an absolute http(s) URL with a host")
            }
            DrillErrorKind::HttpClient => f.write_str("cannot build the HTTP client"),
            DrillErrorKind::Export => f.write_str("cannot build the OTLP export"),
            DrillErrorKind::LeakCheck => {
                f.write_str("cannot read back the drill's spans to check them for leaks")
            }
        }
    }
}

impl StdError for DrillError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// OTLP export of the drill's spans and metrics, built from the `OTEL_*` variables the way
/// [`otlp`] reads them (protocol, endpoint, headers, timeout,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
///
/// The drill keeps its own tracer provider, because it reads back every span it made to look
/// for the key and the prompt; with an export, the same spans are also sent on through OTLP.
#[derive(Debug)]
pub(crate) struct DrillExport {
    spans: SpanExporter,
    meters: SdkMeterProvider,
}

impl DrillExport {
    /// Builds the exporters. The HTTP exporter builds a blocking client, and the gRPC one needs
    /// a tokio runtime: call it inside `tokio::task::spawn_blocking`.
    pub(crate) fn from_env() -> Result<Self, DrillError> {
        // The library's one OTLP set-up: the same exporters, resource and reader.
        let (spans, metrics) = otlp::exporters_from_env()
            .map_err(|e| DrillError::with_source(DrillErrorKind::Export, e))?;
        Ok(Self {
            spans,
            meters: otlp::meter_provider(metrics),
        })
    }
}

const PROMPT: &str = "Reply with exactly the word PASS.";

struct Sent {
    evidence: Evidence,
    /// The inspect layer's verdict, as the response carried it (a stream's once it ended).
    verdict: Option<ContractVerdict>,
    body: Vec<u8>,
    request_id: bool,
}

/// Runs the drill, sending its spans and metrics on through `export` as well. The export is
/// flushed and shut down before this returns.
pub(crate) async fn run_with_export(
    config: DrillConfig,
    export: Option<DrillExport>,
) -> Result<Record, DrillError> {
    let run_id = run_id();
    let endpoint_host = match &config.base_url {
        Some(url) => Some(host_of(url)?),
        None => None,
    };
    let mock = match &config.base_url {
        Some(_) => None,
        None => Some(
            MockGateway::start_with(config.mock_scenario, ([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| DrillError::with_source(DrillErrorKind::MockGateway, e))?,
        ),
    };
    let (base, endpoint_host) = match (&config.base_url, &mock, endpoint_host) {
        (Some(url), _, Some(host)) => (url.trim_end_matches('/').to_owned(), host),
        (_, Some(m), _) => (format!("{}/v1", m.url()), m.addr().ip().to_string()),
        _ => unreachable!("a mock is started when no base URL is given"),
    };
    let key = std::env::var(&config.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let key = match (key, &mock) {
        (Some(k), _) => k,
        // The mock needs no key: send a unique one, so a leak would still be caught.
        (None, Some(_)) => format!("sk-drill-{run_id}"),
        (None, None) => {
            return Err(DrillError {
                variable: Some(config.api_key_env.clone()),
                ..DrillError::new(DrillErrorKind::MissingApiKey)
            });
        }
    };

    let spans = InMemorySpanExporter::default();
    let mut tracing = SdkTracerProvider::builder().with_simple_exporter(spans.clone());
    let mut telemetry = Telemetry::new();
    let mut meters = None;
    if let Some(export) = export {
        tracing = tracing
            .with_batch_exporter(export.spans)
            .with_resource(Resource::builder().build());
        telemetry = telemetry.with_meter_provider(&export.meters);
        meters = Some(export.meters);
    }
    let provider = tracing.build();
    let telemetry = telemetry.with_tracer_provider(&provider);
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| DrillError::with_source(DrillErrorKind::HttpClient, e))?;
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
    drop(client);
    // The OTLP exporters block while they flush: off the async workers, and before returning,
    // so a command that exits right after loses nothing.
    let exported = tokio::task::spawn_blocking(move || {
        let _ = provider.force_flush();
        let exported = spans.get_finished_spans();
        let _ = provider.shutdown();
        if let Some(meters) = meters {
            let _ = meters.force_flush();
            let _ = meters.shutdown();
        }
        exported
    })
    .await
    .map_err(|e| DrillError::with_source(DrillErrorKind::LeakCheck, e))?
    // Spans that cannot be read cannot be cleared of the key: no record rather than a pass.
    .map_err(|e| DrillError::with_source(DrillErrorKind::LeakCheck, e))?;

    let content_text = answer_text(config.surface, &happy.body);
    let checks = Checks {
        finish_reason_present: finish_reason_present(config.surface, happy.verdict.as_ref()),
        content_non_null: content_text.is_some(),
        error_shape_valid: error_shape_valid(&invalid),
    };
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

    let (decision, note) = decide(e, checks);
    let mut record = Record {
        run_id,
        api_surface: config.surface,
        request_profile: RequestProfile::HappyPathMissingModel,
        status_class: e.status_class,
        parse_check: e.parse_check.unwrap_or(ParseCheck::Skipped),
        fallback_decision: decision,
        retry_count: e.retry_count,
        credential_logged,
        body_redacted,
        support_packet_ready,
        operator_note: note,
        http_status: e.status.map(|s| s.as_u16()),
        finish_reason_present: checks.finish_reason_present,
        content_non_null: checks.content_non_null,
        error_shape_valid_on_4xx: checks.error_shape_valid,
        endpoint_host,
        model: config.model,
        waf_vendor: e.waf.as_ref().map(|w| w.vendor),
        waf_kind: e.waf.as_ref().map(|w| w.kind),
        waf_reference: e.waf.as_ref().and_then(|w| w.reference.clone()),
        error_type: e.api_error.as_ref().and_then(|a| a.error_type.clone()),
        error_code: e
            .api_error
            .as_ref()
            .and_then(|a| a.code.as_ref())
            .map(|c| c.as_text().into_owned()),
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

/// The host of a base URL, without userinfo, port, path or query.
fn host_of(base_url: &str) -> Result<String, DrillError> {
    let invalid = |e| DrillError::with_source(DrillErrorKind::InvalidBaseUrl, e);
    let url = reqwest::Url::parse(base_url).map_err(invalid)?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) if !host.is_empty() => Ok(host.to_owned()),
        _ => Err(DrillError::new(DrillErrorKind::InvalidBaseUrl)),
    }
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

/// The check `finish_reason_present`, from the contract checker's facts and its own list of
/// finish reasons: every Chat choice came back with one the checker knows; a Responses object
/// ended `completed` or `incomplete` (the checker's reason for `failed` and `cancelled` is no
/// finish, and it fails those bodies).
fn finish_reason_present(surface: ApiSurface, verdict: Option<&ContractVerdict>) -> bool {
    let Some(v) = verdict else {
        return false;
    };
    if v.facts.finish_reasons.is_empty() {
        return false;
    }
    match surface {
        ApiSurface::Responses => !matches!(
            v.violation,
            Some(Violation::ResponseFailed | Violation::ResponseCancelled)
        ),
        _ => {
            !v.warnings.contains(Warning::MissingFinishReason)
                && !v.warnings.contains(Warning::UnknownFinishReason)
        }
    }
}

/// The answer's text: Chat's first message content, Responses' first `output_text` part.
///
/// This is the drill's one read of a body. The checker's facts carry the text only with content
/// capture on, and capture would put the text into the very spans the drill searches for it;
/// nor can they say `null` from `""`, which is what `content_non_null` asks. So the drill reads
/// these two fields itself, and nothing else.
fn answer_text(surface: ApiSurface, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Chat<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        message: Option<Message<'a>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        content: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Response<'a> {
        #[serde(borrow, default)]
        output: Vec<Item<'a>>,
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow, default)]
        content: Vec<Part<'a>>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
    }
    let text = match surface {
        ApiSurface::Responses => {
            serde_json::from_slice::<Response<'_>>(body)
                .ok()?
                .output
                .into_iter()
                .flat_map(|item| item.content)
                .find(|part| part.kind.as_deref() == Some("output_text"))?
                .text?
        }
        _ => {
            serde_json::from_slice::<Chat<'_>>(body)
                .ok()?
                .choices
                .into_iter()
                .next()?
                .message?
                .content?
        }
    };
    Some(text.into_owned())
}

/// The check `error_shape_valid_on_4xx`: a 4xx, and the OpenAI envelope with a message, a type
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

/// The drill's three checks of the answers, beside the happy path's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checks {
    finish_reason_present: bool,
    content_non_null: bool,
    error_shape_valid: bool,
}

/// The drill's verdict and the operator's note, from the happy path's evidence (decided by the
/// default decision table) and the checks.
///
/// | happy path | checks | verdict |
/// |---|---|---|
/// | a wall (block, challenge, suspected) | any | `hold`: talk to the edge's owner |
/// | the edge's own rate limit | any | `rollback`: as a 429 whose retries ran out |
/// | `hold` (401, 403, 400, 404, …) | any | `hold`: credentials or request |
/// | `none` (a 2xx in contract) | all three pass | `promote` |
/// | `none` | any fails | `hold`: the answers are not what fallback code reads |
/// | `fallback` (5xx, 429, transport error, broken 2xx) | any | `rollback` |
fn decide(e: &Evidence, checks: Checks) -> (DrillDecision, String) {
    if let Some(w) = &e.waf {
        let reference = w.reference.as_deref().unwrap_or("no reference");
        return if w.kind == WafKind::RateLimit {
            (
                DrillDecision::Rollback,
                format!(
                    "rollback: the {} edge rate-limited the happy path ({reference}); keep traffic on the primary",
                    w.vendor
                ),
            )
        } else {
            (
                DrillDecision::Hold,
                format!(
                    "hold: a {} {} wall answered the happy path ({reference}); talk to the gateway, do not retry",
                    w.vendor, w.kind
                ),
            )
        };
    }
    match e.fallback_decision {
        FallbackDecision::Hold => {
            let status = e
                .status
                .map_or_else(|| "no response".to_owned(), |s| s.as_u16().to_string());
            let code = e
                .api_error
                .as_ref()
                .and_then(|a| a.code.as_ref())
                .map(|c| format!(" {}", c.as_text()))
                .unwrap_or_default();
            (
                DrillDecision::Hold,
                format!(
                    "hold: the happy path got {status}{code} ({}); fix the credentials or the request before promoting",
                    e.status_class
                ),
            )
        }
        FallbackDecision::None
            if checks.finish_reason_present
                && checks.content_non_null
                && checks.error_shape_valid =>
        {
            (
                DrillDecision::Promote,
                "promote: the happy path answered in contract and the error path kept the error envelope".to_owned(),
            )
        }
        FallbackDecision::None => {
            let mut missing = Vec::new();
            if !checks.finish_reason_present {
                missing.push("no finish reason");
            }
            if !checks.content_non_null {
                missing.push("null content");
            }
            if !checks.error_shape_valid {
                missing.push("the invalid request did not get a 4xx error envelope");
            }
            (DrillDecision::Hold, format!("hold: {}", missing.join(", ")))
        }
        FallbackDecision::Fallback | FallbackDecision::Retry => {
            let why = match (e.status_class, e.violation) {
                (StatusClass::TransportError, _) => "no response arrived".to_owned(),
                (_, Some(v)) => format!("the body broke its contract ({v})"),
                (class, None) => format!("the endpoint answered {class}"),
            };
            (
                DrillDecision::Rollback,
                format!("rollback: {why}; keep traffic on the primary"),
            )
        }
    }
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("drill-{:x}{:04x}", nanos, std::process::id() & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use reqwest_llm_guard::contract::{ApiError, check_body};
    use reqwest_llm_guard::evidence::{DecisionTable, Outcome, TransportErrorKind, WafVerdict};

    const ALL_PASS: Checks = Checks {
        finish_reason_present: true,
        content_non_null: true,
        error_shape_valid: true,
    };

    /// The happy path's evidence as the call layer leaves it, decided by the default table.
    #[allow(clippy::needless_pass_by_value)]
    fn evidence(
        status: Option<u16>,
        violation: Option<Violation>,
        api_error: Option<&str>,
        waf: Option<WafVerdict>,
    ) -> Evidence {
        let status = status.map(|s| StatusCode::from_u16(s).unwrap());
        let parse_check = if violation.is_some() {
            ParseCheck::Fail
        } else {
            ParseCheck::Pass
        };
        let api_error = api_error.map(|body| ApiError::from_body(body.as_bytes()).unwrap());
        let mut outcome = match status {
            Some(s) => Outcome::response(s, parse_check, violation),
            None => Outcome::transport_error(TransportErrorKind::Timeout),
        };
        if let Some(w) = &waf {
            outcome = outcome.with_waf(w);
        }
        if let Some(a) = &api_error {
            outcome = outcome.with_api_error(a);
        }
        let mut e = Evidence::of_outcome(
            ApiSurface::ChatCompletions,
            &outcome,
            &DecisionTable::default(),
        );
        // The call layer reads the violation from the verdict, with or without a status.
        e.violation = violation;
        e
    }

    fn wall(kind: WafKind) -> WafVerdict {
        WafVerdict::new(WafVendor::Cloudflare, kind).with_reference("8f1c2d3e4a5b6c7d")
    }

    const INVALID_KEY: &str = r#"{"error":{"message":"Incorrect API key provided: sk-…","type":"invalid_request_error","code":"invalid_api_key","param":null}}"#;

    /// Every row of `decide`, with the rows next to it as negatives.
    #[test]
    fn decide_row_by_row() {
        use DrillDecision::{Hold, Promote, Rollback};
        let checks_fail = |f: fn(&mut Checks)| {
            let mut c = ALL_PASS;
            f(&mut c);
            c
        };
        let no_finish = checks_fail(|c| c.finish_reason_present = false);
        let null_content = checks_fail(|c| c.content_non_null = false);
        let bad_envelope = checks_fail(|c| c.error_shape_valid = false);
        let ok = evidence(Some(200), None, None, None);
        let rows: Vec<(&str, Evidence, Checks, DrillDecision, &str)> = vec![
            // A wall holds whatever the status and the checks.
            (
                "block page on 403",
                evidence(
                    Some(403),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::Block)),
                ),
                ALL_PASS,
                Hold,
                "cloudflare block wall answered the happy path (8f1c2d3e4a5b6c7d)",
            ),
            (
                "challenge on 200",
                evidence(
                    Some(200),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::Challenge)),
                ),
                ALL_PASS,
                Hold,
                "challenge wall",
            ),
            (
                "suspected edge on 503",
                evidence(
                    Some(503),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::Suspected)),
                ),
                ALL_PASS,
                Hold,
                "suspected wall",
            ),
            (
                "challenge on 429 is a wall, not a rate limit",
                evidence(
                    Some(429),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::Challenge)),
                ),
                ALL_PASS,
                Hold,
                "do not retry",
            ),
            // An edge's own rate limit rolls back, as an exhausted 429 does.
            (
                "edge rate limit on 429",
                evidence(
                    Some(429),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::RateLimit)),
                ),
                ALL_PASS,
                Rollback,
                "cloudflare edge rate-limited the happy path (8f1c2d3e4a5b6c7d)",
            ),
            (
                "edge rate limit on 403",
                evidence(
                    Some(403),
                    Some(Violation::HtmlBody),
                    None,
                    Some(wall(WafKind::RateLimit)),
                ),
                ALL_PASS,
                Rollback,
                "keep traffic on the primary",
            ),
            (
                "exhausted 429",
                evidence(Some(429), None, None, None),
                ALL_PASS,
                Rollback,
                "the endpoint answered 4xx",
            ),
            // The table's hold: credentials or request.
            (
                "401 with its code",
                evidence(Some(401), None, Some(INVALID_KEY), None),
                ALL_PASS,
                Hold,
                "got 401 invalid_api_key (4xx); fix the credentials",
            ),
            (
                "404 without a code",
                evidence(Some(404), None, None, None),
                ALL_PASS,
                Hold,
                "got 404 (4xx)",
            ),
            // A 2xx in contract promotes only with all three checks.
            (
                "2xx, every check",
                ok.clone(),
                ALL_PASS,
                Promote,
                "promote:",
            ),
            (
                "2xx, no finish reason",
                ok.clone(),
                no_finish,
                Hold,
                "hold: no finish reason",
            ),
            (
                "2xx, null content",
                ok.clone(),
                null_content,
                Hold,
                "hold: null content",
            ),
            (
                "2xx, no error envelope on the invalid request",
                ok.clone(),
                bad_envelope,
                Hold,
                "did not get a 4xx error envelope",
            ),
            (
                "2xx, nothing passes",
                ok,
                Checks {
                    finish_reason_present: false,
                    content_non_null: false,
                    error_shape_valid: false,
                },
                Hold,
                "no finish reason, null content, the invalid request",
            ),
            // The table's fallback rolls back, whatever the checks.
            (
                "500",
                evidence(Some(500), None, None, None),
                ALL_PASS,
                Rollback,
                "the endpoint answered 5xx",
            ),
            (
                "timeout",
                evidence(None, None, None, None),
                ALL_PASS,
                Rollback,
                "no response arrived",
            ),
            (
                "broken 2xx",
                evidence(Some(200), Some(Violation::HtmlBody), None, None),
                ALL_PASS,
                Rollback,
                "the body broke its contract (html_body)",
            ),
            (
                "402 credits",
                evidence(Some(402), None, None, None),
                ALL_PASS,
                Rollback,
                "rollback:",
            ),
        ];
        for (name, e, checks, want, note) in rows {
            let (got, got_note) = decide(&e, checks);
            assert_eq!(got, want, "{name}: {got_note}");
            assert!(got_note.starts_with(want.as_str()), "{name}: {got_note}");
            assert!(
                got_note.contains(note),
                "{name}: {got_note:?} lacks {note:?}"
            );
        }
    }

    #[test]
    fn a_retry_answer_rolls_back_like_a_fallback() {
        let mut e = evidence(Some(500), None, None, None);
        e.fallback_decision = FallbackDecision::Retry;
        assert_eq!(decide(&e, ALL_PASS).0, DrillDecision::Rollback);
    }

    fn verdict(surface: ApiSurface, body: &str) -> ContractVerdict {
        check_body(
            surface,
            StatusCode::OK,
            Some("application/json"),
            body.as_bytes(),
            reqwest_llm_guard::contract::Mode::Compat,
        )
    }

    fn chat(finish: &str, content: &str) -> String {
        format!(
            r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":{content},"refusal":null}},"logprobs":null,"finish_reason":{finish}}}]}}"#
        )
    }

    fn responses(status: &str) -> String {
        format!(
            r#"{{"id":"resp_1","object":"response","created_at":1,"model":"m","status":"{status}","output":[{{"type":"message","id":"m1","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"PASS","annotations":[]}}]}}]}}"#
        )
    }

    #[test]
    fn finish_reasons_are_the_checkers() {
        let chat_present = |finish: &str| {
            finish_reason_present(
                ApiSurface::ChatCompletions,
                Some(&verdict(
                    ApiSurface::ChatCompletions,
                    &chat(finish, "\"x\""),
                )),
            )
        };
        // The checker's five, `function_call` included.
        for known in [
            "\"stop\"",
            "\"length\"",
            "\"tool_calls\"",
            "\"content_filter\"",
            "\"function_call\"",
        ] {
            assert!(chat_present(known), "{known}");
        }
        for unknown in ["\"eos_token\"", "\"\"", "null"] {
            assert!(!chat_present(unknown), "{unknown}");
        }
        let resp_present = |status: &str| {
            finish_reason_present(
                ApiSurface::Responses,
                Some(&verdict(ApiSurface::Responses, &responses(status))),
            )
        };
        assert!(resp_present("completed"));
        assert!(resp_present("incomplete"));
        for not_finished in ["failed", "cancelled", "in_progress", "queued"] {
            assert!(!resp_present(not_finished), "{not_finished}");
        }
        assert!(!finish_reason_present(ApiSurface::ChatCompletions, None));
    }

    #[test]
    fn answer_text_tells_null_from_empty() {
        let chat_text = |content: &str| {
            answer_text(
                ApiSurface::ChatCompletions,
                chat("\"stop\"", content).as_bytes(),
            )
        };
        assert_eq!(chat_text("\"PASS\"").as_deref(), Some("PASS"));
        assert_eq!(chat_text("\"\"").as_deref(), Some(""));
        assert_eq!(chat_text("null"), None);
        assert_eq!(chat_text("[1]"), None);
        assert_eq!(
            answer_text(ApiSurface::Responses, responses("completed").as_bytes()).as_deref(),
            Some("PASS")
        );
        assert_eq!(answer_text(ApiSurface::Responses, b"<html>"), None);
        assert_eq!(answer_text(ApiSurface::ChatCompletions, b""), None);
    }

    #[test]
    fn the_host_is_only_the_host() {
        for (url, host) in [
            ("https://api.cometapi.com/v1", "api.cometapi.com"),
            (
                "https://user:sk-secret@gw.example:8443/v1?key=sk-x",
                "gw.example",
            ),
            ("http://127.0.0.1:9/v1", "127.0.0.1"),
            ("http://[::1]:8080/v1", "[::1]"),
        ] {
            assert_eq!(host_of(url).unwrap(), host, "{url}");
        }
        for bad in ["api.openai.com/v1", "file:///etc/passwd", "ftp://h/v1", ""] {
            let e = host_of(bad).unwrap_err();
            assert_eq!(e.kind(), DrillErrorKind::InvalidBaseUrl, "{bad}");
        }
        let e = host_of("https://user:sk-secret@/v1").unwrap_err();
        assert!(!e.to_string().contains("sk-secret"));
    }

    fn record() -> Record {
        Record {
            run_id: "drill-1".to_owned(),
            api_surface: ApiSurface::Responses,
            request_profile: RequestProfile::HappyPathMissingModel,
            status_class: StatusClass::TransportError,
            parse_check: ParseCheck::Skipped,
            fallback_decision: DrillDecision::Rollback,
            retry_count: 0,
            credential_logged: false,
            body_redacted: true,
            support_packet_ready: false,
            operator_note: "rollback: no response arrived".to_owned(),
            http_status: None,
            finish_reason_present: false,
            content_non_null: false,
            error_shape_valid_on_4xx: false,
            endpoint_host: "127.0.0.1".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            waf_vendor: Some(WafVendor::Cloudflare),
            waf_kind: Some(WafKind::RateLimit),
            waf_reference: None,
            error_type: None,
            error_code: Some("line\nbreak".to_owned()),
            test_timestamp_utc: "2026-01-01T00:00:00Z".to_owned(),
            pass: false,
        }
    }

    #[test]
    fn text_and_json_carry_the_same_fields_and_strings() {
        let r = record();
        let text = r.to_text();
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let keys = json.as_object().unwrap();
        assert_eq!(text.lines().count(), keys.len(), "{text}");
        for (k, v) in keys {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("no {k} in {text}"));
            match v {
                serde_json::Value::Null => assert_eq!(line, "", "{k}"),
                serde_json::Value::String(s) if s.contains('\n') => {
                    assert_eq!(line, s.replace('\n', " "), "{k}");
                }
                serde_json::Value::String(s) => assert_eq!(line, s, "{k}"),
                other => assert_eq!(line, other.to_string(), "{k}"),
            }
        }
        assert_eq!(json["http_status"], serde_json::Value::Null);
        assert_eq!(json["api_surface"], "responses");
        assert_eq!(json["request_profile"], "happy_path+missing_model");
        assert_eq!(json["status_class"], "transport_error");
        assert_eq!(json["fallback_decision"], "rollback");
        assert_eq!(json["waf_kind"], "rate_limit");
    }
}
