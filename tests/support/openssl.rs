//! OpenSSL 3.5, built into a cache outside the repo by `interop/install-openssl.sh` (once).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The `openssl` binary, installed if it is not yet.
pub fn openssl() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/install-openssl.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "interop/install-openssl.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
