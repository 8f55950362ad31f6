"""Calling an implementation nobody has read, and taking its answers with care.

A student's function may raise, return ``None``, a list, a numpy array, a tensor of
the wrong shape/dtype/device, or an object whose ``__eq__`` always says True.  These
helpers turn every such case into a failed :class:`CheckResult` whose message says
what was expected and what was seen, and hand back only plain, detached tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

import torch

from sdverify.results import CheckResult, fail
from sdverify.untrusted import describer


def dims(shape: Sequence[int]) -> str:
    """``[1,77,768]``: shapes written the way the contract and the messages write them."""
    return f"[{','.join(str(int(n)) for n in shape)}]"


def describe_value(value: Any) -> str:
    """A short description of an arbitrary returned object that runs none of its code."""
    kind = type(value).__name__
    if not isinstance(value, torch.Tensor):
        return kind
    if type(value) is not torch.Tensor:
        kind += " (a torch.Tensor subclass)"
    try:
        plain = plain_tensor(value)
    except Exception:
        return kind
    return f"{kind} of shape {dims(plain.shape)}, dtype {plain.dtype}, device {plain.device}"


def expectation(shape: Sequence[int] | None, dtype: torch.dtype | None = None, device: Any = None) -> str:
    """Words for the tensor a check expects, e.g. ``a torch.Tensor of shape [1,77]``."""
    text = "a torch.Tensor"
    if shape is not None:
        text += f" of shape {dims(shape)}"
    if dtype is not None:
        text += f", dtype {dtype}"
    if device is not None:
        text += f", on {device}"
    return text


@overload
def plain_tensor(value: torch.Tensor) -> torch.Tensor: ...
@overload
def plain_tensor(value: object) -> torch.Tensor | None: ...
def plain_tensor(value: object) -> torch.Tensor | None:
    """A detached plain ``torch.Tensor`` copy of ``value`` (its subclass' methods never run,
    :func:`sdverify.untrusted.describer.plain_tensor`), or None if it is not a tensor."""
    return describer.plain_tensor(value) if isinstance(value, torch.Tensor) else None


def same_device(actual: torch.device, expected: torch.device | str) -> bool:
    """``cuda`` matches ``cuda:0``: an unindexed expectation means any index of that type."""
    expected = torch.device(expected)
    if expected.index is None:
        return actual.type == expected.type
    return actual == expected


def call(
    id: str,
    fn: Callable[..., Any],
    *args: Any,
    clause: str = "",
    expected: str = "a torch.Tensor",
    **kwargs: Any,
) -> tuple[Any, CheckResult | None]:
    """Run ``fn``; on an exception return ``(None, failed result)`` naming it."""
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:
        name = getattr(fn, "__name__", type(fn).__name__)
        return None, fail(
            id, f"{name}(...) raised {type(exc).__name__}: {exc}; expected it to return {expected}", clause
        )


def tensor_result(
    id: str,
    value: Any,
    *,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    finite: bool = False,
    clause: str = "",
    what: str = "returned",
) -> torch.Tensor | CheckResult:
    """Validate an implementation's return value: a plain tensor, or the failure.

    ``shape``, ``dtype``, ``device`` and ``finite`` are checked only when given/true, so a
    property about values can still look at a tensor whose dtype is another property's verdict.
    """
    want = expectation(shape, dtype, device)
    try:
        tensor = plain_tensor(value)
    except Exception as exc:
        return fail(id, f"{what} {describe_value(value)} that could not be read ({exc}); expected {want}", clause)
    if tensor is None:
        return fail(id, f"{what} {describe_value(value)}, expected {want}", clause)
    seen = describe_value(value)
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        return fail(id, f"{what} {seen}, expected {want}", clause)
    if dtype is not None and tensor.dtype != dtype:
        return fail(id, f"{what} {seen}, expected {want}", clause)
    if device is not None and not same_device(tensor.device, device):
        return fail(id, f"{what} {seen}, expected {want}", clause)
    if finite and (tensor.is_floating_point() or tensor.is_complex()):
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            return fail(
                id,
                f"{what} {int(bad.sum())}/{tensor.numel()} non-finite values (NaN or inf); expected finite values",
                clause,
                nan=int(torch.isnan(tensor).sum()),
                inf=int(torch.isinf(tensor).sum()),
            )
    return tensor


def call_tensor(
    id: str,
    fn: Callable[..., Any],
    *args: Any,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    finite: bool = False,
    clause: str = "",
    **kwargs: Any,
) -> torch.Tensor | CheckResult:
    """:func:`call` then :func:`tensor_result`: the usual way to ask an implementation for a tensor."""
    value, failure = call(id, fn, *args, clause=clause, expected=expectation(shape, dtype, device), **kwargs)
    if failure is not None:
        return failure
    return tensor_result(id, value, shape=shape, dtype=dtype, device=device, finite=finite, clause=clause)
