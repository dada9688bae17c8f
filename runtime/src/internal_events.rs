//! Internal events: everything seedwatch observes about itself, in one place.
//!
//! Each event is a struct whose `emit()` both logs (key/value `tracing`) and
//! updates Prometheus metrics. Events are emitted per batch, never per event.
//! Labels are bounded: family, source kind, outcome, table, reason code, rule
//! id, severity, state, system, and the operator's own licenses and API key ids
//! (tens to hundreds); never a user, an IP address or a raw credential.
//! README "Metrics" lists every series with its labels.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use foldhash::{HashMap, HashMapExt};
use prometheus::{
    register_gauge_vec_with_registry, register_histogram_vec_with_registry, register_int_counter_vec_with_registry, register_int_gauge_vec_with_registry, GaugeVec, HistogramVec,
    IntCounterVec, IntGaugeVec, Registry,
};
use seedwatch_schemas::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use seedwatch_schemas::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use seedwatch_archive::CommitStats;
use seedwatch_detect::DetectStats;
use seedwatch_ingest::DecodeStats;
use seedwatch_schemas::dead_letter::ReasonCode;
use seedwatch_schemas::{Family, Finding, Table};

/// The registry every seedwatch metric lives in.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::new_custom(Some("seedwatch".into()), None).unwrap_or_default());

struct Metrics {
    events_in: IntCounterVec,
    batch_events: HistogramVec,
    last_batch: GaugeVec,
    watermark: GaugeVec,
    last_commit: GaugeVec,
    open_findings: IntGaugeVec,
    failed_logins: IntCounterVec,
    failed_api_calls: IntCounterVec,
    api_records: IntCounterVec,
    last_sync: GaugeVec,
    sync_lag: GaugeVec,
    absence_limit: GaugeVec,
    dead_letters: IntCounterVec,
    bytes_in: IntCounterVec,
    redacted: IntCounterVec,
    rows_matched: IntCounterVec,
    late_events: IntCounterVec,
    suppressed: IntCounterVec,
    state_evicted: IntCounterVec,
    findings: IntCounterVec,
    archive_rows: IntCounterVec,
    archive_files: IntCounterVec,
    archive_bytes: IntCounterVec,
    duplicates: IntCounterVec,
    batch_seconds: HistogramVec,
    kafka_partitions: IntGaugeVec,
    kafka_rebalances: IntCounterVec,
    kafka_commits: IntCounterVec,
    kafka_lag: IntGaugeVec,
    kafka_commit_failures: IntCounterVec,
    archive_write_failures: IntCounterVec,
    archive_paused: IntGaugeVec,
    kafka_watermark_failures: IntCounterVec,
    kafka_start_corrections: IntCounterVec,
    forced_releases: IntCounterVec,
    commits_fenced: IntCounterVec,
    alerts_not_posted: IntCounterVec,
    tls_reloads: IntCounterVec,
    http_refused: IntCounterVec,
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    let r = &*REGISTRY;
    let counter = |name: &str, help: &str, labels: &[&str]| register_int_counter_vec_with_registry!(name, help, labels, r).ok();
    Some(Metrics {
        events_in: counter("events_in_total", "Events read, by family, source kind and outcome (decoded, dead_lettered, duplicate, late).", &["family", "source", "outcome"])?,
        batch_events: register_histogram_vec_with_registry!(
            "batch_events",
            "Events per batch handed to the detectors, by family.",
            &["family"],
            vec![1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
            r
        )
        .ok()?,
        last_batch: register_gauge_vec_with_registry!("last_batch_timestamp_seconds", "Wall-clock time the last batch was processed.", &[], r).ok()?,
        watermark: register_gauge_vec_with_registry!("watermark_timestamp_seconds", "Newest event time seen (the event-time watermark absences are judged against).", &[], r).ok()?,
        last_commit: register_gauge_vec_with_registry!("archive_last_commit_timestamp_seconds", "Wall-clock time of the last successful archive commit.", &[], r).ok()?,
        open_findings: register_int_gauge_vec_with_registry!("open_findings", "Findings open now (inside suppression, or a silence not yet ended), by rule and severity.", &["rule", "severity"], r).ok()?,
        failed_logins: counter("failed_logins_total", "Failed logins, by state and license.", &["state", "license"])?,
        failed_api_calls: counter("failed_api_calls_total", "API calls answered 4xx/5xx, by state, license and system.", &["state", "license", "system"])?,
        api_records: counter("api_records_total", "Records moved through the tracking API, by license and key id (a fingerprint when a raw key was sent).", &["license", "key_id"])?,
        last_sync: register_gauge_vec_with_registry!("last_successful_sync_timestamp_seconds", "Event time of the last successful sync, by state and license.", &["state", "license"], r).ok()?,
        sync_lag: register_gauge_vec_with_registry!("sync_lag_seconds", "Seconds since the last successful sync at the watermark, by state and license (000 2.5.1 escalates on it).", &["state", "license"], r).ok()?,
        absence_limit: register_gauge_vec_with_registry!("absence_limit_seconds", "Silence each absence rule tolerates, by rule and state (from rules/policy.yaml).", &["rule", "state"], r).ok()?,
        dead_letters: counter("dead_letters_total", "Lines dead-lettered, by reason code.", &["reason"])?,
        bytes_in: counter("bytes_in_total", "Bytes of input read, by source kind.", &["source"])?,
        redacted: counter("redacted_lines_total", "Lines in which a raw credential was replaced by a fingerprint.", &["source"])?,
        rows_matched: counter("detect_rows_matched_total", "Rows that passed a rule filter, by family.", &["family"])?,
        late_events: counter("late_events_total", "Events beyond the allowed lateness (archived, not evaluated), by family.", &["family"])?,
        suppressed: counter("suppressed_total", "Rows that passed a rule's filter and were dropped by an exception (exceptions.yaml, or except: on the rule), by rule and exception.", &["rule", "exception"])?,
        state_evicted: counter("detector_state_evicted_total", "Keys and values a rule forgot because its state was at a limit (limits: in rules/policy.yaml), by rule; a seedwatch.state_limit finding reports it once a day.", &["rule"])?,
        findings: counter("findings_total", "Findings opened or raised to a severity (escalations count again at their new severity), by rule, severity, state and license.", &["rule", "severity", "state", "license"])?,
        archive_rows: counter("archive_rows_total", "Rows written to the archive, by table.", &["table"])?,
        archive_files: counter("archive_files_total", "Parquet files written.", &[])?,
        archive_bytes: counter("archive_bytes_total", "Parquet bytes written.", &[])?,
        duplicates: counter("duplicates_total", "Rows skipped because the archive already held their id, by table.", &["table"])?,
        batch_seconds: register_histogram_vec_with_registry!(
            "stage_batch_seconds",
            "Time spent per batch, by stage (decode, detect, archive).",
            &["stage"],
            vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            r
        )
        .ok()?,
        kafka_partitions: register_int_gauge_vec_with_registry!("kafka_partitions_assigned", "Partition numbers (tasks) this detector owns in its consumer group.", &[], r).ok()?,
        kafka_rebalances: counter("kafka_rebalances_total", "Consumer-group rebalances this detector went through.", &[])?,
        kafka_commits: counter("kafka_offset_commits_total", "Offset commits, each after an archive commit.", &[])?,
        archive_write_failures: counter(
            "archive_write_failures_total",
            "Archive writes or commits that failed, by reason: disk_full (the pipeline pauses, see archive_paused, and carries on when there is space) or other (it stops; nothing past the last commit is acknowledged, so the next start reads it again).",
            &["reason"]
        )?,
        archive_paused: register_int_gauge_vec_with_registry!("archive_paused", "1 while the archive's disk is full: reading has stopped, nothing held is lost, and the pipeline carries on by itself when there is space.", &[], r).ok()?,
        kafka_commit_failures: counter("kafka_offset_commit_failures_total", "Offset commits that failed (a rebalance in progress, the broker away); the rows stay archived and are skipped when re-read.", &[])?,
        kafka_watermark_failures: counter("kafka_watermark_check_failures_total", "High-watermark reads that failed; the task holds its rows for ordering until the broker answers.", &[])?,
        kafka_start_corrections: counter("kafka_start_offset_corrections_total", "Seeks back when the first message of a partition after an assignment came from past its committed offset (or none came); see tansu 0.6 in ARCHITECTURE.md.", &[])?,
        forced_releases: counter("ordering_forced_releases_total", "Times a task released rows before its other topics caught up, because the ordering buffer was full.", &[])?,
        commits_fenced: counter("archive_commits_fenced_total", "Archive commits refused because another member of the consumer group had claimed a partition this one held (it was evicted, or a rebalance overtook the commit); its uncommitted rows are left to the new owner.", &[])?,
        alerts_not_posted: counter("alertmanager_post_failures_total", "Finding versions that could not be posted to Alertmanager (they are archived; findings_latest has them).", &[])?,
        tls_reloads: counter("tls_certificate_reloads_total", "Times a listener's TLS certificate files changed and were read again, by outcome (ok, or failed: the previous certificate is still served).", &["outcome"])?,
        http_refused: counter(
            "http_requests_refused_total",
            "Connections to an HTTP listener (intake, metrics) refused before a request was read: tls_handshake (plain HTTP to a TLS port, no or an untrusted client certificate) or unauthorized (no or a wrong bearer token on /metrics).",
            &["listener", "reason"]
        )?,
        kafka_lag: register_int_gauge_vec_with_registry!("kafka_consumer_lag", "Messages not yet committed by this detector, by topic and partition.", &["topic", "partition"], r).ok()?,
    })
});

/// A chunk of lines was decoded.
#[derive(Debug)]
pub struct ChunkDecoded<'a> {
    /// `file` or `stdin` (bounded: never the path).
    pub source_kind: &'static str,
    /// Counts.
    pub stats: &'a DecodeStats,
    /// Seconds spent.
    pub seconds: f64,
}

impl ChunkDecoded<'_> {
    /// Log and count.
    pub fn emit(&self) {
        let s = self.stats;
        tracing::debug!(source = self.source_kind, lines = s.lines, events = s.events_total(), dead_letters = s.dead_total(), "chunk decoded");
        let Some(m) = METRICS.as_ref() else { return };
        for family in Family::ALL {
            m.events_in.with_label_values(&[family.as_str(), self.source_kind, "decoded"]).inc_by(s.events[family.index()]);
        }
        for (code, n) in ReasonCode::ALL.iter().zip(s.dead) {
            if n > 0 {
                m.dead_letters.with_label_values(&[code.as_str()]).inc_by(n);
                m.events_in.with_label_values(&["unknown", self.source_kind, "dead_lettered"]).inc_by(n);
            }
        }
        m.bytes_in.with_label_values(&[self.source_kind]).inc_by(s.bytes);
        m.redacted.with_label_values(&[self.source_kind]).inc_by(s.redacted);
        m.batch_seconds.with_label_values(&["decode"]).observe(self.seconds);
    }
}

/// A batch went through the detectors.
#[derive(Debug)]
pub struct BatchDetected<'a> {
    /// The batch's family.
    pub family: Family,
    /// `file` or `stdin`.
    pub source_kind: &'static str,
    /// Rows handed to the detectors.
    pub rows: usize,
    /// Counts.
    pub stats: &'a DetectStats,
    /// Seconds spent.
    pub seconds: f64,
}

impl BatchDetected<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::trace!(family = self.family.as_str(), matched = self.stats.rows_matched, opened = self.stats.findings_opened, "batch detected");
        let Some(m) = METRICS.as_ref() else { return };
        m.rows_matched.with_label_values(&[self.family.as_str()]).inc_by(self.stats.rows_matched);
        if self.stats.late_events > 0 {
            tracing::debug!(family = self.family.as_str(), late = self.stats.late_events, "late events not evaluated");
            m.late_events.with_label_values(&[self.family.as_str()]).inc_by(self.stats.late_events);
            m.events_in.with_label_values(&[self.family.as_str(), self.source_kind, "late"]).inc_by(self.stats.late_events);
        }
        for s in &self.stats.suppressed {
            // Both labels come from the rule configuration, so they are bounded.
            m.suppressed.with_label_values(&[&*s.rule, &*s.exception]).inc_by(s.rows);
        }
        for e in &self.stats.evicted {
            tracing::warn!(rule = &*e.rule, entries = e.entries, "a rule's state is at its limit: the entries idle longest were forgotten");
            m.state_evicted.with_label_values(&[&*e.rule]).inc_by(e.entries);
        }
        m.batch_events.with_label_values(&[self.family.as_str()]).observe(self.rows as f64);
        m.batch_seconds.with_label_values(&["detect"]).observe(self.seconds);
        m.last_batch.with_label_values::<&str>(&[]).set(wall_clock_seconds());
    }
}

/// Findings left the detector.
#[derive(Debug)]
pub struct FindingsEmitted<'a> {
    /// The findings.
    pub findings: &'a [Finding],
}

impl FindingsEmitted<'_> {
    /// Log each version (findings are few); count the versions that opened a finding or
    /// raised its severity, so an escalation to critical is a new critical finding to alerting.
    pub fn emit(&self) {
        let m = METRICS.as_ref();
        for f in self.findings {
            tracing::info!(rule = %f.rule, severity = %f.severity, status = %f.status, version = f.version, state = %f.state, license = %f.license, subject = %f.subject, events = f.event_count, "finding");
            if let (Some(m), true) = (m, f.raised) {
                let Ok(mut labels) = LABELS.lock() else { continue };
                m.findings.with_label_values(&[&f.rule, f.severity.as_str(), &f.state, labels.license(&f.license)]).inc();
            }
        }
    }
}

/// Rows were handed to the archive.
#[derive(Debug)]
pub struct ArchiveWritten {
    /// Table.
    pub table: Table,
    /// `file` or `stdin`.
    pub source_kind: &'static str,
    /// Rows skipped as duplicates.
    pub duplicates: u64,
}

impl ArchiveWritten {
    /// Count duplicates (rows are counted when committed).
    pub fn emit(&self) {
        if self.duplicates > 0 {
            tracing::debug!(table = self.table.name(), duplicates = self.duplicates, "duplicates skipped");
            if let Some(m) = METRICS.as_ref() {
                m.duplicates.with_label_values(&[self.table.name()]).inc_by(self.duplicates);
                if let Table::Events(family) = self.table {
                    m.events_in.with_label_values(&[family.as_str(), self.source_kind, "duplicate"]).inc_by(self.duplicates);
                }
            }
        }
    }
}

/// The archive made rows durable.
#[derive(Debug)]
pub struct ArchiveCommitted<'a> {
    /// What was written.
    pub stats: &'a CommitStats,
    /// Seconds spent.
    pub seconds: f64,
}

impl ArchiveCommitted<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::info!(files = self.stats.files, bytes = self.stats.bytes, "archive committed");
        let Some(m) = METRICS.as_ref() else { return };
        for (table, rows) in &self.stats.rows {
            m.archive_rows.with_label_values(&[table]).inc_by(*rows);
        }
        m.archive_files.with_label_values::<&str>(&[]).inc_by(self.stats.files);
        m.archive_bytes.with_label_values::<&str>(&[]).inc_by(self.stats.bytes);
        m.batch_seconds.with_label_values(&["archive"]).observe(self.seconds);
        m.last_commit.with_label_values::<&str>(&[]).set(wall_clock_seconds());
    }
}

fn wall_clock_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// What a metric label shows for a license or key id it may not carry (see [`LabelBudget`]).
pub const OTHER_LABEL: &str = "other";
/// Distinct licenses, and key ids, that label series when no locations.csv names them.
pub const MAX_LABEL_VALUES: usize = 1_000;

/// Label values a sender chooses (licenses, key ids), held to a bounded set: every value is a
/// time series Prometheus keeps, and a sender making up licenses would otherwise grow them
/// without end. With locations.csv given, only its licenses are labels; without it, the first
/// [`MAX_LABEL_VALUES`] seen. Key ids label only under such a license, up to the same count.
/// The rest are counted under [`OTHER_LABEL`].
#[derive(Debug, Default)]
struct LabelBudget {
    configured: Option<std::collections::HashSet<String>>,
    licenses: std::collections::HashSet<String>,
    keys: std::collections::HashSet<String>,
}

impl LabelBudget {
    fn license<'a>(&mut self, license: &'a str) -> &'a str {
        match &self.configured {
            Some(known) if known.contains(license) => license,
            Some(_) => OTHER_LABEL,
            None => admit(&mut self.licenses, license),
        }
    }

    fn key<'a>(&mut self, license_label: &str, key: &'a str) -> &'a str {
        if license_label == OTHER_LABEL { OTHER_LABEL } else { admit(&mut self.keys, key) }
    }
}

fn admit<'a>(seen: &mut std::collections::HashSet<String>, value: &'a str) -> &'a str {
    if seen.contains(value) {
        value
    } else if seen.len() < MAX_LABEL_VALUES {
        seen.insert(value.to_string());
        value
    } else {
        OTHER_LABEL
    }
}

static LABELS: LazyLock<Mutex<LabelBudget>> = LazyLock::new(|| Mutex::new(LabelBudget::default()));

/// Last successful sync per (state, license), in event time: the sync-lag gauges derive from it.
static LAST_SYNC: LazyLock<Mutex<BTreeMap<(String, String), i64>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// New events entered the detectors: the security signals Prometheus alerts on,
/// counted per batch over its columns (failed logins, failed API calls, API
/// records, last successful sync per license).
#[derive(Debug)]
pub struct EventsObserved<'a> {
    /// The batch's family.
    pub family: Family,
    /// The new rows (duplicates already dropped).
    pub batch: &'a RecordBatch,
}

impl EventsObserved<'_> {
    /// Count.
    pub fn emit(&self) {
        let Some(m) = METRICS.as_ref() else { return };
        let b = self.batch;
        let col = |name: &str| b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
        let (Some(state), Some(license)) = (col("state"), col("license")) else { return };
        fn text(c: &StringArray, i: usize) -> &str {
            if c.is_null(i) { "" } else { c.value(i) }
        }
        let Ok(mut labels) = LABELS.lock() else { return };
        let mut license_label = |i: usize| labels.license(text(license, i));
        match self.family {
            Family::Login => {
                let Some(outcome) = col("outcome") else { return };
                let mut failed: HashMap<(&str, &str), u64> = HashMap::new();
                for i in (0..b.num_rows()).filter(|i| outcome.value(*i) == "failure") {
                    *failed.entry((text(state, i), license_label(i))).or_default() += 1;
                }
                for ((s, l), n) in failed {
                    m.failed_logins.with_label_values(&[s, l]).inc_by(n);
                }
            }
            Family::Api => {
                let (Some(system), Some(key)) = (col("system"), col("key_id")) else { return };
                let status = b.column_by_name("status").and_then(|c| c.as_primitive_opt::<Int64Type>());
                let records = b.column_by_name("records").and_then(|c| c.as_primitive_opt::<Int64Type>());
                let mut failed: HashMap<(&str, &str, &str), u64> = HashMap::new();
                let mut moved: HashMap<(&str, &str), u64> = HashMap::new();
                for i in 0..b.num_rows() {
                    let l = labels.license(text(license, i));
                    if status.is_some_and(|s| !s.is_null(i) && s.value(i) >= 400) {
                        *failed.entry((text(state, i), l, text(system, i))).or_default() += 1;
                    }
                    if let Some(r) = records.filter(|r| !r.is_null(i)) {
                        *moved.entry((l, labels.key(l, text(key, i)))).or_default() += r.value(i).max(0) as u64;
                    }
                }
                for ((s, l, y), n) in failed {
                    m.failed_api_calls.with_label_values(&[s, l, y]).inc_by(n);
                }
                for ((l, k), n) in moved {
                    m.api_records.with_label_values(&[l, k]).inc_by(n);
                }
            }
            Family::Sync => {
                let Some(outcome) = col("outcome") else { return };
                let Some(time) = b.column_by_name("time").and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()) else { return };
                let mut newest: HashMap<(&str, &str), i64> = HashMap::new();
                for i in (0..b.num_rows()).filter(|i| outcome.value(*i) == "success") {
                    let t = newest.entry((text(state, i), license_label(i))).or_insert(i64::MIN);
                    *t = (*t).max(time.value(i));
                }
                let Ok(mut last) = LAST_SYNC.lock() else { return };
                for ((s, l), t) in newest {
                    let entry = last.entry((s.to_string(), l.to_string())).or_insert(t);
                    *entry = (*entry).max(t);
                }
                for ((s, l), t) in last.iter() {
                    m.last_sync.with_label_values(&[s, l]).set(*t as f64 / 1000.0);
                }
            }
            Family::Audit => {}
        }
    }
}

/// Event time moved forward: sync lag per license is judged against it, as sync.lag is.
#[derive(Debug)]
pub struct WatermarkAdvanced {
    /// The newest event time (ms).
    pub watermark: i64,
}

impl WatermarkAdvanced {
    /// Set the watermark and the sync-lag gauges.
    pub fn emit(&self) {
        let Some(m) = METRICS.as_ref() else { return };
        m.watermark.with_label_values::<&str>(&[]).set(self.watermark as f64 / 1000.0);
        let Ok(last) = LAST_SYNC.lock() else { return };
        for ((s, l), t) in last.iter() {
            m.sync_lag.with_label_values(&[s, l]).set((self.watermark - t).max(0) as f64 / 1000.0);
        }
    }
}

/// A snapshot of the detectors' open findings (every rule and severity, zeros included).
#[derive(Debug)]
pub struct OpenFindings<'a> {
    /// (rule, severity, count).
    pub open: &'a [(&'a str, seedwatch_schemas::Severity, u64)],
}

impl OpenFindings<'_> {
    /// Set the gauges.
    pub fn emit(&self) {
        let Some(m) = METRICS.as_ref() else { return };
        for (rule, severity, n) in self.open {
            m.open_findings.with_label_values(&[rule, severity.as_str()]).set(*n as i64);
        }
    }
}

/// The rules were loaded: publish the limits alerts compare against.
#[derive(Debug)]
pub struct RulesLoaded<'a> {
    /// (absence rule, state, limit ms).
    pub absence_limits: &'a [(&'a str, &'a str, i64)],
    /// The ids of the rules loaded.
    pub rules: &'a [&'a str],
    /// The licenses of locations.csv, the only ones metric labels name; empty without it.
    pub licenses: &'a [&'a str],
}

impl RulesLoaded<'_> {
    /// Log and set the gauges.
    pub fn emit(&self) {
        tracing::info!(rules = self.rules.len(), "rules loaded");
        set_ready("rules", Ok(()));
        if let Ok(mut labels) = LABELS.lock() {
            labels.configured = (!self.licenses.is_empty()).then(|| self.licenses.iter().map(|l| l.to_string()).collect());
        }
        let Some(m) = METRICS.as_ref() else { return };
        // At zero from the start, so that alerting's increase() sees the first one.
        for rule in self.rules {
            let _ = m.state_evicted.with_label_values(&[*rule]);
        }
        for reason in ["disk_full", "other"] {
            let _ = m.archive_write_failures.with_label_values(&[reason]);
        }
        m.archive_paused.with_label_values::<&str>(&[]).set(0);
        for (rule, state, ms) in self.absence_limits {
            m.absence_limit.with_label_values(&[rule, state]).set(*ms as f64 / 1000.0);
        }
    }
}

/// The consumer group gave this detector a new set of partitions.
#[derive(Debug)]
pub struct PartitionsAssigned<'a> {
    /// Partition numbers (tasks) now owned.
    pub owned: &'a [i32],
    /// Partitions per topic (to tell which licenses the owned ones hold).
    pub partition_count: i32,
}

impl PartitionsAssigned<'_> {
    /// Count the rebalance, set the gauge, and drop the per-license and per-partition series
    /// this member no longer owns: a revoked license's sync lag would otherwise grow here
    /// forever and fire the sync-lag alert while its new owner reports it healthy.
    pub fn emit(&self) {
        tracing::info!(partitions = self.owned.len(), "consumer group rebalanced");
        set_ready("kafka", Ok(()));
        let Some(m) = METRICS.as_ref() else { return };
        m.kafka_rebalances.with_label_values::<&str>(&[]).inc();
        m.kafka_partitions.with_label_values::<&str>(&[]).set(self.owned.len() as i64);
        m.kafka_lag.reset();
        let Ok(mut last) = LAST_SYNC.lock() else { return };
        last.retain(|(state, license), _| {
            let owned = self.owned.contains(&seedwatch_schemas::partition::partition_for(license.as_bytes(), self.partition_count));
            if !owned {
                let _ = m.last_sync.remove_label_values(&[state, license]);
                let _ = m.sync_lag.remove_label_values(&[state, license]);
            }
            owned
        });
    }
}

/// Writing the archive failed and the pipeline stops: what it held past the last commit is
/// not acknowledged to the source, and the next start reads it again.
#[derive(Debug)]
pub struct ArchiveWriteFailed<'a> {
    /// Why.
    pub error: &'a seedwatch_archive::ArchiveError,
}

impl ArchiveWriteFailed<'_> {
    /// Log one line and count.
    pub fn emit(&self) {
        let reason = if self.error.is_disk_full() { "disk_full" } else { "other" };
        tracing::error!(reason, error = %self.error, "archive write failed: stopped; nothing after the last commit was acknowledged and the next start reads it again");
        let Some(m) = METRICS.as_ref() else { return };
        m.archive_write_failures.with_label_values(&[reason]).inc();
    }
}

/// The archive's disk is full: the pipeline stops reading, keeps what it holds, and tries
/// again until there is space (see `Driver`).
#[derive(Debug)]
pub struct ArchivePaused<'a> {
    /// The write that found the disk full.
    pub error: &'a seedwatch_archive::ArchiveError,
}

impl ArchivePaused<'_> {
    /// Log one line, count, and raise the gauge.
    pub fn emit(&self) {
        tracing::error!(error = %self.error, "the archive's disk is full: paused, reading has stopped and nothing is lost; it carries on by itself when there is space");
        set_ready("archive", Err("the archive's disk is full: paused".into()));
        let Some(m) = METRICS.as_ref() else { return };
        m.archive_write_failures.with_label_values(&["disk_full"]).inc();
        m.archive_paused.with_label_values::<&str>(&[]).set(1);
    }
}

/// There is space again: the write that paused went through.
#[derive(Debug)]
pub struct ArchiveResumed {
    /// Seconds paused.
    pub seconds: f64,
}

impl ArchiveResumed {
    /// Log and lower the gauge.
    pub fn emit(&self) {
        tracing::warn!(paused_seconds = self.seconds, "the archive has space again: resumed");
        set_ready("archive", Ok(()));
        let Some(m) = METRICS.as_ref() else { return };
        m.archive_paused.with_label_values::<&str>(&[]).set(0);
    }
}

/// What a daemon's `/readyz` waits for: each named check, pending until an event settles it
/// (`rules` when the rules load, `kafka` at the first partition assignment, `archive` once
/// the archive is open and while its disk is not full, `listening` once the intake listens).
static READINESS: LazyLock<Mutex<BTreeMap<&'static str, Result<(), String>>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn set_ready(check: &'static str, state: Result<(), String>) {
    if let Ok(mut checks) = READINESS.lock() {
        if let Some(slot) = checks.get_mut(check) {
            *slot = state;
        }
    }
}

/// A daemon starts: it is ready once each of `checks` is.
#[derive(Debug)]
pub struct ReadinessExpected<'a> {
    /// The checks, pending from now.
    pub checks: &'a [&'static str],
}

impl ReadinessExpected<'_> {
    /// Register the checks as pending.
    pub fn emit(&self) {
        if let Ok(mut checks) = READINESS.lock() {
            for check in self.checks {
                checks.entry(check).or_insert_with(|| Err("not yet".into()));
            }
        }
    }
}

/// One readiness check settled outside the events above (the archive opened, the intake listens).
#[derive(Debug)]
pub struct ComponentReady {
    /// The check.
    pub check: &'static str,
}

impl ComponentReady {
    /// Mark it ready.
    pub fn emit(&self) {
        set_ready(self.check, Ok(()));
    }
}

/// One readiness check lost or not yet reached, with why (the intake's broker stopped answering).
#[derive(Debug)]
pub struct ComponentNotReady {
    /// The check.
    pub check: &'static str,
    /// Why, shown by `/readyz`.
    pub why: String,
}

impl ComponentNotReady {
    /// Mark it not ready.
    pub fn emit(self) {
        set_ready(self.check, Err(self.why));
    }
}

/// `Ok` when every expected check is ready, else each one that is not, with why.
pub fn readiness() -> Result<(), Vec<(&'static str, String)>> {
    let checks = READINESS.lock().map_err(|_| vec![("readiness", "poisoned".to_string())])?;
    let waiting: Vec<(&'static str, String)> = checks.iter().filter_map(|(check, state)| state.as_ref().err().map(|why| (*check, why.clone()))).collect();
    if waiting.is_empty() { Ok(()) } else { Err(waiting) }
}

/// A listener's TLS certificate files changed and were read again.
#[derive(Debug)]
pub struct TlsCertificateReloaded<'a> {
    /// The certificate file.
    pub cert: &'a std::path::Path,
}

impl TlsCertificateReloaded<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::info!(cert = %self.cert.display(), "TLS certificate changed: serving the new one");
        let Some(m) = METRICS.as_ref() else { return };
        m.tls_reloads.with_label_values(&["ok"]).inc();
    }
}

/// A listener's TLS certificate files changed but could not be used; the old pair is served.
#[derive(Debug)]
pub struct TlsReloadFailed<'a> {
    /// The certificate file.
    pub cert: &'a std::path::Path,
    /// Why.
    pub error: &'a (dyn std::error::Error + 'static),
}

impl TlsReloadFailed<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::error!(cert = %self.cert.display(), error = %ErrorChain(self.error), "TLS certificate changed but cannot be used; still serving the previous one");
        let Some(m) = METRICS.as_ref() else { return };
        m.tls_reloads.with_label_values(&["failed"]).inc();
    }
}

/// A connection to an HTTP listener was refused before its request was read.
#[derive(Debug)]
pub struct HttpRequestRefused<'a> {
    /// `intake` or `metrics`.
    pub listener: &'static str,
    /// `tls_handshake` or `unauthorized`.
    pub reason: &'static str,
    /// The peer, for the log line.
    pub peer: Option<std::net::SocketAddr>,
    /// The detail, for the log line.
    pub detail: &'a str,
}

impl HttpRequestRefused<'_> {
    /// Log and count.
    pub fn emit(&self) {
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::warn!(listener = self.listener, reason = self.reason, peer = %peer, detail = %self.detail, "refused a connection");
        let Some(m) = METRICS.as_ref() else { return };
        m.http_refused.with_label_values(&[self.listener, self.reason]).inc();
    }
}

/// An offset commit failed; the archive holds the rows, so a re-read skips them.
#[derive(Debug)]
pub struct OffsetCommitFailed<'a> {
    /// Why.
    pub error: &'a dyn std::error::Error,
}

impl OffsetCommitFailed<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "offset commit failed; the rows are archived and will be skipped when re-read");
        let Some(m) = METRICS.as_ref() else { return };
        m.kafka_commit_failures.with_label_values::<&str>(&[]).inc();
    }
}

/// A high watermark could not be read: the task holds its rows until the broker answers.
#[derive(Debug)]
pub struct WatermarkCheckFailed<'a> {
    /// The task's partition number.
    pub partition: i32,
    /// The topic's family.
    pub family: Family,
    /// Why.
    pub error: &'a dyn std::error::Error,
}

impl WatermarkCheckFailed<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, partition = self.partition, family = self.family.as_str(), "cannot read the high watermark; holding rows for ordering");
        let Some(m) = METRICS.as_ref() else { return };
        m.kafka_watermark_failures.with_label_values::<&str>(&[]).inc();
    }
}

/// The first message of a partition after an assignment came from past its start (committed
/// offset, or the oldest kept), or none came though there are more: the consumer seeks back,
/// or those messages would be skipped.
#[derive(Debug)]
pub struct StartOffsetCorrected<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Where reading should have started.
    pub expected: i64,
    /// The offset that came first (or the high watermark, when nothing came).
    pub got: i64,
    /// Where the consumer was sent.
    pub sought: i64,
}

impl StartOffsetCorrected<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::warn!(topic = self.topic, partition = self.partition, expected = self.expected, got = self.got, sought = self.sought, "the consumer resumed past its start offset; seeking back");
        let Some(m) = METRICS.as_ref() else { return };
        m.kafka_start_corrections.with_label_values::<&str>(&[]).inc();
    }
}

/// Finding versions could not be posted to Alertmanager. They are archived all the same (the
/// archive is the record), so the run goes on; the error is logged and counted.
#[derive(Debug)]
pub struct AlertsNotPosted<'a> {
    /// Alerts in the failed post.
    pub alerts: usize,
    /// Why.
    pub error: &'a dyn std::error::Error,
}

impl AlertsNotPosted<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::error!(alerts = self.alerts, error = %ErrorChain(self.error), "alerts not posted to Alertmanager");
        let Some(m) = METRICS.as_ref() else { return };
        m.alerts_not_posted.with_label_values::<&str>(&[]).inc_by(self.alerts as u64);
    }
}

/// An error and its sources, `: `-separated.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A task's ordering buffer was full: rows were released before its other topics caught up.
#[derive(Debug)]
pub struct OrderingReleaseForced {
    /// The task's partition number.
    pub partition: i32,
    /// Rows held when it happened.
    pub rows: usize,
}

impl OrderingReleaseForced {
    /// Log and count.
    pub fn emit(&self) {
        tracing::warn!(partition = self.partition, rows = self.rows, "ordering buffer full: releasing rows before every topic caught up");
        let Some(m) = METRICS.as_ref() else { return };
        m.forced_releases.with_label_values::<&str>(&[]).inc();
    }
}

/// An archive commit was refused: another member claimed a partition this one held.
#[derive(Debug)]
pub struct CommitFenced<'a> {
    /// The refusal, naming the partition and the claim.
    pub error: &'a seedwatch_archive::ArchiveError,
}

impl CommitFenced<'_> {
    /// Log and count.
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "archive commit refused; waiting for the new assignment");
        let Some(m) = METRICS.as_ref() else { return };
        m.commits_fenced.with_label_values::<&str>(&[]).inc();
    }
}

/// Offsets were committed after the archive commit that covers them.
#[derive(Debug)]
pub struct OffsetsCommitted {
    /// Topic partitions committed.
    pub partitions: usize,
}

impl OffsetsCommitted {
    /// Count it.
    pub fn emit(&self) {
        tracing::debug!(partitions = self.partitions, "offsets committed");
        let Some(m) = METRICS.as_ref() else { return };
        m.kafka_commits.with_label_values::<&str>(&[]).inc();
    }
}

/// Consumer lag, measured against the partitions' high watermarks.
#[derive(Debug)]
pub struct ConsumerLag<'a> {
    /// (topic, partition, messages behind).
    pub lags: &'a [(String, i32, i64)],
}

impl ConsumerLag<'_> {
    /// Set the gauges (a partition that moved to another member keeps its last value here).
    pub fn emit(&self) {
        let Some(m) = METRICS.as_ref() else { return };
        for (topic, partition, lag) in self.lags {
            m.kafka_lag.with_label_values(&[topic.as_str(), partition.to_string().as_str()]).set(*lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedwatch_schemas::arrow::array::{StringArray, TimestampMillisecondArray};
    use seedwatch_schemas::partition::partition_for;
    use seedwatch_schemas::Severity;
    use std::sync::Arc;

    fn series(name: &str) -> Vec<String> {
        REGISTRY
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_label().iter().map(|l| l.value().to_string()).collect::<Vec<_>>().join(",")).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn findings_total_counts_a_finding_once_per_severity_it_reaches() {
        let license = "LIFECYCLE-TEST-1";
        let version = |v: i64, severity: Severity, raised: bool| Finding {
            finding_id: "f1".into(),
            version: v,
            rule: "sync.lag".into(),
            title: "t".into(),
            severity,
            status: seedwatch_schemas::Status::Open,
            family: Family::Sync,
            system: "metrc".into(),
            state: "CA".into(),
            license: license.into(),
            location: "oakland".into(),
            subject: "flowhub".into(),
            actor: None,
            window_start: 0,
            window_end: 1,
            event_count: 1,
            evidence: vec![],
            detected_at: 0,
            updated_at: 0,
            note: None,
            changed_by: None,
            details: "{}".into(),
            raised,
        };
        // Opened medium, grew, then escalated to critical: the escalation is a critical finding
        // to `increase(seedwatch_findings_total{severity="critical"}[15m]) > 0`.
        let versions = [version(1, Severity::Medium, true), version(2, Severity::Medium, false), version(3, Severity::Critical, true)];
        FindingsEmitted { findings: &versions }.emit();
        let count = |severity: &str| -> f64 {
            REGISTRY
                .gather()
                .iter()
                .filter(|f| f.name() == "seedwatch_findings_total")
                .flat_map(|f| f.get_metric().iter())
                .filter(|m| m.get_label().iter().any(|l| l.value() == license) && m.get_label().iter().any(|l| l.name() == "severity" && l.value() == severity))
                .map(|m| m.get_counter().get_value())
                .sum()
        };
        assert_eq!((count("medium"), count("critical")), (1.0, 1.0));
    }

    #[test]
    fn a_rebalance_drops_the_sync_series_of_licenses_no_longer_owned() {
        let (kept, moved) = ("CA-R-0001", "abc");
        let (p_kept, p_moved) = (partition_for(kept.as_bytes(), 4), partition_for(moved.as_bytes(), 4));
        assert_ne!(p_kept, p_moved);
        // Only the columns the event reads.
        use seedwatch_schemas::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", seedwatch_schemas::arrow_schema::timestamp_type(), false),
            Field::new("state", DataType::Utf8, false),
            Field::new("license", DataType::Utf8, false),
            Field::new("outcome", DataType::Utf8, false),
        ]));
        let columns: Vec<seedwatch_schemas::arrow::array::ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["CA", "CA"])),
            Arc::new(StringArray::from(vec![kept, moved])),
            Arc::new(StringArray::from(vec!["success", "success"])),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap_or_else(|e| panic!("{e}"));
        EventsObserved { family: Family::Sync, batch: &batch }.emit();
        WatermarkAdvanced { watermark: 10_000 }.emit();
        let lag = series("seedwatch_sync_lag_seconds");
        assert!(lag.iter().any(|s| s.contains(moved)) && lag.iter().any(|s| s.contains(kept)), "{lag:?}");
        PartitionsAssigned { owned: &[p_kept], partition_count: 4 }.emit();
        WatermarkAdvanced { watermark: 20_000 }.emit();
        for name in ["seedwatch_sync_lag_seconds", "seedwatch_last_successful_sync_timestamp_seconds"] {
            let left = series(name);
            assert!(left.iter().all(|s| !s.contains(moved)), "{name}: {left:?}");
            assert!(left.iter().any(|s| s.contains(kept)), "{name}: {left:?}");
        }
    }

    #[test]
    fn license_and_key_labels_are_bounded() {
        // Configured: only locations.csv's licenses, and keys only under them.
        let mut labels = LabelBudget { configured: Some(["402R-00001".to_string()].into_iter().collect()), ..LabelBudget::default() };
        assert_eq!(labels.license("402R-00001"), "402R-00001");
        assert_eq!(labels.license("made-up"), OTHER_LABEL);
        assert_eq!(labels.key("402R-00001", "k1"), "k1");
        assert_eq!(labels.key(OTHER_LABEL, "k2"), OTHER_LABEL);
        // Not configured: the first MAX_LABEL_VALUES seen, then one bucket.
        let mut labels = LabelBudget::default();
        let shown: std::collections::HashSet<String> = (0..MAX_LABEL_VALUES + 500).map(|i| labels.license(&format!("L{i}")).to_string()).collect();
        assert_eq!(shown.len(), MAX_LABEL_VALUES + 1, "the first {MAX_LABEL_VALUES} and `other`");
        assert!(shown.contains(OTHER_LABEL));
        assert_eq!(labels.license("L7"), "L7", "a license already labelled keeps its series");
    }
}
