//! The WAF classifier against real recorded responses: every file of `../shared/fixtures/waf/`
//! (Cloudflare challenges from cloudscraper and FlareSolverr, responses with their headers from
//! oscarotero/Embed's test cache, pages rebuilt from public issues; its README gives the format),
//! read at run time and never copied into this repository.
//!
//! Each response goes through the classifier the way the inspect layer sends it
//! (`inspect_capturing` in src/inspect/mod.rs): a body it reads is checked against its contract
//! first, then [`waf::classify_problem`] runs if the body kept its contract or carried an API
//! error, else [`waf::classify`]; a body it does not read (no body, a 2xx event stream) is judged
//! by [`waf::classify_headers`]. The layer's sniff for a mislabelled 2xx stream is not repeated:
//! no fixture is an event stream.
//!
//! A fixture's `EXPECT` line is the verdict: `vendor/kind` (several joined by `or` when each is
//! acceptable), `none` for an ordinary page, `ambiguous` for a page with no verdict to test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use reqwest_llm_guard::contract::{self, Mode};
use reqwest_llm_guard::evidence::{ApiSurface, WafKind, WafVendor, WafVerdict};
use reqwest_llm_guard::inspect::DEFAULT_MAX_BODY_BYTES;
use reqwest_llm_guard::waf;

/// Files in the corpus when this test was written; fewer means a broken checkout, not a pass.
const CORPUS_FILES: usize = 90;
/// Of which: walls with a verdict, and ordinary pages.
const WALL_FILES: usize = 23;
const ORDINARY_FILES: usize = 66;

/// The surfaces a response is checked as: the verdict must not depend on which was called.
const SURFACES: [ApiSurface; 2] = [ApiSurface::ChatCompletions, ApiSurface::Responses];

/// The reference each wall must carry, and the Cloudflare data centre, read by hand from the
/// response (`None`: the response carries none). A Cloudflare Ray ID is the bare 16 hex digits,
/// whether it came from `cf-ray` (`74010bfafc5c1d24-IAD`: data centre `IAD`) or from the page.
/// Embed's captures fold a redirect chain into one header list, so a repeated `cf-ray` names each
/// hop and the last is the page's own (the one its `cRay` repeats).
const REFERENCES: &[(&str, Option<&str>, Option<&str>)] = &[
    (
        "cloudscraper__js_challenge-27-05-2020.txt",
        Some("599a6dccbf9bfb84"),
        None,
    ),
    (
        "cloudscraper__js_challenge2_16_05_2020.txt",
        Some("594049c59e2dfb8c"),
        None,
    ),
    (
        "cloudscraper__js_challenge_03_12_2018.txt",
        Some("4834ce407815974a"),
        None,
    ),
    (
        "cloudscraper__js_challenge_09_06_2016.txt",
        Some("2b05d3393e872d77"),
        None,
    ),
    (
        "cloudscraper__js_challenge_11_12_2019.txt",
        Some("5432d3a0db50eeaa"),
        None,
    ),
    ("cloudscraper__js_challenge_21_03_2019.txt", None, None),
    (
        "cloudscraper__js_challenge_26_05_2020.txt",
        Some("5999bdf31cbdd87d"),
        None,
    ),
    (
        "embed__codepen.io.zhouzi-pen-jorazp.txt",
        Some("891a9078a9911ba1"),
        Some("MAD"),
    ),
    (
        "embed__www.politico.com.story-2013-12-presidents-barack-obama-george-w-bush-second-term-101314.html.txt",
        Some("891a90b63ed91bbb"),
        Some("MAD"),
    ),
    (
        "embed_old__codepen_2020-02-18.txt",
        Some("567338432bf6d671"),
        None,
    ),
    (
        "embed_old__codepen_2020-05-20.txt",
        Some("5967ea84edd7d651"),
        Some("MAD"),
    ),
    (
        "embed_old__codepen_2021-04-04.txt",
        Some("63ab8a9ebdb1111d"),
        Some("MAD"),
    ),
    (
        "flaresolverr__cloudflare_captcha_hcaptcha_v1.txt",
        Some("732fbc436ab471ed"),
        None,
    ),
    (
        "flaresolverr__cloudflare_init_v1.txt",
        Some("732fd3bc9c1d72de"),
        None,
    ),
    (
        "snippet__akamai_boe_2026.txt",
        Some("18.deb00f17.1777271373.a94320a2"),
        None,
    ),
    ("snippet__akamai_botmanager_challenge.txt", None, None),
    ("snippet__aws_waf_captcha_2026.txt", None, None),
    ("snippet__aws_waf_challenge_noheader.txt", None, None),
    // The cf-ray of this rebuilt page is a placeholder, still a Ray ID in shape.
    (
        "snippet__cloudflare_1015_ratelimit_429.txt",
        Some("0000000000000000"),
        Some("XXX"),
    ),
    (
        "snippet__cloudflare_1020_v4_2022.txt",
        Some("74010bfafc5c1d24"),
        Some("IAD"),
    ),
    (
        "snippet__cloudfront_config_403_deepseek_2026.txt",
        Some("D_ryC7me9eDD9EGQDphf5CfHG3DIQbIiYgcskppowW1TATag1HFP9g=="),
        None,
    ),
    ("snippet__cloudfront_geo_restriction.txt", None, None),
    (
        "snippet__cloudfront_waf_request_blocked.txt",
        Some("QGJDmdNqJJ6_zS3ALUczF-8NrM-HDKqTzNu-CZoppz6bi3nWv_cSIw=="),
        None,
    ),
];

/// What a fixture's `EXPECT` line says.
#[derive(Debug)]
enum Expect {
    /// An ordinary page: no wall.
    Nothing,
    /// A wall: one of these vendor and kind pairs.
    Wall(Vec<(WafVendor, WafKind)>),
    /// No verdict to test against; the line, for the report.
    Ambiguous(String),
}

/// One recorded response.
struct Fixture {
    file: String,
    status: StatusCode,
    headers: HeaderMap,
    expect: Expect,
    /// The README: "The status of the cloudscraper and FlareSolverr pages was not recorded:
    /// Cloudflare serves its challenges with 403 or 503." Such a page is tried at both.
    status_unrecorded: bool,
    body: Vec<u8>,
}

impl Fixture {
    /// The statuses the response is tried at.
    fn statuses(&self) -> Vec<StatusCode> {
        let mut statuses = vec![self.status];
        if self.status_unrecorded {
            for other in [StatusCode::FORBIDDEN, StatusCode::SERVICE_UNAVAILABLE] {
                if !statuses.contains(&other) {
                    statuses.push(other);
                }
            }
        }
        statuses
    }

    /// The verdict the inspect layer leaves on the response, at every status and surface tried,
    /// each with what it was tried as.
    fn verdicts(&self) -> Vec<(String, Option<WafVerdict>)> {
        let mut out = Vec::new();
        for status in self.statuses() {
            for surface in SURFACES {
                out.push((
                    format!("HTTP {} as {surface}", status.as_u16()),
                    inspect(status, &self.headers, &self.body, surface),
                ));
            }
        }
        out
    }
}

/// What `inspect_capturing` (src/inspect/mod.rs) leaves on a response, with its default limits.
fn inspect(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    surface: ApiSurface,
) -> Option<WafVerdict> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let no_body =
        status.is_informational() || status.is_redirection() || status == StatusCode::NO_CONTENT;
    let stream = status.is_success() && content_type.is_some_and(contract::is_event_stream);
    if no_body || stream {
        return waf::classify_headers(headers);
    }
    if body.len() > DEFAULT_MAX_BODY_BYTES {
        return waf::classify(status, headers, &body[..waf::SNIFF_BYTES]);
    }
    let verdict = contract::check_body(surface, status, content_type, body, Mode::Compat);
    if verdict.is_pass() || verdict.api_error.is_some() {
        waf::classify_problem(headers, body)
    } else {
        waf::classify(status, headers, body)
    }
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/waf")
}

/// The whole corpus, read once; `None` (with a note) when it is absent outside CI.
fn corpus() -> Option<&'static [Fixture]> {
    static CORPUS: LazyLock<Option<Vec<Fixture>>> = LazyLock::new(|| load(&fixtures_dir()));
    CORPUS.as_deref()
}

fn load(dir: &Path) -> Option<Vec<Fixture>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the WAF fixtures {} are missing in CI: {e}", dir.display())
        }
        Err(e) => {
            eprintln!(
                "skipped: the WAF fixtures {} are not readable: {e}",
                dir.display()
            );
            return None;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths.iter().map(|path| parse(path)).collect();
    assert!(
        fixtures.len() >= CORPUS_FILES,
        "read {} fixtures from {}, expected at least {CORPUS_FILES}",
        fixtures.len(),
        dir.display()
    );
    Some(fixtures)
}

/// Reads one file: `STATUS:`, `HEADER:`, `SOURCE:` and `EXPECT:` lines, `---`, the body.
fn parse(path: &Path) -> Fixture {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name")
        .to_owned();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let split = memchr::memmem::find(&bytes, b"\n---\n")
        .unwrap_or_else(|| panic!("{file}: no `---` line before the body"));
    let head = std::str::from_utf8(&bytes[..split])
        .unwrap_or_else(|e| panic!("{file}: the lines before `---` are not UTF-8: {e}"));
    let body = bytes[split + 5..].to_vec();

    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut expect = None;
    let mut status_unrecorded = false;
    for line in head.lines() {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{file}: unreadable line {line:?}"));
        match key {
            "STATUS" => {
                let code = value
                    .trim()
                    .parse::<u16>()
                    .unwrap_or_else(|e| panic!("{file}: STATUS {value:?}: {e}"));
                status = Some(
                    StatusCode::from_u16(code).unwrap_or_else(|e| panic!("{file}: {code}: {e}")),
                );
            }
            "HEADER" => {
                let (name, value) = value
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{file}: HEADER {value:?} has no name"));
                headers.append(
                    HeaderName::from_bytes(name.trim().as_bytes())
                        .unwrap_or_else(|e| panic!("{file}: header name {name:?}: {e}")),
                    HeaderValue::from_bytes(value.trim().as_bytes())
                        .unwrap_or_else(|e| panic!("{file}: header {name}: {e}")),
                );
            }
            "SOURCE" => status_unrecorded = value.contains("status not recorded"),
            "EXPECT" => expect = Some(parse_expect(&file, value)),
            _ => panic!("{file}: unknown line {line:?}"),
        }
    }
    Fixture {
        status: status.unwrap_or_else(|| panic!("{file}: no STATUS line")),
        expect: expect.unwrap_or_else(|| panic!("{file}: no EXPECT line")),
        file,
        headers,
        status_unrecorded,
        body,
    }
}

/// `none`, `ambiguous …`, or `vendor/kind[ or vendor/kind…][ (why)]`.
fn parse_expect(file: &str, line: &str) -> Expect {
    let line = line.trim();
    if line.starts_with("ambiguous") {
        return Expect::Ambiguous(line.to_owned());
    }
    let verdict = line.split(" (").next().unwrap_or_default().trim();
    if verdict == "none" {
        return Expect::Nothing;
    }
    let walls = verdict
        .split(" or ")
        .map(|pair| {
            let (vendor, kind) = pair
                .trim()
                .split_once('/')
                .unwrap_or_else(|| panic!("{file}: EXPECT {pair:?} is not vendor/kind"));
            (
                *WafVendor::ALL
                    .iter()
                    .find(|v| v.as_str() == vendor)
                    .unwrap_or_else(|| panic!("{file}: unknown vendor {vendor:?}")),
                *WafKind::ALL
                    .iter()
                    .find(|k| k.as_str() == kind)
                    .unwrap_or_else(|| panic!("{file}: unknown kind {kind:?}")),
            )
        })
        .collect();
    Expect::Wall(walls)
}

fn show(verdict: Option<&WafVerdict>) -> String {
    verdict.map_or_else(
        || "no wall".to_owned(),
        |v| {
            format!(
                "{}/{} (reference {:?} at {:?})",
                v.vendor, v.kind, v.reference, v.location
            )
        },
    )
}

/// Fails with one line per fixture that broke its expectation.
fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} fixture(s) wrong\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_is_read_whole_and_every_verdict_is_understood() {
    let Some(corpus) = corpus() else { return };
    let count = |f: fn(&Expect) -> bool| corpus.iter().filter(|x| f(&x.expect)).count();
    let walls = count(|e| matches!(e, Expect::Wall(_)));
    let ordinary = count(|e| matches!(e, Expect::Nothing));
    let ambiguous: Vec<String> = corpus
        .iter()
        .filter_map(|f| match &f.expect {
            Expect::Ambiguous(why) => Some(format!("{}: {why}", f.file)),
            _ => None,
        })
        .collect();
    eprintln!(
        "WAF fixtures: {} read, {} asserted ({walls} walls, {ordinary} ordinary pages), {} skipped as ambiguous",
        corpus.len(),
        walls + ordinary,
        ambiguous.len()
    );
    for line in &ambiguous {
        eprintln!("  ambiguous: {line}");
    }
    assert!(walls >= WALL_FILES, "{walls} walls, expected {WALL_FILES}");
    assert!(
        ordinary >= ORDINARY_FILES,
        "{ordinary} ordinary pages, expected {ORDINARY_FILES}"
    );
    assert_eq!(walls + ordinary + ambiguous.len(), corpus.len());
}

#[test]
fn every_wall_is_named_with_its_vendor_and_kind() {
    let Some(corpus) = corpus() else { return };
    let mut failures = Vec::new();
    let mut checked = 0;
    for fixture in corpus {
        let Expect::Wall(allowed) = &fixture.expect else {
            continue;
        };
        checked += 1;
        let wrong: Vec<String> = fixture
            .verdicts()
            .into_iter()
            .filter(|(_, got)| {
                !got.as_ref()
                    .is_some_and(|v| allowed.contains(&(v.vendor, v.kind)))
            })
            .map(|(how, got)| format!("{how}: {}", show(got.as_ref())))
            .collect();
        if !wrong.is_empty() {
            let want: Vec<String> = allowed.iter().map(|(v, k)| format!("{v}/{k}")).collect();
            failures.push(format!(
                "{}: want {}, got {}",
                fixture.file,
                want.join(" or "),
                wrong.join("; ")
            ));
        }
    }
    assert!(
        checked >= WALL_FILES,
        "checked {checked} walls, expected {WALL_FILES}"
    );
    report("walls", &failures);
}

#[test]
fn no_ordinary_page_is_taken_for_a_wall() {
    let Some(corpus) = corpus() else { return };
    let mut failures = Vec::new();
    let mut checked = 0;
    for fixture in corpus {
        if !matches!(fixture.expect, Expect::Nothing) {
            continue;
        }
        checked += 1;
        let walls: Vec<String> = fixture
            .verdicts()
            .into_iter()
            .filter(|(_, got)| got.is_some())
            .map(|(how, got)| format!("{how}: {}", show(got.as_ref())))
            .collect();
        if !walls.is_empty() {
            failures.push(format!(
                "{}: want no wall, got {}",
                fixture.file,
                walls.join("; ")
            ));
        }
    }
    assert!(
        checked >= ORDINARY_FILES,
        "checked {checked} ordinary pages, expected {ORDINARY_FILES}"
    );
    report("false positives", &failures);
}

#[test]
fn each_wall_carries_the_reference_its_response_gives() {
    let Some(corpus) = corpus() else { return };
    let by_file: BTreeMap<&str, &Fixture> = corpus.iter().map(|f| (f.file.as_str(), f)).collect();
    let mut failures = Vec::new();
    for &(file, reference, location) in REFERENCES {
        let Some(fixture) = by_file.get(file) else {
            failures.push(format!("{file}: listed here, missing from the corpus"));
            continue;
        };
        if !matches!(fixture.expect, Expect::Wall(_)) {
            failures.push(format!("{file}: listed here, not a wall in the corpus"));
            continue;
        }
        let wrong: Vec<String> = fixture
            .verdicts()
            .into_iter()
            .filter(|(_, got)| {
                got.as_ref()
                    .map(|v| (v.reference.as_deref(), v.location.as_deref()))
                    != Some((reference, location))
            })
            .map(|(how, got)| format!("{how}: {}", show(got.as_ref())))
            .collect();
        if !wrong.is_empty() {
            failures.push(format!(
                "{file}: want reference {reference:?} at {location:?}, got {}",
                wrong.join("; ")
            ));
        }
    }
    // A wall added to the corpus gets its reference read by hand and listed above.
    for fixture in corpus {
        if matches!(fixture.expect, Expect::Wall(_))
            && !REFERENCES.iter().any(|(file, ..)| *file == fixture.file)
        {
            failures.push(format!(
                "{}: a wall whose reference is not listed in REFERENCES",
                fixture.file
            ));
        }
    }
    report("references", &failures);
}

#[test]
fn cloudflare_references_are_bare_ray_ids_and_the_data_centre_is_apart() {
    let Some(corpus) = corpus() else { return };
    let mut failures = Vec::new();
    let mut checked = 0;
    for fixture in corpus {
        for (how, got) in fixture.verdicts() {
            let Some(wall) = got.filter(|v| v.vendor == WafVendor::Cloudflare) else {
                continue;
            };
            checked += 1;
            let bare = wall
                .reference
                .as_deref()
                .is_none_or(|r| r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()));
            let location = wall
                .location
                .as_deref()
                .is_none_or(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !bare || !location {
                failures.push(format!(
                    "{} ({how}): reference {:?}, location {:?}",
                    fixture.file, wall.reference, wall.location
                ));
            }
        }
    }
    assert!(checked > 0, "no Cloudflare wall in the corpus");
    report("Cloudflare Ray IDs", &failures);
}
