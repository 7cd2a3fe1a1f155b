"""``python -m instrument.cli``: the ``instrument`` command."""

from instrument.cli import console

console()
