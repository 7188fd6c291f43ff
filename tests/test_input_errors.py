"""Only the runtime's input checks (runtime.InputError) become located NcdErrors in forward: an
exception from anything else is a bug and must surface as itself, not as a user error."""
from __future__ import annotations

import pytest
import torch

import ncd
from ncd.backends.pytorch import implementations, runtime
from ncd.backends.pytorch.emit import runtime_names
from ncd.errors import NcdError

NORM = """axis D = 4
block B(x: [D]) -> [D] {
    return layernorm(x, over = [D])
}
"""


def test_input_error_is_located() -> None:
    m = ncd.load(NORM)
    with pytest.raises(NcdError, match=r"axis D has size 5"):
        m(torch.randn(2, 5))


def test_a_bug_surfaces_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug in a lowering")

    monkeypatch.setattr(torch.nn.functional, "layer_norm", broken)
    m = ncd.load(NORM)
    with pytest.raises(ValueError, match="a bug in a lowering") as info:
        m(torch.randn(2, 4))
    assert not isinstance(info.value, NcdError)


def test_window_error_is_an_input_error() -> None:
    x = torch.zeros(1, 1, 3)
    with pytest.raises(runtime.InputError, match="too small for a window of 5"):
        runtime.check_window(x, 1, 5, 1, 0, 1)


def test_emitted_file_carries_the_marker() -> None:
    """The emitted module raises the same class (copied with the runtime's helpers)."""
    assert "InputError" in runtime_names()


def test_wide_heads_run_the_pytorch_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    """gla / delta heads wider than the Triton kernels take (256) run the chunked PyTorch twin where
    Triton would otherwise run, and the implementation says why."""
    monkeypatch.setattr(implementations, "auto_backend", lambda device: "triton")
    cpu = torch.device("cpu")
    for backend in ("gla", "delta"):
        assert implementations.kernel_backend(backend, cpu, torch.float32, 256) == "triton"
        assert implementations.kernel_backend(backend, cpu, torch.float32, 512) == "torch"
        said = implementations.implementation(backend, cpu, torch.float32, 512)
        assert "PyTorch" in said and "512 > 256" in said


def test_wide_heads_run() -> None:
    """A gla layer with K = 320 (beyond the Triton kernels) loads and runs forward and backward."""
    m = ncd.load("specs/gla.ncd", sizes={"T": 4, "D": 8, "H": 1, "K": 320, "V": 4, "R": 2})
    x = torch.randn(2, 4, 8, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
