//! The mock gateway through the whole stack: each scenario gets the evidence it should.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest_llm_guard::evidence::{
    ApiSurface, FallbackDecision as D, ParseCheck as P, Violation as V, WafVendor,
};
use reqwest_llm_guard::inspect::VerdictHandle;
use reqwest_llm_guard::mock::{MockGateway, Scenario as S};
use reqwest_llm_guard::retry::Retry;
use reqwest_llm_guard::{Evidence, Guard};
use retry_policies::policies::ExponentialBackoff;

type Row = (
    S,
    bool,
    u16,
    Option<P>,
    Option<V>,
    D,
    Option<WafVendor>,
    u32,
);

/// (scenario, stream, status, parse_check, violation, decision, wall, retries), checked on both
/// surfaces.
const ROWS: &[Row] = &[
    (S::Ok, false, 200, Some(P::Pass), None, D::None, None, 0),
    (S::Ok, true, 200, Some(P::Pass), None, D::None, None, 0),
    (
        S::Incomplete,
        false,
        200,
        Some(P::Pass),
        None,
        D::None,
        None,
        0,
    ),
    (
        S::Incomplete,
        true,
        200,
        Some(P::Pass),
        None,
        D::None,
        None,
        0,
    ),
    (
        S::RateLimitedOnce,
        false,
        200,
        Some(P::Pass),
        None,
        D::None,
        None,
        1,
    ),
    (
        S::RateLimitedMs,
        false,
        429,
        Some(P::Pass),
        None,
        D::Fallback,
        None,
        2,
    ),
    (
        S::RateLimitedLong,
        false,
        429,
        Some(P::Pass),
        None,
        D::Fallback,
        None,
        0,
    ),
    (
        S::WafCloudflare,
        false,
        403,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Hold,
        Some(WafVendor::Cloudflare),
        0,
    ),
    (
        S::WafCloudflareChallenge,
        false,
        429,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Hold,
        Some(WafVendor::Cloudflare),
        0,
    ),
    (
        S::WafAkamai,
        false,
        403,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Hold,
        Some(WafVendor::Akamai),
        0,
    ),
    (
        S::WafF5,
        false,
        200,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Hold,
        Some(WafVendor::F5),
        0,
    ),
    (
        S::WafAwsCaptcha,
        false,
        405,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Hold,
        Some(WafVendor::Aws),
        0,
    ),
    (
        S::Html200,
        false,
        200,
        Some(P::Fail),
        Some(V::HtmlBody),
        D::Fallback,
        None,
        0,
    ),
    (
        S::ErrorIn200,
        false,
        200,
        Some(P::Fail),
        Some(V::ErrorIn2xx),
        D::Fallback,
        None,
        0,
    ),
    (
        S::OpenrouterCredits,
        false,
        402,
        Some(P::Pass),
        None,
        D::Fallback,
        None,
        0,
    ),
    (
        S::GeminiError,
        false,
        400,
        Some(P::Pass),
        None,
        D::Hold,
        None,
        0,
    ),
    (
        S::AnthropicOverloaded,
        false,
        529,
        Some(P::Pass),
        None,
        D::Fallback,
        None,
        0,
    ),
    (
        S::Unauthorized,
        false,
        401,
        Some(P::Pass),
        None,
        D::Hold,
        None,
        0,
    ),
    (
        S::NotFound,
        false,
        404,
        Some(P::Pass),
        None,
        D::Hold,
        None,
        0,
    ),
    (
        S::ServerError,
        false,
        500,
        Some(P::Pass),
        None,
        D::Fallback,
        None,
        0,
    ),
    (
        S::StreamTruncated,
        true,
        200,
        Some(P::Fail),
        Some(V::StreamTruncated),
        D::Fallback,
        None,
        0,
    ),
    (
        S::StreamError,
        true,
        200,
        Some(P::Fail),
        Some(V::ErrorInStream),
        D::Fallback,
        None,
        0,
    ),
    (S::Slow, false, 200, Some(P::Pass), None, D::None, None, 0),
    (
        S::Drop,
        false,
        200,
        Some(P::Fail),
        Some(V::BodyReadError),
        D::Fallback,
        None,
        0,
    ),
];

fn client() -> reqwest_middleware::ClientWithMiddleware {
    let quick = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(2);
    Guard::new()
        .without_telemetry()
        .with_retry(
            Retry::new()
                .with_policy(quick)
                .with_max_server_wait(Duration::from_secs(5)),
        )
        .client(reqwest::Client::new())
}

async fn call(
    client: &reqwest_middleware::ClientWithMiddleware,
    gateway: &MockGateway,
    scenario: S,
    surface: ApiSurface,
    stream: bool,
    session: &str,
) -> Evidence {
    let (path, body) = match surface {
        ApiSurface::Responses => (
            "/v1/responses",
            format!(r#"{{"model":"gpt-5","input":"hi","stream":{stream}}}"#),
        ),
        _ => (
            "/v1/chat/completions",
            format!(r#"{{"model":"gpt-4o-mini","messages":[],"stream":{stream}}}"#),
        ),
    };
    let response = client
        .post(format!("{}{path}", gateway.url()))
        .header("x-mock-scenario", scenario.as_str())
        .header("x-mock-session", session)
        .body(body)
        .send()
        .await
        .unwrap();
    let evidence = Evidence::handle(&response);
    let mut bytes = response.bytes_stream();
    while let Some(Ok(_)) = bytes.next().await {}
    drop(bytes);
    evidence.settled().await
}

#[tokio::test]
async fn every_scenario_leaves_the_evidence_it_should_on_both_surfaces() {
    let gateway = MockGateway::start().await.unwrap();
    let client = client();
    for (i, &(scenario, stream, status, parse, violation, decision, wall, retries)) in
        ROWS.iter().enumerate()
    {
        for surface in [ApiSurface::ChatCompletions, ApiSurface::Responses] {
            let e = call(
                &client,
                &gateway,
                scenario,
                surface,
                stream,
                &format!("{i}-{surface}"),
            )
            .await;
            let name = format!("{scenario} {surface} stream={stream}");
            assert_eq!(e.status.map(|s| s.as_u16()), Some(status), "{name}");
            assert_eq!(e.parse_check, parse, "{name}");
            assert_eq!(e.violation, violation, "{name}");
            // Chat's in-stream error is Groq's, stating a 400: the request fails anywhere.
            let decision = if scenario == S::StreamError && surface == ApiSurface::ChatCompletions {
                D::Hold
            } else {
                decision
            };
            assert_eq!(e.fallback_decision, decision, "{name}");
            assert_eq!(e.waf.as_ref().map(|w| w.vendor), wall, "{name}");
            assert_eq!(e.retry_count, retries, "{name}");
            assert_eq!(e.api_surface, surface, "{name}");
        }
    }
}

#[tokio::test]
async fn surface_specific_scenarios() {
    let gateway = MockGateway::start().await.unwrap();
    let client = client();
    let failed = call(
        &client,
        &gateway,
        S::ResponsesFailed,
        ApiSurface::Responses,
        false,
        "a",
    )
    .await;
    assert_eq!(
        (failed.violation, failed.fallback_decision),
        (Some(V::ResponseFailed), D::Fallback)
    );
    let failed = call(
        &client,
        &gateway,
        S::ResponsesFailed,
        ApiSurface::Responses,
        true,
        "b",
    )
    .await;
    assert_eq!(failed.violation, Some(V::ErrorInStream));
    let ooo = call(
        &client,
        &gateway,
        S::StreamOutOfOrder,
        ApiSurface::Responses,
        true,
        "c",
    )
    .await;
    assert_eq!(ooo.violation, Some(V::StreamOutOfOrder));
    let ooo = call(
        &client,
        &gateway,
        S::StreamOutOfOrder,
        ApiSurface::ChatCompletions,
        true,
        "d",
    )
    .await;
    assert_eq!(ooo.violation, Some(V::EventAfterTerminal));
}

#[tokio::test]
async fn a_request_without_a_model_gets_openais_400_and_unknown_scenarios_a_clear_refusal() {
    let gateway = MockGateway::start().await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .body(r#"{"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");
    let r = http
        .post(format!("{}/v1/chat/completions?mock=nope", gateway.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown mock scenario"));
    assert_eq!(gateway.requests(), 2);
}

#[tokio::test]
async fn a_gateway_with_a_default_scenario_answers_every_request_with_it() {
    let gateway = MockGateway::start_with(S::WafCloudflare, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let e = call(
        &client(),
        &gateway,
        S::WafCloudflare,
        ApiSurface::ChatCompletions,
        false,
        "x",
    )
    .await;
    assert_eq!(e.fallback_decision, D::Hold);
    // The header still wins.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/responses", gateway.url()))
        .header("x-mock-scenario", "ok")
        .body(r#"{"model":"m","input":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn answers_of_any_size_keep_their_contract() {
    let gateway = MockGateway::start().await.unwrap();
    let client = client();
    for (path, body, chunks) in [
        (
            "/v1/chat/completions",
            r#"{"model":"m","stream":true}"#,
            1000,
        ),
        ("/v1/responses", r#"{"model":"m","stream":true}"#, 50),
    ] {
        let response = client
            .post(format!("{}{path}", gateway.url()))
            .header("x-mock-chunks", chunks.to_string())
            .body(body)
            .send()
            .await
            .unwrap();
        let verdict = response
            .extensions()
            .get::<VerdictHandle>()
            .cloned()
            .unwrap();
        response.bytes().await.unwrap();
        let v = verdict.wait().await;
        assert_eq!(v.parse_check, P::Pass, "{path}");
        assert!(
            v.facts.events >= chunks,
            "{path}: {} events",
            v.facts.events
        );
    }
    let response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .header("x-mock-content-bytes", "2048")
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(Evidence::of(&response).parse_check, Some(P::Pass));
    let v: serde_json::Value = response.json().await.unwrap();
    let len = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .len();
    assert!((2040..=2048).contains(&len), "{len}");
}
