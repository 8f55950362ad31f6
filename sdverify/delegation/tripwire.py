"""Run-time tripwires against delegation, inside the process that runs student code.

They record, never block: an import of a watched module, a call of a function of a watched
module (the reference API), a call of an instance of a watched class (a pipeline's
``__call__``), each only when the code that made it is not the kit's own (told apart by the
calling frame's file).  The grader judges the records against its policy.

Standard library only and self-contained: the checker's sandboxed child imports this module;
a notebook kernel runs its *source* (:func:`kernel_setup`), so it need not import sdverify.
Best effort by nature: code in the same process can undo a tripwire (restore
``builtins.__import__``, call a wrapper's ``__wrapped__``, clear the records); the static
scan of the source (:mod:`sdverify.delegation.static`) is the other half.
"""

from __future__ import annotations
import __future__

import builtins
import functools
import hashlib
import importlib
import operator
import os
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MAX_RECORDS = 200
_FUTURE_FLAGS = functools.reduce(
    operator.or_, (getattr(__future__, name).compiler_flag for name in __future__.all_feature_names)
)
_IMPORT_SYSTEM = "<frozen importlib"  # the file name of the import machinery's frames
MIN_COPIED_LINES = 6  # substantial lines shared with a watched module's source: a copy of it
KERNEL_MODULE = "_sdverify_tripwire"  # where a kernel keeps its tripwire (the extraction cell reads it)
PSEUDO_FILES = "<sdverify-"  # the file names of the grader's code run in a kernel (extraction, this)


def line_hashes(text: str) -> frozenset[str]:
    """Short hashes of the substantial lines of a source text (what a copy of it shares)."""
    lines = (line.strip() for line in text.splitlines())
    return frozenset(
        hashlib.sha256(line.encode()).hexdigest()[:16] for line in lines if len(line) >= 24 and not line.startswith("#")
    )


def _code(obj: Any) -> types.CodeType | None:
    """The code ``obj`` runs when called (through partials, methods, ``__wrapped__`` and our wrappers)."""
    for _ in range(16):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif callable(getattr(obj, "_sdverify_tripwire", None)):
            obj = obj._sdverify_tripwire
        elif callable(getattr(obj, "__wrapped__", None)):
            obj = obj.__wrapped__
        else:
            break
    code = getattr(obj, "__code__", None)
    if code is None and not isinstance(obj, type):
        call = next((vars(k)["__call__"] for k in type(obj).__mro__ if "__call__" in vars(k)), None)
        code = getattr(call, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


class Tripwire:
    """Records ``{"how", "names", "where"}`` for each watched use made outside ``kit``.

    ``modules``: import-watched prefixes; ``calls``: modules whose public functions are
    wrapped; ``classes``: ``(entry, defining module, qualified name)`` of classes whose
    (library-defined) ``methods`` (``__call__`` and the stage methods) are wrapped,
    subclasses included.  Each is wrapped as soon
    as its module is loaded (nothing is imported early).  ``where()`` says what is running
    (the probe's function, the cell's execution count).
    """

    def __init__(
        self,
        modules: Iterable[str],
        classes: Iterable[Iterable[str]],
        calls: Iterable[str],
        kit: tuple[str, ...],
        where: Callable[[], Any],
        methods: Iterable[str] = ("__call__",),
        texts: dict[str, list[str]] | None = None,
    ) -> None:
        self.modules = tuple(modules)
        self.methods = tuple(methods)
        self.texts = {name: frozenset(hashes) for name, hashes in (texts or {}).items()}
        # Code compiled at run time, whatever file name it claims, by identity (equal code objects
        # compiled from the same text are not the same code); the watched module it copies, if any.
        self.foreign: dict[int, tuple[types.CodeType, str | None]] = {}
        self.kit = kit
        self.where = where
        self.records: list[dict[str, Any]] = []
        self._classes = [tuple(c) for c in classes]
        self._calls = list(calls)
        self._depth = 0
        self._resolving = False

    # ------------------------------------------------------------------ records
    def _note(self, how: str, names: Iterable[str]) -> None:
        """Record a use made by the code that called the wrapper calling this, unless that code
        is the kit's own: in a kit file and not compiled at run time (code compiled through
        ``compile``/``exec``/``eval`` is never the kit's, whatever file name it claims).  Never
        raises: a tripwire must not change what student code does."""
        try:
            code = sys._getframe(2).f_code
            if id(code) in self.foreign or not code.co_filename.startswith(self.kit):
                self.record(how, names)
        except Exception:
            pass

    def record(self, how: str, names: Iterable[str], where: Any = None) -> None:
        if where is None:
            try:
                where = self.where()
            except Exception:  # a tripwire must never change what the student's code does
                where = None
        entry = {"how": how, "names": [str(n)[:200] for n in names][:4], "where": where}
        if len(self.records) < MAX_RECORDS and entry not in self.records:
            self.records.append(entry)

    def take(self) -> list[dict[str, Any]]:
        """The records so far, cleared."""
        taken, self.records = self.records, []
        return taken

    def _watched(self, name: object) -> bool:
        return isinstance(name, str) and any(name == m or name.startswith(m + ".") for m in self.modules)

    # ------------------------------------------------------------------ wrapping
    def install(self) -> Tripwire:
        """Hook the import machinery and wrap what is already loaded."""
        original_import, original_import_module = builtins.__import__, importlib.import_module
        tripwire = self

        def __import__(name, globals=None, locals=None, fromlist=(), level=0):
            tripwire._depth += 1
            try:
                module = original_import(name, globals, locals, fromlist, level)
            finally:
                tripwire._depth -= 1
            if level == 0 and tripwire._watched(name):
                items = [f"{name}.{item}" for item in fromlist or () if isinstance(item, str) and item != "*"]
                tripwire._note("import", items or [name])
            tripwire._settled()
            return module

        def import_module(name, package=None):
            tripwire._depth += 1
            try:
                module = original_import_module(name, package)
            finally:
                tripwire._depth -= 1
            if tripwire._watched(name):
                tripwire._note("import", [name])
            tripwire._settled()
            return module

        functools.update_wrapper(import_module, original_import_module)
        builtins.__import__ = importlib.__import__ = __import__
        importlib.import_module = import_module
        self._hook_loaders()
        self._hook_compilers()
        self._settled()
        return self

    def _hook_loaders(self) -> None:
        """The importers ``__import__`` does not cover: ``importlib._bootstrap._gcd_import`` and a
        fresh copy of a kit module by ``importlib.util.spec_from_file_location``."""
        import importlib.util

        bootstrap: Any = getattr(importlib, "_bootstrap")  # noqa: B009  (private: not in the stubs)

        original_gcd, original_spec = bootstrap._gcd_import, importlib.util.spec_from_file_location
        tripwire = self

        def _gcd_import(name, package=None, level=0):
            if level == 0 and tripwire._watched(name):
                tripwire._note("import", [name])
            return original_gcd(name, package, level)

        def spec_from_file_location(name, location=None, *args, **kwargs):
            try:
                module = tripwire._kit_module(location)
            except Exception:  # an odd location: the loader says what it makes of it
                module = None
            if module is not None and tripwire._watched(module):
                tripwire._note("import", [module])
            return original_spec(name, location, *args, **kwargs)

        bootstrap._gcd_import = _gcd_import
        importlib.util.spec_from_file_location = spec_from_file_location

    def _kit_module(self, location: Any) -> str | None:
        """The module name of a file in the kit's package (``sdverify/reference.py``), or None."""
        path = os.path.realpath(location)
        kit = os.path.realpath(self.kit[0])
        if not path.startswith(kit.rstrip(os.sep) + os.sep) or not path.endswith(".py"):
            return None
        parts = [os.path.basename(kit.rstrip(os.sep)), *os.path.relpath(path, kit)[:-3].split(os.sep)]
        return ".".join(p for p in parts if p != "__init__")

    def _hook_compilers(self) -> None:
        """``compile``, ``exec`` and ``eval`` of source text: what they compile is never the kit's
        own code, and text copied from a watched module (``texts``) is recorded as a copy."""
        original_compile, original_exec, original_eval = builtins.compile, builtins.exec, builtins.eval
        tripwire = self

        def _compiled(source, filename, mode, flags=0, dont_inherit=False, optimize=-1, depth=2, **kwargs):
            if not dont_inherit:  # the caller's __future__ flags, as the builtin inherits them (not ours)
                flags |= sys._getframe(depth).f_code.co_flags & _FUTURE_FLAGS
            code = original_compile(source, filename, mode, flags, True, optimize, **kwargs)
            if isinstance(code, types.CodeType):
                tripwire._compiled_from(source, code)
            return code

        def _run(run, mode, source, globals=None, locals=None, **kwargs):
            frame = sys._getframe(2)  # the caller of exec/eval
            if isinstance(source, (str, bytes)):
                source = _compiled(source, "<string>", mode, depth=3)
            if globals is None:  # the caller's namespaces, as the builtin would use
                globals, locals = frame.f_globals, frame.f_locals if locals is None else locals
            return run(source, globals, locals, **kwargs)

        def compile(source, filename, mode, flags=0, dont_inherit=False, optimize=-1, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(_IMPORT_SYSTEM):  # a module's file, imported
                return original_compile(source, filename, mode, flags, dont_inherit, optimize, **kwargs)
            return _compiled(source, filename, mode, flags, dont_inherit, optimize, **kwargs)

        def exec(source, globals=None, locals=None, /, **kwargs):
            return _run(original_exec, "exec", source, globals, locals, **kwargs)

        def eval(source, globals=None, locals=None, /):
            return _run(original_eval, "eval", source, globals, locals)

        builtins.compile, builtins.exec, builtins.eval = compile, exec, eval

    def _compiled_from(self, source: object, code: types.CodeType) -> None:
        """Mark ``code`` (and the code inside it) as compiled at run time, and as a copy of the
        watched module whose text it holds (:data:`MIN_COPIED_LINES` of its lines or more)."""
        try:
            text = source.decode(errors="replace") if isinstance(source, bytes) else source
            hashes = line_hashes(text) if isinstance(text, str) else frozenset()
            copied = next((m for m, known in self.texts.items() if len(hashes & known) >= MIN_COPIED_LINES), None)
            todo = [code]
            while todo:
                c = todo.pop()
                if id(c) not in self.foreign:
                    self.foreign[id(c)] = (c, copied)
                    todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
            if copied:
                self.record("copy", [copied])
        except Exception:  # a tripwire must never change what the student's code does
            pass

    def _settled(self) -> None:
        """After the outermost import: wrap what has become available."""
        if self._depth or self._resolving or not (self._calls or self._classes):
            return
        self._resolving = True
        try:
            for name in list(self._calls):
                module = sys.modules.get(name)
                if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
                    self._calls.remove(name)
                    self._wrap_functions(name, module)
            for watched in list(self._classes):
                name, module_name, qualname = watched
                module = sys.modules.get(module_name)
                if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
                    continue
                self._classes.remove(watched)
                cls: Any = module
                for part in qualname.split("."):
                    cls = getattr(cls, part, None)
                if isinstance(cls, type):
                    self._watch_class(name, cls)
        except Exception:  # an odd module (a failed import, a student's stand-in): nothing wrapped
            pass
        finally:
            self._resolving = False

    def _wrapped(self, fn: Callable, how: str, names: tuple[str, ...]) -> Callable:
        tripwire = self

        @functools.wraps(fn)
        def watched(*args: Any, **kwargs: Any) -> Any:
            tripwire._note(how, names)
            return fn(*args, **kwargs)

        del watched.__wrapped__  # no plain way around the record
        watched._sdverify_tripwire = fn  # type: ignore[attr-defined]
        return watched

    def _wrap_functions(self, name: str, module: types.ModuleType) -> None:
        for attr, fn in list(vars(module).items()):
            if not attr.startswith("_") and isinstance(fn, types.FunctionType) and fn.__module__ == name:
                setattr(module, attr, self._wrapped(fn, "call", (f"{name}.{attr}",)))

    def _watch_class(self, name: str, cls: type) -> None:
        """Wrap the watched methods of ``cls`` and of its subclasses from its package, now and later."""
        package = cls.__module__.split(".")[0]

        def wrap(klass: type) -> None:
            if klass.__module__.split(".")[0] != package:  # a student's own subclass is their code
                return
            for method in self.methods:
                fn: Any = vars(klass).get(method)
                static = isinstance(fn, staticmethod)
                fn = fn.__func__ if static else fn
                if isinstance(fn, types.FunctionType) and not getattr(fn, "_sdverify_tripwire", False):
                    called = f"{package}.{klass.__name__}" + ("" if method == "__call__" else f".{method}")
                    wrapped = self._wrapped(fn, "call", (called, name))
                    setattr(klass, method, staticmethod(wrapped) if static else wrapped)

        todo, seen = [cls], set()
        while todo:
            klass = todo.pop()
            if klass not in seen:
                seen.add(klass)
                wrap(klass)
                todo.extend(type.__subclasses__(klass))
        previous = vars(cls).get("__init_subclass__")

        def __init_subclass__(sub: type, **kwargs: Any) -> None:
            if isinstance(previous, classmethod):
                previous.__func__(sub, **kwargs)
            else:
                super(cls, sub).__init_subclass__(**kwargs)  # type: ignore[arg-type]
            wrap(sub)

        cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment,method-assign]

    def check_identity(self, module: Any, names: Iterable[str]) -> None:
        """Record each of ``names`` in ``module`` whose code is the kit's own (re-exported, not
        written) or was compiled from a watched module's text (a run-time copy)."""
        for name in names:
            fn = getattr(module, name, None)
            code = _code(fn) if callable(fn) else None
            _, copied = self.foreign.get(id(code), (None, None))
            if copied is not None:
                self.record("copy", [copied], where=name)
            elif code is not None and id(code) not in self.foreign and code.co_filename.startswith(self.kit):
                # Named by the kit file its code is in: a fresh copy of a kit module (loaded under
                # another module name) is still that module's code.
                owner = self._kit_module(code.co_filename) if code.co_filename.startswith(self.kit[0]) else None
                qualname = getattr(code, "co_qualname", code.co_name)  # Python 3.11+
                self.record("is", [f"{owner or code.co_filename}.{qualname}"], where=name)


def cell_count() -> Any:
    """In a notebook kernel: the execution count of the cell that is running (its ``In [n]``:
    the displayhook's prompt count; IPython 9 has already advanced ``execution_count``)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(getattr(shell, "displayhook", None), "prompt_count", None)


def kernel_setup(watch: dict[str, Any], kit: str) -> str:
    """Code that installs a tripwire in a notebook kernel, charging records to the cell's
    execution count; the kernel keeps it in ``sys.modules[KERNEL_MODULE]``."""
    source = Path(__file__).read_text()
    return (
        "import builtins as _sdv_b, sys as _sdv_sys, types as _sdv_types\n"
        f"_sdv_m = _sdv_types.ModuleType({KERNEL_MODULE!r})\n"
        f"_sdv_sys.modules[{KERNEL_MODULE!r}] = _sdv_m\n"
        f"_sdv_b.exec(_sdv_b.compile({source!r}, {PSEUDO_FILES + 'tripwire>'!r}, 'exec'), _sdv_m.__dict__)\n"
        "_sdv_m.TRIPWIRE = _sdv_m.Tripwire(\n"
        f"    {watch['modules']!r}, {watch['classes']!r}, {watch['calls']!r}, ({kit!r}, {PSEUDO_FILES!r}),\n"
        f"    _sdv_m.cell_count, {watch.get('methods', ['__call__'])!r}, {watch.get('texts', {})!r},\n"
        ").install()\n"
        "del _sdv_b, _sdv_sys, _sdv_types, _sdv_m"
    )
