//! Every fault the mock gateway knows, written once (`table.rs`) and run two ways: through the
//! library (`via_guard.rs`: `Guard` with a `Failover` over a faulty primary and a healthy
//! secondary) and through the built `llm-guard proxy` as a service in another language meets
//! it (`via_proxy.rs`: the binary as a child process with a configuration file written from
//! the row, and a plain HTTP caller). Adding a fault is one row.
//!
//! Each row says what the caller got (the whole answer, an upstream's error as it came, or a
//! stream that ends in an error: never a cut answer passed off as a success), which upstream
//! answered after which hops, the decision, and exactly how many requests each upstream saw.
//!
//! `every_fault_through_the_library` and `every_fault_through_the_proxy` run every row the
//! driver can run, for every request kind it lists, each case on gateways (and a proxy) of its
//! own, several at once: the waits (the proxy's backoff, the limits) overlap instead of adding
//! up. A failing case names its row, its request kind and the driver; every failure is listed
//! at the end, not only the first. `FAULT_TABLE_ROW=text` runs only the rows whose name
//! contains `text`.
//!
//! What is not a row (the mock's faults on their own, without a stack in front) is in
//! `mock_alone.rs`.
#![cfg(feature = "mock")]

#[path = "../common/mod.rs"]
mod common;
mod mock_alone;
mod table;
mod via_guard;
#[cfg(feature = "cli")]
mod via_proxy;

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use reqwest_llm_guard::evidence::ApiSurface;
use reqwest_llm_guard::mock::MockGateway;

use table::{Driver, FAULTS, Fault};

/// Cases run at once: as many proxies as the proxy's fault tests ran at their busiest before
/// this table (two tests of four cases), so a busy 2-core machine is no busier than it was.
const AT_ONCE: usize = 8;

/// The most one case may take, every call and wait included (the longest takes a few
/// seconds): a stack that holds a call is a failure, not a hung test.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// One gateway per upstream of the row, each with the row's scenario as its default, on
/// loopback.
async fn gateways(fault: &Fault) -> Vec<MockGateway> {
    let mut out = Vec::with_capacity(fault.upstreams.len());
    for up in fault.upstreams {
        out.push(
            MockGateway::start_with(up.scenario, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap(),
        );
    }
    out
}

/// Requests each gateway saw, in the row's order.
fn seen(gateways: &[MockGateway]) -> Vec<u64> {
    gateways.iter().map(MockGateway::requests).collect()
}

/// The label of one call of a case: which call of how many, which time of how many.
fn call_label(case: &str, call: usize, calls: usize, time: u32, times: u32) -> String {
    let mut label = case.to_owned();
    if calls > 1 {
        let _ = write!(label, ", call {} of {calls}", call + 1);
    }
    if times > 1 {
        let _ = write!(label, ", time {} of {times}", time + 1);
    }
    label
}

/// Runs `case` for every row `driver` runs and every request kind of the row, at most
/// [`AT_ONCE`] at a time, each in a task of its own; then fails with every case that failed.
async fn run_table<F, Fut>(driver: Driver, case: F)
where
    F: Fn(&'static Fault, (ApiSurface, bool), String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let only = std::env::var("FAULT_TABLE_ROW").ok();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = Vec::new();
    for fault in FAULTS {
        if !driver.runs(fault.drivers) || only.as_deref().is_some_and(|o| !fault.name.contains(o)) {
            continue;
        }
        for &kind in fault.kinds {
            let label = fault.label(kind, driver);
            let run = case(fault, kind, label.clone());
            let permits = permits.clone();
            let held = label.clone();
            let task = tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                tokio::time::timeout(CASE_LIMIT, run)
                    .await
                    .unwrap_or_else(|_| panic!("{held}: held for {CASE_LIMIT:?}"));
            });
            tasks.push((label, task));
        }
    }
    assert!(!tasks.is_empty(), "no row to run {driver}");
    let total = tasks.len();
    let mut failed = Vec::new();
    for (label, task) in tasks {
        if let Err(e) = task.await {
            let why = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failed.push(format!("{label}:\n    {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed {driver}:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The table as data is sound: names unique (they name the failures), every row with a kind
/// and a call, counts for each of its upstreams, limits only where the drivers have them.
#[test]
fn every_row_of_the_table_is_well_formed() {
    let mut names = std::collections::HashSet::new();
    for fault in FAULTS {
        let name = fault.name;
        assert!(names.insert(name), "[{name}]: a second row of that name");
        assert!(!fault.kinds.is_empty(), "[{name}]: no request kind");
        assert!(!fault.calls.is_empty(), "[{name}]: no call");
        assert!(
            fault.upstreams.len() >= 2,
            "[{name}]: nothing to fail over to"
        );
        let ups: Vec<&str> = fault.upstreams.iter().map(|u| u.name).collect();
        for (i, call) in fault.calls.iter().enumerate() {
            assert!(call.times >= 1, "[{name}] call {i}: made no time");
            let e = &call.expect;
            assert!(
                ups.contains(&e.upstream),
                "[{name}] call {i}: no upstream {}",
                e.upstream
            );
            for driver in [Driver::Library, Driver::Proxy] {
                assert_eq!(
                    e.seen.by(driver).len(),
                    ups.len(),
                    "[{name}] call {i} {driver}: a count per upstream"
                );
            }
            if matches!(e.seen, table::Seen::Split { .. }) {
                assert!(
                    fault.settings.proxy_max_retries.is_some(),
                    "[{name}] call {i}: counts that differ by driver need settings that do"
                );
            }
        }
        if fault.settings.breaker.rate_limit_cooldown.is_some() {
            assert!(
                !Driver::Proxy.runs(fault.drivers),
                "[{name}]: the proxy's file has no rate-limit cooldown"
            );
        }
        if let table::Drivers::LibraryOnly(why) = fault.drivers {
            assert!(!why.is_empty(), "[{name}]: say why the proxy cannot run it");
        }
    }
}
