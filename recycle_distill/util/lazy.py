"""Public names imported on first access (PEP 562), for packages whose import must stay cheap.

Standard library only: ``recycle_distill`` itself uses it, and torch-free subpackages such as
``recycle_distill.s3prl.patch`` must import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping


def lazy_attributes(package: str, table: Mapping[str, str],
                    namespace: MutableMapping[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        table: public name -> relative module that defines it (``".builder"``).
        namespace: the package's ``globals()``; a resolved name is cached there.
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            # AttributeError (not ImportError) lets `from <package> import <submodule>`
            # fall through to importing the submodule.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        """The module's names, the not yet imported lazy ones included."""
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
