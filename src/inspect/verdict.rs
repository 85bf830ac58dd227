//! The handle through which a streaming body's verdict arrives when the stream ends.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::contract::ContractVerdict;

type Callback = Box<dyn FnOnce(&ContractVerdict) + Send + 'static>;

/// The verdict of a streaming body, delivered when the stream ends, fails or is dropped.
///
/// The inspect layer puts one in the extensions of every response whose body it checks as a
/// stream. Clones share the same verdict. Read it with [`get`](Self::get) once the body is
/// consumed, await it with [`wait`](Self::wait), or register [`on_verdict`](Self::on_verdict)
/// (the telemetry layer does this to close its span when the stream does).
///
/// ```no_run
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use reqwest_llm_guard::inspect::VerdictHandle;
///
/// let response = client.post("http://127.0.0.1:8080/v1/chat/completions")
///     .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
///     .send()
///     .await?;
/// let verdict = response.extensions().get::<VerdictHandle>().cloned();
/// let mut chunks = response.bytes_stream();
/// while let Some(chunk) = chunks.next().await {
///     let _bytes = chunk?; // exactly the bytes the server sent
/// }
/// if let Some(verdict) = verdict {
///     println!("parse_check={}", verdict.wait().await.parse_check);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VerdictHandle {
    inner: Arc<Slot>,
}

struct Slot {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    verdict: Option<ContractVerdict>,
    callbacks: Vec<Callback>,
    first_chunk_at: Option<Instant>,
}

impl VerdictHandle {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Slot {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking callback must not take the verdict down with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict, once the stream has ended, failed or been dropped.
    pub fn get(&self) -> Option<ContractVerdict> {
        self.state().verdict.clone()
    }

    /// Whether the verdict has arrived.
    pub fn is_ready(&self) -> bool {
        self.state().verdict.is_some()
    }

    /// Waits for the verdict. It arrives when the caller reads the body to its end, the
    /// connection fails, or the body is dropped; awaiting it while holding the body unread
    /// waits forever.
    pub async fn wait(&self) -> ContractVerdict {
        loop {
            // Created before the check, so a verdict stored in between still wakes it.
            let notified = self.inner.ready.notified();
            if let Some(v) = self.get() {
                return v;
            }
            notified.await;
        }
    }

    /// Runs `f` with the verdict when it arrives, or now if it has. Callbacks run on the task
    /// that ends the stream (inside a poll or a drop): keep them short and non-blocking. A
    /// callback that panics is stopped there; the others still run.
    pub fn on_verdict(&self, f: impl FnOnce(&ContractVerdict) + Send + 'static) {
        let mut state = self.state();
        if let Some(v) = state.verdict.clone() {
            drop(state);
            f(&v);
        } else {
            state.callbacks.push(Box::new(f));
        }
    }

    /// When the first body bytes reached the caller (on tokio's clock).
    pub fn first_chunk_at(&self) -> Option<Instant> {
        self.state().first_chunk_at
    }

    pub(crate) fn mark_first_chunk(&self) {
        self.state().first_chunk_at.get_or_insert_with(Instant::now);
    }

    /// Stores the verdict (the first one wins) and runs the callbacks.
    pub(crate) fn complete(&self, verdict: ContractVerdict) {
        let callbacks = {
            let mut state = self.state();
            if state.verdict.is_some() {
                return;
            }
            let callbacks = std::mem::take(&mut state.callbacks);
            if callbacks.is_empty() {
                state.verdict = Some(verdict);
                drop(state);
                self.inner.ready.notify_waiters();
                return;
            }
            state.verdict = Some(verdict.clone());
            callbacks
        };
        self.inner.ready.notify_waiters();
        for f in callbacks {
            // Callbacks may run inside a drop, where a second panic would abort the process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&verdict)));
        }
    }
}

impl fmt::Debug for VerdictHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("VerdictHandle")
            .field("verdict", &state.verdict)
            .field("callbacks", &state.callbacks.len())
            .finish()
    }
}
