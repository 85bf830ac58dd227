//! `llm-guard check`: a saved response judged offline by the library's own judgement
//! (`reqwest_llm_guard::judge::saved`, the functions the inspect layer judges a live response
//! with), and decided by the default decision table.

use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::process::ExitCode;

use http::StatusCode;
use reqwest_llm_guard::contract::{ErrorShape, Mode};
use reqwest_llm_guard::evidence::{
    self, ApiSurface, DecisionTable, FallbackDecision, Outcome, ParseCheck, SkipReason,
    StatusClass, Violation, WafKind, WafVendor, Warning,
};
use reqwest_llm_guard::sse::{Decoder, Frame};
use serde::{Deserialize, Serialize};

use crate::Surface;
use crate::saved::{self, Saved, Unusable};

/// `llm-guard check`'s arguments.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// The saved response, or `-` for stdin: as `curl -i` saves it (status line, headers,
    /// blank line, body; several heads of a redirect chain: the last is judged), or the body
    /// alone with --status (or --stream).
    input: String,
    /// The body's HTTP status: the input is then the body alone.
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=999))]
    status: Option<u16>,
    /// A header of a body given alone, `name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Judge a 2xx body as a server-sent-event stream, whatever its content-type (a body
    /// alone without --status is then taken as a 200).
    #[arg(long)]
    stream: bool,
    /// The API surface the response came from; without it, guessed from the body.
    #[arg(long, value_enum)]
    surface: Option<Surface>,
    /// Print the evidence as JSON.
    #[arg(long)]
    json: bool,
}

/// Judges the input; exit 0 when the decision is `none`, 1 for any other, 2 for input that
/// cannot be judged.
pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    let judgement = match read(args) {
        Ok(saved) => judge(&saved, args.surface.map(Surface::api), args.stream),
        Err(why) => {
            eprintln!("llm-guard check: {why}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&judgement).unwrap_or_default()
        );
    } else {
        print!("{}", judgement.to_text());
    }
    if judgement.fallback_decision == FallbackDecision::None {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads the input and takes it apart as the flags say.
fn read(args: &CheckArgs) -> Result<Saved, String> {
    let bytes = if args.input == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        bytes
    } else {
        std::fs::read(&args.input).map_err(|e| format!("cannot read {}: {e}", args.input))?
    };
    let saved = match args.status {
        Some(code) => {
            let status = StatusCode::from_u16(code).map_err(|e| format!("--status {code}: {e}"))?;
            saved::from_body(status, &args.headers, bytes)
        }
        None => match saved::parse_raw(&bytes) {
            Ok(_) if !args.headers.is_empty() => {
                return Err(
                    "--header goes with a body given alone (--status or --stream); \
                     a raw response carries its own headers"
                        .to_owned(),
                );
            }
            Err(Unusable::NotAResponse) if args.stream => {
                saved::from_body(StatusCode::OK, &args.headers, bytes)
            }
            parsed => parsed,
        },
    };
    saved.map_err(|e| e.to_string())
}

/// Where the surface came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum SurfaceSource {
    /// `--surface`.
    Given,
    /// The body named it.
    Guessed,
    /// Nothing said: Chat Completions is checked. Only a 2xx body's check depends on the
    /// surface; an error envelope, a wall and a status are judged alike on both.
    Assumed,
}

impl fmt::Display for SurfaceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Given => "given",
            Self::Guessed => "guessed",
            Self::Assumed => "assumed",
        })
    }
}

/// The surface a body names: `"object":"chat.completion"` (or `.chunk`) is Chat Completions,
/// `"object":"response"` or a `response.*` event type is Responses; for a stream, the first
/// event that names one.
fn guess_surface(body: &[u8]) -> Option<ApiSurface> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        object: Option<Cow<'a, str>>,
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
    }
    fn named(event_type: Option<&str>, data: &[u8]) -> Option<ApiSurface> {
        let probe = serde_json::from_slice::<Probe<'_>>(data).ok();
        let object = probe.as_ref().and_then(|p| p.object.as_deref());
        let kind = probe
            .as_ref()
            .and_then(|p| p.kind.as_deref())
            .or(event_type);
        match (object, kind) {
            (Some("chat.completion" | "chat.completion.chunk"), _) => {
                Some(ApiSurface::ChatCompletions)
            }
            (Some("response"), _) => Some(ApiSurface::Responses),
            (_, Some(kind)) if kind.starts_with("response.") => Some(ApiSurface::Responses),
            _ => None,
        }
    }
    if reqwest_llm_guard::judge::starts_like_events(body) != Some(true) {
        return named(None, body);
    }
    let mut decoder = Decoder::new();
    let mut found = None;
    let mut on_frame = |frame: Frame<'_>| {
        if let (None, Frame::Event(event)) = (found, frame) {
            found = named(event.event_type(), event.data());
        }
    };
    decoder.feed(body, &mut on_frame);
    decoder.finish(&mut on_frame);
    found
}

/// What `check` prints: the evidence a live call through the layers would leave. Enums are
/// written as their stable strings, lists comma-separated in text, absent values empty in text
/// and `null` in JSON.
#[derive(Debug, Serialize)]
struct Judgement {
    api_surface: ApiSurface,
    /// `given` (--surface), `guessed` (from the body) or `assumed` (nothing said).
    api_surface_source: SurfaceSource,
    /// Heads in the input (the last is judged); 0 for a body given alone.
    heads: usize,
    http_status: u16,
    status_class: StatusClass,
    parse_check: ParseCheck,
    violation: Option<Violation>,
    violation_offset: Option<u64>,
    skip_reason: Option<SkipReason>,
    warnings: Vec<Warning>,
    waf_vendor: Option<WafVendor>,
    waf_kind: Option<WafKind>,
    waf_reference: Option<String>,
    waf_location: Option<String>,
    error_shape: Option<ErrorShape>,
    error_type: Option<String>,
    error_code: Option<String>,
    error_param: Option<String>,
    error_status: Option<u16>,
    /// The provider's message: local output of a local file, so it is shown here.
    error_message: Option<String>,
    response_id: Option<String>,
    response_model: Option<String>,
    finish_reasons: Vec<String>,
    /// SSE events read (0 for a body that is not a stream).
    events: u64,
    fallback_decision: FallbackDecision,
}

fn text_or_empty(value: Option<impl fmt::Display>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn comma_separated(values: &[impl fmt::Display]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Judgement {
    /// `field: value` lines, in the JSON's order.
    fn to_text(&self) -> String {
        let fields: [(&str, String); 25] = [
            ("api_surface", self.api_surface.to_string()),
            ("api_surface_source", self.api_surface_source.to_string()),
            ("heads", self.heads.to_string()),
            ("http_status", self.http_status.to_string()),
            ("status_class", self.status_class.to_string()),
            ("parse_check", self.parse_check.to_string()),
            ("violation", text_or_empty(self.violation)),
            ("violation_offset", text_or_empty(self.violation_offset)),
            ("skip_reason", text_or_empty(self.skip_reason)),
            ("warnings", comma_separated(&self.warnings)),
            ("waf_vendor", text_or_empty(self.waf_vendor)),
            ("waf_kind", text_or_empty(self.waf_kind)),
            ("waf_reference", text_or_empty(self.waf_reference.as_ref())),
            ("waf_location", text_or_empty(self.waf_location.as_ref())),
            ("error_shape", text_or_empty(self.error_shape)),
            ("error_type", text_or_empty(self.error_type.as_ref())),
            ("error_code", text_or_empty(self.error_code.as_ref())),
            ("error_param", text_or_empty(self.error_param.as_ref())),
            ("error_status", text_or_empty(self.error_status)),
            ("error_message", text_or_empty(self.error_message.as_ref())),
            ("response_id", text_or_empty(self.response_id.as_ref())),
            (
                "response_model",
                text_or_empty(self.response_model.as_ref()),
            ),
            ("finish_reasons", comma_separated(&self.finish_reasons)),
            ("events", self.events.to_string()),
            ("fallback_decision", self.fallback_decision.to_string()),
        ];
        let mut out = String::new();
        for (k, v) in fields {
            out.push_str(k);
            out.push_str(": ");
            // A saved body's strings can hold line breaks and terminal escapes: one field a
            // line, nothing that moves the cursor.
            out.extend(v.chars().map(|c| if c.is_control() { ' ' } else { c }));
            out.push('\n');
        }
        out
    }
}

/// The evidence for a saved response.
fn judge(saved: &Saved, surface: Option<ApiSurface>, as_stream: bool) -> Judgement {
    let (surface, source) = match surface {
        Some(s) => (s, SurfaceSource::Given),
        None => match guess_surface(&saved.body) {
            Some(s) => (s, SurfaceSource::Guessed),
            None => (ApiSurface::ChatCompletions, SurfaceSource::Assumed),
        },
    };
    // The library's own judgement, the one the inspect layer makes of a live response.
    let (verdict, wall) = reqwest_llm_guard::judge::saved(
        surface,
        saved.status,
        &saved.headers,
        &saved.body,
        Mode::Compat,
        as_stream,
    );
    let mut outcome = Outcome::checked(saved.status, &verdict);
    if let Some(w) = &wall {
        outcome = outcome.with_waf(w);
    }
    let decision = evidence::decide(&DecisionTable::default(), &outcome);
    let error = verdict.api_error.as_ref();
    Judgement {
        api_surface: surface,
        api_surface_source: source,
        heads: saved.heads,
        http_status: saved.status.as_u16(),
        status_class: outcome.status_class(),
        parse_check: verdict.parse_check,
        violation: verdict.violation,
        violation_offset: verdict.violation_offset,
        skip_reason: verdict.skip_reason,
        warnings: verdict.warnings.iter().collect(),
        waf_vendor: wall.as_ref().map(|w| w.vendor),
        waf_kind: wall.as_ref().map(|w| w.kind),
        waf_reference: wall.as_ref().and_then(|w| w.reference.clone()),
        waf_location: wall.as_ref().and_then(|w| w.location.clone()),
        error_shape: error.map(|e| e.shape),
        error_type: error.and_then(|e| e.error_type.clone()),
        error_code: error
            .and_then(|e| e.code.as_ref())
            .map(|c| c.as_text().into_owned()),
        error_param: error.and_then(|e| e.param.clone()),
        error_status: error.and_then(|e| e.status),
        error_message: error.map(|e| e.message.clone()),
        response_id: verdict.facts.response_id.clone(),
        response_model: verdict.facts.response_model.clone(),
        finish_reasons: verdict.facts.finish_reasons.clone(),
        events: verdict.facts.events,
        fallback_decision: decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_are_guessed_from_what_the_body_names() {
        use ApiSurface::{ChatCompletions as Chat, Responses};
        for (body, want) in [
            (
                r#"{"id":"c","object":"chat.completion","choices":[]}"#,
                Some(Chat),
            ),
            (
                r#"{ "object" : "response", "status":"completed"}"#,
                Some(Responses),
            ),
            (
                "data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\ndata: [DONE]\n\n",
                Some(Chat),
            ),
            (
                "data: {\"type\":\"response.created\",\"response\":{}}\n\n",
                Some(Responses),
            ),
            // The event line alone names it, even before a data line that does not.
            ("event: response.created\ndata: {}\n\n", Some(Responses)),
            (
                ": ping\n\ndata: [DONE]\n\ndata: {\"object\":\"chat.completion.chunk\"}\n\n",
                Some(Chat),
            ),
            (r#"{"error":{"message":"m","type":"t","code":null}}"#, None),
            (r#"{"object":"list","data":[]}"#, None),
            ("<html>Just a moment...</html>", None),
            ("", None),
        ] {
            assert_eq!(guess_surface(body.as_bytes()), want, "{body}");
        }
    }

    fn body(status: u16, headers: &[&str], body: &str) -> Saved {
        let flags: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        saved::from_body(
            StatusCode::from_u16(status).unwrap(),
            &flags,
            body.as_bytes().to_vec(),
        )
        .unwrap()
    }

    const CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";

    #[test]
    fn judged_as_the_inspect_layer_would() {
        // A mislabelled 2xx stream is checked as a stream, with the layer's warning.
        let j = judge(
            &body(200, &["content-type: application/json"], CHUNK),
            None,
            false,
        );
        assert_eq!(j.violation, Some(Violation::StreamTruncated));
        assert!(j.warnings.contains(&Warning::NotEventStream), "{j:?}");
        assert_eq!(j.fallback_decision, FallbackDecision::Fallback);
        // Told it is a stream: no warning about its label.
        let j = judge(&body(200, &[], CHUNK), None, true);
        assert!(!j.warnings.contains(&Warning::NotEventStream), "{j:?}");
        // A stream's wall is known by its headers alone; a redirect's too.
        let challenge = ["cf-mitigated: challenge", "cf-ray: 8f1c2d3e4a5b6c7d-FRA"];
        for status in [200, 302] {
            let j = judge(&body(status, &challenge, "data: x\n\n"), None, true);
            assert_eq!(j.waf_kind, Some(WafKind::Challenge), "{status}");
            assert_eq!(j.fallback_decision, FallbackDecision::Hold);
        }
        // An error envelope through an edge is the API speaking.
        let envelope = r#"{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory","param":null}}"#;
        let j = judge(
            &body(
                403,
                &["server: cloudflare", "cf-ray: 8f1c2d3e4a5b6c7d-FRA"],
                envelope,
            ),
            None,
            false,
        );
        assert_eq!(j.waf_vendor, None);
        assert_eq!(
            j.error_code.as_deref(),
            Some("unsupported_country_region_territory")
        );
        assert_eq!(j.api_surface_source, SurfaceSource::Assumed);
        assert_eq!(j.fallback_decision, FallbackDecision::Hold);
        // Cloudflare's 1015 is its rate limit: decided as a 429 is.
        let j = judge(
            &body(
                429,
                &["server: cloudflare", "cf-ray: 8f1c2d3e4a5b6c7d-FRA"],
                "error code: 1015",
            ),
            Some(ApiSurface::Responses),
            false,
        );
        assert_eq!(
            (j.waf_kind, j.fallback_decision),
            (Some(WafKind::RateLimit), FallbackDecision::Fallback)
        );
        assert_eq!(j.api_surface_source, SurfaceSource::Given);
        // An oversized body is skipped, its head still sniffed.
        let mut page = "Sorry, you have been blocked".to_owned();
        page.push_str(&" ".repeat(reqwest_llm_guard::inspect::DEFAULT_MAX_BODY_BYTES));
        let j = judge(
            &body(403, &["cf-ray: 8f1c2d3e4a5b6c7d-FRA"], &page),
            None,
            false,
        );
        assert_eq!(j.skip_reason, Some(SkipReason::TooLarge));
        assert_eq!(j.waf_vendor, Some(WafVendor::Cloudflare));
    }

    #[test]
    fn text_and_json_carry_the_same_fields() {
        let j = judge(
            &body(
                400,
                &[],
                r#"{"error":{"message":"two\nlines","type":"invalid_request_error","code":"x","param":"model"}}"#,
            ),
            None,
            false,
        );
        let text = j.to_text();
        let json = serde_json::to_value(&j).unwrap();
        let keys = json.as_object().unwrap();
        assert_eq!(text.lines().count(), keys.len(), "{text}");
        for k in keys.keys() {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{k}: "))),
                "{k}"
            );
        }
        assert!(text.contains("error_message: two lines\n"), "{text}");
        assert_eq!(json["fallback_decision"], "hold");
        assert_eq!(json["api_surface_source"], "assumed");
        assert_eq!(json["error_shape"], "envelope");
        assert_eq!(json["violation"], serde_json::Value::Null);
        assert_eq!(json["warnings"], serde_json::json!([]));
    }
}
