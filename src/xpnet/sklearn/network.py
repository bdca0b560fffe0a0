"""The xpnet model and trainer behind a scikit-learn estimator: built, kept in step with the estimator's
parameters and ``coefs_``, pickled and rebuilt.

scikit-learn's MLP is its ``coefs_`` / ``intercepts_``: whatever they hold, with the current ``activation``,
is the network.  Here the network is an :class:`xpnet.MLP` (on the CPU or a GPU), so :meth:`current_model`
reconciles the two before each use: arrays assigned to ``coefs_`` are loaded, and a model built with another
``activation``, ``dropout``, ``dtype`` or ``device`` than the estimator now has (``set_params``) is rebuilt
from the current weights, keeping the optimizer's state where it still applies.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from ..model import MLP
from ..train.trainer import Trainer
from .objective import SKLEARN_ACTIVATIONS, Objective
from .solvers import LearningRate, make_solver

_UNPICKLED = ("_model", "_trainer", "_schedule", "_objective", "_best_params", "_exposed", "_built")


class NetworkMixin:
    """Model and trainer management for :class:`~xpnet.sklearn.estimators.MLPClassifier` / ``MLPRegressor``."""

    _model: MLP  # absent after unpickling until first used (see current_model)
    _trainer: Trainer | None

    # -- building ------------------------------------------------------------------------------
    def _network_params(self) -> dict[str, Any]:
        """The estimator parameters the live model is built from (compared in :meth:`current_model`)."""
        est: Any = self
        return {"activation": est.activation, "dropout": repr(est.dropout), "dtype": est.dtype, "device": est.device}

    def _build_model(self, layer_units: list[int], dtype: str, seed: int,
                     weights: list[tuple[np.ndarray, np.ndarray]]) -> MLP:
        est: Any = self
        model = MLP(layer_units, activation=SKLEARN_ACTIVATIONS.get(est.activation, est.activation), dtype=dtype,
                    seed=seed, device=est.device, dropout=est.dropout)
        model.set_weights(weights)
        self._model, self._trainer, self._built = model, None, self._network_params()
        return model

    def _new_trainer(self, state: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Trainer:
        """A trainer with a fresh optimizer of the estimator's ``solver`` (or ``state``'s, restored)."""
        est: Any = self
        self._objective = Objective.for_outputs(est.out_activation_, est.n_outputs_, float(est.alpha))
        trainer = Trainer(self._model, loss=self._objective.loss, optimizer=make_solver(est), metrics=(),
                          precision=est.precision)
        if state is not None:
            trainer.load_state_dict(*state)
        self._schedule = LearningRate(trainer.optimizer, est.learning_rate, est.learning_rate_init, est.power_t)
        self._trainer = trainer
        return trainer

    def trainer_for(self, incremental: bool) -> Trainer:
        """scikit-learn's optimizer lifetime: ``partial_fit`` continues the last one, ``fit`` starts a new one."""
        est: Any = self
        existing = getattr(self, "_trainer", None)
        if not incremental or existing is None:
            return self._new_trainer()
        if existing.precision != est.precision:  # set_params(precision=...) between partial_fit calls
            return self._new_trainer(existing.state_dict())
        return existing

    # -- coefs_ and the model ----------------------------------------------------------------------
    def expose_weights(self) -> None:
        """``coefs_`` / ``intercepts_``: views of the parameters on the CPU, host copies on a GPU."""
        est: Any = self
        model = self._model
        views = model.layer_views(model.params) if model.backend.kind == "numpy" else model.get_weights()
        est.coefs_ = [W for W, _ in views]
        est.intercepts_ = [b for _, b in views]
        self._exposed = (list(est.coefs_), list(est.intercepts_))

    def current_model(self) -> MLP:
        """The model for the estimator as it is now: rebuilt after unpickling or a change of its network
        parameters, with any arrays assigned to ``coefs_`` / ``intercepts_`` loaded."""
        est: Any = self
        if "_model" not in self.__dict__ or self._built != self._network_params():
            self._rebuild()
        exposed = self._exposed
        current = [*est.coefs_, *est.intercepts_]
        if len(current) != len(exposed[0]) + len(exposed[1]) or any(
                a is not b for a, b in zip(current, [*exposed[0], *exposed[1]])):
            self._model.set_weights(list(zip(est.coefs_, est.intercepts_)))
            self.expose_weights()
        return self._model

    def _rebuild(self) -> None:
        """The model (and trainer) again, from ``coefs_`` and the optimizer state (the live trainer's, or the
        pickled one); the optimizer state is dropped when the dtype changes (a fresh one follows)."""
        est: Any = self
        live = self.__dict__.get("_trainer")
        state = live.state_dict() if live is not None else self.__dict__.get("_training_state")
        old_dtype = str(est.coefs_[0].dtype)
        dtype = est.dtype or old_dtype
        units = [est.coefs_[0].shape[0], *(W.shape[1] for W in est.coefs_)]
        seed = self._model.seed if "_model" in self.__dict__ else self.__dict__.get("_dropout_seed", 0)
        self._build_model(units, dtype, seed, list(zip(est.coefs_, est.intercepts_)))
        if state is not None and dtype == old_dtype:  # partial_fit continues exactly
            self._new_trainer(state)
        self._best_params = self._model.copy_params()
        self.expose_weights()

    # -- pickling ----------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in _UNPICKLED:
            state.pop(key, None)
        if hasattr(self, "coefs_"):
            model = self.current_model()
            state["coefs_"] = [np.array(W) for W in state["coefs_"]]
            state["intercepts_"] = [np.array(b) for b in state["intercepts_"]]
            state["_dropout_seed"] = model.seed
        trainer = self.__dict__.get("_trainer")
        if trainer is not None:
            state["_training_state"] = trainer.state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "optimizer" in state and "solver" not in state:
            state = self._upgraded(state)
        self.__dict__.update(state)  # the model and trainer are rebuilt when first used

    def _upgraded(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state of an estimator pickled before scikit-learn's names (``optimizer=``, one softmax output
        per class, torch's Adam): it predicts as before; training continues with a fresh optimizer."""
        state = dict(state)
        state["solver"] = state.pop("optimizer")
        defaults = {k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()
                    if v.default is not inspect.Parameter.empty}
        state = {**defaults, **state}
        state.pop("_y_ndim", None)
        if state.pop("_training_state", None) is not None:
            warnings.warn("this estimator was pickled by an older xpnet: its optimizer state is dropped (predictions "
                          "are unchanged; further training starts a fresh optimizer).", UserWarning, stacklevel=3)
        if "coefs_" in state:
            state["n_outputs_"], state["n_layers_"] = state["coefs_"][-1].shape[1], len(state["coefs_"]) + 1
            state["out_activation_"] = "softmax" if state.pop("_encoder", None) is not None else "identity"
            state.update(best_loss_=min(state.get("loss_curve_") or [np.inf]), _no_improvement_count=0,
                         validation_scores_=None, best_validation_score_=None)
            if "classes_" in state:
                state["_label_binarizer"] = LabelBinarizer().fit(state["classes_"])
        return state
