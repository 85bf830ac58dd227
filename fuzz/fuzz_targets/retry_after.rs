//! The server's wait hints, as the retry layer reads them: `retry-after-ms`, `retry-after`
//! (seconds or an HTTP date) and `x-should-retry`, with any bytes as their values and any
//! clock. No panic; the same answer twice; `retry-after-ms` wins when it is usable; a wait is
//! never negative and its reason names a header that is there.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::retry::{WaitReason, server_wait, should_retry_header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (clock, rest) = data.split_at(8);
    let secs = u64::from_le_bytes(clock.try_into().unwrap_or_default()) % (1 << 40);
    let now = UNIX_EPOCH + Duration::from_secs(secs);
    let mut parts = rest.splitn(3, |b| *b == 0);
    let mut headers = HeaderMap::new();
    for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
        if let Some(value) = parts.next()
            && let Ok(v) = HeaderValue::from_bytes(value)
        {
            headers.insert(name, v);
        }
    }
    let first = server_wait(&headers, now);
    assert_eq!(first, server_wait(&headers, now), "deterministic");
    if let Some((_, reason)) = first {
        match reason {
            WaitReason::RetryAfterMs => assert!(headers.contains_key("retry-after-ms")),
            WaitReason::RetryAfter => assert!(headers.contains_key("retry-after")),
            WaitReason::Backoff => panic!("a server wait is never the backoff"),
            _ => {}
        }
    }
    // `retry-after-ms` alone decides whenever it is usable on its own.
    let mut ms_only = HeaderMap::new();
    if let Some(v) = headers.get("retry-after-ms") {
        ms_only.insert("retry-after-ms", v.clone());
    }
    if let Some(ms) = server_wait(&ms_only, now) {
        assert_eq!(first, Some(ms), "retry-after-ms wins");
    }
    let _ = should_retry_header(&headers);
    let _ = SystemTime::now();
});
