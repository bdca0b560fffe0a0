"""The CUDA source of the GPU kernel set, assembled without importing CuPy.

One place for all GPU code: ``xpnet_kernels.cu`` (optimizer rules, row-wise loss kernels),
the activation device functions (``ACTIVATION_CUDA``: one pair of bodies per activation of the
registry in ``xpnet.activations``), and the bodies of the elementwise and reduction kernels.
``cuda.py`` hands these to CuPy; in CI, without a GPU,
``tests/test_cuda_source.py`` compiles every kernel with NVRTC from the source CuPy generates
for it, and ``tests/test_emulated_gpu.py`` runs them on the CPU (``kernels/emulator``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..activations import ACTIVATIONS, GELU_C, GELU_CLAMP, GELU_K, LEAKY_SLOPE, SOFTPLUS_THRESHOLD
from ..dropout import MASK32, MUL1, MUL2

SOURCE_FILE = Path(__file__).with_name("xpnet_kernels.cu")
COMPUTE = "typedef typename xpnet_compute<T>::type C;\n"  # C: float for half and float, double for double
LOSS_KERNELS = ("ce_labels", "ce_dense", "mse", "bce")

# CUDA helpers every activation body may call (prepended to the kernel sources).
CUDA_PRELUDE = r"""
template <typename C> __device__ __forceinline__ C xpnet_sigmoid(C z) {
    C e = exp(-fabs(z));
    return z >= C(0) ? C(1) / (C(1) + e) : e / (C(1) + e);
}
"""

# Dropout masks (``xpnet.dropout``): the uint32 twin of ``mix32`` / ``element_hash`` -- wrap-around
# uint32 products are the int64 ``(x * m) & 0xFFFFFFFF`` of the reference and Numba forms, and the
# wrap-around sum ``idx + first`` (``first``: ``first_element``, the global-batch counter of the
# array's first element) is their ``(first + idx) & 0xFFFFFFFF``.
DROPOUT_CUDA = f"""
__device__ __forceinline__ unsigned int xpnet_mix32(unsigned int x) {{
    x ^= x >> 16; x *= {MUL1:#x}u; x ^= x >> 15; x *= {MUL2:#x}u; x ^= x >> 16;
    return x;
}}
__device__ __forceinline__ bool xpnet_keep(long long idx, unsigned int first, unsigned int key,
                                           unsigned long long keep_below) {{
    unsigned int e = (unsigned int)((unsigned long long)idx & {MASK32:#x}ull) + first;
    unsigned int h = xpnet_mix32(xpnet_mix32(e ^ key) ^ key);
    return (unsigned long long)h < keep_below;
}}
"""

# The activations' CUDA forms: bodies of two device functions of the compute type ``C``, the
# forward ``f(C z)`` and the derivative ``f'(C z, C a)`` -- the same math as the registry's
# array-API and scalar forms (tests/test_emulated_gpu.py compares them on the emulated GPU).
ACTIVATION_CUDA: dict[str, tuple[str, str]] = {
    "identity": ("return z;", "return C(1);"),
    "relu": ("return (z > C(0) || z != z) ? z : C(0);", "return z > C(0) ? C(1) : C(0);"),
    "leaky_relu": (f"return z > C(0) ? z : C({LEAKY_SLOPE}) * z;", f"return z > C(0) ? C(1) : C({LEAKY_SLOPE});"),
    "sigmoid": ("return xpnet_sigmoid<C>(z);", "return a * (C(1) - a);"),
    "tanh": ("return tanh(z);", "return C(1) - a * a;"),
    # 0.5 * (1 + tanh(u)) == sigmoid(2u): no cancellation in 1 - tanh(u)**2 (see activations.py)
    "gelu": (f"""if (z > C({GELU_CLAMP})) return z;
    if (z < C(-{GELU_CLAMP})) return C(0);
    return z * xpnet_sigmoid<C>(C({2 * GELU_K!r}) * (z + C({GELU_C}) * z * z * z));""",
             f"""if (z > C({GELU_CLAMP})) return C(1);
    if (z < C(-{GELU_CLAMP})) return C(0);
    C u2 = C({2 * GELU_K!r}) * (z + C({GELU_C}) * z * z * z);
    C s = xpnet_sigmoid<C>(u2), s_neg = xpnet_sigmoid<C>(-u2);
    return s + C({2 * GELU_K!r}) * z * s * s_neg * (C(1) + C({3 * GELU_C!r}) * z * z);"""),
    "silu": ("return z * xpnet_sigmoid<C>(z);", "C s = xpnet_sigmoid<C>(z); return s * (C(1) + z * (C(1) - s));"),
    "elu": ("return z > C(0) ? z : expm1(z);", "return z > C(0) ? C(1) : a + C(1);"),
    "softplus": (f"return z > C({SOFTPLUS_THRESHOLD}) ? z : (z > C(0) ? z : C(0)) + log1p(exp(-fabs(z)));",
                 f"return z > C({SOFTPLUS_THRESHOLD}) ? C(1) : xpnet_sigmoid<C>(z);"),
}


def activation_cuda(act) -> tuple[str, str]:
    """The CUDA bodies of ``act``: from ``ACTIVATION_CUDA``, or (deprecated) its own ``cuda=`` field."""
    if act.name in ACTIVATION_CUDA:
        return ACTIVATION_CUDA[act.name]
    if getattr(act, "cuda", None):
        warnings.warn(f"Activation({act.name!r}, cuda=...) is deprecated: add its CUDA bodies to "
                      "xpnet.kernels.cuda_source.ACTIVATION_CUDA.", DeprecationWarning, stacklevel=2)
        return act.cuda
    raise KeyError(f"activation {act.name!r} has no CUDA form: add it to xpnet.kernels.cuda_source.ACTIVATION_CUDA")


def cuda_source() -> str:
    """Helpers, generated activation device functions, then ``xpnet_kernels.cu``."""
    parts = [CUDA_PRELUDE, DROPOUT_CUDA]
    for act in ACTIVATIONS.values():
        fwd, bwd = activation_cuda(act)
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


# Dropout variants (training forward and its backward): ``i`` is the element's row-major index
# ``row * cols + col`` in the array, ``first`` that of its first element in the global batch (a
# data-parallel share); dropped elements are 0, kept ones times ``scale = 1 / (1 - p)``.  The backward
# recomputes ``f(z)`` for ``f'`` (``a`` holds the dropped activation) and redraws the forward's mask.
_DROPOUT_PARAMS = "uint32 key, uint32 first, uint64 keep_below, float64 scale"
_DROPOUT_SCALARS = ("key", "first", "keep_below", "scale")


def bias_act_dropout(act: str) -> Elementwise:
    return Elementwise(f"xpnet_bias_act_dropout_{act}", "T b, " + _DROPOUT_PARAMS, "T z, T a",
                       COMPUTE + "C v = (C)z + (C)b; z = (T)v; a = xpnet_keep(i, first, key, keep_below) ? "
                       f"(T)(xpnet_{act}_fwd<C>(v) * (C)scale) : (T)(C(0));",
                       _DROPOUT_SCALARS)


def act_grad_dropout(act: str) -> Elementwise:
    return Elementwise(f"xpnet_act_grad_dropout_{act}", "T z, T a, " + _DROPOUT_PARAMS, "T g",
                       COMPUTE + f"C zz = (C)z; C d = (C)g * xpnet_{act}_bwd<C>(zz, xpnet_{act}_fwd<C>(zz)); "
                       "g = xpnet_keep(i, first, key, keep_below) ? (T)(d * (C)scale) : (T)(C(0));",
                       _DROPOUT_SCALARS)


BIAS_ADD = Elementwise("xpnet_bias_add", "T b", "T z", COMPUTE + "z = (T)((C)z + (C)b);")  # the linear output layer

# Mixed precision: the float32 loss gradient times the loss scale into float16, and back.
SCALE_CAST = Elementwise("xpnet_scale_cast", "S g, S scale", "T out", "out = (T)(g * scale);", ("scale",))
UNSCALE = Elementwise("xpnet_unscale", "T g16, S inv_scale", "S g", "g = (S)((S)g16 * inv_scale);", ("inv_scale",))

SCALE = Elementwise("xpnet_scale", "raw S sumsq, S max_norm", "T g",
                    COMPUTE + "g = (T)((C)g * xpnet_grad_scale<C>((C)max_norm, (C)sumsq[0]));", ("max_norm",))

@dataclass(frozen=True)
class OptimizerKernel:
    """An optimizer operation of the kernel sets, as an elementwise kernel.

    ``buffers`` are the state arrays after ``p`` and ``g`` and ``scalars`` the numbers, both named
    and ordered as the operation's signature (``KernelSet.sgd``, ...; a test checks they agree);
    a scalar is ``"real"`` (a kernel parameter of the state type ``S``, used in the compute type
    ``C``) or ``"flag"`` (an ``int32`` parameter).  The kernel calls the device function
    ``xpnet_<rule>`` of ``xpnet_kernels.cu`` with ``p, g``, the buffers, then the scalars.
    """

    rule: str
    buffers: tuple[str, ...]
    scalars: tuple[tuple[str, str], ...]

    def params(self) -> str:
        """The scalar kernel parameters, typed."""
        return ", ".join(f"{'int32' if kind == 'flag' else 'S'} {name}" for name, kind in self.scalars)

    def call(self) -> str:
        states = ", ".join(f"s{i}" for i in range(len(self.buffers)))
        args = ", ".join(name if kind == "flag" else f"(C){name}" for name, kind in self.scalars)
        return f"xpnet_{self.rule}<C>(pp, gg, {states}, {args});"


_REAL, _FLAG = "real", "flag"
OPTIMIZER_KERNELS = {k.rule: k for k in (
    OptimizerKernel("sgd", ("buf",), (("lr", _REAL), ("momentum", _REAL), ("dampening", _REAL),
                                      ("weight_decay", _REAL), ("nesterov", _FLAG), ("first", _FLAG))),
    OptimizerKernel("adagrad", ("acc",), (("lr", _REAL), ("weight_decay", _REAL), ("eps", _REAL))),
    OptimizerKernel("rmsprop", ("square_avg", "grad_avg", "buf"),
                    (("lr", _REAL), ("alpha", _REAL), ("eps", _REAL), ("weight_decay", _REAL), ("momentum", _REAL),
                     ("centered", _FLAG))),
    OptimizerKernel("adam", ("m", "v", "vmax"),
                    (("step_size", _REAL), ("beta1", _REAL), ("beta2", _REAL), ("eps", _REAL), ("l2", _REAL),
                     ("decay", _REAL), ("bc2_sqrt", _REAL), ("amsgrad", _FLAG))),
)}


@dataclass(frozen=True)
class Reduction:
    """A full reduction in CuPy's ``ReductionKernel`` terms: ``sum(map_expr)`` into ``y``."""

    name: str
    in_params: str
    out_params: str
    map_expr: str
    post_map_expr: str = "y = a"
    preamble: bool = False  # whether the kernel needs cuda_source() (its helpers) as a preamble


# Counts of invalid values: the device-side input checks, and the fp16 found-inf flag.
COUNT_NONFINITE = Reduction("xpnet_count_nonfinite", "T x", "int64 y", "isfinite(x) ? 0 : 1")
COUNT_NOT_PROBABILITY = Reduction("xpnet_count_not_probability", "T x", "int64 y",
                                  "(x >= T(0) && x <= T(1)) ? 0 : 1")  # NaN fails both comparisons
SUM_OF_SQUARES = Reduction("xpnet_sum_of_squares", "T x", "S y", "(S)x * (S)x")


def count_bad_labels(n_classes: int) -> Reduction:
    """Labels outside ``[0, n_classes)`` (the bound is part of the source: one kernel per class count)."""
    return Reduction(f"xpnet_count_bad_labels_{int(n_classes)}", "T x", "int64 y",
                     f"(x < 0 || x >= {int(n_classes)}) ? 1 : 0")


def clip_scale(max_norm: float) -> Reduction:
    """The clipping factor ``min(max_norm / (||x|| + 1e-6), 1)`` in one reduction (into ``S y``).

    ``max_norm`` is part of the source (one kernel per value, as a trainer keeps one): a reduction
    kernel takes arrays only."""
    max_norm = float(max_norm)
    tag = max_norm.hex().replace(".", "d").replace("-", "m").replace("+", "p")
    return Reduction(f"xpnet_clip_scale_{tag}", "T x", "S y", "(S)x * (S)x",
                     f"y = xpnet_grad_scale<S>(S({max_norm!r}), a)", preamble=True)


def optimizer(rule: str, present: tuple[bool, ...]) -> Elementwise:
    """One elementwise kernel for an optimizer operation; state buffers not in use become locals.

    ``gscale`` is a one-element array: the gradient scale (1, or the clipping factor on the device)."""
    spec = OPTIMIZER_KERNELS[rule]
    outs = ["T p"] + [f"S st{i}" for i, have in enumerate(present) if have]
    load = "".join(f"C s{i} = {f'(C)st{i}' if have else 'C(0)'}; " for i, have in enumerate(present))
    store = "".join(f"st{i} = (S)s{i}; " for i, have in enumerate(present) if have)
    body = COMPUTE + "C pp = (C)p; C gg = (C)g * (C)gscale[0]; " + load + spec.call() + " p = (T)pp; " + store
    ins = "T g, raw S gscale, " + spec.params()
    return Elementwise(f"xpnet_{rule}_" + "".join("1" if h else "0" for h in present), ins, ", ".join(outs), body,
                       tuple(name for name, _ in spec.scalars))


def all_elementwise() -> list[Elementwise]:
    """Every elementwise kernel the GPU kernel set can build (for the compile check)."""
    kernels = [SCALE, BIAS_ADD, SCALE_CAST, UNSCALE]
    for name in ACTIVATIONS:
        kernels += [bias_act(name), act_grad(name), bias_act_dropout(name), act_grad_dropout(name)]
    for rule, spec in OPTIMIZER_KERNELS.items():
        n = len(spec.buffers)
        for mask in range(1 << n):
            kernels.append(optimizer(rule, tuple(bool(mask >> i & 1) for i in range(n))))
    return kernels
