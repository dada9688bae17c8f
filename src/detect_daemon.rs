//! `seedwatch detect --brokers …`: the detector as a member of a Kafka
//! consumer group, configured on the runtime's one driver.
//!
//! - source: [`KafkaSource`](crate::kafka_source::KafkaSource), each topic
//!   partition an input, partition `p` of the family topics one scope (the
//!   `range` assignor hands partition `p` of every topic to one member, and
//!   collectors key every event by license);
//! - tasks: one per owned partition, rebuilt from the archive when assigned
//!   (the archive narrowed to the partition's licenses with the
//!   `seedwatch_partition(license)` SQL function) while the new partitions are
//!   paused and the member keeps polling;
//! - sink: the archive; new findings are also produced to the findings topic.
//!
//! Offsets are committed after an archive commit (every `commit_interval`, and
//! at shutdown), and only up to the oldest row still held for ordering. A
//! crash or a lost partition therefore replays at most the uncommitted tail;
//! the archive drops rows it already holds, so the archive (events and
//! findings) gets everything exactly once. On a rebalance all uncommitted work
//! is dropped and every task is rebuilt from the archive, which is what the new
//! owner of a partition does too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{ArrayRef, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use seedwatch_detect::reference::Reference;
use seedwatch_detect::RuleEngine;
use seedwatch_ingest::{Decoder, Fingerprinter, Redactor};
use seedwatch_kafka::{partition_for, GroupConsumer, KafkaConfig, Message, Producer, Topic};
use seedwatch_runtime::{BoxError, Driver, DriverOptions};
use seedwatch_archive::WriterOptions;
use seedwatch_schemas::Finding;

use crate::internal_events::{PartitionsAssigned, RulesLoaded};
use crate::kafka_source::KafkaSource;
use crate::pipeline;

/// What `seedwatch detect` needs.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// The cluster.
    pub kafka: KafkaConfig,
    /// Consumer group id.
    pub group: String,
    /// Static group membership id (`group.instance.id`), stable across restarts.
    pub instance_id: Option<String>,
    /// Archive root (shared by the group's members).
    pub archive: seedwatch_archive::ArchiveRoot,
    /// Rules directory.
    pub rules: PathBuf,
    /// Optional locations.csv.
    pub locations: Option<PathBuf>,
    /// Optional roster.csv.
    pub roster: Option<PathBuf>,
    /// File holding the local fingerprint secret (`seedwatch keys init`; never created here).
    pub fingerprint_key: PathBuf,
    /// File holding the key that signs the archive's manifest (created if missing).
    pub signing_key: PathBuf,
    /// How far behind a task's newest event an event may arrive and still be evaluated (ms).
    pub allowed_lateness_ms: i64,
    /// Archive commit (then offset commit) interval.
    pub commit_interval: Duration,
    /// A task that has read everything and heard nothing new for this long
    /// publishes the findings it holds open.
    pub idle_after: Duration,
    /// Rows held back for ordering, over all tasks, before they are released regardless.
    pub max_buffered_rows: usize,
    /// Partitions for topics created at start-up.
    pub partitions: i32,
    /// Print a status line to stderr every few seconds.
    pub progress: bool,
    /// Where finding versions are posted as alerts, if anywhere.
    pub alertmanager: Option<crate::alertmanager::Alertmanager>,
}

/// What a detector did until it was stopped.
#[derive(Debug, Default)]
pub struct DetectReport {
    /// Events archived (new rows).
    pub events: u64,
    /// Findings published (new in the archive).
    pub findings: u64,
    /// Rebalances seen.
    pub rebalances: u64,
    /// Offset commits.
    pub commits: u64,
    /// Rows released before their task's other topics caught up (buffer full).
    pub forced_releases: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Run until SIGINT/SIGTERM (or `stop` is set).
pub fn detect(opts: &DetectOptions, stop: Arc<AtomicBool>) -> Result<DetectReport> {
    let started = Instant::now();
    crate::internal_events::ReadinessExpected { checks: &["rules", "kafka", "archive"] }.emit();
    let redactor = Redactor::new(Fingerprinter::load(&opts.fingerprint_key)?);
    let rules = seedwatch_detect::load_rules(&opts.rules)?;
    let reference = Arc::new(Reference::load(&opts.rules, opts.locations.as_deref(), opts.roster.as_deref())?);
    // Checked once here, so a bad rule set fails before joining the group.
    let probe = RuleEngine::with_reference(rules.clone(), Arc::clone(&reference))?;
    for (rule, why) in probe.skipped() {
        tracing::warn!(rule = %rule, reason = why, "rule skipped");
    }
    let licenses = reference.licenses();
    let rule_ids: Vec<&str> = probe.rules().map(|r| r.id.as_str()).collect();
    RulesLoaded { absence_limits: &probe.absence_limits(seedwatch_schemas::STATE_CODES), rules: &rule_ids, licenses: &licenses }.emit();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let created = runtime.block_on(seedwatch_kafka::create_topics(&opts.kafka, opts.partitions)).with_context(|| format!("reaching Kafka at {}", opts.kafka.brokers))?;
    for (topic, _) in created.iter().filter(|(_, new)| *new) {
        tracing::info!(topic = %topic, partitions = opts.partitions, "topic created");
    }
    let producer = Producer::new(&opts.kafka)?;
    let consumer = GroupConsumer::new(&opts.kafka, &opts.group, opts.instance_id.as_deref())?;
    // Its claims of the group's partitions fence a member evicted from the group.
    let options = WriterOptions { consumer_group: opts.group.clone(), ..crate::archive_admin::writer_options(&opts.signing_key)? };
    let sink = crate::archive_admin::open_writer_with(opts.archive.clone(), options)?;
    crate::internal_events::ComponentReady { check: "archive" }.emit();
    let offset_commits = Arc::new(AtomicU64::new(0));
    let decoder = match pipeline::tenancy(&reference) {
        Some(tenancy) => Decoder::new(redactor).with_tenancy(tenancy),
        None => Decoder::new(redactor),
    };
    let source = KafkaSource::new(consumer, opts.kafka.clone(), decoder, Arc::clone(&stop), Arc::clone(&offset_commits));

    // A new assignment: each partition's engine restored from the archived events of its licenses.
    let (archive, lateness) = (opts.archive.clone(), opts.allowed_lateness_ms);
    let slow_warm_up = warm_up_delay_for_tests();
    let rebuild = move |partitions: &[u32], count: u32| -> Result<Vec<RuleEngine>, BoxError> {
        if !partitions.is_empty() {
            std::thread::sleep(slow_warm_up);
        }
        let mut engines = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let t = Instant::now();
            let mut engine = RuleEngine::with_reference(rules.clone(), Arc::clone(&reference))?.with_allowed_lateness(lateness);
            let resumed = warm_up(&mut engine, &archive, partition as i32, count as i32)?;
            tracing::info!(partition, rows = resumed.map_or(0, |r| r.rows), seconds = t.elapsed().as_secs_f64(), "partition assigned, state restored from the archive");
            engines.push(engine);
        }
        let owned: Vec<i32> = partitions.iter().map(|p| *p as i32).collect();
        PartitionsAssigned { owned: &owned, partition_count: count as i32 }.emit();
        Ok(engines)
    };
    let mut alertmanager = opts.alertmanager.clone();
    let publish = move |findings: &[Finding]| -> Result<(), BoxError> {
        let payloads: Vec<(&str, String)> = findings.iter().map(|f| Ok((f.license.as_str(), serde_json::to_string(f)?))).collect::<Result<_, serde_json::Error>>()?;
        let messages = payloads.iter().map(|(key, payload)| Message { topic: Topic::Findings, key: key.as_bytes(), payload: payload.as_bytes() });
        runtime.block_on(producer.send_all(messages))?;
        if let Some(alertmanager) = &mut alertmanager {
            alertmanager.post_or_count(findings);
        }
        Ok(())
    };

    let options = DriverOptions {
        commit_every: opts.commit_interval,
        progress: opts.progress,
        max_held_rows: opts.max_buffered_rows,
        idle_after: Some(opts.idle_after),
        // Open findings stay open across a stop: the restart rebuilds them from the archive.
        flush_at_end: false,
        keep_findings: false,
        // A stop ends a pause for disk space (the restart reads the rest again).
        stop: Some(stop),
    };
    let driver = Driver::new(sink, Vec::new(), options)?.with_rebuild(Box::new(rebuild)).with_publisher(Box::new(publish));
    let (report, _sink) = driver.run(source)?;
    Ok(DetectReport {
        events: report.events,
        findings: report.new_findings,
        rebalances: report.rebalances,
        commits: offset_commits.load(Ordering::Relaxed),
        forced_releases: report.forced_releases,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `seedwatch_partition(license)`: the partition the collectors' producer put a license in.
pub fn partition_udf(partitions: i32) -> ScalarUDF {
    let f = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let licenses = arrays.first().ok_or_else(|| datafusion::error::DataFusionError::Plan("seedwatch_partition takes one argument".into()))?.as_string::<i32>();
        let out: Int32Array = licenses.iter().map(|l| Some(partition_for(l.unwrap_or("").as_bytes(), partitions))).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    };
    create_udf("seedwatch_partition", vec![DataType::Utf8], DataType::Int32, Volatility::Immutable, Arc::new(f))
}

/// Fault injection for tests: `SEEDWATCH_FAULT_WARM_UP_DELAY_MS` makes every warm-up
/// that long, to show a warm-up longer than `max.poll.interval.ms` evicts nobody.
fn warm_up_delay_for_tests() -> Duration {
    let delay = std::env::var("SEEDWATCH_FAULT_WARM_UP_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    if delay > 0 {
        tracing::warn!(delay_ms = delay, "SEEDWATCH_FAULT_WARM_UP_DELAY_MS is set: every warm-up is slowed down (a test hook)");
    }
    Duration::from_millis(delay)
}

/// Rebuild a task's engine from the archived events of its licenses.
fn warm_up(engine: &mut RuleEngine, archive: &seedwatch_archive::ArchiveRoot, partition: i32, partitions: i32) -> Result<Option<pipeline::Resumed>> {
    if !archive.exists()? {
        return Ok(None);
    }
    pipeline::block_on(async {
        let ctx = seedwatch_archive::open_session(archive).await?;
        ctx.register_udf(partition_udf(partitions));
        seedwatch_archive::query::restrict_events(&ctx, &format!("seedwatch_partition(license) = {partition}")).await?;
        pipeline::resume_from_session(engine, &ctx, None, pipeline::Judge::OnNextBatch).await
    })
    .with_context(|| format!("restoring partition {partition} from the archive"))
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("seedwatch-signals".into()).spawn(move || {
        runtime.block_on(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    flag.store(true, Ordering::Relaxed);
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: committing what was archived");
            flag.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(stop)
}
