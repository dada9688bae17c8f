"""Validate OCSF NDJSON against the published OCSF class schemas (PyPI `ocsf-json-schema`).

usage: validate.py VERSION FILE...
Prints one JSON object: {"records": n, "by_class": {uid: n}, "invalid": [first errors]}.
"""
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

version, files = sys.argv[1], sys.argv[2:]
ocsf = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
validators = {}
records, by_class, invalid = 0, {}, []
for path in files:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            record = json.loads(line)
            uid = record.get("class_uid")
            if uid not in validators:
                schema = ocsf.get_class_schema(ocsf.lookup_class_name_from_uid(uid))
                validators[uid] = jsonschema.Draft202012Validator(schema)
            records += 1
            by_class[str(uid)] = by_class.get(str(uid), 0) + 1
            for error in validators[uid].iter_errors(record):
                if len(invalid) < 10:
                    invalid.append(f"{path}:{number}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
                else:
                    break
json.dump({"records": records, "by_class": by_class, "invalid": invalid}, sys.stdout)
