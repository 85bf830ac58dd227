//! `in_flight`: 1,000 calls in flight at once through one client (1,000 tasks spawned, all
//! joined), each a non-streaming Chat call with a ~2 KB answer read to the end, bare reqwest
//! against the whole guard stack, without and with the failover layer configured. The mock
//! gateway runs in its own process on one thread. Criterion's throughput (calls/s), then rounds
//! interleaved between the variants with the median throughput, its ratio, and this process's
//! CPU time per call (what the calls cost the service's machine). The process uses the system
//! allocator; `in_flight_mimalloc` runs the same with mimalloc.
//!
//! `cargo bench --features mock --bench in_flight`

#[allow(dead_code)]
mod common;

fn main() {
    common::in_flight::run("in_flight", "the system allocator (glibc malloc)");
}
