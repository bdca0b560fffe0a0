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

import numpy as np

OPSET = 17


def _need_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install 'xpnet[export]' (or pip install onnx).") \
            from None
    return onnx, helper, numpy_helper


def build(weights: list, activation: str, probabilities: str | None = None, metadata: dict | None = None):
    """An ``onnx.ModelProto`` computing the MLP with ``weights`` ``[(W (in, out), b), ...]``;
    ``probabilities``: None, ``"softmax"`` or ``"sigmoid"`` adds a ``probabilities`` output."""
    from ..activations import GELU_C, GELU_K, LEAKY_SLOPE, SOFTPLUS_THRESHOLD

    onnx, helper, numpy_helper = _need_onnx()
    dtype = np.asarray(weights[0][0]).dtype
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}[dtype]
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def act(x, i):
        out = f"a{i}"
        if activation == "identity":
            return x
        simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
        if activation in simple:
            nodes.append(helper.make_node(simple[activation], [x], [out]))
        elif activation == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [x], [out], alpha=LEAKY_SLOPE))
        elif activation == "elu":  # x > 0 ? x : exp(x) - 1 (onnxruntime has no float64 Elu)
            zero, one = const(f"zero{i}", 0.0), const(f"one{i}", 1.0)
            nodes.extend([helper.make_node("Greater", [x, zero], [f"pos{i}"]),
                          helper.make_node("Exp", [x], [f"e{i}"]), helper.make_node("Sub", [f"e{i}", one], [f"em{i}"]),
                          helper.make_node("Where", [f"pos{i}", x, f"em{i}"], [out])])
        elif activation == "softplus":  # x > 20 ? x : log(1 + exp(x)), as xpnet and torch (threshold 20)
            thr, one = const(f"thr{i}", SOFTPLUS_THRESHOLD), const(f"one{i}", 1.0)
            nodes.extend([helper.make_node("Greater", [x, thr], [f"big{i}"]),
                          helper.make_node("Min", [x, thr], [f"xc{i}"]), helper.make_node("Exp", [f"xc{i}"], [f"e{i}"]),
                          helper.make_node("Add", [f"e{i}", one], [f"e1{i}"]), helper.make_node("Log", [f"e1{i}"], [f"l{i}"]),
                          helper.make_node("Where", [f"big{i}", x, f"l{i}"], [out])])
        elif activation == "silu":
            nodes.append(helper.make_node("Sigmoid", [x], [f"sig{i}"]))
            nodes.append(helper.make_node("Mul", [x, f"sig{i}"], [out]))
        elif activation == "gelu":  # 0.5 x (1 + tanh(k (x + c x^3)))
            c, k, half, one = (const(f"{n}{i}", v) for n, v in (("c", GELU_C), ("k", GELU_K), ("h", 0.5), ("o", 1.0)))
            nodes.extend([helper.make_node("Mul", [x, x], [f"x2_{i}"]), helper.make_node("Mul", [f"x2_{i}", x], [f"x3_{i}"]),
                      helper.make_node("Mul", [f"x3_{i}", c], [f"cx3_{i}"]),
                      helper.make_node("Add", [x, f"cx3_{i}"], [f"in_{i}"]),
                      helper.make_node("Mul", [f"in_{i}", k], [f"kin_{i}"]),
                      helper.make_node("Tanh", [f"kin_{i}"], [f"t_{i}"]),
                      helper.make_node("Add", [f"t_{i}", one], [f"t1_{i}"]),
                      helper.make_node("Mul", [x, f"t1_{i}"], [f"xt_{i}"]),
                      helper.make_node("Mul", [f"xt_{i}", half], [out])])
        else:
            raise ValueError(f"ONNX export does not know activation {activation!r}.")
        return out

    x = "input"
    last = len(weights) - 1
    for i, (W, b) in enumerate(weights):
        nodes.append(helper.make_node("MatMul", [x, const(f"W{i}", W)], [f"m{i}"]))
        out = "logits" if i == last else f"z{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", const(f"b{i}", b)], [out]))
        x = out if i == last else act(out, i)
    n_in, n_out = np.asarray(weights[0][0]).shape[0], np.asarray(weights[-1][0]).shape[1]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch", n_out])]
    if probabilities == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1))
    elif probabilities == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"]))
    elif probabilities is not None:
        raise ValueError(f"probabilities={probabilities!r}: use None, 'softmax' or 'sigmoid'.")
    if probabilities:
        outputs.append(helper.make_tensor_value_info("probabilities", elem, ["batch", n_out]))
    graph = helper.make_graph(nodes, "xpnet_mlp", [helper.make_tensor_value_info("input", elem, ["batch", n_in])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="xpnet")
    model.ir_version = 8  # the IR version of opset 17 (onnx 1.12): readable by older onnxruntime too
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model


def from_predictor(predictor, probabilities: bool = False):
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
