//! The request lint and the request/response cross-checks over any request body, for every
//! surface and model family: no panic, the same findings twice, and nothing linted for a body
//! that does not even start as a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::lint::{ModelFamily, Returned, cross_check, lint_request};

fuzz_target!(|data: &[u8]| {
    // Anything but a JSON object (the lint tolerates bytes it never reads, such as invalid
    // UTF-8 inside a message, so "object" is judged by its first byte).
    let object = data.trim_ascii_start().first() == Some(&b'{');
    for surface in ApiSurface::ALL {
        let families = std::iter::once(None).chain(ModelFamily::ALL.iter().copied().map(Some));
        for family in families {
            let findings = lint_request(data, *surface, family);
            assert_eq!(findings, lint_request(data, *surface, family), "deterministic");
            if !object {
                assert!(findings.is_empty(), "a body that is not an object asks nothing");
            }
            for (choices, streamed, tool_calls) in [(Some(1), false, false), (Some(3), true, true), (None, true, false)] {
                let got = Returned::new(choices, streamed, Some("m"), tool_calls);
                let _ = cross_check(data, *surface, family, &got);
            }
        }
    }
});
