//! The values the layers pass to each other in the request's and the response's extensions.
//!
//! This is the protocol between the layers, in one table (writer → reader). Every value flows
//! inwards (an outer layer writes it for the layers below) or outwards on the response; what a
//! layer below learns about the call it appends to the call's own log in the `CallScope`,
//! which the layer that started the call reads when the call ends. The public types are
//! documented where they live; the private ones are defined here.
//!
//! | type | where | written by | read by |
//! |---|---|---|---|
//! | [`ApiSurface`](crate::evidence::ApiSurface) | request, response | the caller (optional), else the first layer that classifies the request | every layer, [`Evidence`](crate::Evidence) |
//! | [`ModelFamily`](crate::lint::ModelFamily) | request | the caller (optional) | the call layer's lint |
//! | [`EvidenceHandle`](crate::EvidenceHandle) | request, response | the caller (optional, for errors), else the call layer | the caller, [`Evidence`](crate::Evidence) |
//! | `CallScope` | request | the outermost layer of the crate (the call layer in a [`Guard`](crate::Guard)), once; removed by it when the call ends | every layer below: start, deadline, budget, policy; each appends to its log (legs, attempts, the failover record) |
//! | `CallContext` | request | the call layer (or a lone attempt layer, for itself) | the attempt layer (parent span, settings, the slot for the attempt left open) |
//! | `CaptureContent` | request | the call layer, content capture on | the inspect layer |
//! | `CurrentAttempt` ([`retry::CurrentAttempt`](crate::retry::CurrentAttempt)) | request | the retry layer, per attempt | the attempt layer; a nested or re-run retry layer (passes through) |
//! | [`RetryRecord`] | request (while retrying), response | the retry layer | the attempt layer (why the last attempt was retried), [`Evidence`](crate::Evidence) without a call layer |
//! | [`FailoverRecord`] | response | the failover layer | [`Evidence`](crate::Evidence) without a call layer |
//! | [`WafVerdict`](crate::evidence::WafVerdict) | response | the inspect layer | the retry layer (never retries it), the call layer |
//! | [`ContractVerdict`](crate::contract::ContractVerdict) | response | the inspect layer (checked body) | the call and attempt layers, [`Evidence`](crate::Evidence) |
//! | [`VerdictHandle`](crate::inspect::VerdictHandle) | response | the inspect layer (stream) | the call layer (ends the span with the stream) |
//!
//! The retry layer knows the inspect layer ran inside it by a [`ContractVerdict`] or a
//! [`VerdictHandle`] on the response.
//!
//! [`ContractVerdict`]: crate::contract::ContractVerdict
//! [`VerdictHandle`]: crate::inspect::VerdictHandle

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::Extensions;
use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::evidence::DecisionPolicy;
use crate::evidence::{CallLog, FailoverRecord, Leg, RetryRecord};

/// The attempt the rest of the stack is running, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CurrentAttempt {
    /// 0 for the first attempt: `http.request.resend_count`.
    pub resend_count: u32,
    /// The call it belongs to (its scope's id) and the leg of it (the upstream, under
    /// failover).
    pub(crate) call: u64,
    pub(crate) leg: usize,
}

/// A value of the protocol between the layers. Implemented here, and only here, for every type
/// of the table above: [`put`] and [`put_default`] take nothing else, and they are the only
/// way the crate writes to an `Extensions` (a test holds the source to both rules).
pub(crate) trait Protocol: Clone + Send + Sync + 'static {}

impl Protocol for crate::evidence::ApiSurface {}
impl Protocol for crate::evidence::EvidenceHandle {}
impl Protocol for CallScope {}
impl Protocol for CallContext {}
impl Protocol for CaptureContent {}
impl Protocol for CurrentAttempt {}
impl Protocol for RetryRecord {}
impl Protocol for FailoverRecord {}
impl Protocol for crate::evidence::WafVerdict {}
impl Protocol for crate::evidence::ContractVerdict {}
impl Protocol for crate::evidence::VerdictHandle {}

/// Writes `value` to `extensions` (a request's or a response's).
pub(crate) fn put<T: Protocol>(extensions: &mut Extensions, value: T) {
    extensions.insert(value);
}

/// The value of this type in `extensions`, written from `make` when there is none.
pub(crate) fn put_default<T: Protocol>(
    extensions: &mut Extensions,
    make: impl FnOnce() -> T,
) -> &mut T {
    extensions.get_or_insert_with(make)
}

/// The call span's context and the tracer of the call layer, for the attempt layer (written by
/// the call layer when it records spans, or by a lone attempt layer for itself).
#[derive(Clone)]
pub(crate) struct CallContext {
    pub(crate) cx: opentelemetry::Context,
    pub(crate) tracer: Arc<opentelemetry::global::BoxedTracer>,
    /// The last attempt's span, left open by the attempt layer until the decision about it is
    /// known: the call layer's slot, which the attempt layer fills.
    pub(crate) pending: Arc<Mutex<Option<PendingAttempt>>>,
}

/// An attempt's span, left open until the decision about it is known.
pub(crate) struct PendingAttempt {
    pub(crate) cx: opentelemetry::Context,
    pub(crate) ended: SystemTime,
}

/// Content capture is on, cutting text at this many characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CaptureContent(pub(crate) usize);

/// The call: written once, when the call starts, by the outermost layer of this crate it goes
/// through (the call layer in a [`Guard`](crate::Guard)); read by every layer below. A layer
/// that finds none starts one with its own settings, so each layer also works alone.
///
/// What the layers below learn about the call (each hop's target, each hop's attempts, the
/// failover layer's record) they append to its [`CallLog`]: data the call owns, read when the
/// call ends. No layer inserts a record for a layer above it, and none removes another's.
#[derive(Clone)]
pub(crate) struct CallScope(Arc<Scope>);

pub(crate) struct Scope {
    /// Tells this call from any other (a re-run of the stack by a retry layer outside is
    /// another call).
    pub(crate) id: u64,
    /// Started by a call layer (not by a retry or failover layer used alone).
    pub(crate) by_call_layer: bool,
    /// When the call started, on tokio's clock (the deadline's) and the system's (a retry
    /// policy's).
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    /// The deadline and the budget of every retry and every hop.
    pub(crate) bounds: CallBounds,
    /// The one policy every decision of the call is made with.
    pub(crate) policy: Arc<dyn DecisionPolicy>,
    log: Mutex<CallLog>,
}

/// The bounds of one call, every retry and every hop included.
#[derive(Debug, Clone)]
pub(crate) struct CallBounds {
    /// No retry starts, no wait runs and no hop is made past it (from the call's start).
    pub(crate) deadline: Option<Duration>,
    /// Every call deposits once; every retry and every hop withdraws.
    pub(crate) budget: Option<Arc<RetryBudget>>,
}

impl Default for CallBounds {
    /// The default call settings: a 60 s deadline and a budget of its own.
    fn default() -> Self {
        Self {
            deadline: Some(DEFAULT_DEADLINE),
            budget: Some(Arc::new(RetryBudget::default())),
        }
    }
}

/// The default deadline of a call, every retry and hop included: 60 s.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

impl CallScope {
    /// The call's scope: the one a layer above started, else a new one with these settings
    /// (`true` when this layer started it, and so deposits in the budget and owns the call).
    pub(crate) fn get_or_start(
        extensions: &mut Extensions,
        start: impl FnOnce() -> (CallBounds, Arc<dyn DecisionPolicy>),
    ) -> (Self, bool) {
        if let Some(scope) = extensions.get::<Self>() {
            return (scope.clone(), false);
        }
        let (bounds, policy) = start();
        let scope = Self::start(bounds, policy, false);
        put(extensions, scope.clone());
        (scope, true)
    }

    /// A new scope, the call's budget charged with it, started by a call layer (`true`) or by
    /// a layer used alone.
    pub(crate) fn start(
        bounds: CallBounds,
        policy: Arc<dyn DecisionPolicy>,
        by_call_layer: bool,
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if let Some(budget) = &bounds.budget {
            budget.deposit();
        }
        Self(Arc::new(Scope {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            by_call_layer,
            started: Instant::now(),
            started_at: SystemTime::now(),
            bounds,
            policy,
            log: Mutex::new(CallLog::default()),
        }))
    }

    /// Whether the call's deadline has passed.
    pub(crate) fn deadline_passed(&self) -> bool {
        self.bounds
            .deadline
            .is_some_and(|d| self.started.elapsed() >= d)
    }

    /// Starts a leg on a target (the failover layer, at each hop): `url` when the request
    /// goes elsewhere than the URL the caller wrote.
    pub(crate) fn begin_leg(&self, upstream: Arc<str>, url: Option<reqwest::Url>) {
        self.log().legs.push(Leg {
            upstream: Some(upstream),
            url,
            retry: None,
        });
    }

    /// The number of legs begun (the current one's index is one less).
    pub(crate) fn legs(&self) -> usize {
        self.log().legs.len()
    }

    /// The upstream the current leg goes to.
    pub(crate) fn current_upstream(&self) -> Option<Arc<str>> {
        self.log().legs.last().and_then(|l| l.upstream.clone())
    }

    /// Records the current leg's attempts (beginning a leg to the caller's URL when no layer
    /// began one).
    pub(crate) fn record_retry(&self, record: RetryRecord) {
        let mut log = self.log();
        if log.legs.is_empty() {
            log.legs.push(Leg::default());
        }
        if let Some(leg) = log.legs.last_mut() {
            leg.retry = Some(record);
        }
    }

    /// The wait the server asked for on the current leg's last attempt, as the retry layer
    /// recorded it.
    pub(crate) fn leg_server_wait(&self) -> Option<Duration> {
        self.log()
            .legs
            .last()
            .and_then(|l| l.retry.as_ref())
            .and_then(|r| r.attempts.last())
            .and_then(|a| a.server_wait)
    }

    /// Records the failover layer's record of the call.
    pub(crate) fn record_failover(&self, record: FailoverRecord) {
        self.log().failover = Some(record);
    }

    /// The log, taken when the call ends by the layer that started it.
    pub(crate) fn take_log(&self) -> CallLog {
        std::mem::take(&mut *self.log())
    }

    fn log(&self) -> std::sync::MutexGuard<'_, CallLog> {
        self.0.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::ops::Deref for CallScope {
    type Target = Scope;
    fn deref(&self) -> &Scope {
        &self.0
    }
}

impl std::fmt::Debug for CallScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallScope")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    /// Every write to an `Extensions` in the crate goes through `put` or `put_default`, and
    /// every type they take is declared a `Protocol` here: a layer cannot slip a value of its
    /// own into the protocol without this file (and its table) saying so.
    #[test]
    fn every_extension_type_is_declared_here_and_written_only_through_put() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut offences = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            // Test code may build extensions as it likes.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let here = path.ends_with("extensions.rs");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let writes = line.contains("extensions.insert(")
                    || line.contains("extensions_mut().insert(")
                    || line.contains(".get_or_insert_with(")
                        && (line.contains("extensions") || line.contains("ext."));
                let declares =
                    line.contains("impl Protocol for") || line.contains("extensions::Protocol for");
                if (writes || declares) && !here {
                    offences.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
        assert!(
            files.len() > 30,
            "read the crate's sources: {}",
            files.len()
        );
        assert!(
            offences.is_empty(),
            "writes outside extensions.rs:\n{}",
            offences.join("\n")
        );
    }
}
