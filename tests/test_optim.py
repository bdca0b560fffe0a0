"""Optimizers, schedules and clipping against torch.optim, step for step, in float64."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet import optim
from xpnet.backend import resolve_backend
from xpnet.kernels import ops_for

torch = pytest.importorskip("torch")

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-8)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.01, momentum=0.5, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_torch(name, kwargs):
    r = np.random.default_rng(0)
    p0 = r.normal(size=257)
    grads = [r.normal(size=257) * (1 + 3 * (t % 3)) for t in range(8)]

    ops = ops_for(resolve_backend(), "float64")
    ours = getattr(optim, name)(**kwargs)
    params = p0.copy()
    tp = torch.tensor(p0.copy(), requires_grad=True)
    theirs = getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        buf = g.copy()
        ours.step(params, buf, ops)
        tp.grad = torch.tensor(g.copy())
        theirs.step()
        np.testing.assert_allclose(params, tp.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(buf, grads[-1])  # the gradient buffer is not modified


def test_torch_defaults_are_ours():
    import inspect

    for name in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW"):
        ours = inspect.signature(getattr(optim, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        for pname, param in ours.items():
            assert pname in theirs, f"{name}.{pname} is not a torch.optim parameter"
            assert param.default == theirs[pname].default, f"{name}.{pname} default differs from torch"


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_training_matches_torch_end_to_end(opt_name):
    """Five full train_steps of an MLP equal torch's model + optimizer to 1e-9."""
    from test_gradients import _problem, torch_forward, torch_loss

    kwargs = dict(lr=0.05, momentum=0.9) if opt_name == "SGD" else dict(lr=0.01, weight_decay=1e-3)
    model = xpnet.MLP([5, 7, 6, 3], activation="tanh", dtype="float64", seed=4)
    trainer = xpnet.Trainer(model, optimizer=getattr(optim, opt_name)(**kwargs), clip_grad_norm=1.0)
    X, y = _problem("cross_entropy", seed=2)
    _, params = torch_forward(model.get_weights(), torch.tensor(X), "tanh")
    t_opt = getattr(torch.optim, opt_name)(params, **kwargs)
    for _ in range(5):
        trainer.train_step(X, y)
        t_opt.zero_grad()
        a = torch.tensor(X)
        for i in range(0, len(params), 2):
            a = a @ params[i] + params[i + 1]
            if i < len(params) - 2:
                a = torch.tanh(a)
        torch_loss("cross_entropy", a, torch.tensor(y)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t_opt.step()
    ours = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in model.get_weights()])
    theirs = np.concatenate([p.detach().numpy().ravel() for p in params])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    ops = ops_for(resolve_backend(), "float64")
    g = np.random.default_rng(1).normal(size=100)
    norm = optim.clip_grad_norm_(g_ours := g.copy(), max_norm, ops)
    t = torch.zeros(100, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor(g.copy())
    t_norm = torch.nn.utils.clip_grad_norm_([t], max_norm)
    assert float(norm) == pytest.approx(t_norm.item(), rel=1e-12)
    np.testing.assert_allclose(g_ours, t.grad.numpy(), rtol=1e-12)


def _torch_opt(lr=0.1):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("LinearLR", dict(start_factor=0.1, end_factor=1.0, total_iters=4)),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedule_matches_torch(name, kwargs):
    ours_opt = optim.SGD(lr=0.1)
    ours = getattr(optim, name)(ours_opt, **kwargs)
    t_opt = _torch_opt()
    theirs = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    for _ in range(12):
        assert ours_opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)
        ours.step()
        t_opt.step()
        theirs.step()


def test_warmup_then_cosine_matches_torch_sequential():
    ours_opt = optim.SGD(lr=0.1)
    warm = optim.LinearLR(ours_opt, start_factor=0.1, total_iters=3)
    cos = optim.CosineAnnealingLR(ours_opt, T_max=6)
    ours = optim.SequentialLR(ours_opt, [warm, cos], milestones=[3])
    t_opt = _torch_opt()
    t_warm = torch.optim.lr_scheduler.LinearLR(t_opt, start_factor=0.1, total_iters=3)
    t_cos = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=6)
    theirs = torch.optim.lr_scheduler.SequentialLR(t_opt, [t_warm, t_cos], milestones=[3])
    for _ in range(9):
        assert ours_opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        ours.step()
        t_opt.step()
        theirs.step()


@pytest.mark.parametrize("bad", [
    lambda: optim.SGD(lr=-1), lambda: optim.Adam(betas=(1.2, 0.9)), lambda: optim.SGD(nesterov=True),
    lambda: optim.RMSprop(alpha=2), lambda: optim.Adam(eps=float("nan")), lambda: optim.StepLR(optim.SGD(), 0),
])
def test_bad_hyperparameters_raise(bad):
    with pytest.raises(ValueError, match="invalid|needs|must"):
        bad()


def test_state_dict_round_trip():
    ops = ops_for(resolve_backend(), "float64")
    a, b = optim.Adam(lr=0.01), optim.Adam(lr=0.01)
    p, q = np.ones(10), np.ones(10)
    g = np.linspace(-1, 1, 10)
    a.step(p, g, ops)
    b.load_state_dict(a.state_dict())
    q[...] = p
    a.step(p, g, ops)
    b.step(q, g, ops)
    np.testing.assert_array_equal(p, q)
