"""``python -m instrument``: the ``instrument`` command (:mod:`instrument.cli`), for where the
console script is not on ``PATH``. ``python -m instrument replay <journal>`` works as before."""

from __future__ import annotations

import sys

from instrument.cli import main

if __name__ == "__main__":
    sys.exit(main())
