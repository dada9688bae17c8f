//! The one rule for files that hold secrets (the fingerprint secret, signing and TLS keys,
//! tokens, Kafka and S3 credentials): nobody but the owner may read them, or the owner's group
//! when this process runs in it. That exception is Kubernetes': a Secret mounted for a
//! non-root pod is root-owned, group `fsGroup`, mode 0440, and the pod runs in `fsGroup`.

use std::path::Path;

/// Why `path`'s permissions let someone else read it, if they do ("permissions 644 let
/// others read"); callers add what the file holds and how to fix it. Unreadable metadata is an
/// I/O error.
pub fn exposure(path: &Path) -> std::io::Result<Option<String>> {
    let metadata = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = metadata.permissions().mode() & 0o777;
        // /proc/self is owned by this process's effective user and group (Linux).
        let own_group = std::fs::metadata("/proc/self").map(|m| m.gid()).ok();
        let group_ok = mode & 0o070 == 0 || (mode & 0o020 == 0 && own_group == Some(metadata.gid()));
        if mode & 0o007 != 0 || !group_ok {
            return Ok(Some(format!("permissions {mode:o} let others read")));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(None)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_or_the_processes_own_group_read_only() {
        let dir = std::env::temp_dir().join(format!("seedwatch-secret-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        std::fs::write(&path, "x").expect("write");
        let with = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            exposure(&path).expect("metadata")
        };
        assert_eq!(with(0o600), None);
        assert_eq!(with(0o400), None);
        // The file was made by this process, so its group is the process's: Kubernetes' case.
        assert_eq!(with(0o440), None);
        assert_eq!(with(0o640), None);
        assert_eq!(with(0o660), Some("permissions 660 let others read".into()), "group-writable");
        assert_eq!(with(0o644), Some("permissions 644 let others read".into()));
        assert_eq!(with(0o604), Some("permissions 604 let others read".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
