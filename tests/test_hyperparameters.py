"""Every numeric argument of every public constructor is checked (type, finite, range) before
any state changes, with one message style: ``"{name}={value!r} is invalid: use ..."``."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnet
from xpnet import data, optim
from xpnet.train.callbacks import EarlyStopping, ProgressBar, TerminateOnNaN
from xpnet.train.precision import GradScaler, check_precision
from xpnet.validation import HyperparameterError, check_int, check_real

NAN, INF = float("nan"), float("inf")


# -- factories: each builds one public object from keyword arguments over sensible defaults -----
def _sched(cls, **required):
    return lambda **kw: cls(**{"optimizer": optim.SGD(lr=0.1), **required, **kw})


def _sequential(**kw):
    opt = optim.SGD(lr=0.1)
    args = dict(schedulers=[optim.LinearLR(opt), optim.ExponentialLR(opt, 0.9)], milestones=[3])
    return optim.SequentialLR(opt, **{**args, **kw})


def _trainer(**kw):
    return xpnet.Trainer(xpnet.MLP([4, 3]), **kw)


FACTORIES = {
    "SGD": optim.SGD, "Adagrad": optim.Adagrad, "RMSprop": optim.RMSprop, "Adam": optim.Adam, "AdamW": optim.AdamW,
    "StepLR": _sched(optim.StepLR, step_size=2), "ExponentialLR": _sched(optim.ExponentialLR, gamma=0.9),
    "CosineAnnealingLR": _sched(optim.CosineAnnealingLR, T_max=10), "LinearLR": _sched(optim.LinearLR),
    "SequentialLR": _sequential, "TerminateOnNaN": TerminateOnNaN, "EarlyStopping": EarlyStopping,
    "ProgressBar": ProgressBar, "GradScaler": GradScaler, "MLP": lambda **kw: xpnet.MLP(**{"sizes": [4, 3], **kw}),
    "Trainer": _trainer,
    "train_test_split": lambda **kw: data.train_test_split(np.zeros((8, 2)), np.arange(8) % 2, **kw),
    "split": lambda **kw: data.split(np.zeros((8, 2)), np.arange(8) % 2, **kw),
    "synthetic": lambda **kw: data.synthetic(**{"n_samples": 10, **kw}),
}

# bad values per kind of argument; every one must be refused with "{name}={value!r} is invalid"
_NOT_A_NUMBER = ["0.1", True, None, [0.1]]
BAD = {
    "real": [NAN, INF, -INF, *_NOT_A_NUMBER],
    "nonneg": [NAN, INF, -INF, -1, -1e-12, *_NOT_A_NUMBER],
    "positive": [NAN, INF, -INF, 0, 0.0, -2, *_NOT_A_NUMBER],
    "unit[]": [NAN, INF, -0.1, 1.01, *_NOT_A_NUMBER],
    "unit[)": [NAN, INF, -0.1, 1, 1.0, *_NOT_A_NUMBER],
    "unit(]": [NAN, INF, 0, 0.0, 1.5, *_NOT_A_NUMBER],
    "unit()": [NAN, INF, 0, 1, -0.5, *_NOT_A_NUMBER],
    ">1": [NAN, INF, 1, 1.0, 0.5, *_NOT_A_NUMBER],
    "int>=1": [0, -1, 1.5, 2.0, NAN, "2", True, None],
    "int>=0": [-1, 1.5, NAN, "2", True, None],
    "int>=1|None": [0, -1, 1.5, NAN, "2", True],
    "int>=0|None": [-1, 1.5, NAN, "2", True],
    "positive|None": [NAN, INF, 0, -1.0, "1", True],
    "bool": [1, 0, "yes", None, 1.0],
    "str": [5, None, "", ["loss"]],
}

ARGS = [  # (factory, argument, kind)
    *[(o, "lr", "nonneg") for o in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")],
    ("SGD", "momentum", "nonneg"), ("SGD", "dampening", "real"), ("SGD", "weight_decay", "nonneg"),
    ("SGD", "nesterov", "bool"),
    ("Adagrad", "lr_decay", "nonneg"), ("Adagrad", "weight_decay", "nonneg"),
    ("Adagrad", "initial_accumulator_value", "nonneg"), ("Adagrad", "eps", "nonneg"),
    ("RMSprop", "alpha", "unit[]"), ("RMSprop", "eps", "nonneg"), ("RMSprop", "weight_decay", "nonneg"),
    ("RMSprop", "momentum", "nonneg"), ("RMSprop", "centered", "bool"),
    *[(o, a, k) for o in ("Adam", "AdamW") for a, k in (("eps", "nonneg"), ("weight_decay", "nonneg"),
                                                         ("amsgrad", "bool"))],
    ("StepLR", "step_size", "int>=1"), ("StepLR", "gamma", "positive"), ("ExponentialLR", "gamma", "positive"),
    ("CosineAnnealingLR", "T_max", "int>=1"), ("CosineAnnealingLR", "eta_min", "nonneg"),
    ("LinearLR", "start_factor", "unit(]"), ("LinearLR", "end_factor", "unit[]"), ("LinearLR", "total_iters", "int>=1"),
    ("TerminateOnNaN", "check_every", "int>=1|None"),
    ("EarlyStopping", "patience", "int>=0"), ("EarlyStopping", "min_delta", "real"),
    ("EarlyStopping", "restore_best_weights", "bool"), ("EarlyStopping", "monitor", "str"),
    ("ProgressBar", "refresh_s", "nonneg"),
    ("GradScaler", "init_scale", "positive"), ("GradScaler", "growth_factor", ">1"),
    ("GradScaler", "backoff_factor", "unit()"), ("GradScaler", "growth_interval", "int>=1"),
    ("MLP", "seed", "int>=0|None"),
    ("Trainer", "clip_grad_norm", "positive|None"),
    ("train_test_split", "test_fraction", "unit()"), ("train_test_split", "seed", "int>=0"),
    ("split", "test_fraction", "unit[)"), ("split", "val_fraction", "unit[)"), ("split", "seed", "int>=0"),
    ("split", "stratify", "bool"),
    ("synthetic", "n_samples", "int>=1"), ("synthetic", "n_features", "int>=1"), ("synthetic", "n_classes", "int>=1"),
    ("synthetic", "seed", "int>=0"), ("synthetic", "regression", "bool"),
]

TABLE = [pytest.param(f, arg, value, id=f"{f}-{arg}={value!r}") for f, arg, kind in ARGS for value in BAD[kind]]


@pytest.mark.parametrize("factory,arg,value", TABLE)
def test_bad_value_is_refused_naming_the_argument(factory, arg, value):
    with pytest.raises(ValueError) as info:
        FACTORIES[factory](**{arg: value})
    assert f"{arg}={value!r} is invalid: use " in str(info.value)


# (factory, kwargs, expected substring) for arguments whose message names an element or a rule
SPECIAL = [
    ("SGD", dict(nesterov=True), "nesterov=True needs momentum > 0 and dampening = 0"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov=True needs momentum > 0"),
    ("Adam", dict(betas=(1.0, 0.999)), "betas[0]=1.0 is invalid: use a finite number in [0, 1)"),
    ("Adam", dict(betas=(0.9, NAN)), "betas[1]=nan is invalid"),
    ("AdamW", dict(betas=(0.9, -0.1)), "betas[1]=-0.1 is invalid"),
    ("Adam", dict(betas=0.9), "betas=0.9 is invalid: use a pair (beta1, beta2)"),
    ("Adam", dict(betas=(0.9, 0.99, 0.9)), "betas=(0.9, 0.99, 0.9) is invalid"),
    ("Adam", dict(betas="ab"), "betas='ab' is invalid"),
    ("Adam", dict(betas=(True, 0.9)), "betas[0]=True is invalid"),
    ("StepLR", dict(optimizer="sgd"), "optimizer='sgd' is invalid: pass an xpnet.optim optimizer"),
    ("SequentialLR", dict(schedulers=[]), "schedulers=[] is invalid: pass at least one scheduler"),
    ("SequentialLR", dict(schedulers=["linear"], milestones=[]), "schedulers[0]='linear' is invalid"),
    ("SequentialLR", dict(milestones=[0]), "milestones[0]=0 is invalid: use a positive integer"),
    ("SequentialLR", dict(milestones=[2.5]), "milestones[0]=2.5 is invalid"),
    ("SequentialLR", dict(milestones=[3, 5]), "milestones=[3, 5] is invalid: use 1 strictly increasing"),
    ("SequentialLR", dict(milestones=3), "milestones=3 is invalid"),
    ("EarlyStopping", dict(mode="best"), "mode='best' is unknown: use one of auto, min, max"),
    ("MLP", dict(sizes=[4, True]), "sizes=[4, True] is invalid: give at least two positive integers"),
    ("MLP", dict(sizes=[4.0, 2]), "sizes=[4.0, 2] is invalid"),
    ("MLP", dict(sizes="42"), "sizes='42' is invalid"),
    ("MLP", dict(sizes=[4, -1]), "sizes=[4, -1] is invalid"),
    ("MLP", dict(sizes=[10**6, 10**6, 10**6]), "GiB for weights, gradients and optimizer state, more than this"),
    ("MLP", dict(dtype=5), "dtype=5 is not a floating dtype"),
    ("Trainer", dict(metrics="accuracy"), "metrics='accuracy' is invalid: use a tuple of names"),
    ("Trainer", dict(scheduler="step"), "scheduler='step' is invalid: pass an xpnet.optim lr scheduler"),
    ("Trainer", dict(optimizer=5), "optimizer=5 is unknown"),
    ("Trainer", dict(precision=16), "precision=16 is unknown: use one of fp32"),
    ("split", dict(test_fraction=0.5, val_fraction=0.5), "leaves no training samples"),
]


@pytest.mark.parametrize("factory,kwargs,expected", [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in SPECIAL])
def test_special_cases_are_refused_with_a_clear_message(factory, kwargs, expected):
    with pytest.raises((ValueError, TypeError)) as info:
        FACTORIES[factory](**kwargs)
    assert expected in str(info.value)


def test_the_issue_cases():
    with pytest.raises(ValueError, match=r"gamma=nan is invalid: use a finite number > 0"):
        optim.StepLR(optim.SGD(lr=0.1), step_size=2, gamma=NAN)
    with pytest.raises(ValueError, match=r"gamma=-1 is invalid: use a finite number > 0"):
        optim.ExponentialLR(optim.SGD(lr=0.1), gamma=-1)


def test_trainer_refuses_a_model_that_is_not_an_mlp():
    with pytest.raises(ValueError, match="model='mlp' is invalid: pass an xpnet.MLP"):
        xpnet.Trainer("mlp")


def test_errors_are_both_value_and_type_errors():
    """Callers that caught TypeError for a wrong type (e.g. MLP(seed='1')) still do."""
    with pytest.raises(TypeError, match="seed='1' is invalid"):
        xpnet.MLP([4, 2], seed="1")
    assert issubclass(HyperparameterError, ValueError) and issubclass(HyperparameterError, TypeError)


# -- valid values, boundaries included, are still accepted -------------------------------------
VALID = [
    ("SGD", dict(lr=0, momentum=0, dampening=0, weight_decay=0, nesterov=False)),
    ("SGD", dict(lr=np.float32(0.1), momentum=np.float64(0.9), dampening=-0.5, weight_decay=1)),
    ("SGD", dict(momentum=0.9, nesterov=np.bool_(True))),
    ("Adagrad", dict(lr=0, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=0)),
    ("RMSprop", dict(alpha=0, eps=0, weight_decay=0, momentum=0, centered=True)),
    ("RMSprop", dict(alpha=1, momentum=0.9)),
    ("Adam", dict(betas=(0, 0.999), eps=0, weight_decay=0, amsgrad=True)),
    ("Adam", dict(betas=[np.float32(0.5), 0])),
    ("AdamW", dict(betas=np.array([0.9, 0.99]), weight_decay=0)),
    ("StepLR", dict(step_size=np.int64(1), gamma=1e-12)),
    ("StepLR", dict(gamma=2.0)),
    ("ExponentialLR", dict(gamma=np.float32(1.0))),
    ("CosineAnnealingLR", dict(T_max=1, eta_min=0)),
    ("CosineAnnealingLR", dict(eta_min=5.0)),  # above the initial lr: allowed, as in torch
    ("LinearLR", dict(start_factor=1, end_factor=0, total_iters=1)),
    ("SequentialLR", dict(milestones=(np.int64(1),))),
    ("TerminateOnNaN", dict(check_every=None)), ("TerminateOnNaN", dict(check_every=1)),
    ("EarlyStopping", dict(patience=0, min_delta=-0.01, monitor="loss", restore_best_weights=True, mode="min")),
    ("ProgressBar", dict(refresh_s=0)),
    ("GradScaler", dict(init_scale=1e-3, growth_factor=1.0001, backoff_factor=0.999, growth_interval=1)),
    ("MLP", dict(sizes=np.array([4, 1]), seed=None)), ("MLP", dict(sizes=(np.int32(4), 2), seed=np.int64(7))),
    ("Trainer", dict(clip_grad_norm=1e-6, metrics=[])), ("Trainer", dict(clip_grad_norm=np.float32(5))),
    ("train_test_split", dict(test_fraction=0.5, seed=np.int64(3))),
    ("split", dict(test_fraction=0, val_fraction=0.5)),
    ("synthetic", dict(n_samples=1, n_features=1, n_classes=1, seed=0)),
]


@pytest.mark.parametrize("factory,kwargs", [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in VALID])
def test_valid_boundary_values_are_accepted(factory, kwargs):
    FACTORIES[factory](**kwargs)


def test_hyperparameters_are_stored_as_python_scalars():
    opt = optim.Adam(lr=np.float32(0.01), betas=(np.float32(0.5), 0.9))
    assert type(opt.lr) is float and all(type(v) in (float, bool) for v in opt.hparams.values())
    assert type(xpnet.MLP([np.int64(3), 2], seed=np.int64(1)).seed) is int


def test_mlp_seed_none_draws_a_recorded_seed():
    a = xpnet.MLP([3, 2], seed=None)
    b = xpnet.MLP([3, 2], seed=a.seed)
    assert np.array_equal(a.get_weights()[0][0], b.get_weights()[0][0])


# -- nothing changes before a refusal -------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, step_size=0), lambda o: optim.StepLR(o, 2, gamma=NAN),
    lambda o: optim.ExponentialLR(o, gamma=-1), lambda o: optim.CosineAnnealingLR(o, T_max=10, eta_min=-1),
    lambda o: optim.LinearLR(o, start_factor=0), lambda o: optim.LinearLR(o, total_iters=0),
    lambda o: optim.SequentialLR(o, schedulers=[], milestones=[]),
])
def test_a_refused_scheduler_leaves_the_optimizer_untouched(make):
    opt = optim.SGD(lr=0.1)
    with pytest.raises(ValueError):
        make(opt)
    assert opt.lr == 0.1 and not hasattr(opt, "initial_lr")


def test_a_refused_sequential_lr_leaves_the_lr_its_schedulers_set():
    opt = optim.SGD(lr=0.1)
    warmup = optim.LinearLR(opt, start_factor=0.5)
    decay = optim.ExponentialLR(opt, 0.9)
    before = opt.lr, opt.initial_lr
    with pytest.raises(ValueError, match=r"milestones=\[5, 5, 6\] is invalid"):
        optim.SequentialLR(opt, [warmup, decay], milestones=[5, 5, 6])
    other = optim.SGD(lr=0.2)
    with pytest.raises(ValueError, match=r"schedulers\[1\] was built on a different optimizer"):
        optim.SequentialLR(opt, [warmup, optim.ExponentialLR(other, 0.9)], milestones=[5])
    assert (opt.lr, opt.initial_lr) == before


def test_assigning_a_bad_lr_is_refused_and_keeps_the_old_one():
    opt = optim.Adam(lr=0.01)
    for bad in (NAN, -1.0, INF, "0.1"):
        with pytest.raises(ValueError, match="lr=.* is invalid"):
            opt.lr = bad
    assert opt.lr == 0.01


def test_a_refused_trainer_leaves_model_and_optimizer_untouched():
    model = xpnet.MLP([4, 3])
    params, ops = model.copy_params(), model.ops
    opt = optim.SGD(lr=0.1)
    for kwargs in (dict(clip_grad_norm=NAN), dict(clip_grad_norm=INF), dict(metrics="accuracy"),
                   dict(precision="fp16", clip_grad_norm=-1)):
        with pytest.raises(ValueError):
            xpnet.Trainer(model, optimizer=opt, **kwargs)
    assert np.array_equal(model.params, params) and model.ops is ops
    assert opt.lr == 0.1 and opt.state == {} and not hasattr(opt, "initial_lr")


@pytest.mark.parametrize("corrupt,expected", [
    (lambda s: s["hparams"].update(beta1=NAN), "betas[0]=nan is invalid"),
    (lambda s: s["hparams"].update(eps=-1.0), "eps=-1.0 is invalid"),
    (lambda s: s["hparams"].update(amsgrad="no"), "amsgrad='no' is invalid"),
    (lambda s: s["hparams"].pop("eps"), "state_dict['hparams'] has keys"),
    (lambda s: s["hparams"].update(momentum=0.9), "state_dict['hparams'] has keys"),
    (lambda s: s.update(lr=NAN), "lr=nan is invalid"),
    (lambda s: s.update(step_count=-1), "state_dict['step_count']=-1 is invalid"),
    (lambda s: s.pop("lr"), "state_dict lacks lr"),
    (lambda s: s.update(state={"exp_avg": np.zeros(3)}), "state_dict['state'] has buffers ['exp_avg']"),
    (lambda s: s.update(type="SGD"), "state_dict is for 'SGD', not Adam"),
])
def test_corrupt_optimizer_state_is_refused_before_loading(corrupt, expected):
    saved = optim.Adam(lr=0.5, betas=(0.8, 0.9)).state_dict()
    corrupt(saved)
    target = optim.Adam(lr=0.01)
    with pytest.raises(ValueError) as info:
        target.load_state_dict(saved)
    assert expected in str(info.value)
    assert target.lr == 0.01 and target.hparams["beta1"] == 0.9 and target.step_count == 0


def test_a_valid_optimizer_state_still_loads():
    saved = optim.SGD(lr=0.5, momentum=0.9, nesterov=True).state_dict()
    target = optim.SGD()
    target.load_state_dict(saved)
    assert target.lr == 0.5 and target.hparams["nesterov"] is True and target.state_names == ("momentum_buffer",)


def test_mlp_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"sizes=\[100000, 100000, 100000\] is invalid: 20,000,200,000 parameters"):
        xpnet.MLP([100_000, 100_000, 100_000], dtype="float64")


def test_check_precision_is_checked_before_the_model_is_read():
    with pytest.raises(ValueError, match=r"precision=\['fp16'\] is unknown"):
        check_precision(["fp16"], model=None)


# -- scikit-learn estimators: validated in fit, not in __init__ (sklearn's convention) ------------
@pytest.mark.parametrize("kwargs,expected", [
    (dict(alpha=-1.0), "'alpha' parameter"), (dict(alpha=NAN), "'alpha' parameter"),
    (dict(learning_rate_init=0.0), "'learning_rate_init' parameter"), (dict(max_iter=0), "'max_iter' parameter"),
    (dict(batch_size="big"), "'batch_size' parameter"), (dict(batch_size=0), "'batch_size' parameter"),
    (dict(tol=-1e-4), "'tol' parameter"), (dict(n_iter_no_change=0), "'n_iter_no_change' parameter"),
    (dict(validation_fraction=1.0), "'validation_fraction' parameter"),
    (dict(validation_fraction=-0.1), "'validation_fraction' parameter"),
    (dict(solver="lbfgs"), "solver='lbfgs' is not offered by xpnet"), (dict(solver="newton"), "'solver' parameter"),
    (dict(activation="swish"), "'activation' parameter"), (dict(learning_rate="cyclic"), "'learning_rate' parameter"),
    (dict(power_t=-0.5), "'power_t' parameter"), (dict(momentum=1.5), "'momentum' parameter"),
    (dict(nesterovs_momentum="no"), "'nesterovs_momentum' parameter"), (dict(beta_1=1.0), "'beta_1' parameter"),
    (dict(beta_2=-0.1), "'beta_2' parameter"), (dict(epsilon=0.0), "'epsilon' parameter"),
    (dict(max_fun=0), "'max_fun' parameter"), (dict(precision="fp8"), "'precision' parameter"),
    (dict(shuffle="yes"), "'shuffle' parameter"), (dict(dtype="int32"), "'dtype' parameter"),
    (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes[1]=0 is invalid: use a positive integer"),
    (dict(hidden_layer_sizes=(10, 2.5)), "hidden_layer_sizes[1]=2.5 is invalid"),
    (dict(hidden_layer_sizes=0), "'hidden_layer_sizes' parameter"),
])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_sklearn_estimators_validate_in_fit(kwargs, expected, method):
    from xpnet.sklearn import MLPClassifier, MLPRegressor

    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    for est, extra in ((MLPClassifier(**kwargs), dict(classes=[0, 1])), (MLPRegressor(**kwargs), {})):
        with pytest.raises(ValueError) as info:
            getattr(est, method)(X, y, **(extra if method == "partial_fit" else {}))
        assert expected in str(info.value)
        assert not hasattr(est, "coefs_")


# -- properties over all floats --------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_is_accepted_exactly_when_in_range(x):
    cases = [  # (build, accepted?)
        (lambda: optim.SGD(momentum=x), math.isfinite(x) and x >= 0),
        (lambda: optim.Adam(betas=(x, 0.999)), math.isfinite(x) and 0 <= x < 1),
        (lambda: optim.ExponentialLR(optim.SGD(lr=0.1), gamma=x), math.isfinite(x) and x > 0),
        (lambda: GradScaler(backoff_factor=x), math.isfinite(x) and 0 < x < 1),
    ]
    for build, ok in cases:
        if ok:
            build()
        else:
            with pytest.raises(ValueError, match="is invalid"):
                build()


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10), st.floats(0, 10), st.booleans(),
       st.booleans())
def test_check_real_matches_its_interval(x, low, width, low_open, high_open):
    high = low + width
    inside = math.isfinite(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if inside:
        assert check_real("v", x, low=low, high=high, low_open=low_open, high_open=high_open) == x
    else:
        with pytest.raises(ValueError, match=r"v=.* is invalid: use a finite number in [\[(]"):
            check_real("v", x, low=low, high=high, low_open=low_open, high_open=high_open)


@given(st.integers(-(10**30), 10**30))
def test_check_int_accepts_python_and_numpy_integers_in_range(n):
    if n >= 1:
        assert check_int("n", n, low=1) == n
    else:
        with pytest.raises(ValueError, match=f"n={n} is invalid: use a positive integer"):
            check_int("n", n, low=1)
    if -(2**63) <= n < 2**63:
        assert check_int("n", np.int64(n)) == n


def test_huge_integers_are_not_finite_floats():
    with pytest.raises(ValueError, match="lr=1000.* is invalid"):
        optim.SGD(lr=10**400)
