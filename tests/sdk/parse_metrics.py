"""Parses a Prometheus text exposition (stdin) with the Prometheus project's Python client's
parser, which raises on any line that is not valid text format, and prints every sample as JSON:
{"families": [{"name", "type"}], "samples": [{"name", "labels", "value"}]}.
Used by tests/metrics.rs to check that GET /metrics is well-formed."""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families, samples = [], []
for family in text_string_to_metric_families(text):
    families.append({"name": family.name, "type": family.type})
    for s in family.samples:
        v = s.value
        samples.append({
            "name": s.name,
            "labels": s.labels,
            "value": "+Inf" if v == math.inf else ("NaN" if math.isnan(v) else v),
        })
json.dump({"families": families, "samples": samples}, sys.stdout)
