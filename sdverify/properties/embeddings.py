"""Text-embedding properties: the [1,77,768] interface, and the causality of CLIP's encoder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from sdverify import contract as C
from sdverify.properties.untrusted import call, describe_value, dims, tensor_result
from sdverify.results import CheckResult, compare_tensors, fail, ok


def embedding_properties(embeddings: Any, *, dtype: torch.dtype, device: torch.device | str) -> list[CheckResult]:
    """``embeddings`` is a finite ``[1,77,768]`` tensor in the encoder's ``dtype`` on its ``device``.

    One result per clause, so a float32 tensor on the right device still passes its shape
    and finiteness checks.
    """
    checks = (
        ("embeddings.shape", f"embeddings are {dims(C.EMBEDDINGS_SHAPE)}", {"shape": C.EMBEDDINGS_SHAPE}),
        ("embeddings.dtype", f"embeddings are {dtype}, the text encoder's dtype", {"dtype": dtype}),
        ("embeddings.device", f"embeddings are on {device}, the text encoder's device", {"device": device}),
        ("embeddings.finite", "every embedding value is finite", {"finite": True}),
    )
    results = []
    for id, clause, requirement in checks:
        tensor = tensor_result(id, embeddings, clause=clause, **requirement)
        results.append(tensor if isinstance(tensor, CheckResult) else ok(id, clause))
    return results


def _module_device(module: Any) -> torch.device:
    """Where the encoder's weights live; CPU for a plain callable."""
    try:
        return next(module.parameters()).device
    except Exception:
        return torch.device("cpu")


def _last_hidden_state(output: Any) -> Any:
    """``last_hidden_state`` of a transformers output, a tuple's first item, or a bare tensor."""
    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is not None:
        return hidden
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


def _validate_ids(ids_a: torch.Tensor, ids_b: torch.Tensor) -> int:
    """Length of the shared prefix of two [1,77] id tensors (the checker's inputs)."""
    for name, ids in (("ids_a", ids_a), ("ids_b", ids_b)):
        if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != C.TOKEN_IDS_SHAPE or ids.is_floating_point():
            raise ValueError(
                f"{name} must be an integer tensor of shape {dims(C.TOKEN_IDS_SHAPE)}, got {describe_value(ids)}"
            )
    differ = (ids_a.cpu() != ids_b.cpu())[0].nonzero()
    if not len(differ) or int(differ[0]) == 0:
        raise ValueError("ids_a and ids_b must share a non-empty prefix and then differ somewhere")
    return int(differ[0])


def causality(text_encoder: Any, ids_a: torch.Tensor, ids_b: torch.Tensor) -> CheckResult:
    """Embeddings at positions ``0..k-1`` depend only on ids ``0..k-1``.

    CLIP's text transformer applies a causal mask, so two id sequences that agree on
    their first ``k`` ids give the same embeddings there.  Only the rounding of kernels that
    block differently may differ, hence a tolerance of ``CAUSALITY_TOLERANCE_EPS`` epsilons of
    the embeddings' dtype times their magnitude; a non-causal encoder moves them by O(1).
    """
    k = _validate_ids(ids_a, ids_b)
    id, clause = "embeddings.causal", f"embeddings on the shared prefix (positions 0..{k - 1}) are identical"
    device = _module_device(text_encoder)
    hidden = []
    for ids in (ids_a, ids_b):
        with torch.no_grad():
            output, failure = call(id, text_encoder, ids.to(device), clause=clause, expected="CLIP's last_hidden_state")
        if failure is not None:
            return failure
        try:
            hidden_state = _last_hidden_state(output)
        except Exception as exc:
            return fail(id, f"the encoder's output ({describe_value(output)}) could not be read: {exc}", clause)
        tensor = tensor_result(id, hidden_state, finite=True, clause=clause)
        if isinstance(tensor, CheckResult):
            return tensor
        if tensor.ndim != 3 or tuple(tensor.shape[:2]) != C.TOKEN_IDS_SHAPE:
            return fail(id, f"the encoder returned {describe_value(tensor)}, expected [1,77,hidden]", clause)
        hidden.append(tensor)
    a, b = (h[:, :k].double() for h in hidden)
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    atol = C.CAUSALITY_TOLERANCE_EPS * torch.finfo(hidden[0].dtype).eps * scale
    result = compare_tensors(id, a, b, atol=atol, clause=clause)
    if result.passed:
        return result
    return replace(
        result,
        message=f"ids differ only from position {k} on, yet the embeddings at positions 0..{k - 1} changed: "
        f"the encoder is not causal (CLIP's causal attention mask is missing?)\n{result.message}",
    )
