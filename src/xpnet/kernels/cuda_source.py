"""The CUDA source of the GPU kernel set, assembled without importing CuPy.

One place for all GPU code: ``xpnet_kernels.cu`` (optimizer rules, row-wise loss kernels),
the activation device functions generated from the activation registry, and the bodies of the
elementwise and reduction kernels.  ``cuda.py`` hands these to CuPy; in CI, without a GPU,
``tests/test_cuda_source.py`` compiles every kernel with NVRTC from the source CuPy generates
for it, and ``tests/test_emulated_gpu.py`` runs them on the CPU (``kernels/emulator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..activations import ACTIVATIONS, CUDA_PRELUDE

SOURCE_FILE = Path(__file__).with_name("xpnet_kernels.cu")
COMPUTE = "typedef typename xpnet_compute<T>::type C;\n"  # C: float for half and float, double for double
LOSS_KERNELS = ("ce_labels", "ce_dense", "mse", "bce")


def cuda_source() -> str:
    """Helpers, generated activation device functions, then ``xpnet_kernels.cu``."""
    parts = [CUDA_PRELUDE]
    for act in ACTIVATIONS.values():
        fwd, bwd = act.cuda
        parts.append(f"template <typename C> __device__ __forceinline__ C xpnet_{act.name}_fwd(C z) {{\n    {fwd}\n}}\n"
                     f"template <typename C> __device__ __forceinline__ C xpnet_{act.name}_bwd(C z, C a) {{\n"
                     f"    (void)z; (void)a;\n    {bwd}\n}}\n")
    parts.append(SOURCE_FILE.read_text())
    return "\n".join(parts)


@dataclass(frozen=True)
class Elementwise:
    """An elementwise kernel in CuPy's ``ElementwiseKernel`` terms."""

    name: str
    in_params: str
    out_params: str
    body: str
    scalars: tuple[str, ...] = ()  # input parameters passed as scalars (the rest are arrays)


def bias_act(act: str) -> Elementwise:
    return Elementwise(f"xpnet_bias_act_{act}", "T b", "T z, T a",
                       COMPUTE + f"C v = (C)z + (C)b; z = (T)v; a = (T)xpnet_{act}_fwd<C>(v);")


def act_grad(act: str) -> Elementwise:
    return Elementwise(f"xpnet_act_grad_{act}", "T z, T a", "T g",
                       COMPUTE + f"g = (T)((C)g * xpnet_{act}_bwd<C>((C)z, (C)a));")


BIAS_ADD = Elementwise("xpnet_bias_add", "T b", "T z", COMPUTE + "z = (T)((C)z + (C)b);")  # the linear output layer

# Mixed precision: the float32 loss gradient times the loss scale into float16, and back.
SCALE_CAST = Elementwise("xpnet_scale_cast", "S g, S scale", "T out", "out = (T)(g * scale);", ("scale",))
UNSCALE = Elementwise("xpnet_unscale", "T g16, S inv_scale", "S g", "g = (S)((S)g16 * inv_scale);", ("inv_scale",))

SCALE = Elementwise("xpnet_scale", "raw S sumsq, S max_norm", "T g",
                    COMPUTE + "g = (T)((C)g * xpnet_grad_scale<C>((C)max_norm, (C)sumsq[0]));", ("max_norm",))

# Optimizer rules: state buffer names, scalar parameter names, and the call of the device function.
# State is stored in S (float32 for float16 parameters); g arrives scaled for gradient clipping.
RULES = {
    "sgd": (("momentum_buffer",), "lr momentum dampening weight_decay nesterov first",
            "xpnet_sgd<C>(pp, gg, s0, (C)lr, (C)momentum, (C)dampening, (C)weight_decay, (int)nesterov, (int)first);"),
    "adagrad": (("sum",), "clr weight_decay eps", "xpnet_adagrad<C>(pp, gg, s0, (C)clr, (C)weight_decay, (C)eps);"),
    "rmsprop": (("square_avg", "grad_avg", "momentum_buffer"), "lr alpha eps weight_decay momentum centered",
                "xpnet_rmsprop<C>(pp, gg, s0, s1, s2, (C)lr, (C)alpha, (C)eps, (C)weight_decay, (C)momentum, "
                "(int)centered);"),
    "adam": (("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), "step_size beta1 beta2 eps l2 decay_factor bc2 amsgrad",
             "xpnet_adam<C>(pp, gg, s0, s1, s2, (C)step_size, (C)beta1, (C)beta2, (C)eps, (C)l2, (C)decay_factor, "
             "(C)bc2, (int)amsgrad);"),
}


@dataclass(frozen=True)
class Reduction:
    """A full reduction in CuPy's ``ReductionKernel`` terms: ``sum(map_expr)`` into ``y``."""

    name: str
    in_params: str
    out_params: str
    map_expr: str


# Counts of invalid values: the device-side input checks, and the fp16 found-inf flag.
COUNT_NONFINITE = Reduction("xpnet_count_nonfinite", "T x", "int64 y", "isfinite(x) ? 0 : 1")
COUNT_NOT_PROBABILITY = Reduction("xpnet_count_not_probability", "T x", "int64 y",
                                  "(x >= T(0) && x <= T(1)) ? 0 : 1")  # NaN fails both comparisons
SUM_OF_SQUARES = Reduction("xpnet_sum_of_squares", "T x", "S y", "(S)x * (S)x")


def count_bad_labels(n_classes: int) -> Reduction:
    """Labels outside ``[0, n_classes)`` (the bound is part of the source: one kernel per class count)."""
    return Reduction(f"xpnet_count_bad_labels_{int(n_classes)}", "T x", "int64 y",
                     f"(x < 0 || x >= {int(n_classes)}) ? 1 : 0")


def optimizer(rule: str, present: tuple[bool, ...]) -> Elementwise:
    """One elementwise kernel for an optimizer rule; state buffers not in use become locals."""
    _, scalars, call = RULES[rule]
    outs = ["T p"] + [f"S st{i}" for i, have in enumerate(present) if have]
    load = "".join(f"C s{i} = {f'(C)st{i}' if have else 'C(0)'}; " for i, have in enumerate(present))
    store = "".join(f"st{i} = (S)s{i}; " for i, have in enumerate(present) if have)
    body = (COMPUTE + "C pp = (C)p; C gg = (C)g * xpnet_grad_scale<C>((C)max_norm, (C)sumsq[0]); "
            + load + call + " p = (T)pp; " + store)
    ins = "T g, raw S sumsq, S max_norm, " + ", ".join(f"S {name}" for name in scalars.split())
    return Elementwise(f"xpnet_{rule}_" + "".join("1" if h else "0" for h in present), ins, ", ".join(outs), body,
                       ("max_norm", *scalars.split()))


def all_elementwise() -> list[Elementwise]:
    """Every elementwise kernel the GPU kernel set can build (for the compile check)."""
    kernels = [SCALE, BIAS_ADD, SCALE_CAST, UNSCALE]
    for name in ACTIVATIONS:
        kernels += [bias_act(name), act_grad(name)]
    for rule, (states, _, _) in RULES.items():
        n = len(states)
        for mask in range(1 << n):
            kernels.append(optimizer(rule, tuple(bool(mask >> i & 1) for i in range(n))))
    return kernels
