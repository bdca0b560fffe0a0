"""ONNX export of an MLP, built with the ``onnx`` package (the ``export`` extra: ``pip install 'xpnet[export]'``).

The graph uses **opset 17** (ONNX 1.12+; any onnxruntime since 1.13 runs it) and only standard
operators: ``MatMul`` + ``Add`` per layer, and ``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``
between layers; ``silu`` is ``x * Sigmoid(x)``, ``gelu`` the tanh approximation xpnet trains with
(``Mul``/``Add``/``Tanh``), ``elu`` and ``softplus`` (threshold 20, as xpnet) are written with
``Exp``/``Log``/``Where`` (onnxruntime has no float64 ``Elu``/``Softplus`` kernels).

* input ``input``: ``(batch, n_features)`` in the model's dtype (float32 or float64), the RAW
  features in the order of ``feature_names`` (the run's standardisation is folded into the first
  layer, see :func:`xpnet.io.artifact.fold`);
* output ``logits``: ``(batch, n_outputs)``; with ``probabilities=True`` a second output
  ``probabilities``: ``Softmax`` over the classes (cross-entropy) or ``Sigmoid`` per output (bce).

The feature names, classes and loss are stored in the model's ``metadata_props`` (JSON values).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .._typing import HostArray

OPSET = 17
_SIMPLE = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def need_onnx() -> tuple[Any, Any, Any]:
    """``(onnx, onnx.helper, onnx.numpy_helper)``, or a ValueError saying how to install onnx."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install 'xpnet[export]' (or pip install onnx).") \
            from None
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers of the graph being built, in one dtype."""

    def __init__(self, dtype: np.dtype[Any]):
        self.onnx, self.helper, self.numpy_helper = need_onnx()
        self.dtype, self.nodes, self.inits = dtype, [], []  # type: ignore[var-annotated]

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], **attrs))
        return output

    def const(self, name: str, value: Any) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def activation(self, name: str, x: str, i: int) -> str:
        """The output of activation ``name`` applied to tensor ``x`` (layer ``i``)."""
        from ..activations import LEAKY_SLOPE, SOFTPLUS_THRESHOLD

        out = f"a{i}"
        if name == "identity":
            return x
        if name in _SIMPLE:
            return self.node(_SIMPLE[name], [x], out)
        if name == "leaky_relu":
            return self.node("LeakyRelu", [x], out, alpha=LEAKY_SLOPE)
        if name == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"sig{i}")], out)
        if name == "gelu":
            return self._gelu(x, i, out)
        if name == "elu":  # x > 0 ? x : exp(x) - 1 (onnxruntime has no float64 Elu)
            positive = self.node("Greater", [x, self.const(f"zero{i}", 0.0)], f"pos{i}")
            expm1 = self.node("Sub", [self.node("Exp", [x], f"e{i}"), self.const(f"one{i}", 1.0)], f"em{i}")
            return self.node("Where", [positive, x, expm1], out)
        if name == "softplus":  # x > 20 ? x : log(1 + exp(x)), as xpnet and torch (threshold 20)
            threshold = self.const(f"thr{i}", SOFTPLUS_THRESHOLD)
            big = self.node("Greater", [x, threshold], f"big{i}")
            e = self.node("Exp", [self.node("Min", [x, threshold], f"xc{i}")], f"e{i}")
            log = self.node("Log", [self.node("Add", [e, self.const(f"one{i}", 1.0)], f"e1{i}")], f"l{i}")
            return self.node("Where", [big, x, log], out)
        raise ValueError(f"ONNX export does not know activation {name!r}.")

    def _gelu(self, x: str, i: int, out: str) -> str:
        """0.5 x (1 + tanh(k (x + c x^3))): the tanh approximation xpnet trains with."""
        from ..activations import GELU_C, GELU_K

        x3 = self.node("Mul", [self.node("Mul", [x, x], f"x2_{i}"), x], f"x3_{i}")
        inner = self.node("Add", [x, self.node("Mul", [x3, self.const(f"c{i}", GELU_C)], f"cx3_{i}")], f"in_{i}")
        t = self.node("Tanh", [self.node("Mul", [inner, self.const(f"k{i}", GELU_K)], f"kin_{i}")], f"t_{i}")
        t1 = self.node("Add", [t, self.const(f"o{i}", 1.0)], f"t1_{i}")
        return self.node("Mul", [self.node("Mul", [x, t1], f"xt_{i}"), self.const(f"h{i}", 0.5)], out)


def build(weights: list[tuple[HostArray, HostArray]], activation: str, probabilities: str | None = None,
          metadata: dict[str, Any] | None = None) -> Any:
    """An ``onnx.ModelProto`` computing the MLP with ``weights`` ``[(W (in, out), b), ...]``;
    ``probabilities``: None, ``"softmax"`` or ``"sigmoid"`` adds a ``probabilities`` output."""
    if probabilities not in (None, "softmax", "sigmoid"):
        raise ValueError(f"probabilities={probabilities!r}: use None, 'softmax' or 'sigmoid'.")
    g = _Graph(np.asarray(weights[0][0]).dtype)
    onnx, helper = g.onnx, g.helper
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}[g.dtype]
    x, last = "input", len(weights) - 1
    for i, (W, b) in enumerate(weights):
        z = g.node("Add", [g.node("MatMul", [x, g.const(f"W{i}", W)], f"m{i}"), g.const(f"b{i}", b)],
                   "logits" if i == last else f"z{i}")
        x = z if i == last else g.activation(activation, z, i)
    n_in, n_out = np.asarray(weights[0][0]).shape[0], np.asarray(weights[-1][0]).shape[1]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch", n_out])]
    if probabilities:
        g.node("Softmax" if probabilities == "softmax" else "Sigmoid", ["logits"], "probabilities",
               **({"axis": -1} if probabilities == "softmax" else {}))
        outputs.append(helper.make_tensor_value_info("probabilities", elem, ["batch", n_out]))
    graph = helper.make_graph(g.nodes, "xpnet_mlp", [helper.make_tensor_value_info("input", elem, ["batch", n_in])],
                              outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="xpnet")
    model.ir_version = 8  # the IR version of opset 17 (onnx 1.12): readable by older onnxruntime too
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model


def from_predictor(predictor: Any, probabilities: bool = False) -> Any:
    """The ONNX model of a :class:`xpnet.predict.Predictor`, on RAW inputs (standardisation folded in)."""
    kind = None
    if probabilities:
        if not predictor.is_classifier:
            raise ValueError("--probabilities is for classifiers; this model is a regression (mse).")
        kind = "softmax" if predictor.loss == "cross_entropy" else "sigmoid"
    rec = predictor.preprocessing
    meta = {"feature_names": rec["feature_names"], "classes": rec["classes"], "loss": rec["loss"],
            "inputs": "raw features (standardisation folded into the first layer)"}
    return build(predictor.folded_weights(), predictor.model.activation.name, kind, meta)
