"""Checks structured output through a running `vtensor serve` on the GPU machine (random weights:
the model's own choices are noise, so every answer's validity comes from the grammar alone).

Usage: python3 structured_serve_check.py BASE_URL MODEL [--requests N]

Sends N chat requests at once (a batch whose rows all carry masks, sampled on the device), half
with a JSON schema and half with a regular expression, then forced tool calls; every answer must
be valid: the JSON parses and meets the schema, the text matches the pattern, the calls name a
given tool with valid arguments. Prints one line per kind and exits 1 on any invalid answer.
"""
import concurrent.futures
import json
import re
import sys
import urllib.request

BASE, MODEL = sys.argv[1].rstrip("/"), sys.argv[2]
N = int(sys.argv[sys.argv.index("--requests") + 1]) if "--requests" in sys.argv else 64

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16},
    "age": {"type": "integer", "minimum": 0, "maximum": 130},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"]}
PATTERN = r"[A-Z]{3}-[0-9]{2,4}( [a-z]{1,8}){0,3}"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 20}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}]


def post(body):
    request = urllib.request.Request(BASE + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as r:
        return json.load(r)


def person_ok(text):
    try:
        v = json.loads(text)
    except ValueError:
        return False
    keys = list(v.keys())
    return (isinstance(v, dict) and set(keys) <= set(PERSON["properties"]) and {"name", "age", "ok"} <= set(keys)
            and keys == [k for k in PERSON["properties"] if k in keys] and isinstance(v["name"], str) and len(v["name"]) <= 16
            and isinstance(v["age"], int) and 0 <= v["age"] <= 130 and isinstance(v["ok"], bool)
            and all(t in "abc" for t in v.get("tags", [])) and len(v.get("tags", [])) <= 3)


def one(i):
    base = {"model": MODEL, "messages": [{"role": "user", "content": f"Request {i}: answer."}], "max_tokens": 200, "temperature": 1.0, "seed": i}
    if i % 2 == 0:
        r = post({**base, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
        text, finish = r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"]
        return "schema", finish, person_ok(text) if finish == "stop" else None, text
    r = post({**base, "structured_outputs": {"regex": PATTERN}})
    text, finish = r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"]
    return "regex", finish, bool(re.fullmatch(PATTERN, text)) if finish == "stop" else None, text


def tools(i):
    r = post({"model": MODEL, "messages": [{"role": "user", "content": "Call a tool."}], "max_tokens": 200, "temperature": 1.0, "seed": 1000 + i,
              "tools": TOOLS, "tool_choice": "required" if i % 2 else {"type": "function", "function": {"name": "get_time"}}})
    choice = r["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    if choice["finish_reason"] == "length":  # a list of calls cut at max_tokens (random weights may go on adding calls)
        return "tools", "length", None, json.dumps(calls)[:200]
    ok = choice["finish_reason"] == "tool_calls" and len(calls) >= 1
    for call in calls:
        args = json.loads(call["function"]["arguments"])
        if call["function"]["name"] == "get_time":
            ok = ok and args.get("zone") in ("UTC", "CET")
        elif call["function"]["name"] == "get_weather":
            ok = ok and isinstance(args.get("city"), str) and 1 <= args.get("days", 0) <= 7
        else:
            ok = False
    return "tools", choice["finish_reason"], ok, json.dumps(calls)[:200]


def main():
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(one, range(N))) + list(pool.map(tools, range(max(8, N // 4))))
    for kind in ("schema", "regex", "tools"):
        rows = [r for r in results if r[0] == kind]
        valid = sum(1 for r in rows if r[2] is True)
        invalid = [r for r in rows if r[2] is False]
        cut = sum(1 for r in rows if r[2] is None)
        failed += len(invalid)
        print(f"{kind}: {len(rows)} requests, {valid} valid, {len(invalid)} invalid, {cut} cut at max_tokens")
        for r in invalid[:3]:
            print(f"  invalid ({r[1]}): {r[3]!r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
