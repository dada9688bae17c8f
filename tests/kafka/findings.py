"""Read seedwatch's findings topic with kafka-python.

Usage: findings.py BROKERS PREFIX
Prints {"messages": n, "ids": [distinct finding ids, sorted], "bad_keys": n}:
findings are keyed by license; a finding published twice (after a crash
replay) carries the same id.
"""

import json
import sys

from read_all import read_all

brokers, prefix = sys.argv[1], sys.argv[2]
topic = f"{prefix}.findings"
ids, messages, bad_keys = set(), 0, 0
for _, r in read_all(brokers, [topic]):
    messages += 1
    finding = json.loads(r.value)
    ids.add(finding["finding_id"])
    if (r.key or b"").decode() != finding.get("license", ""):
        bad_keys += 1
print(json.dumps({"messages": messages, "ids": sorted(ids), "bad_keys": bad_keys}))
