"""precision="auto" means the same thing for every model: bf16 autocast where the hardware has it."""
import pytest
import torch

from fsad_core.models import precision as P
from fsad_core.models.sam import MaskAssistant
from fsad_core.personalize import PersonalizeConfig, Personalizer


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16_on_cpu(monkeypatch, native):
    monkeypatch.setattr(P, "cpu_supports_bf16", lambda: native)
    cpu = torch.device("cpu")
    want = torch.bfloat16 if native else None
    assert P.resolve_precision("auto", cpu) is want
    assert P.resolve_precision("auto", cpu, cuda_auto=torch.float16) is want
    # the three model families resolve through the same rule
    assert MaskAssistant(profile="tiny", device="cpu").autocast_dtype is want
    assert Personalizer(PersonalizeConfig(profile="tiny", device="cpu")).autocast_dtype is want


def test_explicit_choices_and_errors():
    cpu = torch.device("cpu")
    assert P.resolve_precision("fp32", cpu) is None
    assert P.resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast is for GPUs"):
        P.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be"):
        P.resolve_precision("int8", cpu)
    assert P.precision_name(None) == "fp32" and P.precision_name(torch.bfloat16) == "bf16"
    assert isinstance(P.cpu_supports_bf16(), bool)


def test_cuda_asked_for_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        P.resolve_device("cuda")


@pytest.mark.parametrize("value, want", [("0", False), ("1", True)])
def test_env_overrides_the_detection(monkeypatch, value, want):
    monkeypatch.setenv("FSAD_CPU_BF16", value)
    P.cpu_supports_bf16.cache_clear()
    try:
        assert P.cpu_supports_bf16() is want
        assert (P.resolve_precision("auto", torch.device("cpu")) is torch.bfloat16) is want
    finally:
        monkeypatch.delenv("FSAD_CPU_BF16")
        P.cpu_supports_bf16.cache_clear()
