"""Read seedwatch's topics with kafka-python, an implementation of the Kafka
protocol independent of librdkafka.

Usage: consume.py BROKERS PREFIX OUT_NDJSON [RAW_KEY...]
Writes every event message to OUT_NDJSON (sorted by event time, as a log file
would be) and prints a JSON summary: messages per topic, keys that are not the
message's license, dead-letter reasons, and raw keys found in any payload or
message key (how many, and which).
"""

import json
import sys
from datetime import datetime

from read_all import read_all

brokers, prefix, out = sys.argv[1], sys.argv[2], sys.argv[3]
raw_keys = sys.argv[4:]
families = ["login", "api", "sync", "audit"]
topics = [f"{prefix}.{f}" for f in families] + [f"{prefix}.dead_letter"]

counts = {t: 0 for t in topics}
bad_keys = 0
reasons = {}
raw_hits = 0
raw_found = set()
events = []


def event_time(value):
    t = value.get("time")
    if isinstance(t, (int, float)):
        return float(t) / 1000.0
    return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()


for tp, r in read_all(brokers, topics):
    counts[tp.topic] += 1
    text = r.value.decode("utf-8")
    found = [k for k in raw_keys if k in text or k in (r.key or b"").decode("utf-8", "replace")]
    raw_hits += len(found)
    raw_found.update(found)
    if tp.topic.endswith(".dead_letter"):
        row = json.loads(text)
        reasons[row.get("reason", "?")] = reasons.get(row.get("reason", "?"), 0) + 1
        continue
    value = json.loads(text)
    if (r.key or b"").decode() != value.get("license", ""):
        bad_keys += 1
    events.append((event_time(value), len(events), text))

events.sort()
with open(out, "w") as f:
    for _, _, text in events:
        f.write(text + "\n")
print(json.dumps({"counts": counts, "bad_keys": bad_keys, "reasons": reasons, "raw_key_hits": raw_hits, "raw_keys_found": sorted(raw_found)}))
