"""CFG algebra on every float dtype: correct formulations pass, known mistakes are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from sdverify import contract as C
from sdverify import reference
from sdverify.properties import failures
from sdverify.properties.cfg import SWAPPED, batched_matches_separate, cfg_algebra, cfg_tolerance
from sdverify.properties.strategies import FLOAT_DTYPES, guidance_scales, prediction_pairs

CORRECT = {
    "reference": reference.cfg_combine,
    "lerp": lambda u, c, w: torch.lerp(u, c, w),
    "affine": lambda u, c, w: (1 - w) * u + w * c,
    "float64_upcast": lambda u, c, w: (u.double() + w * (c.double() - u.double())).to(u.dtype),
    "weight_as_tensor": lambda u, c, w: u + torch.tensor(w, dtype=u.dtype) * (c - u),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@given(data=st.data(), impl=st.sampled_from(sorted(CORRECT)), w=guidance_scales(), w2=guidance_scales())
def test_correct_formulations_pass_every_property(dtype, data, impl, w, w2):
    u, c = data.draw(prediction_pairs(dtype))
    results = cfg_algebra(CORRECT[impl], u, c, w, w2)
    assert len(results) == 10
    assert failures(results) == {}, "\n".join(map(str, results))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@given(w=guidance_scales(), seed=st.integers(0, 2**16))
def test_swapped_predictions_are_named(dtype, w, seed):
    # Swapping is f(1 - w): indistinguishable from the right answer only at w = 0.5.
    assume(abs(w - 0.5) >= 0.25)
    g = torch.Generator().manual_seed(seed)
    u, c = (torch.randn(1, 4, 4, 4, generator=g).to(dtype) for _ in range(2))
    failed = failures(cfg_algebra(lambda u, c, w: c + w * (u - c), u, c, w, 3.0))
    assert failed["cfg.swapped"] == SWAPPED
    assert failed["cfg.formula"].startswith(SWAPPED)


MISTAKES = {
    "cfg_paper_convention": (lambda u, c, w: c + w * (c - u), "(1 + w) convention"),
    "wrong_sign": (lambda u, c, w: u - w * (c - u), "wrong sign"),
    "missing_minus_uncond": (lambda u, c, w: u + w * c, "'− eps_uncond' inside the bracket is missing"),
    "ignores_guidance": (lambda u, c, w: c.clone(), "guidance scale is ignored"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_known_mistakes_fail_the_formula_with_their_name(name):
    fn, words = MISTAKES[name]
    u, c = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    failed = failures(cfg_algebra(fn, u, c, C.GUIDANCE_SCALE, 3.0))
    assert words in failed["cfg.formula"]
    assert "cfg.swapped" not in failed


class _AlwaysEqual(torch.Tensor):
    def __eq__(self, other):  # a returned object that claims to equal anything
        return True


BROKEN = {
    "returns_none": (lambda u, c, w: None, "returned NoneType, expected a torch.Tensor of shape [1,4,8,8]"),
    "returns_list": (lambda u, c, w: [u], "returned list"),
    "returns_numpy": (lambda u, c, w: (u + w * (c - u)).numpy(), "returned ndarray"),
    "raises": (lambda u, c, w: (u + w * (c - u)).reshape(5, -1), "raised RuntimeError"),
    "wrong_shape": (lambda u, c, w: (u + w * (c - u))[0], "shape [4,8,8]"),
    "nan": (lambda u, c, w: u * float("nan"), "non-finite"),
    "lying_subclass": (lambda u, c, w: torch.zeros_like(u).as_subclass(_AlwaysEqual), "differ by more than"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_implementations_fail_without_raising(name):
    fn, words = BROKEN[name]
    u, c = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    failed = failures(cfg_algebra(fn, u, c, C.GUIDANCE_SCALE, 3.0))
    assert "cfg.formula" in failed and words in failed["cfg.formula"] + failed.get("cfg.shape_dtype_device", "")


def test_interface_and_in_place_mistakes_are_reported_separately():
    u, c = torch.randn(2, 1, 4, 8, 8, dtype=torch.float16, generator=torch.Generator().manual_seed(3)).unbind(0)
    upcast = failures(cfg_algebra(lambda u, c, w: u.float() + w * (c.float() - u.float()), u, c, 7.5, 3.0))
    assert set(upcast) == {"cfg.shape_dtype_device"} and "dtype torch.float32" in upcast["cfg.shape_dtype_device"]
    in_place = failures(cfg_algebra(lambda u, c, w: u.add_(w * (c - u)), u, c, 7.5, 3.0))
    assert (
        set(in_place) == {"cfg.inputs_unchanged"} and "modified eps_uncond in place" in in_place["cfg.inputs_unchanged"]
    )


def test_w1_is_not_exact_in_floating_point_but_within_tolerance():
    # u + 1·(c − u) rounds c − u first: in float16, 2**-12 − 1 rounds to −1 and the sum to 0.
    u, c = torch.tensor([1.0], dtype=torch.float16), torch.tensor([2.0**-12], dtype=torch.float16)
    formula = reference.cfg_combine(u, c, 1.0)
    assert formula.item() == 0.0 != c.item()
    assert abs(formula.item() - c.item()) <= cfg_tolerance(torch.float16, u, c, scale=3.0)
    assert failures(cfg_algebra(reference.cfg_combine, u, c, 1.0, 0.0)) == {}


def test_tolerance_scales_with_dtype_magnitude_and_amplification():
    x = torch.tensor([2.0])
    base = cfg_tolerance(torch.float32, x)
    assert base == C.CFG_TOLERANCE_EPS * torch.finfo(torch.float32).eps * 2.0
    assert cfg_tolerance(torch.float16, x) / base == torch.finfo(torch.float16).eps / torch.finfo(torch.float32).eps
    assert cfg_tolerance(torch.float32, 10 * x) == pytest.approx(10 * base)
    assert cfg_tolerance(torch.float32, x, scale=16.0) == pytest.approx(16 * base)


def test_unusable_checker_inputs_are_the_callers_error():
    u = torch.zeros(3)
    with pytest.raises(ValueError, match="share shape"):
        cfg_algebra(reference.cfg_combine, u, torch.zeros(4), 7.5, 1.0)
    with pytest.raises(TypeError, match=r"floating-point torch\.Tensor"):
        cfg_algebra(reference.cfg_combine, np.zeros(3), u, 7.5, 1.0)
    with pytest.raises(ValueError, match="overflow"):
        cfg_algebra(reference.cfg_combine, torch.full((3,), 6e4, dtype=torch.float16), u.half(), 7.5, 1.0)


def test_batched_cfg_equals_two_unet_calls_on_the_tiny_unet(sd_components):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(C.LATENT_SHAPE, generator=g)
    cond, uncond = torch.randn(2, *C.EMBEDDINGS_SHAPE, generator=g)
    result = batched_matches_separate(sd_components.unet, latents, 981, cond, uncond, atol=C.ATOL_BATCHED_CFG_FP32)
    assert result.passed, str(result)

    def batch_dependent(x, t, encoder_hidden_states):  # e.g. a norm over the batch dimension
        return sd_components.unet(x, t, encoder_hidden_states=encoder_hidden_states).sample * x.shape[0]

    wrong = batched_matches_separate(batch_dependent, latents, 981, cond, uncond, atol=C.ATOL_BATCHED_CFG_FP32)
    assert not wrong.passed and "differ by more than" in wrong.message
