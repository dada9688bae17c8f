//! A real Kafka-protocol broker for the tests: tansu (from crates.io,
//! installed by scripts/test.sh) on a free loopback port. Without tansu on
//! PATH the tests that need it fail rather than skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where tansu keeps its data.
#[derive(Clone, Copy)]
pub enum Storage {
    /// Lost when the broker stops.
    Memory,
    /// A SQLite file in the broker's directory: survives a restart.
    Sqlite,
}

/// A running tansu.
pub struct Broker {
    pub address: String,
    dir: PathBuf,
    storage: Storage,
    /// The address clients are told to reach the broker at, when not `address` (a TLS front).
    advertised: Option<String>,
    process: Option<Running>,
}

impl Broker {
    /// Start tansu in `dir` on a free port.
    pub fn start(dir: &Path, storage: Storage) -> Self {
        let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("tansu").is_file()));
        assert!(on_path, "`tansu` is not on PATH: cargo install tansu --locked --features dynostore,libsql (./scripts/test.sh does)");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut broker = Broker { address: format!("127.0.0.1:{port}"), dir: dir.to_path_buf(), storage, advertised: None, process: None };
        broker.restart();
        broker
    }

    /// Start tansu on a free port, telling clients to reach it at `advertised` (a TLS front
    /// such as `tests/tls/proxy.py` listening there).
    pub fn start_advertising(dir: &Path, storage: Storage, advertised: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut broker = Broker { address: format!("127.0.0.1:{port}"), dir: dir.to_path_buf(), storage, advertised: Some(advertised.to_string()), process: None };
        broker.restart();
        broker
    }

    /// Stop the broker (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        self.process = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.address).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freeze the broker (SIGSTOP): connections stay open and nothing is answered, as a
    /// broker stalled by a full disk or a long pause looks to a client.
    #[allow(dead_code)]
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused broker go on (SIGCONT).
    #[allow(dead_code)]
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().map(|p| p.0.id().to_string()).expect("the broker is running");
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success(), "kill {signal} {pid}");
    }

    /// Start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://{}", self.address);
        let advertised = format!("tcp://{}", self.advertised.as_deref().unwrap_or(&self.address));
        let storage = match self.storage {
            Storage::Memory => "memory://tansu/".to_string(),
            Storage::Sqlite => "sqlite://tansu.db".to_string(),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("tansu.log")).expect("log");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised, "--storage-engine", &storage])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting tansu");
        self.process = Some(Running(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen: {}", std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
