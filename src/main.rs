//! `seedwatch`: the command line. Parsing, defaults and printing only.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use seedwatch::archive_admin;
use seedwatch::secrets::{kafka_secret_advice, kafka_secret_env, KAFKA_SECRET_SETTINGS};
use seedwatch::generate::{generate, GenerateOptions, Truth};
use seedwatch::pipeline::{run, RunOptions, RunReport};
use seedwatch::truth::score;
use seedwatch_archive::query::{format_batches, run_query};
use seedwatch_archive::{ArchiveRoot, OutputFormat};
use seedwatch_schemas::dead_letter::ReasonCode;
use seedwatch_schemas::{Family, Severity};

/// Security monitoring for the logs around cannabis state tracking systems (Metrc, BioTrack).
#[derive(Debug, Parser)]
#[command(name = "seedwatch", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log level filter (e.g. `info`, `seedwatch=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    /// Configuration file (YAML; see config/seedwatch.example.yaml and `config check`):
    /// defaults for every command's flags; flags and SEEDWATCH_<SECTION>_<KEY> variables win.
    #[arg(long, global = true, env = seedwatch::config::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write realistic synthetic logs with labelled incidents (events.ndjson, locations.csv, roster.csv, truth.json).
    Generate {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        shape: Shape,
    },
    /// Run the embedded pipeline: decode, detect and archive NDJSON files.
    Run {
        /// Input NDJSON files; `-` reads stdin. Repeat or list several.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[command(flatten)]
        common: RunArgs,
        /// Score the findings against a generator truth.json.
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Query the archive with SQL (tables: login, api, sync, audit, findings, dead_letter; views: findings_latest, suppressed); without a statement, an interactive shell.
    Query {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: OutputFormat,
        /// The SQL statement; leave it out for an interactive shell (`\d` lists tables, `\q` quits).
        sql: Option<String>,
        /// Rules directory whose exceptions the `suppressed` view shows [default: ./rules, else the shipped rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Run a review from the manuals' checklists over the archive (reports/*.sql); `report list` shows them.
    Report(ReportArgs),
    /// Work a finding: acknowledge, resolve or dismiss it (appends a row to its history).
    Findings {
        #[command(subcommand)]
        command: FindingsCommand,
    },
    /// Generate a data set, run it and print the findings, in one command.
    Demo {
        /// Working directory for the data and the archive.
        #[arg(long, default_value = "seedwatch-demo")]
        dir: PathBuf,
        #[command(flatten)]
        shape: Shape,
        /// Rules directory.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Rule tooling.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Export archived findings and events in another schema.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Validate, redact and produce log lines to Kafka (one topic per family, keyed by license).
    Collect {
        #[command(subcommand)]
        command: CollectCommand,
    },
    /// Run the detector as a member of a Kafka consumer group: consume the family
    /// topics, archive events and findings, publish findings; until SIGINT/SIGTERM.
    Detect(DetectArgs),
    /// The archive as a record: verify it against its signed manifest; export what an auditor keeps.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Kafka topic tooling.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// The local secrets: create them once, before the first collector or detector.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (every value through its flag's parser) and print the
    /// effective configuration, SEEDWATCH_* variables applied, Kafka secrets masked; exit 1
    /// on any error.
    Check {
        /// The file [default: --config, else $SEEDWATCH_CONFIG; neither: variables only].
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the fingerprint secret and the archive signing key where missing (mode 0600);
    /// existing ones are kept. Copy the fingerprint secret to every host that collects or
    /// detects: collectors and detectors refuse to start without it.
    Init {
        /// Fingerprint secret [default: ~/.config/seedwatch/fingerprint.key].
        #[arg(long, value_name = "FILE")]
        fingerprint_key: Option<PathBuf>,
        /// Archive signing key (Ed25519) [default: $SEEDWATCH_SIGNING_KEY, else ~/.config/seedwatch/archive-signing.pem].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Re-hash the data files and check the manifest's chain and signatures: names every
    /// altered, missing or unrecorded file and every rewritten, reordered or removed entry;
    /// exit 1 on any.
    Verify {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
        /// Public key to check signatures with (SPKI PEM, from `archive public-key`); repeat for writers with keys of their own [default: the signing key's public half].
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// Signing key whose public half checks the signatures when no --public-key is given [default: as for run].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        /// Re-hash only the files of days from this date (YYYY-MM-DD, inclusive); the chain is always checked whole.
        #[arg(long)]
        from: Option<String>,
        /// Re-hash only the files of days before this date (YYYY-MM-DD, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// A head kept earlier (SEQ:SHA256, as `archive head` prints it): the chain must still hold it, so removed newest entries are found.
        #[arg(long, value_name = "SEQ:SHA256")]
        head: Option<String>,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Remove whole days past their table's retention (policy.yaml `retention`; defaults and
    /// minimums from 000 §5.4), never a day holding evidence of a finding that is kept or not
    /// resolved; recorded in the manifest.
    Prune {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune as on this date (YYYY-MM-DD, UTC) [default: today].
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
        /// Rules directory whose policy.yaml holds the periods [default: ./rules, else the shipped rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Key that signs the manifest entry [default: as for run].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Rewrite each day's files of a table as few large ones, sorted by license, subject and
    /// time, zstd throughout: one manifest entry and one Delta commit per day, so queries
    /// see the day before or after, never between.
    Compact {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
        /// Only this table (repeatable) [default: all].
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// Only days before this date (YYYY-MM-DD) [default: today, UTC].
        #[arg(long, value_name = "DATE")]
        before: Option<String>,
        /// Key that signs the manifest entries [default: as for run].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Convert an archive written by an earlier seedwatch: a table without a `_delta_log`
    /// (before the table format) gets one; a table of the day layout (`date` a partition
    /// column) gets its files rewritten to hold their `date`, so compaction can put a quiet
    /// table's month in one file. Each table changes in one commit, recorded in the manifest;
    /// the rows a query reads through it are checked against the old files' footers. Safe
    /// to run again, after a stop too.
    Migrate {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
        /// Key that signs the manifest entries, when the archive has a manifest [default: as for run].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Print the manifest's newest entry as SEQ:SHA256, for an auditor to keep.
    Head {
        /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG).
        #[arg(long)]
        archive: ArchiveRoot,
    },
    /// Print the public half of the signing key (SPKI PEM), for an auditor to keep.
    PublicKey {
        /// Signing key [default: as for run].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum FindingsCommand {
    /// Someone is on it.
    Ack(StatusArgs),
    /// Dealt with.
    Resolve(StatusArgs),
    /// Not an incident.
    FalsePositive(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The finding's id (the finding_id column).
    id: String,
    /// Archive directory.
    #[arg(long, value_parser = local_archive)]
    archive: PathBuf,
    /// Why: kept in the finding's history.
    #[arg(long)]
    note: String,
    /// Who [default: $USER].
    #[arg(long)]
    by: Option<String>,
    /// Key that signs the archive's manifest (Ed25519, PKCS#8 PEM; created if missing) [default: $SEEDWATCH_SIGNING_KEY, else ~/.config/seedwatch/archive-signing.pem].
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    #[command(flatten)]
    alerts: AlertmanagerArgs,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Debug, Subcommand)]
enum CollectCommand {
    /// Read NDJSON files (or follow one as it grows and rotates) and produce their lines.
    File {
        /// Input NDJSON files.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Keep following the file as it grows, across rotation (rename or truncation), until SIGINT/SIGTERM.
        #[arg(long)]
        follow: bool,
        /// Remember how far each file was acknowledged by Kafka in this file; a restart continues there.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        format: InputFormatArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// File with the local secret for credential fingerprints [default: ~/.config/seedwatch/fingerprint.key].
        #[arg(long)]
        fingerprint_key: Option<PathBuf>,
    },
    /// Serve POST /v1/events (NDJSON, gzip accepted, bearer tokens scoped to licenses) and
    /// produce what integrations push; 202 only after Kafka acknowledged; until SIGINT/SIGTERM.
    Http {
        /// Address to listen on (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: String,
        /// Token file (YAML: tokens: [{name, sha256, licenses, locations}]); see README "Intake endpoint".
        #[arg(long)]
        tokens: PathBuf,
        /// The operator's locations.csv: a line whose location or state is not its license's is refused as a dead letter (location_mismatch).
        #[arg(long)]
        locations: Option<PathBuf>,
        /// Largest request body, compressed or inflated (bytes).
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Largest inflated-to-compressed ratio of a gzip body.
        #[arg(long, default_value_t = 100)]
        max_inflate_ratio: usize,
        /// Most lines in one request.
        #[arg(long, default_value_t = 100_000)]
        max_lines_per_request: usize,
        /// Most bad lines (dead letters) in one request; beyond, the request is refused (413).
        #[arg(long, default_value_t = 1_000)]
        max_dead_letters_per_request: usize,
        /// Time a client has to send a whole request, head and body (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = parse_lateness)]
        request_timeout: i64,
        /// Serve HTTPS with this PEM certificate chain (leaf first; re-read when the file changes).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key (refused unless mode 0600).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require clients to present a certificate signed by a CA in this PEM file (mutual TLS).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// File with the local secret for credential fingerprints [default: ~/.config/seedwatch/fingerprint.key].
        #[arg(long)]
        fingerprint_key: Option<PathBuf>,
    },
    /// Read NDJSON from standard input (for pipes) and produce its lines.
    Stdin {
        #[command(flatten)]
        format: InputFormatArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// File with the local secret for credential fingerprints [default: ~/.config/seedwatch/fingerprint.key].
        #[arg(long)]
        fingerprint_key: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct InputFormatArgs {
    /// Input lines: the event contract, or nginx JSON access logs of a proxy in front of the state API (mapped to `api` events).
    #[arg(long, default_value = "contract", value_parser = ["contract", "nginx-json"])]
    format: String,
    /// For nginx-json: YAML mapping of hosts (system, state) and client addresses (license, integration); see README.
    #[arg(long, value_name = "FILE")]
    nginx_map: Option<PathBuf>,
}

impl InputFormatArgs {
    fn mapping(self) -> Result<Option<seedwatch_ingest::nginx::NginxMapping>> {
        match (self.format.as_str(), self.nginx_map) {
            ("nginx-json", Some(path)) => Ok(Some(seedwatch_ingest::nginx::NginxMapping::load(&path).map_err(anyhow::Error::msg)?)),
            ("nginx-json", None) => Ok(Some(seedwatch_ingest::nginx::NginxMapping::default())),
            (_, Some(_)) => Err(anyhow::anyhow!("--nginx-map needs --format nginx-json")),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
struct DetectArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Consumer group; every detector of one deployment uses the same.
    #[arg(long, default_value = "seedwatch-detect")]
    group: String,
    /// Stable name of this detector in the group (static membership, e.g. the pod name): a
    /// detector restarted under the same name gets its partitions back at once instead of
    /// after the dead member's session expires. Unique per running detector.
    #[arg(long, value_name = "NAME")]
    instance_id: Option<String>,
    /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG), shared by the group's detectors (created if missing).
    #[arg(long)]
    archive: ArchiveRoot,
    #[command(flatten)]
    rule_set: RuleSetArgs,
    /// File with the local secret for credential fingerprints [default: ~/.config/seedwatch/fingerprint.key].
    #[arg(long)]
    fingerprint_key: Option<PathBuf>,
    /// Key that signs the archive's manifest (Ed25519, PKCS#8 PEM; created if missing) [default: $SEEDWATCH_SIGNING_KEY, else ~/.config/seedwatch/archive-signing.pem].
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// How far behind its location's (license's) newest event an event may arrive and still be
    /// evaluated; each license has its own event time.
    #[arg(long, default_value = "1h", value_parser = parse_lateness)]
    allowed_lateness: i64,
    /// Archive commit interval; offsets are committed right after each commit.
    #[arg(long, default_value = "5s", value_parser = parse_lateness)]
    commit_interval: i64,
    /// Publish the findings still open once a partition has been idle (fully read) this long.
    #[arg(long, default_value = "2s", value_parser = parse_lateness)]
    idle_after: i64,
    /// Rows held back to order a partition's topics by event time before they are released regardless.
    #[arg(long, default_value_t = 2_000_000)]
    max_buffered_rows: usize,
    /// Partitions per topic when the topics have to be created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    alerts: AlertmanagerArgs,
    /// No status lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics at ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Serve /metrics over HTTPS with this PEM certificate chain (re-read when the file changes).
    #[arg(long, value_name = "FILE", requires_all = ["metrics_addr", "metrics_tls_key"])]
    metrics_tls_cert: Option<PathBuf>,
    /// The metrics certificate's PEM private key (refused unless mode 0600).
    #[arg(long, value_name = "FILE", requires = "metrics_tls_cert")]
    metrics_tls_key: Option<PathBuf>,
    /// Require scrapers to present a client certificate signed by a CA in this PEM file.
    #[arg(long, value_name = "FILE", requires = "metrics_tls_cert")]
    metrics_client_ca: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on /metrics, the token read from this file (mode 0600; Prometheus's authorization.credentials_file).
    #[arg(long, value_name = "FILE", requires = "metrics_addr")]
    metrics_token_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// Start the metrics listener if asked for; prints and returns its URL.
    fn serve(&self) -> Result<Option<String>> {
        let Some(addr) = &self.metrics_addr else { return Ok(None) };
        let tls = match (&self.metrics_tls_cert, &self.metrics_tls_key) {
            (Some(cert), Some(key)) => Some(seedwatch::tls::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.metrics_client_ca.clone() }),
            _ => None,
        };
        let listener = seedwatch::metrics_server::MetricsListener { tls, token_file: self.metrics_token_file.clone() };
        let (_, url) = seedwatch::metrics_server::serve(addr, &listener)?;
        eprintln!("metrics: {url}");
        Ok(Some(url))
    }
}

#[derive(Debug, Clone, clap::Args)]
struct AlertmanagerArgs {
    /// Post every finding version to Alertmanager's v2 API at this base URL (e.g. http://127.0.0.1:9093).
    #[arg(long, value_name = "URL")]
    alertmanager: Option<String>,
    /// How long an open finding stays firing in Alertmanager after its last version.
    #[arg(long, default_value = "24h", value_parser = parse_lateness, value_name = "DURATION")]
    alert_hold: i64,
}

impl AlertmanagerArgs {
    fn none() -> Self {
        Self { alertmanager: None, alert_hold: 24 * 3_600_000 }
    }

    fn client(&self) -> Option<seedwatch::alertmanager::Alertmanager> {
        let hold = std::time::Duration::from_millis(self.alert_hold.max(0) as u64);
        self.alertmanager.as_deref().map(|url| seedwatch::alertmanager::Alertmanager::new(url, hold))
    }
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create seedwatch's topics (events per family, dead_letter, findings) where missing.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Partitions per topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[derive(Debug, Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers (host:port[,host:port...]).
    #[arg(long)]
    brokers: String,
    /// Topic name prefix: topics are PREFIX.login, PREFIX.api, PREFIX.sync, PREFIX.audit, PREFIX.dead_letter, PREFIX.findings.
    #[arg(long, default_value = "seedwatch")]
    topic_prefix: String,
    /// Any librdkafka setting as NAME=VALUE; repeat (security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, ssl.ca.location=..., ...).
    #[arg(long = "kafka-setting", value_name = "NAME=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

impl KafkaArgs {
    fn config(self) -> Result<seedwatch_kafka::KafkaConfig> {
        if let Some((name, _)) = self.settings.iter().find(|(name, _)| KAFKA_SECRET_SETTINGS.contains(&name.as_str())) {
            anyhow::bail!("--kafka-setting {name}=...: secrets do not go on the command line; {}", kafka_secret_advice(name));
        }
        let mut settings: std::collections::BTreeMap<String, String> = self.settings.into_iter().collect();
        for setting in KAFKA_SECRET_SETTINGS {
            let env = kafka_secret_env(setting);
            if let Some(file) = std::env::var_os(format!("{env}_FILE")) {
                let value = seedwatch::secrets::read_private_text(std::path::Path::new(&file), &format!("the Kafka {setting} ({env}_FILE)"))?;
                settings.insert(setting.into(), value);
            } else if let Ok(value) = std::env::var(&env) {
                settings.insert(setting.into(), value);
            }
        }
        // librdkafka reads the client's private key itself: the same rule as for our own keys.
        if let Some(key) = settings.get("ssl.key.location") {
            seedwatch::secrets::check_private(std::path::Path::new(key), "the Kafka client's private key (ssl.key.location)")?;
        }
        Ok(seedwatch_kafka::KafkaConfig { brokers: self.brokers, topic_prefix: self.topic_prefix, settings: settings.into_iter().collect() })
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The report (a file name in the reports directory without `.sql`), or `list`.
    name: String,
    /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG) (not needed for `list`).
    #[arg(long)]
    archive: Option<ArchiveRoot>,
    /// Start of the review period (YYYY-MM-DD UTC, or RFC 3339), inclusive [default: `--to` minus the report's period: a day, 7, 30 or 90 days].
    #[arg(long, value_parser = parse_instant)]
    from: Option<i64>,
    /// End of the review period, exclusive [default: just after the newest archived event].
    #[arg(long, value_parser = parse_instant)]
    to: Option<i64>,
    /// One location id (default: all).
    #[arg(long)]
    location: Option<String>,
    /// Output format on standard output.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: OutputFormat,
    /// Write the rows to this file instead (`.parquet` or `.csv`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reports directory [default: ./reports, else the shipped reports].
    #[arg(long)]
    reports: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
    /// The rules directory (its policy.yaml is the `policy` table) and the reference files
    /// (the `locations` and `roster` tables).
    #[command(flatten)]
    rule_set: RuleSetArgs,
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// OCSF 1.2.0 NDJSON: findings as Detection Finding (2004), login as Authentication (3002),
    /// api as API Activity (6003), audit's user-management actions as Account Change (3001).
    Ocsf {
        /// Archive directory.
        #[arg(long, value_parser = local_archive)]
        archive: PathBuf,
        /// The table to export.
        #[arg(long, value_enum)]
        table: seedwatch::ocsf::ExportTable,
        /// First day or instant (YYYY-MM-DD UTC, or RFC 3339), inclusive.
        #[arg(long, value_parser = parse_instant)]
        from: Option<i64>,
        /// End (exclusive).
        #[arg(long, value_parser = parse_instant)]
        to: Option<i64>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
}

/// Who is asking. With an access file, every read is narrowed to the role's licenses and
/// reports, exports and triage need the role's `may:`; without one, everything is open.
#[derive(Debug, clap::Args)]
struct AccessArgs {
    /// Access file naming roles (YAML, see config/access.example.yaml).
    #[arg(long, env = "SEEDWATCH_ACCESS", value_name = "FILE")]
    access: Option<PathBuf>,
    /// The caller's role in the access file.
    #[arg(long, env = "SEEDWATCH_ROLE", value_name = "NAME")]
    role: Option<String>,
}

impl AccessArgs {
    fn role(&self) -> Result<seedwatch::access::Role> {
        Ok(seedwatch::access::Role::resolve(self.access.as_deref(), self.role.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate every rule file (YAML schema, SQL compiles against the family's columns).
    Check {
        /// Rules directory.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Run each rule over its fixtures (`<name>.positive.ndjson` must fire, `<name>.negative.ndjson` must not).
    Test {
        /// Rules directory.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Evaluate rules over archived events and add their new findings to the archive
    /// (state before --from is rebuilt from the archive first).
    Backfill {
        /// Archive directory.
        #[arg(long, value_parser = local_archive)]
        archive: PathBuf,
        /// Start of the range, inclusive (YYYY-MM-DD, UTC, or RFC 3339).
        #[arg(long, value_parser = parse_instant)]
        from: i64,
        /// End of the range, exclusive (YYYY-MM-DD, UTC, or RFC 3339).
        #[arg(long, value_parser = parse_instant)]
        to: i64,
        /// Only this rule id; repeat for several [default: every rule].
        #[arg(long = "rule")]
        only: Vec<String>,
        #[command(flatten)]
        rule_set: RuleSetArgs,
        /// Print what would be found; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
        /// Key that signs the archive's manifest (Ed25519, PKCS#8 PEM; created if missing) [default: $SEEDWATCH_SIGNING_KEY, else ~/.config/seedwatch/archive-signing.pem].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
    },
}

fn parse_instant(s: &str) -> Result<i64, String> {
    seedwatch_detect::exception::parse_start(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

#[derive(Debug, Args)]
struct Shape {
    /// Days of history.
    #[arg(long, default_value_t = 21)]
    days: u32,
    /// Number of locations (spread over Metrc and BioTrack states).
    #[arg(long, default_value_t = 6)]
    locations: usize,
    /// Random seed; the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day of history (YYYY-MM-DD).
    #[arg(long, default_value = "2026-10-19")]
    start: NaiveDate,
}

/// The rules and the reference data they join against (shared by `run` and `rules backfill`).
#[derive(Debug, Args)]
struct RuleSetArgs {
    /// Rules directory [default: ./rules, else the rules shipped with this build].
    #[arg(long)]
    rules: Option<PathBuf>,
    /// locations.csv (business hours and timezones: schedule rules, local-hour baselines).
    #[arg(long)]
    locations: Option<PathBuf>,
    /// roster.csv (users and terminations: reference rules).
    #[arg(long)]
    roster: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Archive: a directory, or s3://bucket/prefix (S3 settings from AWS_* variables or $SEEDWATCH_S3_CONFIG) (created if missing).
    #[arg(long)]
    archive: ArchiveRoot,
    #[command(flatten)]
    rule_set: RuleSetArgs,
    /// File with the local secret for credential fingerprints [default: ~/.config/seedwatch/fingerprint.key].
    #[arg(long)]
    fingerprint_key: Option<PathBuf>,
    /// Key that signs the archive's manifest (Ed25519, PKCS#8 PEM; created if missing) [default: $SEEDWATCH_SIGNING_KEY, else ~/.config/seedwatch/archive-signing.pem].
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// How far behind its location's (license's) newest event an event may arrive and still
    /// be evaluated (later ones are archived and counted as late). Each license has its own
    /// event time, so one location's delayed backlog never makes another's events late.
    #[arg(long, default_value = "1h", value_parser = parse_lateness)]
    allowed_lateness: i64,
    /// How far after its arrival an event may be dated; later-dated lines are dead-lettered
    /// (`future_time`) and move no watermark.
    #[arg(long, default_value = "15m", value_parser = parse_lateness)]
    max_clock_skew: i64,
    /// In-process partitions, each a task with its own rule engine on its own thread; a
    /// license's events always go to the same one (Kafka's murmur2). 0: one per core.
    #[arg(long, default_value_t = 0)]
    partitions: usize,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// After the input ends, keep serving /metrics until interrupted (needs --metrics-addr).
    #[arg(long, requires = "metrics_addr")]
    hold: bool,
    #[command(flatten)]
    alerts: AlertmanagerArgs,
}

/// An archive directory for a command that works on local disk only.
fn local_archive(s: &str) -> Result<PathBuf, String> {
    if s.contains("://") {
        return Err("this command works on an archive on local disk only; an s3:// archive is read and written by run, detect, query, report, archive prune, archive compact, archive verify and archive head".into());
    }
    Ok(PathBuf::from(s))
}

fn parse_lateness(s: &str) -> Result<i64, String> {
    seedwatch_detect::duration::parse_duration_ms(s)
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

fn default_rules(given: Option<PathBuf>) -> PathBuf {
    shipped_dir(given, "rules")
}

fn default_reports(given: Option<PathBuf>) -> PathBuf {
    shipped_dir(given, "reports")
}

/// The directory given, else `./NAME` when it exists, else the one shipped with this build.
fn shipped_dir(given: Option<PathBuf>, name: &str) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from(name);
        if local.is_dir() { local } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(name) }
    })
}

/// `seedwatch report`: list the reports, or run one.
async fn report(args: ReportArgs) -> Result<()> {
    use seedwatch::report;
    let dir = default_reports(args.reports);
    let reports = report::load_reports(&dir)?;
    if args.name == "list" {
        let width = reports.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &reports {
            let needs = if r.needs.is_empty() { String::new() } else { format!(" [needs --{}]", r.needs.join(", --")) };
            println!("{:width$}  {} ({}){needs}", r.name, r.title, r.review);
        }
        return Ok(());
    }
    let chosen = report::find(&reports, &args.name, &dir)?;
    let role = args.access.role()?;
    role.require(seedwatch::access::Permission::Report, "run reports")?;
    let archive = args.archive.ok_or_else(|| anyhow::anyhow!("report `{}` needs --archive DIR", chosen.name))?;
    let RuleSetArgs { rules, locations, roster } = args.rule_set;
    let reference = seedwatch_detect::reference::Reference::load(&default_rules(rules), locations.as_deref(), roster.as_deref())?;
    let ctx = seedwatch_archive::open_session_for(&archive, &role.visibility).await?;
    let available = report::register_reference(&ctx, &reference, locations.is_some(), roster.is_some()).await?;
    let to = match args.to {
        Some(to) => to,
        None => seedwatch_archive::newest_event_time(&ctx).await?.map_or_else(|| chrono::Utc::now().timestamp_millis(), |t| t + 1),
    };
    let from = args.from.unwrap_or(to - report::default_period_ms(chosen));
    if from >= to {
        anyhow::bail!("--from must be before --to");
    }
    let params = report::ReportParams { from, to, location: args.location };
    let frame = report::plan(&ctx, chosen, &params, &available).await?;
    let period = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string());
    let scope = params.location.as_deref().map_or_else(|| "all locations".to_string(), |l| format!("location {l}"));
    eprintln!("{}: {}, {} to {}, {scope}", chosen.name, chosen.title, period(from), period(to));
    match &args.out {
        Some(path) => {
            let rows = write_report(frame, path).await.with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{rows} rows written to {}", path.display());
        }
        None => {
            let batches = frame.collect().await.with_context(|| format!("running report {}", chosen.name))?;
            println!("{}", format_batches(&batches, args.format)?);
        }
    }
    Ok(())
}

/// Write a report's rows to one `.parquet` or `.csv` file; returns the rows written.
async fn write_report(frame: datafusion::prelude::DataFrame, path: &Path) -> Result<u64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::dataframe::DataFrameWriteOptions;
    let target = path.to_str().ok_or_else(|| anyhow::anyhow!("the path is not UTF-8"))?;
    let options = DataFrameWriteOptions::new().with_single_file_output(true);
    let written = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => frame.write_parquet(target, options, None).await?,
        Some("csv") => return write_report_csv(frame, path).await,
        _ => anyhow::bail!("--out must end in .parquet or .csv"),
    };
    // DataFusion answers a write with one `count` row.
    Ok(written.iter().filter_map(|b| b.column(0).as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()).flat_map(|c| c.iter().flatten()).sum())
}

/// A report as CSV for a spreadsheet: values from logs neutralised (a user named
/// `=HYPERLINK(…)` is text, not a formula; see `seedwatch_archive::printable`), streamed
/// batch by batch to `<path>.partial` and renamed, so a failed report leaves no half file.
async fn write_report_csv(frame: datafusion::prelude::DataFrame, path: &Path) -> Result<u64> {
    use futures::StreamExt;
    use seedwatch_archive::printable::{printable_batch, Target};
    let partial = path.with_extension("csv.partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(std::io::BufWriter::new(file));
    // The header, even when no row matches.
    writer.write(&printable_batch(&datafusion::arrow::record_batch::RecordBatch::new_empty(std::sync::Arc::new(frame.schema().as_arrow().clone())), Target::Csv)?)?;
    let mut stream = frame.execute_stream().await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&printable_batch(&batch, Target::Csv)?)?;
    }
    let file = writer.into_inner().into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(rows)
}

fn default_key(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".config/seedwatch/fingerprint.key")
    })
}

fn run_options(inputs: Vec<PathBuf>, args: RunArgs) -> RunOptions {
    RunOptions {
        inputs,
        archive: args.archive,
        rules: default_rules(args.rule_set.rules),
        locations: args.rule_set.locations,
        roster: args.rule_set.roster,
        fingerprint_key: default_key(args.fingerprint_key),
        signing_key: archive_admin::signing_key_path(args.signing_key),
        progress: !args.quiet,
        allowed_lateness_ms: args.allowed_lateness,
        max_clock_skew_ms: args.max_clock_skew,
        partitions: args.partitions,
        alertmanager: args.alerts.client(),
    }
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_summary(report: &RunReport, archive: &ArchiveRoot) {
    let d = &report.decode;
    println!(
        "read {} lines ({:.1} MB) from {} input(s) in {:.2} s ({} lines/s, {} partition(s))",
        thousands(d.lines),
        d.bytes as f64 / 1e6,
        report.inputs,
        report.seconds,
        thousands((d.lines as f64 / report.seconds.max(1e-9)) as u64),
        report.partitions
    );
    let families: Vec<String> = Family::ALL.iter().map(|f| format!("{} {}", f, thousands(d.events[f.index()]))).collect();
    println!("events:       {}", families.join(" · "));
    if d.redacted > 0 {
        println!("redacted:     {} lines carried a raw credential; stored as fingerprints only", thousands(d.redacted));
    }
    let dups: u64 = report.duplicates.values().sum();
    if dups > 0 {
        let per: Vec<String> = report.duplicates.iter().map(|(t, n)| format!("{t} {}", thousands(*n))).collect();
        println!("duplicates:   {} skipped, already archived ({})", thousands(dups), per.join(", "));
    }
    if let Some(r) = &report.resumed {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(r.until - 1).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
        println!("resumed:      detector state rebuilt from {} archived rows up to {at} ({:.1} s)", thousands(r.rows), r.seconds);
    }
    if report.late_events > 0 {
        println!("late:         {} events arrived beyond the allowed lateness of their location: archived, not evaluated", thousands(report.late_events));
    }
    if report.retracted_silences > 0 {
        println!("withdrawn:    {} silences judged against other locations' time, disproved by the location's own delayed events", thousands(report.retracted_silences));
    }
    if !report.suppressed.is_empty() {
        let per: Vec<String> = report.suppressed.iter().map(|((rule, exception), n)| format!("{rule} by {exception} {}", thousands(*n))).collect();
        println!("excepted:     {} matches dropped by exceptions ({}); see: seedwatch query --archive {} \"SELECT * FROM suppressed\"", thousands(report.suppressed.values().sum()), per.join(", "), archive);
    }
    let dead: Vec<String> = ReasonCode::ALL.iter().zip(d.dead).filter(|(_, n)| *n > 0).map(|(c, n)| format!("{c} {n}")).collect();
    if dead.is_empty() {
        println!("dead letters: 0");
    } else {
        println!("dead letters: {} ({}); see: seedwatch query --archive {} \"SELECT line, reason FROM dead_letter\"", d.dead_total(), dead.join(", "), archive);
    }
    let latest = seedwatch_schemas::finding::latest_versions(&report.findings);
    let mut by_severity: BTreeMap<Severity, u64> = BTreeMap::new();
    for f in &latest {
        *by_severity.entry(f.severity).or_default() += 1;
    }
    let sev: Vec<String> = Severity::ALL.iter().rev().map(|s| format!("{s} {}", by_severity.get(s).copied().unwrap_or(0))).collect();
    println!("findings:     {} ({}; {} versions)", latest.len(), sev.join(" · "), report.findings.len());
    println!("archive:      {} ({} files, {:.1} MB written)", archive, report.commit.files, report.commit.bytes as f64 / 1e6);
    for (rule, why) in &report.skipped_rules {
        println!("skipped rule: {rule} {why}");
    }
}

fn print_score(truth_path: &Path, report: &RunReport, rules: &Path) -> Result<()> {
    let text = std::fs::read_to_string(truth_path).with_context(|| format!("reading {}", truth_path.display()))?;
    let truth: Truth = serde_json::from_str(&text).with_context(|| format!("parsing {}", truth_path.display()))?;
    let skipped: HashSet<&str> = report.skipped_rules.iter().map(|(r, _)| r.as_str()).collect();
    let loaded: HashSet<String> = seedwatch_detect::load_rules(rules)?.into_iter().map(|r| r.id).filter(|r| !skipped.contains(r.as_str())).collect();
    let s = score(&truth, &report.findings, &loaded);
    println!();
    println!("against {}:", truth_path.display());
    println!("  recall:          {}/{} labelled incidents found ({:.0}%)", s.found.len(), s.found.len() + s.missed.len(), 100.0 * s.recall());
    for e in &s.missed {
        println!("  MISSED           {} ({}): {}", e.id, e.rule, e.description);
    }
    for (e, id) in &s.lookalike_hits {
        println!("  LOOK-ALIKE FIRED {} ({}), finding {id}", e.id, e.rule);
    }
    println!("  look-alikes:     {}/{} stayed quiet", truth.lookalikes.len() - s.lookalike_hits.len(), truth.lookalikes.len());
    println!("  false positives: {} findings explained by no label", s.unexpected.len());
    if !s.not_loaded.is_empty() {
        let ids: Vec<&str> = s.not_loaded.iter().map(|e| e.rule.as_str()).collect();
        println!("  not scored:      {} incidents need rules not loaded here ({})", s.not_loaded.len(), ids.join(", "));
    }
    let dead = report.decode.dead_total();
    println!("  dead letters:    {dead} (the generator wrote {} bad lines)", truth.bad_lines);
    Ok(())
}

fn print_findings(findings: &[seedwatch_schemas::Finding]) {
    use seedwatch_archive::printable::printable;
    println!();
    println!("{:<8}  {:<24}  {:<28}  {:<5}  {:<14}  {:>6}  {}", "SEVERITY", "RULE", "WHEN (UTC)", "STATE", "LOCATION", "EVENTS", "SUBJECT");
    for f in &seedwatch_schemas::finding::latest_versions(findings) {
        let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(f.window_start).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
        println!("{:<8}  {:<24}  {:<28}  {:<5}  {:<14}  {:>6}  {}", f.severity.as_str(), f.rule, when, f.state, printable(&f.location), f.event_count, printable(&f.subject));
    }
}

/// Each exception once, with the rules it covers; expired ones (and those ending within
/// two weeks) said plainly, since an exception past its reason is a blind spot.
fn print_exceptions(rules: &[seedwatch_detect::CompiledRule], now: i64) {
    let mut by_origin: BTreeMap<&str, (&seedwatch_detect::exception::CompiledException, Vec<&str>)> = BTreeMap::new();
    for rule in rules {
        for e in &rule.exceptions {
            by_origin.entry(e.origin.as_str()).or_insert((e, Vec::new())).1.push(&rule.id);
        }
    }
    let day = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms - 1).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
    let mut expired = 0;
    for (origin, (e, covered)) in &by_origin {
        let state = if e.expires_ms <= now {
            expired += 1;
            "expired "
        } else if e.expires_ms - now < 14 * 86_400_000 {
            "expiring"
        } else {
            "ok      "
        };
        println!("{state} exception {:<20} until {} owner {} ({}) for {}: {}", e.id, day(e.expires_ms), e.owner, origin, covered.join(", "), e.reason);
    }
    if !by_origin.is_empty() {
        println!("{} exceptions, {expired} expired (expired ones no longer apply to events after their last day)", by_origin.len());
    }
}

async fn query(archive: &ArchiveRoot, format: OutputFormat, sql: Option<&str>, rules: Option<PathBuf>, access: &AccessArgs) -> Result<()> {
    let role = access.role()?;
    let ctx = seedwatch_archive::open_session_for(archive, &role.visibility).await?;
    // The `suppressed` view needs the rules' exceptions. Rules that do not load only
    // cost the view when nobody asked for them by name.
    let given = rules.is_some();
    let dir = default_rules(rules);
    match seedwatch_detect::load_rules(&dir) {
        Ok(rules) => {
            run_query(&ctx, &seedwatch_detect::exception::suppressed_view_sql(&rules)).await?;
        }
        Err(e) if given => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "rules did not load: no `suppressed` view"),
    }
    let Some(sql) = sql else {
        seedwatch::shell::run(&ctx, format).await?;
        return Ok(());
    };
    let batches = seedwatch_archive::run_user_query(&ctx, sql).await?;
    println!("{}", format_batches(&batches, format)?);
    Ok(())
}

fn main() -> ExitCode {
    let argv = match configured_argv() {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    init_logging(&cli);
    match execute(cli) {
        Ok(code) => code,
        Err(e) if archive_disk_full(&e) => {
            eprintln!("error: the archive's disk is full ({e:#}); nothing after the last commit was kept: free space and run the same command again (what is archived is skipped, the rest is read again)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The command line with the configuration file's and the SEEDWATCH_* variables' settings
/// added as the flags they stand for (see `seedwatch::config`).
fn configured_argv() -> Result<Vec<std::ffi::OsString>> {
    use clap::CommandFactory;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let Ok(probe) = command.clone().ignore_errors(true).try_get_matches_from(&argv) else { return Ok(argv) };
    if probe.subcommand_name() == Some("config") {
        // `config check` reads the file itself and reports every error, not the first.
        return Ok(argv);
    }
    let config = seedwatch::config::Config::load(probe.get_one::<PathBuf>("config").map(PathBuf::as_path))?;
    Ok(config.apply_parsed(&command, argv, &probe)?)
}

/// `seedwatch config check`: every error, or the effective configuration.
fn config_check(file: Option<&Path>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let config = match seedwatch::config::Config::load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let command = Cli::command();
    let errors = config.check(&command);
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !errors.is_empty() {
        return Ok(ExitCode::from(1));
    }
    print!("{}", config.render(&command));
    Ok(ExitCode::SUCCESS)
}

/// Whether `e` is the archive's disk filling up, however it was wrapped.
fn archive_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match (c.downcast_ref::<seedwatch_archive::ArchiveError>(), c.downcast_ref::<seedwatch_runtime::RuntimeError>()) {
        (Some(a), _) | (_, Some(seedwatch_runtime::RuntimeError::Archive(a))) => a.is_disk_full(),
        _ => false,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn execute(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config { command: ConfigCommand::Check { file } } => return config_check(file.as_deref().or(cli.config.as_deref())),
        Command::Generate { out, shape } => {
            let truth = generate(&out, &GenerateOptions { days: shape.days, locations: shape.locations, seed: shape.seed, start: shape.start })?;
            println!(
                "wrote {} events ({} incidents, {} look-alikes, {} bad lines) to {}",
                thousands(truth.events),
                truth.incidents.len(),
                truth.lookalikes.len(),
                truth.bad_lines,
                out.display()
            );
        }
        Command::Run { input, common, truth } => {
            let metrics = common.metrics.serve()?;
            let hold = common.hold;
            let opts = run_options(input, common);
            let report = run(&opts)?;
            print_summary(&report, &opts.archive);
            if let Some(truth) = truth {
                print_score(&truth, &report, &opts.rules)?;
            }
            if let (true, Some(url)) = (hold, metrics) {
                use std::io::Write;
                println!("holding: serving {url} until interrupted");
                std::io::stdout().flush()?;
                loop {
                    std::thread::park();
                }
            }
        }
        Command::Export { command: ExportCommand::Ocsf { archive, table, from, to, out, access } } => {
            let role = access.role()?;
            role.require(seedwatch::access::Permission::Export, "export from the archive")?;
            let mut writer: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let exported = runtime()?.block_on(seedwatch::ocsf::export(&archive, table, from, to, &mut writer, &role.visibility))?;
            let (class_uid, class) = table.class();
            let skipped: Vec<String> = exported.skipped.iter().map(|(why, n)| format!("{n} left out: {why}")).collect();
            let skipped = if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join("; ")) };
            eprintln!("exported {} records as OCSF {} {class} ({class_uid}){skipped}", thousands(exported.records), seedwatch::ocsf::OCSF_VERSION);
        }
        Command::Query { archive, format, sql, rules, access } => runtime()?.block_on(query(&archive, format, sql.as_deref(), rules, &access))?,
        Command::Report(args) => runtime()?.block_on(report(args))?,
        Command::Findings { command } => {
            let (status, args) = match command {
                FindingsCommand::Ack(a) => (seedwatch_schemas::Status::Acknowledged, a),
                FindingsCommand::Resolve(a) => (seedwatch_schemas::Status::Resolved, a),
                FindingsCommand::FalsePositive(a) => (seedwatch_schemas::Status::FalsePositive, a),
            };
            let role = args.access.role()?;
            role.require(seedwatch::access::Permission::Triage, "change a finding's status")?;
            let by = args.by.or_else(|| std::env::var("USER").ok()).unwrap_or_default();
            let change = seedwatch::findings::StatusChange { finding_id: args.id, status, note: args.note, by };
            let changed = runtime()?.block_on(seedwatch::findings::change_status(&args.archive, &change, chrono::Utc::now().timestamp_millis(), &archive_admin::signing_key_path(args.signing_key), &role.visibility))?;
            if let Some(mut alertmanager) = args.alerts.client() {
                alertmanager.post(std::slice::from_ref(&changed.row))?;
            }
            let (row, by) = (&changed.row, &change.by);
            if changed.written {
                println!("finding {} ({}) version {}: {} -> {status} by {by}", row.finding_id, row.rule, row.version, changed.was);
            } else {
                println!("finding {} ({}) version {}: already {status} by {by} with this note; nothing written", row.finding_id, row.rule, row.version);
            }
        }
        Command::Demo { dir, shape, rules } => {
            let data = dir.join("data");
            let archive = dir.join("archive");
            println!("generating {} days of logs for {} locations into {} ...", shape.days, shape.locations, data.display());
            generate(&data, &GenerateOptions { days: shape.days, locations: shape.locations, seed: shape.seed, start: shape.start })?;
            let rule_set = RuleSetArgs { rules, locations: Some(data.join("locations.csv")), roster: Some(data.join("roster.csv")) };
            let args = RunArgs { archive: ArchiveRoot::from(&archive), rule_set, fingerprint_key: Some(dir.join("fingerprint.key")), signing_key: Some(dir.join("archive-signing.pem")), allowed_lateness: seedwatch_detect::engine::DEFAULT_ALLOWED_LATENESS_MS, max_clock_skew: seedwatch::pipeline::DEFAULT_MAX_CLOCK_SKEW_MS, partitions: 0, quiet: false, metrics: MetricsArgs::default(), hold: false, alerts: AlertmanagerArgs::none() };
            let opts = run_options(vec![data.join("events.ndjson")], args);
            let report = run(&opts)?;
            print_summary(&report, &ArchiveRoot::from(&archive));
            print_findings(&report.findings);
            print_score(&data.join("truth.json"), &report, &opts.rules)?;
            println!();
            println!("try: cargo run --release -- query --archive {} \"SELECT rule, severity, count(*) AS n FROM findings GROUP BY rule, severity ORDER BY n DESC\"", archive.display());
        }
        Command::Collect {
            command: CollectCommand::Http { listen, tokens, locations, max_body_bytes, max_inflate_ratio, max_lines_per_request, max_dead_letters_per_request, request_timeout, tls_cert, tls_key, tls_client_ca, metrics, kafka, fingerprint_key },
        } => {
            let limits = seedwatch::intake::RequestLimits {
                max_body_bytes,
                max_inflate_ratio: max_inflate_ratio.max(1),
                max_lines: max_lines_per_request,
                max_dead_letters: max_dead_letters_per_request,
                deadline: std::time::Duration::from_millis(request_timeout.max(1) as u64),
            };
            let tenancy = match &locations {
                Some(path) => {
                    let known = seedwatch_detect::reference::load_locations(path)?;
                    Some(std::sync::Arc::new(seedwatch_ingest::Tenancy::new(known.values().map(|l| (l.row.location.as_str(), l.row.license.as_str(), l.row.state.as_str())))))
                }
                None => None,
            };
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(seedwatch::tls::TlsFiles { cert, key, client_ca: tls_client_ca }),
                _ => None,
            };
            metrics.serve()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let opts = seedwatch::intake::IntakeOptions { listen, tokens, limits, kafka: kafka.config()?, fingerprint_key: default_key(fingerprint_key), tenancy, tls };
            let stop = seedwatch::detect_daemon::stop_on_signal()?;
            seedwatch::intake::serve(&opts, stop, |addr| eprintln!("intake: listening on {scheme}://{addr}/v1/events"))?;
        }
        Command::Collect { command } => {
            let (inputs, kafka, fingerprint_key, follow, checkpoint, format) = match command {
                CollectCommand::File { input, follow, checkpoint, format, metrics, kafka, fingerprint_key } => {
                    metrics.serve()?;
                    (input, kafka, fingerprint_key, follow, checkpoint, format)
                }
                CollectCommand::Stdin { format, kafka, fingerprint_key } => (vec![PathBuf::from("-")], kafka, fingerprint_key, false, None, format),
                CollectCommand::Http { .. } => unreachable!("handled above"),
            };
            let stop = if follow { seedwatch::detect_daemon::stop_on_signal()? } else { Default::default() };
            let nginx = format.mapping()?;
            let opts = seedwatch::collect::CollectOptions { inputs, kafka: kafka.config()?, fingerprint_key: default_key(fingerprint_key), checkpoint, follow, stop, nginx };
            let report = seedwatch::collect::collect(&opts)?;
            let d = &report.decode;
            println!(
                "collected {} lines in {:.2} s: {} events and {} dead letters produced to {} (acknowledged: {})",
                thousands(d.lines),
                report.seconds,
                thousands(d.events_total()),
                thousands(d.dead_total()),
                opts.kafka.brokers,
                thousands(report.produced)
            );
        }
        Command::Archive { command: ArchiveCommand::Verify { archive, public_keys, signing_key, from, to, head, quiet } } => {
            let signing_key = archive_admin::signing_key_path(signing_key);
            let report = archive_admin::verify(&archive_admin::VerifyRequest { archive, public_keys, signing_key, from, to, head, progress: !quiet })?;
            for problem in &report.problems {
                println!("{problem}");
            }
            let checked = format!("{} manifest entries, {} files ({:.1} MB) re-hashed", report.entries, thousands(report.files), report.bytes as f64 / 1e6);
            if !report.problems.is_empty() {
                println!("verify: {} problem(s); {checked}", report.problems.len());
                return Ok(ExitCode::from(1));
            }
            println!("verify: no problems; {checked}");
        }
        Command::Archive { command: ArchiveCommand::Prune { archive, dry_run, as_of, rules, signing_key, access } } => {
            access.role()?.require(seedwatch::access::Permission::Maintain, "prune the archive")?;
            let policy = default_rules(rules).join("policy.yaml");
            let request = archive_admin::PruneRequest { archive, policy: policy.clone(), as_of, dry_run, signing_key: archive_admin::signing_key_path(signing_key) };
            let plan = runtime()?.block_on(archive_admin::prune(&request))?;
            let periods: Vec<String> = plan.cutoffs.iter().map(|(table, period, cutoff)| match cutoff {
                Some(first) => format!("{} {period} (from {first})", table.name()),
                None => format!("{} {period}", table.name()),
            }).collect();
            println!("retention ({}): {}", policy.display(), periods.join(", "));
            let verb = if dry_run { "would remove" } else { "removed" };
            for day in &plan.remove {
                println!("{verb} {} {}: {} file(s), {} rows, {:.1} kB", day.table.name(), day.label(), day.files.len(), thousands(day.rows), day.bytes as f64 / 1e3);
            }
            for day in &plan.kept_for_findings {
                println!("kept {} {}: past retention, holds a kept finding or its evidence", day.table.name(), day.label());
            }
            for day in &plan.kept_with_their_month {
                println!("kept {} {}: a compacted month's file with days not yet past retention (it goes whole, with its last day)", day.table.name(), day.label());
            }
            let (files, rows, bytes) = plan.remove.iter().fold((0, 0, 0), |(f, r, b), d| (f + d.files.len(), r + d.rows, b + d.bytes));
            println!(
                "prune: {verb} {} day(s) ({files} files, {} rows, {:.1} MB); kept {} day(s) past retention for findings",
                plan.remove.iter().map(|d| d.days()).sum::<usize>(),
                thousands(rows),
                bytes as f64 / 1e6,
                plan.kept_for_findings.iter().map(|d| d.days()).sum::<usize>()
            );
        }
        Command::Archive { command: ArchiveCommand::Compact { archive, tables, before, signing_key, access } } => {
            access.role()?.require(seedwatch::access::Permission::Maintain, "compact the archive")?;
            if !archive.exists()? {
                anyhow::bail!("--archive {archive}: no archive there");
            }
            let tables = tables
                .iter()
                .map(|name| seedwatch_schemas::Table::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| anyhow::anyhow!("--table {name}: no such table (login, api, sync, audit, findings, dead_letter)")))
                .collect::<Result<Vec<_>>>()?;
            let before = before
                .map(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").with_context(|| format!("--before {d}: not a date (YYYY-MM-DD)")))
                .transpose()?;
            let signer = std::sync::Arc::new(seedwatch_archive::manifest::ManifestSigner::load_or_create(&archive_admin::signing_key_path(signing_key))?);
            let options = seedwatch_archive::compact::CompactOptions { tables, before, ..Default::default() };
            let days = seedwatch_archive::compact::compact(&archive, &options, signer)?;
            let per_event = |bytes: u64, rows: u64| if rows == 0 { 0.0 } else { bytes as f64 / rows as f64 };
            for d in &days {
                println!(
                    "compacted {} {}: {} rows, {} file(s) {:.1} kB -> {} file(s) {:.1} kB ({:.1} -> {:.1} bytes/event)",
                    d.table.name(), d.date, thousands(d.rows), d.files_before, d.bytes_before as f64 / 1e3, d.files_after, d.bytes_after as f64 / 1e3,
                    per_event(d.bytes_before, d.rows), per_event(d.bytes_after, d.rows)
                );
            }
            for table in seedwatch_schemas::Table::ALL {
                let of: Vec<_> = days.iter().filter(|d| d.table == table).collect();
                if of.is_empty() {
                    continue;
                }
                let (rows, before, after) = of.iter().fold((0, 0, 0), |(r, b, a), d| (r + d.rows, b + d.bytes_before, a + d.bytes_after));
                let (files_before, files_after) = of.iter().fold((0, 0), |(b, a), d| (b + d.files_before, a + d.files_after));
                println!(
                    "compact {}: {} day(s), {} rows, {files_before} -> {files_after} files, {:.1} -> {:.1} MB, {:.1} -> {:.1} bytes/event",
                    table.name(), of.iter().map(|d| d.days).sum::<usize>(), thousands(rows), before as f64 / 1e6, after as f64 / 1e6, per_event(before, rows), per_event(after, rows)
                );
            }
            if days.is_empty() {
                println!("compact: nothing to do (every day before the cutoff is compacted already: a file of its own, or its month's)");
            }
        }
        Command::Archive { command: ArchiveCommand::Migrate { archive, signing_key, access } } => {
            access.role()?.require(seedwatch::access::Permission::Maintain, "migrate the archive")?;
            if !archive.exists()? {
                anyhow::bail!("--archive {archive}: no archive there");
            }
            // An archive with a manifest is signed with a key of its own: never a new one here.
            let signer = if runtime()?.block_on(archive.any_under(seedwatch_archive::manifest::MANIFEST_DIR))? {
                Some(std::sync::Arc::new(seedwatch_archive::manifest::ManifestSigner::load(&archive_admin::signing_key_path(signing_key))?))
            } else {
                None
            };
            let migrated = runtime()?.block_on(seedwatch_archive::delta::migrate(&archive, signer))?;
            for m in &migrated {
                println!(
                    "migrated {}: {} file(s) ({} rewritten with their date), {} rows in the files, {} rows read through the table",
                    m.table.name(), m.files, m.rewritten, thousands(m.rows_in_files), thousands(m.rows_in_table)
                );
            }
            if migrated.is_empty() {
                println!("migrate: nothing to do (every table of {archive} is in the current layout, or has no files)");
            } else {
                println!("migrate: {} table(s) converted, row counts equal", migrated.len());
            }
        }
        Command::Archive { command: ArchiveCommand::Head { archive } } => println!("{}", archive_admin::head(&archive)?),
        Command::Keys { command: KeysCommand::Init { fingerprint_key, signing_key } } => {
            let fingerprint_key = default_key(fingerprint_key);
            if fingerprint_key.exists() {
                seedwatch_ingest::Fingerprinter::load(&fingerprint_key)?;
                println!("fingerprint secret: {} exists, kept", fingerprint_key.display());
            } else {
                seedwatch_ingest::Fingerprinter::create(&fingerprint_key)?;
                println!("fingerprint secret: created {} (0600); copy it to every collector and detector host", fingerprint_key.display());
            }
            let signing_key = archive_admin::signing_key_path(signing_key);
            let existed = signing_key.exists();
            seedwatch_archive::manifest::ManifestSigner::load_or_create(&signing_key)?;
            let verb = if existed { "exists, kept" } else { "created (0600)" };
            println!("archive signing key: {} {verb}; `seedwatch archive public-key` prints its public half for auditors", signing_key.display());
        }
        Command::Archive { command: ArchiveCommand::PublicKey { signing_key } } => print!("{}", archive_admin::public_key(&archive_admin::signing_key_path(signing_key))?),
        Command::Detect(args) => {
            args.metrics.serve()?;
            let RuleSetArgs { rules, locations, roster } = args.rule_set;
            let ms = |v: i64| std::time::Duration::from_millis(v.max(0) as u64);
            let opts = seedwatch::detect_daemon::DetectOptions {
                kafka: args.kafka.config()?,
                group: args.group,
                instance_id: args.instance_id,
                archive: args.archive,
                rules: default_rules(rules),
                locations,
                roster,
                fingerprint_key: default_key(args.fingerprint_key),
                signing_key: archive_admin::signing_key_path(args.signing_key),
                allowed_lateness_ms: args.allowed_lateness,
                commit_interval: ms(args.commit_interval),
                idle_after: ms(args.idle_after),
                max_buffered_rows: args.max_buffered_rows,
                partitions: args.partitions,
                progress: !args.quiet,
                alertmanager: args.alerts.client(),
            };
            let stop = seedwatch::detect_daemon::stop_on_signal()?;
            let report = seedwatch::detect_daemon::detect(&opts, stop)?;
            println!(
                "detect stopped after {:.0} s: {} events archived, {} findings published, {} rebalances, {} offset commits",
                report.seconds,
                thousands(report.events),
                thousands(report.findings),
                report.rebalances,
                report.commits
            );
        }
        Command::Topics { command: TopicsCommand::Create { kafka, partitions } } => {
            let config = kafka.config()?;
            for (topic, created) in seedwatch::collect::create_topics(&config, partitions)? {
                println!("{} {topic}", if created { "created" } else { "exists " });
            }
        }
        Command::Rules { command: RulesCommand::Check { rules } } => {
            let dir = default_rules(rules);
            let rules = seedwatch_detect::load_rules(&dir)?;
            for r in &rules {
                println!("ok  {:<26} {:<9} {:<8} {}", r.id, format!("{:?}", r.rule_type).to_lowercase(), r.severity.as_str(), r.file.display());
            }
            println!("{} rules in {} are valid", rules.len(), dir.display());
            print_exceptions(&rules, chrono::Utc::now().timestamp_millis());
        }
        Command::Rules { command: RulesCommand::Backfill { archive, from, to, only, rule_set, dry_run, quiet, signing_key, access } } => {
            access.role()?.require(seedwatch::access::Permission::Maintain, "backfill rules into the archive")?;
            let RuleSetArgs { rules, locations, roster } = rule_set;
            let opts = seedwatch::backfill::BackfillOptions { archive, rules: default_rules(rules), only, locations, roster, from, to, dry_run, progress: !quiet, signing_key: archive_admin::signing_key_path(signing_key) };
            let report = seedwatch::backfill::backfill(&opts)?;
            let day = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
            println!(
                "backfill {} .. {} UTC: {} events in {:.2} s (state before the range rebuilt from {} archived rows)",
                day(from),
                day(to),
                thousands(report.events),
                report.seconds,
                thousands(report.warmup_rows)
            );
            println!("{:<26}  {:>8}  {:>8}", "RULE", "FINDINGS", "NEW");
            for (rule, n) in &report.per_rule {
                println!("{rule:<26}  {:>8}  {:>8}", n.findings, n.new);
            }
            for (rule, why) in &report.skipped_rules {
                println!("skipped rule: {rule} {why}");
            }
            let new = report.new_findings.len();
            if opts.dry_run {
                if new > 0 {
                    print_findings(&report.new_findings);
                }
                println!("dry run: {new} new finding(s), nothing written");
            } else {
                println!("wrote {new} new finding(s) to {} ({} file(s))", opts.archive.display(), report.commit.files);
            }
        }
        Command::Rules { command: RulesCommand::Test { rules } } => {
            let dir = default_rules(rules);
            let results = seedwatch::rule_fixtures::test_rules(&dir)?;
            let failed = results.iter().filter(|r| !r.problems.is_empty()).count();
            for r in &results {
                let status = if r.problems.is_empty() { "ok  " } else { "FAIL" };
                println!("{status} {:<26} positive: {} finding(s), negative: {}", r.rule, r.positive, r.negative);
                for p in &r.problems {
                    println!("     {p}");
                }
            }
            println!("rules test: {} of {} rules pass their fixtures", results.len() - failed, results.len());
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
