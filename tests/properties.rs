//! Invariants: a stream split anywhere checks the same as the whole; no input panics a checker.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

mod common;

use common::{Recorded, all_files, load};
use proptest::prelude::*;
use reqwest_llm_guard::contract::{ApiError, ContractVerdict, Mode, StreamChecker, check_body};
use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::sse::{Decoder, Frame};

fn streams() -> Vec<Recorded> {
    all_files()
        .iter()
        .flat_map(|f| load(f))
        .filter(|r| {
            r.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("text/event-stream"))
        })
        .collect()
}

type Events = Vec<(Option<String>, Vec<u8>, u64, bool)>;

fn decode(chunks: &[&[u8]]) -> Events {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    let mut on = |f: Frame<'_>| {
        if let Frame::Event(e) = f {
            out.push((
                e.event_type().map(str::to_owned),
                e.data().to_vec(),
                e.offset(),
                e.is_complete(),
            ));
        }
    };
    for c in chunks {
        decoder.feed(c, &mut on);
    }
    decoder.finish(&mut on);
    out
}

fn check_stream(r: &Recorded, chunks: &[&[u8]], mode: Mode) -> ContractVerdict {
    let mut checker = StreamChecker::new(ApiSurface::classify(&r.method, &r.path), mode);
    for c in chunks {
        checker.feed(c);
    }
    checker.finish()
}

/// Cuts `body` at the given fractions of its length.
fn split<'a>(body: &'a [u8], cuts: &[f64]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| (f * body.len() as f64) as usize)
        .collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&body[last..p]);
        last = p;
    }
    out.push(&body[last..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_gives_the_same_events_and_verdict(cuts in prop::collection::vec(0.0f64..1.0, 0..12)) {
        for r in streams() {
            let whole_events = decode(&[&r.body]);
            let chunks = split(&r.body, &cuts);
            prop_assert_eq!(&decode(&chunks), &whole_events, "{}", r.name);
            for mode in [Mode::Compat, Mode::Strict] {
                let whole = check_stream(&r, &[&r.body], mode);
                prop_assert_eq!(check_stream(&r, &chunks, mode), whole, "{}", r.name);
            }
        }
    }

    #[test]
    fn byte_by_byte_crlf_streams_check_the_same(cut in 0usize..64) {
        // The same streams with CRLF line ends, fed in pieces of `cut + 1` bytes.
        for r in streams() {
            let crlf: Vec<u8> = r.body.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
            let chunks: Vec<&[u8]> = crlf.chunks(cut + 1).collect();
            let lf = check_stream(&r, &[&r.body], Mode::Compat);
            let got = check_stream(&r, &chunks, Mode::Compat);
            prop_assert_eq!(got.parse_check, lf.parse_check, "{}", r.name);
            prop_assert_eq!(got.violation, lf.violation, "{}", r.name);
            prop_assert_eq!(got.facts.events, lf.facts.events, "{}", r.name);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_checker(body in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(0.0f64..1.0, 0..6)) {
        exercise(&body, &cuts);
    }

    #[test]
    fn sse_shaped_noise_never_panics_a_checker(lines in prop::collection::vec(sse_line(), 0..40), cuts in prop::collection::vec(0.0f64..1.0, 0..6)) {
        let body = lines.concat();
        exercise(body.as_bytes(), &cuts);
    }

    #[test]
    fn damaged_fixture_streams_never_panic(cut_from in 0.0f64..1.0, cut_len in 0usize..400, dup in any::<bool>()) {
        for r in streams() {
            let from = (cut_from * r.body.len() as f64) as usize;
            let to = (from + cut_len).min(r.body.len());
            let mut damaged = r.body[..from].to_vec();
            if dup {
                damaged.extend_from_slice(&r.body[from..to]);
                damaged.extend_from_slice(&r.body[from..to]);
            }
            damaged.extend_from_slice(&r.body[to..]);
            let surface = ApiSurface::classify(&r.method, &r.path);
            for mode in [Mode::Compat, Mode::Strict] {
                let v = check_body(surface, r.status, r.content_type.as_deref(), &damaged, mode);
                prop_assert_eq!(v.violation.is_some(), v.parse_check == reqwest_llm_guard::evidence::ParseCheck::Fail);
            }
        }
    }
}

fn sse_line() -> impl Strategy<Value = String> {
    let json = prop_oneof![
        Just(r#"{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#.to_owned()),
        Just(r#"{"choices":[{"index":3,"delta":{"tool_calls":[{"index":9,"id":""}]},"finish_reason":"stop"}]}"#.to_owned()),
        Just(r#"{"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress"}}"#.to_owned()),
        Just(r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"type":"message"}}"#.to_owned()),
        Just(r#"{"type":"response.output_text.delta","sequence_number":2,"output_index":0,"content_index":0}"#.to_owned()),
        Just(r#"{"type":"response.completed","sequence_number":3,"response":{"status":"completed","usage":{"input_tokens":1.5}}}"#.to_owned()),
        Just(r#"{"type":"error","error":{"message":"m","code":null}}"#.to_owned()),
        Just(r#"{"error":"x"}"#.to_owned()),
        Just("[DONE]".to_owned()),
        "[ -~]{0,40}",
    ];
    prop_oneof![
        json.prop_map(|j| format!("data: {j}\n\n")),
        "[a-z.]{0,20}".prop_map(|e| format!("event: {e}\n")),
        Just(": keep-alive\r\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("\u{feff}".to_owned()),
        "[ -~]{0,30}".prop_map(|s| format!("{s}\n")),
    ]
}

fn exercise(body: &[u8], cuts: &[f64]) {
    let chunks = split(body, cuts);
    for surface in [
        ApiSurface::ChatCompletions,
        ApiSurface::Responses,
        ApiSurface::Other,
    ] {
        for mode in [Mode::Compat, Mode::Strict] {
            for status in [200u16, 400, 429, 503] {
                let status = http::StatusCode::from_u16(status).unwrap();
                for ct in [
                    None,
                    Some("application/json"),
                    Some("text/event-stream"),
                    Some("text/html"),
                ] {
                    let _ = check_body(surface, status, ct, body, mode);
                }
            }
            let mut checker = StreamChecker::with_max_event_bytes(surface, mode, 256);
            for c in &chunks {
                checker.feed(c);
            }
            let _ = checker.finish();
        }
    }
    let _ = ApiError::from_body(body);
    let _ = decode(&chunks);
}
