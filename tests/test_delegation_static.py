"""The delegation policy and the static scan: which uses are found in a source, whom they are
charged to, and which of them a policy forbids.  In-process and fast (no model, no sandbox)."""

from __future__ import annotations

import textwrap

import pytest

from sdverify.contract import API_NAMES
from sdverify.delegation import DEFAULT_FORBID, Policy, validate_names
from sdverify.delegation.static import scan_cells, scan_module

DEFAULT = Policy()


def _charged(source: str, policy: Policy = DEFAULT) -> dict[str, set[str]]:
    """function -> the names of its forbidden uses ("" = module level)."""
    out: dict[str, set[str]] = {}
    for use in scan_module(textwrap.dedent(source), DEFAULT_FORBID, API_NAMES):
        if policy.broken_by(use):
            out.setdefault(use.where, set()).add(use.names[0])
    return out


def test_a_star_import_charges_every_api_name_the_module_does_not_define():
    charged = _charged(
        """
        from sdverify.reference import *
        def tokenize(tokenizer, prompt):
            return tokenizer(prompt).input_ids
        """
    )
    assert "tokenize" not in charged
    assert charged["generate"] == {"sdverify.reference.generate"}
    assert set(charged) == set(API_NAMES) - {"tokenize"} | {""}


@pytest.mark.parametrize(
    "source",
    [
        "import sdverify.reference as R\ndef generate(*a):\n    return R.generate(*a)\n",
        "from sdverify import reference\ndef generate(*a):\n    return reference.generate(*a)\n",
        "import importlib\nR = importlib.import_module('sdv' + 'erify.reference')\n"
        "def generate(*a):\n    return getattr(R, 'gen' + 'erate')(*a)\n",
        "def generate(*a):\n    return getattr(__import__('sdverify'), 'reference').generate(*a)\n",
        "import sys\ndef generate(*a):\n    return sys.modules['sdverify.reference'].generate(*a)\n",
        "from importlib import import_module as load\n"
        "def _kit():\n    return load(''.join(['sdverify', '.', 'reference']))\n"
        "def generate(*a):\n    return _kit().generate(*a)\n",
        "import sdverify.reference as R\ngenerate = R.generate\n",
    ],
    ids=["alias", "from-import", "import_module-getattr", "__import__", "sys.modules", "helper", "assignment"],
)
def test_plain_and_obfuscated_delegation_is_charged_to_the_function(source: str):
    charged = _charged(source + "def cfg_combine(u, c, w):\n    return u + w * (c - u)\n")
    assert "generate" in charged and "cfg_combine" not in charged, charged


def test_a_pipeline_call_is_forbidden_but_loading_components_through_one_is_not():
    source = """
        import torch
        from diffusers import StableDiffusionPipeline

        def decode_latents(vae, latents):
            pipe = StableDiffusionPipeline.from_pretrained("model-id")
            return pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample

        def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, **kwargs):
            pipe = StableDiffusionPipeline(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None)
            return pipe.to(unet.device)(prompt, output_type="pt").images
        """
    assert _charged(source) == {"generate": {"diffusers.StableDiffusionPipeline"}}


def test_another_pipeline_class_is_a_diffusion_pipeline():
    # DiffusionPipeline covers its subclasses: the grader resolves the class it loaded.
    source = "from diffusers import StableDiffusionImg2ImgPipeline as P\ndef generate(*a):\n    return P(*a)('x')\n"
    assert _charged(source) == {"generate": {"diffusers.StableDiffusionImg2ImgPipeline"}}


def test_names_shadowed_by_parameters_and_main_guards_charge_nothing():
    charged = _charged(
        """
        import sdverify.reference as R
        def generate(R, *a):
            return R.generate(*a)
        if __name__ == "__main__":
            from sdverify.reference import generate as check
        """
    )
    assert set(charged) == {""}  # only the module's top level: named in a note, no points lost


def test_allow_wins_and_the_contract_is_allowed_by_default():
    source = "from sdverify import contract as C\ndef initial_latents(s, g, d, t):\n    return C.LATENT_SHAPE\n"
    assert _charged(source) == {}
    assert "generate" in _charged("import sdverify.tokenizer as T\ndef generate(*a):\n    return T.x\n")
    assert (
        _charged("import sdverify.tokenizer as T\ndef generate(*a):\n    return T.x\n", Policy().relaxed(["*"])) == {}
    )


def test_notebook_cells_carry_their_bindings():
    cells = [
        "from diffusers import StableDiffusionPipeline",
        "pipe = StableDiffusionPipeline.from_pretrained(model_id)\nunet = pipe.unet",
        None,  # a markdown cell
        "images = pipe(prompt).images",
        "def broken(:",
    ]
    per_cell = scan_cells(cells, DEFAULT_FORBID)
    forbidden = [[u.names[0] for u in uses if Policy().broken_by(u)] for uses in per_cell]
    assert forbidden == [[], [], [], ["diffusers.StableDiffusionPipeline"], []]


def test_policy_names_are_validated():
    assert validate_names(["sdverify", "diffusers.DiffusionPipeline", "*"], "x") == (
        "sdverify",
        "diffusers.DiffusionPipeline",
        "*",
    )
    for bad in ("sdverify", ["sdverify reference"], [3], ["sdverify."]):
        with pytest.raises(ValueError, match="x:"):
            validate_names(bad, "x")


def test_a_pipeline_stage_method_is_using_the_pipeline():
    """``pipe._encode_prompt(...)`` scored 9/9 with ``own_work`` passed (issue 20)."""
    source = """
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained("model-id")
        unet = pipe.unet                                # loading through a pipeline: allowed

        def encode_prompt(tokenizer, text_encoder, prompt):
            return pipe._encode_prompt(prompt, "cpu", 1, False)

        def initial_latents(scheduler, generator, device, dtype):
            return pipe.prepare_latents(1, 4, 512, 512, dtype, device, generator)

        def decode_latents(vae, latents):
            return pipe.to("cpu").decode_latents(latents)

        def to_pil(image):
            return pipe.numpy_to_pil(image)[0]

        def generate(*args, **kwargs):
            return pipe.run_safety_checker(pipe.unet(*args), "cpu", None)
        """
    assert _charged(source) == {
        "encode_prompt": {"diffusers.StableDiffusionPipeline._encode_prompt"},
        "initial_latents": {"diffusers.StableDiffusionPipeline.prepare_latents"},
        "decode_latents": {"diffusers.StableDiffusionPipeline.decode_latents"},
        "to_pil": {"diffusers.StableDiffusionPipeline.numpy_to_pil"},
        "generate": {"diffusers.StableDiffusionPipeline.run_safety_checker"},
    }
    # Judged as the class: a policy naming only the base class forbids them too.
    base_only = Policy(forbid=("diffusers.DiffusionPipeline",), allow=())
    assert set(_charged(source, base_only)) == {
        "encode_prompt",
        "initial_latents",
        "decode_latents",
        "to_pil",
        "generate",
    }


def test_a_notebook_cell_calling_a_stage_method_uses_the_pipeline():
    cells = [
        "from diffusers import StableDiffusionPipeline\npipe = StableDiffusionPipeline.from_pretrained(m)",
        "emb = pipe.encode_prompt(prompt, 'cpu', 1, True)",
        "vae = pipe.vae",
    ]
    forbidden = [[u.names[0] for u in uses if DEFAULT.broken_by(u)] for uses in scan_cells(cells, DEFAULT_FORBID)]
    assert forbidden == [[], ["diffusers.StableDiffusionPipeline.encode_prompt"], []]
