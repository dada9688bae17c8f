//! The detector's consumer: a consumer group over the family topics (and the
//! dead-letter topic), offsets committed by hand.
//!
//! Nothing is committed automatically: the detector commits a partition's
//! offset only once the archive holds what came before it. Partitions are
//! assigned with the `range` strategy, which gives partition `p` of every topic
//! to the same member when the topics have the same partition count: one
//! license's login, API, sync and audit events (all keyed by license) meet in
//! one detector. Where reading starts is the caller's too: assigned partitions
//! start at the beginning, and the caller seeks them to the committed offsets it
//! looked up (see `GroupContext::rebalance` for why librdkafka's lookup is not used).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use seedwatch_schemas::Family;

use crate::{KafkaConfig, KafkaTransportError, Topic};

/// A change of the partitions this member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    /// Every partition was taken away (eager protocol); what was not committed
    /// will be read again by whoever gets the partitions.
    Revoked,
    /// These partitions are now ours, fetched from the beginning until the caller seeks them
    /// to where it resumes ([`GroupConsumer::resume_from`]).
    Assigned(Vec<(Topic, i32)>),
}

/// Records rebalances for the poll loop (callbacks run inside `poll`, on the
/// caller's thread, so the loop sees them before the next message).
#[derive(Default)]
struct GroupContext {
    rebalances: Mutex<Vec<Rebalance0>>,
    /// (topic, partition) → (low, high) watermarks from librdkafka's statistics, which come
    /// from the fetch responses: no request of their own (asking the broker took ~0.25 s per
    /// partition on tansu).
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
}

/// A rebalance with topic names not yet resolved.
enum Rebalance0 {
    Revoked,
    Assigned(Vec<(String, i32)>),
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(mut marks) = self.watermarks.lock() else { return };
        for (name, topic) in statistics.topics {
            for (partition, p) in topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; -1 offsets mean "not fetched yet".
                if partition >= 0 && p.hi_offset >= 0 {
                    marks.insert((name.clone(), partition), (p.lo_offset.max(0), p.hi_offset));
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// rust-rdkafka's default, except that assigned partitions start at the beginning instead
    /// of at a committed offset librdkafka looks up itself. That lookup can leave a partition's
    /// fetcher unstarted for good (a partition-level OffsetFetch error, or an answer that came
    /// after the assignment changed), and a partition whose fetcher never started cannot be
    /// sought, so its scope never advanced (seen once in CI: one topic partition of four held
    /// a detector's partition back for minutes). The detector looks the committed offsets up
    /// itself and seeks every partition to them before it resumes ([`GroupConsumer::resume_from`]).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, list: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let (event, result) = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = list.set_all_offsets(Offset::Beginning) {
                    tracing::warn!(error = %e, "assigned partitions start at their committed offsets (could not set their start)");
                }
                let event = Rebalance0::Assigned(list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect());
                (Some(event), if cooperative { consumer.incremental_assign(list) } else { consumer.assign(list) })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => (Some(Rebalance0::Revoked), if cooperative { consumer.incremental_unassign(list) } else { consumer.unassign() }),
            other => {
                tracing::warn!(error = %RDKafkaErrorCode::from(other), "consumer group rebalance failed");
                (None, if cooperative { consumer.incremental_unassign(list) } else { consumer.unassign() })
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a consumer group rebalance failed");
        }
        if let (Some(event), Ok(mut events)) = (event, self.rebalances.lock()) {
            events.push(event);
        }
    }
}

/// One consumed message, borrowed from the consumer.
pub struct Record<'a> {
    /// Which seedwatch topic.
    pub topic: Topic,
    message: rdkafka::message::BorrowedMessage<'a>,
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").field("topic", &self.topic).field("partition", &self.partition()).field("offset", &self.offset()).finish()
    }
}

impl Record<'_> {
    /// Partition.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    /// Offset in the partition.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    /// The message value (one NDJSON line); empty for a tombstone.
    pub fn payload(&self) -> &[u8] {
        self.message.payload().unwrap_or_default()
    }
}

/// A consumer-group member over the family and dead-letter topics.
pub struct GroupConsumer {
    inner: BaseConsumer<GroupContext>,
    config: KafkaConfig,
    topics: HashMap<String, Topic>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer").field("brokers", &self.config.brokers).finish_non_exhaustive()
    }
}

/// The topics a detector reads.
pub const CONSUMED: [Topic; 5] = [Topic::Events(Family::Login), Topic::Events(Family::Api), Topic::Events(Family::Sync), Topic::Events(Family::Audit), Topic::DeadLetter];

impl GroupConsumer {
    /// Join `group` and subscribe to [`CONSUMED`]. Settings in
    /// `config.settings` override the defaults below.
    ///
    /// `instance` makes the member static (`group.instance.id`): a member restarted under the
    /// same id takes its place back without waiting for the old session to expire, which is
    /// what a StatefulSet pod or a systemd unit that restarts after a crash wants.
    pub fn new(config: &KafkaConfig, group: &str, instance: Option<&str>) -> Result<Self, KafkaTransportError> {
        let mut defaults = vec![
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range"),
            // A member that died is replaced after 10 s instead of the default 45.
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            // Also the rebalance timeout: a member that died during a rebalance holds the
            // group up to this long on brokers that do not expire sessions (tansu 0.6).
            // A detector's source keeps polling while the driver works and warms up.
            ("max.poll.interval.ms", "60000"),
            // A fetch answers after at most 50 ms: with librdkafka's 500 ms a fetch that includes
            // the sparse sync and audit partitions waits while api data is ready.
            ("fetch.wait.max.ms", "50"),
            // Watermarks for the lag metric (see `cached_watermarks`; the caught-up checks ask the
            // broker, `end_offsets`, since a cached high watermark can be stale and release rows too early).
            ("statistics.interval.ms", "250"),
        ];
        if let Some(instance) = instance {
            defaults.push(("group.instance.id", instance));
        }
        let mut c: ClientConfig = config.client(&defaults);
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        let inner: BaseConsumer<GroupContext> = c.create_with_context(GroupContext::default()).map_err(|e| KafkaTransportError::Config(e.to_string()))?;
        let topics: HashMap<String, Topic> = CONSUMED.iter().map(|t| (config.topic(*t), *t)).collect();
        let names: Vec<&str> = topics.keys().map(String::as_str).collect();
        inner.subscribe(&names).map_err(|e| KafkaTransportError::Config(e.to_string()))?;
        Ok(Self { inner, config: config.clone(), topics })
    }

    /// The next message, or `None` after `timeout` without one. Transient
    /// broker errors are logged and retried by librdkafka; fatal ones are returned.
    pub fn poll(&self, timeout: Duration) -> Result<Option<Record<'_>>, KafkaTransportError> {
        match self.inner.poll(timeout) {
            None => Ok(None),
            Some(Ok(message)) => {
                let Some(topic) = self.topics.get(message.topic()).copied() else {
                    tracing::warn!(topic = message.topic(), "message from a topic seedwatch did not subscribe to");
                    return Ok(None);
                };
                Ok(Some(Record { topic, message }))
            }
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => Err(KafkaTransportError::Consume(code.to_string())),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error (retrying)");
                Ok(None)
            }
        }
    }

    /// Rebalances since the last call, oldest first.
    pub fn take_rebalances(&self) -> Vec<Rebalanced> {
        let events = match self.inner.context().rebalances.lock() {
            Ok(mut events) => std::mem::take(&mut *events),
            Err(_) => return Vec::new(),
        };
        events
            .into_iter()
            .map(|e| match e {
                Rebalance0::Revoked => Rebalanced::Revoked,
                Rebalance0::Assigned(list) => Rebalanced::Assigned(list.into_iter().filter_map(|(name, p)| Some((*self.topics.get(&name)?, p))).collect()),
            })
            .collect()
    }

    /// Commit `next` offsets (the offset of the next message to read). Asynchronous: a
    /// synchronous commit was seen to block for good across a broker restart, and a commit
    /// that is lost only means a longer replay, which the archive's dedup absorbs.
    pub fn commit(&self, next: &[(Topic, i32, i64)]) -> Result<(), KafkaTransportError> {
        if next.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in next {
            list.add_partition_offset(&self.config.topic(*topic), *partition, Offset::Offset(*offset)).map_err(|e| KafkaTransportError::Commit(e.to_string()))?;
        }
        self.inner.commit(&list, CommitMode::Async).map_err(|e| KafkaTransportError::Commit(e.to_string()))
    }

    /// The partition's low and high watermarks: the oldest offset kept and the
    /// offset the next message produced will get.
    pub fn watermarks(&self, topic: Topic, partition: i32) -> Result<(i64, i64), KafkaTransportError> {
        self.inner.fetch_watermarks(&self.config.topic(topic), partition, Duration::from_secs(5)).map_err(|e| KafkaTransportError::Consume(e.to_string()))
    }

    /// The high watermarks of several partitions in one request per broker (a ListOffsets for
    /// "latest"), in the order asked; `None` where the broker gave no offset.
    pub fn end_offsets(&self, partitions: &[(Topic, i32)]) -> Result<Vec<Option<i64>>, KafkaTransportError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            // As a timestamp, -1 (`Offset::End`) asks for the latest offset.
            list.add_partition_offset(&self.config.topic(*topic), *partition, Offset::End).map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        }
        let answer = self.inner.offsets_for_times(list, Duration::from_secs(5)).map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| match answer.find_partition(&self.config.topic(*topic), *partition).map(|e| (e.error(), e.offset())) {
                Some((Ok(()), Offset::Offset(o))) => Some(o),
                _ => None,
            })
            .collect())
    }

    /// The partition's low and high watermarks as of the last fetch response (refreshed with
    /// librdkafka's statistics every 250 ms, served by `poll`); `None` before the first.
    pub fn cached_watermarks(&self, topic: Topic, partition: i32) -> Option<(i64, i64)> {
        self.inner.context().watermarks.lock().ok()?.get(&(self.config.topic(topic), partition)).copied()
    }

    /// How many partitions `topic` has.
    pub fn partition_count(&self, topic: Topic) -> Result<i32, KafkaTransportError> {
        let name = self.config.topic(topic);
        let metadata = self.inner.fetch_metadata(Some(&name), Duration::from_secs(10)).map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        let count = metadata.topics().iter().find(|t| t.name() == name).map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(KafkaTransportError::Consume(format!("topic {name} has no partitions (run `seedwatch topics create`)")));
        }
        Ok(count as i32)
    }

    /// Committed offsets of the group for `partitions` (`None` where nothing was committed).
    pub fn committed(&self, partitions: &[(Topic, i32)]) -> Result<Vec<Option<i64>>, KafkaTransportError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(&self.config.topic(*topic), *partition);
        }
        let committed = self.inner.committed_offsets(list, Duration::from_secs(10)).map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| match committed.find_partition(&self.config.topic(*topic), *partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect())
    }

    /// Stop fetching from every partition assigned (the member keeps polling, so it stays
    /// in the group): a detector pauses a new assignment while it rebuilds state.
    pub fn pause_assignment(&self) -> Result<(), KafkaTransportError> {
        let assigned = self.inner.assignment().map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        self.inner.pause(&assigned).map_err(|e| KafkaTransportError::Consume(e.to_string()))
    }

    /// Fetch again from every partition assigned, each from `starts`: the offset given, or the
    /// oldest kept where `None` (nothing committed).
    ///
    /// librdkafka resumes a paused partition at the last message the application consumed from
    /// it, and a partition this member owned before the rebalance keeps that position: resuming
    /// alone skipped what was read but never committed under the old assignment. Seeking while
    /// still paused moves the fetcher, purges what it prefetched, and resets that position. A
    /// broker may still answer from elsewhere (tansu 0.6, from inside a record batch): the
    /// detector's Kafka source checks the first message it gets.
    pub fn resume_from(&self, starts: &[(Topic, i32, Option<i64>)]) -> Result<(), KafkaTransportError> {
        self.seek(starts)?;
        let assigned = self.inner.assignment().map_err(|e| KafkaTransportError::Consume(e.to_string()))?;
        self.inner.resume(&assigned).map_err(|e| KafkaTransportError::Consume(e.to_string()))
    }

    /// Move the fetch position of assigned partitions: to the offset given, or the oldest kept
    /// where `None`.
    pub fn seek(&self, starts: &[(Topic, i32, Option<i64>)]) -> Result<(), KafkaTransportError> {
        let consume = |e: KafkaError| KafkaTransportError::Consume(e.to_string());
        let mut pending: Vec<(Topic, i32, Option<i64>)> = starts.to_vec();
        // A partition whose fetcher has not started yet answers "state": ask again shortly.
        // One that has not started after 10 s starts where it was assigned, at the beginning
        // (the caller checks the first message, and skips what comes before its start).
        for attempt in 0.. {
            if pending.is_empty() {
                break;
            }
            if attempt == 100 {
                let names: Vec<String> = pending.iter().map(|(t, p, _)| format!("{} [{p}]", self.config.topic(*t))).collect();
                tracing::warn!(partitions = ?names, "their fetchers have not started: not sought, they start at the beginning");
                break;
            }
            let mut list = TopicPartitionList::new();
            for (topic, partition, start) in &pending {
                let offset = start.map_or(Offset::Beginning, Offset::Offset);
                list.add_partition_offset(&self.config.topic(*topic), *partition, offset).map_err(consume)?;
            }
            let answer = self.inner.seek_partitions(list, Duration::from_secs(10)).map_err(consume)?;
            let mut again = Vec::new();
            for (topic, partition, start) in pending {
                match answer.find_partition(&self.config.topic(topic), partition).map(|e| e.error()) {
                    Some(Err(KafkaError::OffsetFetch(RDKafkaErrorCode::State))) => again.push((topic, partition, start)),
                    Some(Err(e)) => return Err(KafkaTransportError::Consume(format!("seeking {} [{partition}] to {start:?}: {e}", self.config.topic(topic)))),
                    _ => {}
                }
            }
            if !again.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
            pending = again;
        }
        Ok(())
    }

    /// Leave the group now (instead of after the session timeout).
    pub fn close(self) {
        self.leave();
    }

    /// [`close`](Self::close) for a consumer that is borrowed: it is not used afterwards.
    pub fn leave(&self) {
        self.inner.unsubscribe();
        // Serve the revoke callback so the group rebalances at once.
        let _ = self.inner.poll(Duration::from_millis(100));
    }
}
