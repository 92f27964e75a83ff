//! Whether a file of secrets (a private key, the session-ticket keys) is private to this
//! process: no one but its owner, or its owner's group when that group is this process's own,
//! may read it. The group case is Kubernetes's: a Secret mounted with `fsGroup` is 0440 under
//! the pod's group, which the sidecar runs as (`runAsGroup` = `fsGroup`) and no one else is in.

use std::path::Path;

/// The permission bits of `path` if someone other than this process may read or write it;
/// `None` if it is private (or, off Unix, always). `Err` if it cannot be read.
pub(crate) fn exposed_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(path)?;
        let mode = meta.permissions().mode() & 0o777;
        let own_group = mode & 0o070 == 0o040 && own_gid() == Some(meta.gid());
        let exposed = mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group);
        Ok(exposed.then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// This process's effective group id, from `/proc/self/status` (Linux; `None` elsewhere,
/// where only 0600 passes). Read there rather than through a libc binding for one number.
#[cfg(unix)]
fn own_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_the_owner_or_its_own_group_may_read_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        // Its group is this process's, unless the directory hands down another (setgid) or
        // the platform cannot tell: then group-readable is exposed too.
        use std::os::unix::fs::MetadataExt;
        let foreign = own_gid() != Some(std::fs::metadata(&file).unwrap().gid());
        for (mode, exposed) in [
            (0o600, false),
            (0o400, false),
            (0o440, foreign),
            (0o640, foreign),
            (0o660, true),
            (0o604, true),
            (0o644, true),
            (0o606, true),
        ] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                exposed_mode(&file).unwrap(),
                exposed.then_some(mode),
                "{mode:o}"
            );
        }
    }
}
