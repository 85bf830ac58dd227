//! The `proxy` command's configuration file: TOML, read and checked in full before the proxy
//! listens (see `proxy.rs` for an example).
//!
//! Pure on purpose: no sockets, no environment, nothing but this crate's library, `serde`,
//! `toml` and `humantime`, so the fuzz target `proxy_config` includes this file as it is.
//!
//! Every field is read as a raw TOML value and converted here rather than by serde, so every
//! error names its field (and the upstream's index and name) and no error ever repeats a value
//! from the file: a key pasted into the wrong field must not end up on a terminal or in a CI
//! log. serde still rejects unknown fields (`deny_unknown_fields`), whose messages name only
//! the field.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::failover::{
    BreakerConfig, CommitPoint, Credential, DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    Upstream,
};
use serde::Deserialize;
use toml::Value;

/// Where the proxy listens when the file does not say.
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8787);
/// What `commit = "end"` holds at most when `end_buffer_bytes` is not given: 1 MiB.
pub(crate) const DEFAULT_END_BUFFER_BYTES: usize = 1 << 20;
/// The longest duration any field takes: longer ones are typos, and far-future instants
/// overflow clocks.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The most retries per upstream the file may ask for.
pub(crate) const MAX_RETRIES: u32 = 10;
/// The most hops per call the file may ask for.
pub(crate) const MAX_HOPS: usize = 64;

/// A checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The address to listen on.
    pub(crate) listen: SocketAddr,
    /// The upstreams, in priority order (never empty).
    pub(crate) upstreams: Vec<UpstreamConfig>,
    /// Every upstream's breaker.
    pub(crate) breaker: BreakerConfig,
    /// The call's deadline, every retry and hop included (top-level `deadline`, default 60 s).
    pub(crate) deadline: Duration,
    /// How long a connection may take to send a request's headers (default 30 s): a
    /// connection that never finishes them is closed.
    pub(crate) header_read_timeout: Duration,
    /// Connections open at once, at most (default 1,024): past it, the proxy accepts no more
    /// until one closes.
    pub(crate) max_connections: usize,
    /// The environment variables holding the keys callers must present (`[auth] keys_env`):
    /// required to listen beyond loopback.
    pub(crate) inbound_keys_env: Vec<String>,
    /// The retry layer.
    pub(crate) retry: RetryConfig,
    /// The failover layer.
    pub(crate) failover: FailoverConfig,
    /// What the file still says the old way (read, but to be moved): one line each, naming
    /// the field, never a value.
    pub(crate) deprecations: Vec<String>,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    /// Its name (letters, digits, `.`, `_`, `-`): on the evidence and in response headers.
    pub(crate) name: String,
    /// The environment variable holding its key, if it has one of its own.
    pub(crate) api_key_env: Option<String>,
    /// The upstream gets traffic only once the evidence drill passed against it, and again
    /// after its breaker opens.
    pub(crate) drill: bool,
    /// The failover layer's upstream, built from the entry.
    pub(crate) upstream: Upstream,
}

/// Which statuses the retry layer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryPreset {
    /// 429 only (`"429"`, the default).
    On429,
    /// The OpenAI SDKs' set: 408, 409, 429, 5xx, transport errors (`"openai_sdk"`).
    OpenAiSdk,
}

/// The `[retry]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryConfig {
    /// Retries per upstream (default 2).
    pub(crate) max_retries: u32,
    /// The deadline where it used to be (`[retry] deadline`): read, with a deprecation warning.
    pub(crate) deadline: Option<Duration>,
    /// The most each attempt may wait for its headers (default: no limit).
    pub(crate) time_to_headers: Option<Duration>,
    /// What is retried.
    pub(crate) preset: RetryPreset,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            deadline: None,
            time_to_headers: None,
            preset: RetryPreset::On429,
        }
    }
}

/// The `[failover]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailoverConfig {
    /// Moves to another upstream per call (default 2).
    pub(crate) max_hops: usize,
    /// When a stream is handed to the caller (default at its first byte).
    pub(crate) commit: CommitPoint,
    /// The most a stream may take for its first byte or content (default 60 s).
    pub(crate) first_token_timeout: Duration,
    /// The most a stream may stay silent between frames (default 60 s).
    pub(crate) idle_timeout: Duration,
    /// Continue a Chat stream cut after its commit on an upstream with `prefill = true`.
    pub(crate) continuation: bool,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            max_hops: 2,
            commit: CommitPoint::FirstByte,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            continuation: false,
        }
    }
}

/// A configuration that cannot be used: where, and why. Never carries a value from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The field (`upstreams[1] ("backup").base_url`, `breaker.window`), or the line of a
    /// syntax error.
    pub(crate) at: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

impl ConfigError {
    fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---- The raw shape: every field a TOML value, unknown fields refused by serde.

/// Fields that would hold a key itself: refused with their own message (before serde, whose
/// message would list them among the expected fields).
const KEY_FIELDS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "authorization",
];

/// A key in the file, in `table` (at `at`), as an error naming its field.
fn key_in(table: &Value, at: &str) -> Result<(), ConfigError> {
    match KEY_FIELDS.iter().find(|f| table.get(**f).is_some()) {
        Some(field) => Err(ConfigError::new(
            if at.is_empty() {
                (*field).to_owned()
            } else {
                format!("{at}.{field}")
            },
            "keys do not belong in the configuration file: put the key in an environment \
             variable and give its name as `api_key_env`",
        )),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Value>,
    allow_non_loopback: Option<Value>,
    deadline: Option<Value>,
    header_read_timeout: Option<Value>,
    max_connections: Option<Value>,
    auth: Option<Value>,
    upstreams: Option<Value>,
    breaker: Option<Value>,
    retry: Option<Value>,
    failover: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    keys_env: Option<Value>,
}

/// `[auth] keys_env`: the names of the variables holding the inbound keys.
fn auth(value: Value) -> Result<Vec<String>, ConfigError> {
    let raw: RawAuth = section(value, "auth")?;
    let Some(names) = raw.keys_env else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = names else {
        return Err(wrong_type(
            "auth.keys_env",
            "an array of variable names",
            &names,
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("auth.keys_env[{i}]");
        let name = string(item, &at)?;
        if !valid_env_name(&name) {
            return Err(ConfigError::new(
                at,
                "must be the NAME of an environment variable, in capitals, never the key itself",
            ));
        }
        out.push(name);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    // Read from the table before, to label every later message.
    #[serde(rename = "name")]
    _name: Option<Value>,
    base_url: Option<Value>,
    model: Option<Value>,
    api_key_env: Option<Value>,
    surfaces: Option<Value>,
    context_window: Option<Value>,
    prefill: Option<Value>,
    drill: Option<Value>,
    forward_caller_auth: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<Value>,
    failure_rate: Option<Value>,
    window: Option<Value>,
    minimum_calls: Option<Value>,
    open_base: Option<Value>,
    open_max: Option<Value>,
    jitter: Option<Value>,
    half_open_permits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_retries: Option<Value>,
    deadline: Option<Value>,
    time_to_headers: Option<Value>,
    preset: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    max_hops: Option<Value>,
    commit: Option<Value>,
    end_buffer_bytes: Option<Value>,
    first_token_timeout: Option<Value>,
    idle_timeout: Option<Value>,
    continuation: Option<Value>,
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    // Pieces between newlines: one more than the newlines before the offset.
    text.as_bytes()[..end].split(|&b| b == b'\n').count()
}

/// A serde or TOML error as a [`ConfigError`]: its message (never the document's text around
/// it, which could hold a key), at `at` or at its line.
fn toml_error(text: Option<&str>, at: &str, e: &toml::de::Error) -> ConfigError {
    let at = match (text, e.span()) {
        (Some(text), Some(span)) if at.is_empty() => format!("line {}", line_of(text, span.start)),
        _ if at.is_empty() => "the file".to_owned(),
        _ => at.to_owned(),
    };
    // toml's messages run over several lines ("invalid key\nexpected ..."): one line here.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::new(at, message)
}

/// A section's table, deserialized into its raw shape.
fn section<T: for<'de> Deserialize<'de>>(value: Value, at: &str) -> Result<T, ConfigError> {
    if !value.is_table() {
        return Err(wrong_type(at, "a table", &value));
    }
    value.try_into::<T>().map_err(|e| toml_error(None, at, &e))
}

fn wrong_type(at: &str, expected: &str, found: &Value) -> ConfigError {
    ConfigError::new(
        at,
        format!("expected {expected}, found {}", found.type_str()),
    )
}

fn string(value: Value, at: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(wrong_type(at, "a string", &other)),
    }
}

fn boolean(value: Option<Value>, at: &str, default: bool) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some(Value::Boolean(b)) => Ok(b),
        Some(other) => Err(wrong_type(at, "true or false", &other)),
    }
}

/// An integer in `min..=max`.
fn integer(value: &Value, at: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Value::Integer(n) = value else {
        return Err(wrong_type(at, "an integer", value));
    };
    match u64::try_from(*n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            at,
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

fn u32_field(value: &Value, at: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    let n = integer(value, at, u64::from(min), u64::from(max))?;
    // In range by the check above.
    u32::try_from(n).map_err(|_| ConfigError::new(at, "out of range"))
}

fn usize_field(value: &Value, at: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let n = integer(value, at, wide(min), wide(max))?;
    usize::try_from(n).map_err(|_| ConfigError::new(at, "out of range"))
}

/// A share in `0..=1` (`low_open` excludes 0).
fn share(value: Value, at: &str, low_open: bool) -> Result<f64, ConfigError> {
    #[allow(clippy::cast_precision_loss)] // Only 0 and 1 are in range.
    let x = match value {
        Value::Float(x) => x,
        Value::Integer(n) => n as f64,
        other => return Err(wrong_type(at, "a number", &other)),
    };
    let ok = x.is_finite() && x <= 1.0 && if low_open { x > 0.0 } else { x >= 0.0 };
    if ok {
        Ok(x)
    } else if low_open {
        Err(ConfigError::new(
            at,
            "must be more than 0 and at most 1 (0.5 for half)",
        ))
    } else {
        Err(ConfigError::new(at, "must be from 0 to 1 (0.1 for 10 %)"))
    }
}

/// A humantime duration, more than zero and at most [`MAX_DURATION`].
fn duration(value: Value, at: &str) -> Result<Duration, ConfigError> {
    const HINT: &str = "expected a duration such as \"30s\", \"1m 30s\" or \"500ms\"";
    let text = match value {
        Value::String(s) => s,
        other => return Err(wrong_type(at, "a duration string (\"30s\")", &other)),
    };
    let d = humantime::parse_duration(text.trim()).map_err(|_| ConfigError::new(at, HINT))?;
    if d.is_zero() {
        return Err(ConfigError::new(at, "must be more than 0"));
    }
    if d > MAX_DURATION {
        return Err(ConfigError::new(at, "must be at most 24h"));
    }
    Ok(d)
}

/// The listen address: `IP:PORT` or `localhost:PORT`.
fn listen_addr(value: Value, allow_non_loopback: bool) -> Result<SocketAddr, ConfigError> {
    const AT: &str = "listen";
    let text = string(value, AT)?;
    let text = text.trim();
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)),
        None => text.parse::<SocketAddr>().ok(),
    };
    let Some(addr) = addr else {
        return Err(ConfigError::new(
            AT,
            "expected an address and port such as \"127.0.0.1:8787\" or \"[::1]:8787\"",
        ));
    };
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(ConfigError::new(
            AT,
            format!(
                "{} is not a loopback address: the proxy spends its upstreams' keys for \
                 anyone who reaches it; set allow_non_loopback = true to serve other hosts",
                addr.ip()
            ),
        ));
    }
    Ok(addr)
}

/// An upstream name: also a response header value and a metric label, so plain.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An environment variable's name in capitals: anything else is likely a key pasted in the
/// wrong field, and would be printed in the message about an unset variable.
fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=128).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn surfaces(value: Value, at: &str) -> Result<Vec<ApiSurface>, ConfigError> {
    const KNOWN: &str = "each must be \"chat_completions\" or \"responses\"";
    let Value::Array(items) = value else {
        return Err(wrong_type(at, "an array of strings", &value));
    };
    let mut out = Vec::new();
    for item in items {
        let surface = match item {
            Value::String(s) if s == "chat_completions" => ApiSurface::ChatCompletions,
            Value::String(s) if s == "responses" => ApiSurface::Responses,
            _ => return Err(ConfigError::new(at, KNOWN)),
        };
        if !out.contains(&surface) {
            out.push(surface);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            at,
            "must name at least one surface (leave it out for both)",
        ));
    }
    Ok(out)
}

fn upstream(index: usize, value: Value, names: &[String]) -> Result<UpstreamConfig, ConfigError> {
    let mut at = format!("upstreams[{index}]");
    if !value.is_table() {
        return Err(wrong_type(&at, "a table ([[upstreams]])", &value));
    }
    // Name first, so every later message says which upstream it is about.
    let name = match value.get("name") {
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(Value::String(_)) => {
            return Err(ConfigError::new(
                format!("{at}.name"),
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        Some(other) => return Err(wrong_type(&format!("{at}.name"), "a string", other)),
        None => return Err(ConfigError::new(format!("{at}.name"), "missing")),
    };
    at = format!("{at} (\"{name}\")");
    if names.contains(&name) {
        return Err(ConfigError::new(
            format!("{at}.name"),
            "another upstream has this name",
        ));
    }
    key_in(&value, &at)?;
    let raw: RawUpstream = section(value, &at)?;
    let field = |f: &str| format!("{at}.{f}");
    let base_url = match raw.base_url {
        Some(v) => string(v, &field("base_url"))?,
        None => return Err(ConfigError::new(field("base_url"), "missing")),
    };
    // The library's own check; its message never repeats the URL (whose query may be secret).
    let mut built = Upstream::new(name.clone(), base_url.trim())
        .map_err(|e| ConfigError::new(field("base_url"), e.to_string()))?;
    let api_key_env = match raw.api_key_env {
        Some(v) => {
            let var = string(v, &field("api_key_env"))?;
            if !valid_env_name(&var) {
                return Err(ConfigError::new(
                    field("api_key_env"),
                    "must be the NAME of an environment variable, in capitals \
                     (OPENAI_API_KEY), never the key itself",
                ));
            }
            built = built.with_credential(Credential::env(var.clone()));
            Some(var)
        }
        None => None,
    };
    if let Some(v) = raw.model {
        let model = string(v, &field("model"))?;
        if model.trim().is_empty() {
            return Err(ConfigError::new(
                field("model"),
                "must not be empty (leave it out to keep the request's)",
            ));
        }
        built = built.with_model(model);
    }
    if let Some(v) = raw.surfaces {
        built = built.with_surfaces(&surfaces(v, &field("surfaces"))?);
    }
    if let Some(v) = raw.context_window {
        built = built.with_context_window(integer(&v, &field("context_window"), 1, u64::MAX)?);
    }
    built = built.with_prefill(boolean(raw.prefill, &field("prefill"), false)?);
    let drill = boolean(raw.drill, &field("drill"), false)?;
    if drill && api_key_env.is_none() {
        return Err(ConfigError::new(
            field("drill"),
            "needs api_key_env: the evidence drill calls the upstream with its own key",
        ));
    }
    built = built.with_drill_required(drill);
    let forward = boolean(
        raw.forward_caller_auth,
        &field("forward_caller_auth"),
        false,
    )?;
    if forward && api_key_env.is_some() {
        return Err(ConfigError::new(
            field("forward_caller_auth"),
            "has no effect with api_key_env: an upstream with a key of its own never gets \
             the caller's",
        ));
    }
    built = built.with_forward_caller_auth(forward);
    Ok(UpstreamConfig {
        name,
        api_key_env,
        drill,
        upstream: built,
    })
}

fn breaker(value: Value) -> Result<BreakerConfig, ConfigError> {
    let raw: RawBreaker = section(value, "breaker")?;
    let d = BreakerConfig::default();
    let consecutive = match raw.consecutive_failures {
        Some(v) => u32_field(&v, "breaker.consecutive_failures", 1, u32::MAX)?,
        None => d.consecutive_failures,
    };
    let rate = match raw.failure_rate {
        Some(v) => share(v, "breaker.failure_rate", true)?,
        None => d.failure_rate,
    };
    let window = match raw.window {
        Some(v) => duration(v, "breaker.window")?,
        None => d.window,
    };
    let minimum_calls = match raw.minimum_calls {
        Some(v) => u32_field(&v, "breaker.minimum_calls", 1, u32::MAX)?,
        None => d.minimum_calls,
    };
    let open_base = match raw.open_base {
        Some(v) => duration(v, "breaker.open_base")?,
        None => d.open_base,
    };
    let open_max = match raw.open_max {
        Some(v) => duration(v, "breaker.open_max")?,
        None => d.open_max.max(open_base),
    };
    if open_max < open_base {
        return Err(ConfigError::new(
            "breaker.open_max",
            "must be at least breaker.open_base",
        ));
    }
    let jitter = match raw.jitter {
        Some(v) => share(v, "breaker.jitter", false)?,
        None => d.jitter,
    };
    let permits = match raw.half_open_permits {
        Some(v) => u32_field(&v, "breaker.half_open_permits", 1, u32::MAX)?,
        None => d.half_open_permits,
    };
    Ok(d.with_consecutive_failures(consecutive)
        .with_failure_rate(rate, window, minimum_calls)
        .with_open_time(open_base, open_max)
        .with_jitter(jitter)
        .with_half_open_permits(permits))
}

fn retry(value: Value) -> Result<RetryConfig, ConfigError> {
    let raw: RawRetry = section(value, "retry")?;
    let mut out = RetryConfig::default();
    if let Some(v) = raw.max_retries {
        out.max_retries = u32_field(&v, "retry.max_retries", 0, MAX_RETRIES)?;
    }
    if let Some(v) = raw.deadline {
        out.deadline = Some(duration(v, "retry.deadline")?);
    }
    if let Some(v) = raw.time_to_headers {
        out.time_to_headers = Some(duration(v, "retry.time_to_headers")?);
    }
    if let Some(v) = raw.preset {
        out.preset = match v {
            Value::String(s) if s == "429" => RetryPreset::On429,
            Value::String(s) if s == "openai_sdk" => RetryPreset::OpenAiSdk,
            _ => {
                return Err(ConfigError::new(
                    "retry.preset",
                    "must be \"429\" (429 only) or \"openai_sdk\" (408, 409, 429, 5xx, \
                     transport errors)",
                ));
            }
        };
    }
    Ok(out)
}

fn failover(value: Value) -> Result<FailoverConfig, ConfigError> {
    let raw: RawFailover = section(value, "failover")?;
    let mut out = FailoverConfig::default();
    if let Some(v) = raw.max_hops {
        out.max_hops = usize_field(&v, "failover.max_hops", 0, MAX_HOPS)?;
    }
    let end = match raw.commit {
        None => false,
        Some(Value::String(s)) if s == "first_byte" => false,
        Some(Value::String(s)) if s == "first_content" => {
            out.commit = CommitPoint::FirstContent;
            false
        }
        Some(Value::String(s)) if s == "end" => true,
        Some(_) => {
            return Err(ConfigError::new(
                "failover.commit",
                "must be \"first_byte\", \"first_content\" or \"end\"",
            ));
        }
    };
    let max_bytes = match raw.end_buffer_bytes {
        Some(_) if !end => {
            return Err(ConfigError::new(
                "failover.end_buffer_bytes",
                "only applies with commit = \"end\"",
            ));
        }
        // Up to 1 GiB: the layer holds that much per stream in memory.
        Some(v) => usize_field(&v, "failover.end_buffer_bytes", 1, 1 << 30)?,
        None => DEFAULT_END_BUFFER_BYTES,
    };
    if end {
        out.commit = CommitPoint::End { max_bytes };
    }
    if let Some(v) = raw.first_token_timeout {
        out.first_token_timeout = duration(v, "failover.first_token_timeout")?;
    }
    if let Some(v) = raw.idle_timeout {
        out.idle_timeout = duration(v, "failover.idle_timeout")?;
    }
    out.continuation = boolean(raw.continuation, "failover.continuation", false)?;
    Ok(out)
}

/// Reads and checks a configuration file's text. The first problem found is the error.
pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(Some(text), "", &e))?;
    let table = Value::Table(table);
    key_in(&table, "")?;
    let raw: RawConfig = table
        .try_into()
        .map_err(|e| toml_error(None, "top level", &e))?;
    let allow_non_loopback = boolean(raw.allow_non_loopback, "allow_non_loopback", false)?;
    let listen = match raw.listen {
        Some(v) => listen_addr(v, allow_non_loopback)?,
        None => DEFAULT_LISTEN,
    };
    let items = match raw.upstreams {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(wrong_type(
                "upstreams",
                "an array of tables ([[upstreams]])",
                &other,
            ));
        }
        None => Vec::new(),
    };
    if items.is_empty() {
        return Err(ConfigError::new(
            "upstreams",
            "at least one [[upstreams]] entry is needed",
        ));
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(items.len());
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let u = upstream(index, item, &names)?;
        names.push(u.name.clone());
        upstreams.push(u);
    }
    let breaker = match raw.breaker {
        Some(v) => breaker(v)?,
        None => BreakerConfig::default(),
    };
    let retry = match raw.retry {
        Some(v) => retry(v)?,
        None => RetryConfig::default(),
    };
    let failover = match raw.failover {
        Some(v) => failover(v)?,
        None => FailoverConfig::default(),
    };
    // The deadline bounds every retry and hop: a call setting, at the top level. Where it
    // used to be, under [retry], it is still read, and the operator told to move it.
    let mut deprecations = Vec::new();
    let deadline = match (raw.deadline, retry.deadline) {
        (Some(v), old) => {
            if old.is_some() {
                deprecations.push(
                    "retry.deadline is ignored: the top-level deadline is set (remove \
                     retry.deadline)"
                        .to_owned(),
                );
            }
            duration(v, "deadline")?
        }
        (None, Some(old)) => {
            deprecations.push(
                "retry.deadline is deprecated: it bounds the whole call, every hop included; \
                 move it to the top level (deadline = \"...\", above the tables)"
                    .to_owned(),
            );
            old
        }
        (None, None) => DEFAULT_DEADLINE,
    };
    let inbound_keys_env = match raw.auth {
        Some(v) => auth(v)?,
        None => Vec::new(),
    };
    if !listen.ip().is_loopback() && inbound_keys_env.is_empty() {
        // Anyone who reaches the port would spend the upstreams' keys.
        return Err(ConfigError::new(
            "auth.keys_env",
            "listening beyond loopback needs inbound keys: [auth] keys_env = [\"NAME\"], the \
             variables holding the keys callers present as Bearer",
        ));
    }
    let header_read_timeout = match raw.header_read_timeout {
        Some(v) => duration(v, "header_read_timeout")?,
        None => Duration::from_secs(30),
    };
    let max_connections = match raw.max_connections {
        Some(v) => usize::try_from(integer(&v, "max_connections", 1, 1_000_000)?)
            .map_err(|_| ConfigError::new("max_connections", "out of range"))?,
        None => 1024,
    };
    Ok(Config {
        listen,
        upstreams,
        breaker,
        deadline,
        header_read_timeout,
        max_connections,
        inbound_keys_env,
        retry,
        failover,
        deprecations,
    })
}

/// The call's deadline unless the file sets one: 60 s.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    const ONE: &str = "[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n";

    #[test]
    fn a_full_file_is_read() {
        let c = parse(
            r#"
listen = "127.0.0.1:0"
[[upstreams]]
name = "primary"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
context_window = 128000
drill = true
[[upstreams]]
name = "backup"
base_url = "https://gw.example/v1?api-version=1"
model = "openai/gpt-4o-mini"
surfaces = ["chat_completions"]
prefill = true
[breaker]
consecutive_failures = 3
failure_rate = 0.25
window = "30s"
minimum_calls = 10
open_base = "10s"
open_max = "2m"
jitter = 0
half_open_permits = 2
[retry]
max_retries = 1
deadline = "90s"
time_to_headers = "20s"
preset = "openai_sdk"
[failover]
max_hops = 1
commit = "end"
end_buffer_bytes = 65536
first_token_timeout = "15s"
idle_timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(
            c.upstreams[0].api_key_env.as_deref(),
            Some("OPENAI_API_KEY")
        );
        assert!(c.upstreams[0].drill);
        assert!(!c.upstreams[1].upstream.serves(ApiSurface::Responses));
        assert_eq!(c.breaker.consecutive_failures, 3);
        assert_eq!(c.breaker.open_max, Duration::from_secs(120));
        assert_eq!(c.retry.preset, RetryPreset::OpenAiSdk);
        assert_eq!(c.retry.time_to_headers, Some(Duration::from_secs(20)));
        assert_eq!(c.failover.commit, CommitPoint::End { max_bytes: 65536 });
    }

    #[test]
    fn the_deadline_is_a_call_setting_and_its_old_place_is_still_read_with_a_warning() {
        let top = parse(&format!("deadline = \"15s\"\n{ONE}")).unwrap();
        assert_eq!(top.deadline, Duration::from_secs(15));
        assert!(top.deprecations.is_empty());
        let old = parse(&format!("{ONE}[retry]\ndeadline = \"90s\"")).unwrap();
        assert_eq!(old.deadline, Duration::from_secs(90));
        assert_eq!(old.deprecations.len(), 1);
        assert!(old.deprecations[0].contains("retry.deadline is deprecated"));
        let both = parse(&format!(
            "deadline = \"15s\"\n{ONE}[retry]\ndeadline = \"90s\""
        ))
        .unwrap();
        assert_eq!(both.deadline, Duration::from_secs(15), "the new place wins");
        assert!(both.deprecations[0].contains("ignored"));
        assert_eq!(parse(ONE).unwrap().deadline, DEFAULT_DEADLINE);
    }

    #[test]
    fn forwarding_the_callers_key_is_per_upstream_and_never_with_a_key_of_its_own() {
        let c = parse(&format!("{ONE}forward_caller_auth = true")).unwrap();
        assert!(c.upstreams[0].upstream.forwards_caller_auth());
        assert!(
            !parse(ONE).unwrap().upstreams[0]
                .upstream
                .forwards_caller_auth()
        );
        let e = err(&format!(
            "{ONE}api_key_env = \"KEY\"\nforward_caller_auth = true"
        ));
        assert!(e.contains("forward_caller_auth"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = parse(ONE).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.retry, RetryConfig::default());
        assert_eq!(c.failover, FailoverConfig::default());
        assert_eq!(c.breaker, BreakerConfig::default());
        assert!(c.upstreams[0].upstream.serves(ApiSurface::Responses));
    }

    #[test]
    fn errors_name_the_field_and_never_repeat_a_value() {
        let cases: &[(&str, &str)] = &[
            ("", "upstreams"),
            ("upstreams = []", "upstreams"),
            ("[upstreams]\nname = \"a\"", "upstreams"),
            (&format!("{ONE}[retry]\nmax_retry = 3"), "max_retry"),
            (
                &format!("{ONE}api_key = \"sk-SECRET-top\""),
                "api_key: keys do not belong",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\"\napi_key = \"sk-SECRET-1\"",
                "upstreams[0] (\"a\").api_key",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"not a sk-SECRET url\"",
                "upstreams[0] (\"a\").base_url",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\"\napi_key_env = \"sk-proj-SECRET\"",
                "upstreams[0] (\"a\").api_key_env",
            ),
            (
                &format!("{ONE}[breaker]\nwindow = \"sk-SECRET\""),
                "breaker.window",
            ),
            (
                &format!("{ONE}[breaker]\nwindow = \"0s\""),
                "breaker.window",
            ),
            (
                &format!("{ONE}[breaker]\nopen_base = \"2m\"\nopen_max = \"1m\""),
                "breaker.open_max",
            ),
            (
                &format!("{ONE}[breaker]\nfailure_rate = 1.5"),
                "breaker.failure_rate",
            ),
            (
                &format!("{ONE}[retry]\npreset = \"sk-SECRET\""),
                "retry.preset",
            ),
            (
                &format!("{ONE}[retry]\nmax_retries = \"sk-SECRET\""),
                "retry.max_retries",
            ),
            (
                &format!("{ONE}[failover]\nend_buffer_bytes = 10"),
                "failover.end_buffer_bytes",
            ),
            (
                &format!("{ONE}[failover]\ncommit = \"sk-SECRET\""),
                "failover.commit",
            ),
            (
                &format!("{ONE}[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\""),
                "upstreams[1] (\"a\").name",
            ),
            (
                "[[upstreams]]\nname = \"a b\"\nbase_url = \"http://h/v1\"",
                "upstreams[0].name",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nsurfaces = []",
                "surfaces",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nsurfaces = [\"embeddings\"]",
                "surfaces",
            ),
            (&format!("listen = \"0.0.0.0:8787\"\n{ONE}"), "listen"),
            (&format!("listen = \"sk-SECRET\"\n{ONE}"), "listen"),
            ("listen = \"sk-SECRET", "line 1"),
            (
                "[[upstreams]]\nname = \"a\"\nbase_url = \"http://h/v1\"\ncontext_window = \"sk-SECRET\"",
                "context_window",
            ),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(!e.contains("SECRET"), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{text:?}: {e}");
        }
    }

    #[test]
    fn non_loopback_needs_consent() {
        let c = parse(&format!(
            "listen = \"0.0.0.0:1\"\nallow_non_loopback = true\n[auth]\nkeys_env = [\"PROXY_KEY\"]\n{ONE}"
        ));
        assert!(c.is_ok(), "{c:?}");
        let e = err(&format!(
            "listen = \"0.0.0.0:1\"\nallow_non_loopback = true\n{ONE}"
        ));
        assert!(
            e.contains("auth.keys_env"),
            "beyond loopback, inbound keys are required: {e}"
        );
        let e = err(&format!("[auth]\nkeys_env = [\"sk-proj-SECRET\"]\n{ONE}"));
        assert!(
            e.contains("auth.keys_env[0]") && !e.contains("SECRET"),
            "{e}"
        );
        let c = parse(&format!("listen = \"localhost:9\"\n{ONE}")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9".parse().unwrap());
        assert!(parse(&format!("listen = \"[::1]:9\"\n{ONE}")).is_ok());
    }
}
