#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora from the recorded fixtures in ../../shared/fixtures.

The fixtures are read at run time and never copied into the repository: the corpora go to
fuzz/corpus/<target>/, which git ignores. Needs PyYAML (`pip install pyyaml`).
"""
import json
import pathlib
import sys

import yaml

here = pathlib.Path(__file__).resolve().parent
fixtures = here.parent.parent / "shared" / "fixtures"
if not fixtures.is_dir():
    sys.exit(f"no fixtures at {fixtures}")

corpus = {t: [] for t in ["sse_decoder", "chat_stream", "responses_stream", "chat_json",
                          "responses_json", "error_envelope", "waf_classifier", "inspect_path",
                          "waf_headers", "proxy_config", "proxy_request", "retry_after",
                          "request_lint", "check_input"]}

def add(targets, name, body):
    for t in targets:
        corpus[t].append((name, body))

for f in sorted(fixtures.iterdir()):
    if f.is_dir():
        continue  # waf/ is read below, for waf_headers
    name = f.name
    raw = f.read_bytes()
    responses = "responses" in name
    if name.endswith(".chunks.jsonl"):
        sse = b"".join(b"data: " + l + b"\n\n" for l in raw.splitlines() if l.strip())
        add(["sse_decoder", "responses_stream" if responses else "chat_stream"], name, sse)
    elif name.endswith(".sse"):
        add(["sse_decoder", "chat_stream"], name, raw)
    elif name.endswith(".json"):
        add(["error_envelope", "chat_json"], name, raw)
    elif name.endswith(".html"):
        # The WAF target reads status (2 bytes) and header bits (2 bytes) first.
        add(["waf_classifier"], name, (403).to_bytes(2, "little") + (0b11).to_bytes(2, "little") + raw)
        add(["chat_json"], name, raw)
    elif name.endswith(".yaml"):
        doc = yaml.safe_load(raw)
        for i, it in enumerate(doc["interactions"]):
            resp = it["response"]
            body = resp.get("body", {}).get("string")
            body = body.encode() if body is not None else json.dumps(resp.get("parsed_body")).encode()
            status = resp["status"]["code"]
            label = f"{name}-{i}"
            if body.lstrip().startswith((b"data:", b"event:", b":")):
                add(["sse_decoder", "responses_stream" if responses else "chat_stream"], label, body)
            elif status >= 400:
                add(["error_envelope"], label, body)
                waf_prefix = status.to_bytes(2, "little") + (0b11).to_bytes(2, "little")
                add(["waf_classifier"], label, waf_prefix + body)
            else:
                add(["responses_json" if responses else "chat_json"], label, body)

# inspect_path reads status, content type, surface and caps, and a cut count first: each body
# goes in with its own status and content type, the default caps, whole.
INSPECT = {  # target: (status index, content type index, surface)
    "chat_stream": (0, 2, 0), "responses_stream": (0, 2, 1), "chat_json": (0, 1, 0),
    "responses_json": (0, 1, 1), "error_envelope": (6, 1, 0),
}
for source, (status, kind, surface) in INSPECT.items():
    for name, body in corpus[source]:
        corpus["inspect_path"].append((name, bytes([status, kind, 0xF0 | surface, 0]) + body))

# waf_headers: the recorded WAF responses with their real headers, as name index, length, value.
WAF_NAMES = ["cf-mitigated", "x-amzn-waf-action", "x-sucuri-block", "x-vercel-mitigated", "server",
             "cf-ray", "content-type", "set-cookie", "x-amz-cf-id", "x-amz-cf-pop",
             "x-amzn-requestid", "via", "x-cache", "x-reference-error", "akamai-grn", "x-azure-ref",
             "x-iinfo", "x-cdn", "x-sucuri-id", "x-sucuri-cache", "x-fastly-request-id",
             "x-served-by", "x-datadome", "x-dd-b", "x-sl-compstate", "x-vercel-id", "x-unrelated"]
waf_dir = fixtures / "waf"
for f in sorted(waf_dir.glob("*.txt")) if waf_dir.is_dir() else []:
    head, _, body = f.read_bytes().partition(b"\n---\n")
    status, headers = 403, []
    for line in head.decode("utf-8", "replace").splitlines():
        if line.startswith("STATUS:"):
            status = int(line.split(":", 1)[1])
        elif line.startswith("HEADER:"):
            name, _, value = line[len("HEADER:"):].strip().partition(":")
            if name.strip() in WAF_NAMES:
                v = value.strip().encode()[:255]
                headers.append(bytes([WAF_NAMES.index(name.strip()), len(v)]) + v)
    headers = headers[:23]
    prefix = (status - 100).to_bytes(2, "little") + bytes([len(headers)]) + b"".join(headers)
    corpus["waf_headers"].append((f.name, prefix + body))

# retry_after: an 8-byte clock, then retry-after, retry-after-ms and x-should-retry, 0-separated.
clock = (1_764_000_000).to_bytes(8, "little")
for i, (after, ms, should) in enumerate([(b"3", b"250", b"true"), (b"Wed, 21 Oct 2026 07:28:00 GMT", b"", b"false"),
                                         (b"-1", b"1.5", b""), (b"120", b"abc", b"TRUE")]):
    corpus["retry_after"].append((f"hints-{i}", clock + after + b"\0" + ms + b"\0" + should))

# request_lint: requests that trip each family's rules, and plain ones.
for i, req in enumerate([
    {"model": "claude-sonnet-4-5", "temperature": 1.5, "n": 3, "messages": [{"role": "user", "content": "hi"}]},
    {"model": "gemini-2.5-pro", "n": 9, "logprobs": True, "messages": []},
    {"model": "gpt-4o-mini", "max_tokens": 10, "reasoning_effort": "high", "stream": True},
    {"model": "o3", "max_tokens": 10, "input": "hi"},
]):
    corpus["request_lint"].append((f"request-{i}", json.dumps(req).encode()))

# check_input: saved responses as `curl -i` prints them, one per recorded WAF capture's status and
# body, and a redirect chain.
corpus["check_input"].append(("chain", b"HTTP/1.1 301 Moved\r\nlocation: /v1\r\n\r\nHTTP/2 200\r\n"
                                       b"content-type: application/json\r\n\r\n{\"id\":\"chatcmpl-1\"}"))
for name, body in corpus["waf_classifier"][:40]:
    corpus["check_input"].append((name, b"HTTP/1.1 403 Forbidden\r\nserver: cloudflare\r\n\r\n" + body))

# proxy_config: the example configuration's shape.
corpus["proxy_config"].append(("example", b"""listen = "127.0.0.1:8787"
[[upstreams]]
name = "primary"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
context_window = 128000
[[upstreams]]
name = "backup"
base_url = "https://gateway.example/v1"
surfaces = ["chat_completions"]
[breaker]
consecutive_failures = 5
open_base = "30s"
[retry]
preset = "openai_sdk"
deadline = "60s"
[failover]
max_hops = 2
commit = "first_content"
"""))

for target, items in corpus.items():
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, body in items:
        (d / name).write_bytes(body)
    print(f"{target}: {len(items)} seeds")
