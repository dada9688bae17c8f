//! Internal events: everything seedwatch observes about itself, in one place.
//!
//! Each event is a struct whose `emit()` both logs (key/value `tracing`) and
//! updates Prometheus metrics. Events are emitted per batch, never per event,
//! and labels are bounded: family, table, reason code, rule id, severity.

use std::sync::LazyLock;

use prometheus::{register_histogram_vec_with_registry, register_int_counter_vec_with_registry, HistogramVec, IntCounterVec, Registry};
use seedwatch_archive::CommitStats;
use seedwatch_detect::DetectStats;
use seedwatch_ingest::DecodeStats;
use seedwatch_schemas::dead_letter::ReasonCode;
use seedwatch_schemas::{Family, Finding};

/// The registry every seedwatch metric lives in.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::new_custom(Some("seedwatch".into()), None).unwrap_or_default());

struct Metrics {
    events_in: IntCounterVec,
    dead_letters: IntCounterVec,
    bytes_in: IntCounterVec,
    redacted: IntCounterVec,
    rows_matched: IntCounterVec,
    late_events: IntCounterVec,
    findings: IntCounterVec,
    archive_rows: IntCounterVec,
    archive_files: IntCounterVec,
    archive_bytes: IntCounterVec,
    duplicates: IntCounterVec,
    batch_seconds: HistogramVec,
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    let r = &*REGISTRY;
    let counter = |name: &str, help: &str, labels: &[&str]| register_int_counter_vec_with_registry!(name, help, labels, r).ok();
    Some(Metrics {
        events_in: counter("events_in_total", "Lines read, by family and outcome (decoded, dead_lettered).", &["family", "outcome"])?,
        dead_letters: counter("dead_letters_total", "Lines dead-lettered, by reason code.", &["reason"])?,
        bytes_in: counter("bytes_in_total", "Bytes of input read, by source kind.", &["source"])?,
        redacted: counter("redacted_lines_total", "Lines in which a raw credential was replaced by a fingerprint.", &["source"])?,
        rows_matched: counter("detect_rows_matched_total", "Rows that passed a rule filter, by family.", &["family"])?,
        late_events: counter("late_events_total", "Events beyond the allowed lateness (archived, not evaluated), by family.", &["family"])?,
        findings: counter("findings_total", "Findings emitted, by rule, severity and state.", &["rule", "severity", "state"])?,
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
            m.events_in.with_label_values(&[family.as_str(), "decoded"]).inc_by(s.events[family.index()]);
        }
        for (code, n) in ReasonCode::ALL.iter().zip(s.dead) {
            if n > 0 {
                m.dead_letters.with_label_values(&[code.as_str()]).inc_by(n);
                m.events_in.with_label_values(&["unknown", "dead_lettered"]).inc_by(n);
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
        }
        m.batch_seconds.with_label_values(&["detect"]).observe(self.seconds);
    }
}

/// Findings left the detector.
#[derive(Debug)]
pub struct FindingsEmitted<'a> {
    /// The findings.
    pub findings: &'a [Finding],
}

impl FindingsEmitted<'_> {
    /// Log each (findings are few) and count.
    pub fn emit(&self) {
        let m = METRICS.as_ref();
        for f in self.findings {
            tracing::info!(rule = %f.rule, severity = %f.severity, state = %f.state, license = %f.license, subject = %f.subject, events = f.event_count, "finding");
            if let Some(m) = m {
                m.findings.with_label_values(&[&f.rule, f.severity.as_str(), &f.state]).inc();
            }
        }
    }
}

/// Rows were handed to the archive.
#[derive(Debug)]
pub struct ArchiveWritten {
    /// Table name.
    pub table: &'static str,
    /// Rows skipped as duplicates.
    pub duplicates: u64,
}

impl ArchiveWritten {
    /// Count duplicates (rows are counted when committed).
    pub fn emit(&self) {
        if self.duplicates > 0 {
            tracing::debug!(table = self.table, duplicates = self.duplicates, "duplicates skipped");
            if let Some(m) = METRICS.as_ref() {
                m.duplicates.with_label_values(&[self.table]).inc_by(self.duplicates);
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
    }
}
