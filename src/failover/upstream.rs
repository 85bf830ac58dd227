//! One upstream a call may go to: where, with which key, for which surfaces and model.

use std::fmt;
use std::sync::Arc;

use reqwest::Url;

use crate::evidence::ApiSurface;

/// Where an upstream's API key comes from. Never recorded: not in spans, metrics, logs,
/// errors or `Debug` output.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// Read from this environment variable at each call (a rotated key is picked up).
    Env(String),
    /// This value.
    Value(Arc<str>),
}

impl Credential {
    /// The key from the environment variable `name`.
    pub fn env(name: impl Into<String>) -> Self {
        Self::Env(name.into())
    }

    /// This key.
    pub fn value(key: impl Into<Arc<str>>) -> Self {
        Self::Value(key.into())
    }

    /// The key now, or `None` when the variable is unset or empty.
    pub(crate) fn resolve(&self) -> Option<Arc<str>> {
        match self {
            Self::Env(name) => std::env::var(name)
                .ok()
                .filter(|k| !k.is_empty())
                .map(Arc::from),
            Self::Value(key) => Some(key.clone()),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// An OpenAI-compatible endpoint the failover layer can send a call to.
///
/// ```
/// use reqwest_llm_guard::evidence::ApiSurface;
/// use reqwest_llm_guard::failover::{Credential, Upstream};
///
/// let primary = Upstream::new("openai", "https://api.openai.com/v1")
///     .unwrap()
///     .with_credential(Credential::env("OPENAI_API_KEY"))
///     .with_context_window(128_000);
/// let backup = Upstream::new("gateway", "https://gateway.example/v1")
///     .unwrap()
///     .with_credential(Credential::env("GATEWAY_KEY"))
///     .with_model("openai/gpt-4o-mini")
///     .with_surfaces(&[ApiSurface::ChatCompletions]);
/// # let _ = (primary, backup);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Upstream {
    pub(crate) name: Arc<str>,
    pub(crate) base_url: Url,
    pub(crate) credential: Option<Credential>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) chat: bool,
    pub(crate) responses: bool,
    pub(crate) context_window: Option<u64>,
    pub(crate) prefill: bool,
    pub(crate) drill: bool,
    pub(crate) forward_caller_auth: bool,
}

/// The headers that carry a caller's credentials: they go only where the caller sent them,
/// or to an upstream that opts in ([`Upstream::with_forward_caller_auth`]). Besides these names,
/// any header whose name says it carries a credential ([`is_credential`]) is treated alike.
pub(crate) const CREDENTIAL_HEADERS: [http::HeaderName; 11] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
    http::HeaderName::from_static("api-key"),
    http::HeaderName::from_static("x-api-key"),
    http::HeaderName::from_static("x-goog-api-key"),
    http::HeaderName::from_static("ocp-apim-subscription-key"),
    http::HeaderName::from_static("x-amz-security-token"),
    http::HeaderName::from_static("cf-aig-authorization"),
    http::HeaderName::from_static("helicone-auth"),
    http::HeaderName::from_static("x-portkey-api-key"),
];

/// Whether a header carries a credential: one of [`CREDENTIAL_HEADERS`], or a name that says
/// so (`auth`, `token`, `secret`, `cookie`, `session`, `api-key`/`apikey`, `subscription-key`).
/// Erring towards removal: such a header sent to a host the caller did not address is a leak,
/// one removed is at worst a request the upstream refuses, visibly.
pub(crate) fn is_credential(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    CREDENTIAL_HEADERS.contains(name)
        || [
            "auth",
            "token",
            "secret",
            "cookie",
            "session",
            "api-key",
            "apikey",
            "api_key",
            "subscription-key",
        ]
        .iter()
        .any(|w| n.contains(w))
}

/// Removes every credential header.
fn strip_credentials(headers: &mut http::HeaderMap) {
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| is_credential(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// A base URL that cannot serve as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBaseUrl {
    reason: &'static str,
}

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid base URL: {}", self.reason)
    }
}

impl std::error::Error for InvalidBaseUrl {}

impl Upstream {
    /// An upstream serving both surfaces at `base_url` (up to and including the API version,
    /// `https://api.openai.com/v1`; its query, such as Azure's `api-version`, is kept).
    ///
    /// # Whose key it gets
    ///
    /// - With a credential ([`with_credential`](Self::with_credential)): that key, always,
    ///   in place of the caller's. A credential that cannot be resolved when a call is made
    ///   (its variable unset or empty, or a value that is no valid header) makes the upstream
    ///   passed over for that call, with [`PassReason`](super::PassReason) in the
    ///   [`FailoverRecord`](super::FailoverRecord): it never gets the caller's key instead.
    /// - Without one: the caller's credential headers (`Authorization`, `Proxy-Authorization`,
    ///   `Cookie`, `api-key`, `x-api-key`, `x-goog-api-key`, `Ocp-Apim-Subscription-Key`, and any
    ///   header whose name says `auth`, `token`, `secret`, `cookie`, `session` or `api-key`) only
    ///   when the upstream is where the caller sent the
    ///   request (same scheme, host and port) or it opts in with
    ///   [`with_forward_caller_auth`](Self::with_forward_caller_auth); else it gets none.
    pub fn new(name: impl Into<Arc<str>>, base_url: &str) -> Result<Self, InvalidBaseUrl> {
        let base_url = Url::parse(base_url).map_err(|_| InvalidBaseUrl {
            reason: "not an absolute URL",
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(InvalidBaseUrl {
                reason: "the scheme is not http or https",
            });
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(InvalidBaseUrl {
                reason: "credentials in the URL (use a Credential)",
            });
        }
        Ok(Self {
            name: name.into(),
            base_url,
            credential: None,
            model: None,
            chat: true,
            responses: true,
            context_window: None,
            prefill: false,
            drill: false,
            forward_caller_auth: false,
        })
    }

    /// Sends this key as `Authorization: Bearer …` instead of the caller's.
    #[must_use]
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Asks this upstream for this model instead of the request's.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Serves only these surfaces (default: both). A request goes only to upstreams that
    /// serve its surface: no Chat ↔ Responses translation.
    #[must_use]
    pub fn with_surfaces(mut self, surfaces: &[ApiSurface]) -> Self {
        self.chat = surfaces.contains(&ApiSurface::ChatCompletions);
        self.responses = surfaces.contains(&ApiSurface::Responses);
        self
    }

    /// The model's context window, in tokens: a `context_length_exceeded` moves to an upstream
    /// with a larger one.
    #[must_use]
    pub fn with_context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Whether this upstream accepts an assistant prefill (a continuation of a cut answer).
    #[must_use]
    pub fn with_prefill(mut self, accepts: bool) -> Self {
        self.prefill = accepts;
        self
    }

    /// Caller traffic only once the evidence drill has passed against this upstream, and
    /// again after its breaker has opened: until [`Failover::promote`](super::Failover::promote)
    /// says it passed, calls pass it over.
    #[must_use]
    pub fn with_drill_required(mut self, required: bool) -> Self {
        self.drill = required;
        self
    }

    /// Lets this upstream, when it has no credential of its own, get the caller's credential
    /// headers although it is not where the caller sent the request (default: off). Turn it
    /// on only for an upstream that is meant to get the caller's key.
    #[must_use]
    pub fn with_forward_caller_auth(mut self, forward: bool) -> Self {
        self.forward_caller_auth = forward;
        self
    }

    /// Whether it gets the caller's credentials when it is not where the caller sent them.
    pub fn forwards_caller_auth(&self) -> bool {
        self.forward_caller_auth
    }

    /// Whether it must pass the drill before it gets traffic.
    pub fn drill_required(&self) -> bool {
        self.drill
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// The model it asks for instead of the request's, if any.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The name (attribute `failover.upstream`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host, for telling upstreams behind the same edge apart.
    pub fn host(&self) -> Option<&str> {
        self.base_url.host_str()
    }

    /// Whether it serves this surface.
    pub fn serves(&self, surface: ApiSurface) -> bool {
        match surface {
            ApiSurface::ChatCompletions => self.chat,
            ApiSurface::Responses => self.responses,
            ApiSurface::Other => false,
        }
    }

    /// Puts the right key on a request to this upstream (see [`Upstream::new`], "Whose key
    /// it gets"): its own as `Authorization: Bearer …` (marked sensitive) in place of every
    /// caller credential; else the caller's, kept only when `same_origin` (the caller sent the
    /// request here) or the upstream opts in, removed otherwise. An own key that cannot be
    /// resolved is an error, and the headers are then left as they were: the request must not
    /// be sent.
    pub(crate) fn authorize(
        &self,
        headers: &mut http::HeaderMap,
        same_origin: bool,
    ) -> Result<(), super::PassReason> {
        let Some(credential) = &self.credential else {
            if !same_origin && !self.forward_caller_auth {
                strip_credentials(headers);
            }
            return Ok(());
        };
        let key = credential
            .resolve()
            .ok_or(super::PassReason::CredentialUnresolved)?;
        let mut value = http::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| super::PassReason::CredentialInvalid)?;
        value.set_sensitive(true);
        strip_credentials(headers);
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(())
    }

    /// Whether `original` already is this upstream's URL for the request (what
    /// [`url_for`](Self::url_for) would make of it): its origin, its base path before the
    /// surface's path, and its query when the base URL has one. Checked before a URL is built,
    /// so a call addressed to the upstream it goes to costs no new URL.
    pub(crate) fn addressed_by(&self, original: &Url, surface: ApiSurface) -> bool {
        let path = original.path();
        let at = match surface {
            ApiSurface::ChatCompletions => path.rfind("/chat/completions"),
            ApiSurface::Responses => path.rfind("/responses"),
            ApiSurface::Other => None,
        };
        at.is_some_and(|at| {
            self.same_origin(original)
                && path[..at] == *self.base_url.path().trim_end_matches('/')
                && (self.base_url.query().is_none() || self.base_url.query() == original.query())
        })
    }

    /// Whether `url` is on this upstream's origin (scheme, host and port).
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        self.base_url.scheme() == url.scheme()
            && self.base_url.host_str() == url.host_str()
            && self.base_url.port_or_known_default() == url.port_or_known_default()
    }

    /// The URL of this upstream for a request to `original`: the base URL, then the surface's
    /// own path (`/chat/completions`, `/responses/…`), then the original query unless the base
    /// URL has one.
    pub(crate) fn url_for(&self, original: &Url, surface: ApiSurface) -> Option<Url> {
        let path = original.path();
        let at = match surface {
            ApiSurface::ChatCompletions => path.rfind("/chat/completions")?,
            ApiSurface::Responses => path.rfind("/responses")?,
            ApiSurface::Other => return None,
        };
        let mut url = self.base_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{}", &path[at..]));
        if self.base_url.query().is_none() {
            url.set_query(original.query());
        }
        Some(url)
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("credential", &self.credential)
            .field("model", &self.model)
            .field("chat", &self.chat)
            .field("responses", &self.responses)
            .field("context_window", &self.context_window)
            .field("prefill", &self.prefill)
            .field("drill", &self.drill)
            .field("forward_caller_auth", &self.forward_caller_auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_surfaces_path_and_the_right_query() {
        let openai = Upstream::new("o", "https://api.openai.com/v1/").unwrap();
        let azure = Upstream::new(
            "a",
            "https://x.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        )
        .unwrap();
        let sent = Url::parse("http://127.0.0.1:9/v1/chat/completions?trace=1").unwrap();
        assert_eq!(
            openai
                .url_for(&sent, ApiSurface::ChatCompletions)
                .unwrap()
                .as_str(),
            "https://api.openai.com/v1/chat/completions?trace=1"
        );
        assert_eq!(
            azure
                .url_for(&sent, ApiSurface::ChatCompletions)
                .unwrap()
                .as_str(),
            "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        let get = Url::parse("http://h/v1/responses/resp_123").unwrap();
        assert_eq!(
            openai
                .url_for(&get, ApiSurface::Responses)
                .unwrap()
                .as_str(),
            "https://api.openai.com/v1/responses/resp_123"
        );
        assert_eq!(openai.url_for(&get, ApiSurface::Other), None);
    }

    #[test]
    fn keys_never_print_and_urls_never_carry_them() {
        let u = Upstream::new("o", "https://api.openai.com/v1")
            .unwrap()
            .with_credential(Credential::value("sk-SECRET-1"));
        assert!(!format!("{u:?}").contains("SECRET"));
        assert!(Upstream::new("o", "https://user:sk-SECRET@host/v1").is_err());
        assert!(Upstream::new("o", "ftp://host/v1").is_err());
        assert!(Upstream::new("o", "not a url").is_err());
    }

    #[test]
    fn a_url_the_upstream_would_make_is_left_as_it_is_and_no_other() {
        let plain = Upstream::new("o", "https://api.openai.com/v1").unwrap();
        let azure =
            Upstream::new("a", "https://x.openai.azure.com/openai/v1/?api-version=1").unwrap();
        for (u, original, surface) in [
            (
                &plain,
                "https://api.openai.com/v1/chat/completions",
                ApiSurface::ChatCompletions,
            ),
            (
                &plain,
                "https://api.openai.com/v1/chat/completions?x=1",
                ApiSurface::ChatCompletions,
            ),
            (
                &plain,
                "https://api.openai.com/v1/responses/resp_1",
                ApiSurface::Responses,
            ),
            (
                &plain,
                "https://api.openai.com:8443/v1/chat/completions",
                ApiSurface::ChatCompletions,
            ),
            (
                &plain,
                "http://api.openai.com/v1/chat/completions",
                ApiSurface::ChatCompletions,
            ),
            (
                &plain,
                "https://api.openai.com/v2/chat/completions",
                ApiSurface::ChatCompletions,
            ),
            (
                &plain,
                "http://upstream.invalid/v1/chat/completions",
                ApiSurface::ChatCompletions,
            ),
            (
                &azure,
                "https://x.openai.azure.com/openai/v1/chat/completions?api-version=1",
                ApiSurface::ChatCompletions,
            ),
            (
                &azure,
                "https://x.openai.azure.com/openai/v1/chat/completions?api-version=2",
                ApiSurface::ChatCompletions,
            ),
            (
                &azure,
                "https://x.openai.azure.com/openai/v1/chat/completions",
                ApiSurface::ChatCompletions,
            ),
        ] {
            let original = Url::parse(original).unwrap();
            let made = u.url_for(&original, surface).unwrap();
            assert_eq!(
                u.addressed_by(&original, surface),
                made == original,
                "{original} -> {made}"
            );
        }
    }

    #[test]
    fn surfaces_are_declared() {
        let chat_only = Upstream::new("c", "http://h/v1")
            .unwrap()
            .with_surfaces(&[ApiSurface::ChatCompletions]);
        assert!(chat_only.serves(ApiSurface::ChatCompletions));
        assert!(!chat_only.serves(ApiSurface::Responses));
        assert!(!chat_only.serves(ApiSurface::Other));
    }
}
