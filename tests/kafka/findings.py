"""Read seedwatch's findings topic with kafka-python.

Usage: findings.py BROKERS PREFIX
Prints {"messages": n, "ids": [distinct finding ids, sorted], "bad_keys": n}:
findings are keyed by license; a finding published twice (after a crash
replay) carries the same id.
"""

import json
import sys

from kafka import KafkaConsumer, TopicPartition

brokers, prefix = sys.argv[1], sys.argv[2]
topic = f"{prefix}.findings"
consumer = KafkaConsumer(bootstrap_servers=brokers, auto_offset_reset="earliest", enable_auto_commit=False,
                         consumer_timeout_ms=5000)
partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
consumer.assign(partitions)
consumer.seek_to_beginning(*partitions)
ends = consumer.end_offsets(partitions)
remaining = {tp for tp in partitions if ends[tp] > 0}
ids, messages, bad_keys = set(), 0, 0
while remaining:
    batch = consumer.poll(timeout_ms=5000, max_records=10000)
    if not batch:
        break
    for tp, records in batch.items():
        for r in records:
            messages += 1
            if r.offset + 1 >= ends[tp]:
                remaining.discard(tp)
            finding = json.loads(r.value)
            ids.add(finding["finding_id"])
            if (r.key or b"").decode() != finding.get("license", ""):
                bad_keys += 1
print(json.dumps({"messages": messages, "ids": sorted(ids), "bad_keys": bad_keys}))
