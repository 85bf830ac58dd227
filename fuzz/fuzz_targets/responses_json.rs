//! The Responses JSON checker on any body, at any status: no panic, a consistent verdict.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::contract::{Mode, check_body};
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck};

fuzz_target!(|data: &[u8]| {
    for status in [
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::BAD_GATEWAY,
    ] {
        for mode in [Mode::Compat, Mode::Strict] {
            let v = check_body(
                ApiSurface::Responses,
                status,
                Some("application/json"),
                data,
                mode,
            );
            assert_eq!(v.violation.is_some(), v.parse_check == ParseCheck::Fail);
            assert_eq!(
                v.skip_reason.is_some(),
                v.parse_check == ParseCheck::Skipped
            );
        }
    }
});
