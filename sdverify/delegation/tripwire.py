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

import builtins
import functools
import importlib
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MAX_RECORDS = 200
KERNEL_MODULE = "_sdverify_tripwire"  # where a kernel keeps its tripwire (the extraction cell reads it)
PSEUDO_FILES = "<sdverify-"  # the file names of the grader's code run in a kernel (extraction, this)


def origin(obj: Any) -> str | None:
    """The file whose code ``obj`` runs when called (through partials, methods and ``__wrapped__``)."""
    for _ in range(16):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif callable(getattr(obj, "__wrapped__", None)):
            obj = obj.__wrapped__
        else:
            break
    code = getattr(obj, "__code__", None)
    if code is None and not isinstance(obj, type):
        call = next((vars(k)["__call__"] for k in type(obj).__mro__ if "__call__" in vars(k)), None)
        code = getattr(call, "__code__", None)
    return code.co_filename if isinstance(code, types.CodeType) else None


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
    ) -> None:
        self.modules = tuple(modules)
        self.methods = tuple(methods)
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
        is the kit's own.  Never raises: a tripwire must not change what student code does."""
        try:
            if not sys._getframe(2).f_code.co_filename.startswith(self.kit):
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
        self._settled()
        return self

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

        watched._sdverify_tripwire = True  # type: ignore[attr-defined]
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
        """Record each of ``names`` in ``module`` whose code is the kit's own (re-exported, not written)."""
        for name in names:
            fn = getattr(module, name, None)
            file = origin(fn) if callable(fn) else None
            if file is not None and file.startswith(self.kit):
                target: Any = fn
                while hasattr(target, "__wrapped__"):
                    target = target.__wrapped__
                qualified = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', name)}"
                self.record("is", [qualified.lstrip(".")], where=name)


def cell_count() -> Any:
    """In a notebook kernel: the execution count of the cell that is running (its ``In [n]``:
    the displayhook's prompt count; IPython 9 has already advanced ``execution_count``)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(getattr(shell, "displayhook", None), "prompt_count", None)


def kernel_setup(watch: dict[str, list[Any]], kit: str) -> str:
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
        f"    _sdv_m.cell_count, {watch.get('methods', ['__call__'])!r},\n"
        ").install()\n"
        "del _sdv_b, _sdv_sys, _sdv_types, _sdv_m"
    )
