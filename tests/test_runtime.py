"""The one runtime-options type (profile, device, precision, cache dir) and who shares it."""
from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path

import pytest

import fsad_core.runtime as runtime
from fsad_core import EngineConfig
from fsad_core.personalize import PersonalizeConfig
from fsad_core.runtime import RuntimeOptions


def test_docstring_examples():
    res = doctest.testmod(runtime, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_values_are_normalised_and_bad_ones_name_what_is_allowed(tmp_path):
    o = RuntimeOptions(profile="TINY", device=" cuda:0 ", precision="FP32", cache_dir=tmp_path)
    assert (o.profile, o.device, o.precision, o.cache_dir) == ("tiny", "cuda:0", "fp32", str(tmp_path))
    assert RuntimeOptions(cache_dir="~/weights").cache_dir == str(Path.home() / "weights")
    for kw, allowed in [({"profile": "huge"}, "'standard'.*'tiny'"), ({"device": "cuda:x"}, "'cuda:<index>'"),
                        ({"device": "tpu"}, "'auto', 'cpu', 'cuda'"), ({"precision": "int8"}, "auto, fp32, bf16, fp16"),
                        ({"cache_dir": 3}, "folder path or None"), ({"cache_dir": " "}, "empty")]:
        with pytest.raises(ValueError, match=allowed):
            RuntimeOptions(**kw)


@pytest.mark.parametrize("cls", [EngineConfig, PersonalizeConfig])
def test_the_configs_share_it_with_the_same_keywords_and_attributes(cls, tmp_path):
    c = cls(profile="tiny", device="cpu", precision="bf16", cache_dir=tmp_path)
    assert isinstance(c, RuntimeOptions)
    assert (c.profile, c.device, c.precision, c.cache_dir) == ("tiny", "cpu", "bf16", str(tmp_path))
    assert c.runtime == RuntimeOptions("tiny", "cpu", "bf16", str(tmp_path)) and type(c.runtime) is RuntimeOptions
    # replace() re-validates through the shared code, with the same message for every config
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        dataclasses.replace(c, precision="fp64")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"):
        cls(profile="tiny", device="gpu")


def test_personalize_precision_still_comes_from_the_preset():
    assert PersonalizeConfig(profile="tiny").precision == "auto"
    assert PersonalizeConfig(profile="tiny", precision="fp32").precision == "fp32"


def test_the_mask_assistant_holds_the_same_options(tmp_path):
    from fsad_core.models.sam import MaskAssistant

    a = MaskAssistant(profile="Tiny", device="cpu", precision="FP32", cache_dir=tmp_path)
    assert a.options == RuntimeOptions("tiny", "cpu", "fp32", str(tmp_path))
    assert (a.profile, a.precision, a.cache_dir, a.device.type) == ("tiny", "fp32", str(tmp_path), "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        MaskAssistant(profile="tiny", precision="half")
    with pytest.raises(ValueError, match="profile must be 'standard'"):
        MaskAssistant(profile="demo")
    b = MaskAssistant.for_config(EngineConfig(profile="tiny", device="cpu", cache_dir=tmp_path))
    assert b.options == RuntimeOptions("tiny", "cpu", "auto", str(tmp_path))
