//! A size-limited tmpfs for the disk-full tests (mounting needs root; the tests fail, not skip, without it).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::text;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mkdir");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().expect("running mount");
        assert!(out.status.success(), "mounting a {size} tmpfs at {} (needs root): {}", at.display(), text(&out.stderr));
        Self(at.to_path_buf())
    }

    pub fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().expect("running mount");
        assert!(out.status.success(), "remounting {}: {}", self.0.display(), text(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

