"""The GPU suite's timing report: a table for pytest's terminal summary and JSON for CI history.

One :class:`TimingReport` per process (per GPU under pytest-xdist); the controller merges
the workers' reports, so the table has a row per stage per GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch

from sdverify.gpu.devices import device_name
from sdverify.gpu.memory import Peak, format_peaks
from sdverify.gpu.timing import Timing

SCHEMA = "sdverify-gpu-timings/1"


def environment(device: torch.device, preset: str, dtype: torch.dtype) -> dict[str, str]:
    """What a timing depends on besides the code: card, library versions, workload."""
    return {
        "gpu": device_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "diffusers": diffusers.__version__,
        "preset": preset,
        "dtype": str(dtype).replace("torch.", ""),
    }


@dataclass
class TimingReport:
    environment: dict[str, str]
    timings: dict[str, Timing] = field(default_factory=dict)
    peaks: dict[str, Peak] = field(default_factory=dict)  # peak memory per measured run (CUDA only)

    def add(self, timing: Timing) -> Timing:
        self.timings[timing.name] = timing
        return timing

    def add_peak(self, peak: Peak) -> Peak:
        self.peaks[peak.name] = peak
        return peak

    def rows(self) -> list[dict[str, Any]]:
        """One row per timing: stage, median ms, share of its parent timing, it/s, GPU."""
        rows = []
        for t in self.timings.values():
            parent = self.timings.get(t.share_of) if t.share_of else None
            rows.append(
                {
                    "stage": t.name,
                    "median_ms": 1000 * t.median,
                    "share": t.median / parent.median if parent else None,
                    "it_per_s": t.per_second,
                    "repeats": len(t.samples),
                    "gpu": self.environment["gpu"],
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": dict(self.environment),
            "timings": [t.to_dict() for t in self.timings.values()],
            "rows": self.rows(),
            "memory": [p.to_dict() for p in self.peaks.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingReport:
        report = cls(dict(data["environment"]))
        for t in data["timings"]:
            report.add(Timing.from_dict(t))
        for p in data.get("memory", []):
            report.add_peak(Peak(**p))
        return report


def format_reports(reports: list[TimingReport]) -> str:
    """Aligned text table; each report is headed by its card and library versions."""
    blocks = []
    for report in reports:
        env = report.environment
        head = (
            f"{env['gpu']} [{env['device']}] — torch {env['torch']} (CUDA {env['cuda']}), "
            f"diffusers {env['diffusers']}, preset {env['preset']}, {env['dtype']}"
        )
        table = [("stage", "median ms", "share", "it/s", "n", "GPU")]
        for r in report.rows():
            share = f"{100 * r['share']:.1f}%" if r["share"] is not None else ""
            table.append(
                (r["stage"], f"{r['median_ms']:.2f}", share, f"{r['it_per_s']:.2f}", str(r["repeats"]), r["gpu"])
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if report.peaks:
            lines += ["", "peak memory (torch.cuda.max_memory_allocated):", format_peaks(list(report.peaks.values()))]
        blocks.append("\n".join([head, *lines]))
    return "\n\n".join(blocks)


def reports_to_json(reports: list[TimingReport]) -> dict[str, Any]:
    return {"schema": SCHEMA, "reports": [r.to_dict() for r in reports]}


def write_json(reports: list[TimingReport], path: str | Path) -> Path:
    """Write the reports where CI collects them (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports_to_json(reports), indent=2) + "\n")
    return path
