"""The memory.json schema (docs/monitoring.md), as a checker that lists what is wrong.

`validate(doc)` returns a list of problems, empty when the document matches.
Tests and readers (graphs) use it instead of trusting a file's shape.
"""

from __future__ import annotations

from lib.monitor.base import FIELDS
from lib.monitor.sampler import SCHEMA

NUMBER = (int, float)
HEADER = {
    "backend": (str, type(None)),
    "device": (dict, type(None)),
    "allocator": bool,
    "interval_s": NUMBER,
    "started": str,
    "started_unix": NUMBER,
    "host": str,
    "pid": int,
    "warnings": list,
    "fields": dict,
}
SUMMARY = {
    "samples": int,
    "stored_samples": int,
    "stride": int,
    "errors": int,
    "duration_s": NUMBER,
    "peak_memory_mib": NUMBER,
    "peak_memory_source": str,
    "memory_field": (str, type(None)),
    "peak_sampled_mib": (*NUMBER, type(None)),
    "mean_sampled_mib": (*NUMBER, type(None)),
    "energy_j": (*NUMBER, type(None)),
    "energy_source": (str, type(None)),
    "fields": dict,
    "phases": dict,
}
ENERGY_SOURCES = (None, "counter", "power integral")


def _check(block: dict, spec: dict, where: str) -> list[str]:
    problems = []
    for key, types in spec.items():
        if key not in block:
            problems.append(f"{where}: missing {key!r}")
        elif not isinstance(block[key], types) or (types in (int, NUMBER) and isinstance(block[key], bool)):
            problems.append(f"{where}.{key}: {type(block[key]).__name__} is not the documented type")
    return problems


def validate(doc) -> list[str]:
    if not isinstance(doc, dict):
        return ["memory.json is not an object"]
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA}")
    if not isinstance(doc.get("run_id"), (str, type(None))):
        problems.append("run_id is not a string")
    for key, spec in (("header", HEADER), ("summary", SUMMARY)):
        if not isinstance(doc.get(key), dict):
            problems.append(f"missing {key!r} object")
        else:
            problems += _check(doc[key], spec, key)
    samples = doc.get("samples")
    if not isinstance(samples, list):
        return problems + ["samples is not a list"]
    last = -1.0
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or not isinstance(s.get("t"), NUMBER):
            problems.append(f"samples[{i}] has no time 't'")
            continue
        if s["t"] < last:
            problems.append(f"samples[{i}].t goes back in time")
        last = s["t"]
        if s.get("phase") is not None and not isinstance(s["phase"], str):
            problems.append(f"samples[{i}].phase is not a string or null")
        for key, value in s.items():
            if key in ("t", "phase"):
                continue
            if key not in FIELDS:
                problems.append(f"samples[{i}].{key} is not a documented field")
            elif not isinstance(value, NUMBER):
                problems.append(f"samples[{i}].{key} is not a number")
    summary = doc.get("summary")
    if isinstance(summary, dict):
        if summary.get("energy_source") not in ENERGY_SOURCES:
            problems.append(f"summary.energy_source {summary.get('energy_source')!r} is not one of {ENERGY_SOURCES}")
        for key, stat in (summary.get("fields") or {}).items():
            if not (isinstance(stat, dict) and isinstance(stat.get("peak"), NUMBER) and isinstance(stat.get("mean"), NUMBER)):
                problems.append(f"summary.fields.{key} needs numeric 'peak' and 'mean'")
        for name, phase in (summary.get("phases") or {}).items():
            if not (isinstance(phase, dict) and isinstance(phase.get("seconds"), NUMBER)):
                problems.append(f"summary.phases.{name} needs numeric 'seconds'")
    return problems
