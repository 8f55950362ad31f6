"""Per-function verdicts: the sandbox's raw outputs against the reference, in the grader.

Everything here runs in the trusted process on values the child sent back; the
expected values, the property checks of :mod:`sdverify.properties` and the mistake
simulations are computed here too, so a submission cannot reach any of them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdverify import contract as C
from sdverify import reference as R
from sdverify import zoo
from sdverify.checker import mistakes
from sdverify.checker.cases import build_plan, draw
from sdverify.checker.points import Graded, Role
from sdverify.checker.probes import Env, Plan, Probe, is_case, run_probe
from sdverify.checker.protocol import Outcome
from sdverify.contract import API_NAMES
from sdverify.mistakes import Mistake, named, simulated
from sdverify.properties.cfg import cfg_algebra
from sdverify.properties.embeddings import embedding_properties
from sdverify.properties.tokens import token_id_properties
from sdverify.properties.untrusted import dims, expectation, tensor_result
from sdverify.results import CheckResult, compare_tensors, fail, ok
from sdverify.tokenizer import text_token_count
from sdverify.untrusted.value import UntrustedValue

CFG_SCALES = (7.5, 3.0)  # the two weights of the CFG algebra properties
# Properties that are interface clauses (what the next stage needs): gates; the others are diagnostics.
_INTERFACE = frozenset(
    {
        "tokens.shape_dtype",
        "embeddings.shape",
        "embeddings.dtype",
        "embeddings.device",
        "embeddings.finite",
        "cfg.shape_dtype_device",
    }
)


@dataclass
class CheckContext:
    """Trusted state shared by every submission checked with the same settings."""

    env: Env
    plan: Plan
    expected: dict[str, list[torch.Tensor]]
    weights: Path
    simulated: dict[tuple[str, str, str], list[torch.Tensor] | None]  # (mistake, probe id, its args)


def _plain(value: Any) -> torch.Tensor:
    if isinstance(value, Image.Image):
        return torch.from_numpy(np.array(value))
    return value.detach().cpu()


def _record_cfg_calls() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """The calls ``cfg_algebra`` makes, recorded on the reference, to replay on a submission."""
    calls: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def recorder(u: torch.Tensor, c: torch.Tensor, w: float) -> torch.Tensor:
        calls.append((u.clone(), c.clone(), float(w)))
        return R.cfg_combine(u, c, w)

    cfg_algebra(recorder, *_cfg_inputs(), *CFG_SCALES)
    return calls


def _cfg_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    return torch.randn(C.LATENT_SHAPE, generator=g), torch.randn(C.LATENT_SHAPE, generator=g)


@functools.lru_cache(maxsize=4)
def context(preset: str, device: str, weights: str | None) -> CheckContext:
    """Components, inputs, probes and expected values (built once per process and settings).

    The grader's components are private in-memory copies, never views of a file a child can
    reach; the weights folder is verified once here, before any student code runs, so that
    later changes are measured against a known-good state.
    """
    folder = zoo.weights_dir(preset, 0, weights)
    changed = zoo.verify(folder)
    if changed:
        folder = zoo.repair(folder)
    env = Env(zoo.load_components(folder, device, private=True), {}, torch.device(device), torch.float32)
    plan = build_plan(env, _record_cfg_calls())
    env.inputs = plan.inputs
    expected = {p.id: [_plain(v) for v in run_probe(R, env, p)] for p in plan.probes}
    return CheckContext(env, plan, expected, folder, {})


def with_drawn(ctx: CheckContext, seed: int) -> CheckContext:
    """``ctx`` with the cases drawn from ``seed`` (:func:`sdverify.checker.cases.draw`) added to
    its plan, and their expected values; it shares ``ctx``'s components and caches."""
    probes = draw(seed)
    expected = {**ctx.expected, **{p.id: [_plain(v) for v in run_probe(R, ctx.env, p)] for p in probes}}
    plan = Plan([*ctx.plan.probes, *probes], ctx.plan.inputs, seed)
    return CheckContext(ctx.env, plan, expected, ctx.weights, ctx.simulated)


# ----------------------------------------------------------------------- helpers
def _student_tensor(value: UntrustedValue) -> Any:
    """The value as a tensor on its reported device, or a stand-in whose type name is the student's."""
    if value.kind == "tensor" and value.tensor is not None:
        return value.tensor.to(value.desc.get("device", "cpu"))
    return type(value.type_name, (), {})()


def _returned(id: str, probe: Probe, outcome: Outcome | None, clause: str) -> Outcome | CheckResult:
    """The outcome of a probe that returned, or the failure saying why it did not."""
    if outcome is None:
        return fail(id, f"{probe.id}: no result came back", clause)
    if outcome.status == "missing":
        return fail(id, f"not implemented: the submission defines no {probe.function}()", clause, status="missing")
    if outcome.status != "ok":
        return fail(id, f"{probe.id}: {probe.function}(...) {outcome.message}", clause, status=outcome.status)
    return outcome


def _with_mistake(result: CheckResult, found: mistakes.Found | None) -> CheckResult:
    if found is None:
        return result
    mistake, fields = found
    return named(result, mistake, **fields)


def _matches(function: str, values: list[UntrustedValue], target: list[torch.Tensor]) -> bool:
    atol, rtol = FUNCTIONS[function].tolerance
    if len(values) != len(target):
        return False
    for value, want in zip(values, target):
        if value.tensor is None or tuple(value.tensor.shape) != tuple(want.shape):
            return False
        if not compare_tensors("match", value.tensor.double(), want.double(), atol=atol, rtol=rtol).passed:
            return False
    return True


def _with_function(name: str, fn: Any) -> SimpleNamespace:
    """The reference API with one function replaced: how a known mistake is simulated."""
    return SimpleNamespace(**{**{n: getattr(R, n) for n in API_NAMES}, name: fn})


def _simulated(ctx: CheckContext, mistake: Mistake, impl: Callable, probe: Probe) -> list[torch.Tensor] | None:
    key = (mistake.id, probe.id, json.dumps(probe.args, sort_keys=True))  # a drawn case's id recurs with new args
    if key not in ctx.simulated:
        try:
            ctx.simulated[key] = [_plain(v) for v in run_probe(_with_function(probe.function, impl), ctx.env, probe)]
        except Exception:
            ctx.simulated[key] = None
    return ctx.simulated[key]


def name_mistake(ctx: CheckContext, probe: Probe, values: list[UntrustedValue]) -> mistakes.Found | None:
    """The known mistake whose signature ``values`` carry, if any."""
    for value in values:
        found = mistakes.from_value(probe.function, value)
        if found:
            return found
        if value.kind == "tensor" and value.tensor is not None:
            found = mistakes.from_statistics(probe.function, value.tensor)
            if found:
                return found
    for mistake, impl in simulated(probe.function):
        target = _simulated(ctx, mistake, impl, probe)
        if target is not None and _matches(probe.function, values, target):
            return mistake.id, {}
    if probe.function == "cfg_combine":
        a = probe.args
        return mistakes.from_cfg(values, ctx.plan.inputs[a["u"]], ctx.plan.inputs[a["c"]], a["w"])
    return None


# -------------------------------------------------------------------- the checks
def reference_check(ctx: CheckContext, id: str, probes: list[Probe], outcomes: dict[str, Outcome]) -> CheckResult:
    """The submission's values equal the reference's on every probe, within the contract's tolerance."""
    function = probes[0].function
    clause = FUNCTIONS[function].clause
    atol, rtol = FUNCTIONS[function].tolerance
    worst = 0.0
    for probe in probes:
        outcome = _returned(id, probe, outcomes.get(probe.id), clause)
        if isinstance(outcome, CheckResult):
            return outcome
        expected = ctx.expected[probe.id]
        for step, (value, want) in enumerate(zip(outcome.values, expected)):
            where = _where(probe, step, len(expected))
            if value.tensor is None or (function == "to_pil") != (value.kind == "image"):
                what = "a PIL.Image" if function == "to_pil" else expectation(want.shape)
                result = fail(id, f"{where}: returned {value.describe()}, expected {what}", clause)
                return _with_mistake(result, name_mistake(ctx, probe, outcome.values))
            result = compare_tensors(id, value.tensor.double(), want.double(), atol=atol, rtol=rtol, clause=clause)
            if not result.passed:
                result = replace(
                    result, message=f"{where}: {result.message}", details={**result.details, "probe": probe.id}
                )
                return _with_mistake(result, name_mistake(ctx, probe, outcome.values))
            worst = max(worst, result.details.get("max_abs_diff", 0.0))
        if len(outcome.values) != len(expected):
            return fail(id, f"{probe.id}: {len(outcome.values)} values came back, expected {len(expected)}", clause)
    return ok(id, clause, max_abs_diff=worst, probes=[p.id for p in probes])


def _where(probe: Probe, index: int, count: int) -> str:
    """Which returned value a message is about: ``denoise_step[pndm] after step 2``."""
    names = FUNCTIONS[probe.function].value_names
    if names:
        return f"{probe.id}, {names[index]}"
    return probe.id + (f" after step {index + 1}" if count > 1 else "")


def contract_check(
    id: str, probes: list[Probe], outcomes: dict[str, Outcome], *, shape: tuple[int, ...], ctx: CheckContext
) -> CheckResult:
    """Every returned value is a finite tensor of ``shape`` in the run's dtype, on its device.

    A failure names the first failing probe and lists all of them (``failed_cases``): the
    gate withholds only their points."""
    clause = f"returns a finite {dims(shape)} {ctx.env.dtype} tensor on {ctx.env.device}"
    failures: list[CheckResult] = []
    failed: list[str] = []
    for probe in probes:
        outcome = _returned(id, probe, outcomes.get(probe.id), clause)
        if isinstance(outcome, CheckResult):
            failures.append(outcome)
            failed.append(probe.id)
            continue
        for value in outcome.values:
            failure = tensor_result(
                id,
                _student_tensor(value),
                shape=shape,
                dtype=ctx.env.dtype,
                device=ctx.env.device,
                finite=True,
                clause=clause,
            )
            if isinstance(failure, CheckResult):
                failure = replace(failure, message=f"{probe.id}: {failure.message}")
                failures.append(_with_mistake(failure, mistakes.from_value(probe.function, value)))
                failed.append(probe.id)
                break
    if not failures:
        return ok(id, clause)
    first = failures[0]
    return replace(first, details={**first.details, "failed_cases": failed})


def reproducible_check(id: str, first: Probe, again: Probe, outcomes: dict[str, Outcome]) -> CheckResult:
    """Two runs with generators seeded alike give identical values."""
    clause = "the same generator seed gives the same result"
    for probe in (first, again):
        returned = _returned(id, probe, outcomes.get(probe.id), clause)
        if isinstance(returned, CheckResult):
            return returned
    a, b = outcomes[first.id].values, outcomes[again.id].values
    tensors = []
    for value in a + b:
        if value.kind != "tensor" or value.tensor is None:
            result = fail(id, f"{first.id}: returned {value.describe()}, cannot compare two runs", clause)
            return _with_mistake(result, mistakes.from_value(first.function, value))
        tensors.append(value.tensor)
    if len(a) != len(b):
        return fail(id, f"{first.id}: the two runs returned {len(a)} and {len(b)} values", clause)
    for x, y in zip(tensors[: len(a)], tensors[len(a) :]):
        if x.shape != y.shape or not torch.equal(x, y):
            return named(fail(id, "", clause), mistakes.NOT_REPRODUCIBLE[first.function])
    return ok(id, clause)


def _merged(function: str, per_probe: list[tuple[Probe, list[CheckResult]]]) -> list[CheckResult]:
    """One result per property id across probes: failed with the first failing probe named and
    every failing probe listed (``failed_cases``)."""
    merged: dict[str, CheckResult] = {}
    failed: dict[str, list[str]] = {}
    for probe, results in per_probe:
        for r in results:
            key = f"{function}.{r.id}"
            if not r.passed:
                failed.setdefault(key, []).append(probe.id)
            if key not in merged or (merged[key].passed and not r.passed):
                says_case = r.passed or r.message.startswith(probe.id)
                merged[key] = replace(r, id=key, message=r.message if says_case else f"{probe.id}: {r.message}")
    return [
        replace(r, details={**r.details, "failed_cases": failed[k]}) if k in failed else r for k, r in merged.items()
    ]


def _value_properties(
    ctx: CheckContext,
    function: str,
    outcomes: dict[str, Outcome],
    properties: Callable[[Probe, Any], list[CheckResult]],
) -> list[CheckResult]:
    """A property function of :mod:`sdverify.properties` on every probe's value, merged per property."""
    per_probe = []
    for probe in ctx.plan.of(function):
        outcome = _returned("x", probe, outcomes.get(probe.id), "")
        if isinstance(outcome, CheckResult):  # this case failed every property: the others still count
            ids = [r.id for r in properties(probe, ctx.expected[probe.id][0])]
            per_probe.append((probe, [replace(outcome, id=id) for id in ids]))
            continue
        found = mistakes.from_value(function, outcome.values[0])
        results = [_with_mistake(r, found) for r in properties(probe, _student_tensor(outcome.values[0]))]
        per_probe.append((probe, results))
    return _merged(function, per_probe)


def _replayer(outcomes: list[Outcome]) -> Callable:
    """A ``cfg_combine`` that answers the recorded calls with the submission's recorded answers."""
    answers = iter(outcomes)

    def cfg_combine(u: torch.Tensor, c: torch.Tensor, w: float) -> Any:
        outcome = next(answers, None)
        if outcome is None or outcome.status != "ok":
            raise _replayed_error(outcome.message if outcome else "gave no answer")
        out, u_after, c_after = outcome.values
        for given, after in ((u, u_after), (c, c_after)):  # replay in-place changes to the inputs
            if after.tensor is not None and after.tensor.shape == given.shape:
                given.copy_(after.tensor.to(given.dtype))
        return _student_tensor(out)

    return cfg_combine


class SubmissionError(Exception):
    """How the submission's function failed (timeout, crash), replayed in the grader."""


def _replayed_error(message: str) -> Exception:
    """The submission's exception, rebuilt by name (``raised ValueError: ...``) so messages read the same."""
    name, sep, text = message.removeprefix("raised ").partition(": ")
    if message.startswith("raised ") and sep and name.isidentifier():
        return type(name, (Exception,), {})(text)
    return SubmissionError(message)


# The contract and property checks of one API function (gates and diagnostics, no points).
PropertyRunner = Callable[["CheckContext", str, dict[str, Outcome]], list[CheckResult]]


def _token_properties(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[CheckResult]:
    tok = ctx.env.components.tokenizer
    return _value_properties(
        ctx, function, outcomes, lambda p, v: token_id_properties(v, text_token_count(tok, p.args["prompt"]))
    )


def _embedding_properties(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[CheckResult]:
    return _value_properties(
        ctx, function, outcomes, lambda p, v: embedding_properties(v, dtype=ctx.env.dtype, device=ctx.env.device)
    )


def _cfg_properties(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[CheckResult]:
    probes = ctx.plan.of(function)
    calls = [p for p in probes if not is_case(p)]
    missing = _returned("x", probes[0], outcomes.get(probes[0].id), "")
    if isinstance(missing, CheckResult) and missing.details.get("status") == "missing":
        ids = [r.id for r in cfg_algebra(R.cfg_combine, *_cfg_inputs(), *CFG_SCALES)]
        return [replace(missing, id=f"cfg_combine.{id}") for id in ids]
    results = cfg_algebra(_replayer([outcomes[p.id] for p in calls]), *_cfg_inputs(), *CFG_SCALES)
    return [replace(r, id=f"cfg_combine.{r.id}") for r in results]


def _contract(shape: tuple[int, ...]) -> PropertyRunner:
    """The shape/dtype/finiteness contract of a function returning a tensor of ``shape``."""

    def properties(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[CheckResult]:
        return [contract_check(f"{function}.contract", ctx.plan.of(function), outcomes, shape=shape, ctx=ctx)]

    return properties


def _no_properties(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[CheckResult]:
    return []


@dataclass(frozen=True)
class FunctionSpec:
    """How the checker grades one API function; a new function is one entry of :data:`FUNCTIONS`."""

    clause: str  # the contract clause its reference check states
    tolerance: tuple[float, float]  # (atol, rtol) of the reference check; justified in sdverify.contract
    properties: PropertyRunner = _no_properties  # contract and property checks: gates and diagnostics, no points
    value_names: tuple[str, ...] = ()  # what each returned value is, where a probe returns several things


FUNCTIONS: dict[str, FunctionSpec] = {
    "tokenize": FunctionSpec(
        "ids equal the SD1.5 CLIP tokenizer's (padding='max_length', max_length=77, truncation)",
        (C.CHECK_ATOL_TOKENS, 0.0),
        _token_properties,
    ),
    "encode_prompt": FunctionSpec(
        "embeddings equal CLIP's last_hidden_state of the padded ids, no attention mask",
        (C.CHECK_ATOL_EMBEDDINGS, 0.0),
        _embedding_properties,
    ),
    "initial_latents": FunctionSpec(
        "latents are randn(generator) × scheduler.init_noise_sigma",
        (C.CHECK_ATOL_LATENTS, C.CHECK_RTOL_LATENTS),
        _contract(C.LATENT_SHAPE),
    ),
    "cfg_combine": FunctionSpec(
        "returns eps_uncond + w·(eps_cond − eps_uncond) and leaves both inputs unchanged",
        (C.CHECK_ATOL_CFG, C.CHECK_RTOL_CFG),
        _cfg_properties,
        ("the result", "eps_uncond after the call", "eps_cond after the call"),
    ),
    "denoise_step": FunctionSpec(
        "each step equals scale_model_input → U-Net on [uncond, cond] → CFG → scheduler.step().prev_sample",
        (C.CHECK_ATOL_DENOISE, C.CHECK_RTOL_DENOISE),
        _contract(C.LATENT_SHAPE),
    ),
    "decode_latents": FunctionSpec(
        "image equals vae.decode(latents / scaling_factor).sample",
        (C.CHECK_ATOL_DECODE, 0.0),
        _contract(C.IMAGE_SHAPE),
    ),
    "to_pil": FunctionSpec("pixels equal round(255 · clamp(x/2 + 0.5, 0, 1)), RGB, HWC", (C.CHECK_PIL_LEVELS, 0.0)),
    "generate": FunctionSpec(
        "the image equals the reference pipeline's for the same components, scheduler and seed",
        (C.CHECK_ATOL_GENERATE, 0.0),
        _contract(C.IMAGE_SHAPE),
    ),
}


def _role(function: str, result: CheckResult) -> Role:
    property_id = result.id.removeprefix(f"{function}.")
    return "gate" if property_id in _INTERFACE or property_id == "contract" else "diagnostic"


def function_checks(ctx: CheckContext, function: str, outcomes: dict[str, Outcome]) -> list[Graded]:
    """Every check of one API function, from the probes' outcomes, with its role
    (:mod:`.points`): contract and properties, then one reference check per probe case."""
    probes = ctx.plan.of(function)
    cases = [p for p in probes if is_case(p)]
    graded = [Graded(r, _role(function, r)) for r in FUNCTIONS[function].properties(ctx, function, outcomes)]
    worth = C.CHECK_POINTS_PER_CASE[function]
    for probe in cases:
        case = probe.id[probe.id.index("[") + 1 : -1]
        result = reference_check(ctx, f"{function}.reference[{case}]", [probe], outcomes)
        graded.append(Graded(replace(result, details={**result.details, "case": probe.id}), "points", worth))
    for again in [p for p in probes if p.id.endswith(",again]")]:
        original = next(p for p in cases if p.args == again.args)
        graded.append(Graded(reproducible_check(f"{function}.reproducible", original, again, outcomes), "diagnostic"))
    return _diagnosed(graded)


def _diagnosed(graded: list[Graded]) -> list[Graded]:
    """Failing points checks that name no mistake carry the one a failing diagnostic names: a
    reference mismatch beside ``step_generator_ignored`` is that generator's missing noise."""
    diagnosis = next(
        (g.result for g in graded if g.role == "diagnostic" and not g.result.passed and "mistake" in g.result.details),
        None,
    )
    if diagnosis is None:
        return graded
    mistake = diagnosis.details["mistake"]
    return [
        replace(g, result=named(g.result, mistake))
        if g.role == "points" and not g.result.passed and "mistake" not in g.result.details
        else g
        for g in graded
    ]
