"""Render the Helm chart with Helm's own Go SDK (helm-python-sdk: no helm binary exists here).

usage: render.py CHART VALUES_FILE|- OUT_YAML
Lints the chart (strict), renders it with the values as `helm template` would for a release
`seedwatch` in namespace `security`, writes every manifest to OUT_YAML as one YAML stream and
prints {"lint": ..., "kinds": [...]} as JSON. A render error (the values schema included) is
printed as {"error": "..."} with exit code 1.
"""
import json
import sys

import helm_python as helm
import yaml

chart_dir, values_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
helm.disable_logging()
values = {}
if values_file != "-":
    with open(values_file) as f:
        values = yaml.safe_load(f) or {}
try:
    lint = helm.lint(chart_dir, values, strict=True, kube_version="v1.30.0")
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name="seedwatch", namespace="security", is_install=True)
except helm.HelmError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
docs = []
for path, text in sorted(rendered.items()):
    for doc in yaml.safe_load_all(text):
        if doc:
            docs.append(doc)
with open(out, "w") as f:
    yaml.safe_dump_all(docs, f, sort_keys=False)
print(json.dumps({"lint": lint, "kinds": sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)}))
