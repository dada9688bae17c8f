//! Kafka transport: topic names, topic creation, and the producer the
//! collectors use.
//!
//! Topics are per family (`<prefix>.login`, `.api`, `.sync`, `.audit`), plus
//! `<prefix>.dead_letter` and `<prefix>.findings`; messages are keyed by
//! license so one license's events stay ordered in one partition. The
//! producer is idempotent with `acks=all` and lz4, and [`Producer::send_all`]
//! returns only once Kafka acknowledged every message: a caller that waits for
//! it before reading more input gets back-pressure instead of an unbounded
//! buffer when the broker is slow or down.
#![deny(missing_docs)]

pub mod consumer;
pub use seedwatch_schemas::partition;

pub use consumer::{GroupConsumer, Rebalanced, Record};
pub use partition::partition_for;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use seedwatch_schemas::Family;

/// Errors of the Kafka transport.
#[derive(Debug, thiserror::Error)]
pub enum KafkaTransportError {
    /// The client could not be configured (a bad setting name or value).
    #[error("kafka configuration: {0}")]
    Config(String),
    /// Creating a topic failed.
    #[error("creating topic {topic}: {message}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// Consuming failed for good.
    #[error("consuming: {0}")]
    Consume(String),
    /// Committing offsets failed.
    #[error("committing offsets: {0}")]
    Commit(String),
    /// A message was not acknowledged.
    #[error("producing to {topic}: {message}")]
    Produce {
        /// The topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// No broker answered a metadata request.
    #[error("no broker answered")]
    Unreachable(#[source] KafkaError),
}

/// A seedwatch topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// One family's events.
    Events(Family),
    /// Lines that failed validation, with the reason.
    DeadLetter,
    /// Findings from the detectors.
    Findings,
}

impl Topic {
    /// Every topic seedwatch uses.
    pub const ALL: [Topic; 6] =
        [Topic::Events(Family::Login), Topic::Events(Family::Api), Topic::Events(Family::Sync), Topic::Events(Family::Audit), Topic::DeadLetter, Topic::Findings];

    fn suffix(self) -> &'static str {
        match self {
            Topic::Events(f) => f.as_str(),
            Topic::DeadLetter => "dead_letter",
            Topic::Findings => "findings",
        }
    }
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic name prefix (`seedwatch` gives `seedwatch.login`, ...).
    pub topic_prefix: String,
    /// Any librdkafka setting, passed through (security.protocol, sasl.*, ssl.*, ...).
    pub settings: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A configuration for `brokers` with the default prefix and no extra settings.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), topic_prefix: "seedwatch".into(), settings: BTreeMap::new() }
    }

    /// The full name of `topic`.
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}.{}", self.topic_prefix, topic.suffix())
    }

    /// A client configuration: the brokers, then `defaults`, then the user's
    /// settings, which override the defaults.
    fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c
    }
}

/// Create every seedwatch topic that does not exist yet. Returns (topic, created).
pub async fn create_topics(config: &KafkaConfig, partitions: i32) -> Result<Vec<(String, bool)>, KafkaTransportError> {
    let admin: AdminClient<DefaultClientContext> = config.client(&[]).create().map_err(|e| KafkaTransportError::Config(e.to_string()))?;
    let names: Vec<String> = Topic::ALL.iter().map(|t| config.topic(*t)).collect();
    let topics: Vec<NewTopic<'_>> = names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| KafkaTransportError::CreateTopic { topic: names.join(", "), message: e.to_string() })?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((name, false)),
            Err((topic, code)) => Err(KafkaTransportError::CreateTopic { topic, message: code.to_string() }),
        })
        .collect()
}

/// One message to produce.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Where.
    pub topic: Topic,
    /// Partitioning key (the license).
    pub key: &'a [u8],
    /// The payload (one NDJSON line).
    pub payload: &'a [u8],
}

/// An idempotent, acks=all, lz4 producer. Clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    config: KafkaConfig,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("brokers", &self.config.brokers).finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer; settings in `config.settings` override the defaults below.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaTransportError> {
        let c = config.client(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", "lz4"),
            // The Java client's partitioner: a license lands in the same partition
            // whichever client produced it (see `partition`).
            ("partitioner", "murmur2_random"),
            ("linger.ms", "20"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "200000"),
            // A broker that stays down fails the batch after a minute instead of holding it forever.
            ("message.timeout.ms", "60000"),
        ]);
        let inner = c.create().map_err(|e| KafkaTransportError::Config(e.to_string()))?;
        Ok(Self { inner, config: config.clone() })
    }

    /// Whether a broker answers within `timeout`: the cluster's metadata for the login topic
    /// (blocking; for readiness checks, off the request path).
    pub fn reachable(&self, timeout: Duration) -> Result<(), KafkaTransportError> {
        use rdkafka::producer::Producer as _;
        let topic = self.config.topic(Topic::Events(Family::Login));
        self.inner.client().fetch_metadata(Some(&topic), timeout).map(|_| ()).map_err(KafkaTransportError::Unreachable)
    }

    /// Produce every message and wait until Kafka acknowledged all of them.
    /// When librdkafka's queue is full, waits for earlier deliveries first.
    pub async fn send_all<'a>(&self, messages: impl IntoIterator<Item = Message<'a>>) -> Result<u64, KafkaTransportError> {
        let mut pending: std::collections::VecDeque<(Topic, DeliveryFuture)> = std::collections::VecDeque::new();
        let mut delivered = 0u64;
        for m in messages {
            let topic = self.config.topic(m.topic);
            loop {
                let record = FutureRecord::to(&topic).key(m.key).payload(m.payload);
                match self.inner.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back((m.topic, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match pending.pop_front() {
                        Some((t, d)) => delivered += self.confirm(t, d).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Err((e, _)) => return Err(KafkaTransportError::Produce { topic, message: e.to_string() }),
                }
            }
        }
        while let Some((t, d)) = pending.pop_front() {
            delivered += self.confirm(t, d).await?;
        }
        Ok(delivered)
    }

    async fn confirm(&self, topic: Topic, delivery: DeliveryFuture) -> Result<u64, KafkaTransportError> {
        let err = |message: String| KafkaTransportError::Produce { topic: self.config.topic(topic), message };
        match delivery.await {
            Ok(Ok(_)) => Ok(1),
            Ok(Err((e, _))) => Err(err(e.to_string())),
            Err(_) => Err(err("the producer was dropped before delivery".into())),
        }
    }
}
