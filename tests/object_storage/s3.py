"""What tests/object_storage.rs does to the S3 server from outside seedwatch: make a bucket,
list and change objects (as an attacker with write access would), and read the archive's
tables with Python's `deltalake`, another Delta reader. Settings from the AWS_* variables."""

import json
import os
import sys

import boto3


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def keys(bucket, prefix):
    out = []
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(out)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "create-bucket":
        client().create_bucket(Bucket=args[0])
    elif command == "list":
        print(json.dumps(keys(args[0], args[1])))
    elif command == "flip-byte":
        bucket, key = args
        body = bytearray(client().get_object(Bucket=bucket, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        client().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    elif command == "upload-dir":
        bucket, prefix, local = args
        for folder, _, names in os.walk(local):
            for name in names:
                path = os.path.join(folder, name)
                client().upload_file(path, bucket, f"{prefix}/{os.path.relpath(path, local)}")
    elif command == "put":
        bucket, key, text = args
        client().put_object(Bucket=bucket, Key=key, Body=text.encode())
    elif command == "delta-counts":
        from deltalake import DeltaTable

        url, tables = args[0], args[1:]
        options = {
            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "AWS_ALLOW_HTTP": "true",
        }
        counts = {t: DeltaTable(f"{url}/{t}", storage_options=options).to_pyarrow_dataset().count_rows() for t in tables}
        print(json.dumps(counts))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
