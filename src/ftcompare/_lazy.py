"""A package's public API, imported when first used (PEP 562): naming a package's API costs
nothing until a name is used, so the torch-free stages stay torch-free and a job imports
only the modules it calls."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_api(
    package: str, api: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose public names live in the
    modules `api` maps them to (name -> module, relative to the package)."""

    def __getattr__(name: str) -> object:
        module = api.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # once imported, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(api)

    return __getattr__, __dir__, sorted(api)
