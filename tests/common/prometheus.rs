//! A real Prometheus server (Debian's `prometheus`, which ./scripts/test.sh installs) for the
//! tests that scrape seedwatch or evaluate its alerts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::broker::Running;
use super::http::free_port;

/// A running Prometheus: killed when dropped.
pub struct Prometheus {
    _process: Running,
    /// `host:port` of its HTTP API.
    pub address: String,
    log: PathBuf,
}

impl Prometheus {
    /// Start one in `dir` with `config` as its prometheus.yml, storing its data and log there.
    pub fn start(dir: &Path, config: &str) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus.yml");
        let log = dir.join("prometheus.log");
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("prometheus.log")))
            .spawn()
            .expect("`prometheus` is not on PATH (./scripts/test.sh installs Debian's prometheus)");
        Self { _process: Running(process), address, log }
    }

    /// What it has logged so far (for a failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
