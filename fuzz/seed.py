#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, extracted from the Celery captures.

Reads the Celery 5.7 / kombu 5.7 wire captures vendored in tests/fixtures/
(Redis envelopes, AMQP properties with typed header tables, result metas,
remote-control and event messages) and the config examples in README.md, and
writes one file per distinct input into fuzz/corpus/<target>/, named by its
SHA-1 (as libFuzzer names corpus entries). Standard library only.

    python3 fuzz/seed.py            # (re)write fuzz/corpus/
"""

import base64
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = Path(__file__).resolve().parent / "corpus"

# The byte task_body / control_* / events targets read first to pick a content type.
CT_JSON, CT_MSGPACK = 0, 1

seeds: dict[str, set[bytes]] = {}


def add(target: str, data: bytes) -> None:
    seeds.setdefault(target, set()).add(data)


# --- AMQP 0-9-1 encoding (field tables and basic properties), as RabbitMQ writes them.


def shortstr(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def field(typed: dict) -> bytes:
    t, v = typed["type"], typed["value"]
    if t == "S":
        b = v.encode()
        return b"S" + struct.pack(">I", len(b)) + b
    if t == "I":
        return b"I" + struct.pack(">i", v)
    if t == "L":
        return b"L" + struct.pack(">q", v)
    if t == "t":
        return b"t" + bytes([1 if v else 0])
    if t == "d":
        return b"d" + struct.pack(">d", v)
    if t == "V":
        return b"V"
    if t == "A":
        items = b"".join(field(x) for x in v)
        return b"A" + struct.pack(">I", len(items)) + items
    if t == "F":
        return b"F" + table(v)
    raise ValueError(f"field type {t!r}")


def table(typed: dict) -> bytes:
    body = b"".join(shortstr(k) + field(v) for k, v in typed.items())
    return struct.pack(">I", len(body)) + body


# Basic class property order (flag bit 15 first) and how each is written.
PROPS = [
    ("content_type", "s"), ("content_encoding", "s"), ("headers", "F"), ("delivery_mode", "B"),
    ("priority", "B"), ("correlation_id", "s"), ("reply_to", "s"), ("expiration", "s"),
    ("message_id", "s"), ("timestamp", "T"), ("type", "s"), ("user_id", "s"), ("app_id", "s"),
    ("cluster_id", "s"),
]


def properties(typed: dict) -> bytes:
    flags, out = 0, b""
    for bit, (name, kind) in enumerate(PROPS):
        if typed.get(name) is None:
            continue
        flags |= 1 << (15 - bit)
        v = typed[name]
        out += {"s": lambda: shortstr(str(v)), "F": lambda: table(v), "B": lambda: bytes([v]),
                "T": lambda: struct.pack(">Q", v)}[kind]()
    return struct.pack(">H", flags) + out


# --- Classifying what the captures hold.


def body_of(envelope: dict) -> bytes | None:
    body = envelope.get("body")
    if not isinstance(body, str):
        return None
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        try:
            return base64.b64decode(body)
        except ValueError:
            return None
    return body.encode()


def ct_byte(content_type) -> int:
    return CT_MSGPACK if content_type == "application/x-msgpack" else CT_JSON


def classify_body(ct: int, body: bytes, headers: dict) -> None:
    """Route a message body to the targets that read bodies of its kind."""
    add("body_decode", body)
    add("guest_result", body)
    try:
        value = json.loads(body)
    except ValueError:
        value = None  # msgpack or not JSON: offer it to every body target
    if value is None or (isinstance(value, dict) and "method" in value):
        add("control_request", bytes([ct]) + body)
    if value is None or isinstance(value, list) or (isinstance(value, dict) and "type" in value):
        add("events", bytes([ct]) + body)
    if value is None or (isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values())):
        add("control_reply", bytes([ct]) + body)
    if value is None or (isinstance(value, dict) and "status" in value):
        add("result_meta", body)
    if "task" in headers or value is None or isinstance(value, dict) and "task" in value:
        add("task_body", bytes([ct]) + json.dumps(headers).encode() + b"\0" + body)


def envelope_text(text: str) -> None:
    try:
        env = json.loads(text)
    except ValueError:
        return
    if not (isinstance(env, dict) and "body" in env and "properties" in env):
        return
    add("envelope", text.encode())
    add("task_message", text.encode())
    body = body_of(env)
    if body is not None:
        classify_body(ct_byte(env.get("content-type")), body, env.get("headers") or {})


def result_text(text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError:
        return
    if isinstance(value, dict) and "status" in value and "task_id" in value:
        add("result_meta", text.encode())
        add("guest_result", json.dumps(value.get("result")).encode())


def walk(node) -> None:
    if isinstance(node, dict):
        if "properties_typed" in node:  # an AMQP capture: properties with typed headers
            typed = node["properties_typed"]
            raw = node.get("body_raw")
            body = raw.encode() if isinstance(raw, str) else b""
            add("amqp_properties", properties(typed) + body)
            if isinstance(typed.get("headers"), dict):
                add("amqp_table", table(typed["headers"]))
            ct = ct_byte(typed.get("content_type"))
            headers = (node.get("properties") or {}).get("headers") or {}
            classify_body(ct, body, headers)
        if "event" in node and isinstance(node["event"], dict):
            ev = json.dumps(node["event"]).encode()
            add("events", bytes([CT_JSON]) + ev)
            add("events", bytes([CT_JSON]) + b"[" + ev + b"]")
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
    elif isinstance(node, str) and node.startswith("{"):
        envelope_text(node)
        result_text(node)


def readme_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)


def main() -> int:
    for path in sorted(FIXTURES.rglob("*.json")):
        try:
            walk(json.loads(path.read_text()))
        except ValueError:
            continue
    for block in readme_blocks("toml"):
        add("settings_toml", block.encode())
    for block in readme_blocks("python"):
        add("settings_python", block.encode())
    add("settings_python", (
        "broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\ntask_serializer = 'json'\n"
        "accept_content = ['json']\ntimezone = 'Europe/Oslo'\nenable_utc = True\n"
        "task_routes = {\n    'tasks.add': 'low-priority',\n}\n"
        "task_annotations = {\n    'tasks.add': {'rate_limit': '10/m'}\n}\n").encode())
    add("settings_toml", b'broker_url = "redis://localhost:6379/0"\n[task_annotations."*"]\nrate_limit = "10/s"\n')
    total = 0
    for target, items in sorted(seeds.items()):
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for data in items:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        size = sum(len(x) for x in items)
        total += size
        print(f"{target:18} {len(items):4} seeds {size:8} bytes")
    print(f"{'total':18} {sum(len(v) for v in seeds.values()):4} seeds {total:8} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
