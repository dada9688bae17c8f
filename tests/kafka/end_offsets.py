"""Print the end offset (messages produced) of every partition of seedwatch's
family topics, as {"PREFIX.FAMILY/PARTITION": offset}: what a test that finds
events missing from the archive compares against, to tell rows that never
reached the broker from rows the detectors did not archive.

Usage: end_offsets.py BROKERS PREFIX
"""

import json
import sys

from kafka import KafkaConsumer, TopicPartition

brokers, prefix = sys.argv[1], sys.argv[2]
consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
partitions = []
for family in ("login", "api", "sync", "audit"):
    topic = f"{prefix}.{family}"
    partitions += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
ends = consumer.end_offsets(partitions)
consumer.close()
print(json.dumps({f"{tp.topic}/{tp.partition}": ends[tp] for tp in partitions}, sort_keys=True))
