//! `llm-guard proxy --config FILE`: an OpenAI-compatible server on loopback that sends every
//! request through the whole guard (call evidence and OpenTelemetry from `OTEL_*`, retry,
//! failover with a circuit breaker per upstream, inspection), so a service in any language gets
//! failover by pointing its OpenAI SDK's base URL at it (`http://127.0.0.1:8787/v1`).
//!
//! It serves `POST …/chat/completions`, `POST …/responses` and `GET …/responses/{id}` (after
//! any prefix: `/v1/…`, `/openai/v1/…`), streaming or not, and answers anything else with a 404
//! in OpenAI's error shape. A request goes, headers and all (less the hop-by-hop ones, `Host`
//! and `Accept-Encoding`), to the first eligible upstream; its answer comes back as it arrives
//! (streams are never buffered past the commit point), with three headers of the proxy's own:
//! `x-llm-guard-upstream` (which upstream answered), `x-llm-guard-hops` (moves to another
//! upstream) and `x-llm-guard-decision` (the call's `fallback_decision` when the headers came;
//! a stream's final word is on its telemetry), and `x-should-retry: false` on an answer the
//! proxy already retried or failed over, or held, so an SDK's own retries do not run the
//! bounded sequence again. A WAF or bot wall, at any status (a 200 included), answers as an
//! OpenAI-shaped error (`error.type` `waf_wall`, `error.code` `{vendor}_{kind}`, the upstream's
//! status when 4xx or 5xx, else 502; the reference in the message and in
//! `x-llm-guard-waf-vendor`, `-kind`, `-reference`), never as the wall's page. A stream that
//! fails after it started ends with an `event: error` whose data has an `error` object
//! (`code` `stream_failed`), which both SDKs raise as an API error, and the connection is then
//! cut: never a clean end. A stream that already passed its terminal event on (`[DONE]`,
//! `response.completed`, …) is not turned into an error afterwards: the SDKs stopped reading
//! there. A complete answer with a malformed event in the middle reaches the caller as it came
//! (each SDK judges the events it reads), and its evidence says `parse_check=fail`: the proxy
//! never rewrites an answer it has started to pass on. A call that got
//! no answer at all is a 502 whose
//! `error.code` says why: `connect`, `timeout`, `reset`, `time_to_headers`, `no_upstream`,
//! `request` or `other`.
//!
//! Keys stay out of the file: an upstream names the environment variable that holds its key
//! (`api_key_env`), and the proxy refuses to start while one is unset. The caller's own
//! `Authorization` goes only to an upstream with no key configured that sets `forward_caller_auth`;
//! any other gets no caller credential at all. Keys are never printed: the proxy prints one
//! start-up line (address and upstream names), and per request nothing unless `--log` asks for one
//! line per call, written when the call ends (a stream's when it ends, fails or is dropped): time,
//! method, path without its query, status, upstream, hops, decision, how a stream ended, duration;
//! `--log-format json` for one JSON object a line. Ctrl-C (or SIGTERM) stops it: it stops
//! accepting, lets open requests finish for up to 30 s (a second Ctrl-C stops at once), and flushes
//! the telemetry.
//!
//! ```toml
//! listen = "127.0.0.1:8787"          # default; other hosts need allow_non_loopback = true
//!                                    # and [auth] keys_env
//! deadline = "60s"                   # the whole call, every retry and hop included
//! header_read_timeout = "30s"        # a connection that never finishes its headers is closed
//! max_connections = 1024             # open at once; past it, new ones wait
//!
//! [[upstreams]]                      # in priority order
//! name = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"     # the variable's NAME, never the key
//! context_window = 128000
//!
//! [[upstreams]]
//! name = "gateway"
//! base_url = "https://gateway.example/v1"
//! api_key_env = "GATEWAY_KEY"
//! model = "openai/gpt-4o-mini"       # asks this upstream for this model instead
//! surfaces = ["chat_completions"]    # default: both; Responses calls skip it
//! prefill = false
//! drill = false                      # true: traffic only after the evidence drill passed
//!
//! [[upstreams]]
//! name = "local"                     # no key of its own
//! base_url = "http://127.0.0.1:11434/v1"
//! forward_caller_auth = true         # gets the caller's Authorization (default: none)
//!
//! [breaker]                          # the defaults
//! consecutive_failures = 5
//! failure_rate = 0.5
//! window = "60s"
//! minimum_calls = 20
//! open_base = "30s"
//! open_max = "5m"
//! jitter = 0.1
//! half_open_permits = 1
//!
//! [retry]
//! max_retries = 2                    # per upstream
//! time_to_headers = "30s"            # default: no limit
//! preset = "429"                     # or "openai_sdk": 408, 409, 429, 5xx, transport errors
//!
//! [auth]                             # required beyond loopback; optional on it
//! keys_env = ["PROXY_KEY"]           # callers present one as Bearer; never forwarded
//!
//! [failover]
//! max_hops = 2
//! commit = "first_byte"              # or "first_content", or "end" (with end_buffer_bytes)
//! first_token_timeout = "60s"
//! idle_timeout = "60s"
//! continuation = false               # true: continue a cut Chat stream where prefill = true
//! ```
//!
//! Every field but `name` and `base_url` is optional; unknown fields are refused. A file that
//! cannot be used (a field of the wrong type, an unknown or misspelt field, `api_key` or any key
//! in the file, a bad URL or duration, no upstreams) stops the command before it listens,
//! with exit code 2 and a message naming the field and the upstream (never repeating a value).
//!
//! `drill = true` (which needs `api_key_env`): the upstream gets caller traffic only once the
//! evidence drill (`llm-guard smoke`'s, with the upstream's model and key) passed against it,
//! and again after its breaker opened; the proxy drills it at start and every 30 s while it is
//! out of rotation, and says so on stderr (spans to OTLP when exporting).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest_llm_guard::evidence::{ApiSurface, FallbackDecision, TransportErrorKind, WafVerdict};
use reqwest_llm_guard::failover::{Failover, FailoverHandle};
use reqwest_llm_guard::retry::{OpenAiSdk, Retry};
use reqwest_llm_guard::telemetry::otlp::{self, OtlpGuard};
use reqwest_llm_guard::{Evidence, EvidenceHandle, Guard};
use reqwest_middleware::ClientWithMiddleware;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::chain;
use crate::config::{self, Config, RetryPreset};
use crate::forward::{self, DECISION_HEADER, HOPS_HEADER, UPSTREAM_HEADER};

/// The example in `llm-guard proxy --help` (the same as the module docs').
pub(crate) const CONFIG_EXAMPLE: &str = r#"Configuration (TOML):

    listen = "127.0.0.1:8787"          # default; other hosts need allow_non_loopback = true
                                       # and [auth] keys_env
    deadline = "60s"                   # the whole call, every retry and hop included
    header_read_timeout = "30s"        # a connection that never finishes its headers is closed
    max_connections = 1024             # open at once; past it, new ones wait

    [[upstreams]]                      # in priority order
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"     # the variable's NAME, never the key
    context_window = 128000

    [[upstreams]]
    name = "gateway"
    base_url = "https://gateway.example/v1"
    api_key_env = "GATEWAY_KEY"
    model = "openai/gpt-4o-mini"       # asks this upstream for this model instead
    surfaces = ["chat_completions"]    # default: both; Responses calls skip it
    prefill = false
    drill = false                      # true: traffic only after the evidence drill passed

    [[upstreams]]
    name = "local"                     # no key of its own
    base_url = "http://127.0.0.1:11434/v1"
    forward_caller_auth = true         # gets the caller's Authorization (default: none)

    [breaker]                          # the defaults
    consecutive_failures = 5
    failure_rate = 0.5
    window = "60s"
    minimum_calls = 20
    open_base = "30s"
    open_max = "5m"
    jitter = 0.1
    half_open_permits = 1

    [retry]
    max_retries = 2                    # per upstream
    time_to_headers = "30s"            # default: no limit
    preset = "429"                     # or "openai_sdk": 408, 409, 429, 5xx, transport errors

    [auth]                             # required beyond loopback; optional on it
    keys_env = ["PROXY_KEY"]           # callers present one as Bearer; never forwarded

    [failover]
    max_hops = 2
    commit = "first_byte"              # or "first_content", or "end" (with end_buffer_bytes)
    first_token_timeout = "60s"
    idle_timeout = "60s"
    continuation = false               # true: continue a cut Chat stream where prefill = true

Every field but `name` and `base_url` is optional; unknown fields are refused, and so is any
key in the file. A file that cannot be used stops the command before it listens, with exit
code 2 and a message naming the field. An upstream whose api_key_env variable is unset stops
it too: an upstream with a key of its own never gets the caller's Authorization, and one
without gets it only with forward_caller_auth = true. `deadline` used to be under [retry]:
read there still, with a warning to move it.

Served: POST .../chat/completions, POST .../responses, GET .../responses/{id} (any prefix);
GET /healthz (200 while alive) and GET /readyz (200 while an upstream is in rotation, else
503), which never reach an upstream.
Response headers added: x-llm-guard-upstream, x-llm-guard-hops, x-llm-guard-decision, and
x-should-retry: false on an answer the proxy already retried or failed over, or held. A WAF
wall at any status answers as an error: error.type "waf_wall", error.code "{vendor}_{kind}",
headers x-llm-guard-waf-vendor, -kind, -reference. A call
with no answer is a 502 with error.type "proxy_error" and error.code saying why (connect,
timeout, reset, time_to_headers, no_upstream, request, other).

`drill = true` puts an upstream in rotation only once the evidence drill passed against it (and
again after its breaker opened); it needs `api_key_env`.
Telemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, spans and metrics go to that collector."#;

/// The largest request body the proxy reads (requests with images inline run to megabytes).
const MAX_REQUEST_BYTES: usize = 64 << 20;
/// How long open requests may run on after Ctrl-C.
const GRACE: Duration = Duration::from_secs(30);
/// How long to wait for a TCP connection to an upstream (a black-holed one fails over).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// `llm-guard proxy`'s flags.
#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    /// The configuration file (TOML, described below).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print one line per call on stdout, written when the call ends (a stream's when it
    /// ends, fails or is dropped): time, method, path (without its query), status, upstream,
    /// hops, decision, how a stream ended, duration. Never a header, a body or a key.
    #[arg(long)]
    log: bool,
    /// The log line's format: `text` (the default) or `json` (one object a line).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

struct State {
    client: ClientWithMiddleware,
    /// The keys callers must present as `Bearer` (none: loopback only, no check). Never
    /// printed, never forwarded.
    inbound: Vec<Vec<u8>>,
    header_read_timeout: Duration,
    max_connections: usize,
    log: bool,
    log_json: bool,
    /// The failover layer's state, for `/readyz`.
    upstreams: FailoverHandle,
    names: Vec<String>,
}

/// Reads the file, checks it and the keys, then serves until Ctrl-C. Exit code 2 for anything
/// that stops it from starting.
pub(crate) async fn run(args: &ProxyArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("llm-guard proxy: {message}");
        ExitCode::from(2)
    };
    let path = args.config.display();
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {path}: {e}")),
    };
    let config = match config::parse(&text) {
        Ok(c) => c,
        Err(e) => return fail(format!("{path}: {e}")),
    };
    for (i, u) in config.upstreams.iter().enumerate() {
        // An upstream with a key of its own must never be sent the caller's instead: refuse to
        // start rather than serve it keyless. Only the variable's name is printed.
        if let Some(var) = &u.api_key_env
            && std::env::var_os(var).is_none_or(|v| v.is_empty())
        {
            return fail(format!(
                "{path}: upstreams[{i}] (\"{}\").api_key_env: the environment variable {var} \
                 is unset or empty (an upstream with a key of its own never gets the caller's; \
                 set it, or remove api_key_env and set forward_caller_auth = true to send it \
                 the caller's Authorization)",
                u.name
            ));
        }
    }
    let mut inbound = Vec::with_capacity(config.inbound_keys_env.len());
    for (i, var) in config.inbound_keys_env.iter().enumerate() {
        match std::env::var(var) {
            Ok(key) if !key.is_empty() => inbound.push(key.into_bytes()),
            _ => {
                return fail(format!(
                    "{path}: auth.keys_env[{i}]: the environment variable {var} is unset or empty"
                ));
            }
        }
    }
    let otel = match otel_from_env().await {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let (failover, handle) = failover(&config);
    let client = match client(&config, failover, otel.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot build the HTTP client: {}", chain(&e))),
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", config.listen)),
    };
    let stop = Stop::install();
    let addr = listener.local_addr().unwrap_or(config.listen);
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    println!(
        "llm-guard proxy listening on http://{addr} (upstreams: {}); Ctrl-C to stop",
        names.join(", ")
    );
    for deprecation in &config.deprecations {
        eprintln!("llm-guard proxy: warning: {path}: {deprecation}");
    }
    let drills = spawn_drills(&config, handle.clone(), otel.is_some());
    let state = Arc::new(State {
        client,
        inbound,
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
        log: args.log,
        log_json: args.log_format == "json",
        upstreams: handle,
        names: config.upstreams.iter().map(|u| u.name.clone()).collect(),
    });
    serve(listener, state, stop).await;
    drills.abort();
    if let Some(otel) = otel {
        // Flushing blocks on the exporters: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            otel.flush();
            drop(otel);
        })
        .await;
    }
    println!("llm-guard proxy stopped");
    ExitCode::SUCCESS
}

/// The OTLP pipelines when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, as `smoke` does.
async fn otel_from_env() -> Result<Option<OtlpGuard>, String> {
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    // The HTTP exporter builds a blocking client: off the async workers.
    match tokio::task::spawn_blocking(otlp::pipeline_from_env).await {
        Ok(Ok(guard)) => Ok(Some(guard)),
        Ok(Err(e)) => Err(chain(&e)),
        Err(e) => Err(format!("cannot build the OTLP export: {e}")),
    }
}

/// The configuration's failover layer, and the handle to its breakers and promotions.
fn failover(config: &Config) -> (Failover, FailoverHandle) {
    let f = &config.failover;
    let mut builder = Failover::builder(config.upstreams.iter().map(|u| u.upstream.clone()))
        .with_max_hops(f.max_hops)
        .with_breaker(&config.breaker)
        .with_commit_point(f.commit)
        .with_first_token_timeout(f.first_token_timeout)
        .with_idle_timeout(f.idle_timeout);
    if f.continuation {
        // Continuations go straight to the chosen upstream (their stream is checked there);
        // like the proxy's own client: no overall timeout, redirects handed back.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        builder = builder.with_continuation(client);
    }
    builder.build_with_handle()
}

/// How long a failed (or demoted) upstream waits before the drill is tried again.
const DRILL_RETRY: Duration = Duration::from_secs(30);

/// Promotion by evidence: every upstream marked `drill = true` gets caller traffic only once
/// the evidence drill passed against it, and again after its breaker opened. One task watches
/// them all; each drill's record goes to stderr (and its spans to OTLP when exporting).
fn spawn_drills(
    config: &Config,
    failover: FailoverHandle,
    export: bool,
) -> tokio::task::JoinHandle<()> {
    let drilled: Vec<(String, crate::drill::DrillConfig)> = config
        .upstreams
        .iter()
        .filter(|u| u.drill)
        .filter_map(|u| {
            let key = u.api_key_env.clone()?;
            let surface = if u.upstream.serves(ApiSurface::ChatCompletions) {
                ApiSurface::ChatCompletions
            } else {
                ApiSurface::Responses
            };
            let model = u.upstream.model().unwrap_or("gpt-4o-mini").to_owned();
            Some((
                u.name.clone(),
                crate::drill::DrillConfig::default()
                    .with_base_url(Some(u.upstream.base_url().to_owned()))
                    .with_surface(surface)
                    .with_model(model)
                    .with_api_key_env(key),
            ))
        })
        .collect();
    tokio::spawn(async move {
        if drilled.is_empty() {
            return;
        }
        loop {
            let waiting: Vec<String> = failover
                .awaiting_drill()
                .iter()
                .map(|u| u.name().to_owned())
                .collect();
            for (name, drill) in drilled.iter().filter(|(n, _)| waiting.contains(n)) {
                // The HTTP exporter builds a blocking client: off the async workers. A drill
                // whose export cannot be built still runs, and says so.
                let exported = if export {
                    match tokio::task::spawn_blocking(crate::drill::DrillExport::from_env).await {
                        Ok(Ok(exported)) => Some(exported),
                        Ok(Err(e)) => {
                            eprintln!(
                                "llm-guard proxy: drill for {name}: its spans are not exported ({:?})",
                                e.kind()
                            );
                            None
                        }
                        Err(_) => None,
                    }
                } else {
                    None
                };
                match crate::drill::run_with_export(drill.clone(), exported).await {
                    Ok(record) if record.pass => {
                        failover.promote(name);
                        eprintln!(
                            "llm-guard proxy: drill passed for {name} (run {}): in rotation",
                            record.run_id
                        );
                    }
                    Ok(record) => eprintln!(
                        "llm-guard proxy: drill did not pass for {name} (run {}, decision {}): \
                         out of rotation, next try in {}s",
                        record.run_id,
                        record.fallback_decision,
                        DRILL_RETRY.as_secs()
                    ),
                    Err(e) => eprintln!(
                        "llm-guard proxy: drill could not run for {name} ({:?}): out of rotation, \
                         next try in {}s",
                        e.kind(),
                        DRILL_RETRY.as_secs()
                    ),
                }
            }
            tokio::time::sleep(DRILL_RETRY).await;
        }
    })
}

/// The guarded client: the configuration's failover, breaker and retry settings.
fn client(
    config: &Config,
    failover: Failover,
    otel: Option<&OtlpGuard>,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    let r = &config.retry;
    // The retry layer's default backoff, with the file's number of retries.
    let mut policy = reqwest_llm_guard::retry::default_policy();
    policy.max_n_retries = Some(r.max_retries);
    let mut retry = Retry::new().with_policy(policy);
    if let Some(limit) = r.time_to_headers {
        retry = retry.with_time_to_headers(limit);
    }
    let guard = match otel {
        Some(o) => Guard::new().with_telemetry(o.telemetry()),
        None => Guard::new().without_telemetry(),
    }
    .with_deadline(config.deadline)
    .with_failover(failover);
    let guard = match r.preset {
        RetryPreset::On429 => guard.with_retry(retry),
        RetryPreset::OpenAiSdk => guard.with_retry(retry.with_strategy(OpenAiSdk)),
    };
    // No overall timeout (generations and streams run long: the failover layer's stream
    // limits and the retry deadline bound them); redirects go back to the caller as they are.
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(guard.client(http))
}

/// An accepted connection with Nagle's algorithm off: a stream's events are small writes,
/// each of which must leave at once (with it on, every event after the first on a reused
/// connection waited for the caller's delayed ACK, ~40 ms).
fn no_delay(stream: tokio::net::TcpStream) -> tokio::net::TcpStream {
    // Failing leaves the connection as it was: slower to stream, never wrong.
    let _ = stream.set_nodelay(true);
    stream
}

/// Accepts connections until Ctrl-C or SIGTERM, then drains them.
async fn serve(listener: TcpListener, state: Arc<State>, mut stop: Stop) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.wait() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // At most `max_connections` open: past it, new ones wait in the listen backlog.
            accepted = listener.accept(), if connections.len() < state.max_connections => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: let some connections close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let stream = no_delay(stream);
                let state_timeout = state.header_read_timeout;
                let state = state.clone();
                let mut stopping = stop_rx.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone()));
                    // A connection that never finishes its headers is closed at the limit.
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(state_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    // Errors here are the caller going away, or a stream that failed after it
                    // was handed on (its body ends in an error, never cleanly).
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stopping.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(());
    if !connections.is_empty() {
        eprintln!(
            "llm-guard proxy: stopping: waiting up to {}s for {} open connection(s); Ctrl-C \
             again to stop now",
            GRACE.as_secs(),
            connections.len()
        );
        let drain = async { while connections.join_next().await.is_some() {} };
        tokio::select! {
            () = drain => {}
            () = tokio::time::sleep(GRACE) => {}
            () = stop.wait() => {}
        }
    }
    connections.abort_all();
}

/// Ctrl-C, or SIGTERM where there is one (a container's stop). Installed before the start-up
/// line is printed: a signal sent as soon as the proxy says it listens must stop it cleanly,
/// not kill it.
struct Stop {
    #[cfg(unix)]
    signals: Vec<tokio::signal::unix::Signal>,
}

impl Stop {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = [SignalKind::interrupt(), SignalKind::terminate()]
                .into_iter()
                .filter_map(|kind| signal(kind).ok())
                .collect();
            Self { signals }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next signal.
    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            if self.signals.is_empty() {
                // No handler could be installed: never stop on a signal.
                std::future::pending::<()>().await;
            }
            let next = self.signals.iter_mut().map(|s| Box::pin(s.recv()));
            let _ = futures_util::future::select_all(next).await;
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What the per-request log line says.
struct Served {
    status: StatusCode,
    upstream: Option<Arc<str>>,
    hops: u32,
    decision: Option<FallbackDecision>,
    /// The call's evidence, final when the call ends (a stream's at its end).
    evidence: Option<EvidenceHandle>,
    /// The answer is a stream passed on as it comes.
    streamed: bool,
}

async fn handle(
    req: hyper::Request<Incoming>,
    state: Arc<State>,
) -> Result<hyper::Response<ProxyBody>, Infallible> {
    let method = req.method().clone();
    // The path only: a query may carry a key (Azure-style `?api-key=`).
    let path = req.uri().path().to_owned();
    if method == Method::GET
        && let Some(health) = health(&path, &state)
    {
        return Ok(health);
    }
    let started = std::time::Instant::now();
    let at = std::time::SystemTime::now();
    let (response, served) = if admitted(&req, &state.inbound) {
        proxy(req, &state).await
    } else {
        // Refused here, never sent upstream.
        let mut out = error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the proxy needs one of its inbound keys, as `Authorization: Bearer …`",
        );
        out.headers_mut()
            .insert(SHOULD_RETRY_HEADER, HeaderValue::from_static("false"));
        let served = Served {
            status: StatusCode::UNAUTHORIZED,
            upstream: None,
            hops: 0,
            decision: None,
            evidence: None,
            streamed: false,
        };
        (out, served)
    };
    if state.log {
        let json = state.log_json;
        let handle = served.evidence.clone();
        let line = move |e: Option<Evidence>| {
            log_line(
                &method,
                &path,
                &served,
                e.as_ref(),
                at,
                started.elapsed(),
                json,
            );
        };
        match handle {
            // A stream's line when it ends; anything else's now.
            Some(h) if h.get().is_none() => {
                tokio::spawn(async move { line(Some(h.settled().await)) });
            }
            Some(h) => line(h.get()),
            None => line(None),
        }
    }
    Ok(response)
}

/// Whether a request may use the proxy: with inbound keys configured, it presents one as
/// `Bearer`, compared in constant time (`subtle`: the time taken says nothing of how much of a
/// key matched); without, anyone on loopback may.
fn admitted(req: &hyper::Request<Incoming>, keys: &[Vec<u8>]) -> bool {
    use subtle::ConstantTimeEq as _;
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    // Every key is compared, whichever matches.
    keys.iter()
        .fold(subtle::Choice::from(0), |any, key| {
            any | key.as_slice().ct_eq(presented)
        })
        .into()
}

/// One access-log line for a call that ended, on stdout: `text` or `json`.
fn log_line(
    method: &Method,
    path: &str,
    served: &Served,
    e: Option<&Evidence>,
    at: std::time::SystemTime,
    took: Duration,
    json: bool,
) {
    let upstream = e
        .and_then(|e| e.upstream.as_deref())
        .or(served.upstream.as_deref());
    let hops = e.map_or(served.hops, |e| e.hops);
    let decision = e.map(|e| e.fallback_decision).or(served.decision);
    // How a stream ended: whole, failed, or dropped by the caller; `-` for anything else.
    let stream = match e {
        _ if !served.streamed => "-",
        Some(e) if e.skip_reason == Some(reqwest_llm_guard::evidence::SkipReason::Cancelled) => {
            "cancelled"
        }
        Some(e) if e.parse_check == Some(reqwest_llm_guard::evidence::ParseCheck::Fail) => "failed",
        Some(_) => "complete",
        None => "-",
    };
    let time = humantime::format_rfc3339_millis(at).to_string();
    let millis = took.as_secs_f64() * 1000.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "time": time,
                "method": method.as_str(),
                "path": path,
                "status": served.status.as_u16(),
                "upstream": upstream,
                "hops": hops,
                "decision": decision.map(FallbackDecision::as_str),
                "stream": stream,
                "duration_ms": (millis * 10.0).round() / 10.0,
            })
        );
    } else {
        println!(
            "{time} {method} {path} {} upstream={} hops={hops} decision={} stream={stream} duration_ms={millis:.1}",
            served.status.as_u16(),
            upstream.unwrap_or("-"),
            decision.map_or("-", FallbackDecision::as_str),
        );
    }
}

/// `GET /healthz`: the proxy is alive (200). `GET /readyz`: at least one upstream is in
/// rotation, promoted and its breaker not open (200, naming them), else 503. Neither reaches an
/// upstream, nor is logged.
fn health(path: &str, state: &State) -> Option<hyper::Response<ProxyBody>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let waiting: Vec<String> = state
                .upstreams
                .awaiting_drill()
                .iter()
                .map(|u| u.name().to_owned())
                .collect();
            let in_rotation: Vec<&str> = state
                .names
                .iter()
                .filter(|n| !waiting.contains(n))
                .filter(|n| {
                    state.upstreams.breaker(n).is_some_and(|b| {
                        b.state() != reqwest_llm_guard::failover::BreakerState::Open
                    })
                })
                .map(String::as_str)
                .collect();
            if in_rotation.is_empty() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "not_ready", "in_rotation": in_rotation}),
                )
            } else {
                (
                    StatusCode::OK,
                    serde_json::json!({"status": "ready", "in_rotation": in_rotation}),
                )
            }
        }
        _ => return None,
    };
    let mut out = hyper::Response::new(UnsyncBoxBody::new(
        Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
            .map_err(|never| match never {}),
    ));
    *out.status_mut() = status;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(out)
}

async fn proxy(
    req: hyper::Request<Incoming>,
    state: &State,
) -> (hyper::Response<ProxyBody>, Served) {
    let local = |status: StatusCode, code: &str, message: &str| {
        let served = Served {
            status,
            upstream: None,
            hops: 0,
            decision: None,
            evidence: None,
            streamed: false,
        };
        (error_response(status, code, message), served)
    };
    let Some(route) = forward::route(req.method(), req.uri().path(), req.uri().query()) else {
        return local(
            StatusCode::NOT_FOUND,
            "not_found",
            "llm-guard proxy serves POST .../chat/completions, POST .../responses and \
             GET .../responses/{id}",
        );
    };
    let method: Method = req.method().clone();
    let mut headers = forward::request_headers(req.headers());
    if !state.inbound.is_empty() {
        // The caller's key is the proxy's, never an upstream's.
        headers.remove(http::header::AUTHORIZATION);
    }
    // Buffered whole: the retry and failover layers resend it.
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return local(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "the request body is over the proxy's 64 MiB limit",
            );
        }
        Err(_) => {
            return local(
                StatusCode::BAD_REQUEST,
                "request_body",
                "the request body could not be read",
            );
        }
    };
    let evidence = EvidenceHandle::new();
    let result = state
        .client
        .request(method, route.url)
        .headers(headers)
        .body(body)
        .with_extension(evidence.clone())
        .send()
        .await;
    match result {
        Ok(response) => {
            let e = Evidence::of(&response);
            let status = response.status();
            if let Some(wall) = &e.waf {
                // Not the API's answer, whatever its status: an error the SDKs raise and type.
                drop(response);
                let mut out = wall_response(status, wall);
                mark(out.headers_mut(), Some(&e));
                let served = Served {
                    status: out.status(),
                    upstream: e.upstream,
                    hops: e.hops,
                    decision: Some(e.fallback_decision),
                    evidence: Some(evidence.clone()),
                    streamed: false,
                };
                return (out, served);
            }
            let mut headers = forward::response_headers(response.headers());
            mark(&mut headers, Some(&e));
            let streamed = status.is_success()
                && response
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("text/event-stream"));
            let body = Ending::new(
                http::Response::<reqwest::Body>::from(response)
                    .into_body()
                    .map_err(|e| Box::new(e) as BoxError),
                streamed,
            );
            let mut out = hyper::Response::new(UnsyncBoxBody::new(body));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            let served = Served {
                status,
                upstream: e.upstream,
                hops: e.hops,
                decision: Some(e.fallback_decision),
                evidence: Some(evidence.clone()),
                streamed,
            };
            (out, served)
        }
        Err(error) => {
            // The call layer settles the evidence before it returns an error.
            let e = evidence.get();
            let code = error_code(&error);
            let upstream = e.as_ref().and_then(|e| e.upstream.clone());
            let hops = e.as_ref().map_or(0, |e| e.hops);
            let decision = e.as_ref().map(|e| e.fallback_decision);
            let mut message = no_answer(code).to_owned();
            if let Some(u) = &upstream {
                let _ = write!(message, " (last upstream tried: {u}; hops: {hops})");
            }
            let mut out = error_response(StatusCode::BAD_GATEWAY, code, &message);
            mark(out.headers_mut(), e.as_ref());
            let served = Served {
                status: StatusCode::BAD_GATEWAY,
                upstream,
                hops,
                decision,
                evidence: Some(evidence.clone()),
                streamed: false,
            };
            (out, served)
        }
    }
}

/// The proxy's own response headers. An answer the proxy already retried or failed over, and
/// a hold, say `x-should-retry: false`: the SDKs honour it, so their own retries do not run the
/// whole bounded sequence again (a 429 storm over two upstreams was 18 upstream requests for
/// one SDK call with the SDK's 2 retries on top).
fn mark(headers: &mut HeaderMap, e: Option<&Evidence>) {
    let Some(e) = e else {
        headers.insert(HOPS_HEADER, HeaderValue::from(0));
        return;
    };
    // Names are checked to be header-safe when the file is read.
    if let Some(v) = e
        .upstream
        .as_deref()
        .and_then(|u| HeaderValue::from_str(u).ok())
    {
        headers.insert(UPSTREAM_HEADER, v);
    }
    headers.insert(HOPS_HEADER, HeaderValue::from(e.hops));
    headers.insert(
        DECISION_HEADER,
        HeaderValue::from_static(e.fallback_decision.as_str()),
    );
    if e.retry_count > 0 || e.hops > 0 || e.fallback_decision == FallbackDecision::Hold {
        headers.insert(SHOULD_RETRY_HEADER, HeaderValue::from_static("false"));
    }
}

/// The header the OpenAI SDKs read to decide whether to retry.
const SHOULD_RETRY_HEADER: &str = "x-should-retry";

/// `error.code` for a call that got no answer: the crate's own reasons first, then the kind of
/// transport error.
fn error_code(error: &reqwest_middleware::Error) -> &'static str {
    if let reqwest_middleware::Error::Middleware(e) = error
        && let Some(e) = e.downcast_ref::<reqwest_llm_guard::Error>()
    {
        match e.kind() {
            reqwest_llm_guard::ErrorKind::NoUpstream => return "no_upstream",
            reqwest_llm_guard::ErrorKind::RequestNotCloneable => return "not_cloneable",
            _ => {}
        }
    }
    TransportErrorKind::of(error).as_str()
}

/// A fixed sentence per code: the error's own text would name the upstream's URL.
fn no_answer(code: &str) -> &'static str {
    match code {
        "connect" => "no upstream could be reached",
        "timeout" => "the upstream timed out before its response headers",
        "reset" => "the upstream closed the connection before its response headers",
        "time_to_headers" => "no response headers within retry.time_to_headers",
        "no_upstream" => "no configured upstream serves this API surface",
        "request" => "the request to the upstream failed",
        _ => "the call failed before any response",
    }
}

/// An OpenAI-style error: `{"error":{"message","type":"proxy_error","code","param":null}}`.
/// A WAF or bot wall, at any status (a 200 included), as an OpenAI-shaped error the SDKs raise
/// and type: the upstream's status when it is 4xx or 5xx, else 502; `error.type` `waf_wall`,
/// `error.code` `{vendor}_{kind}`; the vendor, the kind and the reference their support asks
/// for in the message and in `x-llm-guard-waf-*` headers. The wall's page is not passed on.
fn wall_response(status: StatusCode, wall: &WafVerdict) -> hyper::Response<ProxyBody> {
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let mut message = format!(
        "the upstream's edge answered, not the API: a {} {} (waf.vendor={}, waf.kind={})",
        wall.vendor, wall.kind, wall.vendor, wall.kind
    );
    if let Some(reference) = &wall.reference {
        let _ = write!(
            message,
            "; reference for {}'s support: {reference}",
            wall.vendor
        );
    }
    if let Some(location) = &wall.location {
        let _ = write!(message, " (at {location})");
    }
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "waf_wall",
            "code": format!("{}_{}", wall.vendor, wall.kind),
            "param": null,
        }
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = hyper::Response::new(UnsyncBoxBody::new(
        Full::new(Bytes::from(bytes)).map_err(|never| match never {}),
    ));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-llm-guard-waf-vendor",
        HeaderValue::from_static(wall.vendor.as_str()),
    );
    headers.insert(
        "x-llm-guard-waf-kind",
        HeaderValue::from_static(wall.kind.as_str()),
    );
    if let Some(v) = wall
        .reference
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok())
    {
        headers.insert("x-llm-guard-waf-reference", v);
    }
    out
}

fn error_response(status: StatusCode, code: &str, message: &str) -> hyper::Response<ProxyBody> {
    let body = serde_json::json!({
        "error": {"message": message, "type": "proxy_error", "code": code, "param": null}
    });
    // A `Value` of strings always serializes.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = hyper::Response::new(UnsyncBoxBody::new(
        Full::new(Bytes::from(bytes)).map_err(|never| match never {}),
    ));
    *out.status_mut() = status;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_send_each_write_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap(), "Nagle is on by default");
        assert!(super::no_delay(stream).nodelay().unwrap());
        drop(client.await);
    }

    use super::*;

    #[test]
    fn the_help_example_is_a_valid_configuration() {
        let toml: Vec<&str> = CONFIG_EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("    "))
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(str::trim_start)
            .collect();
        let toml = toml.join("\n");
        let c = config::parse(&toml).unwrap();
        assert_eq!(c.upstreams.len(), 3);
    }

    #[test]
    fn error_envelopes_have_the_openai_shape() {
        let r = error_response(StatusCode::BAD_GATEWAY, "connect", "m");
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}

/// The event a stream that fails after it was handed on ends with, before the connection is
/// cut: `event: error` (the Node SDK raises on the name) whose data has an `error` object (the
/// Python SDK raises on the key) and the Responses spec's top-level `type`, `code`, `message`,
/// `param`. The SDKs raise it as an API error, where a cut connection alone is an untyped
/// transport error; the connection is still cut after it, so no client can take the answer for
/// a whole one.
const STREAM_FAILED_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"code\":\"stream_failed\",\"message\":\"the upstream's stream failed after the proxy had started passing it on: the answer is incomplete\",\"param\":null,\"error\":{\"message\":\"the upstream's stream failed after the proxy had started passing it on: the answer is incomplete\",\"type\":\"server_error\",\"code\":\"stream_failed\",\"param\":null}}\n\n";

/// Whether these bytes hold a stream's terminal event: Chat's `[DONE]`, or a Responses
/// `response.completed`, `response.incomplete` or `response.failed`.
fn terminal(data: &[u8]) -> bool {
    [
        &b"data: [DONE]"[..],
        b"\"response.completed\"",
        b"\"response.incomplete\"",
        b"\"response.failed\"",
    ]
    .iter()
    .any(|t| memchr::memmem::find(data, t).is_some())
}

pin_project_lite::pin_project! {
    /// How the caller's body ends when the upstream's fails.
    ///
    /// - For a stream (`streamed`) whose terminal event has not passed: the error is preceded
    ///   by [`STREAM_FAILED_EVENT`], on a line of its own, so the SDKs raise it. After the
    ///   terminal event the SDKs have stopped reading: the answer stands as it came, and the
    ///   connection is cut.
    /// - Whatever came last is flushed before the error. hyper's HTTP/1 writer buffers the
    ///   last frame and, told of the body's error on its next poll, closes the connection
    ///   without flushing it: the caller would lose the last bytes that did arrive. Returning
    ///   `Pending` once (with a wake) lets hyper flush them before it sees the error.
    struct Ending<B> {
        #[pin]
        inner: B,
        streamed: bool,
        // The error, once the frame before it is flushed.
        held: Option<BoxError>,
        after_data: bool,
        // The last two bytes passed on: an event starts only after a blank line.
        tail: [u8; 2],
        // The answer's terminal event has been passed on.
        ended: bool,
    }
}

impl<B> Ending<B> {
    fn new(inner: B, streamed: bool) -> Self {
        Self {
            inner,
            streamed,
            held: None,
            after_data: false,
            tail: *b"\n\n",
            ended: false,
        }
    }
}

impl<B> hyper::body::Body for Ending<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.project();
        if let Some(e) = this.held.take() {
            if *this.after_data {
                // Once more: the frame before the error is still to be flushed.
                *this.after_data = false;
                *this.held = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(e)));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) if *this.streamed && !*this.ended => {
                *this.streamed = false;
                *this.held = Some(e);
                *this.after_data = true;
                let mut event = Vec::with_capacity(STREAM_FAILED_EVENT.len() + 2);
                // Cut inside an event: end it first (what it held is lost either way).
                match *this.tail {
                    [b'\n', b'\n'] => {}
                    [_, b'\n'] => event.push(b'\n'),
                    _ => event.extend_from_slice(b"\n\n"),
                }
                event.extend_from_slice(STREAM_FAILED_EVENT.as_bytes());
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(event)))))
            }
            Poll::Ready(Some(Err(e))) if *this.after_data => {
                *this.after_data = false;
                *this.held = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                *this.after_data = frame.is_data();
                if let Some(data) = frame.data_ref() {
                    *this.ended = *this.ended || terminal(data);
                    match data[..] {
                        [] => {}
                        [only] => *this.tail = [this.tail[1], only],
                        [.., a, b] => *this.tail = [a, b],
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.streamed {
            // An event may be added: no exact length.
            hyper::body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
