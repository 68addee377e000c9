"""Parses a server's /metrics with the Prometheus Python client's own text parser (an
independent reader of format 0.0.4) and prints {family: type}; exits non-zero if it cannot.
Usage: parse_metrics.py URL
"""
import json
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("prometheus_client is missing: pip install -r Tests/requirements.txt")

with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
    text = response.read().decode()
families = {}
for family in text_string_to_metric_families(text):
    if not family.samples:
        sys.exit(f"family {family.name} has no samples")
    families[family.name] = family.type
print(json.dumps(families))
