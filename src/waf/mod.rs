//! WAF and bot walls: telling an edge network's block or challenge page from the API's answer.
//!
//! [`classify`] is pure and table-driven: it reads the status, the headers and at most
//! [`SNIFF_BYTES`] of the body, and returns a [`WafVerdict`] (vendor, kind, support reference)
//! or `None`. [`classify_headers`] applies rule 1 alone, for responses whose body is not read.
//! The table itself, stage by stage (block headers, page markers, presence signs, references)
//! with the public evidence of each rule, is
//! `src/waf/rules.rs`; `tests/waf_fixtures.rs` holds it to a corpus of real recorded responses.
//!
//! The inspect layer runs [`classify`] on every attempt whose body did not keep its contract
//! and carried no recognisable API error: a body that keeps its contract, or an error envelope,
//! is the API speaking whatever the headers say. [`classify_problem`] (an edge's own
//! JSON answer) runs on every body, and [`classify_headers`] on bodies the layer does not read.
//!
//! # Rule order
//!
//! The first rule that answers wins:
//!
//! 0. **An edge's own JSON answer** ([`classify_problem`]): Cloudflare's RFC 9457 errors (1015
//!    is its rate limit, every other code a block), DataDome's `{"url": "…captcha-delivery.com…"}`.
//! 1. **Block headers, at any status and whatever the body**: `cf-mitigated: challenge`
//!    (Cloudflare challenge), `x-amzn-waf-action: captcha|challenge` (AWS WAF; CAPTCHA comes as
//!    405, challenge as 202), `x-sucuri-block` (Sucuri block), `x-vercel-mitigated:
//!    challenge|deny` (Vercel).
//! 2. **The API speaking**: a body that parses as JSON (an object or an array; a prefix cut at
//!    [`SNIFF_BYTES`] counts when it is valid so far), or a `text/event-stream`, is never a
//!    wall. OpenAI's 403 `unsupported_country_region_territory` and OpenRouter's moderation 403
//!    come through Cloudflare with `server: cloudflare` and `cf-ray`, as every OpenAI answer
//!    does.
//! 3. **Block-page markers** in the first [`SNIFF_BYTES`] of the body, ASCII case-insensitive,
//!    at any status (F5 serves its block page with 200, Akamai its bot interstitial too):
//!    Cloudflare, AWS WAF / CloudFront / ALB, Akamai, DataDome, Imperva, Sucuri, F5, Azure
//!    Application Gateway, Azure Front Door, Google, ModSecurity, Vercel, PerimeterX, Barracuda,
//!    NetScaler, Radware, Wordfence, StackPath, DDoS-Guard, Anubis, and last the nginx /
//!    OpenResty default 403 page. A vendor's challenge markers are tried before its block
//!    markers, and Cloudflare's rate-limit page (error 1015) before its block page, whose title
//!    it shares. Markers shared with a vendor's origin-error pages only count where those pages
//!    cannot be: Cloudflare's templates not on a 5xx, CloudFront's only on a 403. An edge's own
//!    error page that names no firewall rule is [`WafKind::Suspected`]: CloudFront's "The
//!    request could not be satisfied" without "Request blocked." (a method or country the
//!    distribution refuses), Cloudflare's nginx-style 403.
//! 4. **An edge's presence signs on a non-JSON 403, 406, 429 or 503** make a
//!    [`WafKind::Suspected`] wall: Cloudflare (`server: cloudflare`, `cf-ray`, `__cf_bm`), AWS
//!    (`x-amz-cf-id`, `server: CloudFront`, `server: awselb`), Akamai (`server: AkamaiGHost`),
//!    Azure Front Door (`x-azure-ref`), Imperva (`x-iinfo`, `incap_ses_*`), Sucuri
//!    (`x-sucuri-id`), Fastly (`x-fastly-request-id`, `x-served-by: cache-…`), DataDome
//!    (`x-datadome`), F5, DDoS-Guard, NetScaler, Barracuda, Radware, ModSecurity.
//! 5. Otherwise `None`. Presence signs on other statuses or on JSON bodies never make a wall,
//!    and neither does a non-JSON 403 with no vendor evidence (the contract check reports the
//!    body).
//!
//! # References
//!
//! [`WafVerdict::reference`] carries what the vendor's support asks for: the Cloudflare Ray ID
//! (the 16 hex digits of `cf-ray`, its data centre going to [`WafVerdict::location`]; else
//! `Ray ID:`, `data-ray`, `cRay` or `?ray=` in the page), the Akamai `Reference #18.…`, the F5
//! support ID, the Imperva incident ID, `x-azure-ref`, the CloudFront request id (`x-amz-cf-id`,
//! else `Request ID:` in the page), the Sucuri block ID. A reference is a short token matched by
//! a tight pattern: at most 128 bytes of ASCII alphanumerics and `.-_:` (plus base64 `=`
//! padding), never free page text.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use reqwest_llm_guard::evidence::{WafKind, WafVendor};
//! use reqwest_llm_guard::waf;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("server", HeaderValue::from_static("cloudflare"));
//! headers.insert("cf-ray", HeaderValue::from_static("8f1c2d3e4a5b6c7d-FRA"));
//!
//! // Cloudflare's block page.
//! let page = b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title>\
//!     </head><body><h1>Sorry, you have been blocked</h1></body></html>";
//! let wall = waf::classify(StatusCode::FORBIDDEN, &headers, page).expect("a wall");
//! assert_eq!(wall.vendor, WafVendor::Cloudflare);
//! assert_eq!(wall.kind, WafKind::Block);
//! assert_eq!(wall.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
//! assert_eq!(wall.location.as_deref(), Some("FRA"));
//!
//! // OpenAI's own 403, through the same edge: the API speaking, not a wall.
//! let api = br#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#;
//! assert_eq!(waf::classify(StatusCode::FORBIDDEN, &headers, api), None);
//!
//! // Cloudflare's own rate limit (error 1015) is not a block: it is waited out.
//! let limited = b"error code: 1015";
//! let wall = waf::classify(StatusCode::TOO_MANY_REQUESTS, &headers, limited).expect("a wall");
//! assert_eq!(wall.kind, WafKind::RateLimit);
//!
//! // A challenge is known by its header at any status, 429 included.
//! headers.insert("cf-mitigated", HeaderValue::from_static("challenge"));
//! let wall = waf::classify(StatusCode::TOO_MANY_REQUESTS, &headers, b"").expect("a wall");
//! assert_eq!(wall.kind, WafKind::Challenge);
//! ```

mod reference;
mod rules;

use std::cell::OnceCell;
use std::sync::LazyLock;

use http::{HeaderMap, StatusCode, header};
use memchr::memmem::Finder;
use serde::Deserialize as _;

use crate::evidence::{WafKind, WafVendor, WafVerdict};

use self::reference::Found;
use self::rules::{BodyRule, CookieName, Gate, RefSource, Sign, ValueTest};

/// How much of a body the classifier reads.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// Classifies a response. `body` is the start of the body (callers pass at most
/// [`SNIFF_BYTES`]; longer input is truncated to `SNIFF_BYTES` internally). Returns `None` when
/// the response is not a wall.
///
/// The rules and their order are in the [module docs](self). The function does no I/O and
/// allocates at most one lowercased copy of the sniffed body plus the reference string.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<WafVerdict> {
    if let Some(wall) = classify_problem(headers, body) {
        return Some(wall);
    }
    let page = Page::new(&body[..body.len().min(SNIFF_BYTES)]);
    let (vendor, kind) = block_header(headers).or_else(|| {
        if api_speaking(headers, page.raw) {
            return None;
        }
        block_page(status, headers, page.lower()).or_else(|| suspected(status, headers))
    })?;
    Some(verdict(vendor, kind, headers, &page))
}

/// What every Cloudflare problem document's `type` starts with.
const CLOUDFLARE_DOCS: &str = "https://developers.cloudflare.com/";

static PROBLEM_MARKER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(CLOUDFLARE_DOCS));

/// What DataDome's JSON answer points to: its CAPTCHA host.
static DATADOME_MARKER: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("captcha-delivery.com"));

/// Recognises an edge's own answer in JSON. Such a body parses as JSON, and even as an error,
/// yet it is the edge speaking, not the API: this check runs before any "the API spoke" rule.
///
/// - Cloudflare: since March 2026 it answers its 1xxx errors (1020 access denied, 1015 rate
///   limited, …) with RFC 9457 problem details when the client accepts JSON, as API clients do.
///   The `type` member points into Cloudflare's documentation and `instance` is the Ray ID.
///   Error 1015 (or any of them on a 429) is [`WafKind::RateLimit`], the others block.
/// - DataDome: `{"url":"https://geo.captcha-delivery.com/captcha/?…"}`, its 403 to clients
///   that asked for JSON (seen on SoundCloud's API). `t=bv` in the URL
///   is a banned visitor ([`WafKind::Block`]), anything else a CAPTCHA ([`WafKind::Challenge`]).
pub fn classify_problem(headers: &HeaderMap, body: &[u8]) -> Option<WafVerdict> {
    let start = body.trim_ascii_start();
    if start.first() != Some(&b'{') || body.len() > SNIFF_BYTES {
        return None;
    }
    // Every answer that kept its contract comes through here: look for a marker before
    // parsing anything (a second parse of a 2 KB answer was 12% of the guard's cost).
    let cloudflare = || {
        PROBLEM_MARKER.find(body)?;
        cloudflare_problem(headers, body)
    };
    let datadome = || {
        DATADOME_MARKER.find(body)?;
        datadome_answer(body)
    };
    cloudflare().or_else(datadome)
}

fn cloudflare_problem(headers: &HeaderMap, body: &[u8]) -> Option<WafVerdict> {
    #[derive(serde::Deserialize)]
    struct Problem<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        instance: Option<std::borrow::Cow<'a, str>>,
        // A number by RFC 9457; read loosely so that an odd one cannot hide the wall.
        status: Option<serde_json::Value>,
    }
    let problem: Problem<'_> = serde_json::from_slice(body).ok()?;
    let doc = problem.kind?;
    let page = doc.strip_prefix(CLOUDFLARE_DOCS)?;
    // `…/cloudflare-1xxx-errors/error-1015/`: the rate limit, which Cloudflare alone answers
    // with 429.
    let rate_limited = page.trim_end_matches('/').ends_with("error-1015")
        || problem.status.and_then(|s| s.as_u64()) == Some(429);
    let kind = if rate_limited {
        WafKind::RateLimit
    } else {
        WafKind::Block
    };
    let found = problem
        .instance
        .and_then(|i| reference::cloudflare_ray(i.trim().as_bytes()))
        .or_else(|| reference(WafVendor::Cloudflare, headers, &Page::new(b"")));
    Some(with_found(
        WafVerdict::new(WafVendor::Cloudflare, kind),
        found,
    ))
}

fn datadome_answer(body: &[u8]) -> Option<WafVerdict> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        url: Option<std::borrow::Cow<'a, str>>,
    }
    let answer: Answer<'_> = serde_json::from_slice(body).ok()?;
    let url = answer.url?;
    let rest = url.strip_prefix("https://")?;
    let host = rest[..rest.find(['/', '?']).unwrap_or(rest.len())].to_ascii_lowercase();
    if host != "captcha-delivery.com" && !host.ends_with(".captcha-delivery.com") {
        return None;
    }
    let banned = rest
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "t=bv"));
    let kind = if banned {
        WafKind::Block
    } else {
        WafKind::Challenge
    };
    Some(WafVerdict::new(WafVendor::DataDome, kind))
}

/// Classifies a response from its headers alone: only the block headers of rule 1 (a
/// challenge or block header answers whatever the body). For responses whose body is not read
/// (a surface that is not checked, a body over the cap) and for the retry layer when no inspect
/// layer runs inside it; presence signs need the body to be non-JSON, so they are not used.
pub fn classify_headers(headers: &HeaderMap) -> Option<WafVerdict> {
    let (vendor, kind) = block_header(headers)?;
    Some(verdict(vendor, kind, headers, &Page::new(b"")))
}

fn verdict(vendor: WafVendor, kind: WafKind, headers: &HeaderMap, page: &Page<'_>) -> WafVerdict {
    with_found(
        WafVerdict::new(vendor, kind),
        reference(vendor, headers, page),
    )
}

fn with_found(verdict: WafVerdict, found: Option<Found>) -> WafVerdict {
    let Some(found) = found else {
        return verdict;
    };
    let verdict = verdict.with_reference(found.id);
    match found.location {
        Some(location) => verdict.with_location(location),
        None => verdict,
    }
}

/// The sniffed body and, made once on first use, its ASCII-lowercased copy (same offsets).
struct Page<'a> {
    raw: &'a [u8],
    lower: OnceCell<Vec<u8>>,
}

impl<'a> Page<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self {
            raw,
            lower: OnceCell::new(),
        }
    }

    fn lower(&self) -> &[u8] {
        self.lower.get_or_init(|| self.raw.to_ascii_lowercase())
    }
}

/// Step 1.
fn block_header(headers: &HeaderMap) -> Option<(WafVendor, WafKind)> {
    rules::BLOCK_HEADERS
        .iter()
        .find(|rule| header_matches(headers, rule.name, rule.value))
        .map(|rule| (rule.vendor, rule.kind))
}

/// Step 2: a JSON body (object or array, possibly cut short) or an event stream.
fn api_speaking(headers: &HeaderMap, body: &[u8]) -> bool {
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| starts_with_ci(v.as_bytes().trim_ascii(), "text/event-stream"));
    event_stream || is_json(body)
}

fn is_json(body: &[u8]) -> bool {
    let body = body
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(body)
        .trim_ascii_start();
    if !matches!(body.first(), Some(b'{' | b'[')) {
        return false;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Ok(_) => de.end().is_ok(),
        // A prefix cut inside the document is still the API's JSON.
        Err(e) => e.is_eof(),
    }
}

/// A body rule with its needles compiled once.
struct Compiled {
    rule: &'static BodyRule,
    any: Vec<Finder<'static>>,
    also: Vec<Finder<'static>>,
}

static BODY_RULES: LazyLock<Vec<Compiled>> = LazyLock::new(|| {
    rules::BODY_RULES
        .iter()
        .map(|rule| Compiled {
            rule,
            any: rule.any.iter().map(Finder::new).collect(),
            also: rule.also.iter().map(Finder::new).collect(),
        })
        .collect()
});

/// Step 3.
fn block_page(
    status: StatusCode,
    headers: &HeaderMap,
    lower: &[u8],
) -> Option<(WafVendor, WafKind)> {
    if lower.is_empty() {
        return None;
    }
    BODY_RULES
        .iter()
        .find(|c| {
            gate_open(c.rule.gate, status, headers)
                && c.any.iter().any(|f| f.find(lower).is_some())
                && c.also.iter().all(|f| f.find(lower).is_some())
        })
        .map(|c| (c.rule.vendor, c.rule.kind))
}

fn gate_open(gate: Gate, status: StatusCode, headers: &HeaderMap) -> bool {
    match gate {
        Gate::Always => true,
        Gate::Not5xx => !status.is_server_error(),
        Gate::Status(code) => status.as_u16() == code,
        Gate::Edge(vendor) => edge_present(vendor, headers),
        Gate::Header(name, value) => header_matches(headers, name, value),
    }
}

/// Step 4.
fn suspected(status: StatusCode, headers: &HeaderMap) -> Option<(WafVendor, WafKind)> {
    if !rules::SUSPECT_STATUSES.contains(&status.as_u16()) {
        return None;
    }
    rules::EDGES
        .iter()
        .find(|edge| edge.signs.iter().any(|&sign| sign_present(sign, headers)))
        .map(|edge| (edge.vendor, WafKind::Suspected))
}

fn edge_present(vendor: WafVendor, headers: &HeaderMap) -> bool {
    rules::EDGES
        .iter()
        .filter(|edge| edge.vendor == vendor)
        .any(|edge| edge.signs.iter().any(|&sign| sign_present(sign, headers)))
}

fn sign_present(sign: Sign, headers: &HeaderMap) -> bool {
    match sign {
        Sign::Header(name, value) => header_matches(headers, name, value),
        Sign::Cookie(cookie) => headers.get_all(header::SET_COOKIE).iter().any(|v| {
            let v = v.as_bytes().trim_ascii_start();
            match cookie {
                CookieName::Prefix(prefix) => starts_with_ci(v, prefix),
                CookieName::F5Ts => is_f5_ts_cookie(v),
            }
        }),
    }
}

/// `TS` + 6 to 12 hex digits, optionally `_` and digits, then `=`.
fn is_f5_ts_cookie(cookie: &[u8]) -> bool {
    let Some(eq) = cookie.iter().position(|&b| b == b'=') else {
        return false;
    };
    let Some(rest) = cookie[..eq].strip_prefix(b"TS") else {
        return false;
    };
    let (hex, suffix) = match rest.iter().position(|&b| b == b'_') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    (6..=12).contains(&hex.len())
        && hex.iter().all(u8::is_ascii_hexdigit)
        && suffix.is_none_or(|s| !s.is_empty() && s.iter().all(u8::is_ascii_digit))
}

fn header_matches(headers: &HeaderMap, name: &str, test: ValueTest) -> bool {
    headers.get_all(name).iter().any(|v| {
        let v = v.as_bytes().trim_ascii();
        match test {
            ValueTest::Any => !v.is_empty(),
            ValueTest::Eq(want) => v.eq_ignore_ascii_case(want.as_bytes()),
            ValueTest::Contains(want) => contains_ci(v, want),
            ValueTest::StartsWith(want) => starts_with_ci(v, want),
        }
    })
}

fn starts_with_ci(haystack: &[u8], lower_prefix: &str) -> bool {
    haystack
        .get(..lower_prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(lower_prefix.as_bytes()))
}

fn contains_ci(haystack: &[u8], lower_needle: &str) -> bool {
    let needle = lower_needle.as_bytes();
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The vendor's reference, from its sources in table order.
fn reference(vendor: WafVendor, headers: &HeaderMap, page: &Page<'_>) -> Option<Found> {
    let refs = rules::REFERENCES.iter().find(|r| r.vendor == vendor)?;
    refs.sources.iter().find_map(|&source| match source {
        // A response carries one; where the header is repeated (a recorded redirect chain folded
        // into one list, a proxy that appends), the last value is the answering hop's.
        RefSource::Header(name, shape) => headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| reference::from_header(v.as_bytes(), shape)),
        RefSource::Page(kind) => reference::from_page(kind, page.lower(), page.raw),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    fn classify_str(
        status: u16,
        pairs: &[(&'static str, &'static str)],
        body: &str,
    ) -> Option<WafVerdict> {
        classify(
            StatusCode::from_u16(status).expect("status"),
            &headers(pairs),
            body.as_bytes(),
        )
    }

    fn kind_of(v: Option<WafVerdict>) -> Option<(WafVendor, WafKind)> {
        v.map(|v| (v.vendor, v.kind))
    }

    const CF: &[(&str, &str)] = &[("server", "cloudflare"), ("cf-ray", "8f1c2d3e4a5b6c7d-SJC")];

    #[test]
    fn table_markers_are_lowercase_ascii_and_non_empty() {
        for rule in rules::BODY_RULES {
            assert!(!rule.any.is_empty(), "{rule:?}");
            for needle in rule.any.iter().chain(rule.also) {
                assert!(!needle.is_empty(), "{rule:?}");
                assert!(needle.is_ascii(), "{needle}");
                assert_eq!(*needle, needle.to_ascii_lowercase(), "{needle}");
            }
        }
        for rule in rules::BLOCK_HEADERS {
            assert_eq!(rule.name, rule.name.to_ascii_lowercase());
        }
    }

    #[test]
    fn every_named_vendor_has_a_rule() {
        for &vendor in WafVendor::ALL {
            let covered = rules::BODY_RULES.iter().any(|r| r.vendor == vendor)
                || rules::BLOCK_HEADERS.iter().any(|r| r.vendor == vendor)
                || rules::EDGES.iter().any(|e| e.vendor == vendor);
            assert!(covered || vendor == WafVendor::Unknown, "{vendor}");
        }
    }

    #[test]
    fn block_header_beats_a_json_body() {
        let json = r#"{"error":{"message":"blocked","type":"x"}}"#;
        let v = classify_str(
            403,
            &[
                ("cf-mitigated", "challenge"),
                ("cf-ray", "8f1c2d3e4a5b6c7d-SJC"),
            ],
            json,
        );
        assert_eq!(
            kind_of(v.clone()),
            Some((WafVendor::Cloudflare, WafKind::Challenge))
        );
        let v = v.expect("a wall");
        assert_eq!(v.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
        assert_eq!(v.location.as_deref(), Some("SJC"));
        assert_eq!(
            kind_of(classify_str(
                200,
                &[("x-sucuri-block", "BNP005")],
                r#"{"ok":true}"#
            )),
            Some((WafVendor::Sucuri, WafKind::Block))
        );
    }

    #[test]
    fn header_values_ignore_case_and_unknown_values() {
        assert_eq!(
            kind_of(classify_str(405, &[("x-amzn-waf-action", " CAPTCHA ")], "")),
            Some((WafVendor::Aws, WafKind::Challenge))
        );
        assert_eq!(
            classify_str(200, &[("x-amzn-waf-action", "allow")], "ok"),
            None
        );
        assert_eq!(classify_str(200, &[("cf-mitigated", "none")], "ok"), None);
    }

    #[test]
    fn json_body_hides_markers_and_presence() {
        let json = r#"{"choices":[{"message":{"content":"<title>Just a moment...</title> Sorry, you have been blocked"}}]}"#;
        assert_eq!(classify_str(200, CF, json), None);
        assert_eq!(classify_str(403, CF, json), None);
        assert_eq!(classify_str(429, CF, "  \n[1,2,3]"), None);
    }

    #[test]
    fn json_cut_at_the_sniff_limit_is_still_json() {
        let mut body = String::from(r#"{"content":"Sorry, you have been blocked | "#);
        while body.len() < 2 * SNIFF_BYTES {
            body.push_str("attention required! | cloudflare ");
        }
        body.push_str(r#""}"#);
        assert_eq!(classify_str(403, CF, &body), None);
        // Broken JSON is not JSON.
        assert_eq!(
            kind_of(classify_str(
                403,
                &[],
                r#"{"a": <title>Just a moment...</title>"#
            )),
            Some((WafVendor::Cloudflare, WafKind::Challenge))
        );
    }

    #[test]
    fn event_streams_are_the_api() {
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"Just a moment...\"}}]}\n\n";
        assert_eq!(
            classify_str(
                200,
                &[
                    ("content-type", "text/event-stream; charset=utf-8"),
                    ("server", "cloudflare")
                ],
                sse
            ),
            None
        );
    }

    #[test]
    fn markers_past_the_sniff_limit_are_not_read() {
        let mut body = "<html><body>".to_owned();
        body.push_str(&" ".repeat(SNIFF_BYTES));
        body.push_str("Sorry, you have been blocked</body></html>");
        assert_eq!(classify_str(403, &[], &body), None);
    }

    #[test]
    fn challenge_markers_win_over_block_template() {
        let page = "<div id=\"cf-error-details\"><script>window._cf_chl_opt={cRay: '6a78c4578ea0435d'}</script></div>";
        let v = classify_str(403, &[], page).expect("wall");
        assert_eq!(
            (v.vendor, v.kind),
            (WafVendor::Cloudflare, WafKind::Challenge)
        );
        assert_eq!(v.reference.as_deref(), Some("6a78c4578ea0435d"));
    }

    #[test]
    fn cloudflare_origin_error_pages_are_not_walls() {
        let page = "<title>example.com | 522: Connection timed out</title><div id=\"cf-error-details\">\
            <span>Cloudflare Ray ID: <strong>8f1c2d3e4a5b6c7d</strong></span>";
        assert_eq!(classify_str(522, CF, page), None);
        assert_eq!(
            kind_of(classify_str(503, CF, page)),
            Some((WafVendor::Cloudflare, WafKind::Suspected))
        );
        assert_eq!(
            kind_of(classify_str(403, CF, page)),
            Some((WafVendor::Cloudflare, WafKind::Block))
        );
    }

    #[test]
    fn jsd_script_alone_is_not_a_challenge() {
        let page = "<html><body>Hello<script>a.src='/cdn-cgi/challenge-platform/scripts/jsd/main.js'</script></body></html>";
        assert_eq!(classify_str(200, CF, page), None);
        let challenge = "<script>cpo.src='/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray=8f1c2d3e4a5b6c7d'</script>";
        let v = classify_str(200, &[], challenge).expect("wall");
        assert_eq!(
            (v.vendor, v.kind),
            (WafVendor::Cloudflare, WafKind::Challenge)
        );
        assert_eq!(v.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
    }

    #[test]
    fn cloudfront_template_counts_only_on_403() {
        let page = "<HTML><HEAD><TITLE>ERROR: The request could not be satisfied</TITLE></HEAD><BODY>\
            <H1>504 Gateway Timeout ERROR</H1>\nGenerated by cloudfront (CloudFront)\nRequest ID: abcdefghijklmnopqrstuv==";
        assert_eq!(classify_str(504, &[("x-amz-cf-id", "abc")], page), None);
        // CloudFront's own refusal names no WAF rule: the edge answered, nothing more is known.
        assert_eq!(
            kind_of(classify_str(403, &[], page)),
            Some((WafVendor::Aws, WafKind::Suspected))
        );
        let waf = page.replace("<H1>504 Gateway Timeout ERROR</H1>", "Request blocked.");
        assert_eq!(
            kind_of(classify_str(403, &[], &waf)),
            Some((WafVendor::Aws, WafKind::Block))
        );
    }

    #[test]
    fn presence_signs_need_a_suspect_status() {
        assert_eq!(classify_str(500, CF, "upstream error"), None);
        assert_eq!(classify_str(404, CF, "<html>Not Found</html>"), None);
        assert_eq!(classify_str(200, CF, "<html>hello</html>"), None);
        for status in [403, 406, 429, 503] {
            let v = classify_str(status, CF, "Forbidden").expect("suspected");
            assert_eq!(
                (v.vendor, v.kind),
                (WafVendor::Cloudflare, WafKind::Suspected)
            );
            assert_eq!(v.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
        }
        assert_eq!(classify_str(403, &[("server", "nginx")], "Forbidden"), None);
        assert_eq!(
            classify_str(403, &[("via", "1.1 google")], "Forbidden"),
            None
        );
    }

    #[test]
    fn presence_by_cookie() {
        assert_eq!(
            kind_of(classify_str(
                403,
                &[("set-cookie", "incap_ses_123_456=abc; path=/")],
                "denied"
            )),
            Some((WafVendor::Imperva, WafKind::Suspected))
        );
        assert_eq!(
            kind_of(classify_str(
                403,
                &[("set-cookie", "TS01a2b3c4=0123; Path=/")],
                "denied"
            )),
            Some((WafVendor::F5, WafKind::Suspected))
        );
        assert!(is_f5_ts_cookie(b"TS0123456789_28=x"));
        assert!(!is_f5_ts_cookie(b"TSxyz=1"));
        assert!(!is_f5_ts_cookie(b"TS01a2b3c4"));
        assert!(!is_f5_ts_cookie(b"TS01a2b3c4_=1"));
    }

    #[test]
    fn gated_rules_need_their_edge() {
        assert_eq!(classify_str(403, &[], "error code: 1020"), None);
        assert_eq!(
            kind_of(classify_str(403, CF, "error code: 1020")),
            Some((WafVendor::Cloudflare, WafKind::Block))
        );
        // Without x-azure-ref the Front Door wording is not enough.
        assert_eq!(classify_str(403, &[], "The request is blocked."), None);
        let afd = &[("x-azure-ref", "20240101T000000Z-16b7c5f7d9bxyz")];
        let v = classify_str(403, afd, "<h2>The request is blocked.</h2>").expect("wall");
        assert_eq!(
            (v.vendor, v.kind),
            (WafVendor::AzureFrontDoor, WafKind::Block)
        );
        assert_eq!(
            v.reference.as_deref(),
            Some("20240101T000000Z-16b7c5f7d9bxyz")
        );
    }

    #[test]
    fn generic_403_pages_are_not_walls() {
        let apache = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\"><html><head><title>403 Forbidden</title></head>\
            <body><h1>Forbidden</h1><p>You don't have permission to access this resource.</p></body></html>";
        assert_eq!(classify_str(403, &[("server", "Apache")], apache), None);
        let nginx_429 = "<html><head><title>429 Too Many Requests</title></head><body><center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center></body></html>";
        assert_eq!(classify_str(429, &[("server", "nginx")], nginx_429), None);
        assert_eq!(classify_str(403, &[], ""), None);
    }

    #[test]
    fn headers_alone_answer_only_block_headers() {
        let wall = classify_headers(&headers(&[
            ("cf-mitigated", "challenge"),
            ("cf-ray", "8f1c2d3e4a5b6c7d-SJC"),
        ]))
        .expect("wall");
        assert_eq!(
            (wall.vendor, wall.kind),
            (WafVendor::Cloudflare, WafKind::Challenge)
        );
        assert_eq!(wall.reference.as_deref(), Some("8f1c2d3e4a5b6c7d"));
        assert_eq!(wall.location.as_deref(), Some("SJC"));
        assert_eq!(classify_headers(&headers(CF)), None);
    }

    #[test]
    fn untidy_header_reference_is_dropped_not_copied() {
        let v = classify_str(
            403,
            &[("cf-ray", "not a ray <b>")],
            "Sorry, you have been blocked",
        )
        .expect("wall");
        assert_eq!(v.reference, None);
    }

    #[test]
    fn cloudflare_rate_limit_is_not_a_block() {
        let page = "<title>Access denied | api.example.com used Cloudflare to restrict access</title>\
            <link rel=\"stylesheet\" href=\"/cdn-cgi/styles/main.css\" /><script>a={event:\"feedback clicked\",\
            properties:{errorCode:1015,helpful:a,version:1}};</script>";
        for status in [429, 403] {
            assert_eq!(
                kind_of(classify_str(status, CF, page)),
                Some((WafVendor::Cloudflare, WafKind::RateLimit)),
                "HTTP {status}"
            );
        }
        // The same title with another code is the access-denied page.
        assert_eq!(
            kind_of(classify_str(403, CF, &page.replace("1015", "1020"))),
            Some((WafVendor::Cloudflare, WafKind::Block))
        );
        // The plain-text answer, only behind Cloudflare.
        assert_eq!(
            kind_of(classify_str(429, CF, "error code: 1015")),
            Some((WafVendor::Cloudflare, WafKind::RateLimit))
        );
        assert_eq!(classify_str(429, &[], "error code: 1015"), None);
        // And the problem document, by its type or its 429.
        let problem = r#"{"type":"https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-1xxx-errors/error-1015/","title":"Error 1015: You are being rate limited","status":429,"instance":"9d8e7f6a5b4c3d2e-AMS","retry_after":30}"#;
        let v = classify_problem(&headers(CF), problem.as_bytes()).expect("a wall");
        assert_eq!(
            (v.vendor, v.kind),
            (WafVendor::Cloudflare, WafKind::RateLimit)
        );
        assert_eq!(v.reference.as_deref(), Some("9d8e7f6a5b4c3d2e"));
        assert_eq!(v.location.as_deref(), Some("AMS"));
        let by_status = problem.replace("error-1015", "error-1000");
        assert_eq!(
            kind_of(classify_problem(&headers(CF), by_status.as_bytes())),
            Some((WafVendor::Cloudflare, WafKind::RateLimit))
        );
        let denied = problem
            .replace("error-1015", "error-1020")
            .replace("429", "403");
        assert_eq!(
            kind_of(classify_problem(&headers(CF), denied.as_bytes())),
            Some((WafVendor::Cloudflare, WafKind::Block))
        );
    }

    #[test]
    fn datadome_answers_in_json_and_html() {
        let json = |url: &str| format!(r#"{{"url":"{url}"}}"#);
        let dd = &[
            ("x-datadome", "protected"),
            ("content-type", "application/json"),
        ];
        for (body, want) in [
            (
                json("https://geo.captcha-delivery.com/captcha/?initialCid=AHrlqA&hash=BCBF2F&t=fe&s=42"),
                Some((WafVendor::DataDome, WafKind::Challenge)),
            ),
            (
                json("https://geo.captcha-delivery.com/captcha/?initialCid=AHrlqA&cid=x&t=bv&s=42"),
                Some((WafVendor::DataDome, WafKind::Block)),
            ),
            // Escaped slashes are still the same URL.
            (
                json(r"https:\/\/geo.captcha-delivery.com\/captcha\/?initialCid=x"),
                Some((WafVendor::DataDome, WafKind::Challenge)),
            ),
            // Another host that only mentions it, or an answer quoting it: the API speaking.
            (json("https://example.com/captcha-delivery.com/?t=bv"), None),
            (
                r#"{"choices":[{"message":{"content":"{\"url\":\"https://geo.captcha-delivery.com/captcha/\"}"}}]}"#.to_owned(),
                None,
            ),
        ] {
            assert_eq!(kind_of(classify_str(403, dd, &body)), want, "{body}");
            assert_eq!(
                kind_of(classify_problem(&headers(dd), body.as_bytes())),
                want,
                "{body}"
            );
        }
        let page = "<html><head><title>example.com</title></head><body><script>var dd={'rt':'c','cid':'AHrlqAAA',\
            'hsh':'E6EAF460','t':'fe','s':46171,'e':'c0232786','host':'geo.captcha-delivery.com'}</script>\
            <script src=\"https://ct.captcha-delivery.com/c.js\"></script></body></html>";
        let html = &[("server", "DataDome"), ("content-type", "text/html")];
        assert_eq!(
            kind_of(classify_str(403, html, page)),
            Some((WafVendor::DataDome, WafKind::Challenge))
        );
        assert_eq!(
            kind_of(classify_str(
                403,
                html,
                &page.replace("'t':'fe'", "'t':'bv'")
            )),
            Some((WafVendor::DataDome, WafKind::Block))
        );
        // Its headers alone on a refusal name the vendor, not the rule.
        assert_eq!(
            kind_of(classify_str(403, html, "Forbidden")),
            Some((WafVendor::DataDome, WafKind::Suspected))
        );
        assert_eq!(classify_str(200, html, "<html>hello</html>"), None);
    }

    #[test]
    fn aws_challenge_page_without_its_header() {
        let page = "<script>window.awsWafCookieDomainList = [];window.gokuProps = {\"key\":\"AQIDAHj\"};</script>\
            <script src=\"https://1c5c1ecf7303.d474e66d.us-west-2.token.awswaf.com/x/challenge.js\"></script>\
            <script>AwsWafIntegration.saveReferrer();</script>";
        assert_eq!(
            kind_of(classify_str(202, &[("server", "CloudFront")], page)),
            Some((WafVendor::Aws, WafKind::Challenge))
        );
        // An ordinary page using AWS WAF's integration SDK is not a challenge.
        let app = "<html><head><script src=\"https://1c5c1ecf7303.edge.sdk.awswaf.com/x/challenge.js\"></script>\
            </head><body><script>AwsWafIntegration.fetch('/api')</script></body></html>";
        assert_eq!(classify_str(200, &[("server", "CloudFront")], app), None);
    }

    #[test]
    fn akamai_bot_manager_interstitial_on_200() {
        let page = "<html><head><title>Access to this page has been denied</title></head><body>\
            <div id=\"sec-if-cpt-container\">Please wait...</div><p>Powered and protected by Akamai</p></body></html>";
        assert_eq!(
            kind_of(classify_str(200, &[], page)),
            Some((WafVendor::Akamai, WafKind::Challenge))
        );
    }

    #[test]
    fn markers_without_a_real_capture_never_fire() {
        let json = r#"{"error":{"message":"blocked","type":"x"}}"#;
        // Header rules answer over a JSON body: an uncaptured one would wall the API itself.
        assert_eq!(
            classify_str(403, &[("x-amzn-waf-action", "block")], json),
            None
        );
        assert_eq!(
            classify_str(
                403,
                &[(
                    "x-blocked-by-waf",
                    "Blocked_by_custom_response_for_AWSManagedRules"
                )],
                json
            ),
            None
        );
        // identYwaf's 5xx test box; and on other statuses it was never seen.
        assert_eq!(classify_str(403, &[], "CLOUDFLARE_ERROR_1000S_BOX"), None);
        // The HTML-escaped apostrophe is React's, not Akamai's: only presence remains.
        let escaped = "<h1>Access Denied</h1>You don&#39;t have permission to access this server.";
        assert_eq!(
            kind_of(classify_str(403, &[("server", "AkamaiGHost")], escaped)),
            Some((WafVendor::Akamai, WafKind::Suspected))
        );
        // Access-denied codes never seen as plain text: a Cloudflare refusal, no rule named.
        for code in ["1005", "1006", "1007", "1008", "1009", "1012"] {
            assert_eq!(
                kind_of(classify_str(403, CF, &format!("error code: {code}"))),
                Some((WafVendor::Cloudflare, WafKind::Suspected)),
                "{code}"
            );
        }
    }

    #[test]
    fn a_repeated_reference_header_gives_its_last_value() {
        let v = classify_str(
            403,
            &[
                ("cf-ray", "891a90782c62f164-CDG"),
                ("cf-ray", "891a9078a9911ba1-MAD"),
            ],
            "Sorry, you have been blocked",
        )
        .expect("a wall");
        assert_eq!(v.reference.as_deref(), Some("891a9078a9911ba1"));
        assert_eq!(v.location.as_deref(), Some("MAD"));
        // A last value that is not a Ray ID falls back to the page, never to an earlier hop.
        let v = classify_str(
            403,
            &[
                ("cf-ray", "891a90782c62f164-CDG"),
                ("cf-ray", "891a90b5893b1ba7-MAD  HTTP/2 403"),
            ],
            "Sorry, you have been blocked. Ray ID: 891a90b63ed91bbb",
        )
        .expect("a wall");
        assert_eq!(v.reference.as_deref(), Some("891a90b63ed91bbb"));
        assert_eq!(v.location, None);
    }
}
