//! The ChatCompletions stream checker: no panic, and the same verdict however the body is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reqwest_llm_guard::contract::{Mode, StreamChecker, ContractVerdict};
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck};

fn check(chunks: &[&[u8]], mode: Mode) -> ContractVerdict {
    let mut c = StreamChecker::with_max_event_bytes(ApiSurface::ChatCompletions, mode, 64 * 1024);
    for chunk in chunks {
        c.feed(chunk);
    }
    c.finish()
}

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Compat, Mode::Strict] {
        let whole = check(&[data], mode);
        assert_eq!(
            whole.violation.is_some(),
            whole.parse_check == ParseCheck::Fail
        );
        let cut = data
            .first()
            .map_or(0, |b| usize::from(*b) % (data.len() + 1));
        let (a, b) = data.split_at(cut);
        assert_eq!(check(&[a, b], mode), whole);
    }
});
