"""One HTTPS request with Python's ssl module, as a real client would make it.

usage: client.py URL --ca CA [--cert CERT --key KEY] [--token TOKEN] [--body FILE]
Prints one JSON object: {"status", "body", "peer_cn"} or {"error"} when the handshake or the
connection failed (the error's class and text).
"""
import argparse
import http.client
import json
import ssl
import sys
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--ca", required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--token")
parser.add_argument("--body")
args = parser.parse_args()

url = urllib.parse.urlsplit(args.url)
context = ssl.create_default_context(cafile=args.ca)
if args.cert:
    context.load_cert_chain(args.cert, args.key)
headers = {}
if args.token:
    headers["Authorization"] = f"Bearer {args.token}"
body = None
if args.body:
    with open(args.body, "rb") as f:
        body = f.read()
    headers["Content-Type"] = "application/x-ndjson"
try:
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=20)
    conn.connect()
    # Read before the reply: the server closes the connection after it.
    peer = dict(x[0] for x in conn.sock.getpeercert()["subject"])
    version = conn.sock.version()
    conn.request("POST" if body is not None else "GET", url.path, body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    print(json.dumps({"status": response.status, "body": text, "peer_cn": peer.get("commonName"), "version": version}))
except (ssl.SSLError, OSError, http.client.HTTPException) as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
sys.exit(0)
