"""pytest plugin (registered through the ``pytest11`` entry point): the ``instrument_recorder`` fixture.

Importing it imports neither wandb nor anything heavy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrument.testing import Recording, recording


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--instrument-lenient``: problems warn instead of failing tests (strict by default)."""
    parser.addoption(
        "--instrument-lenient",
        action="store_true",
        default=False,
        help="instrument: let instrumentation problems warn instead of failing the test",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``instrument_lenient`` marker."""
    config.addinivalue_line(
        "markers", "instrument_lenient: instrumentation problems warn instead of failing this test"
    )


@pytest.fixture
def instrument_recorder(request: pytest.FixtureRequest) -> Iterator[Recording]:
    """Record everything decorated code writes during the test, in memory (no wandb, no network).

    Strict: an unroutable value or a key collision fails the test with a message naming the
    function and the key; the ``instrument_lenient`` marker or ``--instrument-lenient`` turn
    that off.
    """
    lenient = request.node.get_closest_marker("instrument_lenient") is not None or request.config.getoption(
        "--instrument-lenient"
    )
    with recording(strict=not lenient) as recorded:
        yield recorded
