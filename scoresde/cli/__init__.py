"""The ``scoresde`` command line (typer).

One sub-module per command family registers its commands on :data:`app`; choices are read
from the registries, never hand-kept. User errors print one line and exit non-zero via
:func:`fail`; tracebacks are for bugs only.
"""

from __future__ import annotations

from . import info as _info  # noqa: F401  (each import registers its commands)
from .app import app, fail

__all__ = ["app", "fail", "main"]


def main() -> None:  # console-script entry point
    app()
