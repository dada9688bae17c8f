//! Tasks: one `RuleEngine` per owned partition, each on its own thread.
//!
//! The driver hands a release's rows and watermark to the tasks of the
//! release's scope (every task for rows routed by license, one task for a
//! Kafka partition's rows), then waits for them: findings must be written
//! before the sink may write out the events they cite. Every task of a scope
//! hears every watermark of that scope, with or without rows, so silence is
//! judged at the same moments whatever the number of partitions.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use seedwatch_detect::{DetectError, DetectStats, Detector, RuleEngine};
use seedwatch_schemas::{EventBatch, Family, Finding, Severity};

use crate::RuntimeError;

/// What a task is asked to do.
#[derive(Debug)]
pub enum Work {
    /// Evaluate these batches (in order), then advance to the watermark.
    Release {
        /// Rows of the task's licenses, one batch per family.
        batches: Vec<EventBatch>,
        /// The release's watermark, when it moved.
        advance: Option<i64>,
    },
    /// Report the open findings.
    Report,
    /// Publish what changed in the findings held open (see `RuleEngine::publish_open`).
    Snapshot,
    /// Close every open finding (the input ended).
    Flush,
}

/// What one task did with one piece of work.
#[derive(Debug, Default)]
pub struct Done {
    /// The task's partition.
    pub partition: u32,
    /// Findings closed (or snapshotted).
    pub findings: Vec<Finding>,
    /// Per batch: family, rows, counts, seconds.
    pub batches: Vec<(Family, usize, DetectStats, f64)>,
    /// Open findings per rule and severity.
    pub open: Vec<(String, Severity, u64)>,
    /// Absence findings withdrawn so far (see `RuleEngine::retracted_silences`).
    pub retracted_silences: u64,
}

#[derive(Debug)]
struct Worker {
    partition: u32,
    work: Option<SyncSender<Work>>,
    done: Receiver<Result<Done, DetectError>>,
    thread: Option<JoinHandle<()>>,
}

/// The tasks of the partitions this driver owns.
#[derive(Debug)]
pub struct Tasks {
    /// Sorted by partition.
    workers: Vec<Worker>,
    /// Partitions of the whole key space (what murmur2 routes over).
    count: u32,
}

impl Tasks {
    /// One task per `(partition, engine)`, out of `count` partitions.
    pub fn spawn(mut engines: Vec<(u32, RuleEngine)>, count: u32) -> Result<Self, RuntimeError> {
        engines.sort_by_key(|(p, _)| *p);
        let mut workers = Vec::with_capacity(engines.len());
        for (partition, engine) in engines {
            let (work_tx, work_rx) = sync_channel::<Work>(1);
            let (done_tx, done_rx) = sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("seedwatch-task-{partition}"))
                .spawn(move || run_task(partition, engine, work_rx, done_tx))
                .map_err(|source| RuntimeError::Spawn { what: "task", source })?;
            workers.push(Worker { partition, work: Some(work_tx), done: done_rx, thread: Some(thread) });
        }
        Ok(Self { workers, count: count.max(1) })
    }

    /// Partitions of the key space.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The partitions owned, in order.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.workers.iter().map(|w| w.partition)
    }

    /// Whether `partition` is owned.
    pub fn owns(&self, partition: u32) -> bool {
        self.slot(partition).is_some()
    }

    fn slot(&self, partition: u32) -> Option<usize> {
        self.workers.binary_search_by_key(&partition, |w| w.partition).ok()
    }

    /// Run `work` on the partitions named (each at most once); answers in the same order.
    pub fn run(&mut self, work: Vec<(u32, Work)>) -> Result<Vec<Done>, RuntimeError> {
        let mut slots = Vec::with_capacity(work.len());
        for (partition, work) in work {
            let slot = self.slot(partition).ok_or(RuntimeError::NotOwned(partition))?;
            let sent = self.workers[slot].work.as_ref().is_some_and(|tx| tx.send(work).is_ok());
            if !sent {
                return Err(RuntimeError::ThreadLost("task"));
            }
            slots.push(slot);
        }
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            out.push(self.workers[slot].done.recv().map_err(|_| RuntimeError::ThreadLost("task"))??);
        }
        Ok(out)
    }

    /// The same kind of work for every task.
    pub fn run_all(&mut self, work: impl Fn() -> Work) -> Result<Vec<Done>, RuntimeError> {
        let all = self.workers.iter().map(|w| (w.partition, work())).collect();
        self.run(all)
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.work = None;
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn open_of(engine: &RuleEngine) -> Vec<(String, Severity, u64)> {
    engine.open_findings().into_iter().map(|(rule, severity, n)| (rule.to_string(), severity, n)).collect()
}

fn run_task(partition: u32, mut engine: RuleEngine, work: Receiver<Work>, done: SyncSender<Result<Done, DetectError>>) {
    while let Ok(item) = work.recv() {
        let mut out = Done { partition, ..Done::default() };
        let result = match item {
            Work::Release { batches, advance } => {
                let mut result = Ok(());
                for events in &batches {
                    let started = Instant::now();
                    match engine.process(events, &mut out.findings) {
                        Ok(stats) => out.batches.push((events.family, events.batch.num_rows(), stats, started.elapsed().as_secs_f64())),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if let Some(watermark) = advance {
                    engine.advance(watermark, &mut out.findings);
                }
                result
            }
            Work::Report => {
                out.open = open_of(&engine);
                Ok(())
            }
            Work::Snapshot => {
                engine.publish_open(&mut out.findings);
                out.open = open_of(&engine);
                Ok(())
            }
            Work::Flush => {
                engine.flush(&mut out.findings);
                out.open = open_of(&engine);
                Ok(())
            }
        };
        out.retracted_silences = engine.retracted_silences();
        if done.send(result.map(|()| out)).is_err() {
            return;
        }
    }
}
