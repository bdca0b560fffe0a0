"""scikit-learn estimators backed by xpnet: ``MLPClassifier`` and ``MLPRegressor``.

Parameter names and defaults follow ``sklearn.neural_network.MLPClassifier`` where they exist
(``hidden_layer_sizes``, ``alpha`` as L2 weight decay, ``learning_rate_init``, ``max_iter`` in
epochs, ``tol`` with ``n_iter_no_change``, ``early_stopping`` with ``validation_fraction``,
``warm_start``), plus xpnet's ``optimizer``, ``device`` and ``dtype``.  They work inside
``Pipeline`` and ``GridSearchCV``, pickle (weights and training state travel as NumPy arrays),
and pass scikit-learn's ``check_estimator``.  A pickled estimator continues training
(``partial_fit``, ``warm_start``) exactly as the original would.  Requires scikit-learn (``xpnet[examples]``).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import MLP, Trainer
from .activations import ACTIVATIONS
from .backend import FLOAT_DTYPES
from .optim import OPTIMIZERS
from .train.callbacks import Callback
from .validation import check_int


class _ConvergenceStop(Callback):
    """scikit-learn's stopping rule: no improvement of ``tol`` in the monitored value for
    ``n_iter_no_change`` epochs (training loss, or validation loss with early_stopping)."""

    def __init__(self, monitor, tol, n_iter_no_change):
        self.monitor, self.tol, self.patience = monitor, tol, n_iter_no_change

    def on_train_begin(self, trainer):
        self.best, self.wait, self.best_params = np.inf, 0, None

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs[self.monitor]
        if value < self.best - self.tol:
            self.wait = 0
        else:
            self.wait += 1
        if value < self.best:
            self.best = value
            if self.monitor.startswith("val_"):
                self.best_params = trainer.model.copy_params()
        if self.wait >= self.patience:
            trainer.stop_training = True
            trainer.stop_reason = f"converged: {self.monitor} improved by less than tol={self.tol} for " \
                                  f"{self.patience} epochs"

    def on_train_end(self, trainer):
        if self.best_params is not None:  # early stopping keeps the best validation weights
            trainer.model.params[...] = self.best_params


class _MLPBase(BaseEstimator):
    _loss = ""

    # scikit-learn's convention: __init__ stores, fit validates (ranges as sklearn's own MLP)
    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",  # any device string or object resolve_backend takes; it checks
        "dtype": [StrOptions(set(FLOAT_DTYPES))],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", optimizer="adam", alpha=1e-4,
                 batch_size="auto", learning_rate_init=1e-3, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, device="cpu", dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.dtype = dtype

    def _check_params(self) -> None:
        """All hyperparameters, at the start of fit / partial_fit, before any state changes."""
        self._validate_params()
        sizes = self.hidden_layer_sizes  # the constraint checks only that it is array-like (or an int)
        if np.isscalar(sizes):
            check_int("hidden_layer_sizes", sizes, low=1)
        else:
            for i, size in enumerate(sizes):
                check_int(f"hidden_layer_sizes[{i}]", size, low=1)

    # -- building ------------------------------------------------------------------------------
    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.default_rng().integers(2**31))
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31))
        return int(rs)

    def _new_trainer(self, n_features, n_outputs):
        sizes = self.hidden_layer_sizes
        hidden: list[Any] = [sizes] if np.isscalar(sizes) else list(sizes)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is unknown: use one of {', '.join(OPTIMIZERS)}.")
        model = MLP([n_features, *hidden, n_outputs], activation=self.activation, dtype=self.dtype,
                    seed=self._seed(), device=self.device)
        opt = OPTIMIZERS[self.optimizer](lr=self.learning_rate_init, weight_decay=self.alpha)
        return Trainer(model, loss=self._loss, optimizer=opt, metrics=())

    def _trainer_for(self, n_features, n_outputs, keep):
        trainer = getattr(self, "_trainer", None) if keep else None
        if trainer is not None:
            return trainer
        if keep and hasattr(self, "coefs_"):  # unpickled: rebuild from the stored arrays
            return self._restore()
        self._trainer = self._new_trainer(n_features, n_outputs)
        self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
        return self._trainer

    def _restore(self):
        trainer = self._new_trainer(self.coefs_[0].shape[0], self.coefs_[-1].shape[1])
        trainer.model.set_weights(list(zip(self.coefs_, self.intercepts_)))
        if getattr(self, "_training_state", None):  # optimizer moments, step, shuffling RNG
            trainer.load_state_dict(*self._training_state)
        self._trainer = trainer
        return trainer

    def _sync_weights(self):
        weights = self._trainer.model.get_weights()
        self.coefs_ = [W for W, _ in weights]
        self.intercepts_ = [b for _, b in weights]

    def __getstate__(self):
        state = dict(self.__dict__)
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_training_state"] = trainer.state_dict()
        return state

    # -- training ------------------------------------------------------------------------------
    def _fit(self, X, y_enc, n_outputs, epochs, keep):
        trainer = self._trainer_for(X.shape[1], n_outputs, keep)
        if trainer.model.n_outputs != n_outputs or trainer.model.n_features != X.shape[1]:
            raise ValueError(f"this estimator was fitted with {trainer.model.n_features} features and "
                             f"{trainer.model.n_outputs} outputs; got {X.shape[1]} and {n_outputs}.")
        batch = min(200, X.shape[0]) if self.batch_size == "auto" else min(int(self.batch_size), X.shape[0])
        callbacks, split = [], 0.0
        if epochs > 1:
            if self.early_stopping and X.shape[0] >= 10:
                split = self.validation_fraction
            callbacks.append(_ConvergenceStop("val_loss" if split else "loss", self.tol, self.n_iter_no_change))
        history = trainer.fit(X, y_enc, epochs=epochs, batch_size=batch, shuffle=self.shuffle,
                              validation_split=split, callbacks=callbacks, verbose=bool(self.verbose))
        self.loss_curve_ = list(self.loss_curve_) + history["loss"] if "loss" in history.history else self.loss_curve_
        if split:
            self.validation_scores_ = history["val_loss"]
        self.n_iter_ += len(history.epoch)
        self.t_ += len(history.epoch) * (X.shape[0] - int(round(X.shape[0] * split)))
        self._sync_weights()
        return self

    def _outputs(self, X):
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        trainer = getattr(self, "_trainer", None) or self._restore()
        from .backend import to_host

        return to_host(trainer.predict(X.astype(trainer.model.dtype, copy=False))).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _MLPBase):
    """A softmax classifier: an xpnet MLP trained with cross-entropy."""

    _loss = "cross_entropy"

    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (from the current weights if ``warm_start``)."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=not self._continuing())
        check_classification_targets(y)
        keep = self._continuing()
        if not keep:
            self._encoder = LabelEncoder().fit(y)
            self.classes_ = self._encoder.classes_
        elif not set(np.unique(y)) <= set(self.classes_):
            unseen = sorted(set(np.unique(y)) - set(self.classes_))
            raise ValueError(f"y has labels {unseen} not seen in the first fit.")
        return self._fit(X, self._encoder.transform(y), len(self.classes_), self.max_iter, keep)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``(X, y)``; the first call needs ``classes`` (all labels there will be)."""
        self._check_params()
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit "
                                 "(all labels that will occur).")
            self._encoder = LabelEncoder().fit(classes)
            self.classes_ = self._encoder.classes_
        unseen = set(np.unique(y)) - set(self.classes_)
        if unseen:
            raise ValueError(f"y has labels {sorted(unseen)} that are not in classes={list(self.classes_)}.")
        return self._fit(X, self._encoder.transform(y), len(self.classes_), 1, keep=not first)

    def _continuing(self) -> bool:
        return bool(self.warm_start) and hasattr(self, "classes_")

    def predict_proba(self, X):
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        outputs = self._outputs(X)  # checks fitted-ness first
        return self.classes_[np.argmax(outputs, axis=1)]


class MLPRegressor(RegressorMixin, _MLPBase):
    """A regressor: an xpnet MLP trained with mean squared error."""

    _loss = "mse"

    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (from the current weights if ``warm_start``)."""
        self._check_params()
        keep = bool(self.warm_start) and hasattr(self, "coefs_")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True,
                             reset=not keep)
        self._y_ndim = y.ndim
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._fit(X, Y.astype(X.dtype), Y.shape[1], self.max_iter, keep)

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``."""
        self._check_params()
        first = not hasattr(self, "coefs_")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True,
                             reset=first)
        if first:
            self._y_ndim = y.ndim
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._fit(X, Y.astype(X.dtype), Y.shape[1], 1, keep=not first)

    def predict(self, X):
        out = self._outputs(X)
        return out.ravel() if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # 2-D targets train one output per column
        return tags
