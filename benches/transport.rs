//! Benchmark 5's yardstick: the transport's own ceiling. Produces the same NDJSON lines the
//! Kafka end to end uses, unparsed, through seedwatch's producer (idempotent, acks=all, lz4),
//! then consumes them back through seedwatch's group consumer, and prints both rates.
//! `benches/kafka.sh` runs it against the same broker in the same run as `collect` and
//! `detect`, and compares.
//!
//! Run: `SEEDWATCH_BENCH_BROKERS=HOST:PORT SEEDWATCH_BENCH_INPUT=events.ndjson cargo bench --bench transport`

use std::time::{Duration, Instant};

use seedwatch_kafka::consumer::GroupConsumer;
use seedwatch_kafka::{create_topics, KafkaConfig, Message, Producer, Topic};
use seedwatch_schemas::Family;

fn main() {
    let brokers = std::env::var("SEEDWATCH_BENCH_BROKERS").expect("SEEDWATCH_BENCH_BROKERS=HOST:PORT (see benches/kafka.sh)");
    let input = std::env::var("SEEDWATCH_BENCH_INPUT").expect("SEEDWATCH_BENCH_INPUT=events.ndjson (see benches/kafka.sh)");
    let partitions: i32 = std::env::var("SEEDWATCH_BENCH_PARTITIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let data = std::fs::read(&input).unwrap_or_else(|e| panic!("reading {input}: {e}"));
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();

    let mut config = KafkaConfig::new(brokers);
    config.topic_prefix = format!("ceiling-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(create_topics(&config, partitions)).expect("creating the ceiling topics");

    let producer = Producer::new(&config).expect("producer");
    let started = Instant::now();
    let topic = Topic::Events(Family::Api);
    let sent = runtime.block_on(producer.send_all(lines.iter().map(|l| Message { topic, key: &[], payload: l }))).expect("produce");
    let produce = started.elapsed().as_secs_f64();
    assert_eq!(sent as usize, lines.len());
    drop(producer);

    // The consumer's clock includes joining the group, as the detector's does.
    let started = Instant::now();
    let consumer = GroupConsumer::new(&config, "ceiling", None).expect("consumer");
    let (mut read, mut read_bytes) = (0usize, 0usize);
    while read < lines.len() {
        assert!(started.elapsed() < Duration::from_secs(600), "read {read} of {} messages in 10 minutes", lines.len());
        if let Some(record) = consumer.poll(Duration::from_millis(100)).expect("consume") {
            read += 1;
            read_bytes += record.payload().len();
        }
    }
    let consume = started.elapsed().as_secs_f64();
    consumer.close();
    assert_eq!(read_bytes, bytes, "the bytes read back differ from those produced");

    let n = lines.len() as f64;
    let mb = bytes as f64 / 1e6;
    println!("transport/produce: {} messages, {mb:.0} MB in {produce:.2} s: {:.0} messages/s, {:.1} MB/s", lines.len(), n / produce, mb / produce);
    println!("transport/consume: {:.2} s: {:.0} messages/s, {:.1} MB/s", consume, n / consume, mb / consume);
    println!("transport/ceiling: produce then consume {:.2} s: {:.0} messages/s", produce + consume, n / (produce + consume));
}
