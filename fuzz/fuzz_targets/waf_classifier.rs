//! The WAF classifier on any status, headers and body: no panic, references stay short tokens.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::waf;

/// Headers the classifier reads, switched on by the bits of the first two bytes.
const HEADERS: &[(&str, &str)] = &[
    ("server", "cloudflare"),
    ("cf-ray", "8f1e2d3c4b5a6978-AMS"),
    ("cf-mitigated", "challenge"),
    ("x-amzn-waf-action", "captcha"),
    ("x-amz-cf-id", "abcDEF123=="),
    ("server", "AkamaiGHost"),
    ("x-azure-ref", "0abc123"),
    ("x-sucuri-id", "12345"),
    ("x-iinfo", "1-2-3"),
    ("content-type", "text/html"),
    ("content-type", "application/json"),
    ("content-type", "text/event-stream"),
    ("set-cookie", "__cf_bm=abc"),
    ("x-vercel-mitigated", "challenge"),
    ("server", "nginx"),
    ("x-sucuri-block", "1"),
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = StatusCode::from_u16(100 + u16::from_le_bytes([data[0], data[1]]) % 500)
        .unwrap_or(StatusCode::OK);
    let bits = u16::from_le_bytes([data[2], data[3]]);
    let mut headers = HeaderMap::new();
    for (i, (k, v)) in HEADERS.iter().enumerate() {
        if bits & (1 << i) != 0 {
            headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
    }
    let body = &data[4..];
    for verdict in [
        waf::classify(status, &headers, body),
        waf::classify_problem(&headers, body),
        waf::classify_headers(&headers),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(r) = verdict.reference {
            assert!(r.len() <= 130, "{r}");
            assert!(
                r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:=".contains(&b)),
                "{r}"
            );
        }
    }
});
