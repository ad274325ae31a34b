"""The worked examples in the pure modules' docstrings are tests too."""
import doctest
import importlib

import pytest

MODULES = ["fsad_core.windows", "fsad_core.memory", "fsad_core.prompts", "fsad_core.selection", "fsad_core.images", "fsad_core.masks",
           "fsad_core.metrics", "fsad_core.tuning", "fsad_core.augment", "fsad_core.overlay", "fsad_core.models.precision",
           "fsad_core.models.registry", "fsad_core.names", "fsad_core.inspect_batch", "fsad_core.calibration",
           "storage.decisions"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0
