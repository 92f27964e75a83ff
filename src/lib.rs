//! mcp-pqtls
#![forbid(unsafe_code)]
pub mod certs;
pub mod crypto;
pub mod groups;
pub mod policy;
pub use groups::Group;
/// Default groups.
pub const DEFAULT_GROUPS: &[Group] = &[Group::X25519MLKEM768, Group::X25519];
pub mod metrics;
pub mod tls;
pub use policy::PolicyMode;
mod serve;
pub use serve::serve;
mod connect;
mod reflect;
pub use connect::{get, Fetched};
pub use reflect::reflect;
pub mod config;
pub mod demo;
