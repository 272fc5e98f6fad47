"""Read pickles of NumPy arrays in builtin containers without running code from the file.

A pickle names the callables that rebuild its objects, and `pickle.load` calls whatever it names
(`os.system` as easily as `numpy.ndarray`). `load_array_pickle` allows only the callables NumPy's own
pickling uses for arrays, dtypes and scalars (NumPy 1.x names them under `numpy.core`, 2.x under
`numpy._core`), plus `_codecs.encode`, which protocols 0-2 use to store bytes. Dicts, lists, tuples,
strings and numbers need no callable at all. Anything else is refused before it is called, and arrays of
Python objects are refused after loading, so what comes back is plain data.
"""
from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than NumPy arrays in builtin containers."""


def _numpy_internal(module: str, name: str):
    """A NumPy-internal callable under its 2.x module, whichever of numpy.core / numpy._core the file names."""
    try:
        return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), name)
    except ModuleNotFoundError:          # NumPy 1.x has no numpy._core
        return getattr(importlib.import_module(module.replace("numpy._core", "numpy.core", 1)), name)


# Where NumPy's array pickling points (module inside numpy.core / numpy._core, name), and the rest by name.
_NUMPY_INTERNALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_PUBLIC = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}


def _allowed(module: str, name: str):
    """The callable a pickle may name, or None when it may not."""
    if (module, name) in _PUBLIC:
        return _PUBLIC[(module, name)]
    package, _, inner = module.rpartition(".")
    if package in ("numpy.core", "numpy._core") and (inner, name) in _NUMPY_INTERNALS:
        return _numpy_internal(module, name)
    return None


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, stream, description: str):
        super().__init__(stream)
        self.description = description

    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        if found is None:
            raise UnsafePickleError(
                f"{self.description} asks the unpickler for {module}.{name}; only NumPy arrays, dtypes and builtin "
                f"containers are read (a pickle can run any code it names, so nothing else is loaded)")
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.description} holds a persistent reference ({pid!r}); only plain data is read")


def _refuse_object_arrays(value, description: str) -> None:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise UnsafePickleError(f"{description} holds an array of Python objects ({value.dtype}); only numeric "
                                f"arrays are read")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_object_arrays(item, description)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_object_arrays(item, description)


def load_array_pickle(source: str | Path | bytes):
    """Unpickle a file (or bytes) that holds only NumPy arrays, numbers and strings in dicts, lists and tuples."""
    if isinstance(source, bytes):
        description, data = "pickle data", source
    else:
        description, data = f"pickle {source}", Path(source).read_bytes()
    value = _ArrayUnpickler(io.BytesIO(data), description).load()
    _refuse_object_arrays(value, description)
    return value
