"""A restricted unpickler for checkpoints: torch files (zip and legacy) and plain pickles load
as data; nothing from the file is imported or called beyond an explicit allow-list.

Loading an untrusted checkpoint without running its code.

Globals resolve in three ways:

* allow-listed *functions* (torch's tensor rebuilders, OrderedDict, set...) may be called by
  REDUCE: they are the ones torch's own ``weights_only=True`` allows;
* allow-listed *module classes* (torch.nn, torchvision.models, torchvision.ops) may only be
  instantiated empty (NEWOBJ, ``cls.__new__``) and filled with their saved ``__dict__``: no
  ``__init__``, no other method runs;
* anything else (an optimizer, a loss, a numpy scalar, the author's own ``__main__.Network``,
  a bound method saved as ``getattr(obj, name)``) becomes an inert `Placeholder`: never
  imported, never called. A placeholder is harmless where serving does not need it; the
  checkpoint code refuses the file where it does.

Globals from modules that only an attack needs (os, subprocess, sys, builtins' eval/exec...)
refuse the whole file at once.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UnsafeCheckpoint

# modules whose globals only a hostile file references: refused on sight
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "builtins", "__builtin__", "importlib", "runpy",
    "shutil", "socket", "pty", "code", "codeop", "pickle", "_pickle", "marshal", "ctypes",
    "types", "operator", "functools", "io", "pathlib", "tempfile", "webbrowser", "platform",
    "signal", "multiprocessing", "threading", "asyncio", "urllib", "http", "requests",
    "inspect", "pdb", "timeit", "shlex", "glob", "zipimport", "sysconfig", "site", "posixpath",
    "ntpath", "commands", "popen2", "torch.hub", "torch.jit", "torch.package", "torch.ops",
    "torch._ops", "torch.utils.cpp_extension", "torch.classes", "torch._dynamo",
})
# safe builtins: plain data types, callable by REDUCE
SAFE_BUILTINS = ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bytes",
                 "bool", "complex", "slice", "bytearray", "range")
BOUND_METHOD = "builtins.getattr"  # how pickle saves `optimizer.state_dict` (no call)
# packages whose nn.Module subclasses may be rebuilt as empty instances + their saved __dict__
MODULE_PACKAGES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.")


@dataclass(eq=False)
class Placeholder:
    """Something the file refers to that is not loaded: a global outside the allow-list, a call
    of one, or an instance of one. It records its name and absorbs whatever pickle feeds it."""

    what: str
    state: object = None
    items: list = field(default_factory=list)

    def __setstate__(self, state) -> None:
        self.state = state

    def append(self, item) -> None:
        self.items.append(item)

    def extend(self, items) -> None:
        self.items.extend(items)

    def __setitem__(self, key, value) -> None:
        self.items.append((key, value))

    def __call__(self, *args, **kwargs) -> Placeholder:
        return Placeholder(f"{self.what}(...)")

    def __repr__(self) -> str:
        return f"<not loaded: {self.what}>"

    @property
    def __name__(self) -> str:  # a legacy file's module records name their class
        return self.what


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2, restricted: `func` must itself be a rebuilder and
    the type a plain tensor or Parameter; the state is not applied."""
    if func not in _rebuilders() or new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafeCheckpoint(f"rebuilds a tensor with {getattr(func, '__name__', func)!r} "
                               f"as {getattr(new_type, '__name__', new_type)!r}")
    tensor = func(*args)
    return tensor if type(tensor) is new_type else tensor.as_subclass(new_type)


def _load_from_bytes(data: bytes):
    """torch.storage._load_from_bytes (plain pickles of tensors), through this unpickler."""
    return load_torch(io.BytesIO(data))


def _defaultdict(factory=None, *args):
    """collections.defaultdict of a plain data type (an optimizer's `state`)."""
    if factory is not None and factory not in _safe_builtins().values():
        raise UnsafeCheckpoint("makes a defaultdict with a non-data factory")
    return collections.defaultdict(factory, *args)


def _rebuilders() -> set:
    from torch import _utils

    return {_utils._rebuild_tensor, _utils._rebuild_tensor_v2, _utils._rebuild_parameter,
            _utils._rebuild_parameter_with_state}


def _safe_builtins() -> dict:
    import builtins

    return {f"builtins.{name}": getattr(builtins, name) for name in SAFE_BUILTINS}


def callables() -> dict[str, object]:
    """Globals that REDUCE may call: torch's tensor rebuilders, plain data types, dtypes."""
    import _codecs

    from torch import _utils

    allowed = {f"torch._utils.{f.__name__}": f for f in _rebuilders()}
    allowed.update(_safe_builtins())
    allowed.update({
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.storage._load_from_bytes": _load_from_bytes,
        "collections.OrderedDict": collections.OrderedDict,
        "collections.Counter": collections.Counter,
        "collections.defaultdict": _defaultdict,
        "_codecs.encode": _codecs.encode,
        "torch.Size": torch.Size, "torch.device": torch.device,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "torch._utils._rebuild_device_tensor_from_cpu_tensor":
            _utils._rebuild_device_tensor_from_cpu_tensor,
    })
    return allowed


def values() -> dict[str, object]:
    """Globals that are plain values: dtypes, layouts, memory formats, Tensor/Parameter types."""
    out = {f"torch.{name}": getattr(torch, name) for name in dir(torch)
           if isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                      torch.memory_format))}
    out.update({"torch.Tensor": torch.Tensor, "torch.nn.parameter.Parameter": torch.nn.Parameter})
    return out


def module_class(module: str, name: str):
    """The nn.Module subclass `module.name` if it lives in torch.nn or torchvision, else None.
    Only already-importable torch/torchvision modules are looked at."""
    if not module.startswith(MODULE_PACKAGES):
        return None
    import importlib

    import torchvision  # noqa: F401 - its submodules are what may be named

    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, torch.nn.Module) else None


def denied(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DENIED_MODULES)


class Unpickler(pickle._Unpickler):
    """The pure-Python unpickler, with every opcode that could call or import restricted."""

    dispatch = dict(pickle._Unpickler.dispatch)
    _callables: dict | None = None
    _values: dict | None = None

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle itself maps them
            import _compat_pickle

            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if Unpickler._callables is None:
            Unpickler._callables, Unpickler._values = callables(), values()
        if qualified in Unpickler._callables:
            return Unpickler._callables[qualified]
        if qualified in Unpickler._values:
            return Unpickler._values[qualified]
        if qualified == BOUND_METHOD:
            return Placeholder("a bound method (getattr)")
        if denied(module):
            raise UnsafeCheckpoint(f"refers to {qualified}, which a checkpoint never needs")
        cls = module_class(module, name)
        return ModuleClass(cls) if cls is not None else Placeholder(qualified)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if isinstance(func, Placeholder):
            self.stack[-1] = Placeholder(f"{func.what}(...)")
        elif isinstance(func, ModuleClass):
            raise UnsafeCheckpoint(f"calls {func.cls.__module__}.{func.cls.__name__}(...) "
                                   "while loading; modules may only be restored from their state")
        elif func in Unpickler._callables.values():
            self.stack[-1] = func(*args)
        else:
            raise UnsafeCheckpoint(f"calls {func!r}, which is not a rebuild function")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._instance(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._instance(self.stack[-1], (*args, *kwargs.values()))

    def load_inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        self.append(self._instance(self.find_class(module, name), tuple(self.pop_mark())))

    def load_obj(self) -> None:
        args = self.pop_mark()
        cls = args.pop(0)
        self.append(self._instance(cls, tuple(args)))

    def _instance(self, cls, args):
        """An empty instance of an allow-listed module class, a placeholder for anything else;
        never a constructor call."""
        if isinstance(cls, ModuleClass):
            if args:
                raise UnsafeCheckpoint(f"constructs {cls.cls.__name__} with arguments")
            return cls.cls.__new__(cls.cls)
        if isinstance(cls, Placeholder):
            return Placeholder(f"a {cls.what} object")
        if cls in (collections.OrderedDict, dict, list, set, tuple) or cls is _defaultdict:
            return cls(*args) if cls is not _defaultdict else _defaultdict(*args)
        raise UnsafeCheckpoint(f"constructs {cls!r}")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Placeholder):
            inst.state = state
        elif isinstance(inst, torch.nn.Module):
            if isinstance(state, tuple):  # (__dict__, slots)
                state = state[0] or {}
            if not isinstance(state, dict):
                raise UnsafeCheckpoint(f"restores a {type(inst).__name__} from a non-dict state")
            vars(inst).update(state)
        elif isinstance(inst, collections.OrderedDict) and isinstance(state, dict):
            vars(inst).update(state)  # a state_dict's _metadata
        elif isinstance(inst, torch.Tensor):
            pass  # a tensor subclass's python state: not needed for its values
        else:
            raise UnsafeCheckpoint(f"restores state into a {type(inst).__name__}")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.OBJ[0]] = load_obj
    dispatch[pickle.BUILD[0]] = load_build


@dataclass(frozen=True)
class ModuleClass:
    """An allow-listed nn.Module class as pickle sees it: it can only be instantiated empty."""

    cls: type

    @property
    def __name__(self) -> str:
        return self.cls.__name__


def load(file, **kwargs):
    """pickle.load, restricted (torch.load calls this for a legacy file's headers)."""
    return Unpickler(file, **kwargs).load()


class _PickleModule:
    """What torch.load takes as `pickle_module`: this module's Unpickler and load."""

    __name__ = "flower_classifier.model.safe_pickle"
    Unpickler = Unpickler
    load = staticmethod(load)


def load_torch(file) -> object:
    """torch.load of a zip or legacy torch file through the restricted unpickler, on the CPU.
    weights_only=False only because torch refuses a pickle_module otherwise: the restricted
    unpickler is what keeps the file's code from running."""
    with warnings.catch_warnings():  # legacy module records: "source code not checked"
        warnings.simplefilter("ignore")
        return torch.load(file, map_location="cpu", pickle_module=_PickleModule,
                          weights_only=False)


def load_untrusted(path: str | os.PathLike) -> object:
    """The object in a torch.save file (zip or legacy) or a plain pickle.dump file."""
    path = Path(path)
    try:
        return load_torch(path)
    except RuntimeError as error:
        if "magic number" not in str(error):
            raise
    with open(path, "rb") as file:  # not a torch file: a plain pickle of a dict of tensors
        return load(file)
