"""Shared by the kafka-python test scripts: every record of some topics, start to end."""

import os

from kafka import KafkaConsumer, TopicPartition


def tls_settings():
    """TLS with a client certificate when SEEDWATCH_TEST_KAFKA_CA (and _CERT, _KEY) are set."""
    ca = os.environ.get("SEEDWATCH_TEST_KAFKA_CA")
    if not ca:
        return {}
    return {"security_protocol": "SSL", "ssl_cafile": ca, "ssl_certfile": os.environ["SEEDWATCH_TEST_KAFKA_CERT"],
            "ssl_keyfile": os.environ["SEEDWATCH_TEST_KAFKA_KEY"]}


def read_all(brokers, topics):
    """Yield (TopicPartition, record) for everything in `topics` when called."""
    consumer = KafkaConsumer(bootstrap_servers=brokers, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000, **tls_settings())
    partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    remaining = {tp for tp in partitions if ends[tp] > 0}
    while remaining:
        batch = consumer.poll(timeout_ms=5000, max_records=10000)
        if not batch:
            break
        for tp, records in batch.items():
            for r in records:
                if r.offset + 1 >= ends[tp]:
                    remaining.discard(tp)
                yield tp, r
    consumer.close()
