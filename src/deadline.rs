//! The error of the request-body deadline (`request-body-timeout`), shared by the proxy,
//! which enforces it on every body it reads, and the gate, which reads bodies through the
//! proxy's reader and answers 408 when it sees this error in a body error's chain.

use std::error::Error as StdError;
use std::time::Duration;

/// A request body that was not complete within `request-body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not complete within {}", humantime::format_duration(*.0))]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `e`, or an error it wraps, is a [`BodyTimeout`].
    pub fn in_chain(e: &(dyn StdError + 'static)) -> bool {
        std::iter::successors(Some(e), |e| (*e).source()).any(|e| e.is::<BodyTimeout>())
    }
}
