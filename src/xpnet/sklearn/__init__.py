"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained by xpnet: ``xpnet.sklearn``.

Drop-in replacements for ``sklearn.neural_network``'s estimators of the same names: scikit-learn's
parameter names and meanings (``solver`` 'adam' / 'sgd' with its update rules, ``learning_rate``
'constant' / 'invscaling' / 'adaptive', ``alpha`` as its L2 penalty, ``early_stopping``, ...), its
fitted attributes (``coefs_``, ``intercepts_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
``n_iter_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``classes_``), ``ConvergenceWarning``,
``sample_weight`` in ``fit`` and ``partial_fit``, multilabel targets -- plus xpnet's ``device``,
``dtype``, ``precision`` and ``dropout``.  With the same ``random_state`` they draw the same initial
weights, validation split and shuffles as scikit-learn, and (float64) train to its weights.  They work
in ``Pipeline`` and ``GridSearchCV``, pass ``check_estimator``, and pickle with their optimizer state
(a pickled estimator's ``partial_fit`` continues exactly).  Requires scikit-learn (``xpnet[examples]``).

Modules: :mod:`~xpnet.sklearn.estimators` (the estimators), :mod:`~xpnet.sklearn.stochastic` (scikit-learn's
training loop on an :class:`xpnet.Trainer`), :mod:`~xpnet.sklearn.solvers` (its SGD and Adam, learning
rates), :mod:`~xpnet.sklearn.objective` (its loss scales and L2 penalty on xpnet's losses).
"""

from .estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
