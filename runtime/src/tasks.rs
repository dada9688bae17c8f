//! Tasks: one `RuleEngine` per partition, each on its own thread.
//!
//! The driver hands every task its rows of a release and the release's
//! watermark, then waits for all of them (findings must be written before the
//! sink may write out the events they cite). Every task hears every watermark,
//! with or without rows, so silence is judged at the same moments whatever the
//! number of partitions.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use seedwatch_detect::{DetectError, DetectStats, Detector, RuleEngine};
use seedwatch_schemas::{EventBatch, Family, Finding, Severity};

use crate::RuntimeError;

enum Work {
    Release { batches: Vec<EventBatch>, advance: Option<i64>, report_open: bool },
    Flush,
}

/// What one task did with one release.
#[derive(Debug, Default)]
pub struct Done {
    /// Findings closed.
    pub findings: Vec<Finding>,
    /// Per batch: family, rows, counts, seconds.
    pub batches: Vec<(Family, usize, DetectStats, f64)>,
    /// Open findings per rule and severity, when asked for.
    pub open: Vec<(String, Severity, u64)>,
    /// Absence findings withdrawn so far (see `RuleEngine::retracted_silences`).
    pub retracted_silences: u64,
}

#[derive(Debug)]
struct Worker {
    work: Option<SyncSender<Work>>,
    done: Receiver<Result<Done, DetectError>>,
    thread: Option<JoinHandle<()>>,
}

/// The task pool.
#[derive(Debug)]
pub struct Tasks {
    workers: Vec<Worker>,
}

impl Tasks {
    /// One task per engine, in partition order.
    pub fn spawn(engines: Vec<RuleEngine>) -> Result<Self, RuntimeError> {
        let mut workers = Vec::with_capacity(engines.len());
        for (partition, engine) in engines.into_iter().enumerate() {
            let (work_tx, work_rx) = sync_channel::<Work>(1);
            let (done_tx, done_rx) = sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("seedwatch-task-{partition}"))
                .spawn(move || run_task(engine, work_rx, done_tx))
                .map_err(|source| RuntimeError::Spawn { what: "task", source })?;
            workers.push(Worker { work: Some(work_tx), done: done_rx, thread: Some(thread) });
        }
        Ok(Self { workers })
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Run one release: each task its batches (`per_task[i]`), then `advance`.
    /// Returns every task's answer, in partition order.
    pub fn release(&mut self, per_task: Vec<Vec<EventBatch>>, advance: Option<i64>, report_open: bool) -> Result<Vec<Done>, RuntimeError> {
        let work = per_task.into_iter().map(|batches| Work::Release { batches, advance, report_open }).collect();
        self.round(work)
    }

    /// Close every open finding.
    pub fn flush(&mut self) -> Result<Vec<Done>, RuntimeError> {
        let work = (0..self.workers.len()).map(|_| Work::Flush).collect();
        self.round(work)
    }

    fn round(&mut self, work: Vec<Work>) -> Result<Vec<Done>, RuntimeError> {
        for (worker, work) in self.workers.iter().zip(work) {
            let sent = worker.work.as_ref().map(|tx| tx.send(work).is_ok()).unwrap_or(false);
            if !sent {
                return Err(RuntimeError::ThreadLost("task"));
            }
        }
        let mut out = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            out.push(worker.done.recv().map_err(|_| RuntimeError::ThreadLost("task"))??);
        }
        Ok(out)
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

fn run_task(mut engine: RuleEngine, work: Receiver<Work>, done: SyncSender<Result<Done, DetectError>>) {
    while let Ok(item) = work.recv() {
        let mut out = Done::default();
        let result = match item {
            Work::Release { batches, advance, report_open } => {
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
                    engine.advance(watermark);
                }
                if report_open {
                    out.open = engine.open_findings().into_iter().map(|(rule, severity, n)| (rule.to_string(), severity, n)).collect();
                }
                result
            }
            Work::Flush => {
                engine.flush(&mut out.findings);
                out.open = engine.open_findings().into_iter().map(|(rule, severity, n)| (rule.to_string(), severity, n)).collect();
                Ok(())
            }
        };
        out.retracted_silences = engine.retracted_silences();
        if done.send(result.map(|()| out)).is_err() {
            return;
        }
    }
}
