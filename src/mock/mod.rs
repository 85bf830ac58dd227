//! An OpenAI-compatible mock gateway on loopback that misbehaves on request (feature `mock`).
//!
//! It answers `POST …/chat/completions` and `POST …/responses` (any prefix), streaming or not,
//! correctly by default, or the way real gateways go wrong: pick a [`Scenario`] per request
//! with the `x-mock-scenario` header (or the `mock` query parameter), or set a default for the
//! whole gateway. The crate's tests, examples and benchmarks use it; so can yours, to test your
//! failover logic.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use reqwest_llm_guard::mock::{MockGateway, Scenario};
//!
//! let gateway = MockGateway::start().await?;
//! let response = reqwest::Client::new()
//!     .post(format!("{}/v1/chat/completions", gateway.url()))
//!     .header("x-mock-scenario", Scenario::WafCloudflare.as_str())
//!     .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 403);
//! assert_eq!(gateway.requests(), 1);
//! # Ok(()) }
//! ```
//!
//! Other headers it reads: `x-mock-session` (tells apart the sessions of the scenarios that
//! fail once or for a while, such as [`Scenario::RateLimitedOnce`] and
//! [`Scenario::DownThenUp`]), `x-mock-delay-ms` (the wait before the headers, for
//! [`Scenario::Slow`], and between stream events for any streaming answer), `x-mock-chunks`
//! (content deltas in a correct stream; Chat streams of any length are made as they are sent,
//! in constant memory), `x-mock-content-bytes` (the length of a correct non-streaming answer's
//! text), `x-mock-first-token-ms` (for [`Scenario::SlowFirstToken`]), `x-mock-cut-after` (for
//! [`Scenario::StreamCut`] and [`Scenario::StreamStall`]) and `x-mock-down-ms` (for
//! [`Scenario::DownThenUp`]).
//!
//! A failover layer sends the same headers to every upstream: give the faulty upstream its
//! fault as its default scenario ([`MockGateway::start_with`]) rather than in
//! `x-mock-scenario`. `x-mock-first-token-ms`, `x-mock-cut-after` and `x-mock-down-ms` are
//! read by their own scenario only, so they reach the healthy upstreams harmlessly.

mod replies;
mod scenario;

pub use scenario::{Scenario, UnknownScenario};

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::evidence::ApiSurface;
use replies::{Ask, Body, Reply, Session};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

struct State {
    default: Scenario,
    requests: AtomicU64,
    /// Per scenario and `x-mock-session`: requests so far, and when the first came.
    sessions: Mutex<HashMap<String, (u64, Instant)>>,
}

/// A running mock gateway. It stops when dropped.
#[derive(Debug)]
pub struct MockGateway {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl MockGateway {
    /// Starts on a free port of 127.0.0.1, answering correctly unless a request asks otherwise.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Scenario::Ok, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` with `default` for requests that name no scenario.
    pub async fn start_with(default: Scenario, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            default,
            requests: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
        });
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`: append `/v1/chat/completions` or `/v1/responses`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Each streamed event leaves at once, as a real API's do (no waiting on Nagle).
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            // Set by a request that wants its connection reset rather than answered.
            let reset = Arc::new(AtomicBool::new(false));
            let io = Conn {
                stream,
                reset: reset.clone(),
            };
            let service = service_fn(move |req| handle(req, state.clone(), reset.clone()));
            // Errors here are the client going away, or the `drop` and `reset_once` scenarios
            // doing their job.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

/// A connection's socket. Once a request has asked for a reset, its first write (the
/// response's head) fails instead, after setting SO_LINGER 0: hyper drops the connection and
/// the close goes out as an RST, not a FIN. Hyper gives a request's handler no way to the
/// socket; this is the way round.
struct Conn {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Conn {
    /// The error to fail a write with, once a reset is asked for.
    fn reset_asked(&self) -> Option<io::Error> {
        if !self.reset.load(Ordering::Relaxed) {
            return None;
        }
        // Deprecated because a non-zero linger makes the drop block the thread; a zero one
        // does not.
        #[allow(deprecated)]
        let _ = self.stream.set_linger(Some(Duration::ZERO));
        Some(io::ErrorKind::ConnectionReset.into())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.reset_asked() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.reset_asked() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.reset_asked() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No FIN before the RST.
        if let Some(e) = self.reset_asked() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn header<'a>(req: &'a hyper::Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn scenario_of(
    req: &hyper::Request<Incoming>,
    default: Scenario,
) -> Result<Scenario, UnknownScenario> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("mock="))
            .map(str::to_owned)
    });
    match header(req, "x-mock-scenario")
        .map(str::to_owned)
        .or(from_query)
    {
        Some(name) => name.parse(),
        None => Ok(default),
    }
}

async fn handle(
    req: hyper::Request<Incoming>,
    state: Arc<State>,
    reset: Arc<AtomicBool>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let served = state.requests.fetch_add(1, Ordering::Relaxed);
    let surface = ApiSurface::classify(req.method(), req.uri().path());
    let delay = header(&req, "x-mock-delay-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let session = header(&req, "x-mock-session")
        .unwrap_or_default()
        .to_owned();
    let number = |name: &str| header(&req, name).and_then(|v| v.parse::<usize>().ok());
    let millis = |name: &str| {
        header(&req, name)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let sizes = (number("x-mock-chunks"), number("x-mock-content-bytes"));
    let knobs = (
        millis("x-mock-first-token-ms"),
        number("x-mock-cut-after"),
        millis("x-mock-down-ms"),
    );
    let scenario = scenario_of(&req, state.default);
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let scenario = match scenario {
        Ok(s) => s,
        Err(e) => return Ok(plain(400, &e.to_string())),
    };
    if surface == ApiSurface::Other {
        return Ok(plain(
            404,
            "the mock gateway serves /chat/completions and /responses",
        ));
    }
    let session = {
        let mut sessions = state
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (n, since) = sessions
            .entry(format!("{scenario}/{session}"))
            .or_insert((0, Instant::now()));
        *n += 1;
        Session {
            attempt: *n,
            age: since.elapsed(),
        }
    };
    match scenario {
        Scenario::ResetOnce if session.attempt == 1 => {
            // The connection's first write fails and resets it: this response never leaves.
            reset.store(true, Ordering::Relaxed);
            return Ok(plain(500, "reset"));
        }
        Scenario::Hang => std::future::pending::<()>().await,
        _ => {}
    }
    let mut ask = Ask::parse(&body);
    if let Some(ask) = &mut ask {
        ask.size.chunks = sizes.0;
        ask.size.content_bytes = sizes.1;
        let k = &mut ask.knobs;
        k.first_token = knobs.0.unwrap_or(k.first_token);
        k.cut_after = knobs.1.unwrap_or(k.cut_after);
        k.down = knobs.2.unwrap_or(k.down);
    }
    let reply = replies::reply(scenario, surface, ask.as_ref(), session, served);
    if scenario == Scenario::Slow {
        tokio::time::sleep(delay.unwrap_or(Duration::from_millis(300))).await;
    }
    Ok(respond(
        reply,
        if scenario == Scenario::Slow {
            None
        } else {
            delay
        },
    ))
}

fn plain(status: u16, text: &str) -> hyper::Response<ResponseBody> {
    respond(
        Reply {
            status,
            headers: vec![("content-type", "text/plain".to_owned())],
            body: Body::Full(text.as_bytes().to_vec()),
        },
        None,
    )
}

fn respond(reply: Reply, event_delay: Option<Duration>) -> hyper::Response<ResponseBody> {
    let mut builder = hyper::Response::builder()
        .status(reply.status)
        .header("x-request-id", "req_mock0001");
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value);
    }
    // The headers leave at once; the body's first part waits this long.
    let (first_wait, body) = match reply.body {
        Body::Late(wait, body) => (Some(wait), *body),
        body => (None, body),
    };
    let body: ResponseBody = match body {
        Body::Full(bytes) if first_wait.is_some() => {
            builder = builder.header("content-length", bytes.len().to_string());
            events_body(std::iter::once(bytes), first_wait, None)
        }
        Body::Full(bytes) => http_body_util::Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
        Body::Events(events) => events_body(
            events.into_iter().map(String::into_bytes),
            first_wait,
            event_delay,
        ),
        Body::Repeat {
            head,
            unit,
            count,
            tail,
        } => {
            let events = head
                .into_iter()
                .chain(std::iter::repeat_n(unit, count))
                .chain(tail)
                .map(String::into_bytes);
            events_body(events, first_wait, event_delay)
        }
        Body::Stall(bytes) => {
            builder = builder.header("content-length", (bytes.len() * 4).to_string());
            then_silence(vec![bytes])
        }
        Body::StalledStream(events) => {
            then_silence(events.into_iter().map(String::into_bytes).collect())
        }
        Body::Cut(bytes) => {
            let full = bytes.len() * 2;
            builder = builder.header("content-length", full.to_string());
            then_cut(vec![bytes])
        }
        Body::CutStream(events) => then_cut(events.into_iter().map(String::into_bytes).collect()),
        // Unwrapped above; a wait in a wait is not made.
        Body::Late(..) => http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    };
    builder.body(body).unwrap_or_else(|_| {
        hyper::Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    })
}

/// The parts one frame each, made as they are sent: `first_wait` before the first, `delay`
/// before each.
fn events_body(
    parts: impl Iterator<Item = Vec<u8>> + Send + Sync + 'static,
    first_wait: Option<Duration>,
    delay: Option<Duration>,
) -> ResponseBody {
    let stream = futures_util::stream::unfold(
        (parts, first_wait),
        move |(mut parts, first_wait)| async move {
            let part = parts.next()?;
            if let Some(d) = first_wait {
                tokio::time::sleep(d).await;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from(part))),
                (parts, None),
            ))
        },
    );
    BodyExt::boxed(StreamBody::new(stream))
}

/// These parts, then nothing more with the connection open.
fn then_silence(parts: Vec<Vec<u8>>) -> ResponseBody {
    let stream = futures_util::stream::unfold(parts.into_iter(), |mut parts| async move {
        if let Some(part) = parts.next() {
            return Some((Ok::<_, BoxError>(Frame::data(Bytes::from(part))), parts));
        }
        std::future::pending::<()>().await;
        None
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// These parts, then (once they have left) the cut: hyper drops the connection, with no end of
/// the body.
fn then_cut(parts: Vec<Vec<u8>>) -> ResponseBody {
    let stream = futures_util::stream::unfold(Some(parts.into_iter()), |parts| async move {
        let mut parts = parts?;
        if let Some(part) = parts.next() {
            return Some((Ok(Frame::data(Bytes::from(part))), Some(parts)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cut: BoxError = "the mock gateway dropped the connection".into();
        Some((Err(cut), None))
    });
    BodyExt::boxed(StreamBody::new(stream))
}
