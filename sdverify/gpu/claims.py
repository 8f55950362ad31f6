"""The GPU suite's timing claims as checks: relative ones everywhere, absolute budgets per card."""

from __future__ import annotations

from dataclasses import dataclass

from sdverify import contract as C
from sdverify.gpu.budgets import Budget
from sdverify.gpu.timing import Timing, paired_ratio
from sdverify.results import CheckResult, fail, ok


def check_denoise_share(denoise: Timing, end_to_end: Timing) -> CheckResult:
    """The lesson's claim: the denoising loop takes most of a generation's wall time."""
    clause = f"the denoising loop takes >= {C.MIN_DENOISE_TIME_SHARE:.0%} of end-to-end time"
    share = denoise.median / end_to_end.median
    if share >= C.MIN_DENOISE_TIME_SHARE:
        return ok("timing.denoise_share", clause, share=share)
    return fail(
        "timing.denoise_share",
        f"denoising took {1000 * denoise.median:.1f} ms of {1000 * end_to_end.median:.1f} ms ({share:.1%}); "
        "the text encoder or VAE is unexpectedly slow, or a stage is not synchronised",
        clause,
        share=share,
    )


@dataclass(frozen=True)
class RatioClaim:
    """``numerator / denominator`` (median of interleaved per-round ratios) stays under ``limit``."""

    id: str
    clause: str
    limit: float
    strict: bool = False


BATCHED_CFG = RatioClaim(
    "timing.batched_cfg",
    "one batched CFG U-Net call is faster than two separate calls",
    C.MAX_BATCHED_OVER_TWO_CALLS_TIME,
    strict=True,
)
FP16_SPEEDUP = RatioClaim(
    "timing.fp16_speedup", f"float16 is at least {C.MIN_FP16_SPEEDUP}x faster than float32", 1 / C.MIN_FP16_SPEEDUP
)
REFERENCE_VS_PIPELINE = RatioClaim(
    "timing.reference_vs_pipeline",
    f"the reference is no slower than StableDiffusionPipeline (ratio <= {C.MAX_REFERENCE_OVER_PIPELINE_TIME})",
    C.MAX_REFERENCE_OVER_PIPELINE_TIME,
)


def check_ratio(claim: RatioClaim, numerator: Timing, denominator: Timing) -> CheckResult:
    ratio = paired_ratio(numerator, denominator)
    if ratio < claim.limit or (ratio == claim.limit and not claim.strict):
        return ok(claim.id, claim.clause, ratio=ratio)
    return fail(
        claim.id,
        f"{numerator.name} took {1000 * numerator.median:.2f} ms and "
        f"{denominator.name} {1000 * denominator.median:.2f} ms "
        f"(median ratio {ratio:.3f}, limit {'<' if claim.strict else '<='} {claim.limit:.3f})",
        claim.clause,
        ratio=ratio,
    )


def check_budgets(budget: Budget, end_to_end: Timing, unet_cfg_step: Timing) -> list[CheckResult]:
    """Absolute limits of the card's budget row (already scaled)."""
    results = []
    for timing, limit in ((end_to_end, budget.end_to_end_s), (unet_cfg_step, budget.unet_cfg_step_s)):
        id = f"budget.{timing.name}"
        clause = f"{timing.name} within the {budget.spec.key} budget of {1000 * limit:.0f} ms (scale {budget.scale:g})"
        if timing.median <= limit:
            results.append(ok(id, clause, median_s=timing.median, limit_s=limit))
        else:
            results.append(
                fail(
                    id,
                    f"median {1000 * timing.median:.1f} ms exceeds {1000 * limit:.0f} ms; if this card is just slower, "
                    "raise --sdverify-budget-scale (or $SDVERIFY_BUDGET_SCALE), 0 turns budgets off",
                    clause,
                    median_s=timing.median,
                    limit_s=limit,
                )
            )
    return results
