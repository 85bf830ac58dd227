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
                          "responses_json", "error_envelope", "waf_classifier"]}

def add(targets, name, body):
    for t in targets:
        corpus[t].append((name, body))

for f in sorted(fixtures.iterdir()):
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

for target, items in corpus.items():
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, body in items:
        (d / name).write_bytes(body)
    print(f"{target}: {len(items)} seeds")
