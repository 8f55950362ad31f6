"""pytest glue for the GPU suite: skips, per-worker GPUs, the timing report across xdist workers.

``sdverify.plugin`` calls these from its hooks so that the hooks stay one line each.  The
plugin loads in every pytest run, so torch and diffusers are imported only by the functions
that need them (a run with no gpu test and no timing report imports neither).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdverify.gpu.budgets import Budget, resolve_budget

if TYPE_CHECKING:
    from sdverify.gpu.report import TimingReport

REPORTS = pytest.StashKey[list["TimingReport"]]()
_WORKER_REPORTS = "sdverify_timing_reports"  # workeroutput key: the worker's reports as dicts


def claim_worker(config: pytest.Config, device_option: str | None) -> None:
    """On an xdist worker of an sdverify session: its share of the cores and, for a CUDA
    device on a host with GPUs, the K-th visible GPU (round robin) as its only one.

    The plugin calls this at configure time when an ``--sdverify-*`` option was given, else
    only once gpu tests are collected (before any runs, so before CUDA starts): a worker of
    another project is never touched.
    """
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker is None:
        return
    share_cpu_threads()
    if not (device_option or "cuda").startswith("cuda"):
        return
    from sdverify.gpu import devices  # torch, not CUDA: a pin still takes effect

    # One GPU per NVIDIA device node (Linux): counted without starting CUDA.
    nodes = len(glob.glob("/dev/nvidia[0-9]*"))
    gpu = devices.gpu_for_worker(worker, devices.visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), nodes))
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def share_cpu_threads() -> None:
    """Give each xdist worker its share of the cores.

    N workers each running torch's default of all-cores threads oversubscribe the CPU,
    and OpenMP's spin-waiting then makes the suite several times slower.  Set through the
    environment (read when torch starts) so that no torch import happens here.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads


def configure(config: pytest.Config, device_option: str | None) -> None:
    """Before gpu tests run: validate the device (a bad one is a usage error, not N failures).

    ``CUBLAS_WORKSPACE_CONFIG`` is deliberately left alone: ``:4096:8`` made the fp16 U-Net
    2.3x slower on an H200 (docs/gpu.md), so the timing claims would measure a
    configuration nobody generates with.
    """
    from sdverify.gpu import devices

    try:
        devices.resolve_device(device_option)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def skip_without_device(items: list[pytest.Item], device_option: str | None) -> None:
    """Mark gpu tests skipped, with the reason, when their device is missing."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from sdverify.gpu import devices

    reason = devices.cuda_skip_reason(devices.resolve_device(device_option))
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


def new_report(config: pytest.Config, report: TimingReport) -> TimingReport:
    """Register this process's report for the terminal summary."""
    config.stash.setdefault(REPORTS, []).append(report)
    return report


def budget_for(gpu_name: str, scale: float, gpu_key: str | None) -> Budget | None:
    try:
        return resolve_budget(gpu_name, scale=scale, gpu_key=gpu_key)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def send_to_controller(config: pytest.Config) -> None:
    """On an xdist worker: ship the reports to the controller, which prints the summary."""
    if hasattr(config, "workeroutput") and config.stash.get(REPORTS, []):
        config.workeroutput[_WORKER_REPORTS] = [r.to_dict() for r in config.stash.get(REPORTS, [])]


def receive_from_worker(config: pytest.Config, node) -> None:
    for data in getattr(node, "workeroutput", {}).get(_WORKER_REPORTS, []):
        from sdverify.gpu.report import TimingReport

        config.stash.setdefault(REPORTS, []).append(TimingReport.from_dict(data))


def terminal_summary(terminalreporter, config: pytest.Config, json_path: str | None) -> None:
    """Print the timing table and write the JSON (the controller's merged reports, or ours)."""
    if hasattr(config, "workerinput"):
        return
    # Workers finish in any order: sort so the table and the JSON are stable run to run.
    reports = sorted(
        (r for r in config.stash.get(REPORTS, []) if r.timings or r.peaks),
        key=lambda r: (r.environment["gpu"], r.environment["device"]),
    )
    if not reports:
        return
    from sdverify.gpu.report import format_reports, write_json

    terminalreporter.write_sep("=", "sdverify gpu timings")
    terminalreporter.write_line(format_reports(reports))
    if json_path:
        path = write_json(reports, Path(json_path))
        terminalreporter.write_line(f"timings written to {path}")
