"""Class-conditional training: labels reach the loss with seeded label dropout, unconditional runs are untouched by
labelled data, exact resume holds with dropout, bad settings fail before training, and a short run learns classes."""

import json

import pytest
import torch

from fmlab.data.labelled import labelled_2d
from fmlab.losses import get_loss
from fmlab.runs import load_run, sample_run
from fmlab.train import METRICS_NAME, TrainConfig, Trainer

TINY = dict(batch_size=64, hidden=16, depth=2, log_every=10, ckpt_every=10, warmup=2, threads=1)
COND = dict(data="8modes_halves", n_classes=2, p_uncond=0.25)


class Killed(Exception):
    pass


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def test_labels_reach_the_loss_with_seeded_dropout():
    tr = Trainer(TrainConfig(steps=1, **COND, **{**TINY, "batch_size": 4000}))
    batch = tr.make_batch()
    assert batch.labels is not None and batch.labels.dtype == torch.long
    dropped = (batch.labels == 2).double().mean().item()
    assert abs(dropped - 0.25) < 0.03  # label dropout at p_uncond (4000 draws: std 0.007)
    kept = batch.labels != 2
    truth = labelled_2d("8modes_halves").class_posterior(batch.x1[kept].double(), 1.0).argmax(1)
    assert (truth == batch.labels[kept]).double().mean() > 0.99  # the labels belong to their x1
    again = Trainer(TrainConfig(steps=1, **COND, **{**TINY, "batch_size": 4000})).make_batch()
    assert torch.equal(again.labels, batch.labels) and torch.equal(again.x1, batch.x1)  # seeded


def test_the_loss_calls_the_model_with_labels():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, *y):
            seen.append(y)
            return self.inner(x, t, *y)

    tr = Trainer(TrainConfig(steps=1, **COND, **TINY))
    batch = tr.make_batch()
    get_loss("cfm").fn(Spy(tr.model), batch)
    assert len(seen) == 1 and torch.equal(seen[0][0], batch.labels)


def test_conditional_loss_gradient_is_the_label_regression():
    """The cfm loss with labels has the gradient of mean_b |v(x_t, t, y_b) - (x1 - x0)|^2 / d, written here with
    explicit detaches (the path point and the target carry no gradient); null-label rows train the same network."""
    tr = Trainer(TrainConfig(steps=1, **COND, **TINY))
    batch = tr.make_batch()
    assert bool((batch.labels == 2).any()) and bool((batch.labels < 2).any())  # both kinds of row in the batch
    params = [p for p in tr.model.parameters() if p.requires_grad]
    loss = get_loss("cfm").fn(tr.model, batch)
    loss = loss[0] if isinstance(loss, tuple) else loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    t = batch.t.detach()[:, None]
    x_t = ((1 - t) * batch.x0 + t * batch.x1).detach()
    target = (batch.x1 - batch.x0).detach()
    reference = (tr.model(x_t, batch.t.detach(), batch.labels) - target).pow(2).mean(dim=1).mean()
    ref_grads = torch.autograd.grad(reference, params, allow_unused=True)
    assert torch.allclose(loss.detach(), reference.detach(), rtol=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            assert torch.allclose(g, r, rtol=1e-5, atol=1e-7)
    table = grads[[n for n, _ in tr.model.named_parameters()].index("backbone.label.table")]
    assert table[2].abs().sum() > 0  # the null label's embedding is trained


def test_unconditional_runs_ignore_labelled_data():
    """A data function that returns labels leaves an unconditional run bitwise unchanged (no labels, no draws)."""
    mixture = labelled_2d("8modes_halves")

    def with_labels(n, g):
        x, y = mixture.sample(n, g)
        return x.float(), y

    def without_labels(n, g):
        return mixture.sample(n, g)[0].float()

    runs = []
    for fn in (with_labels, without_labels):
        tr = Trainer(TrainConfig(data="custom", steps=5, **TINY), data_fn=fn)
        assert tr.make_batch().labels is None
        tr = Trainer(TrainConfig(data="custom", steps=5, **TINY), data_fn=fn)
        tr.fit(progress=False)
        runs.append(_params(tr.model))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_killed_and_resumed_conditional_run_is_bitwise_identical(tmp_path):
    cfg = dict(steps=30, **COND, **{**TINY, "log_every": 4})
    full = Trainer(TrainConfig(out=str(tmp_path / "full"), **cfg))
    full.fit(progress=False)

    def kill_at_24(step, record):
        if step == 24:
            raise Killed

    killed = Trainer(TrainConfig(out=str(tmp_path / "killed"), **cfg))
    with pytest.raises(Killed):
        killed.fit(progress=False, callback=kill_at_24)
    resumed = Trainer.resume(tmp_path / "killed")
    assert resumed.step == 20 and resumed.config.n_classes == 2 and resumed.model.config["n_classes"] == 2
    resumed.fit(progress=False)
    for a, b in zip(_params(full.model), _params(resumed.model), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    lines = [json.loads(x) for x in (tmp_path / "killed" / METRICS_NAME).read_text().splitlines()]
    assert [r["loss"] for r in lines] == [r["loss"] for r in full.log]


def test_dropout_probability_changes_the_run():
    a = Trainer(TrainConfig(steps=3, **{**COND, "p_uncond": 0.0}, **TINY))
    b = Trainer(TrainConfig(steps=3, **{**COND, "p_uncond": 0.5}, **TINY))
    assert not bool((a.make_batch().labels == 2).any()) and bool((b.make_batch().labels == 2).any())


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss="meanflow"), "passes labels"),
    (dict(coupling="ot"), "coupling='independent'"),
    (dict(p_uncond=1.0), r"p_uncond must be a number in \[0, 1\)"),
    (dict(n_classes=-1), "n_classes must be"),
    (dict(n_classes=3), "has 2 classes"),
    (dict(data="checkerboard"), "labelled set"),
])
def test_bad_conditional_settings_fail_before_training(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(TrainConfig(steps=2, **{**COND, **kwargs}, **TINY))


def test_unlabelled_or_out_of_range_data_is_refused():
    tr = Trainer(TrainConfig(steps=2, **{**COND, "data": "custom"}, **TINY),
                 data_fn=lambda n, g: torch.randn(n, 2, generator=g))
    with pytest.raises(ValueError, match="needs labelled data"):
        tr.make_batch()
    tr = Trainer(TrainConfig(steps=2, **{**COND, "data": "custom"}, **TINY),
                 data_fn=lambda n, g: (torch.randn(n, 2, generator=g), torch.full((n,), 2)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        tr.make_batch()


def test_short_conditional_run_learns_its_classes(tmp_path):
    """300 steps on the two halves: class-0 samples land in modes 0-3, class-1 samples in modes 4-7."""
    out = tmp_path / "run"
    cfg = TrainConfig(steps=300, lr=3e-3, out=str(out), **COND, **{**TINY, "hidden": 64, "depth": 3, "warmup": 20,
                                                                     "batch_size": 256, "log_every": 100,
                                                                     "ckpt_every": 0})
    Trainer(cfg).fit(progress=False)
    model, config = load_run(out)
    assert config.n_classes == 2 and model.config["n_classes"] == 2
    truth = labelled_2d("8modes_halves")
    for c in (0, 1):
        x = sample_run(out, n=400, steps=20, seed=1, label=c)
        right = (truth.class_posterior(x.double(), 1.0).argmax(1) == c).double().mean().item()
        assert right > 0.85, (c, right)
    mixed = sample_run(out, n=400, steps=20, seed=1)  # no label: every class in turn
    found = truth.class_posterior(mixed.double(), 1.0).argmax(1)
    assert 0.35 < found.double().mean().item() < 0.65
    with pytest.raises(ValueError, match="flowmap"):
        sample_run(out, n=4, steps=2, method="flowmap", label=0)


def test_command_line_cond_sample_and_eval(tmp_path, capsys):
    import numpy as np

    from fmlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "8modes_halves", "--cond", "--p-uncond", "0.2", "--steps", "3", "--hidden", "8",
                 "--depth", "1", "--batch-size", "16", "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["n_classes"] == 2 and saved["p_uncond"] == 0.2
    assert main(["sample", str(out), "--n", "5", "--steps", "2", "--label", "1", "--guidance", "3",
                 "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 2)
    capsys.readouterr()
    assert main(["eval", str(out), "--n", "50", "--steps", "2", "--label", "0", "--guidance", "2",
                 "--floor-repeats", "1"]) == 0
    assert "class 0, guidance w=2" in capsys.readouterr().out
    assert main(["eval", str(out), "--n", "50", "--steps", "2", "--floor-repeats", "1"]) == 0
    assert main(["sample", str(out), "--n", "5", "--label", "2", "--out", str(tmp_path / "x.npy")]) == 2
    plain = tmp_path / "plain"
    assert main(["train", "--data", "moons", "--steps", "2", "--hidden", "8", "--depth", "1", "--threads", "1",
                 "--out", str(plain), "--no-progress"]) == 0
    assert main(["sample", str(plain), "--n", "5", "--guidance", "2", "--out", str(tmp_path / "y.npy")]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert main(["train", "--data", "checkerboard", "--cond", "--out", str(tmp_path / "c"), "--no-progress"]) == 2
