"""Read a submission's source for delegation without running it (the grader's side).

Finds imports of watched names (``import``, ``from ... import``, ``importlib.import_module`` or
``__import__`` of a constant or concatenated string, ``sys.modules[...]``), attribute chains
and ``getattr(x, "name")`` on them, and calls of instances built from a watched class
(``pipe = StableDiffusionPipeline.from_pretrained(...)`` then ``pipe(prompt)``) or of their
stage methods (``pipe.encode_prompt(...)``).  In a module
each use is charged to the top-level functions whose code reaches it, through the module's
own helpers; in a notebook, to the cell it is in.  Best effort: ``eval``, ``exec`` or names
computed from data hide a use from it; the run-time tripwire sees those.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sdverify.delegation.policy import STAGE_METHODS, How, Use, covers, known_names

_IMPORTERS = frozenset({"importlib.import_module", "importlib.__import__", "builtins.__import__"})
_FACTORIES = frozenset({"from_pretrained", "from_pipe", "from_single_file", "from_config"})
_MOVERS = frozenset({"to", "cuda", "cpu", "half", "float"})  # pipe.to(device) is still that pipeline
_BUILTINS = frozenset({"__import__", "getattr"})
Relevant = Callable[[str], "tuple[str, ...] | None"]


def relevance(watched: Iterable[str]) -> Relevant:
    """A filter: a name's known names when one of them falls under a ``watched`` entry, else None."""
    entries = tuple(watched)

    def relevant(name: str) -> tuple[str, ...] | None:
        first, *others = known_names(name)
        names = (first, *(n for n in others if any(covers(e, n) for e in entries)))
        return names if any(covers(e, n) for e in entries for n in names) else None

    return relevant


def _const_str(node: ast.AST) -> str | None:
    """The value of a string expression built from constants (``"sdv" + "erify"``, f-strings, join)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left), _const_str(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = [_const_str(v) for v in node.values]
        return "".join(p for p in parts if p is not None) if all(p is not None for p in parts) else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and isinstance(node.args[0], (ast.List, ast.Tuple))
    ):
        sep, items = _const_str(node.func.value), [_const_str(e) for e in node.args[0].elts]
        if sep is not None and all(i is not None for i in items):
            return sep.join(i for i in items if i is not None)
    return None


@dataclass
class _Scan(ast.NodeVisitor):
    """One pass over some code: the watched uses it makes and the free names it reads."""

    bindings: dict[str, str]  # local name -> qualified name (imports, aliases)
    instances: dict[str, str]  # local name -> qualified class it is an instance of
    relevant: Relevant
    uses: list[tuple[How, tuple[str, ...], int]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # free names read (module-level helpers reached)
    stars: list[str] = field(default_factory=list)
    local: frozenset[str] = frozenset()  # names bound in the function being read: not module-level ones

    def use(self, how: How, name: str, node: ast.AST, method: str = "") -> None:
        """Record a use of ``name`` (a call of its ``method``: named first, judged as the class)."""
        names = self.relevant(name)
        if names:
            named = (f"{names[0]}.{method}", *names) if method else names
            self.uses.append((how, named, getattr(node, "lineno", 0)))

    def qualify(self, node: ast.AST) -> str | None:
        """The qualified name an expression denotes, when the source says it."""
        if isinstance(node, ast.Name):
            return self.bindings.get(node.id) or (f"builtins.{node.id}" if node.id in _BUILTINS else None)
        if isinstance(node, ast.Attribute):
            base = self.qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript) and self.qualify(node.value) == "sys.modules":
            return _const_str(node.slice)
        if isinstance(node, ast.Call) and node.args:
            func = self.qualify(node.func)
            if func in _IMPORTERS:
                return _const_str(node.args[0])
            if func == "builtins.getattr" and len(node.args) >= 2:
                base, attr = self.qualify(node.args[0]), _const_str(node.args[1])
                return f"{base}.{attr}" if base and attr else None
        return None

    def instance_of(self, node: ast.AST) -> str | None:
        """The watched class an expression is an instance of (a pipeline built or loaded here)."""
        if isinstance(node, ast.Name):
            return self.instances.get(node.id)
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _FACTORIES:
            cls = self.qualify(func.value)
            return cls if cls and self.relevant(cls) else None
        if isinstance(func, ast.Attribute) and func.attr in _MOVERS:
            return self.instance_of(func.value)
        cls = self.qualify(func)
        return cls if cls and cls not in _IMPORTERS and self.relevant(cls) else None

    # ------------------------------------------------------------------ visitors
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            self._bind(bound, alias.name if alias.asname else bound)
            self.use("import", alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.level or not node.module:  # relative: the submission's own package
                self._bind(alias.asname or alias.name, None)
            elif alias.name == "*":
                self.stars.append(node.module)
                self.use("import", node.module, node)
            else:
                self._bind(alias.asname or alias.name, f"{node.module}.{alias.name}")
                self.use("import", f"{node.module}.{alias.name}", node)

    def _bind(self, name: str, qualified: str | None, instance: str | None = None) -> None:
        for table, value in ((self.bindings, qualified), (self.instances, instance)):
            if value is None:
                table.pop(name, None)
            else:
                table[name] = value

    def _assign(self, targets: list[ast.expr], value: ast.AST | None) -> None:
        if value is not None:
            self.visit(value)
        qualified = self.qualify(value) if value is not None else None
        instance = self.instance_of(value) if value is not None and qualified is None else None
        for target in targets:
            if isinstance(target, ast.Name):
                self._bind(target.id, qualified, instance)
            else:
                self.visit(target)
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        self._bind(name.id, None)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assign(node.targets, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assign([node.target], node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._assign([node.target], node.value)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda) -> None:
        """A body with its own scope: parameters shadow outer names; nothing binds outside."""
        saved = dict(self.bindings), dict(self.instances), self.local
        if not isinstance(node, ast.ClassDef):
            params = {arg.arg for arg in ast.walk(node.args) if isinstance(arg, ast.arg)}
            for name in params:
                self._bind(name, None)
            self.local |= params
        self.generic_visit(node)
        self.bindings, self.instances, self.local = saved
        if not isinstance(node, ast.Lambda):
            self._bind(node.name, None)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scoped

    def visit_Name(self, node: ast.Name) -> None:
        if node.id not in self.local:
            self.names.add(node.id)
        if isinstance(node.ctx, ast.Load) and node.id in self.bindings:
            self.use("reference", self.bindings[node.id], node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualified = self.qualify(node)
        if qualified is None:
            self.generic_visit(node)
            return
        self.use("reference", qualified, node)
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value  # type: ignore[assignment]
        if isinstance(root, ast.Name) and root.id not in self.local:
            self.names.add(root.id)
        else:
            self.visit(root)

    def visit_Call(self, node: ast.Call) -> None:
        func = self.qualify(node.func)
        module = _const_str(node.args[0]) if func in _IMPORTERS and node.args else None
        if module:
            self.use("import", module, node)
        elif func == "builtins.getattr" and (qualified := self.qualify(node)):
            self.use("reference", qualified, node)
        method = node.func.attr if isinstance(node.func, ast.Attribute) and node.func.attr in STAGE_METHODS else ""
        target = node.func.value if method and isinstance(node.func, ast.Attribute) else node.func
        cls = self.instance_of(target)
        if cls:
            self.use("call", cls, node, "" if method == "__call__" else method)
        self.generic_visit(node)


def _flat(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, compound ones (if/try/with/for) opened: their bodies run at import."""
    for stmt in body:
        if isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            header = [getattr(stmt, a) for a in ("test", "iter", "target") if hasattr(stmt, a)]
            header += [item.context_expr for item in getattr(stmt, "items", [])]
            yield from (ast.Expr(value=h, lineno=stmt.lineno, col_offset=0) for h in header)
            for part in ("body", "orelse", "finalbody"):
                yield from _flat(getattr(stmt, part, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _flat(handler.body)
        else:
            yield stmt


def _owners(stmt: ast.stmt) -> list[str]:
    """The module-level names a statement defines ("" when none: its uses stay at module level)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in stmt.names if a.name != "*"] or [""]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    names = [n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names or [""]


def scan_module(source: str, watched: Iterable[str], functions: Iterable[str]) -> list[Use]:
    """Uses of ``watched`` names in a module's source, each charged to the ``functions`` (top-level
    names) whose code reaches it, or to "" (module level, reached by none of them).

    Raises SyntaxError (and RecursionError, MemoryError for absurd sources).
    """
    tree = ast.parse(source)
    relevant = relevance(watched)
    top = _Scan({}, {}, relevant)
    found: dict[str, list[tuple[How, tuple[str, ...], int]]] = {}
    reads: dict[str, set[str]] = {}
    deferred: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = []
    for stmt in _flat(tree.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            deferred.append(stmt)  # bodies run later, with the module's final names
            top._bind(stmt.name, None)
            continue
        top.uses, top.names = [], set()
        top.visit(stmt)
        for owner in _owners(stmt):
            found.setdefault(owner, []).extend(top.uses)
            reads.setdefault(owner, set()).update(top.names)
    for stmt in deferred:
        body = _Scan(dict(top.bindings), dict(top.instances), relevant)
        body.visit(stmt)
        found.setdefault(stmt.name, []).extend(body.uses)
        reads.setdefault(stmt.name, set()).update(body.names)
    uses: list[Use] = []
    reached: set[str] = set()
    for function in functions:
        if function not in found:
            uses += [Use("import", (f"{m}.{function}",), function, "star import") for m in top.stars]
            continue
        reach, todo = {function}, [function]
        while todo:
            for name in reads.get(todo.pop(), set()) & found.keys() - reach:
                reach.add(name)
                todo.append(name)
        reached |= reach
        uses += [Use(how, names, function, f"line {line}") for owner in reach for how, names, line in found[owner]]
    for owner in found.keys() - reached:
        uses += [Use(how, names, "", f"line {line}") for how, names, line in found[owner]]
    return list(dict.fromkeys(uses))


def scan_cells(sources: list[str | None], watched: Iterable[str]) -> list[list[Use]]:
    """Uses of ``watched`` names per notebook cell (None: a cell that is not Python), names
    bound in one cell carrying to the next, as in a kernel."""
    scan = _Scan({}, {}, relevance(watched))
    per_cell: list[list[Use]] = []
    for source in sources:
        scan.uses = []
        if source is not None:
            try:
                scan.visit(ast.parse(source))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass  # a cell IPython cannot run either: nothing it could have used
        per_cell.append(list(dict.fromkeys(Use(how, names, "", f"line {line}") for how, names, line in scan.uses)))
    return per_cell
