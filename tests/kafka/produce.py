"""Produce NDJSON lines to seedwatch's topics with kafka-python, a client
independent of librdkafka, keyed by license with kafka-python's default
(murmur2, Java-compatible) partitioner, as a third-party integration would.

Usage: produce.py BROKERS PREFIX NDJSON [TOPIC]
Lines that are not JSON objects with a known family go to PREFIX.login, where
the detector must dead-letter them; with TOPIC, every line goes to PREFIX.TOPIC
as it is (a poison message on the dead-letter topic). Prints the number of
messages acknowledged.
"""

import json
import sys

from kafka import KafkaProducer

brokers, prefix, path = sys.argv[1], sys.argv[2], sys.argv[3]
forced = sys.argv[4] if len(sys.argv) > 4 else None
families = {"login", "api", "sync", "audit"}
producer = KafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=20)
futures = []
with open(path, "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\r\n")
        try:
            value = json.loads(line)
            family = value.get("family") if isinstance(value, dict) else None
            license = value.get("license") if isinstance(value, dict) else None
        except ValueError:
            family, license = None, None
        topic = f"{prefix}.{family}" if family in families else f"{prefix}.login"
        if forced:
            topic = f"{prefix}.{forced}"
        key = license.encode() if isinstance(license, str) else b""
        futures.append(producer.send(topic, key=key, value=line))
producer.flush()
print(sum(1 for fut in futures if fut.get(timeout=60)))
