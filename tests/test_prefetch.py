import threading

import pytest
import torch

from fmlab.prefetch import PairedBatches
from fmlab.train import TrainConfig, Trainer

TINY = dict(hidden=16, depth=2, batch_size=48, threads=1, log_every=4, ckpt_every=0)


def _state(trainer):
    return [p.detach().clone() for p in trainer.model.state_dict().values()] + [trainer.generator.get_state()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("coupling, loss", [("ot", "cfm"), ("ot", "meanflow"), ("sinkhorn", "cfm"),
                                            ("sinkhorn_device", "shortcut")])
def test_prefetched_training_is_bitwise_the_sequential_one(coupling, loss):
    cfg = TrainConfig(steps=10, coupling=coupling, loss=loss, **TINY)
    sequential = Trainer(cfg, prefetch=0)
    sequential.fit(progress=False)
    ahead = Trainer(cfg, prefetch=3, coupling_workers=2)
    ahead.fit(progress=False)
    assert ahead.batches.source.prefetching  # it did prepare ahead (no fallback)
    assert _same(_state(sequential), _state(ahead))
    assert [r["loss"] for r in sequential.log] == [r["loss"] for r in ahead.log]


def test_prefetched_label_dropout_is_bitwise_the_sequential_one():
    """Class-conditional runs (independent pairs) replay the label-dropout draws too, when asked to prefetch."""
    cfg = TrainConfig(steps=8, data="8modes_halves", n_classes=2, p_uncond=0.25, **TINY)
    sequential, ahead = Trainer(cfg, prefetch=0), Trainer(cfg, prefetch=2)
    first = ahead.make_batch()
    assert torch.equal(sequential.make_batch().labels, first.labels) and bool((first.labels == 2).any())
    sequential.fit(progress=False)
    ahead.fit(progress=False)
    assert ahead.batches.source.prefetching
    assert _same(_state(sequential), _state(ahead))


def test_default_prefetches_only_couplings_to_solve_on_toy_data():
    assert Trainer(TrainConfig(steps=2, coupling="ot", **TINY)).prefetch == 2
    assert Trainer(TrainConfig(steps=2, coupling="ot", **TINY), coupling_workers=3).prefetch == 6
    assert Trainer(TrainConfig(steps=2, coupling="independent", **TINY)).prefetch == 0
    custom = Trainer(TrainConfig(steps=2, coupling="ot", **TINY), data_fn=lambda n, g: torch.randn(n, 2, generator=g))
    assert custom.prefetch == 0  # a custom data_fn may keep state of its own: not drawn ahead unless asked


class Killed(Exception):
    pass


def test_resume_across_prefetch_settings_is_bitwise(tmp_path):
    cfg = dict(steps=16, coupling="ot", ckpt_every=8, **{k: v for k, v in TINY.items() if k != "ckpt_every"})
    full = Trainer(TrainConfig(out=str(tmp_path / "full"), **cfg), prefetch=0)
    full.fit(progress=False)

    def kill_at_12(step, record):
        if step == 12:
            raise Killed

    killed = Trainer(TrainConfig(out=str(tmp_path / "killed"), **cfg), prefetch=4)
    with pytest.raises(Killed):  # checkpoint at step 8 written while batches 9.. were prepared ahead
        killed.fit(progress=False, callback=kill_at_12)
    resumed = Trainer.resume(tmp_path / "killed", prefetch=3, coupling_workers=2)
    assert resumed.step == 8
    resumed.fit(progress=False)
    assert _same(_state(full), _state(resumed))


def test_drawing_from_the_trainers_generator_between_steps_restarts_preparation():
    cfg = TrainConfig(steps=6, coupling="ot", **TINY)
    runs = []
    for prefetch in (0, 2):
        trainer = Trainer(cfg, prefetch=prefetch)
        for _ in range(3):
            trainer.train_step()
            torch.rand(5, generator=trainer.generator)  # a lab drawing from the trainer's generator
        runs.append(_state(trainer))
    assert _same(*runs)


def _source(ahead, finish=None, draw=None, workers=1, log=None):
    def default_draw(g):
        return torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g), None

    def solve(x0, x1):
        if log is not None:
            log.append(threading.get_ident())
        return torch.argsort(x1[:, 0])  # any deterministic pairing

    def default_finish(x0, x1, labels, solution, g):
        return x0, x1[solution], torch.rand(8, generator=g)

    return PairedBatches(draw or default_draw, solve, finish or default_finish, lambda x0, x1: torch.arange(8),
                         torch.Generator().manual_seed(0), ahead=ahead, workers=workers)


def _run(source, n=6):
    out = [source.next() for _ in range(n)]
    return [t for batch in out for t in batch] + [source.generator.get_state()]


def test_pairings_are_solved_ahead_on_worker_threads():
    log = []
    source = _source(ahead=2, log=log)
    source.next()
    for item in source._queue:
        item.solution.result()
    assert len(log) == 3 and threading.get_ident() not in log  # this batch and two ahead, on a worker thread
    source.next(limit=0)  # the last step: nothing more is prepared
    assert len(log) == 3
    source.close()


def test_value_dependent_draws_fall_back_to_the_sequential_path():
    def finish(x0, x1, labels, solution, g):  # draws 1 or 2 numbers depending on the paired data
        k = 1 + int(x1[solution][0, 0] > 0)
        return x0, x1[solution], torch.rand(k, generator=g)

    reference = _run(_source(0, finish))
    source = _source(3, finish)
    with pytest.warns(RuntimeWarning, match="depends on the batch's values"):
        got = _run(source)
    assert not source.prefetching
    assert len(reference) == len(got) and _same(reference, got)


def test_a_data_source_using_the_global_generator_falls_back():
    def draw(g):
        x1 = torch.randn(8, 2, generator=g) + torch.rand(1)  # global RNG: drawing ahead would reorder it
        return torch.randn(8, 2, generator=g), x1, None

    torch.manual_seed(1)
    reference = _run(_source(0, draw=draw)) + [torch.get_rng_state()]
    torch.manual_seed(1)
    with pytest.warns(RuntimeWarning, match="global generator"):
        got = _run(_source(2, draw=draw)) + [torch.get_rng_state()]
    assert _same(reference, got)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ahead must be an integer >= 0"):
        _source(-1)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        _source(1, workers=0)
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        Trainer(TrainConfig(steps=2, **TINY), prefetch=-1)
    with pytest.raises(ValueError, match="coupling_workers must be an integer >= 1"):
        Trainer(TrainConfig(steps=2, **TINY), coupling_workers=0)
