"""One descriptor of an untrusted value, made by both runners, read back with bounds (issue 18, item 2).

The notebook kernel runs the describer's text (through the extraction cell), the module
checker's child imports it: a value described either way reads the same to the grader.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdverify.notebooks.extraction import KERNEL_SEED, extraction_source, read_snapshot
from sdverify.untrusted.describer import describe
from sdverify.untrusted.value import UntrustedValue, load_tensors, read_bounded


class Loud(torch.Tensor):
    """A subclass whose overridden methods must never run while it is described."""

    def clone(self, *args, **kwargs):
        raise AssertionError("ran the subclass' clone")

    def cpu(self, *args, **kwargs):
        raise AssertionError("ran the subclass' cpu")


def _module_side(value: object) -> UntrustedValue:
    """As a checker child describes a returned value (shallow) and the grader receives it."""
    tensors: dict[str, torch.Tensor] = {}
    desc = describe(value, "v0", tensors, deep=False)
    return UntrustedValue("v0", desc, tensors)


def _kernel_side(tmp_path: Path, **namespace: object) -> dict[str, UntrustedValue]:
    """Run the extraction cell's very text in a namespace standing in for the kernel's."""
    ns: dict[str, object] = {"__builtins__": builtins, **namespace}
    exec(extraction_source(tuple(namespace) + ("undefined",), tmp_path), ns)
    assert set(ns) == {"__builtins__", *namespace}, "the cell left names in the notebook's namespace"
    return read_snapshot(tmp_path)


def test_a_notebook_snapshot_and_a_returned_value_describe_alike(tmp_path):
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    image = Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8))
    values = {"x": x, "image": image, "n": 7, "words": ["a", "b"], "none": None}
    kernel = _kernel_side(tmp_path, **values)
    for name, value in values.items():
        assert kernel[name].describe() == _module_side(value).describe(), name
    assert torch.equal(kernel["x"].tensor, x) and kernel["x"].describe().startswith("a torch.Tensor of shape [2,3]")
    assert kernel["image"].kind == "image" and kernel["image"].tensor.shape == (4, 5, 3)
    assert kernel["undefined"].describe() == "not defined"
    assert kernel[KERNEL_SEED].value == torch.initial_seed()


def test_a_notebook_that_patches_the_describer_module_changes_no_snapshot(tmp_path, monkeypatch):
    """The kernel runs the describer's text, never the module a notebook can reach and patch."""
    import sdverify.untrusted.describer as imported

    monkeypatch.setattr(imported, "describe", lambda *args, **kwargs: {"kind": "value", "value": "forged"})
    got = _kernel_side(tmp_path, x=torch.zeros(3))["x"]
    assert got.kind == "tensor" and torch.equal(got.tensor, torch.zeros(3))


def test_a_tensor_subclass_is_unwrapped_without_running_its_methods(tmp_path):
    loud = torch.ones(2).as_subclass(Loud)
    value = _module_side(loud)
    assert type(value.tensor) is torch.Tensor and value.type_name == "Loud"
    assert "a Loud (a torch.Tensor subclass) of shape [2]" in value.describe()
    assert type(_kernel_side(tmp_path, loud=loud)["loud"].tensor) is torch.Tensor


def test_a_numpy_array_is_data_in_a_notebook_and_only_named_in_a_module(tmp_path):
    array = np.ones((2, 2), dtype=np.float64)
    returned = _module_side(array)
    assert returned.kind == "array" and returned.tensor is None and returned.tensors == {}
    assert returned.describe() == "a numpy.ndarray of shape [2,2], dtype float64"
    kept = _kernel_side(tmp_path, array=array)["array"]
    assert kept.kind == "array" and torch.equal(kept.tensor, torch.ones(2, 2, dtype=torch.float64))


def test_a_mapping_keeps_its_tensors_in_a_notebook_and_its_first_keys_in_a_module(tmp_path):
    mapping = {f"k{i}": torch.zeros(1) for i in range(10)}
    returned = _module_side(mapping)
    assert returned.desc["keys"] == [f"k{i}" for i in range(8)] and returned.tensors == {}
    kept = _kernel_side(tmp_path, out=mapping)["out"]
    assert kept.desc["keys"] == list(mapping) and set(kept.tensors) == {f"out.k{i}" for i in range(10)}


def test_a_value_that_cannot_be_described_is_an_error_not_a_crash(tmp_path):
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr for you")

    got = _kernel_side(tmp_path, h=Hostile())["h"]
    assert got.kind == "error" and "RuntimeError: no repr for you" in got.describe()


def test_the_bounded_reader_refuses_links_pipes_and_floods(tmp_path):
    regular = tmp_path / "log"
    regular.write_bytes(b"0123456789")
    assert read_bounded(regular, 10) == b"0123456789"
    assert read_bounded(regular, 4, tail=True) == b"6789"
    assert read_bounded(regular, 4, tail=True, start=8) == b"89"
    with pytest.raises(ValueError, match="over the"):
        read_bounded(regular, 4)
    (tmp_path / "link").symlink_to(regular)
    with pytest.raises(ValueError, match="link"):
        read_bounded(tmp_path / "link", 10)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match="not a regular file"):
        read_bounded(tmp_path / "pipe", 10, tail=True)


def test_garbage_tensor_bytes_are_a_value_error_naming_them():
    with pytest.raises(ValueError, match="payload: unreadable"):
        load_tensors(b"\x00garbage", "payload")
