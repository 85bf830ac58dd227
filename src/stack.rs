//! The whole stack, in the right order, in one line; and the evidence a call left.

use std::sync::Arc;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};

use crate::evidence::{
    ApiSurface, DecisionPolicy, DecisionTable, FallbackDecision, Outcome, ParseCheck, StatusClass,
    TransportErrorKind, Violation, WafVerdict,
};
use crate::inspect::Inspect;
use crate::retry::{Retry, RetryRecord};
use crate::telemetry::Telemetry;

/// The layers of this crate, assembled outermost first: [`Telemetry`] (the call span),
/// [`Retry`], the attempt spans ([`Telemetry::attempts`]), then [`Inspect`].
///
/// ```no_run
/// use reqwest_llm_guard::Guard;
///
/// // Defaults throughout: global OpenTelemetry providers, 429-only retry, compat contracts.
/// let client = Guard::new().client(reqwest::Client::new());
/// ```
///
/// Each part can be replaced or left out, and the layers can be added to a builder that already
/// has others (they go after them, so inside):
///
/// ```no_run
/// use reqwest_llm_guard::{Guard, inspect::Inspect, retry::Retry, contract::Mode};
///
/// let builder = reqwest_middleware::ClientBuilder::new(reqwest::Client::new());
/// let client = Guard::new()
///     .with_retry(Retry::openai_sdk())
///     .with_inspect(Inspect::new().with_mode(Mode::Strict))
///     .layer(builder)
///     .build();
/// ```
#[derive(Clone)]
#[must_use]
pub struct Guard {
    telemetry: Option<Telemetry>,
    retry: Option<Arc<dyn Middleware>>,
    inspect: Inspect,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("telemetry", &self.telemetry.is_some())
            .field("retry", &self.retry.is_some())
            .field("inspect", &self.inspect)
            .finish()
    }
}

impl Guard {
    /// Every layer with its defaults.
    pub fn new() -> Self {
        Self {
            telemetry: Some(Telemetry::new()),
            retry: Some(Arc::new(Retry::new())),
            inspect: Inspect::new(),
        }
    }

    /// This telemetry layer (its attempt layer comes with it).
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// No spans, no metrics.
    pub fn without_telemetry(mut self) -> Self {
        self.telemetry = None;
        self
    }

    /// This retry layer: a configured [`Retry`], or any middleware of your own.
    pub fn with_retry(mut self, retry: impl Middleware) -> Self {
        self.retry = Some(Arc::new(retry));
        self
    }

    /// One attempt per call.
    pub fn without_retry(mut self) -> Self {
        self.retry = None;
        self
    }

    /// This inspect layer.
    pub fn with_inspect(mut self, inspect: Inspect) -> Self {
        self.inspect = inspect;
        self
    }

    /// Adds the layers to `builder`, after (inside) any it already has.
    pub fn layer(self, builder: ClientBuilder) -> ClientBuilder {
        let mut builder = builder;
        if let Some(t) = &self.telemetry {
            builder = builder.with(t.clone());
        }
        if let Some(r) = self.retry {
            builder = builder.with_arc(r);
        }
        if let Some(t) = &self.telemetry {
            builder = builder.with(t.attempts());
        }
        builder.with(self.inspect)
    }

    /// A client with the layers around `client`.
    pub fn client(self, client: reqwest::Client) -> ClientWithMiddleware {
        self.layer(ClientBuilder::new(client)).build()
    }
}

/// What one call left behind, read from a response's extensions: the evidence of DESIGN §2 in
/// one value, for code that acts on it (a failover loop, a log line).
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// use reqwest_llm_guard::Evidence;
/// use reqwest_llm_guard::evidence::FallbackDecision;
///
/// let response = client.post("http://127.0.0.1:8080/v1/chat/completions").body("{}").send().await?;
/// let evidence = Evidence::of(&response);
/// match evidence.fallback_decision {
///     FallbackDecision::None => { /* use the answer */ }
///     FallbackDecision::Fallback => { /* try the next endpoint */ }
///     FallbackDecision::Hold | _ => { /* stop: a human must look (evidence.waf has the reference) */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Evidence {
    /// The request's API surface.
    pub api_surface: ApiSurface,
    /// The HTTP status, or `None` when no response arrived.
    pub status: Option<http::StatusCode>,
    /// The status class.
    pub status_class: StatusClass,
    /// The contract check; `None` while a streaming body is still being read.
    pub parse_check: Option<ParseCheck>,
    /// The first hard violation.
    pub violation: Option<Violation>,
    /// The wall that answered, if one did.
    pub waf: Option<WafVerdict>,
    /// Retries made.
    pub retry_count: u32,
    /// What to do next: the telemetry layer's decision when it ran, else the default table's.
    pub fallback_decision: FallbackDecision,
}

impl Evidence {
    /// The evidence of a response that went through the layers. A stream's evidence is final
    /// once its body has been read to the end (or dropped); before that, `parse_check` is
    /// `None` and the decision is made as if the stream will keep its contract.
    pub fn of(response: &reqwest::Response) -> Self {
        Self::with_policy(response, &DecisionTable::default())
    }

    /// As [`Evidence::of`], deciding with `policy` when the telemetry layer did not decide.
    pub fn with_policy(response: &reqwest::Response, policy: &dyn DecisionPolicy) -> Self {
        let ext = response.extensions();
        let verdict = crate::inspect::verdict(response);
        let waf = ext.get::<WafVerdict>().cloned();
        let parse_check = verdict.as_ref().map(|v| v.parse_check);
        let violation = verdict.as_ref().and_then(|v| v.violation);
        let fallback_decision = ext.get::<FallbackDecision>().copied().unwrap_or_else(|| {
            let mut outcome = Outcome::response(
                response.status(),
                parse_check.unwrap_or(ParseCheck::Pass),
                violation,
            );
            if let Some(w) = &waf {
                outcome = outcome.with_waf(w);
            }
            policy.decide(&outcome)
        });
        Self {
            api_surface: ext
                .get::<ApiSurface>()
                .copied()
                .unwrap_or(ApiSurface::Other),
            status: Some(response.status()),
            status_class: StatusClass::of(response.status()),
            parse_check,
            violation,
            waf,
            retry_count: ext.get::<RetryRecord>().map_or(0, RetryRecord::retries),
            fallback_decision,
        }
    }

    /// The same evidence, completed with a stream's verdict once it arrived
    /// ([`StreamVerdict::wait`](crate::inspect::StreamVerdict::wait)), decided again with the
    /// default table.
    #[must_use]
    pub fn with_stream_verdict(mut self, verdict: &crate::contract::Verdict) -> Self {
        self.parse_check = Some(verdict.parse_check);
        self.violation = verdict.violation;
        if let Some(status) = self.status {
            let mut outcome = Outcome::response(status, verdict.parse_check, verdict.violation);
            if let Some(w) = &self.waf {
                outcome = outcome.with_waf(w);
            }
            self.fallback_decision = DecisionTable::default().decide(&outcome);
        }
        self
    }

    /// The evidence of a call that got no response.
    pub fn of_error(error: &reqwest_middleware::Error, surface: ApiSurface) -> Self {
        let kind = TransportErrorKind::of(error);
        Self {
            api_surface: surface,
            status: None,
            status_class: StatusClass::TransportError,
            parse_check: None,
            violation: None,
            waf: None,
            retry_count: 0,
            fallback_decision: DecisionTable::default().decide(&Outcome::transport_error(kind)),
        }
    }
}
