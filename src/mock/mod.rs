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
//! Other headers it reads: `x-mock-session` (tells [`Scenario::RateLimitedOnce`]'s sessions
//! apart), `x-mock-delay-ms` (the wait before the headers, for [`Scenario::Slow`], and
//! between stream events for any streaming answer), `x-mock-chunks` (content deltas in a
//! correct stream; Chat streams of any length are made as they are sent, in constant memory)
//! and `x-mock-content-bytes` (the length of a correct non-streaming answer's text).

mod replies;
mod scenario;

pub use scenario::{Scenario, UnknownScenario};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::evidence::ApiSurface;
use replies::{Ask, Body, Reply};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

struct State {
    default: Scenario,
    requests: AtomicU64,
    sessions: Mutex<HashMap<String, u64>>,
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
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            // Errors here are the client going away, or the `drop` scenario doing its job.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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
    let sizes = (number("x-mock-chunks"), number("x-mock-content-bytes"));
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
    let attempt = {
        let mut sessions = state
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = sessions.entry(format!("{scenario}/{session}")).or_insert(0);
        *n += 1;
        *n
    };
    let mut ask = Ask::parse(&body);
    if let Some(ask) = &mut ask {
        ask.size.chunks = sizes.0;
        ask.size.content_bytes = sizes.1;
    }
    let reply = replies::reply(scenario, surface, ask.as_ref(), attempt == 1, served);
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
    let body: ResponseBody = match reply.body {
        Body::Full(bytes) => http_body_util::Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
        Body::Events(events) => {
            let stream =
                futures_util::stream::unfold(events.into_iter(), move |mut events| async move {
                    let event = events.next()?;
                    if let Some(d) = event_delay {
                        tokio::time::sleep(d).await;
                    }
                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from(event))), events))
                });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Body::Repeat {
            head,
            unit,
            count,
            tail,
        } => {
            let events = head
                .into_iter()
                .chain(std::iter::repeat_n(unit, count))
                .chain(tail);
            let stream = futures_util::stream::unfold(events, move |mut events| async move {
                let event = events.next()?;
                if let Some(d) = event_delay {
                    tokio::time::sleep(d).await;
                }
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from(event))), events))
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Body::Stall(bytes) => {
            builder = builder.header("content-length", (bytes.len() * 4).to_string());
            let stream = futures_util::stream::unfold(Some(bytes), |first| async move {
                if let Some(bytes) = first {
                    return Some((Ok::<_, BoxError>(Frame::data(Bytes::from(bytes))), None));
                }
                std::future::pending::<()>().await;
                None
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Body::Cut(bytes) => {
            let full = bytes.len() * 2;
            builder = builder.header("content-length", full.to_string());
            // The half that arrives, then (once it has left) the cut.
            let stream = futures_util::stream::unfold(Some(bytes), |half| async move {
                if let Some(bytes) = half {
                    return Some((Ok(Frame::data(Bytes::from(bytes))), None));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let cut: BoxError = "the mock gateway dropped the connection".into();
                Some((Err(cut), None))
            });
            BodyExt::boxed(StreamBody::new(stream.take(2)))
        }
    };
    builder.body(body).unwrap_or_else(|_| {
        hyper::Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    })
}
