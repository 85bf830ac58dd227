//! reqwest-llm-guard (crate docs are written in full below, once the layers are in).

pub mod contract;
pub mod evidence;
pub mod sse;
