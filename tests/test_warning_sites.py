"""Where instrument's warnings point when no frame of the user's code is on the stack."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
from pytest_mock import MockerFixture

from instrument import InstrumentationWarning, _problems


def test_a_site_in_a_module_without_source_still_warns_there(mocker: MockerFixture) -> None:
    """A decorated function defined in ``python -c`` (its ``__main__`` has BuiltinImporter as loader,
    which raises ImportError for its source) still gets its warning, pointing at its line."""
    module = types.ModuleType("instrument_test_no_source")
    module.__loader__ = importlib.machinery.BuiltinImporter  # type: ignore[assignment]
    mocker.patch.dict(sys.modules, {module.__name__: module})
    mocker.patch.object(_problems, "_user_level", return_value=None)
    mocker.patch.object(_problems, "_fallback_site", return_value=("<string>", 3, module.__name__))
    with pytest.warns(InstrumentationWarning, match="instrument: f: dropped") as caught:
        _problems.warn("instrument: f: dropped")
    assert [("<string>", 3)] == [(w.filename, w.lineno) for w in caught]
