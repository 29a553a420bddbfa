import pytest
import torch
from torch.func import jvp

from fmlab.models import MLP, FlowMapModel, Parametrised, build_model
from fmlab.paths import sample_path


def test_mlp_shapes_and_scalar_time():
    net = MLP(dim=3, hidden=32, depth=2)
    x = torch.randn(5, 3)
    assert net(x, torch.rand(5)).shape == (5, 3)
    assert torch.allclose(net(x, torch.tensor(0.3)), net(x, torch.full((5,), 0.3)))
    two = MLP(dim=2, hidden=16, depth=2, time_inputs=2)
    assert two(torch.randn(4, 2), torch.rand(4), torch.rand(4)).shape == (4, 2)


def test_time_embedding_differentiable_in_t_forward_mode():
    net = MLP(dim=2, hidden=32, depth=2).double()
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    _, dv_dt = jvp(lambda tt: net(x, tt), (t,), (torch.ones_like(t),))
    h = 1e-6
    fd = (net(x, t + h) - net(x, t - h)) / (2 * h)
    assert torch.allclose(dv_dt, fd, atol=1e-6)
    assert dv_dt.abs().sum() > 0


def test_t_delta_conditioning_sees_interval():
    net = MLP(dim=2, hidden=16, depth=2, time_inputs=2, time_condition="t_delta")
    x, s, t = torch.randn(3, 2), torch.rand(3) * 0.5, torch.rand(3) * 0.5 + 0.5
    # (t, t - s) conditioning: equal to a one-call on the embedded pair
    emb = torch.cat([x, net.embed(t), net.embed(t - s)], dim=-1)
    assert torch.allclose(net(x, s, t), net.net(emb))


@pytest.mark.parametrize("prediction", ["velocity", "x1", "eps"])
def test_parametrisations_return_velocity(prediction):
    torch.manual_seed(0)
    model = build_model(dim=2, prediction=prediction, hidden=16, depth=2).double()
    model.sigma_min = 0.0  # no regularisation away from the endpoints
    x0, x1, t = torch.randn(8, 2).double(), torch.randn(8, 2).double(), torch.rand(8).double() * 0.8 + 0.1
    ps = sample_path(x0, x1, t)
    head = model.predict(ps.x_t, t)
    v = model(ps.x_t, t)
    if prediction == "velocity":
        assert torch.allclose(v, head)
    elif prediction == "x1":  # v = (x1_hat - x_t) / (1 - t)
        assert torch.allclose(v, (head - ps.x_t) / (1 - t[:, None]), atol=1e-10)
    else:  # v = (x_t - eps_hat) / t
        assert torch.allclose(v, (ps.x_t - head) / t[:, None], atol=1e-10)


def test_flow_map_model_diagonal_and_map():
    model = build_model(dim=2, time_inputs=2, hidden=16, depth=2)
    assert isinstance(model, FlowMapModel)
    x, s, t = torch.randn(4, 2), torch.rand(4) * 0.5, torch.rand(4) * 0.5 + 0.5
    assert torch.allclose(model(x, t), model(x, t, t))
    assert torch.allclose(model.flow_map(x, s, t), x + (t - s)[:, None] * model(x, s, t))
    assert torch.allclose(model.flow_map(x, s, s), x)


def test_build_model_config_round_trip():
    model = build_model(dim=2, prediction="x1", hidden=8, depth=1, time_freq_max=7.0)
    again = build_model(**model.config)
    assert isinstance(again, Parametrised) and again.prediction == "x1"
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]
    assert float(again.backbone.embed.freqs.max()) == pytest.approx(7.0)  # a buffer not saved: the config carries it


def test_checkpoints_without_time_freq_max_rebuild_the_old_embedding(tmp_path):
    from fmlab.runs import load_run
    from fmlab.train import LEGACY_TIME_FREQ_MAX, TrainConfig, Trainer

    trainer = Trainer(TrainConfig(steps=1, hidden=8, depth=1, batch_size=8, threads=1, out=str(tmp_path)),
                      model=build_model(hidden=8, depth=1, time_freq_max=LEGACY_TIME_FREQ_MAX))
    trainer.fit(progress=False)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    del state["model_config"]["time_freq_max"]  # as written before the key existed
    torch.save(state, tmp_path / "ckpt.pt")
    model, _ = load_run(tmp_path, device="cpu")
    assert float(model.backbone.embed.freqs.max()) == pytest.approx(LEGACY_TIME_FREQ_MAX)
    assert float(build_model().backbone.embed.freqs.max()) == pytest.approx(10.0)  # new models: the new default


def test_bad_input():
    with pytest.raises(ValueError, match="prediction"):
        build_model(prediction="score")
    with pytest.raises(ValueError, match="time_inputs"):
        MLP(time_inputs=3)
    with pytest.raises(ValueError, match="0 < w_min <= w_max"):
        MLP(time_freq_max=0.5)
    with pytest.raises(ValueError, match="time input"):
        MLP(dim=2)(torch.randn(2, 2), torch.rand(2), torch.rand(2))
