"""The ``scoresde`` command line (typer).

Each sub-module of this package (other than ``app``) holds one family of commands and
registers them on :data:`app` when imported; they are discovered here, so adding a command
module needs no edit elsewhere. Choices are read from the registries, never hand-kept. User
errors print one line and exit non-zero via :func:`fail`; tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib
import pkgutil

from .app import app, fail

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["app", "fail", "main"]


def main() -> None:  # console-script entry point
    app()
