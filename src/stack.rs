//! The whole stack, in the right order, in one line.

use std::sync::Arc;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};

use crate::inspect::Inspect;
use crate::retry::Retry;
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
