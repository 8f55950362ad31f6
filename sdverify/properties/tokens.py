"""Token-id properties of one tokenized SD1.5 prompt, for any tokenizer implementation.

SD1.5 feeds CLIP exactly 77 ids: BOS, the prompt's text tokens (at most 75 survive
truncation), EOS, then EOS again as padding (SD1.5's pad token *is* EOS).
"""

from __future__ import annotations

from typing import Any

import torch

from sdverify import contract as C
from sdverify.properties.untrusted import dims, tensor_result
from sdverify.results import CheckResult, fail, ok

_LAST = C.MAX_TOKENS - 1  # position 76: where truncation must leave the EOS
_VALUE_IDS = ("tokens.vocab", "tokens.bos", "tokens.eos_position", "tokens.padding")


def eos_position(n_tokens: int) -> int:
    """Where the first EOS belongs for a prompt of ``n_tokens`` text tokens (after BOS)."""
    return min(n_tokens + 1, _LAST)


def real_positions(n_tokens: int) -> int:
    """BOS + surviving text tokens + EOS: what the attention mask must count."""
    return min(n_tokens + 2, C.MAX_TOKENS)


def _integer_ids(ids: Any) -> tuple[torch.Tensor | None, CheckResult]:
    """Interface verdict, plus the ids as int64 when their values can still be checked."""
    clause = f"ids are a {dims(C.TOKEN_IDS_SHAPE)} {C.TOKEN_DTYPE} tensor"
    tensor = tensor_result("tokens.shape_dtype", ids, shape=C.TOKEN_IDS_SHAPE, clause=clause)
    if isinstance(tensor, CheckResult):
        return None, tensor
    integral = not tensor.is_floating_point() or bool((tensor == tensor.round()).all())
    usable = tensor.to(torch.int64) if integral and not tensor.is_complex() else None
    if tensor.dtype != C.TOKEN_DTYPE:
        message = f"returned a {tensor.dtype} tensor, expected {C.TOKEN_DTYPE} (what CLIP's embedding lookup takes)"
        return usable, fail("tokens.shape_dtype", message, clause)
    return usable, ok("tokens.shape_dtype", clause)


def token_id_properties(ids: Any, n_tokens: int) -> list[CheckResult]:
    """Every id property of ``ids`` for a prompt with ``n_tokens`` text tokens (excluding BOS/EOS).

    ``n_tokens`` is the untruncated count (see :func:`sdverify.tokenizer.text_token_count`).
    Always returns the same five ids; when the values cannot be read, the value
    properties fail with the reason.
    """
    values, interface = _integer_ids(ids)
    results = [interface]
    if values is None:
        reason = f"cannot check the ids: {interface.message or 'their values are not integers'}"
        return results + [fail(id, reason) for id in _VALUE_IDS]
    row = values[0].tolist()

    clause = f"every id is in [0, {C.VOCAB_SIZE})"
    outside = [(i, v) for i, v in enumerate(row) if not 0 <= v < C.VOCAB_SIZE]
    results.append(
        fail("tokens.vocab", f"ids outside the CLIP vocabulary at (position, id) {outside[:5]}", clause)
        if outside
        else ok("tokens.vocab", clause)
    )

    clause = f"position 0 is BOS {C.BOS_ID}"
    results.append(
        ok("tokens.bos", clause)
        if row[0] == C.BOS_ID
        else fail("tokens.bos", f"position 0 holds {row[0]}, expected BOS {C.BOS_ID} (<|startoftext|>)", clause)
    )

    want = eos_position(n_tokens)
    clause = f"the first EOS {C.EOS_ID} sits at min(n_tokens + 1, {_LAST})"
    first = row.index(C.EOS_ID) if C.EOS_ID in row else None
    if first == want:
        results.append(ok("tokens.eos_position", clause, position=first))
    elif n_tokens + 1 > _LAST:
        seen = "there is no EOS at all" if first is None else f"the first EOS is at {first}"
        message = (
            f"the prompt has {n_tokens} text tokens, more than the {_LAST - 1} that fit: truncation must keep "
            f"EOS at position {_LAST}, but {seen} (position {_LAST} holds {row[_LAST]})"
        )
        results.append(fail("tokens.eos_position", message, clause, position=first))
    elif first is None:
        message = f"no EOS {C.EOS_ID} anywhere; expected the first at position {want}"
        results.append(fail("tokens.eos_position", message, clause))
    else:
        message = f"first EOS at position {first}, expected {want} (BOS + {n_tokens} text tokens before it)"
        results.append(fail("tokens.eos_position", message, clause, position=first))

    clause = f"every position after the first EOS is EOS {C.EOS_ID} (SD1.5 pads with EOS)"
    start = want if first is None else first
    stray = [(i, v) for i, v in enumerate(row[start + 1 :], start + 1) if v != C.EOS_ID]
    if not stray:
        results.append(ok("tokens.padding", clause))
    else:
        hint = " (padding with 0 is CLIP's '!' token; SD1.5's pad_token_id is the EOS)" if stray[0][1] == 0 else ""
        message = f"{len(stray)} positions after the EOS are not EOS, e.g. (position, id) {stray[:5]}{hint}"
        results.append(fail("tokens.padding", message, clause))
    return results


def attention_mask_property(attention_mask: Any, n_tokens: int) -> CheckResult:
    """The mask counts BOS, the surviving text tokens and one EOS: ``min(n_tokens + 2, 77)``."""
    clause = f"attention_mask.sum() == min(n_tokens + 2, {C.MAX_TOKENS})"
    mask = tensor_result("tokens.attention_mask", attention_mask, shape=C.TOKEN_IDS_SHAPE, clause=clause)
    if isinstance(mask, CheckResult):
        return mask
    got, want = int(mask.sum()), real_positions(n_tokens)
    if got == want:
        return ok("tokens.attention_mask", clause, positions=got)
    return fail(
        "tokens.attention_mask", f"the mask counts {got} positions, expected {want} for {n_tokens} text tokens", clause
    )
