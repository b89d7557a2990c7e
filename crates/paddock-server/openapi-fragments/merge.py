#!/usr/bin/env python3
"""Merges the path fragments into core.json and writes ../openapi.json."""
import json, pathlib
here = pathlib.Path(__file__).parent
doc = json.loads((here / "core.json").read_text())
for f in sorted(here.glob("*.json")):
    if f.name == "core.json":
        continue
    frag = json.loads(f.read_text())
    paths = frag.get("paths", frag)
    for p, ops in paths.items():
        doc["paths"].setdefault(p, {}).update(ops)
    for k, v in frag.get("components", {}).get("schemas", {}).items():
        doc["components"]["schemas"].setdefault(k, v)
(here.parent / "openapi.json").write_text(json.dumps(doc, indent=1) + "\n")
