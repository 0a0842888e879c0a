"""Reading an Ultralytics checkpoint (``yolo-world.pt``) without Ultralytics and without running pickled code.

An Ultralytics ``.pt`` is a torch pickle of ``{"model": WorldModel, "ema": ..., "train_args": ...}``
where the model is a whole pickled ``nn.Module`` tree. Loading it normally imports ``ultralytics``
(AGPL, and it pulls torchvision) and lets the pickle call whatever it names. Here the unpickler
resolves only torch's tensor-rebuild functions and a few plain builtins; every other class
(``ultralytics.*``, ``torch.nn.*``, anything else) becomes an :class:`Inert` stand-in that only
records its state: a torch module pickles as "new object of class C" + ``__setstate__(dict)``,
and that dict holds ``_parameters``, ``_buffers``, ``_modules`` and plain attributes (``yaml``,
``stride``, ``f``, ``nh``, ``eps`` ...). Anything that would have to be *called* (a ``__reduce__``
to ``os.system``, ``eval``, a class constructor) is refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.models.common.errors import ModelArtifactsError

#: callables a torch checkpoint needs to rebuild tensors (resolved to the real functions)
_TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}
#: containers protocol-2 pickles build by a call (calling these runs no code of the file's choosing;
#: lists, dicts, strings and bytes have opcodes of their own, so their constructors stay out)
_BUILTINS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class UnsafeCheckpointError(ModelArtifactsError):
    """The pickle asks to call something that is not a tensor rebuild or a plain container."""


class _Refused(pickle.UnpicklingError):
    """Raised by the unpickler for a callable it will not resolve (told apart from a damaged file)."""


class Inert:
    """A stand-in for a class the checkpoint names: it keeps the state it is given, runs nothing.

    ``qualname`` (``module.Class``) says what the checkpoint called it; ``state`` is the
    ``__setstate__`` argument (a module's ``__dict__``), ``args`` what ``__new__`` was given."""

    qualname: ClassVar[str] = "?"
    args: tuple[Any, ...]
    state: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["state"] = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.__dict__["state"] = state if isinstance(state, dict) else {"value": state}

    # dict-like item assignment (SETITEM on a stand-in for a dict subclass) is kept, not run
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["state"][key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on a stand-in for a list subclass
        self.__dict__["state"].setdefault("items", []).append(value)

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)

    @property
    def name(self) -> str:
        """The class name without its module (``C2fAttn``, ``Conv2d``)."""
        return self.qualname.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    @property
    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    def child(self, key: str) -> Any:
        return self.children.get(key)

    def __repr__(self) -> str:
        return f"<{self.qualname} stand-in>"


_classes: dict[str, type[Inert]] = {}


def stand_in(module: str, name: str) -> type[Inert]:
    key = f"{module}.{name}"
    found = _classes.get(key)
    if found is None:
        found = type(name, (Inert,), {"qualname": key, "__module__": __name__})
        _classes[key] = found
    return found


@dataclass(frozen=True)
class BoundName:
    """What ``getattr(obj, name)`` in a pickle stands for: a fused Ultralytics module stores its
    ``forward = self.forward_fuse`` as such a call. Recorded, never looked up."""

    owner: Any
    name: str


def _recorded_getattr(obj: Any, name: Any, *default: Any) -> BoundName:
    if isinstance(obj, Inert) and isinstance(name, str):
        return BoundName(obj, name)
    raise _Refused(f"the checkpoint asks for attribute {name!r} of a {type(obj).__name__}")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (protocol 0/1 pickles), for stand-ins only."""
    if isinstance(cls, type) and issubclass(cls, Inert) and base is object:
        return cls.__new__(cls)
    raise _Refused(f"the checkpoint asks to rebuild {cls!r} from {base!r}")


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles (torch.save's default) name Python 2 modules; pickle's own find_class
        # maps them, and this one replaces it
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if (module, name) in _BUILTINS:
            return _BUILTINS[(module, name)]
        if (module, name) in _TORCH_FUNCTIONS:
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or _is_dtype(name)):
            return super().find_class(module, name)
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if (module, name) == ("builtins", "getattr"):
            return _recorded_getattr
        if module.split(".")[0] in ("builtins", "os", "posix", "nt", "subprocess", "sys", "importlib"):
            # a "class" from here would be a function the pickle calls (os.system, eval, getattr)
            raise _Refused(f"the checkpoint asks to call {module}.{name}")
        return stand_in(module, name)


def _is_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def _pickle_module() -> types.ModuleType:
    module = types.ModuleType("edge_agent_safe_pickle")
    module.Unpickler = SafeUnpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: SafeUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.loads = lambda b, **kw: SafeUnpickler(io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    module.__dict__["UnpicklingError"] = pickle.UnpicklingError
    return module


def read_pickle(path: Path) -> Any:
    """The checkpoint's object tree, classes replaced by stand-ins (ModelArtifactsError when unreadable)."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_pickle_module())
    except _Refused as exc:
        raise UnsafeCheckpointError(
            path, f"was refused: {exc}; an Ultralytics checkpoint holds only modules and tensors"
        ) from None
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelArtifactsError(path, f"cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Checkpoint:
    """What the network is built from: the model's stand-in tree, its yaml, and a flat state dict."""

    model: Inert
    yaml: dict[str, Any]
    state: dict[str, Any]  # "model.12.attn.gl.weight" -> float32 tensor


def walk(node: Inert, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, tensor) of every parameter and buffer under ``node``, as ``state_dict`` names them."""
    for group in ("_parameters", "_buffers"):
        for key, value in (node.get(group) or {}).items():
            if value is not None:
                yield prefix + key, value
    for key, child in node.children.items():
        if isinstance(child, Inert):
            yield from walk(child, f"{prefix}{key}.")


def read_checkpoint(path: Path) -> Checkpoint:
    import torch

    content = read_pickle(path)
    if not isinstance(content, dict):
        raise ModelArtifactsError(path, "is not an Ultralytics checkpoint (a dict with model / ema)")
    model = content.get("ema") or content.get("model")
    if not isinstance(model, Inert) or not isinstance(model.get("yaml"), dict):
        raise ModelArtifactsError(path, "holds no Ultralytics model with a yaml (ckpt['ema'] or ckpt['model'])")
    state = {}
    for key, value in walk(model):
        if not isinstance(value, torch.Tensor):
            raise ModelArtifactsError(path, f"{key} is a {type(value).__name__}, not a tensor")
        state[key] = value.detach().float() if value.is_floating_point() else value.detach()
    return Checkpoint(model, dict(model.get("yaml")), state)


__all__ = ["Checkpoint", "Inert", "UnsafeCheckpointError", "read_checkpoint", "read_pickle", "walk"]
