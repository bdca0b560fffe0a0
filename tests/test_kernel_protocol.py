"""One shape for every kernel set: the ``KernelSet`` protocol, checked signature by signature.

Each operation of ``xpnet.kernels.protocol.KernelSet`` must have the same parameters (names,
order, kinds, defaults) on ``ReferenceOps``, ``NumbaOps``, ``CupyOps`` and ``BFloat16Ops`` -- the check that
would have caught the CPU and GPU Adam kernels taking different arguments -- and the CUDA
optimizer kernels' parameter lists must follow the same signatures.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

from xpnet import optim
from xpnet.activations import ACTIVATIONS
from xpnet.backend import resolve_backend
from xpnet.kernels import FUSED_OPERATIONS, cuda_source
from xpnet.kernels.protocol import OPTIMIZER_OPERATIONS, KernelSet, operation_names
from xpnet.kernels.reference import ReferenceOps

cpu = pytest.importorskip("xpnet.kernels.cpu")


def _kernel_set_classes():
    from xpnet.kernels.bfloat16 import BFloat16Ops
    from xpnet.kernels.cuda import CupyOps  # imports without CuPy: nothing GPU-side happens at import

    return {"reference": ReferenceOps, "numba": cpu.NumbaOps, "cupy": CupyOps, "bfloat16": BFloat16Ops}


def _params(fn):
    """Parameter names, kinds and defaults (annotations are documentation, not checked)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("kind", ["reference", "numba", "cupy", "bfloat16"])
@pytest.mark.parametrize("op", operation_names())
def test_every_kernel_set_has_the_protocol_signature(kind, op):
    cls = _kernel_set_classes()[kind]
    assert _params(getattr(cls, op)) == _params(getattr(KernelSet, op)), f"{cls.__name__}.{op}"


def test_kernel_set_instances_satisfy_the_protocol():
    backend = resolve_backend("cpu")
    for ops in (ReferenceOps(backend, "float64"), cpu.NumbaOps(backend, "float32")):
        assert isinstance(ops, KernelSet), type(ops).__name__
        assert isinstance(ops.configured(tf32=False), KernelSet)


def test_the_protocol_lists_what_the_library_calls():
    """Every ``ops.<name>(`` / ``.ops.<name>`` the library calls is a protocol operation or attribute."""
    import re
    from pathlib import Path

    import xpnet

    known = set(operation_names()) | set(KernelSet.__annotations__) | {"uses_workspace"}
    root = Path(xpnet.__file__).parent
    for path in root.glob("*.py"):
        for name in re.findall(r"\b(?:ops|half)\.([a-z_][a-z0-9_]*)", path.read_text()):
            assert name in known, f"{path.name} calls ops.{name}, which KernelSet does not list"


def test_fused_operations_are_protocol_operations():
    assert set(FUSED_OPERATIONS) <= set(operation_names())
    assert set(OPTIMIZER_OPERATIONS) <= set(FUSED_OPERATIONS)


@pytest.mark.parametrize("op", OPTIMIZER_OPERATIONS)
def test_cuda_optimizer_kernels_follow_the_signature(op):
    """The CUDA kernel's array and scalar parameters are the operation's, in its order."""
    spec = cuda_source.OPTIMIZER_KERNELS[op]
    params = inspect.signature(getattr(KernelSet, op)).parameters.values()
    arrays = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]
    numbers = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "grad_scale"]
    assert arrays == ["p", "g", *spec.buffers]
    assert numbers == [name for name, _ in spec.scalars]
    kernel = cuda_source.optimizer(op, (True,) * len(spec.buffers))
    assert kernel.in_params == "T g, raw S gscale, " + spec.params()
    assert "," not in " ".join(kernel.scalars) and " " not in "".join(kernel.scalars)


def test_each_optimizer_calls_one_operation():
    """The optimizers call their operation and nothing of the kernel layer knows optimizers."""
    calls = []

    class Recorder(ReferenceOps):
        def __getattribute__(self, name):
            if name in OPTIMIZER_OPERATIONS:
                calls.append(name)
            return super().__getattribute__(name)

    ops = Recorder(resolve_backend("cpu"), "float64")
    expected = {"sgd": "sgd", "adagrad": "adagrad", "rmsprop": "rmsprop", "adam": "adam", "adamw": "adam"}
    for name, cls in optim.OPTIMIZERS.items():
        calls.clear()
        cls().step(np.zeros(5), np.ones(5), ops)
        assert calls == [expected[name]], name
    assert not hasattr(ReferenceOps, "optimizer_update")


def test_old_style_optimizer_subclass_still_runs_with_a_deprecation_warning():
    class Sign(optim.Optimizer):  # written for the old interface: a _reference method
        rule = "sign"

        def __init__(self, lr=0.1):
            super().__init__(lr)

        def _reference(self, xp, p, g, state, s):
            p -= s["lr"] * xp.sign(g)

    p = np.zeros(3)
    with pytest.warns(DeprecationWarning, match="_reference is deprecated"):
        Sign().step(p, np.array([1.0, -2.0, 0.0]), ReferenceOps(resolve_backend("cpu"), "float64"))
    np.testing.assert_array_equal(p, [-0.1, 0.1, 0.0])


# -- the CUDA forms of the activations live with the CUDA code ---------------------------------
def test_every_activation_has_a_cuda_form():
    assert set(cuda_source.ACTIVATION_CUDA) == set(ACTIVATIONS)
    for name, act in ACTIVATIONS.items():
        fwd, bwd = cuda_source.ACTIVATION_CUDA[name]
        assert "return" in fwd and "return" in bwd, name
        assert act.cuda is None, f"{name}: its CUDA bodies belong in cuda_source.ACTIVATION_CUDA"
        assert f"xpnet_{name}_fwd" in cuda_source.cuda_source()


def test_activations_module_keeps_the_moved_name_with_a_warning():
    from xpnet import activations

    with pytest.warns(DeprecationWarning, match="CUDA_PRELUDE moved"):
        assert activations.CUDA_PRELUDE == cuda_source.CUDA_PRELUDE


def test_importing_the_cpu_kernels_leaves_the_activation_registry_alone():
    code = ("import xpnet.activations as a\n"
            "before = dict(vars(a)); funcs = {k: (v.__code__, dict(vars(v))) for k, v in before.items()"
            " if callable(v) and hasattr(v, '__code__')}\n"
            "import numpy as np, xpnet.kernels.cpu as cpu\n"
            "from xpnet.backend import resolve_backend\n"
            "ops = cpu.NumbaOps(resolve_backend('cpu'), 'float64')\n"
            "ops.bias_act(np.zeros((2, 3)), np.zeros(3), a.get_activation('silu'), out=np.zeros((2, 3)))\n"
            "after = dict(vars(a))\n"
            "assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)\n"
            "assert all((v.__code__, dict(vars(v))) == funcs[k] for k, v in after.items() if k in funcs)\n"
            "assert not hasattr(cpu, 'PARALLEL'); print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# -- configuration is per kernel set, read when it is built ----------------------------------------
def test_numba_parallel_is_a_constructor_option(monkeypatch):
    backend = resolve_backend("cpu")
    monkeypatch.setenv("XPNET_CPU_PARALLEL", "1")
    ops = cpu.NumbaOps(backend, "float32")
    assert ops.parallel and ops.configured(tf32=False).parallel
    monkeypatch.setenv("XPNET_CPU_PARALLEL", "0")
    assert not cpu.NumbaOps(backend, "float32").parallel
    assert ops.parallel  # an existing kernel set keeps its setting
    assert cpu.NumbaOps(backend, "float32", parallel=True, parallel_min=0)._par(1)
    assert not cpu.NumbaOps(backend, "float32", parallel=True)._par(10)


# -- out= is honoured by every kernel set ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["reference", "numba"])
def test_every_kernel_set_writes_into_out(kind):
    backend = resolve_backend("cpu")
    ops = ReferenceOps(backend, "float64") if kind == "reference" else cpu.NumbaOps(backend, "float64")
    r = np.random.default_rng(0)
    a, w, b = r.normal(size=(4, 3)), r.normal(size=(3, 5)), r.normal(size=5)
    out = np.empty((4, 5))
    assert ops.matmul(a, w, out=out) is out
    np.testing.assert_allclose(out, a @ w)
    act_out = np.empty((4, 5))
    z, act = ops.bias_act(out, b, ACTIVATIONS["tanh"], out=act_out)
    assert act is act_out
    np.testing.assert_allclose(act_out, np.tanh(a @ w + b))
    db = np.empty(5)
    dz, db_ret = ops.act_grad(np.ones((4, 5)), z, act_out, ACTIVATIONS["tanh"], db_out=db)
    assert db_ret is db
    np.testing.assert_allclose(db, (1 - act_out**2).sum(axis=0))
    bg = np.empty(5)
    assert ops.bias_grad(dz, out=bg) is bg
    np.testing.assert_allclose(bg, np.asarray(dz).sum(axis=0))
