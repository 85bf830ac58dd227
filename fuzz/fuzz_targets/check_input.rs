//! `llm-guard check`'s input parsing (a saved `curl -i` response, or a body with flags) over any
//! bytes: no panic; a parsed response's body is a suffix of the input; the error never quotes
//! the input.
#![no_main]

#[path = "../../src/bin/llm-guard/saved.rs"]
#[allow(dead_code, unreachable_pub)]
mod saved;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match saved::parse_raw(data) {
        Ok(s) => {
            assert!(data.ends_with(&s.body), "the body is the input's tail, byte for byte");
            assert!(s.heads >= 1);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.lines().count() <= 1, "one line: {message}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let flags: Vec<String> = text.lines().take(4).map(str::to_owned).collect();
        let _ = saved::from_body(http::StatusCode::OK, &flags, data.to_vec());
    }
    let _ = saved::looks_like_sse(data);
});
