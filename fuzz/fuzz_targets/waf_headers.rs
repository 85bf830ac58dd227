//! The WAF classifier over arbitrary values of every header it reads, and an arbitrary body.
//!
//! Oracles beyond "no panic": every verdict is deterministic, and the same whatever the order of
//! distinct header names; references stay short tokens; `classify_headers`, when it answers, is
//! what `classify` says with no body, and with a body `classify` names the same vendor and kind
//! (unless the body is the edge's own JSON answer, which `classify_problem` reports first) and
//! keeps a reference whenever the headers alone gave one.
//!
//! Input: status (two bytes), number of headers, then per header a name index, a value length
//! and the value; the rest is the body.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::evidence::WafVerdict;
use reqwest_llm_guard::waf;

/// Every header `src/waf/` reads (`rules.rs` and `mod.rs`), and one it does not.
const NAMES: &[&str] = &[
    "cf-mitigated",
    "x-amzn-waf-action",
    "x-sucuri-block",
    "x-vercel-mitigated",
    "server",
    "cf-ray",
    "content-type",
    "set-cookie",
    "x-amz-cf-id",
    "x-amz-cf-pop",
    "x-amzn-requestid",
    "via",
    "x-cache",
    "x-reference-error",
    "akamai-grn",
    "x-azure-ref",
    "x-iinfo",
    "x-cdn",
    "x-sucuri-id",
    "x-sucuri-cache",
    "x-fastly-request-id",
    "x-served-by",
    "x-datadome",
    "x-dd-b",
    "x-sl-compstate",
    "x-vercel-id",
    "x-unrelated",
];

fn parse(data: &[u8]) -> Option<(StatusCode, Vec<(HeaderName, HeaderValue)>, &[u8])> {
    let (&[lo, hi, count], mut rest) = data.split_first_chunk::<3>()?;
    let status = StatusCode::from_u16(100 + u16::from_le_bytes([lo, hi]) % 500).ok()?;
    let mut headers = Vec::new();
    for _ in 0..count % 24 {
        let (&[name, len], after) = rest.split_first_chunk::<2>()?;
        let (value, after) = after.split_at_checked(usize::from(len).min(after.len()))?;
        rest = after;
        // Values HTTP cannot carry (control bytes) never reach the classifier.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let name = NAMES[usize::from(name) % NAMES.len()];
            headers.push((HeaderName::from_static(name), value));
        }
    }
    Some((status, headers, rest))
}

fn map<'a>(pairs: impl IntoIterator<Item = &'a (HeaderName, HeaderValue)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), value.clone());
    }
    map
}

fn check_reference(verdict: Option<&WafVerdict>) {
    let Some(verdict) = verdict else { return };
    for token in [&verdict.reference, &verdict.location]
        .into_iter()
        .flatten()
    {
        assert!(!token.is_empty() && token.len() <= 130, "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:=".contains(&b)),
            "{token}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((status, pairs, body)) = parse(data) else {
        return;
    };
    let headers = map(&pairs);
    // The same values per name, in the same order, the names in another order.
    let mut by_name = pairs.clone();
    by_name.sort_by(|a, b| b.0.as_str().cmp(a.0.as_str()));
    let reordered = map(&by_name);

    let full = waf::classify(status, &headers, body);
    let problem = waf::classify_problem(&headers, body);
    let alone = waf::classify_headers(&headers);
    for (again, what) in [
        (waf::classify(status, &headers, body), "classify"),
        (
            waf::classify(status, &reordered, body),
            "classify, names reordered",
        ),
    ] {
        assert_eq!(again, full, "{what}");
    }
    assert_eq!(waf::classify_problem(&reordered, body), problem);
    assert_eq!(waf::classify_headers(&reordered), alone);
    for verdict in [&full, &problem, &alone] {
        check_reference(verdict.as_ref());
    }
    if problem.is_some() {
        // The edge's own JSON answer comes first.
        assert_eq!(full, problem);
    }
    if let Some(alone) = alone {
        assert_eq!(
            waf::classify(status, &headers, b"").as_ref(),
            Some(&alone),
            "no body: the headers' verdict"
        );
        if problem.is_none() {
            let full = full.expect("a block header answers whatever the body");
            assert_eq!((full.vendor, full.kind), (alone.vendor, alone.kind));
            assert!(
                alone.reference.is_none() || full.reference.is_some(),
                "a reference the headers gave is not lost: {alone:?} {full:?}"
            );
        }
    }
});
