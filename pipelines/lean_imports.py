"""Importing a library with some of the optional packages it probes for hidden: for the processes flightcast
owns, where those integrations are never used but would cost a second of every start when installed.

Only for an import made while no other thread imports (at a process's start, or in the fit server's preload):
the hiding finder is on `sys.meta_path` for the length of the import, and an import in another thread then
would not find the hidden packages either. Packages already imported are not hidden (they cost nothing more).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


class _Hidden:
    """A finder that says the given top-level packages (and their modules) are not installed."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def import_hiding(module: str, optional: tuple[str, ...]) -> None:
    """Import `module` (where it is not imported yet) as if the `optional` packages were not installed; it then
    takes them for missing, while anyone importing them afterwards gets them as usual."""
    if module in sys.modules:
        return
    hidden = _Hidden(tuple(name for name in optional if name not in sys.modules))
    sys.meta_path.insert(0, hidden)
    try:
        importlib.import_module(module)
    finally:
        sys.meta_path.remove(hidden)
