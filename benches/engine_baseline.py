#!/usr/bin/env python3
"""Baseline for benches/engine.rs: the peer's approach, a Python `re` loop over lines.

usage: engine_baseline.py PATTERNS.json TRANSCRIPT MAX_BYTES

Reads at most MAX_BYTES of whole lines, strips leading decoration the same way mpm does (roughly),
and for every line tries every pattern with `re.search`, keeping at most one detection per category.
Times with process CPU time (the machine is shared), like the Rust side.
Prints one JSON object: bytes, seconds, lines, detections, patterns, skipped (patterns `re` rejects).
"""
import json
import re
import sys
import time

STRIP = re.compile(r"^[\s\u00a0●⏺⎿▎❯│>]*(?:(?:[-*+]|\d{1,3}[.)])\s+)?")


def main():
    pats_path, text_path, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    specs = json.load(open(pats_path))
    pats, skipped = [], 0
    for s in specs:
        try:
            pats.append((s["category"], re.compile(s["regex"])))
        except re.error:
            skipped += 1
    lines, size = [], 0
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            size += len(line.encode("utf-8"))
            lines.append(line)
            if size >= max_bytes:
                break
    t0 = time.process_time()
    found = 0
    for line in lines:
        s = STRIP.sub("", line).rstrip()
        if not s:
            continue
        seen = set()
        for cat, rx in pats:
            if cat in seen:
                continue
            if rx.search(s):
                seen.add(cat)
                found += 1
    dt = time.process_time() - t0
    print(json.dumps({"bytes": size, "seconds": dt, "lines": len(lines), "detections": found,
                      "patterns": len(pats), "skipped": skipped}))


if __name__ == "__main__":
    main()
