"""GPU code checked without a GPU: the CUDA sources compile with nvcc (compile-only).

Skipped with a reason when ``nvcc`` is not on the machine.  The CuPy-backed tests (kernels
against the reference, training parity) run wherever a GPU is present (see test_kernels.py).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from xpnet import optim
from xpnet.activations import ACTIVATIONS
from xpnet.kernels import cuda_source as src

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")


def _compile(code: str, tmp_path) -> subprocess.CompletedProcess:
    cu = tmp_path / "xpnet_check.cu"
    cu.write_text(code)
    return subprocess.run([NVCC, "-arch=sm_90", "-std=c++14", "-c", str(cu), "-o", str(tmp_path / "check.o")],
                          capture_output=True, text=True, timeout=300)


@needs_nvcc
def test_all_gpu_kernels_compile_with_nvcc(tmp_path):
    result = _compile(src.nvcc_check_source(), tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "warning" not in result.stderr.lower(), result.stderr[-4000:]


@needs_nvcc
def test_the_compile_check_can_fail(tmp_path):
    broken = src.nvcc_check_source().replace("return xpnet_sigmoid<C>(z);", "return xpnet_sigmoid<C>(z)", 1)
    assert _compile(broken, tmp_path).returncode != 0


def test_every_activation_and_optimizer_has_gpu_code():
    code = src.nvcc_check_source()
    for name in ACTIVATIONS:
        assert f"check_xpnet_bias_act_{name}<float, float>" in code
        assert f"check_xpnet_act_grad_{name}<double, double>" in code
    rules = {cls.rule for cls in optim.OPTIMIZERS.values()}
    assert rules - {"adamw"} == set(src.RULES)  # AdamW runs the Adam kernel with decoupled decay
    for loss in src.LOSS_KERNELS:
        assert f"xpnet_{loss}<float, float>" in code
