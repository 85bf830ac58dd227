//! The error normaliser on any body: no panic; whatever it normalises, the envelope check agrees
//! that it is an error.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::contract::{ApiError, Mode, check_body};
use reqwest_llm_guard::evidence::ApiSurface;

fuzz_target!(|data: &[u8]| {
    let normalised = ApiError::from_body(data);
    let v = check_body(
        ApiSurface::ChatCompletions,
        StatusCode::BAD_REQUEST,
        None,
        data,
        Mode::Compat,
    );
    if let Some(e) = normalised {
        let checked = v
            .api_error
            .expect("the envelope check normalises what the normaliser does");
        assert_eq!(checked.message, e.message);
    }
});
