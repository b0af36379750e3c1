"""``python -m scoresde``: the command line, as the ``scoresde`` script."""

from .cli import main

main()
