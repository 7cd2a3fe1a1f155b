"""pytest plugin (registered through the ``pytest11`` entry point): the ``instrument_recorder`` fixture.

Installing instrument is enough to get the fixture. Importing this module imports only pytest:
instrument itself is imported when a test asks for the fixture, and wandb never.

Strict by default: an instrumentation problem that production only warns about fails the test.
Turn that off for one test with ``@pytest.mark.instrument_lenient``, for a run with
``--instrument-lenient``, or for a project with ``instrument_strict = false`` in the pytest ini
options.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from instrument.testing import Recording


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--instrument-lenient`` and the ``instrument_strict`` ini option."""
    group = parser.getgroup("instrument", "instrument (W&B instrumentation)")
    group.addoption(
        "--instrument-lenient",
        action="store_true",
        default=False,
        help="instrument_recorder: let instrumentation problems warn instead of failing the test",
    )
    parser.addini(
        "instrument_strict",
        type="bool",
        default=True,
        help="instrument_recorder: fail a test on an instrumentation problem (default true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``instrument_lenient`` marker."""
    config.addinivalue_line(
        "markers",
        "instrument_lenient: instrument_recorder lets instrumentation problems warn (InstrumentationWarning) "
        "instead of failing this test",
    )


@pytest.fixture
def instrument_recorder(request: pytest.FixtureRequest) -> Iterator[Recording]:
    """Record everything decorated code writes during the test, in memory: no wandb, no network.

    Yields an ``instrument.testing.Recording``: ``.run()`` is the only run, ``.runs`` all of them
    in creation order. Each test gets a fresh standalone run, finished at teardown.

    Strict: an unroutable value, a key collision, a backward step or a call wandb would reject
    fails the test with an ``InstrumentationError`` naming the function and the key. The
    ``instrument_lenient`` marker, ``--instrument-lenient`` or ``instrument_strict = false`` turn
    that into warnings.
    """
    from instrument.testing import recording  # instrument loads only for a test that asks for the fixture

    lenient = (
        request.node.get_closest_marker("instrument_lenient") is not None
        or request.config.getoption("--instrument-lenient")
        or not request.config.getini("instrument_strict")
    )
    with recording(strict=not lenient) as recorded:
        yield recorded
