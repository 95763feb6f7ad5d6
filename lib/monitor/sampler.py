"""The background sampler: reads a backend every `interval` seconds on a daemon thread.

It keeps timestamped samples (tagged with the phase the training loop is in),
running peaks and means of every field over all samples, per-phase time and
peaks, the allocator's per-phase high-water marks, and the run's energy. It
never touches the training thread except through `set_phase`, and a failing
read is reported once and skipped. `to_dict()` is the memory.json document
(schema in docs/monitoring.md, checked by `lib.monitor.schema.validate`).

Long runs stay small on disk: past `max_samples` stored samples every other
one is dropped and only every `stride`-th new one is kept; the summary still
covers every sample read.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
import time
from datetime import datetime, timezone

from lib.monitor.base import FIELDS, Backend, process_peak_rss_mib
from lib.results import write_json

SCHEMA = 1


class Monitor:
    def __init__(
        self,
        backend: Backend | None,
        interval: float = 1.0,
        *,
        allocator=None,
        run_id: str | None = None,
        warnings: list[str] | None = None,
        on_sample=None,
        max_samples: int = 20000,
    ):
        if backend is not None and not interval > 0:
            raise ValueError(f"monitor interval must be > 0 seconds, got {interval}")
        self.backend, self.interval, self.allocator = backend, float(interval), allocator
        self.run_id, self.on_sample, self.max_samples = run_id, on_sample, max_samples
        self.warnings: list[str] = list(warnings or [])
        self.samples: list[dict] = []
        self.stride, self.count, self.errors = 1, 0, 0
        self.stats: dict[str, list[float]] = {}  # field -> [peak, sum, n]
        self.phase: str | None = None
        self.phases: dict[str, dict] = {}
        self._phase_started = None
        self._energy_integral, self._last_power = 0.0, None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.device = backend.describe() if backend else None
        self.started_unix = time.time()
        self._t0 = time.monotonic()
        self.stopped_t: float | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "Monitor":
        if self.backend is not None and self._thread is None:
            self._take()
            self._thread = threading.Thread(target=self._loop, name="memory-monitor", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def stop(self) -> None:
        """Stop sampling (idempotent): one last sample, close the phase and the backend."""
        if self.stopped_t is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval))
            self._take()
        self.set_phase(None)
        if self.allocator is not None:
            self.allocator.finish()
        if self.backend is not None:
            self.backend.close()
        self.stopped_t = time.monotonic() - self._t0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- phases ----------------------------------------------------------
    def set_phase(self, phase: str | None) -> None:
        """The training loop is now in `phase` ("train", "eval", or None between phases)."""
        now = time.monotonic()
        with self._lock:
            if self.phase is not None:
                p = self.phases.setdefault(self.phase, {"seconds": 0.0, "entries": 0})
                p["seconds"] += now - self._phase_started
            if phase is not None:
                self.phases.setdefault(phase, {"seconds": 0.0, "entries": 0})["entries"] += 1
            self.phase, self._phase_started = phase, now
        if self.allocator is not None:
            self.allocator.mark(phase)

    @contextlib.contextmanager
    def in_phase(self, phase: str):
        self.set_phase(phase)
        try:
            yield self
        finally:
            self.set_phase(None)

    # -- sampling --------------------------------------------------------
    def _take(self) -> None:
        t = time.monotonic() - self._t0
        try:
            values = self.backend.read()
            if self.allocator is not None:
                values.update(self.allocator.read())
        except Exception as e:
            self.errors += 1
            if self.errors == 1:
                self._warn(f"monitor: {self.backend.name} read failed ({type(e).__name__}: {e}); skipping such samples")
            return
        with self._lock:
            sample = {"t": round(t, 3), "phase": self.phase}
            sample.update({k: round(float(v), 3) for k, v in values.items() if v is not None})
            self._account(sample)
            keep = self.count % self.stride == 0
            self.count += 1
            if keep:
                self.samples.append(sample)
                if len(self.samples) > self.max_samples:
                    self.samples = self.samples[::2]
                    self.stride *= 2
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception as e:  # a tracker's problem must not stop sampling
                self._warn(f"monitor: sample callback failed ({type(e).__name__}: {e})")
                self.on_sample = None

    def _account(self, sample: dict) -> None:
        for key, value in sample.items():
            if key in ("t", "phase"):
                continue
            s = self.stats.setdefault(key, [value, 0.0, 0])
            s[0] = max(s[0], value)
            s[1] += value
            s[2] += 1
        if "power_w" in sample:
            if self._last_power is not None:
                t0, w0 = self._last_power
                self._energy_integral += (sample["t"] - t0) * (w0 + sample["power_w"]) / 2
            self._last_power = (sample["t"], sample["power_w"])
        field = self.backend.MEMORY_FIELD
        if sample["phase"] is not None and field in sample:
            p = self.phases.setdefault(sample["phase"], {"seconds": 0.0, "entries": 0})
            p["peak_memory_mib"] = max(p.get("peak_memory_mib", 0.0), sample[field])
            p["samples"] = p.get("samples", 0) + 1

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(message, file=sys.stderr, flush=True)

    # -- results ---------------------------------------------------------
    def peak_memory_mib(self) -> float:
        """The run's peak memory: the allocator's high-water mark on a GPU, else the
        process's resident-memory high-water mark (OS counter or samples, the larger)."""
        if self.allocator is not None:
            self.allocator.mark(self.allocator.phase)  # fold in the phase still open
            return self.allocator.peak_allocated_mib
        sampled = self.stats.get("rss_mib", [0.0])[0]
        return max(sampled, process_peak_rss_mib())

    def peak_source(self) -> str:
        if self.allocator is not None:
            return "torch.cuda.max_memory_allocated"
        return "process resident memory high-water mark"

    def summary(self) -> dict:
        with self._lock:
            fields = {k: {"peak": s[0], "mean": s[1] / s[2]} for k, s in self.stats.items() if s[2]}
            phases = {name: dict(p) for name, p in self.phases.items()}
            if self.phase is not None:  # count the phase still open
                phases[self.phase]["seconds"] += time.monotonic() - self._phase_started
        if self.allocator is not None:
            for name, p in self.allocator.phases.items():
                phases.setdefault(name, {"seconds": 0.0, "entries": 0}).update(p)
        energy, source = None, None
        if "energy_j" in self.stats:
            energy, source = self.stats["energy_j"][0], "counter"
        elif self._last_power is not None:
            energy, source = self._energy_integral, "power integral"
        memory_field = self.backend.MEMORY_FIELD if self.backend else None
        mem = fields.get(memory_field, {})
        duration = self.stopped_t if self.stopped_t is not None else time.monotonic() - self._t0
        return {
            "samples": self.count,
            "stored_samples": len(self.samples),
            "stride": self.stride,
            "errors": self.errors,
            "duration_s": round(duration, 3),
            "peak_memory_mib": self.peak_memory_mib(),
            "peak_memory_source": self.peak_source(),
            "memory_field": memory_field,
            "peak_sampled_mib": mem.get("peak"),
            "mean_sampled_mib": mem.get("mean"),
            "energy_j": energy,
            "energy_source": source,
            "fields": fields,
            "phases": phases,
        }

    def header(self) -> dict:
        return {
            "backend": self.backend.name if self.backend else None,
            "device": self.device,
            "allocator": self.allocator is not None,
            "interval_s": self.interval,
            "started": datetime.fromtimestamp(self.started_unix, timezone.utc).isoformat(timespec="seconds"),
            "started_unix": self.started_unix,
            "host": platform.node(),
            "pid": os.getpid(),
            "warnings": list(self.warnings),
            "fields": {k: FIELDS[k] for k in sorted(self.stats) if k in FIELDS},
        }

    def to_dict(self) -> dict:
        summary = self.summary()
        header = self.header()
        with self._lock:
            samples = list(self.samples)
        return {"schema": SCHEMA, "run_id": self.run_id, "header": header, "samples": samples, "summary": summary}

    def write(self, path) -> None:
        """Write memory.json atomically (a monitor that is off writes nothing)."""
        if self.backend is not None:
            write_json(path, self.to_dict())
