"""The GPU suite's plumbing on CPU: timers, budgets, claims, memory claims, report, devices, skips, xdist GPUs."""

from __future__ import annotations

import json

import pytest
import torch

from sdverify import contract as C
from sdverify.gpu import budgets, claims, devices, memory, suite
from sdverify.gpu.report import TimingReport, format_reports, write_json
from sdverify.gpu.timing import Timing, measure_interleaved, paired_ratio

pytest_plugins = ["pytester"]


# --- timing -------------------------------------------------------------------------
def test_measure_interleaved_warms_up_then_alternates():
    calls: list[str] = []
    timings = measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        device="cpu",
        repeats=3,
        warmup=2,
        iterations=5,
    )
    assert calls == ["a", "b"] * 5
    assert [len(t.samples) for t in timings.values()] == [3, 3]
    assert all(s >= 0 for t in timings.values() for s in t.samples)
    assert timings["a"].iterations == 5


def test_measure_interleaved_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        measure_interleaved({"a": lambda: None}, device="cpu", repeats=0, warmup=0)


def test_median_per_second_and_paired_ratio():
    t = Timing("denoise", [0.5, 0.1, 0.2], iterations=10)
    assert t.median == 0.2 and t.per_second == pytest.approx(50)
    # Drift between rounds cancels in per-round ratios: 2x in every round.
    fast, slow = Timing("f", [1.0, 2.0, 4.0]), Timing("s", [2.0, 4.0, 8.0])
    assert paired_ratio(slow, fast) == pytest.approx(2.0)
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="no samples"):
        _ = Timing("empty").median
    with pytest.raises(ValueError, match="equal"):
        paired_ratio(fast, Timing("short", [1.0]))


# --- budgets ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, key",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", "A10G"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", "T4"),
        ("NVIDIA L40S", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_budget_lookup_by_device_name(name, key):
    spec = budgets.lookup(name)
    assert (spec.key if spec else None) == key


def test_budget_table_is_sane_and_covers_the_issue_cards():
    assert {"H100", "H200", "A100", "L4", "A10G", "T4"} <= {s.key for s in budgets.GPUS}
    for spec in budgets.GPUS:
        assert spec.peak_tflops_fp16 > spec.peak_tflops_fp32 > 0
        # A step budget times 50 steps must fit in the end-to-end budget.
        assert 0 < spec.unet_cfg_step_ms * C.NUM_INFERENCE_STEPS / 1000 < spec.end_to_end_s


def test_resolve_budget_scale_override_and_errors():
    base = budgets.resolve_budget("NVIDIA H100 80GB HBM3")
    doubled = budgets.resolve_budget("NVIDIA H100 80GB HBM3", scale=2)
    assert doubled.end_to_end_s == pytest.approx(2 * base.end_to_end_s)
    assert doubled.unet_cfg_step_s == pytest.approx(2 * base.unet_cfg_step_s)
    assert budgets.resolve_budget("NVIDIA H100 80GB HBM3", scale=0) is None
    assert budgets.resolve_budget("NVIDIA GeForce RTX 4090") is None
    assert budgets.resolve_budget("NVIDIA GeForce RTX 4090", gpu_key="a100").spec.key == "A100"
    with pytest.raises(ValueError, match="expected one of"):
        budgets.resolve_budget("x", gpu_key="V100")
    with pytest.raises(ValueError, match=">= 0"):
        budgets.resolve_budget("x", scale=-1)


# --- claims -------------------------------------------------------------------------
def test_denoise_share_passes_and_fails():
    end_to_end = Timing("reference.end_to_end", [1.0])
    assert claims.check_denoise_share(Timing("d", [0.95]), end_to_end).passed
    failed = claims.check_denoise_share(Timing("d", [0.5]), end_to_end)
    assert not failed.passed and "50.0%" in failed.message


def test_ratio_claims_pass_and_fail():
    one, two = Timing("batched", [1.0, 1.0]), Timing("two", [2.0, 2.0])
    assert claims.check_ratio(claims.BATCHED_CFG, one, two).passed
    assert not claims.check_ratio(claims.BATCHED_CFG, one, Timing("two", [1.0, 1.0])).passed  # equal is not faster
    fp16 = Timing("fp16", [1.0, 1.0])
    assert claims.check_ratio(claims.FP16_SPEEDUP, fp16, Timing("fp32", [1.5, 1.5])).passed
    assert not claims.check_ratio(claims.FP16_SPEEDUP, fp16, Timing("fp32", [1.4, 1.4])).passed
    pipeline = Timing("p", [1.0, 1.0])
    assert claims.check_ratio(claims.REFERENCE_VS_PIPELINE, Timing("r", [1.1, 1.1]), pipeline).passed
    slow = claims.check_ratio(claims.REFERENCE_VS_PIPELINE, Timing("r", [1.2, 1.2]), pipeline)
    assert not slow.passed and "1.200" in slow.message


def test_budget_checks_name_the_card_and_the_override():
    budget = budgets.resolve_budget("NVIDIA A100-SXM4-80GB")
    fast = claims.check_budgets(budget, Timing("end_to_end", [1.0]), Timing("unet", [0.01]))
    assert all(r.passed for r in fast)
    slow = claims.check_budgets(budget, Timing("end_to_end", [100.0]), Timing("unet", [0.01]))
    assert [r.passed for r in slow] == [False, True]
    assert "A100" in slow[0].clause and "--sdverify-budget-scale" in slow[0].message


# --- report -------------------------------------------------------------------------
def _report(gpu: str = "Fake GPU") -> TimingReport:
    report = TimingReport(
        {
            "gpu": gpu,
            "device": "cuda:0",
            "torch": "2.x",
            "cuda": "12.x",
            "diffusers": "0.x",
            "preset": "sd15",
            "dtype": "float16",
        }
    )
    report.add(Timing("reference.end_to_end", [2.0, 2.0]))
    report.add(Timing("reference.denoise", [1.9, 1.9], iterations=50, share_of="reference.end_to_end"))
    return report


def test_report_rows_table_and_json(tmp_path):
    rows = {r["stage"]: r for r in _report().rows()}
    assert rows["reference.denoise"]["share"] == pytest.approx(0.95)
    assert rows["reference.denoise"]["it_per_s"] == pytest.approx(50 / 1.9)
    assert rows["reference.end_to_end"]["share"] is None
    table = format_reports([_report("GPU A"), _report("GPU B")])
    assert "95.0%" in table and "1900.00" in table and "GPU A" in table and "GPU B" in table
    path = write_json([_report()], tmp_path / "ci" / "timings.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "sdverify-gpu-timings/1" and data["reports"][0]["rows"][1]["stage"] == "reference.denoise"


def test_report_carries_peak_memory_through_json_and_table():
    report = _report()
    report.add_peak(memory.Peak("reference.generation", 3_000_000_000, 2_100_000_000))
    again = TimingReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.peaks == report.peaks
    assert "reference.generation  3.000    2.100        0.900" in format_reports([again])


# --- memory claims --------------------------------------------------------------------
def test_generation_ceiling_is_weights_plus_vae_feature_maps_plus_slack():
    model = torch.nn.Linear(10, 10).half()  # 110 parameters, 2 bytes each
    ceiling = memory.generation_ceiling([model], torch.float16)
    feature_map = C.MEMORY_VAE_FEATURE_MAP_CHANNELS * C.IMAGE_SIZE**2 * 2
    assert ceiling.weight_bytes == 220
    assert ceiling.activation_bytes == C.MEMORY_LIVE_FEATURE_MAPS * feature_map
    assert ceiling.total == 220 + ceiling.activation_bytes + C.MEMORY_SLACK_BYTES
    # SD1.5 in float16: the derivation lands just under diffusers' 3.75 GB (contract.py).
    sd15 = C.PARAMS_TOTAL * 2 + ceiling.activation_bytes + C.MEMORY_SLACK_BYTES
    assert 3.6e9 < sd15 < 3.75e9


def test_memory_claims_pass_and_fail_naming_the_figures():
    ceiling = memory.Ceiling(2_000_000_000, 1_000_000_000, 500_000_000)
    under = memory.Peak("reference.generation", 3_000_000_000, 2_000_000_000)
    over = memory.Peak("reference.generation", 3_600_000_000, 2_000_000_000)
    assert memory.check_ceiling(under, ceiling).passed
    failed = memory.check_ceiling(over, ceiling)
    assert not failed.passed and "needed 3.60 GB" in failed.message and "1.60 GB allocated" in failed.message
    # What earlier runs left resident does not count against this generation.
    assert memory.check_ceiling(memory.Peak("g", 9_000_000_000, 8_000_000_000), ceiling).passed
    pipe = memory.Peak("pipeline.generation", 3_000_000_000, 2_000_000_000)
    limit = C.MAX_REFERENCE_OVER_PIPELINE_MEMORY
    assert memory.check_reference_vs_pipeline(memory.Peak("r", int(3e9 * limit), 0), pipe).passed
    result = memory.check_reference_vs_pipeline(memory.Peak("r", int(3e9 * limit) + 10**6, 0), pipe)
    assert not result.passed and f"limit {limit}" in result.message


def test_measure_peak_refuses_a_device_without_an_allocator_counter():
    with pytest.raises(ValueError, match="CUDA allocator"):
        memory.measure_peak("x", lambda: None, torch.device("cpu"))


# --- devices ------------------------------------------------------------------------
def test_resolve_device():
    assert devices.resolve_device(None) == torch.device("cuda")
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    for bad in ("mps", "gpu"):
        with pytest.raises(ValueError, match="expected 'cuda'"):
            devices.resolve_device(bad)


def test_cuda_skip_reason_names_the_missing_device(monkeypatch):
    assert devices.cuda_skip_reason(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in devices.cuda_skip_reason(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.cuda_skip_reason(torch.device("cuda", 1)) is None
    assert "only 2 visible" in devices.cuda_skip_reason(torch.device("cuda", 2))


def test_one_gpu_per_xdist_worker_round_robin():
    assert devices.visible_gpus("5, 7", 0) == ["5", "7"]
    assert devices.visible_gpus(None, 3) == ["0", "1", "2"]
    assert devices.visible_gpus("", 4) == []  # CUDA_VISIBLE_DEVICES="" hides every GPU
    gpus = devices.visible_gpus(None, 2)
    assert [devices.gpu_for_worker(f"gw{i}", gpus) for i in range(4)] == ["0", "1", "0", "1"]
    assert devices.gpu_for_worker("gw0", []) is None
    with pytest.raises(ValueError, match="gw<N>"):
        devices.worker_index("master")


# --- suite helpers ------------------------------------------------------------------
def test_build_on_device_allocates_on_the_given_device():
    c = suite.build_on_device("tiny", 0, "meta", torch.float16)
    for model in (c.text_encoder, c.unet, c.vae):
        assert {p.device.type for p in model.parameters()} == {"meta"}
        assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert c.scheduler.betas.device.type == "cpu"


def test_check_run_names_the_broken_stage():
    good = suite.TensorInfo(C.LATENT_SHAPE, torch.float16, True)
    record = suite.RunRecord(
        text_outputs=[suite.TensorInfo(C.EMBEDDINGS_SHAPE, torch.float16, True)] * 2,
        unet_outputs=[suite.TensorInfo((2, 4, 64, 64), torch.float16, True)] * 3,
        steps=[{"noise_pred": good, "latents": good, "prev_latents": good}] * 2
        + [
            {
                "noise_pred": good,
                "latents": good,
                "prev_latents": suite.TensorInfo(C.LATENT_SHAPE, torch.float16, False),
            }
        ],
    )
    ids = torch.zeros(C.TOKEN_IDS_SHAPE, dtype=torch.int64)
    image = torch.zeros(C.IMAGE_SHAPE, dtype=torch.float32)
    results = {r.id: r for r in suite.check_run(record, ids, image, torch.float16, num_steps=4)}
    assert results["stages.embeddings"].passed and results["stages.noise_pred"].passed
    assert (
        "#2 of 3" in results["stages.prev_latents"].message and "non-finite" in results["stages.prev_latents"].message
    )
    assert "3 scheduler steps for 4 timesteps" in results["stages.step_count"].message
    assert "dtype torch.float32" in results["stages.image"].message


# --- pytest integration (inner pytest runs) -----------------------------------------
INNER_INI = "[pytest]\nmarkers =\n    gpu: needs CUDA\n"


def test_gpu_tests_skip_with_a_reason_naming_the_missing_device(pytester):
    pytester.makeini(INNER_INI)
    pytester.makepyfile("import pytest\n\n@pytest.mark.gpu\ndef test_needs_cuda():\n    assert False\n")
    # cuda:99 is missing on a CPU machine and on any GPU runner alike.
    result = pytester.runpytest("-m", "gpu", "--sdverify-device", "cuda:99", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no CUDA device*"])


def test_bad_device_is_a_usage_error(pytester):
    pytester.makeini(INNER_INI)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--sdverify-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'tpu' is not usable*expected 'cuda'*"])


@pytest.mark.slow
def test_xdist_workers_get_one_gpu_each_and_ship_timings(pytester, monkeypatch):
    """A fake device list: two workers see GPUs 5 and 7; their timings merge in one report."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import os
        from sdverify.gpu import session
        from sdverify.gpu.report import TimingReport
        from sdverify.gpu.timing import Timing

        def test_worker(request):
            gpu = os.environ["CUDA_VISIBLE_DEVICES"]
            report = TimingReport({"gpu": "fake GPU " + gpu, "device": "cuda:0", "torch": "t", "cuda": "c",
                                   "diffusers": "d", "preset": "sd15", "dtype": "float16"})
            report.add(Timing("stage", [0.25]))
            session.new_report(request.config, report)
        """
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    out = pytester.path / "timings.json"
    result = pytester.runpytest(
        "-p", "xdist", "-p", "no:benchmark", "-n", "2", "--dist", "each", "--sdverify-timing-json", str(out)
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*sdverify gpu timings*", "*fake GPU 5*", "*fake GPU 7*"])
    gpus = [r["environment"]["gpu"] for r in json.loads(out.read_text())["reports"]]
    assert gpus == ["fake GPU 5", "fake GPU 7"]
