"""Loading pickle-based model files (``.pdparams``, ``.pdopt``, ``rng.pkl``) without running code from them.

``paddle.load`` and ``pickle.load`` call whatever importable function a pickle names, so a crafted
``model_state.pdparams`` runs its payload the moment it is loaded, whatever ``SHA256SUMS`` says (the sums sit in
the same folder and catch corruption, not a hostile folder). Every pickle kiebeam reads goes through
:class:`RestrictedUnpickler` instead, the way PyTorch's ``torch.load(weights_only=True)`` works: a pickle may
build only dicts, lists, tuples, strings, bytes, numbers, booleans and ``None`` by itself, plus these globals,
which are exactly what ``paddle.save`` writes (read from real files of Paddle 3.3.1 / numpy 2.x, and older
numpy 1.x and protocol-2 files):

* ``numpy._core.multiarray._reconstruct`` / ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
  ``numpy.dtype``: one array (``ndarray.__reduce__``);
* ``numpy._core.multiarray.scalar`` / ``numpy.core.multiarray.scalar``: a numpy scalar (e.g. a saved ``last_lr``);
* ``collections.OrderedDict``: state dicts of older Paddle and PaddleNLP versions;
* ``builtins.tuple``: ``paddle.save`` of a dict that is not a plain state dict (a tensor next to an array, or
  nested) stores each tensor as ``tuple((name, array))``; :func:`load_state` turns those back into arrays, as
  ``paddle.load`` turns them into tensors;
* ``_codecs.encode``: how protocol 2 stores ``bytes`` (the raw data of an array);
* ``paddle.base.libpaddle.GeneratorState``, only in :func:`load_rng_state`: the RNG state kiebeam's
  ``latest/rng.pkl`` holds (its constructor takes no arguments; its ``__setstate__`` takes only numbers).

Anything else (``os.system``, ``builtins.eval``, a class of any other module, a persistent id) is refused
before it is called, with :class:`UnsafeModelFileError` naming the file and the global. Arrays with an object
dtype are refused too (a state dict holds numbers). Non-pickle Paddle formats (``paddle.static`` tensor files)
are not accepted.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafeModelFileError", "RestrictedUnpickler", "safe_unpickle", "load_state", "load_rng_state"]

_ARRAY_GLOBALS = frozenset({
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("collections", "OrderedDict"), ("builtins", "tuple"),
    ("_codecs", "encode"),
})
_RNG_GLOBALS = frozenset({("paddle.base.libpaddle", "GeneratorState")})
# Keys paddle.save adds to a state dict (paddle.framework.io): the parameter-name table and big-tensor slices.
_NAME_TABLE = "StructuredToParameterName@@"
_BIG_PARAMS = "UnpackBigParamInfor@@"  # typos: disable-line (Paddle's spelling)


class UnsafeModelFileError(ValueError):
    """A model file names a global that a state dict does not need, or is not a readable state pickle."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allowed ``(module, name)`` globals and no persistent ids.

    Args:
        file: a binary file object positioned at the pickle.
        source: the file's path, for messages.
        extra: further ``(module, name)`` pairs to admit (see :func:`load_rng_state`).
    """

    def __init__(self, file: io.BufferedIOBase, source: str, extra: frozenset[tuple[str, str]] = frozenset()) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays, as paddle.load
        self._source = source
        self._allowed = _ARRAY_GLOBALS | extra

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401 - a class or function
        """Returns an allowed global; refuses every other one before importing or calling anything."""
        if (module, name) not in self._allowed:
            raise UnsafeModelFileError(
                f"{self._source}: refusing to load: it names the global {module}.{name}, which a state dict does "
                f"not need (model files may hold only arrays, numbers, strings, lists, tuples and dicts; a pickle "
                f"that names other globals can run code)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:  # noqa: ANN401
        """Refuses persistent ids (paddle.save never writes them)."""
        raise UnsafeModelFileError(f"{self._source}: refusing to load: it uses a persistent id ({str(pid)[:60]!r})")


def _check_values(obj: Any, source: str) -> None:  # noqa: ANN401
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, np.ndarray) and v.dtype.hasobject:
            raise UnsafeModelFileError(f"{source}: refusing to load: it holds an array of Python objects "
                                       f"(dtype {v.dtype}); a state dict holds numbers")


def safe_unpickle(data: bytes, source: str, *, extra: frozenset[tuple[str, str]] = frozenset()) -> Any:  # noqa: ANN401
    """Unpickles ``data`` with :class:`RestrictedUnpickler`.

    Args:
        data: the pickle bytes.
        source: where they came from (named in every error).
        extra: further globals to admit.

    Returns:
        The object (dicts, lists, tuples, numpy arrays and scalars, strings, numbers).

    Raises:
        UnsafeModelFileError: a refused global or persistent id, an object array, or bytes that are not a
            (complete) pickle.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source, extra).load()
    except UnsafeModelFileError:
        raise
    except Exception as e:  # truncated, not a pickle, or an allowed global called with bad arguments
        raise UnsafeModelFileError(f"{source}: not a readable model pickle ({type(e).__name__}: {e})") from e
    _check_values(obj, source)
    return obj


def load_state(path: str | os.PathLike, *, tensors: bool = False) -> dict[str, Any]:
    """Loads a ``paddle.save``-d state dict (``.pdparams`` / ``.pdopt``) as ``paddle.load`` would, safely.

    Big parameters that ``paddle.save`` split into slices are joined again and the parameter-name table is
    dropped, as ``paddle.load`` does.

    Args:
        path: the file.
        tensors: return ``paddle.Tensor`` values instead of numpy arrays (``paddle.load``'s default; optimizer
            states are restored from tensors).

    Returns:
        The state dict.

    Raises:
        UnsafeModelFileError: see :func:`safe_unpickle`; also when the file does not hold a dict.
    """
    source = str(path)
    state = safe_unpickle(Path(path).read_bytes(), source)
    if not isinstance(state, dict):
        raise UnsafeModelFileError(f"{source} holds a {type(state).__name__}, expected a state dict")
    info = state.pop(_BIG_PARAMS, None)
    if isinstance(info, dict):
        for key, value in info.items():
            slices = [state.pop(part) for part in value["slices"]]
            state[key] = np.concatenate(slices).reshape(value["OriginShape"])
    state.pop(_NAME_TABLE, None)
    state = _unwrap_named(state)
    if tensors:
        import paddle

        state = _to_tensors(state, paddle)
    return state


def _unwrap_named(obj: Any) -> Any:  # noqa: ANN401
    """``(name, ndarray)`` tuples (how ``paddle.save`` stores a tensor inside a general object) -> the array."""
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return obj[1]
    if isinstance(obj, dict):
        return {k: _unwrap_named(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_named(v) for v in obj)
    return obj


def _to_tensors(obj: Any, paddle: Any) -> Any:  # noqa: ANN401
    if isinstance(obj, np.ndarray):
        return paddle.to_tensor(obj)
    if isinstance(obj, dict):
        return {k: _to_tensors(v, paddle) for k, v in obj.items()}
    return obj


def load_rng_state(path: str | os.PathLike) -> list[Any]:
    """Loads ``latest/rng.pkl`` (a pickled ``paddle.get_rng_state()``) for ``paddle.set_rng_state``.

    Args:
        path: the file.

    Returns:
        The list of ``GeneratorState`` objects.

    Raises:
        UnsafeModelFileError: see :func:`safe_unpickle`; also when the file does not hold such a list.
    """
    source = str(path)
    states = safe_unpickle(Path(path).read_bytes(), source, extra=_RNG_GLOBALS)
    from paddle.base.libpaddle import GeneratorState

    if not isinstance(states, list) or not all(isinstance(s, GeneratorState) for s in states):
        raise UnsafeModelFileError(f"{source} holds a {type(states).__name__}, expected a list of RNG states")
    return states
