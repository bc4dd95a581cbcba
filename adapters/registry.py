"""Implementations by name, imported lazily: looking one up never imports a framework until it is run.

Built-in names are those of ``../shared/DESIGN.md``. Third parties add theirs through the entry-point group
``lstm_conformance.implementations`` (``name = "package.module:Object"``, where Object is an
``Implementation`` subclass or instance) or, for one run, ``--lstm-implementation MODULE:OBJECT`` (``load_object``).

Constructor options (``forget_bias`` of the TF cells, say) pass through ``get_implementation(name, **options)``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from lstm_conformance.adapters.base import Implementation
from lstm_conformance.names import IMPLEMENTATIONS
from lstm_conformance.reference.errors import LSTMConformanceError

ENTRY_POINT_GROUP = "lstm_conformance.implementations"

#: name -> "module:object" (``lstm_conformance.names``); the module is imported only when asked for.
BUILTIN: dict[str, str] = IMPLEMENTATIONS


def available_names() -> dict[str, str]:
    """Every registered name -> "module:object": built-ins, then entry points (which may not shadow one)."""
    names = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in BUILTIN:
            raise LSTMConformanceError(
                f"entry point {entry.value!r} registers {entry.name!r}, a built-in implementation name; rename it"
            )
        names[entry.name] = entry.value
    return names


def load_object(spec: str, **options: object) -> Implementation:
    """Import ``"module:object"`` and return an Implementation (instantiating a class with ``options``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise LSTMConformanceError(f"implementation {spec!r} is not of the form MODULE:OBJECT")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise LSTMConformanceError(f"cannot import {module_name!r} for implementation {spec!r}: {error}") from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise LSTMConformanceError(f"module {module_name!r} has no {attribute!r} (implementation {spec!r})") from None
    if options and not isinstance(found, type):
        raise LSTMConformanceError(f"{spec!r} is an instance; options {sorted(options)} need a class")
    instance = found(**options) if isinstance(found, type) else found
    for needed in ("name", "capabilities", "run", "unavailable_reason"):
        if not hasattr(instance, needed):
            raise LSTMConformanceError(f"{spec!r} is not an Implementation: it has no {needed!r}")
    return instance


def get_implementation(name: str, **options: object) -> Implementation:
    """The implementation registered under ``name``; an unknown name raises, listing the known ones."""
    names = available_names()
    if name not in names:
        raise LSTMConformanceError(f"unknown implementation {name!r}; known: {', '.join(names)}")
    return load_object(names[name], **options)
