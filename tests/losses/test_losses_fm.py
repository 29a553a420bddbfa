import pytest
import torch

from fmlab.losses import Batch, get_loss, list_losses, one_time_batch
from fmlab.models import build_model
from fmlab.paths import sample_path


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) + 2
    return one_time_batch(x0, x1, g)


def test_registry_names_and_metadata():
    names = {s.name for s in list_losses()}
    assert {"cfm", "x1_prediction", "reflow"} <= names
    for spec in list_losses():
        assert spec.family and spec.setting and spec.paper and spec.convention
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("nope")
    with pytest.raises(ValueError, match="no setting"):
        get_loss("cfm").settings({"weightng": "none"})


def test_cfm_equals_hand_computation_and_is_reproducible():
    torch.manual_seed(0)
    model = build_model(hidden=16, depth=2)
    batch = _batch()
    loss, diag = get_loss("cfm").fn(model, batch)
    ps = sample_path(batch.x0, batch.x1, batch.t)
    manual = ((model(ps.x_t, batch.t) - (batch.x1 - batch.x0)) ** 2).mean()
    assert torch.allclose(loss, manual)
    assert diag["n_forward"] == 1 and diag["n_jvp"] == 0
    assert torch.equal(loss, get_loss("cfm").fn(model, _batch())[0])


def test_cfm_with_exact_marginal_velocity_reaches_the_conditional_variance_floor():
    # 1D data at +-3 (Dirac mixture): the optimum v* = E[x1 - x0 | x_t]; loss(v*) = E Var(x1 - x0 | x_t) > 0
    class Exact(torch.nn.Module):
        def forward(self, x, t):
            tt = t[:, None]
            logits = torch.stack([-(x - tt * m) ** 2 / (2 * (1 - tt) ** 2) for m in (-3.0, 3.0)], -1)
            w = torch.softmax(logits, -1)
            x1_hat = (w * torch.tensor([-3.0, 3.0])).sum(-1)
            return (x1_hat - x) / (1 - tt)

    g = torch.Generator().manual_seed(1)
    n = 200_000
    x1 = torch.where(torch.rand(n, 1, generator=g) < 0.5, -3.0, 3.0).double()
    x0 = torch.randn(n, 1, generator=g).double()
    t = torch.rand(n, generator=g).double() * 0.98
    batch = Batch(x0=x0, x1=x1, t=t)
    exact_loss, _ = get_loss("cfm").fn(Exact(), batch)
    zero_loss, _ = get_loss("cfm").fn(lambda x, t: torch.zeros_like(x), batch)
    assert exact_loss < 0.5 * zero_loss  # the marginal field is far better than a wrong one ...
    # ... and any perturbation increases the loss (stationary minimum)
    bumped, _ = get_loss("cfm").fn(lambda x, t: Exact()(x, t) + 0.1, batch)
    assert bumped > exact_loss + 0.009


def test_x1_prediction_loss_matches_velocity_loss_through_an_x1_head():
    torch.manual_seed(0)
    model = build_model(prediction="x1", hidden=16, depth=2).double()
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(32, 2, generator=g).double(), torch.randn(32, 2, generator=g).double()
    batch = Batch(x0=x0, x1=x1, t=torch.rand(32, generator=g).double() * 0.9)
    loss, diag = get_loss("x1_prediction").fn(model, batch, eps=0.0)
    ps = sample_path(x0, x1, batch.t)
    v_hat = (model.predict(ps.x_t, batch.t) - ps.x_t) / (1 - batch.t[:, None])
    assert torch.allclose(loss, ((v_hat - (x1 - x0)) ** 2).mean())
    assert "x1_mse" in diag


def test_reflow_batch_uses_teacher_pairs():
    teacher = lambda x, t: torch.ones_like(x)  # noqa: E731  v = 1: x1 = x0 + 1
    spec = get_loss("reflow")
    x0 = torch.randn(10, 2)
    batch = spec.make_batch(x0, torch.zeros(10, 2), torch.Generator().manual_seed(0),
                            **spec.settings({"teacher": teacher, "teacher_steps": 4}))
    assert torch.allclose(batch.x1, x0 + 1, atol=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        spec.make_batch(x0, x0, None, **spec.settings())


def test_batch_validation():
    with pytest.raises(ValueError, match="t must have shape"):
        Batch(x0=torch.zeros(3, 2), x1=torch.zeros(3, 2), t=torch.rand(2))
    with pytest.raises(ValueError, match="t must lie in"):
        Batch(x0=torch.zeros(2, 2), x1=torch.zeros(2, 2), t=torch.tensor([0.1, 2.0]))
