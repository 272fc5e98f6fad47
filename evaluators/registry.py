"""The evaluator contract: one package per benchmark, one registry line, one task spec, one result JSON.

A benchmark is a package `evaluators/<name>/` listed in `EVALUATOR_PACKAGES`, holding
- `task.yaml`: its versioned fixed facts (name, version, prompt count, samples per prompt, layout, ...), read by
  the evaluator, the generator and the workflow alike (`load_task`), so no copy of them lives elsewhere;
- a call registered under its name (`register_evaluator`) that takes the input paths and options and returns
  one result record (`pixeldit.infra.results.make_result`: values plus the protocol card).

`evaluate(name, inputs, out, **options)` is how the command line (`pixeldit-bench eval <name> INPUTS --out FILE`)
and so every workflow eval rule reach an evaluator. Registries fail loudly, torch-fidelity style: a name is
registered once, an unknown name lists the known ones.
"""
from __future__ import annotations

import importlib
import os
from functools import cache
from pathlib import Path
from typing import Any, Callable

import yaml

from pixeldit.infra.devices import current_world
from pixeldit.infra.files import check_writable, write_json_atomic
from pixeldit.infra.results import SCHEMA

# One line per benchmark package under evaluators/ (import order: cheap ones first).
EVALUATOR_PACKAGES = ("imagenet", "digits", "dpg", "geneval")

EVALUATORS: dict[str, Callable] = {}
_TASK_KEYS = {"name", "version", "description", "inputs"}


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


def _known() -> str:
    return ", ".join(EVALUATOR_PACKAGES)


@cache
def load_task(name: str) -> dict[str, Any]:
    """The task spec `evaluators/<name>/task.yaml`, checked to name itself and to carry a version."""
    if name not in EVALUATOR_PACKAGES:
        raise KeyError(f"unknown evaluator {name!r}; known: {_known()} (a new one is listed in "
                       f"evaluators/registry.py:EVALUATOR_PACKAGES)")
    path = Path(__file__).parent / name / "task.yaml"
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the task spec {path}: {error}") from None
    missing = sorted(_TASK_KEYS - set(spec or {}))
    if missing:
        raise ValueError(f"task spec {path} lacks {missing}; every spec names its evaluator, version, description "
                         f"and inputs")
    if spec["name"] != name or not isinstance(spec["version"], str):
        raise ValueError(f"task spec {path} must have name: {name} and a quoted string version, got "
                         f"name={spec['name']!r}, version={spec['version']!r}")
    return spec


def get_evaluator(name: str) -> Callable:
    """Import the benchmark's package (so heavy dependencies load only when it is used) and return its call."""
    load_task(name)
    if name not in EVALUATORS:
        importlib.import_module(f"evaluators.{name}")
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"evaluators.{name} registers no evaluator named {name!r}; call "
                       f"register_evaluator({name!r}, ...) in its package") from None


def evaluate(name: str, inputs: list[str | os.PathLike], out: str | os.PathLike, **options) -> dict[str, Any]:
    """Run evaluator `name` on `inputs` and write its one result JSON to `out`, after checking the record is a
    result of this evaluator at its task spec's version."""
    check_writable(out)                  # before the work, not after it
    record = get_evaluator(name)(*inputs, **options)
    spec = load_task(name)
    version = spec["version"]
    if record.get("schema") != SCHEMA or record.get("evaluator", {}).get("name") != spec.get("result_name", name):
        raise ValueError(f"evaluator {name!r} returned something that is not its result record (schema {SCHEMA})")
    if record["evaluator"].get("version") != version:
        raise ValueError(f"evaluator {name!r} reports version {record['evaluator'].get('version')!r} but its task "
                         f"spec says {version!r}; bump both together")
    if current_world()[0] == 0:          # under torchrun every rank holds the record; one writes it
        write_json_atomic(out, record)
    return record
