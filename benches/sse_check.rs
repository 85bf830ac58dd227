//! `sse_check`: the stream checkers alone, no network. ~1 MB of OpenAI-shaped Chat chunks and
//! ~1 MB of Responses `response.output_text.delta` events (made here, like the recorded
//! fixtures), fed in 4 KiB pieces to `StreamChecker::new(surface, Mode::Compat)` then
//! `finish()`, against splitting the same bytes into SSE frames only (`sse::Decoder` with a
//! callback that counts). Criterion reports bytes/s; the bench also prints events/s.
//!
//! `cargo bench --bench sse_check`

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use reqwest_llm_guard::contract::{Mode, StreamChecker};
use reqwest_llm_guard::evidence::{ApiSurface, ParseCheck};
use reqwest_llm_guard::sse::{Decoder, Frame};

#[allow(dead_code)]
mod common;

use common::Samples;

const TARGET_BYTES: usize = 1 << 20;
const PIECE: usize = 4096;
const RUNS: usize = 200;

/// Words of a completion, JSON-escaped as they appear inside a string (quotes, newlines and
/// non-ASCII text included, as OpenAI sends them).
const WORDS: &[&str] = &[
    " The", " capital", " of", " the", " United", " Kingdom", " is", " London", ".", " It", "’s",
    " known", " for", " \\\"", "Big", " Ben", "\\\"", ",", " the", " café", " culture", "\\n\\n",
    "-", " **", "Thames", "**", ":", " a", " river", " 🌉",
];

/// A deterministic generator for OpenAI's `obfuscation` padding.
struct Pad(u64);

impl Pad {
    fn next(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let mut x = self.0;
        let len = 4 + (x % 12);
        (0..len)
            .map(|_| {
                x /= 62;
                char::from(ALPHABET[usize::try_from(x % 62).unwrap_or(0)])
            })
            .collect()
    }
}

/// A Chat Completions stream like OpenAI's: the role chunk, content deltas, the finish chunk,
/// the usage chunk (`stream_options.include_usage`), `[DONE]`. Returns the body and its events.
fn chat_stream() -> (Vec<u8>, u64) {
    let head = r#"{"id":"chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc","object":"chat.completion.chunk","created":1782955818,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_d0469e1700","choices":["#;
    let mut pad = Pad(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(TARGET_BYTES + 4096);
    let mut events = 0;
    let _ = write!(
        out,
        "data: {head}{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"{}\"}}\n\n",
        pad.next()
    );
    events += 1;
    let mut tokens = 0;
    while out.len() < TARGET_BYTES - 1024 {
        let word = WORDS[tokens % WORDS.len()];
        let _ = write!(
            out,
            "data: {head}{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"{}\"}}\n\n",
            pad.next()
        );
        tokens += 1;
        events += 1;
    }
    let _ = write!(
        out,
        "data: {head}{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null,\"obfuscation\":\"{}\"}}\n\n",
        pad.next()
    );
    let _ = write!(
        out,
        "data: {head}],\"usage\":{{\"prompt_tokens\":78,\"completion_tokens\":{tokens},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}},\"obfuscation\":\"{}\"}}\n\ndata: [DONE]\n\n",
        tokens + 78,
        pad.next()
    );
    events += 3;
    (out.into_bytes(), events)
}

/// A Responses `response` object with this status, output and usage.
fn response_object(status: &str, completed_at: &str, output: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"resp_0fabc13af1ee0049006a691dffc71481a18c5ea1841dec14ce","object":"response","created_at":1785273855,"status":"{status}","background":false,"completed_at":{completed_at},"error":null,"frequency_penalty":0.0,"incomplete_details":null,"instructions":"Answer briefly.","max_output_tokens":null,"max_tool_calls":null,"model":"gpt-5.5-2026-04-23","moderation":null,"output":[{output}],"parallel_tool_calls":true,"presence_penalty":0.0,"previous_response_id":null,"prompt_cache_key":null,"prompt_cache_retention":"24h","reasoning":{{"effort":"medium","summary":null}},"safety_identifier":null,"service_tier":"auto","store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}},"verbosity":"medium"}},"tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":0.98,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}"#
    )
}

/// A Responses stream like OpenAI's: `response.created`, `response.in_progress`, a message item
/// and its content part, `response.output_text.delta` events, their `.done` events and
/// `response.completed`, each with `event:` and a `sequence_number`.
fn responses_stream() -> (Vec<u8>, u64) {
    let item = "msg_0fabc13af1ee0049006a691e008ed881a19fb315ceb267e808";
    let mut pad = Pad(0xD1B5_4A32_D192_ED03);
    let mut out = String::with_capacity(TARGET_BYTES + 64 * 1024);
    let mut seq = 0u64;
    let mut event = |out: &mut String, kind: &str, body: &str| {
        let _ = write!(
            out,
            "event: {kind}\ndata: {{\"type\":\"{kind}\",{body},\"sequence_number\":{seq}}}\n\n"
        );
        seq += 1;
    };
    let open = response_object("in_progress", "null", "", "null");
    event(
        &mut out,
        "response.created",
        &format!("\"response\":{open}"),
    );
    event(
        &mut out,
        "response.in_progress",
        &format!("\"response\":{open}"),
    );
    event(
        &mut out,
        "response.output_item.added",
        &format!(
            "\"item\":{{\"id\":\"{item}\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}},\"output_index\":0"
        ),
    );
    event(
        &mut out,
        "response.content_part.added",
        &format!(
            "\"content_index\":0,\"item_id\":\"{item}\",\"output_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}"
        ),
    );
    let mut text = String::new();
    let mut tokens = 0;
    // Leave room for the closing events, which repeat the whole text four times.
    while out.len() + 5 * text.len() < TARGET_BYTES - 4096 {
        let word = WORDS[tokens % WORDS.len()];
        text.push_str(word);
        event(
            &mut out,
            "response.output_text.delta",
            &format!(
                "\"content_index\":0,\"delta\":\"{word}\",\"item_id\":\"{item}\",\"logprobs\":[],\"obfuscation\":\"{}\",\"output_index\":0",
                pad.next()
            ),
        );
        tokens += 1;
    }
    event(
        &mut out,
        "response.output_text.done",
        &format!(
            "\"content_index\":0,\"item_id\":\"{item}\",\"logprobs\":[],\"output_index\":0,\"text\":\"{text}\""
        ),
    );
    let part = format!(
        "{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"{text}\"}}"
    );
    event(
        &mut out,
        "response.content_part.done",
        &format!("\"content_index\":0,\"item_id\":\"{item}\",\"output_index\":0,\"part\":{part}"),
    );
    let message = format!(
        "{{\"id\":\"{item}\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{part}],\"role\":\"assistant\"}}"
    );
    event(
        &mut out,
        "response.output_item.done",
        &format!("\"item\":{message},\"output_index\":0"),
    );
    let usage = format!(
        "{{\"input_tokens\":147,\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":{tokens},\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}",
        tokens + 147
    );
    let done = response_object("completed", "1785273856", &message, &usage);
    event(
        &mut out,
        "response.completed",
        &format!("\"response\":{done}"),
    );
    (out.into_bytes(), seq)
}

fn check(surface: ApiSurface, body: &[u8]) -> u64 {
    let mut checker = StreamChecker::new(surface, Mode::Compat);
    for piece in body.chunks(PIECE) {
        checker.feed(piece);
    }
    let events = checker.events();
    black_box(checker.finish());
    events
}

fn split(body: &[u8]) -> u64 {
    let mut decoder = Decoder::new();
    let mut events = 0u64;
    let mut on_frame = |frame: Frame<'_>| {
        if matches!(frame, Frame::Event(_)) {
            events += 1;
        }
    };
    for piece in body.chunks(PIECE) {
        decoder.feed(piece, &mut on_frame);
    }
    decoder.finish(&mut on_frame);
    events
}

fn main() {
    common::print_machine();
    let steal = common::Steal::start();
    let inputs = [
        ("chat", ApiSurface::ChatCompletions, chat_stream()),
        ("responses", ApiSurface::Responses, responses_stream()),
    ];
    for (name, surface, (body, events)) in &inputs {
        let mut checker = StreamChecker::new(*surface, Mode::Compat);
        for piece in body.chunks(PIECE) {
            checker.feed(piece);
        }
        assert_eq!(checker.events(), *events, "{name}: events");
        let verdict = checker.finish();
        assert_eq!(verdict.parse_check, ParseCheck::Pass, "{name}: {verdict:?}");
        assert_eq!(split(body), *events, "{name}: frames");
        println!(
            "{name}: {} bytes, {events} events, {} warnings",
            body.len(),
            verdict.warnings.len()
        );
    }

    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = c.benchmark_group("sse_check");
    for (name, surface, (body, _)) in &inputs {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("checker", name), body, |b, body| {
            b.iter(|| check(*surface, body));
        });
        group.bench_with_input(BenchmarkId::new("frames_only", name), body, |b, body| {
            b.iter(|| split(body));
        });
    }
    group.finish();
    c.final_summary();

    if std::env::args().any(|a| a.starts_with("--profile-time")) {
        // Profiling one benchmark (`-- --profile-time N`): no other measurement.
        return;
    }
    println!(
        "\nsse_check: medians of {RUNS} runs each, checker and frames only taking turns, one core, 4 KiB pieces"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>16}",
        "input", "MB/s", "events", "Mevents/s", "vs frames only"
    );
    for (name, surface, (body, events)) in &inputs {
        let mut checked = Vec::with_capacity(RUNS);
        let mut framed = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            black_box(check(*surface, body));
            checked.push(start.elapsed());
            let start = Instant::now();
            black_box(split(body));
            framed.push(start.elapsed());
        }
        let checked = Samples::new(checked).median();
        let framed = Samples::new(framed).median();
        let bytes = f64::from(u32::try_from(body.len()).expect("a small body"));
        let count = f64::from(u32::try_from(*events).expect("few events"));
        for (label, t) in [("checker", checked), ("frames_only", framed)] {
            println!(
                "{:<24} {:>10.0} {:>10} {:>12.2} {:>15.3}x",
                format!("{name}/{label}"),
                bytes / t.as_secs_f64() / 1e6,
                events,
                count / t.as_secs_f64() / 1e6,
                framed.as_secs_f64() / t.as_secs_f64(),
            );
        }
    }
    steal.report();
}
