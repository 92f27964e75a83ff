//! mcp-pqtls
#![forbid(unsafe_code)]
pub mod crypto;
pub mod groups;
pub mod policy;
pub use groups::Group;
/// Default groups.
pub const DEFAULT_GROUPS: &[Group] = &[Group::X25519MLKEM768, Group::X25519];
