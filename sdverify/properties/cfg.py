"""Classifier-free guidance algebra, checked on any ``cfg_combine(eps_uncond, eps_cond, w)``.

SD1.5 (diffusers) guides with ``eps_uncond + w * (eps_cond - eps_uncond)``.  Every
property below holds for every correct way of writing that (``torch.lerp(u, c, w)``,
``(1 - w) * u + w * c``, a float64 upcast cast back...) and is compared within
:func:`cfg_tolerance`, because floating point makes even ``w = 1`` inexact: the
formula first rounds ``c - u`` and then rounds ``u + (c - u)`` again, so in float16
``u = 1, c = 2**-12`` gives ``0.0`` instead of ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from sdverify import contract as C
from sdverify.mistakes import MISTAKES, cfg_formulas, named
from sdverify.properties.untrusted import call, call_tensor, tensor_result
from sdverify.results import CheckResult, compare_tensors, fail, ok

CfgCombine = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

HOMOGENEITY_FACTOR = -1.5  # exact in every float dtype; negative so a sign slip shows

_SWAP = MISTAKES["cfg_swapped"]
SWAPPED = _SWAP.message


def cfg_tolerance(dtype: torch.dtype, *tensors: torch.Tensor, scale: float = 1.0) -> float:
    """Absolute tolerance for a CFG result in ``dtype``.

    ``CFG_TOLERANCE_EPS`` machine epsilons of ``dtype``, times the largest magnitude among
    ``tensors`` (floored at the smallest normal number, below which float spacing is
    constant), times ``scale``: how much the property amplifies its operands, ``1 + 2|w|``
    for one CFG evaluation (|w·(c − u)| can reach 2|w|·max|operand|).
    """
    info = torch.finfo(dtype)
    magnitude = max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)
    return C.CFG_TOLERANCE_EPS * info.eps * scale * max(magnitude, info.tiny)


def _reference(u: torch.Tensor, c: torch.Tensor, w: float) -> torch.Tensor:
    return u.double() + w * (c.double() - u.double())


def _amplification(*weights: float) -> float:
    return 1.0 + 2.0 * max(abs(w) for w in weights)


def _validate_inputs(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, weights: tuple[float, ...]) -> None:
    """The checker's own inputs must be usable; a bad call here is the caller's bug."""
    for name, t in (("eps_uncond", eps_uncond), ("eps_cond", eps_cond)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(t).__name__}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite")
    if eps_uncond.shape != eps_cond.shape or eps_uncond.dtype != eps_cond.dtype or eps_uncond.device != eps_cond.device:
        raise ValueError(
            "eps_uncond and eps_cond must share shape, dtype and device; got "
            f"{list(eps_uncond.shape)}/{eps_uncond.dtype}/{eps_uncond.device} and "
            f"{list(eps_cond.shape)}/{eps_cond.dtype}/{eps_cond.device}"
        )
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"guidance scales must be finite, got {weights}")
    # Translation doubles the operands and w amplifies by (1 + 2|w|): stay clear of overflow.
    magnitude = max(float(eps_uncond.abs().max()), float(eps_cond.abs().max())) if eps_uncond.numel() else 0.0
    if 4 * magnitude * _amplification(*weights, 1.0) >= torch.finfo(eps_uncond.dtype).max:
        raise ValueError(
            f"inputs up to {magnitude:g} with w up to {max(map(abs, weights)):g} overflow {eps_uncond.dtype}"
        )


class _Runner:
    """Calls the implementation on copies of its inputs; failures become results."""

    def __init__(self, cfg_combine: CfgCombine, shape: torch.Size) -> None:
        self.fn = cfg_combine
        self.shape = shape

    def __call__(self, id: str, clause: str, u: torch.Tensor, c: torch.Tensor, w: float):
        out = call_tensor(id, self.fn, u.clone(), c.clone(), float(w), shape=self.shape, finite=True, clause=clause)
        if isinstance(out, CheckResult):
            return None, replace(out, message=f"at w={w:g}: {out.message}")
        return out, None


def _first(id: str, clause: str, *failures: CheckResult | None) -> CheckResult | None:
    """The first failure, re-labelled as property ``id``, or None.

    (A failed CheckResult is falsy, so ``a or b`` would skip it: test ``is None``.)
    """
    failure = next((f for f in failures if f is not None), None)
    return None if failure is None else replace(failure, id=id, clause=clause)


def _close(
    id: str, clause: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, context: str
) -> CheckResult:
    result = compare_tensors(id, actual.double(), expected.double(), atol=atol, clause=clause)
    return result if result.passed else replace(result, message=f"{context}: {result.message}")


def _matches(out: torch.Tensor, u: torch.Tensor, c: torch.Tensor, w: float, formula, atol: float) -> bool:
    """``out`` equals ``formula`` within ``atol``, and ``formula`` is told apart from the right one here."""
    candidate = formula(u.double(), c.double(), w)
    distinguishable = float((candidate - _reference(u, c, w)).abs().max()) > 2 * atol
    return distinguishable and float((out.double() - candidate).abs().max()) <= atol


def name_cfg_mistake(out: torch.Tensor, u: torch.Tensor, c: torch.Tensor, w: float, atol: float) -> str | None:
    """The id of the known CFG mistake (:mod:`sdverify.mistakes`) whose formula reproduces ``out``
    (e.g. swapped predictions), or None."""
    found = (m.id for m in cfg_formulas() if m.formula is not None and _matches(out, u, c, w, m.formula, atol))
    return next(found, None)


def cfg_algebra(
    cfg_combine: CfgCombine,
    eps_uncond: torch.Tensor,
    eps_cond: torch.Tensor,
    guidance_scale: float,
    other_scale: float,
) -> list[CheckResult]:
    """Every CFG algebra property of ``cfg_combine`` on these predictions, one result each.

    ``guidance_scale`` and ``other_scale`` are the two weights the w-dependent properties
    use (affinity compares the midpoint of the two).  Never raises because of the
    implementation; raises ``TypeError``/``ValueError`` only for unusable inputs.
    """
    w, w2 = float(guidance_scale), float(other_scale)
    _validate_inputs(eps_uncond, eps_cond, (w, w2))
    u, c = eps_uncond.detach(), eps_cond.detach()
    dtype = u.dtype
    run = _Runner(cfg_combine, u.shape)
    results: list[CheckResult] = []

    # Output interface: shape, dtype and device of the inputs.
    clause = "the guided prediction has the inputs' shape, dtype and device"
    interface = call_tensor(
        "cfg.shape_dtype_device", cfg_combine, u.clone(), c.clone(), w,
        shape=u.shape, dtype=dtype, device=u.device, clause=clause,
    )  # fmt: skip
    results.append(interface if isinstance(interface, CheckResult) else ok("cfg.shape_dtype_device", clause))

    # The inputs are not modified in place.
    clause = "cfg_combine leaves eps_uncond and eps_cond unchanged"
    u_in, c_in = u.clone(), c.clone()
    unchanged = call_tensor("cfg.inputs_unchanged", cfg_combine, u_in, c_in, w, clause=clause)
    changed = [
        name
        for name, before, after in (("eps_uncond", u, u_in), ("eps_cond", c, c_in))
        if not torch.equal(before, after)
    ]
    if changed:
        results.append(
            fail(
                "cfg.inputs_unchanged",
                f"cfg_combine modified {' and '.join(changed)} in place (e.g. `eps_uncond += ...` or `.add_()`); "
                "the U-Net predictions must stay intact",
                clause,
            )
        )
    else:
        results.append(unchanged if isinstance(unchanged, CheckResult) else ok("cfg.inputs_unchanged", clause))

    # w = 0 and w = 1 are the two predictions.
    endpoints = (
        ("cfg.w0_is_uncond", 0.0, u, "eps_uncond", "w = 0 returns eps_uncond"),
        (
            "cfg.w1_is_cond",
            1.0,
            c,
            "eps_cond",
            "w = 1 returns eps_cond (within rounding: c − u is rounded before u is added back)",
        ),
    )
    for check_id, weight, expected, name, clause in endpoints:
        out, failure = run(check_id, clause, u, c, weight)
        tol = cfg_tolerance(dtype, u, c, scale=_amplification(weight))
        results.append(
            failure
            if failure is not None
            else _close(check_id, clause, out, expected, tol, f"at w={weight:g} the result is not {name}")
        )

    # Equal predictions are a fixed point for every w.
    clause = "eps_cond == eps_uncond gives that tensor for every w"
    result = ok("cfg.equal_inputs", clause)
    for weight in (w, w2):
        out, failure = run("cfg.equal_inputs", clause, u, u, weight)
        tol = cfg_tolerance(dtype, u, scale=_amplification(weight))
        context = f"with eps_cond == eps_uncond and w={weight:g}"
        check = failure if failure is not None else _close("cfg.equal_inputs", clause, out, u, tol, context)
        if not check.passed:
            result = check
            break
    results.append(result)

    # Affine in w: f((w1 + w2) / 2) == (f(w1) + f(w2)) / 2.
    clause = "the guided prediction is affine in w"
    mid = (w + w2) / 2
    outs = [run("cfg.affine_in_w", clause, u, c, weight) for weight in (w, w2, mid)]
    affine = _first("cfg.affine_in_w", clause, *(f for _, f in outs))
    if affine is None:
        f1, f2, fm = (o.double() for o, _ in outs)
        tol = cfg_tolerance(dtype, u, c, scale=2 * _amplification(w, w2))
        context = f"f(w) at the midpoint w={mid:g} of {w:g} and {w2:g} is not the midpoint of f({w:g}) and f({w2:g})"
        affine = _close("cfg.affine_in_w", clause, fm, (f1 + f2) / 2, tol, context)
    results.append(affine)

    # Homogeneous: f(a·u, a·c) == a·f(u, c).
    clause = "scaling both predictions scales the result"
    a = HOMOGENEITY_FACTOR
    scaled, f_scaled = run("cfg.homogeneous", clause, a * u, a * c, w)
    plain, f_plain = run("cfg.homogeneous", clause, u, c, w)
    failure = _first("cfg.homogeneous", clause, f_scaled, f_plain)
    if failure is not None:
        results.append(failure)
    else:
        tol = cfg_tolerance(dtype, a * u, a * c, scale=2 * _amplification(w))
        context = f"f({a:g}·u, {a:g}·c, w={w:g}) differs from {a:g}·f(u, c, w={w:g})"
        results.append(_close("cfg.homogeneous", clause, scaled, a * plain.double(), tol, context))

    # Translation-equivariant: f(u + d, c + d) == f(u, c) + d.
    clause = "shifting both predictions by d shifts the result by d"
    d = c.reshape(-1).flip(0).reshape(c.shape)
    shifted, f_shifted = run("cfg.translation", clause, u + d, c + d, w)
    failure = _first("cfg.translation", clause, f_shifted, f_plain)
    if failure is not None:
        results.append(failure)
    else:
        tol = cfg_tolerance(dtype, u, c, u + d, c + d, scale=2 * _amplification(w))
        context = f"f(u + d, c + d, w={w:g}) differs from f(u, c, w={w:g}) + d"
        results.append(_close("cfg.translation", clause, shifted, plain.double() + d.double(), tol, context))

    # The formula itself, with the mistake named when it is a known one.
    clause = "the result is eps_uncond + w·(eps_cond − eps_uncond)"
    tol = cfg_tolerance(dtype, u, c, scale=_amplification(w))
    if f_plain is not None:
        results.append(replace(f_plain, id="cfg.formula", clause=clause))
    else:
        result = _close("cfg.formula", clause, plain, _reference(u, c, w), tol, f"at w={w:g}")
        mistake = None if result.passed else name_cfg_mistake(plain, u, c, w, tol)
        results.append(named(result, mistake) if mistake else result)

    # The swap detector: f equals eps_cond + w·(eps_uncond − eps_cond), i.e. f(1 − w).
    clause = "eps_uncond and eps_cond are not swapped"
    if f_plain is not None:
        results.append(replace(f_plain, id="cfg.swapped", clause=clause))
    elif _SWAP.formula is not None and _matches(plain, u, c, w, _SWAP.formula, tol):
        results.append(fail("cfg.swapped", SWAPPED, clause, w=w))
    else:
        results.append(ok("cfg.swapped", clause))
    return results


def batched_matches_separate(
    unet, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, *, atol: float
) -> CheckResult:
    """One U-Net call on the batch ``[uncond, cond]`` equals two single calls within ``atol``.

    The batched form is what SD1.5 pipelines run (half the kernel launches); it may only
    differ by rounding, because a batch of 2 can change the GEMM summation order.
    """
    id, clause = "cfg.batched_matches_separate", "batched CFG (one U-Net call on a batch of 2) equals two calls"

    def predict(x: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor | CheckResult:
        with torch.no_grad():
            out, failure = call(
                id, unet, x, t, encoder_hidden_states=embeddings, clause=clause, expected="a UNet2DConditionOutput"
            )
        return (
            failure
            if failure is not None
            else tensor_result(id, getattr(out, "sample", out), finite=True, clause=clause)
        )

    batched = predict(torch.cat([latents] * 2), torch.cat([uncond, cond]))
    if isinstance(batched, CheckResult):
        return batched
    halves = [predict(latents, e) for e in (uncond, cond)]
    failure = _first(id, clause, *(h for h in halves if isinstance(h, CheckResult)))
    if failure is not None:
        return failure
    separate = torch.cat([h for h in halves if isinstance(h, torch.Tensor)])
    return compare_tensors(id, batched, separate, atol=atol, clause=clause)
