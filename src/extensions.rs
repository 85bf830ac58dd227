//! The values the layers pass to each other in the request's and the response's extensions.
//!
//! This is the protocol between the layers, in one table (writer → reader). The public types
//! are documented where they live; the private markers are defined here.
//!
//! | type | where | written by | read by |
//! |---|---|---|---|
//! | [`ApiSurface`](crate::evidence::ApiSurface) | request, response | the caller (optional), else the first layer that classifies the request | every layer, [`Evidence`](crate::Evidence) |
//! | [`ModelFamily`](crate::lint::ModelFamily) | request | the caller (optional) | the call layer's lint |
//! | [`EvidenceHandle`](crate::EvidenceHandle) | request, response | the caller (optional, for errors), else the call layer | the caller, [`Evidence`](crate::Evidence) |
//! | `CallActive` | request | the call layer, while the call runs | a nested call layer (passes through) |
//! | `CallContext` | request | the call layer | the attempt layer (parent span, settings) |
//! | `CaptureContent` | request | the call layer, content capture on | the inspect layer |
//! | [`CurrentAttempt`](crate::retry::CurrentAttempt) | request | the retry layer, per attempt | the attempt layer; a nested retry layer (passes through) |
//! | `PendingAttempt` | request | the attempt layer | the attempt layer (next attempt), the call layer (last one) |
//! | [`RetryRecord`](crate::retry::RetryRecord) | request, response | the retry layer | the call layer, [`Evidence`](crate::Evidence) |
//! | [`WafVerdict`](crate::evidence::WafVerdict) | response | the inspect layer | the retry layer (never retries it), the call layer |
//! | [`ContractVerdict`](crate::contract::ContractVerdict) | response | the inspect layer (checked body) | the call and attempt layers, [`Evidence`](crate::Evidence) |
//! | [`VerdictHandle`](crate::inspect::VerdictHandle) | response | the inspect layer (stream) | the call layer (ends the span with the stream) |
//!
//! The retry layer knows the inspect layer ran inside it by a [`ContractVerdict`] or a
//! [`VerdictHandle`] on the response.
//!
//! [`ContractVerdict`]: crate::contract::ContractVerdict
//! [`VerdictHandle`]: crate::inspect::VerdictHandle

/// Content capture is on, cutting text at this many characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CaptureContent(pub(crate) usize);

/// A call layer is running this call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallActive;
