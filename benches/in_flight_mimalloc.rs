//! `in_flight_mimalloc`: the `in_flight` bench (see `benches/in_flight.rs`) with mimalloc as the
//! process's allocator. Under 1,000 calls in flight, glibc's malloc contends on its arena locks
//! when memory allocated on one thread is freed on another (spans, freed by the exporter's
//! thread; tasks moved between workers): this run shows how much of the guard's cost in flight
//! is the allocator's.
//!
//! `cargo bench --features mock --bench in_flight_mimalloc`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
mod common;

fn main() {
    common::in_flight::run("in_flight_mimalloc", "mimalloc");
}
