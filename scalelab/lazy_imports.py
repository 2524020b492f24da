"""Modules loaded on first use, so a quick query does not pay for pandas and scipy.

``scalelab predict`` on a stored fit needs only numpy, yet importing pandas (with pyarrow) and
scipy.optimize costs about a second of CPU on a small machine. Modules on that path bind
``pd = lazy_module("pandas")``: the name is a real module object whose loading waits until an
attribute is first read. This is the recipe from the standard library's ``importlib`` docs
("Implementing lazy imports").
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, executed on first attribute access (at once if already imported)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as ``import a.b`` would: ``a.b`` is reachable from ``a``
        setattr(sys.modules[parent], child, module)
    return module
