"""Registry of evaluators, torch-fidelity style: names are unique and lookups fail loudly."""
from __future__ import annotations

from typing import Callable

EVALUATORS: dict[str, Callable] = {}


def register_evaluator(name: str, fn: Callable | None = None):
    """Register `fn` (or decorate it) under `name`; a second registration of a name is an error."""
    def add(target: Callable) -> Callable:
        if name in EVALUATORS:
            raise ValueError(f"evaluator {name!r} is already registered")
        if not callable(target):
            raise TypeError(f"evaluator {name!r} must be callable, got {type(target).__name__}")
        EVALUATORS[name] = target
        return target
    return add(fn) if fn is not None else add


def get_evaluator(name: str) -> Callable:
    """Look an evaluator up by name, listing the known ones when it is missing."""
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {', '.join(sorted(EVALUATORS)) or 'none'}") from None
