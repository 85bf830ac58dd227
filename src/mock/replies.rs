//! The mock gateway's answers, scenario by scenario, as plain data.

use std::time::Duration;

use super::Scenario;
use crate::evidence::ApiSurface;

/// What the server sends.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Body,
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    /// One piece.
    Full(Vec<u8>),
    /// SSE events, sent one frame each.
    Events(Vec<String>),
    /// `head`, then `unit` `count` times, then `tail`, made as they are sent: a stream of any
    /// length in constant memory.
    Repeat {
        head: Vec<String>,
        unit: String,
        count: usize,
        tail: Vec<String>,
    },
    /// These bytes, then the connection is cut.
    Cut(Vec<u8>),
    /// These bytes, then silence with the connection open.
    Stall(Vec<u8>),
    /// SSE events, then the connection is cut: no terminating chunk.
    CutStream(Vec<String>),
    /// SSE events, then silence with the connection open.
    StalledStream(Vec<String>),
    /// This body, its first part only after the wait (the headers leave at once).
    Late(Duration, Box<Body>),
}

/// The size of an answer, from the request's `x-mock-chunks` and `x-mock-content-bytes`
/// headers (for benchmarks and soak tests).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Size {
    /// Content deltas in a stream (default 2).
    pub(super) chunks: Option<usize>,
    /// Bytes of answer text in a non-streaming answer (default: `PASS`).
    pub(super) content_bytes: Option<usize>,
}

/// How a fault plays out, from the request's `x-mock-first-token-ms`, `x-mock-cut-after` and
/// `x-mock-down-ms` headers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Knobs {
    /// The wait for a [`Scenario::SlowFirstToken`] answer's first part (default 2 s).
    pub(super) first_token: Duration,
    /// Content deltas sent before a [`Scenario::StreamCut`] is cut or a
    /// [`Scenario::StreamStall`] stalls (default 2, of 5).
    pub(super) cut_after: usize,
    /// How long a [`Scenario::DownThenUp`] session is down from its first request (default 1 s).
    pub(super) down: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            first_token: Duration::from_secs(2),
            cut_after: 2,
            down: Duration::from_secs(1),
        }
    }
}

/// Content deltas in a [`Scenario::StreamCut`] or [`Scenario::StreamStall`] stream, unless
/// `x-mock-chunks` says otherwise.
const CUT_STREAM_TOKENS: usize = 5;

/// What the request asked for.
#[derive(Debug, Clone, Default)]
pub(super) struct Ask {
    pub(super) model: Option<String>,
    pub(super) stream: bool,
    pub(super) n: Option<u64>,
    /// The conversation ends with an assistant message: a prefill to continue.
    pub(super) prefill: bool,
    pub(super) size: Size,
    pub(super) knobs: Knobs,
}

impl Ask {
    pub(super) fn parse(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        // Chat's `messages`, or Responses' `input` when it is a list of items.
        let last_role = ["messages", "input"]
            .iter()
            .find_map(|key| v.get(*key).and_then(serde_json::Value::as_array))
            .and_then(|items| items.last())
            .and_then(|item| item.get("role"))
            .and_then(serde_json::Value::as_str);
        Some(Self {
            model: v.get("model").and_then(|m| m.as_str()).map(str::to_owned),
            stream: v
                .get("stream")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            n: v.get("n").and_then(serde_json::Value::as_u64),
            prefill: last_role == Some("assistant"),
            size: Size::default(),
            knobs: Knobs::default(),
        })
    }
}

/// Where the request's session stands: sessions are told apart by `x-mock-session`, per
/// scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    /// 1 for the session's first request.
    pub(super) attempt: u64,
    /// Time since the session's first request.
    pub(super) age: Duration,
}

const RAY: &str = "8f3a2b1c0d9e8f7a-AMS";

fn json(status: u16, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".to_owned())],
        body: Body::Full(body.into_bytes()),
    }
}

fn html(status: u16, body: &str, headers: Vec<(&'static str, String)>) -> Reply {
    let mut h = vec![("content-type", "text/html; charset=UTF-8".to_owned())];
    h.extend(headers);
    Reply {
        status,
        headers: h,
        body: Body::Full(body.as_bytes().to_vec()),
    }
}

fn envelope(message: &str, kind: &str, code: &str, param: Option<&str>) -> String {
    serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        .to_string()
}

fn events(events: Vec<String>) -> Reply {
    Reply {
        status: 200,
        headers: vec![(
            "content-type",
            "text/event-stream; charset=utf-8".to_owned(),
        )],
        body: Body::Events(events),
    }
}

const TEXT: &str = "PASS";

fn text(size: Size) -> String {
    match size.content_bytes {
        Some(n) if n > TEXT.len() => {
            let mut t = String::with_capacity(n);
            while t.len() + 5 <= n {
                t.push_str("PASS ");
            }
            t.push_str(&"."[..usize::from(t.len() < n)]);
            t
        }
        _ => TEXT.to_owned(),
    }
}

fn chat_completion(model: &str, finish: &str, n: u64, size: Size) -> String {
    let content = text(size);
    let choices: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": finish,
            })
        })
        .collect();
    serde_json::json!({
        "id": "chatcmpl-mock0001",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    })
    .to_string()
}

fn response_object(model: &str, status: &str) -> serde_json::Value {
    let (error, incomplete) = match status {
        "failed" => (
            serde_json::json!({"code": "server_error", "message": "The model failed to generate a response."}),
            serde_json::Value::Null,
        ),
        "incomplete" => (
            serde_json::Value::Null,
            serde_json::json!({"reason": "max_output_tokens"}),
        ),
        _ => (serde_json::Value::Null, serde_json::Value::Null),
    };
    let output = if status == "failed" {
        serde_json::json!([])
    } else {
        serde_json::json!([{
            "id": "msg_mock0001", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}],
        }])
    };
    serde_json::json!({
        "id": "resp_mock0001", "object": "response", "created_at": 1_767_225_600,
        "status": status, "error": error, "incomplete_details": incomplete,
        "instructions": null, "model": model, "output": output,
        "parallel_tool_calls": true, "metadata": {}, "tool_choice": "auto", "tools": [],
        "temperature": 1.0, "top_p": 1.0,
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13},
    })
}

fn chat_chunks(model: &str, finish: Option<&str>, done: bool) -> Vec<String> {
    chat_stream(model, finish, done, Size::default()).into_events()
}

impl Body {
    /// All the events of a short stream (the scenarios that edit them).
    fn into_events(self) -> Vec<String> {
        match self {
            Body::Events(e) | Body::CutStream(e) | Body::StalledStream(e) => e,
            Body::Repeat {
                mut head,
                unit,
                count,
                tail,
            } => {
                head.extend(std::iter::repeat_n(unit, count));
                head.extend(tail);
                head
            }
            Body::Full(b) | Body::Cut(b) | Body::Stall(b) => {
                vec![String::from_utf8_lossy(&b).into_owned()]
            }
            Body::Late(_, body) => body.into_events(),
        }
    }

    /// The bytes of a one-piece body (the scenarios that cut or hold it).
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Full(b) | Body::Cut(b) | Body::Stall(b) => b,
            body => body.into_events().concat().into_bytes(),
        }
    }
}

/// Whether an SSE event carries answer text (a Chat content delta, a Responses text delta).
fn is_content(event: &str) -> bool {
    let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    v["type"] == "response.output_text.delta"
        || v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
}

/// The events up to and including the `k`-th content delta (all of them when there are
/// fewer; none of them for 0): the finish reason and the terminator never come.
fn through_content(mut events: Vec<String>, k: usize) -> Vec<String> {
    let content: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| is_content(e))
        .map(|(i, _)| i)
        .collect();
    let end = match k {
        0 => content.first().copied(),
        k => content.get(k - 1).or(content.last()).map(|i| i + 1),
    };
    events.truncate(end.unwrap_or(events.len()));
    events
}

/// A `data:` line cut mid-JSON, framed as the surface frames its deltas.
fn malformed_event(responses: bool) -> String {
    if responses {
        "event: response.output_text.delta\n\
         data: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_mock0001\",\"output_index\":0,\"delta\":\n\n"
            .to_owned()
    } else {
        "data: {\"id\":\"chatcmpl-mock0001\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\n\n"
            .to_owned()
    }
}

fn chat_stream(model: &str, finish: Option<&str>, done: bool, size: Size) -> Body {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": "chatcmpl-mock0001", "object": "chat.completion.chunk", "created": 1_767_225_600,
            "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
        .to_string()
    };
    let frame = |d: String| format!("data: {d}\n\n");
    let head = vec![frame(chunk(
        serde_json::json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ))];
    let (unit, count) = match size.chunks {
        Some(n) => (
            frame(chunk(serde_json::json!({"content": "PASS "}), None)),
            n,
        ),
        None => (String::new(), 0),
    };
    let mut out = Vec::new();
    if size.chunks.is_none() {
        out.push(chunk(serde_json::json!({"content": "PA"}), None));
        out.push(chunk(serde_json::json!({"content": "SS"}), None));
    }
    if let Some(f) = finish {
        out.push(chunk(serde_json::json!({}), Some(f)));
        out.push(
            serde_json::json!({
                "id": "chatcmpl-mock0001", "object": "chat.completion.chunk", "created": 1_767_225_600,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
            })
            .to_string(),
        );
    }
    if done {
        out.push("[DONE]".to_owned());
    }
    let tail = out.into_iter().map(frame).collect();
    Body::Repeat {
        head,
        unit,
        count,
        tail,
    }
}

/// `(type, payload)` pairs, framed with `event:` lines and sequence numbers.
fn responses_events(pairs: Vec<(&str, serde_json::Value)>) -> Vec<String> {
    pairs
        .into_iter()
        .enumerate()
        .map(|(seq, (kind, mut v))| {
            v["type"] = kind.into();
            v["sequence_number"] = seq.into();
            format!("event: {kind}\ndata: {v}\n\n")
        })
        .collect()
}

fn responses_stream(model: &str, terminal: Option<&str>, out_of_order: bool) -> Vec<String> {
    responses_stream_sized(model, terminal, out_of_order, None)
}

fn responses_stream_sized(
    model: &str,
    terminal: Option<&str>,
    out_of_order: bool,
    deltas: Option<usize>,
) -> Vec<String> {
    let mut in_progress = response_object(model, "in_progress");
    in_progress["output"] = serde_json::json!([]);
    let item = serde_json::json!({"id": "msg_mock0001", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
    let part =
        serde_json::json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
    let delta = |d: &str| serde_json::json!({"item_id": "msg_mock0001", "output_index": 0, "content_index": 0, "delta": d, "logprobs": []});
    let mut pairs = vec![
        (
            "response.created",
            serde_json::json!({"response": in_progress.clone()}),
        ),
        (
            "response.in_progress",
            serde_json::json!({"response": in_progress}),
        ),
    ];
    if out_of_order {
        pairs.push(("response.output_text.delta", delta("PA")));
    }
    pairs.extend([
        ("response.output_item.added", serde_json::json!({"output_index": 0, "item": item})),
        (
            "response.content_part.added",
            serde_json::json!({"item_id": "msg_mock0001", "output_index": 0, "content_index": 0, "part": part}),
        ),
    ]);
    match deltas {
        Some(n) => pairs.extend((0..n).map(|_| ("response.output_text.delta", delta("PASS ")))),
        None => pairs.extend([
            ("response.output_text.delta", delta("PA")),
            ("response.output_text.delta", delta("SS")),
        ]),
    }
    match terminal {
        Some("error") => {
            pairs.push((
                "error",
                serde_json::json!({"error": {"type": "server_error", "code": "server_error", "message": "The server had an error while processing your request.", "param": null}}),
            ));
            pairs.push((
                "response.failed",
                serde_json::json!({"response": response_object(model, "failed")}),
            ));
        }
        Some(status) => {
            let done_text = serde_json::json!({"item_id": "msg_mock0001", "output_index": 0, "content_index": 0, "text": TEXT, "logprobs": []});
            pairs.push(("response.output_text.done", done_text));
            pairs.push((
                "response.content_part.done",
                serde_json::json!({"item_id": "msg_mock0001", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}}),
            ));
            pairs.push((
                "response.output_item.done",
                serde_json::json!({"output_index": 0, "item": response_object(model, "completed")["output"][0].clone()}),
            ));
            let event = if status == "incomplete" {
                "response.incomplete"
            } else {
                "response.completed"
            };
            pairs.push((
                event,
                serde_json::json!({"response": response_object(model, status)}),
            ));
        }
        None => {}
    }
    responses_events(pairs)
}

/// The answer for this scenario, surface and request. The faults of the connection itself
/// ([`Scenario::ResetOnce`]'s reset, [`Scenario::Hang`]'s silence) are the server's: here
/// those scenarios answer correctly.
pub(super) fn reply(
    scenario: Scenario,
    surface: ApiSurface,
    ask: Option<&Ask>,
    session: Session,
    served: u64,
) -> Reply {
    let ask = ask.cloned().unwrap_or_default();
    let model = ask
        .model
        .clone()
        .unwrap_or_else(|| "gpt-4o-mini".to_owned());
    let responses = surface == ApiSurface::Responses;
    match scenario {
        Scenario::Ok
        | Scenario::Slow
        | Scenario::RateLimitedOnce
        | Scenario::RateLimitedOnceRetryAfter
        | Scenario::ServerErrorOnce
        | Scenario::ResetOnce
        | Scenario::Hang
        | Scenario::SlowFirstToken
        | Scenario::PrefillRejected
        | Scenario::DownThenUp
        | Scenario::Drop => {
            if let Some(fault) = before_the_answer(scenario, &ask, session) {
                return fault;
            }
            if ask.model.is_none() {
                return json(
                    400,
                    envelope(
                        "you must provide a model parameter",
                        "invalid_request_error",
                        "missing_required_parameter",
                        Some("model"),
                    ),
                );
            }
            let mut reply = ok(&model, responses, &ask, None);
            if scenario == Scenario::Drop {
                let bytes = reply.body.into_bytes();
                reply.body = Body::Cut(bytes[..bytes.len() / 2].to_vec());
            } else if scenario == Scenario::SlowFirstToken {
                reply.body = Body::Late(ask.knobs.first_token, Box::new(reply.body));
            }
            reply
        }
        Scenario::Incomplete => ok(&model, responses, &ask, Some("incomplete")),
        Scenario::Flaky => match splitmix(served) % 10 {
            0..=4 => rate_limited(vec![("retry-after-ms", "10".to_owned())]),
            5 => overloaded(),
            _ => ok(&model, responses, &ask, None),
        },
        Scenario::Stall => {
            let mut reply = ok(&model, false, &ask, None);
            reply.body = Body::Stall(br#"{"id":"chatcmpl-mock0001","object":"chat.com"#.to_vec());
            reply
        }
        Scenario::RateLimited => rate_limited(vec![("retry-after", "1".to_owned())]),
        Scenario::RateLimitedMs => rate_limited(vec![("retry-after-ms", "20".to_owned())]),
        Scenario::RateLimitedLong => rate_limited(vec![("retry-after", "120".to_owned())]),
        Scenario::WafCloudflare => html(
            403,
            &format!(
                "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title>\
                 <link rel=\"stylesheet\" href=\"/cdn-cgi/styles/cf.errors.css\"></head><body>\
                 <div id=\"cf-error-details\"><h1>Sorry, you have been blocked</h1>\
                 <p>You are unable to access api.example.com</p>\
                 <span>Cloudflare Ray ID: <strong>{}</strong></span></div></body></html>",
                &RAY[..16]
            ),
            vec![("server", "cloudflare".to_owned()), ("cf-ray", RAY.to_owned())],
        ),
        Scenario::WafCloudflareChallenge => html(
            429,
            "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head><body>\
             <div id=\"challenge-error-text\">Enable JavaScript and cookies to continue</div>\
             <script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8f3a2b1c0d9e8f7a\"></script>\
             </body></html>",
            vec![
                ("server", "cloudflare".to_owned()),
                ("cf-ray", RAY.to_owned()),
                ("cf-mitigated", "challenge".to_owned()),
            ],
        ),
        Scenario::WafAkamai => html(
            403,
            "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY><H1>Access Denied</H1>\
             You don't have permission to access \"http&#58;&#47;&#47;api&#46;example&#46;com&#47;v1\" on this server.<P>\
             Reference&#32;&#35;18&#46;2f1e3c17&#46;1767225600&#46;4a5b6c7d\
             <P>https&#58;&#47;&#47;errors&#46;edgesuite&#46;net&#47;18&#46;2f1e3c17&#46;1767225600&#46;4a5b6c7d</P></BODY></HTML>",
            vec![("server", "AkamaiGHost".to_owned())],
        ),
        Scenario::WafF5 => html(
            200,
            "<html><head><title>Request Rejected</title></head><body>\
             The requested URL was rejected. Please consult with your administrator.<br><br>\
             Your support ID is: 14723983460293848512<br><br><a href='javascript:history.back();'>[Go Back]</a></body></html>",
            vec![],
        ),
        Scenario::WafAwsCaptcha => html(
            405,
            "<!DOCTYPE html><html><head><title>Human Verification</title></head><body>\
             <div id=\"captcha-container\"></div></body></html>",
            vec![("x-amzn-waf-action", "captcha".to_owned())],
        ),
        Scenario::Html200 => html(
            200,
            "<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head>\
             <body><h1>We'll be back soon.</h1></body></html>",
            vec![("server", "nginx".to_owned())],
        ),
        Scenario::ErrorIn200 => json(
            200,
            envelope(
                "Upstream provider returned an error",
                "upstream_error",
                "upstream_error",
                None,
            ),
        ),
        Scenario::OpenrouterCredits => json(
            402,
            serde_json::json!({"error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai/credits", "metadata": {}}, "user_id": "user_mock"}).to_string(),
        ),
        Scenario::GeminiError => json(
            400,
            serde_json::json!([{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.", "status": "INVALID_ARGUMENT"}}]).to_string(),
        ),
        Scenario::AnthropicOverloaded => json(
            529,
            serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_mock"}).to_string(),
        ),
        Scenario::Unauthorized => json(
            401,
            envelope(
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
                None,
            ),
        ),
        Scenario::NotFound => json(
            404,
            envelope(
                &format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                "model_not_found",
                None,
            ),
        ),
        Scenario::ResponsesFailed if responses && ask.stream => {
            events(responses_stream(&model, Some("error"), false))
        }
        Scenario::ResponsesFailed if responses => json(200, response_object(&model, "failed").to_string()),
        Scenario::ResponsesFailed | Scenario::ServerError => server_error(),
        Scenario::StreamTruncated if responses => events(responses_stream(&model, None, false)),
        Scenario::StreamTruncated => events(chat_chunks(&model, None, false)),
        Scenario::StreamOutOfOrder if responses => {
            events(responses_stream(&model, Some("completed"), true))
        }
        Scenario::StreamOutOfOrder => {
            let mut e = chat_chunks(&model, Some("stop"), true);
            e.push(e[1].clone());
            events(e)
        }
        Scenario::StreamError if responses => events(responses_stream(&model, Some("error"), false)),
        Scenario::StreamError => {
            let mut e = chat_chunks(&model, None, false);
            e.push(format!(
                "event: error\ndata: {}\n\n",
                serde_json::json!({"error": {"message": "Tool call validation failed", "type": "invalid_request_error", "code": "tool_use_failed", "status_code": 400}})
            ));
            events(e)
        }
        Scenario::StreamCut | Scenario::StreamStall => {
            let cut = scenario == Scenario::StreamCut;
            let mut long = ask.clone();
            long.size.chunks = Some(ask.size.chunks.unwrap_or(CUT_STREAM_TOKENS));
            let mut reply = ok(&model, responses, &long, None);
            reply.body = match (ask.stream, cut) {
                (true, true) => Body::CutStream(through_content(
                    reply.body.into_events(),
                    ask.knobs.cut_after,
                )),
                (true, false) => Body::StalledStream(through_content(
                    reply.body.into_events(),
                    ask.knobs.cut_after,
                )),
                // Not a stream: the answer's first half, then the cut or the silence.
                (false, _) => {
                    let mut bytes = reply.body.into_bytes();
                    bytes.truncate(bytes.len() / 2);
                    if cut {
                        Body::Cut(bytes)
                    } else {
                        Body::Stall(bytes)
                    }
                }
            };
            reply
        }
        Scenario::StreamMalformedChunk | Scenario::StreamNoTerminator if !ask.stream => {
            ok(&model, responses, &ask, None)
        }
        Scenario::StreamMalformedChunk => {
            let mut reply = ok(&model, responses, &ask, None);
            let mut e = reply.body.into_events();
            // Right after the first content delta: mid-stream, with content on both sides.
            let at = e.iter().position(|e| is_content(e)).map_or(e.len(), |i| i + 1);
            e.insert(at, malformed_event(responses));
            reply.body = Body::Events(e);
            reply
        }
        Scenario::StreamNoTerminator => {
            let mut reply = ok(&model, responses, &ask, None);
            let mut e = reply.body.into_events();
            // Chat's last event is `[DONE]`, Responses' `response.completed`.
            e.pop();
            reply.body = Body::Events(e);
            reply
        }
        Scenario::RateLimitedNoRetryAfter => rate_limited(vec![]),
        Scenario::ServiceUnavailable => overloaded(),
        Scenario::ContextLengthExceeded => json(400, context_length_exceeded(responses)),
        Scenario::ContentPolicy => json(
            400,
            envelope(
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                "invalid_request_error",
                "content_policy_violation",
                None,
            ),
        ),
    }
}

fn ok(model: &str, responses: bool, ask: &Ask, status: Option<&str>) -> Reply {
    // Claude through an OpenAI-compatible layer answers one choice whatever `n` asks.
    let claude = ask
        .model
        .as_deref()
        .is_some_and(|m| m.starts_with("claude"));
    let n = if claude {
        1
    } else {
        ask.n.unwrap_or(1).clamp(1, 8)
    };
    match (responses, ask.stream) {
        (false, false) => {
            let finish = if status == Some("incomplete") {
                "length"
            } else {
                "stop"
            };
            json(200, chat_completion(model, finish, n, ask.size))
        }
        (false, true) => {
            let finish = if status == Some("incomplete") {
                "length"
            } else {
                "stop"
            };
            Reply {
                status: 200,
                headers: vec![(
                    "content-type",
                    "text/event-stream; charset=utf-8".to_owned(),
                )],
                body: chat_stream(model, Some(finish), true, ask.size),
            }
        }
        (true, false) => json(
            200,
            response_object(model, status.unwrap_or("completed")).to_string(),
        ),
        (true, true) => events(responses_stream_sized(
            model,
            Some(status.unwrap_or("completed")),
            false,
            ask.size.chunks,
        )),
    }
}

/// A well-mixed, repeatable draw for request number `n` (SplitMix64's finaliser).
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rate_limited(mut headers: Vec<(&'static str, String)>) -> Reply {
    let mut reply = json(
        429,
        envelope(
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            "rate_limit_exceeded",
            None,
        ),
    );
    headers.push(("x-ratelimit-remaining-requests", "0".to_owned()));
    reply.headers.extend(headers);
    reply
}

/// What a session's request gets before its answer, if anything: the faults that come once
/// or for a while, and the refusals that depend on the request.
fn before_the_answer(scenario: Scenario, ask: &Ask, session: Session) -> Option<Reply> {
    let first = session.attempt == 1;
    match scenario {
        Scenario::RateLimitedOnce if first => {
            Some(rate_limited(vec![("retry-after-ms", "100".to_owned())]))
        }
        Scenario::RateLimitedOnceRetryAfter if first => {
            Some(rate_limited(vec![("retry-after", "1".to_owned())]))
        }
        Scenario::ServerErrorOnce if first => Some(server_error()),
        Scenario::DownThenUp if session.age < ask.knobs.down => Some(overloaded()),
        // Anthropic's words, in the OpenAI envelope of the layer in front (no param, no code).
        Scenario::PrefillRejected if ask.prefill => Some(json(
            400,
            serde_json::json!({"error": {
                "message": "This model does not support assistant message prefill. The conversation must end with a user message.",
                "type": "invalid_request_error",
                "param": null,
                "code": null,
            }})
            .to_string(),
        )),
        _ => None,
    }
}

/// OpenAI's 400 for a prompt over the model's context window, as each surface words it.
fn context_length_exceeded(responses: bool) -> String {
    if responses {
        envelope(
            "Your input exceeds the context window of this model. Please adjust your input and \
             try again.",
            "invalid_request_error",
            "context_length_exceeded",
            Some("input"),
        )
    } else {
        envelope(
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130000 tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            Some("messages"),
        )
    }
}

/// 503 with the "overloaded" envelope.
fn overloaded() -> Reply {
    json(
        503,
        envelope(
            "The engine is currently overloaded, please try again later",
            "server_error",
            "overloaded",
            None,
        ),
    )
}

fn server_error() -> Reply {
    json(
        500,
        envelope(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            "server_error",
            None,
        ),
    )
}
