"""Draft a spec from an instructor's solved lesson (``sdverify spec draft``).

The lesson runs on the zoo through the grading runner, its variables read at the end of every
markdown-heading section.  The lesson's facts are inferred from what it holds: the prompt is a
``str`` variable whose tokenization or embeddings it keeps, the scheduler and step count come
from its scheduler object, the seed from the seeds the extraction records, the guidance scale
from a numeric variable whose replay reproduces its latents or image.  Each variable equal to a
pipeline stage's reference value becomes a check (the ``STAGES`` registry: stage -> check kind
and how to recognise it), verified by the check itself at the end of its exercise's section,
so the draft grades its own lesson at full marks.  The library returns the spec text.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat
import torch

from sdverify import contract as C
from sdverify import isolation, zoo
from sdverify import reference as R
from sdverify.notebooks import device_map
from sdverify.notebooks.exercises import CHECKS, ExerciseContext, Lesson
from sdverify.notebooks.extraction import KERNEL_GENERATORS, KERNEL_SEED
from sdverify.notebooks.grading import Settings, kernel_env
from sdverify.notebooks.names import bound_names
from sdverify.notebooks.runner import RunResult, Snapshot, run_notebook
from sdverify.presets import get_preset
from sdverify.sanitise import printable
from sdverify.schedulers import SCHEDULERS, make_scheduler
from sdverify.untrusted.value import UntrustedValue

_HEADING = re.compile(r"^\s*#+\s+(\S.*?)\s*#*\s*$")
_CUDA_ERROR = re.compile(r"CUDA|NVIDIA|cuda")
# Code written for a GPU: run under the device map from the start (unmapped, its float16 runs
# ~13x slower on the CPU before a CUDA error would ask for a second run).
_GPU_CODE = re.compile(r"\bcuda\b|float16|bfloat16|\.half\(|autocast")
_GUIDANCE_NAME = re.compile(r"guidance|cfg|scale", re.IGNORECASE)
_SEED_NAME = re.compile(r"seed", re.IGNORECASE)
_NO_MODULE = re.compile(r"No module named '([A-Za-z_][A-Za-z0-9_]*)")
DEFAULT_POINTS = 1
MAX_REPLAYS = 12  # (guidance, seed) pairs tried when inferring them from the lesson's replay


@dataclass(frozen=True)
class Section:
    """A markdown cell that opens with a heading: where a section (and maybe an exercise) starts."""

    id: str
    title: str
    cell: int

    @property
    def pattern(self) -> str:
        """A regex matching this heading line only (whitespace-tolerant)."""
        words = [re.escape(word) for word in self.title.split()]
        return r"^#+\s*" + r"\s+".join(words) + r"\s*#*\s*$"


@dataclass(frozen=True)
class Candidate:
    """A check a variable passes: its kind, parameters and the comment saying why it was guessed."""

    kind: str
    params: dict[str, Any]
    guess: str


@dataclass
class Facts:
    """The lesson as inferred, with a comment per fact saying how."""

    lesson: Lesson = field(default_factory=Lesson)
    guesses: dict[str, str] = field(default_factory=dict)


Lookup = Callable[[str], UntrustedValue]
Finder = Callable[[ExerciseContext, Lookup, list[UntrustedValue]], Iterator[Candidate]]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage the draft recognises: the check kinds it becomes, preferred first (a kind
    the grader does not register is skipped), and its finder of candidate checks."""

    kinds: tuple[str, ...]
    find: Finder


STAGES: dict[str, Stage] = {}


def stage(name: str, *kinds: str) -> Callable[[Finder], Finder]:
    def add(find: Finder) -> Finder:
        STAGES[name] = Stage(kinds, find)
        return find

    return add


def sections(nb: nbformat.NotebookNode) -> list[Section]:
    """Each markdown cell whose first heading line opens a section, in order."""
    found: list[Section] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        titles = [m.group(1) for line in cell.source.splitlines() if (m := _HEADING.match(line))]
        if titles:
            found.append(Section(f"s{len(found)}", titles[0], index))
    return found


def draft_spec(path: str | Path, settings: Settings | None = None) -> str:
    """The v2 spec text drafted from the solved lesson at ``path`` (run on ``settings``' weights)."""
    path = Path(path)
    settings = settings or Settings()
    nb = nbformat.read(str(path), as_version=4)
    found = sections(nb)
    if not found:
        raise ValueError(f"{path.name}: no markdown heading; a spec's exercises are found by their headings")
    names = tuple(
        dict.fromkeys(
            n for c in nb.cells if c.cell_type == "code" for n in bound_names(c.source) if not n.startswith("_")
        )
    )
    run, map_device = _run(path, [Snapshot(s.id, s.pattern, names) for s in found], settings, written_for_gpu(nb))
    weights = zoo.weights_dir(settings.preset, settings.seed, settings.weights)
    contract_params = settings.weights is not None or get_preset(settings.preset).expected_params is not None
    contexts = Contexts(ExerciseContext(Lesson(), weights, contract_params, version=2))
    lookups = [_lookup(run, s.id, map_device) for s in found]
    facts = infer_facts(contexts, lookups, names)
    exercises = _exercises(contexts(facts.lesson), lookups, names)
    title = next((s.title for s in found if nb.cells[s.cell].source.lstrip().startswith("# ")), path.stem)
    exercises_found = [(found[i], checks) for i, checks in exercises]
    return render(path.name, title, facts, map_device, exercises_found, missing_modules(run))


def missing_modules(run: RunResult) -> list[str]:
    """The top-level modules the lesson's cells failed to import: without them its later cells
    fail too, and the draft would silently hold defaults and no checks."""
    return list(dict.fromkeys(m for e in run.events if e.kind == "error" for m in _NO_MODULE.findall(e.message)))


def written_for_gpu(nb: nbformat.NotebookNode) -> bool:
    """Does the lesson's code name a GPU device or a half-precision dtype?"""
    return any(c.cell_type == "code" and _GPU_CODE.search(c.source) for c in nb.cells)


def _run(path: Path, snapshots: list[Snapshot], settings: Settings, gpu: bool) -> tuple[RunResult, bool]:
    """Run the lesson, under the device map where its code is written for a ``gpu``; once more
    with the map if cells failed for want of a GPU all the same."""
    weights = zoo.weights_dir(settings.preset, settings.seed, settings.weights).resolve()
    hub_cache = zoo.hub_cache_for(weights)
    torch.set_num_threads(settings.threads)

    def run(map_device: bool) -> RunResult:
        return run_notebook(
            path,
            snapshots,
            env=kernel_env(hub_cache, settings),
            cell_timeout=settings.call_timeout,
            notebook_timeout=math.inf if settings.timeout is None else settings.timeout,
            level=isolation.resolve(settings.sandbox),
            readable=(hub_cache, weights),
            hidden=(path.resolve().parent,),
            map_device=map_device,
        )

    result = run(gpu)
    if not gpu and any(e.kind == "error" and _CUDA_ERROR.search(e.message) for e in result.events):
        return run(True), True
    return result, gpu


def _lookup(run: RunResult, section: str, map_device: bool) -> Lookup:
    def var(name: str) -> UntrustedValue:
        found = run.variable(section, name)
        if map_device and found.kind == "value":
            return replace(found, desc={**found.desc, "value": device_map.as_graded(found.value)})
        return found

    return var


class Contexts:
    """Contexts for lessons on ``base``'s weights, judging as a v2 spec whether a check passes (a
    failure is not named: that would replay each mistake for each candidate that is not the
    stage's value).  A reference never depends
    on the lesson's seed (a replay takes its seed as an argument), so lessons that differ only in
    their seed share one cache: the replays tried while inferring the facts serve the checks."""

    def __init__(self, base: ExerciseContext) -> None:
        self.base = base
        self._caches: dict[Lesson, dict[Any, Any]] = {}

    def __call__(self, lesson: Lesson) -> ExerciseContext:
        cache = self._caches.setdefault(replace(lesson, seed=Lesson.seed), {})
        base = self.base
        return ExerciseContext(lesson, base.folder, base.contract_params, version=2, names_mistakes=False, _cache=cache)


# --- the lesson's facts --------------------------------------------------------------


def infer_facts(contexts: Contexts, lookups: list[Lookup], names: tuple[str, ...]) -> Facts:
    """Prompt, scheduler and steps, then the (guidance, seed) whose replay the lesson holds."""
    variables = [var(n) for var in lookups for n in names]
    facts = Facts()
    _infer_prompt(contexts.base, variables, facts)
    _infer_scheduler(contexts.base, variables, facts)
    _infer_replay(contexts, lookups, variables, facts)
    return facts


def _texts(variables: list[UntrustedValue]) -> list[str]:
    texts = []
    for v in variables:
        value = v.value if v.kind == "value" else None
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and value.strip() and len(value) <= 2000:
            texts.append(value)
    return list(dict.fromkeys(texts))


def _held(variables: list[UntrustedValue], shape: tuple[int, ...]) -> list[tuple[str, torch.Tensor]]:
    """(where, tensor) of each tensor of ``shape`` the variables hold: themselves, a mapping's
    items (a BatchEncoding's ``input_ids``), or a row of a batch of two (CFG's concatenated pair)."""
    found = []
    for v in variables:
        for key, x in v.tensors.items():
            if tuple(x.shape) == shape:
                found.append((key, x))
            elif tuple(x.shape) == (2, *shape[1:]):
                found += [(f"{key}[{row}]", x[row : row + 1]) for row in (0, 1)]
    return found


def _infer_prompt(ctx: ExerciseContext, variables: list[UntrustedValue], facts: Facts) -> None:
    tokens = _held(variables, C.TOKEN_IDS_SHAPE)
    embeds = _held(variables, C.EMBEDDINGS_SHAPE)
    for text in _texts(variables):
        ids = R.tokenize(ctx.components.tokenizer, text)
        held = next((where for where, x in tokens if _close(x, ids, 0)), None)
        if held is not None:
            facts.guesses["prompt"] = f"`{held}` holds its token ids"
        else:
            e = ctx.embeddings(text)
            held = next((where for where, x in embeds if _close(x, e, C.GRADE_ATOL_FP32)), None)
            if held is None:
                continue
            facts.guesses["prompt"] = f"`{held}` holds its CLIP embeddings"
        facts.lesson = replace(facts.lesson, prompt=text)
        return
    facts.guesses["prompt"] = "no str variable's tokens or embeddings were found: the default"


def _infer_scheduler(ctx: ExerciseContext, variables: list[UntrustedValue], facts: Facts) -> None:
    held = [v for v in variables if v.kind == "scheduler"]
    for v in reversed(held):
        key = next((k for k, (_, cls) in SCHEDULERS.items() if v.type_name == cls), None)
        steps = v.tensors.get(f"{v.name}.timesteps")
        if key is None or steps is None:
            continue
        for n in dict.fromkeys([len(steps), (len(steps) + 1) // 2, len(steps) // 2, len(steps) - 1]):
            scheduler = make_scheduler(key, dict(ctx.components.scheduler.config))
            scheduler.set_timesteps(max(n, 1))
            if scheduler.timesteps.shape == steps.shape and torch.equal(scheduler.timesteps.double(), steps.double()):
                facts.lesson = replace(facts.lesson, scheduler=key, steps=max(n, 1))
                facts.guesses["scheduler"] = facts.guesses["steps"] = (
                    f"`{v.name}` is a {SCHEDULERS[key][1]} with {max(n, 1)} steps"
                )
                return
    facts.guesses["scheduler"] = "no scheduler object with a registered class and timesteps: the default"


def _numbers(variables: list[UntrustedValue], pattern: re.Pattern[str], kind: type) -> list[Any]:
    found = []
    for v in variables:
        if v.kind == "value" and isinstance(v.value, (int, float)) and not isinstance(v.value, bool):
            if pattern.search(v.name) and (kind is float or float(v.value).is_integer()):
                found.append(kind(v.value))
    return found


def _infer_replay(contexts: Contexts, lookups: list[Lookup], variables: list[UntrustedValue], facts: Facts) -> None:
    generators = [var(KERNEL_GENERATORS).value for var in lookups]
    seeds = [s for found in generators if isinstance(found, list) for s in found]
    seeds += [*_numbers(variables, _SEED_NAME, int), *(var(KERNEL_SEED).value for var in lookups)]
    seeds = [s for s in dict.fromkeys(seeds) if isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63]
    scales = list(dict.fromkeys([*_numbers(variables, _GUIDANCE_NAME, float), C.GUIDANCE_SCALE]))
    held = [v for v in variables if v.tensor is not None and tuple(v.tensor.shape) in (C.LATENT_SHAPE, C.IMAGE_SHAPE)]
    sf = contexts.base.components.vae.config["scaling_factor"]
    tried = 0
    for scale in scales:
        for seed in seeds:
            if tried == MAX_REPLAYS:
                break
            tried += 1
            lesson = replace(facts.lesson, guidance_scale=scale, seed=seed)
            latents, image = contexts(lesson).replay(seed)
            match = next((v for v in held if _close(v.tensor, latents, C.GRADE_ATOL_REPLAY)), None)
            # or rebound by the decode idiom (latents = 1 / 0.18215 * latents), as final_latents reads them
            match = match or next((v for v in held if _close(v.tensor * sf, latents, C.GRADE_ATOL_REPLAY)), None)
            match = match or next((v for v in held if _close(v.tensor, image, C.GRADE_ATOL_REPLAY)), None)
            if match is not None:
                facts.lesson = lesson
                replayed = f"`{match.name}` is the lesson's generation replayed from seed {seed}, guidance {scale:g}"
                facts.guesses["seed"] = facts.guesses["guidance_scale"] = replayed
                return
    if seeds:
        facts.lesson = replace(facts.lesson, seed=seeds[0])
    facts.guesses["seed"] = f"the first seed the lesson set ({facts.lesson.seed}); no replay matched its values"


def _close(actual: torch.Tensor | None, expected: torch.Tensor, atol: float) -> bool:
    return (
        actual is not None
        and actual.shape == expected.shape
        and bool(((actual.double() - expected.double()).abs() <= atol).all())
    )


# --- the stages ---------------------------------------------------------------------


def _shaped(variables: list[UntrustedValue], shape: tuple[int, ...]) -> list[UntrustedValue]:
    return [v for v in variables if v.tensor is not None and tuple(v.tensor.shape) == shape]


def _passes(ctx: ExerciseContext, var: Lookup, kind: str, params: dict[str, Any]) -> bool:
    try:
        return CHECKS[kind].fn(ctx, var, **params).passed
    except Exception:  # a check that cannot run on this value: not this stage
        return False


@stage("param_count", "param_count")
def _param_counts(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    counts = ctx.param_counts()
    for v in variables:
        if v.kind == "value" and isinstance(v.value, int) and not isinstance(v.value, bool):
            for component, count in counts.items():
                if v.value == count:
                    params = {"value": v.name, "component": component}
                    yield Candidate("param_count", params, f"`{v.name}` = the {component}'s parameter count")


@stage("token_ids", "token_ids")
def _token_ids(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    """A [1,77] or [77] tensor, a list of ints, or a BatchEncoding/dict holding ``input_ids`` (v2)."""
    guess = f"token ids equal to the tokenization of prompt {_short(ctx.lesson.prompt)}"
    for v in variables:
        shape = tuple(v.tensor.shape) if v.tensor is not None else None
        held = f"{v.name}.input_ids" in v.tensors or (v.kind == "value" and isinstance(v.value, list))
        if shape in (C.TOKEN_IDS_SHAPE, C.TOKEN_IDS_SHAPE[1:]) or held:
            yield Candidate("token_ids", {"value": v.name}, guess)


@stage("prompt_embeddings", "prompt_embeddings")
def _embeddings(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    """[1,77,768] of the prompt or of "", or (v2) one half of the CFG-concatenated [2,77,768]."""
    prompt = _short(ctx.lesson.prompt)
    for v in _shaped(variables, C.EMBEDDINGS_SHAPE):
        yield Candidate("prompt_embeddings", {"value": v.name}, f"CLIP embeddings of prompt {prompt}")
        yield Candidate("prompt_embeddings", {"value": v.name, "prompt": ""}, "CLIP embeddings of the empty prompt")
    for v in _shaped(variables, (2, *C.EMBEDDINGS_SHAPE[1:])):
        for half, words in (("cond", f"prompt {prompt}"), ("uncond", "the empty prompt")):
            guess = f"its {half} half: the CLIP embeddings of {words} (batched CFG)"
            yield Candidate("prompt_embeddings", {"value": v.name, "half": half}, guess)


@stage("scheduler", "scheduler_setup")
def _scheduler(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    cls = SCHEDULERS[ctx.lesson.scheduler][1]
    for v in variables:
        if v.kind == "scheduler":
            yield Candidate("scheduler_setup", {"value": v.name}, f"a {cls} set to {ctx.lesson.steps} steps")


@stage("initial_latents", "initial_latents", "latent_noise")
def _initial_latents(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    """The seed's standard-normal draw, as drawn or times ``init_noise_sigma``."""
    sigma = float(ctx.scheduler().init_noise_sigma)
    draws = []
    for seed in ctx.replay_seeds(var):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draws.append((seed, torch.randn(C.LATENT_SHAPE)))
    for v in _shaped(variables, C.LATENT_SHAPE):
        for (seed, noise), scaled in itertools.product(draws, (False, True)):
            if _close(v.tensor, noise * sigma if scaled else noise, C.GRADE_ATOL_FP32):
                how = f" times init_noise_sigma ({sigma:g})" if scaled else ""
                guess = f"the initial noise drawn from seed {seed}{how}"
                yield Candidate("initial_latents", {"value": v.name, "scaled": scaled}, guess)
                if sigma == 1 or not scaled:
                    yield Candidate("latent_noise", {"value": v.name}, guess)


@stage("final_latents", "final_latents")
def _final(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    final = _final_latents(ctx, var, variables)
    if final is not None:
        yield Candidate("final_latents", {"value": final}, f"`{final}` holds the denoising loop's final latents")


@stage("decoded", "image_decode", "decoded")
def _decoded(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    final = _final_latents(ctx, var, variables)
    for v in _shaped(variables, C.IMAGE_SHAPE):
        guess = f"`{v.name}` is the raw VAE decode of " + (f"the final latents `{final}`" if final else "the replay's")
        if final:
            yield Candidate("image_decode", {"value": v.name, "latents": final}, guess)
        yield Candidate("decoded", {"value": v.name, **({"latents": final} if final else {})}, guess)


@stage("image", "generation_replay", "image")
def _image(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> Iterator[Candidate]:
    """The raw decode replayed, or (v2) a post-processed image: HWC or CHW, uint8 or float, PIL."""
    final = _final_latents(ctx, var, variables)
    lesson = ctx.lesson
    how = f"{lesson.steps}-step {lesson.scheduler} generation of {_short(lesson.prompt)}"
    how += f", guidance {lesson.guidance_scale:g}"
    for v in variables:
        shape = tuple(v.tensor.shape) if v.tensor is not None else ()
        if shape == C.IMAGE_SHAPE:
            params = {"value": v.name, "latents": final or "z"}
            yield Candidate("generation_replay", params, f"`{v.name}` is the image of the {how}")
        elif len(shape) in (3, 4) and 3 in shape[-3:] and C.IMAGE_SHAPE[-1] in shape:
            yield Candidate("image", {"value": v.name}, f"`{v.name}` is the post-processed image of the {how}")


def _final_latents(ctx: ExerciseContext, var: Lookup, variables: list[UntrustedValue]) -> str | None:
    """The variable holding the replay's final latents (or them divided by the scaling factor)."""
    sf = ctx.components.vae.config["scaling_factor"]
    finals = [ctx.replay(seed)[0] for seed in ctx.replay_seeds(var)]
    for v in _shaped(variables, C.LATENT_SHAPE):
        x = v.tensor
        if x is not None and any(
            _close(x, f, C.GRADE_ATOL_REPLAY) or _close(x * sf, f, C.GRADE_ATOL_REPLAY) for f in finals
        ):
            return v.name
    return None


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# --- exercises --------------------------------------------------------------------------


def _exercises(
    ctx: ExerciseContext, lookups: list[Lookup], names: tuple[str, ...]
) -> list[tuple[int, list[Candidate]]]:
    """(section index, checks) of each exercise: a check goes to the section where its variable
    first passes it, and stays only if it still passes at the end of that exercise's section
    (the next exercise's heading), where grading reads it."""
    found: dict[int, list[Candidate]] = {}
    seen: set[Any] = set()  # a variable's stage (and CFG half) is checked once, by its first kind that passes
    for index, var in enumerate(lookups):
        variables = [v for v in (var(n) for n in names) if v.kind != "missing"]
        for name, entry in STAGES.items():
            found_here = [c for c in entry.find(ctx, var, variables) if c.kind in entry.kinds and c.kind in CHECKS]
            for candidate in sorted(found_here, key=lambda c: entry.kinds.index(c.kind)):
                slot = (name, candidate.params["value"], candidate.params.get("half"), candidate.params.get("prompt"))
                if slot not in seen and _passes(ctx, var, candidate.kind, candidate.params):
                    seen.add(slot)
                    found.setdefault(index, []).append(candidate)
    changed = True
    while changed:
        starts = sorted(i for i, checks in found.items() if checks)
        changed = False
        for position, start in enumerate(starts):
            end = starts[position + 1] - 1 if position + 1 < len(starts) else len(lookups) - 1
            kept = [c for c in found[start] if _passes(ctx, lookups[end], c.kind, c.params)]
            changed |= len(kept) != len(found[start])
            found[start] = kept
    return [(i, checks) for i, checks in sorted(found.items()) if checks]


# --- the text ---------------------------------------------------------------------------


def _toml(value: Any) -> str:
    """A TOML value: strings as basic strings.  JSON's escapes are TOML's, except that TOML takes
    no surrogate pairs (an emoji stays literal: ``ensure_ascii=False``) and wants DEL escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)


def _comment(text: str) -> str:
    return "# guessed: " + printable(text).replace("\n", "\\n")


def _slug(title: str, taken: set[str]) -> str:
    words = re.findall(r"[a-z0-9]+", title.lower())
    base = "_".join(words[: next((i for i in range(len(words)) if len("_".join(words[: i + 1])) > 24), None)])
    base = base or "exercise"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}_{n}", n + 1
    taken.add(slug)
    return slug


def render(
    source: str,
    title: str,
    facts: Facts,
    map_device: bool,
    exercises: list[tuple[Section, list[Candidate]]],
    missing: list[str] | tuple[str, ...] = (),
) -> str:
    """The spec text: lesson facts and checks, each guess as a comment above it."""
    lesson = facts.lesson
    lines = [
        f"# Drafted by `sdverify spec draft` from {printable(source)}: check every guess, then edit points and titles.",
        "format = 2",
        f"title = {_toml(title)}",
        "",
        "[lesson]",
    ]
    for key, value in (
        ("prompt", lesson.prompt),
        ("seed", lesson.seed),
        ("steps", lesson.steps),
        ("guidance_scale", lesson.guidance_scale),
        ("scheduler", lesson.scheduler),
    ):
        lines += [_comment(facts.guesses.get(key, "the default")), f"{key} = {_toml(value)}"]
    if map_device:
        lines += [
            "# guessed: the lesson is written for a GPU; its cuda/float16 code runs on the CPU",
            "map_device = true",
        ]
    if missing:
        lines += [
            "# the lesson's cells failed importing these, which the drafting environment lacks: install",
            "# them and draft again (the facts and checks here are what ran without them)",
            f"packages = [{', '.join(_toml(m) for m in missing)}]",
        ]
    taken: set[str] = set()
    for section, checks in exercises:
        lines += [
            "",
            "[[exercises]]",
            f"id = {_toml(_slug(section.title, taken))}",
            f"title = {_toml(section.title)}",
            f"heading = {_toml(section.pattern)}",
            "checks = [",
        ]
        for check in checks:
            fields = ", ".join(f"{k} = {_toml(v)}" for k, v in check.params.items())
            lines += [
                f"  {_comment(check.guess)}",
                f"  {{ check = {_toml(check.kind)}, points = {DEFAULT_POINTS}, {fields} }},",
            ]
        lines.append("]")
    return "\n".join(lines) + "\n"
