"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's estimators of the same names, trained by xpnet."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from ..activations import ACTIVATIONS
from ..backend import resolve_backend, to_host
from ..dropout import check_dropout
from ..train.precision import PRECISIONS
from ..train.trainer import Trainer
from ..validation import check_int
from .network import NetworkMixin
from .objective import SKLEARN_ACTIVATIONS, Objective
from .solvers import SKLEARN_SOLVERS, XPNET_SOLVERS
from .stochastic import Rows, Validation, fit_stochastic, place, split_validation

_SHARED_DOC = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'} or an xpnet activation, default='relu'
        Activation of the hidden layers, as scikit-learn's; xpnet's others ('gelu', 'silu', 'elu',
        'leaky_relu', 'softplus', 'sigmoid' = 'logistic') are accepted too.
    solver : {'adam', 'sgd'} or {'adamw', 'rmsprop', 'adagrad'}, default='adam'
        'sgd' and 'adam' update exactly as scikit-learn's (see ``xpnet.sklearn.solvers``); xpnet's
        others are ``xpnet.optim``'s with torch's defaults and ``lr=learning_rate_init``.  'lbfgs' is
        not offered (a full-batch method; xpnet trains in mini-batches).
    alpha : float, default=0.0001
        Strength of the L2 penalty ``alpha / 2 * ||W||^2``, divided by each batch's total sample weight
        (its size when unweighted), on the weights (not the intercepts), as scikit-learn's.
    batch_size : int or 'auto', default='auto'
        Mini-batch size; 'auto' is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Schedule of ``solver='sgd'`` (ignored otherwise): 'invscaling' sets
        ``learning_rate_init / (t + 1) ** power_t`` after each epoch (``t`` the samples seen);
        'adaptive' divides it by 5 each time ``n_iter_no_change`` epochs pass without a ``tol``
        improvement, stopping once it is at most 1e-6.
    learning_rate_init : float, default=0.001
        Initial learning rate.
    power_t : float, default=0.5
        Exponent of 'invscaling'.
    max_iter : int, default=200
        Maximum number of epochs (each sample seen once per epoch).
    shuffle : bool, default=True
        Shuffle the samples before each epoch.
    random_state : int, RandomState instance or None, default=None
        Draws the initial weights (Glorot uniform, as scikit-learn's), the validation split of
        ``early_stopping`` and the shuffles, in scikit-learn's order: the same ``random_state`` gives
        the same draws as ``sklearn.neural_network`` (and, with the default float64, the same weights).
    tol : float, default=1e-4
        Improvement of the loss (or validation score) below which an epoch counts as a stall.
    verbose : bool, default=False
        Print the loss (and validation score) after each epoch.
    warm_start : bool, default=False
        ``fit`` continues from the current weights (with a fresh optimizer, as scikit-learn's).
    momentum : float, default=0.9
        Momentum of ``solver='sgd'``, in [0, 1].
    nesterovs_momentum : bool, default=True
        Nesterov momentum for ``solver='sgd'`` (when ``momentum > 0``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for single-output
        classification) and stop when its score stalls; the best weights are kept.
    validation_fraction : float, default=0.1
        Size of that hold-out, in [0, 1).
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's moment decay rates, in [0, 1).
    epsilon : float, default=1e-8
        Adam's epsilon (added to ``sqrt(v)`` before the bias correction, as scikit-learn's).
    n_iter_no_change : int, default=10
        Stalled epochs tolerated before stopping (or, with 'adaptive', lowering the rate).
    max_fun : int, default=15000
        scikit-learn's limit for 'lbfgs'; accepted so that scikit-learn's parameters carry over, unused.
    device : str, default='cpu'
        xpnet's: 'cpu' (NumPy, Numba kernels) or 'cuda' / 'cuda:N' (CuPy on an NVIDIA GPU).
    dtype : {'float32', 'float64'} or None, default=None
        xpnet's: the training dtype; None follows ``X`` (float32 stays float32, as scikit-learn's).
    precision : {'fp32', 'tf32', 'fp16', 'bf16'}, default='fp32'
        xpnet's: mixed precision (``xpnet.Trainer``); all but 'fp32' need float32.
    dropout : float or sequence of float, default=0.0
        xpnet's: inverted dropout on the hidden layers during training (one rate, or one per layer).
"""

_FITTED_DOC = """
    coefs_ : list of ndarray of shape (n_fan_in, n_fan_out)
        Weights of each layer.  On the CPU they are views of the model's parameters (editing them in
        place changes the model); on a GPU, host copies refreshed after each fit.  Assigning new arrays
        to ``coefs_`` / ``intercepts_`` replaces the model's weights at the next predict or fit.
    intercepts_ : list of ndarray of shape (n_fan_out,)
        Biases of each layer.
    loss_ : float
        scikit-learn's loss of the last epoch (the mean batch loss, penalty included).
    best_loss_ : float or None
        Lowest ``loss_`` (None with ``early_stopping``).
    loss_curve_ : list of float
        ``loss_`` of every epoch.
    validation_scores_ : list of float or None
        Score (accuracy or R^2) on the hold-out after each epoch, with ``early_stopping``.
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
    t_ : int
        Training samples seen.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.
    n_iter_ : int
        Epochs run by the last fit (1 for partial_fit).
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of outputs.
    out_activation_ : str
        Output activation: 'softmax', 'logistic' or 'identity'.
"""


def _documented(params: str = "", attributes: str = "", examples: str = "") -> Any:
    """A class decorator completing the docstring's numpydoc sections: the class's own ``params`` first,
    then the shared ones; the shared fitted attributes, then the class's own ``attributes``; ``examples``."""
    def document(cls: type) -> type:
        cls.__doc__ = ((cls.__doc__ or "").rstrip() + "\n\n    Parameters\n    ----------" + params + _SHARED_DOC
                       + "\n    Attributes\n    ----------" + _FITTED_DOC + attributes + examples)
        return cls
    return document


class _MLPBase(NetworkMixin, BaseEstimator):
    # set by fit (declared for the type checker; scikit-learn's convention: nothing is set in __init__)
    loss_curve_: list[float]
    validation_scores_: list[float] | None
    best_loss_: float | None
    best_validation_score_: float | None
    classes_: Any
    # scikit-learn's convention: __init__ stores, fit validates (ranges as scikit-learn's own MLP)
    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(SKLEARN_ACTIVATIONS) | set(ACTIVATIONS))],
        "solver": [StrOptions({*SKLEARN_SOLVERS, *XPNET_SOLVERS, "lbfgs"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",  # any device string or object xpnet.MLP takes; it checks
        "dtype": [StrOptions({"float32", "float64"}), None],
        "precision": [StrOptions(set(PRECISIONS))],
        "dropout": "no_validation",  # a rate or one per hidden layer; xpnet.MLP checks
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, device="cpu", dtype=None, precision="fp32",
                 dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype
        self.precision = precision
        self.dropout = dropout

    # -- checks ---------------------------------------------------------------------------------
    def _check_params(self, incremental: bool) -> list[int]:
        """All hyperparameters, at the start of fit / partial_fit, before any state changes; returns the
        hidden layer sizes as a list."""
        self._validate_params()
        sizes = self.hidden_layer_sizes
        scalar = np.isscalar(sizes)
        hidden: list[Any] = [sizes] if scalar else list(sizes)
        for i, size in enumerate(hidden):
            check_int("hidden_layer_sizes" if scalar else f"hidden_layer_sizes[{i}]", size, low=1)
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not offered by xpnet (a full-batch method; xpnet trains in "
                             "mini-batches on the CPU or a GPU): use solver='adam' or 'sgd'.")
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        check_dropout(self.dropout, len(hidden))  # xpnet's own parameters, before anything changes
        resolve_backend(self.device)
        if self.precision != "fp32" and self.dtype == "float64":
            raise ValueError(f"precision={self.precision!r} trains float32 master weights: set dtype='float32' (or "
                             "None) or precision='fp32'.")
        return [int(h) for h in hidden]

    # -- the network ----------------------------------------------------------------------------
    def _initial_weights(self, layer_units: list[int], dtype: str,
                         random_state: np.random.RandomState) -> list[tuple[np.ndarray, np.ndarray]]:
        """scikit-learn's Glorot-uniform draws (factor 2 for 'logistic', else 6), in its order."""
        factor = 2.0 if self.activation in ("logistic", "sigmoid") else 6.0
        weights = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False)
            b = random_state.uniform(-bound, bound, fan_out).astype(dtype, copy=False)
            weights.append((W, b))
        return weights

    def _initialize(self, layer_units: list[int], dtype: str, random_state: np.random.RandomState) -> None:
        """A new network and scikit-learn's fitted attributes (first fit, or fit without warm_start)."""
        self.n_iter_, self.t_ = 0, 0
        self.n_outputs_ = layer_units[-1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        weights = self._initial_weights(layer_units, dtype, random_state)
        dropout_seed = random_state.randint(2**31, size=1)[0].item() if np.any(np.asarray(self.dropout)) else 0
        model = self._build_model(layer_units, dtype, dropout_seed, weights)
        self._best_params: Any = model.copy_params()
        self.loss_curve_, self._no_improvement_count = [], 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None
        self.expose_weights()

    # -- training -------------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden = self._check_params(incremental)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        layer_units = [X.shape[1], *hidden, Y.shape[1]]
        random_state = check_random_state(self.random_state)
        dtype = self.dtype or ("float32" if self.precision != "fp32" else str(X.dtype))
        if first_pass:
            self._initialize(layer_units, dtype, random_state)
        elif self.early_stopping and not incremental:
            self._best_params = None  # scikit-learn's best weights are the live ones until this fit beats its best
        model = self.current_model()
        if model.sizes != layer_units:
            raise ValueError(f"this estimator's network has layers {model.sizes}; the data and "
                             f"hidden_layer_sizes need {layer_units}: refit without warm_start.")
        trainer = self.trainer_for(incremental)
        self._objective = Objective.for_outputs(self.out_activation_, self.n_outputs_, float(self.alpha))
        self._train(trainer, X, Y, sample_weight, random_state, incremental)
        self.expose_weights()
        if not np.all(np.isfinite(to_host(model.params))):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        return self

    def _train(self, trainer: Trainer, X, Y, sample_weight, random_state, incremental) -> None:
        model = trainer.model
        validation = None
        if self.early_stopping and not incremental:
            X, Y, sample_weight, X_val, Y_val, sw_val = split_validation(self, X, Y, sample_weight, random_state)
            X_val = model.backend.from_host(X_val, model.dtype)
            validation = Validation(X_val, self._label_space(Y_val), sw_val, self._validation_score)
        # targets as xpnet's losses take them: one-hot rows (softmax), 0/1 per label (logistic), values
        rows: Rows = place(trainer, X.astype(model.dtype, copy=False), Y.astype(model.dtype), sample_weight)
        fit_stochastic(self, trainer, self._objective, rows, validation, self._schedule, random_state, incremental)

    def _validation_score(self, X, y, sample_weight) -> float:
        """scikit-learn's ``_score_with_function``: NaN when an output is not finite."""
        outputs = self._outputs(X)
        if not np.all(np.isfinite(outputs)):
            return np.nan
        return float(self._score_function(y, self._predictions(outputs), sample_weight=sample_weight))

    def _outputs(self, X) -> np.ndarray:
        """scikit-learn's network outputs (probabilities or values) for validated ``X``, on the host, in the
        model's dtype (float32 or float64: half precisions keep float32 master weights)."""
        model = self.current_model()  # first: rebuilding an unpickled estimator restores its trainer
        trainer = self.__dict__.get("_trainer") or self._new_trainer()
        logits = to_host(trainer.predict(X if not isinstance(X, np.ndarray) else X.astype(model.dtype, copy=False)))
        return self._objective.outputs(np.asarray(logits, dtype=model.dtype))

    def _checked_outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        return self._outputs(validate_data(self, X, reset=False))  # numeric, as scikit-learn's predict

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


@_documented(attributes="""    classes_ : ndarray of shape (n_classes,)
        Class labels (for multilabel targets, ``0 .. n_labels - 1``).
""", examples='''
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from xpnet.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=30, random_state=0).fit(X / 16, y)
    >>> clf.n_layers_, clf.n_outputs_, clf.out_activation_
    (3, 10, 'softmax')
''')
class MLPClassifier(ClassifierMixin, _MLPBase):
    """Multi-layer perceptron classifier: ``sklearn.neural_network.MLPClassifier``, trained by xpnet.

    The same parameters, meanings, fitted attributes and warnings as scikit-learn's (``solver`` 'sgd'
    and 'adam'; 'lbfgs' is not offered), plus xpnet's ``device``, ``dtype``, ``precision`` and
    ``dropout``.  Multiclass targets train a softmax output with the cross-entropy; binary and
    multilabel (indicator matrix) targets one logistic output per label with the binary log-loss.
    With the default float64 and the same ``random_state`` it trains to scikit-learn's weights (tested
    to 1e-9); the forward and backward passes and the updates run in xpnet's fused kernels, on the CPU
    or an NVIDIA GPU.
    """

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels, or a label indicator matrix (multilabel).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights: each batch's loss is ``sum w_i l_i / sum w_i``.

        Returns
        -------
        self : object
            The trained estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            All classes of all calls; required on the first call (also for multilabel targets, as in
            scikit-learn, where the labels come from ``y``).

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()  # before classes_ is set, as scikit-learn's
        if getattr(self, "classes_", None) is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None and getattr(self, "classes_", None) is not None:
            if not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                                 f"{self.classes_!r}")
        elif classes is not None:  # the first call
            self.classes_ = unique_labels(classes)
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        fresh = not hasattr(self, "_label_binarizer") or (not self.warm_start and not incremental)
        if fresh:
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        Y = self._label_binarizer.transform(y).astype(bool)
        if hasattr(self, "coefs_") and not fresh and self.out_activation_ == "softmax" \
                and Y.shape[1] != len(self.classes_):
            Y = np.asarray(y).reshape(-1, 1) == self.classes_  # a two-class softmax (pickled by an older xpnet)
        return X, Y

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _label_space(self, Y: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(Y)

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "softmax":  # scikit-learn's inverse_transform of probabilities: the argmax
            return self.classes_[np.argmax(outputs, axis=1)]
        return self._label_binarizer.inverse_transform(outputs.ravel() if self.n_outputs_ == 1 else outputs)

    _score_function = staticmethod(accuracy_score)

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        return self._predictions(self._checked_outputs(X))

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The probability of each class (in the order of ``classes_``), or of each label (multilabel).
        """
        outputs = self._checked_outputs(X)
        if self.n_outputs_ == 1:
            return np.vstack([1 - outputs.ravel(), outputs.ravel()]).T
        return outputs

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


@_documented(params="""
    loss : {'squared_error'}, default='squared_error'
        scikit-learn's half squared error; its 'poisson' is not offered yet.""")
class MLPRegressor(RegressorMixin, _MLPBase):
    """Multi-layer perceptron regressor: ``sklearn.neural_network.MLPRegressor``, trained by xpnet.

    The same parameters, meanings, fitted attributes and warnings as scikit-learn's (``solver`` 'sgd'
    and 'adam'; 'lbfgs' is not offered; ``loss='squared_error'``, scikit-learn's half squared error),
    plus xpnet's ``device``, ``dtype``, ``precision`` and ``dropout``.  One identity output per target.
    With the default float64 and the same ``random_state`` it trains to scikit-learn's weights (tested
    to 1e-9); the passes and updates run in xpnet's fused kernels, on the CPU or an NVIDIA GPU.
    """

    _parameter_constraints: ClassVar[dict] = {**_MLPBase._parameter_constraints,
                                              "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, device="cpu", dtype=None,
                 precision="fp32", dropout=0.0):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         device=device, dtype=dtype, precision=precision, dropout=dropout)
        self.loss = loss

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights: each batch's loss is ``sum w_i l_i / sum w_i``.

        Returns
        -------
        self : object
            The trained estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The trained estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _check_params(self, incremental: bool) -> list[int]:
        hidden = super()._check_params(incremental)
        if self.loss != "squared_error":
            raise ValueError(f"loss={self.loss!r} is not offered by xpnet's MLPRegressor yet: use "
                             "loss='squared_error'.")
        return hidden

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32),
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _out_activation(self) -> str:
        return "identity"

    def _label_space(self, Y: np.ndarray) -> np.ndarray:
        return Y

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    _score_function = staticmethod(r2_score)

    def predict(self, X):
        """Predict using the multi-layer perceptron model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        return self._predictions(self._checked_outputs(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
