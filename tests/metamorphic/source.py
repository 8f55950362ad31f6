"""Semantics-preserving edits of Python source: a module, or one notebook cell.

Each edit comes as two plain functions: ``*_sites(source)`` lists where it can apply, and
the edit itself takes the source and ``choices`` (site index -> what to do there: the
comment's text, the import order...) and returns the new source.  Sites the choices do
not name are left alone, so an edit with no choices returns the source unchanged.
Hypothesis draws the choices (:mod:`metamorphic.strategies`); the edits
themselves are deterministic and know nothing of Hypothesis.

Why each keeps the program's meaning is in its docstring.  Notebook cells may hold
IPython syntax (``!pip install``, ``%time``): such lines are parsed as ``pass`` and never
edited, nothing is inserted before a ``%%`` cell magic, and a cell that does not parse
even so is left unchanged.
"""

from __future__ import annotations

import ast
import builtins
import io
import itertools
import keyword
import re
import tokenize
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

T = TypeVar("T")

# A line IPython runs itself: a shell escape or magic, or ``x = !cmd`` / ``x = %magic``.
_IPYTHON_LINE = re.compile(r"^([ \t]*)(?:[!%]|[\w.\[\], ]+=[ \t]*[!%])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ELIF = re.compile(r"[ \t]*elif\b")
# Model outputs a lesson reads by field; with ``return_dict=False`` the same call returns a
# tuple whose first item is that field (diffusers' UNet/VAE outputs, schedulers' step
# outputs, transformers' CLIP text model output).
OUTPUT_FIELDS = ("sample", "prev_sample", "last_hidden_state")
# Calls that reach a module's names by their text: with any of them, a name that also
# appears in a string is never renamed.
_DYNAMIC = frozenset({"globals", "locals", "vars", "eval", "exec", "getattr", "setattr", "hasattr", "delattr"})
# Builtins, keywords, and the names IPython puts in a notebook's namespace.
_IPYTHON_NAMES = frozenset({"display", "get_ipython", "In", "Out", "exit", "quit"})
_FORBIDDEN_NAMES = frozenset(dir(builtins)) | frozenset([*keyword.kwlist, *keyword.softkwlist]) | _IPYTHON_NAMES


@dataclass(frozen=True)
class Site:
    """Where an edit can apply: its 1-based ``line`` (for logs) and, for a run of imports, its ``size``."""

    line: int
    size: int = 1


@dataclass(frozen=True)
class _Parsed:
    tree: ast.Module
    lines: list[str]  # the source's lines with their line breaks (Python's notion of a line)
    ipython: frozenset[int]  # 1-based lines IPython runs (parsed as ``pass``)

    def offset(self, line: int, col: int) -> int:
        """Character offset of ``(line, col)``, ``col`` in UTF-8 bytes as ``ast`` gives it."""
        text = self.lines[line - 1] if line <= len(self.lines) else ""
        return sum(len(x) for x in self.lines[: line - 1]) + len(text.encode()[:col].decode(errors="ignore"))

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def indent(self, line: int) -> str:
        text = self.lines[line - 1]
        return text[: len(text) - len(text.lstrip(" \t"))]


def _lines(source: str) -> list[str]:
    """``source`` cut where Python's tokenizer ends a line (not at ``\\f`` or U+2028)."""
    out, start = [], 0
    for m in _LINE_BREAK.finditer(source):
        out.append(source[start : m.end()])
        start = m.end()
    if start < len(source):
        out.append(source[start:])
    return out


def python_view(source: str) -> str:
    """``source`` with the lines IPython runs itself replaced by ``pass`` (same line count)."""
    return "".join(_IPYTHON_LINE.sub(r"\1pass  #", line, count=1) for line in _lines(source))


def _parse(source: str) -> _Parsed | None:
    """Parse as Python, else as a notebook cell (IPython lines as ``pass``); None if neither."""
    lines = _lines(source)
    try:
        return _Parsed(ast.parse(source), lines, frozenset())
    except (SyntaxError, ValueError):
        pass
    try:
        tree = ast.parse(python_view(source))
    except (SyntaxError, ValueError):
        return None
    ipython = frozenset(i + 1 for i, line in enumerate(lines) if _IPYTHON_LINE.match(line))
    return _Parsed(tree, lines, ipython)


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    """The tokens of ``source`` (IPython lines as ``pass``); none if it does not tokenize."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(python_view(source)).readline))
    except (tokenize.TokenError, SyntaxError):
        return []


def _replace(source: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply ``(start, end, text)`` replacements given as character offsets (non-overlapping)."""
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _bodies(tree: ast.AST):
    """Every statement list of ``tree`` with its owner (module, def, class, if, with, except...)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield node, name, body


def _first_line(stmt: ast.stmt) -> int:
    decorators = getattr(stmt, "decorator_list", [])
    return min([stmt.lineno, *(d.lineno for d in decorators)])


def _is_docstring(owner: ast.AST, field: str, index: int, stmt: ast.stmt) -> bool:
    return (
        isinstance(owner, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and field == "body"
        and index == 0
        and isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_future(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def _anchors(parsed: _Parsed, *, statements: bool) -> list[int]:
    """Lines before which a line of the statement's own indentation may go, in order.

    A statement qualifies when it starts its line (not ``if x: y`` nor ``a; b``) and does
    not continue the line before (a backslash).  Nothing goes before a ``%%`` cell magic;
    a new *statement* (``statements``) never goes before a docstring (it would stop being
    one), a ``from __future__`` import (they must come first) or an ``elif`` (the nested
    ``if`` it stands for is no clause of its own).
    """
    found: set[int] = set()
    for owner, field, body in _bodies(parsed.tree):
        for index, stmt in enumerate(body):
            line = _first_line(stmt)
            text = parsed.lines[line - 1]
            decorated = line < stmt.lineno
            if not decorated and text.encode()[: stmt.col_offset].strip():
                continue
            if line > 1 and parsed.lines[line - 2].rstrip("\r\n").endswith("\\"):
                continue
            if line in parsed.ipython and text.lstrip().startswith("%%"):
                continue
            if statements and (_is_docstring(owner, field, index, stmt) or _is_future(stmt) or _ELIF.match(text)):
                continue
            found.add(line)
    return sorted(found)


def _insert_lines(source: str, parsed: _Parsed, choices: Mapping[int, Sequence[str]], anchors: list[int]) -> str:
    """Insert, before each chosen anchor line, the given lines at that line's indentation."""
    edits = []
    for index, new in choices.items():
        line = anchors[index]
        at = parsed.offset(line, 0)
        edits.append((at, at, "".join(f"{parsed.indent(line) if text else ''}{text}\n" for text in new)))
    return _replace(source, edits)


def one_line(text: str) -> str:
    """``text``, checked to fit on one line of code (a comment) or markdown."""
    if _LINE_BREAK.search(text) or "\x00" in text:
        raise ValueError(f"comment text must be one line without NUL, got {text!r}")
    return text


# --- comments, blank lines, prints: they change no value -------------------------------


def statement_sites(source: str) -> list[Site]:
    """Lines before which a comment or a blank line may go."""
    parsed = _parse(source)
    return [Site(line) for line in _anchors(parsed, statements=False)] if parsed else []


def add_comments(source: str, choices: Mapping[int, str]) -> str:
    """A ``# text`` line before each chosen statement site: comments are not code."""
    parsed = _parse(source)
    if parsed is None:
        return source
    texts = {i: [f"# {one_line(text)}".rstrip()] for i, text in choices.items()}
    return _insert_lines(source, parsed, texts, _anchors(parsed, statements=False))


def add_blank_lines(source: str, choices: Mapping[int, int]) -> str:
    """``n`` empty lines before each chosen statement site: blank lines are not code."""
    parsed = _parse(source)
    if parsed is None:
        return source
    return _insert_lines(source, parsed, {i: [""] * n for i, n in choices.items()}, _anchors(parsed, statements=False))


def line_end_sites(source: str) -> list[Site]:
    """Ends of logical lines (outside IPython lines) where a trailing comment may go."""
    parsed = _parse(source)
    if parsed is None:
        return []
    ends = {t.start[0] for t in _tokens(source) if t.type == tokenize.NEWLINE and t.start[0] <= len(parsed.lines)}
    return [Site(line) for line in sorted(ends - parsed.ipython)]


def add_trailing_comments(source: str, choices: Mapping[int, str]) -> str:
    """``  # text`` at the end of each chosen logical line: comments are not code."""
    parsed = _parse(source)
    if parsed is None:
        return source
    sites = line_end_sites(source)
    edits = []
    for index, text in choices.items():
        line = sites[index].line
        content = parsed.lines[line - 1].rstrip("\r\n")
        at = parsed.offset(line, 0) + len(content)
        edits.append((at, at, f"  # {one_line(text)}".rstrip()))
    return _replace(source, edits)


def print_sites(source: str) -> list[Site]:
    """Lines before which a new statement may go (not before a docstring or a future import)."""
    parsed = _parse(source)
    return [Site(line) for line in _anchors(parsed, statements=True)] if parsed else []


def add_prints(source: str, choices: Mapping[int, str]) -> str:
    """``print(<text>)`` before each chosen site: printing a constant changes no variable.

    The text is written as a literal (``repr``), so any text is safe.
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    lines = {i: [f"print({text!r})"] for i, text in choices.items()}
    return _insert_lines(source, parsed, lines, _anchors(parsed, statements=True))


# --- import order ---------------------------------------------------------------------


def _bound(stmt: ast.Import | ast.ImportFrom) -> list[str]:
    return [a.asname or a.name.split(".")[0] for a in stmt.names]


def _alone(parsed: _Parsed, body: list[ast.stmt], index: int) -> bool:
    """Is ``body[index]`` the only statement on its lines (a trailing comment allowed)?"""
    stmt = body[index]
    end = stmt.end_lineno or stmt.lineno
    return (
        (index == 0 or (body[index - 1].end_lineno or 0) < stmt.lineno)
        and (index + 1 == len(body) or body[index + 1].lineno > end)
        and not parsed.lines[stmt.lineno - 1].encode()[: stmt.col_offset].strip()
        and parsed.lines[end - 1].encode()[stmt.end_col_offset :].strip()[:1] in (b"", b"#")
    )


def _import_runs(parsed: _Parsed) -> list[list[ast.Import | ast.ImportFrom]]:
    """Runs of two or more consecutive imports, each alone on its lines, binding distinct names."""
    runs: list[list[ast.Import | ast.ImportFrom]] = []
    for _owner, _field, body in _bodies(parsed.tree):
        run: list[ast.Import | ast.ImportFrom] = []
        for index in range(len(body) + 1):
            stmt = body[index] if index < len(body) else None
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) and not _is_future(stmt) and _alone(parsed, body, index):
                run.append(stmt)
                continue
            names = [n for s in run for n in _bound(s)]
            plain = all(isinstance(s, ast.Import) and not any(a.asname for a in s.names) for s in run)
            if len(run) > 1 and (len(set(names)) == len(names) or plain):
                runs.append(run)
            run = []
    return sorted(runs, key=lambda r: r[0].lineno)


def import_runs(source: str) -> list[Site]:
    """Runs of consecutive independent imports (``size``: how many statements)."""
    parsed = _parse(source)
    return [Site(run[0].lineno, len(run)) for run in _import_runs(parsed)] if parsed else []


def reorder_imports(source: str, choices: Mapping[int, Sequence[int]]) -> str:
    """Reorder each chosen run of imports (``choices[i]``: a permutation of its statements).

    Imports that bind distinct names do not depend on one another (``import a.b`` and
    ``import a.c`` both bind ``a``, to the same package); lines between them (blank lines,
    comments) stay where they are.

    Raises ValueError for a choice that is not a permutation of the run.
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    runs = _import_runs(parsed)
    edits = []
    for index, order in choices.items():
        run = runs[index]
        if sorted(order) != list(range(len(run))):
            raise ValueError(f"reorder_imports: {list(order)} is not a permutation of the run's {len(run)} imports")
        spans = [(parsed.offset(s.lineno, 0), parsed.offset((s.end_lineno or s.lineno) + 1, 0)) for s in run]
        blocks = [source[start:end].rstrip("\r\n") + "\n" for start, end in spans]
        edits += [(start, end, blocks[new]) for (start, end), new in zip(spans, order)]
    return _replace(source, edits)


# --- torch.inference_mode, return_dict=False, batched CFG -----------------------------


def _no_grad_calls(parsed: _Parsed) -> list[ast.Attribute]:
    calls = [
        node.func
        for node in ast.walk(parsed.tree)
        if isinstance(node, ast.Call)
        and not node.args
        and not node.keywords
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "no_grad"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]
    return sorted(calls, key=lambda n: (n.lineno, n.col_offset))


def no_grad_sites(source: str) -> list[Site]:
    """``torch.no_grad()`` calls: as ``with`` contexts and as decorators."""
    parsed = _parse(source)
    return [Site(node.lineno) for node in _no_grad_calls(parsed)] if parsed else []


def use_inference_mode(source: str, sites: Collection[int]) -> str:
    """``torch.inference_mode()`` for each chosen ``torch.no_grad()``.

    Both turn gradient tracking off; inference mode also marks the tensors made inside
    as inference tensors, which behave the same unless updated in place, or recorded by
    autograd, outside such a block (neither happens in an inference pipeline).
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    calls = _no_grad_calls(parsed)
    edits = []
    for index in sites:
        end = parsed.end(calls[index])
        edits.append((end - len("no_grad"), end, "inference_mode"))
    return _replace(source, edits)


def _field_reads(parsed: _Parsed) -> list[ast.Attribute]:
    """``call(...).field`` reads of :data:`OUTPUT_FIELDS` (not called, no ``return_dict``/``**``)."""
    called = {id(node.func) for node in ast.walk(parsed.tree) if isinstance(node, ast.Call)}
    reads = [
        node
        for node in ast.walk(parsed.tree)
        if isinstance(node, ast.Attribute)
        and node.attr in OUTPUT_FIELDS
        and isinstance(node.ctx, ast.Load)
        and id(node) not in called
        and isinstance(node.value, ast.Call)
        and all(k.arg not in (None, "return_dict") for k in node.value.keywords)
    ]
    return sorted(reads, key=lambda n: (n.end_lineno or 0, n.end_col_offset or 0))


def output_field_sites(source: str) -> list[Site]:
    """Reads of ``.sample``, ``.prev_sample`` or ``.last_hidden_state`` off a model call."""
    parsed = _parse(source)
    return [Site(node.lineno) for node in _field_reads(parsed)] if parsed else []


def use_tuple_outputs(source: str, sites: Collection[int]) -> str:
    """``call(..., return_dict=False)[0]`` for each chosen ``call(...).field``.

    diffusers models and schedulers and transformers models return, with
    ``return_dict=False``, the tuple of their output's fields, the one read here first.
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    reads = _field_reads(parsed)
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    tokens = [(parsed.offset(t.end[0], 0) + t.end[1], t.string) for t in _tokens(source) if t.type not in skip]
    edits = []
    for index in sites:
        node = reads[index]
        close = parsed.end(node.value) - 1  # the call's ")"
        at, before = max(t for t in tokens if t[0] <= close)  # the last token before ")"
        keyword = {"(": "return_dict=False", ",": " return_dict=False"}.get(before, ", return_dict=False")
        edits += [(at, at, keyword), (close + 1, parsed.end(node), "[0]")]
    return _replace(source, edits)


def _pure(node: ast.AST) -> bool:
    """Evaluating ``node`` has no side effect (names, attributes, constants, arithmetic, indexing)."""
    allowed = (ast.Name, ast.Attribute, ast.Constant, ast.Subscript, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.Slice)
    return all(isinstance(n, (*allowed, ast.expr_context, ast.operator, ast.unaryop)) for n in ast.walk(node))


class _Prediction(NamedTuple):
    """``name = model(x, ..., encoder_hidden_states=e, ...).sample`` (or ``[0]``)."""

    stmt: ast.stmt
    name: str
    call: ast.Call
    accessor: ast.expr  # the ``.sample`` or ``[0]``


def _prediction(stmt: ast.stmt) -> _Prediction | None:
    """``stmt`` as a noise prediction with pure arguments passed by name (no ``**``), if it is one."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    value = stmt.value
    sample = isinstance(value, ast.Attribute) and value.attr == "sample"
    first = isinstance(value, ast.Subscript) and ast.dump(value.slice) == ast.dump(ast.Constant(0))
    call = value.value if isinstance(value, (ast.Attribute, ast.Subscript)) and (sample or first) else None
    if not isinstance(call, ast.Call) or not call.args or not all(_pure(x) for x in call.args):
        return None
    if "encoder_hidden_states" not in [k.arg for k in call.keywords]:
        return None
    if not all(k.arg and _pure(k.value) for k in call.keywords):
        return None
    return _Prediction(stmt, stmt.targets[0].id, call, value)


def _cfg_pairs(parsed: _Parsed) -> list[tuple[_Prediction, _Prediction]]:
    """Consecutive predictions by one model on the same input, for two embeddings."""

    def others(call: ast.Call) -> list[tuple[str | None, str]]:
        return [(k.arg, "" if k.arg == "encoder_hidden_states" else ast.dump(k.value)) for k in call.keywords]

    pairs = []
    for _owner, _field, body in _bodies(parsed.tree):
        for a, b in itertools.pairwise(_prediction(stmt) for stmt in body):
            if a is None or b is None or a.name == b.name:
                continue
            same = (
                ast.dump(a.call.func) == ast.dump(b.call.func)
                and [ast.dump(x) for x in a.call.args] == [ast.dump(x) for x in b.call.args]
                and others(a.call) == others(b.call)
                and type(a.accessor) is type(b.accessor)
                and a.name not in {n.id for n in ast.walk(b.stmt) if isinstance(n, ast.Name)}
                and not parsed.lines[a.stmt.lineno - 1].encode()[: a.stmt.col_offset].strip()
                and b.stmt.lineno > (a.stmt.end_lineno or a.stmt.lineno)
            )
            if same:
                pairs.append((a, b))
    return sorted(pairs, key=lambda p: p[0].stmt.lineno)


def cfg_pair_sites(source: str) -> list[Site]:
    """Pairs of U-Net calls (unconditional, conditional) that one batched call can replace."""
    parsed = _parse(source)
    return [Site(a.stmt.lineno) for a, _ in _cfg_pairs(parsed)] if parsed else []


def batch_cfg(source: str, sites: Collection[int]) -> str:
    """One batched model call for each chosen pair of calls::

        a = unet(x, t, encoder_hidden_states=e1).sample
        b = unet(x, t, encoder_hidden_states=e2).sample
        # becomes
        a, b = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([e1, e2])).sample.chunk(2)

    A diffusers U-Net treats a batch's items independently and broadcasts a scalar
    timestep over the batch, so each half is the prediction of one call (to rounding:
    a batch of two takes other kernels than one).  The arguments are pure, so evaluating
    the shared ones once changes nothing.  Expects ``torch`` to be the torch module.
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    pairs = _cfg_pairs(parsed)

    def text(node: ast.AST) -> str:
        return ast.get_source_segment(source, node) or ""

    edits = []
    for index in sites:
        a, b = pairs[index]
        x = text(a.call.args[0])
        args = [f"torch.cat([{x}, {x}])", *(text(arg) for arg in a.call.args[1:])]
        for k_a, k_b in zip(a.call.keywords, b.call.keywords):
            both = f"torch.cat([{text(k_a.value)}, {text(k_b.value)}])"
            args.append(f"{k_a.arg}={both if k_a.arg == 'encoder_hidden_states' else text(k_a.value)}")
        tail = ".sample" if isinstance(a.accessor, ast.Attribute) else "[0]"
        line = f"{a.name}, {b.name} = {text(a.call.func)}({', '.join(args)}){tail}.chunk(2)"
        start = parsed.offset(a.stmt.lineno, 0)
        edits.append((start, parsed.end(b.stmt), parsed.indent(a.stmt.lineno) + line))
    return _replace(source, edits)


# --- the decode's rebinding idiom, seeded generators ---------------------------------


def _decode_scalings(parsed: _Parsed) -> list[tuple[ast.stmt, ast.BinOp, ast.Name]]:
    """``y = ....decode(v <op> s, ...)...`` (or ``return ...``) statements, alone on their line, whose
    first argument is pure arithmetic on one name ``v``, read nowhere after the statement in the source."""
    found = []
    for _owner, _field, body in _bodies(parsed.tree):
        for stmt in body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.Return)) else None
            if value is None or parsed.lines[stmt.lineno - 1].encode()[: stmt.col_offset].strip():
                continue
            for call in (n for n in ast.walk(value) if isinstance(n, ast.Call)):
                if not (isinstance(call.func, ast.Attribute) and call.func.attr == "decode" and call.args):
                    continue
                arg = call.args[0]
                if not (isinstance(arg, ast.BinOp) and _pure(arg)):
                    continue
                named = [side for side in (arg.left, arg.right) if isinstance(side, ast.Name)]
                after = (stmt.end_lineno or stmt.lineno, stmt.end_col_offset or 0)
                if len(named) != 1:
                    continue
                others = [
                    n
                    for n in ast.walk(_scope(parsed.tree, stmt))
                    if isinstance(n, ast.Name) and n.id == named[0].id and n is not named[0]
                    if (n.lineno, n.col_offset) > after or n in set(ast.walk(stmt))
                ]
                if not others:
                    found.append((stmt, arg, named[0]))
    return sorted(found, key=lambda f: f[0].lineno)


def _scope(tree: ast.Module, stmt: ast.stmt) -> ast.AST:
    """The innermost function holding ``stmt`` (its local names), or the module."""
    holders = [
        f
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt in set(ast.walk(f)) and f is not stmt
    ]
    return min(holders, key=lambda f: (f.end_lineno or f.lineno) - f.lineno, default=tree)


def decode_rebinding_sites(source: str) -> list[Site]:
    """Decodes of scaled latents (``vae.decode(z / vae.config.scaling_factor)``) that the rebinding
    idiom can rewrite."""
    parsed = _parse(source)
    return [Site(stmt.lineno) for stmt, _, _ in _decode_scalings(parsed)] if parsed else []


def rebind_decode(source: str, sites: Collection[int]) -> str:
    """The rebinding idiom for each chosen decode, as most lessons write it::

        image = vae.decode(z / vae.config.scaling_factor).sample
        # becomes
        z = z / vae.config.scaling_factor
        image = vae.decode(z).sample

    The decode sees the same value; ``z`` changes, but nothing in the source reads it after
    (a grader does: it must take the rebound latents for what they are).
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    found = _decode_scalings(parsed)
    edits = []
    for index in sites:
        stmt, arg, name = found[index]
        start = parsed.offset(stmt.lineno, 0)
        line = f"{parsed.indent(stmt.lineno)}{name.id} = {ast.get_source_segment(source, arg)}\n"
        edits += [(start, start, line), (parsed.start(arg), parsed.end(arg), name.id)]
    return _replace(source, edits)


def _seeded_draws(parsed: _Parsed) -> list[tuple[ast.stmt, list[ast.Call]]]:
    """``torch.manual_seed(<int>)`` statements, each with the ``torch.randn(...)`` and
    ``<scheduler>.step(a, b, c)`` calls after it in its body (none passes ``generator``)."""
    found: list[tuple[ast.stmt, list[ast.Call]]] = []
    if any(isinstance(n, ast.Name) and n.id == "generator" for n in ast.walk(parsed.tree)):
        return found  # the name the edit binds is taken
    for _owner, _field, body in _bodies(parsed.tree):
        for index, stmt in enumerate(body):
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            seeded = (
                isinstance(call, ast.Call)
                and ast.unparse(call.func) == "torch.manual_seed"
                and len(call.args) == 1
                and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, int)
            )
            if not seeded or parsed.lines[stmt.lineno - 1].encode()[: stmt.col_offset].strip():
                continue
            calls = [
                n
                for later in body[index + 1 :]
                for n in ast.walk(later)
                if isinstance(n, ast.Call)
                and all(k.arg not in (None, "generator") for k in n.keywords)
                and (
                    ast.unparse(n.func) == "torch.randn"
                    or (isinstance(n.func, ast.Attribute) and n.func.attr == "step" and len(n.args) == 3)
                )
            ]
            if any(ast.unparse(n.func) == "torch.randn" for n in calls):
                found.append((stmt, sorted(calls, key=lambda n: (n.lineno, n.col_offset))))
    return found


def seeded_generator_sites(source: str) -> list[Site]:
    """``torch.manual_seed(N)`` followed by ``torch.randn`` draws that a seeded generator can take."""
    parsed = _parse(source)
    return [Site(stmt.lineno) for stmt, _ in _seeded_draws(parsed)] if parsed else []


def use_seeded_generator(source: str, choices: Mapping[int, int]) -> str:
    """The diffusers idiom for each chosen site: a ``torch.Generator`` seeded with the chosen
    seed, passed to every ``torch.randn`` and ``scheduler.step`` after ``torch.manual_seed``::

        torch.manual_seed(42)
        generator = torch.Generator(device).manual_seed(1234)  # device: the first draw's
        z = torch.randn(1, 4, 64, 64, device=device, generator=generator)
        ...
        z = scheduler.step(noise, t, z, generator=generator).prev_sample

    The draws now come from a stream of their own (on the CPU, what ``torch.manual_seed``
    of the same seed gives), so the image is the lesson's for the generator's seed.
    Expects ``torch`` to be the torch module, a fresh name ``generator``, and schedulers
    whose ``step`` takes ``generator=`` (DDPM, DDIM, Euler, Euler ancestral, DPM-Solver).
    """
    parsed = _parse(source)
    if parsed is None:
        return source
    found = _seeded_draws(parsed)
    edits = []
    for index, seed in choices.items():
        stmt, calls = found[index]
        first = next(n for n in calls if ast.unparse(n.func) == "torch.randn")
        device = next((ast.get_source_segment(source, k.value) for k in first.keywords if k.arg == "device"), "")
        at = parsed.offset((stmt.end_lineno or stmt.lineno) + 1, 0)
        line = f"{parsed.indent(stmt.lineno)}generator = torch.Generator({device}).manual_seed({seed})\n"
        edits.append((at, at, line))
        for call in calls:
            close = parsed.end(call) - 1  # the call's ")"
            before = source[:close].rstrip()[-1:]
            edits.append(
                (
                    close,
                    close,
                    {"(": "generator=generator", ",": " generator=generator"}.get(before, ", generator=generator"),
                )
            )
    return _replace(source, edits)


# --- %%time (notebook cells) -----------------------------------------------------------


def timed_cell_sites(source: str) -> list[Site]:
    """A notebook cell that ``%%time`` can open: not empty, not already opened by a cell magic."""
    return [Site(1)] if source.strip() and not source.lstrip().startswith("%%") else []


def time_cell(source: str, sites: Collection[int]) -> str:
    """``%%time`` opening the cell (its one site): IPython runs the body in the notebook's
    namespace as before and prints how long it took."""
    return "%%time\n" + source if sites and timed_cell_sites(source) else source


# --- programs: several sources edited as one -----------------------------------------


def program_sites(sources: Sequence[str], sites: Callable[[str], list[Site]]) -> list[tuple[int, Site]]:
    """Every site of one edit in a program (a notebook's code cells), in order: (source index, site)."""
    return [(i, site) for i, source in enumerate(sources) for site in sites(source)]


def edit_program(
    sources: Sequence[str],
    sites: Callable[[str], list[Site]],
    edit: Callable[[str, Mapping[int, T]], str],
    choices: Mapping[int, T],
) -> list[str]:
    """Apply ``edit`` to each source, ``choices`` keyed by :func:`program_sites`' numbering."""
    out, number = [], 0
    for source in sources:
        count = len(sites(source))
        local = {i - number: v for i, v in choices.items() if number <= i < number + count}
        out.append(edit(source, local) if local else source)
        number += count
    return out


# --- renaming helper variables ---------------------------------------------------------


class _Names(ast.NodeVisitor):
    """What renaming must know about a program's names."""

    def __init__(self) -> None:
        self.stored: set[str] = set()  # variables assigned (and parameters)
        self.args: set[str] = set()
        self.fixed: set[str] = set()  # never renamed: imports, defs, classes, globals...
        self.keywords: set[str] = set()
        self.strings: set[str] = set()
        self.dynamic = False  # getattr(), globals()...: names may be read by their spelling
        self.star = False  # a star import binds names the text does not show
        self._class_depth = 0

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            (self.fixed if self._class_depth else self.stored).add(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        self.args.add(node.arg)
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        self.fixed.add(node.asname or node.name.split(".")[0])
        self.star |= node.name == "*"

    def _scope(self, node: ast.AST, class_depth: int) -> None:
        depth, self._class_depth = self._class_depth, class_depth
        self.generic_visit(node)
        self._class_depth = depth

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            self.fixed.add(node.name)
        self._scope(node, 0)

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.fixed.add(node.name)
        self._scope(node, self._class_depth + 1)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        self.fixed.update(node.names)

    visit_Nonlocal = visit_Global

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.fixed.add(node.name)
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.fixed.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))  # f-string positions vary

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg:
            self.keywords.add(node.arg)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.strings.add(node.value)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC:
            self.dynamic = True
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        for name in ("name", "rest"):  # match captures
            if isinstance(node, (ast.MatchAs, ast.MatchStar, ast.MatchMapping)) and getattr(node, name, None):
                self.fixed.add(getattr(node, name))
        super().generic_visit(node)


def renameable(
    sources: Sequence[str], protected: Collection[str] = (), protected_functions: Collection[str] = ()
) -> list[str]:
    """Variables of a program (a module, or a notebook's code cells) safe to rename everywhere.

    Never: the ``protected`` names (what a grader reads), parameters of
    ``protected_functions`` (callers may pass them by keyword), builtins, imported names,
    function and class names, names a class body binds, ``global``/``nonlocal``, ``except ... as``
    or a ``match`` binds, names inside f-strings, parameters also passed by keyword or
    spelled in a string, names in IPython lines or cells that do not parse, and any name
    spelled in a string where ``getattr``/``globals()``/``eval``... may read it; nothing at
    all after a star import.
    """
    names = _Names()
    opaque = []
    for source in sources:
        parsed = _parse(source)
        if parsed is None:
            opaque.append(source)
            continue
        names.visit(parsed.tree)
        opaque += [parsed.lines[i - 1] for i in parsed.ipython]
        for node in ast.walk(parsed.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in protected_functions:
                names.fixed.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
    if names.star:
        return []
    words = {w for text in opaque for w in re.findall(r"\w+", text)}
    spelled = {w for s in names.strings for w in re.findall(r"\w+", s)} if names.dynamic else set()
    candidates = (names.stored | names.args) - names.fixed - set(protected) - _FORBIDDEN_NAMES - words - spelled
    candidates -= names.args & (names.keywords | names.strings)
    return sorted(n for n in candidates if not n.startswith("__"))


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.mapping.get(node.arg, node.arg)
        self.generic_visit(node)
        return node


def fresh(sources: Sequence[str], name: str) -> bool:
    """Is ``name`` a valid identifier spelled nowhere in ``sources`` (nor a builtin or keyword)?"""
    return (
        name.isidentifier()
        and name not in _FORBIDDEN_NAMES
        and not any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", s) for s in sources)
    )


def rename(source: str, mapping: Mapping[str, str]) -> str:
    """Rename variables (``old -> new``) in ``source``: a consistent renaming to fresh names
    (see :func:`renameable` and :func:`fresh`) changes no value.

    Raises ValueError for a new name that is not fresh in ``source``, and AssertionError
    if the result is not the same syntax tree with the names changed (a bug here).
    """
    parsed = _parse(source)
    if parsed is None or not mapping:
        return source
    taken = [n for n in mapping.values() if not fresh([source], n) or n in mapping]
    if taken:
        raise ValueError(f"rename: new names must be fresh identifiers, got {taken}")
    edits = []
    for node in ast.walk(parsed.tree):
        old = node.id if isinstance(node, ast.Name) else node.arg if isinstance(node, ast.arg) else None
        if old is not None and old in mapping:
            start = parsed.start(node)
            edits.append((start, start + len(old), mapping[old]))
    renamed = _replace(source, edits)
    # Proof: the new program is the old one's syntax tree with the names changed.
    view = python_view if parsed.ipython else str
    if ast.dump(ast.parse(view(renamed))) != ast.dump(_Renamer(mapping).visit(ast.parse(view(source)))):
        raise AssertionError(f"rename {dict(mapping)} changed more than names")
    return renamed
