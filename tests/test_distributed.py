"""Two CPU processes with gloo (torch.multiprocessing): explicitly averaged gradients equal one process's gradient
on the full batch, for flow matching and for MeanFlow (a JVP loss); DDP's wrapper demonstrably misses the JVP path;
and the image trainer runs data-parallel with identical replicas and one writer."""

import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fmlab.distributed import DistInfo, cleanup, init_distributed, rank_seed, sync_gradients
from fmlab.losses import get_loss

WORLD = 2
LOSSES = ("cfm", "meanflow")


def _model_and_batch(name: str):
    """The same float64 tiny UNet and the same full batch of 4 in every process (seeded)."""
    from fmlab.models import build_unet

    spec = get_loss(name)
    torch.manual_seed(0)
    model = build_unet("tiny", image_size=8, attn_resolutions=(8,), time_inputs=spec.time_inputs,
                       prediction=spec.prediction).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x1 = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    x0 = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    settings = spec.settings()
    batch = spec.make_batch(x0, x1, g, **settings)
    return spec, model, batch, settings


def _shard(batch, rank: int, world: int):
    n = len(batch.x1) // world
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[rank * n:(rank + 1) * n]
                                         for f in dataclasses.fields(batch)
                                         if isinstance(getattr(batch, f.name), torch.Tensor)})


def _flat_grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed(backend="gloo", device="cpu")
    out: dict = {"rank": info.rank, "world": info.world_size}
    for name in LOSSES:
        spec, model, batch, settings = _model_and_batch(name)
        loss, _ = spec.fn(model, _shard(batch, rank, world), **settings)
        loss.backward()
        out[f"{name}_local"] = _flat_grads(model)
        sync_gradients(model)
        out[f"{name}_synced"] = _flat_grads(model)

    # the pitfall: DDP averages only what went through its own forward
    from torch.nn.parallel import DistributedDataParallel as DDP

    spec, model, batch, settings = _model_and_batch("meanflow")
    ddp = DDP(model)
    loss, _ = spec.fn(ddp.module, _shard(batch, rank, world), **settings)  # torch.func.jvp on the module
    loss.backward()
    out["ddp_jvp_on_module"] = _flat_grads(model)

    # the image trainer, data-parallel: identical replicas, rank 0 writes
    from fmlab.models.unet import UNetConfig
    from fmlab.train_images import ImageTrainConfig, ImageTrainer

    cfg = ImageTrainConfig(data="faces", model=UNetConfig(preset="tiny", image_size=8, dropout=0.1), batch_size=2,
                           steps=2, warmup=0, threads=1, n_faces=8, log_every=1, ckpt_every=0, sample_every=2,
                           sample_n=2, sample_steps=1, out=os.path.join(tmp, "run"))
    trainer = ImageTrainer(cfg, dist=info)
    trainer.fit(progress=False)
    out["trained"] = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    out["first_batch_seed"] = rank_seed(cfg.seed, rank)
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    cleanup(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", LOSSES)
def test_averaged_gradients_equal_the_full_batch_gradient(results, name):
    _, ranks = results
    spec, model, batch, settings = _model_and_batch(name)
    loss, _ = spec.fn(model, batch, **settings)  # one process, the full batch of 4
    loss.backward()
    reference = _flat_grads(model)
    assert not torch.allclose(ranks[0][f"{name}_local"], ranks[1][f"{name}_local"])  # each rank saw half
    for r in ranks:
        torch.testing.assert_close(r[f"{name}_synced"], reference, rtol=1e-9, atol=1e-12)


def test_ddp_wrapper_silently_misses_jvp_gradients(results):
    _, ranks = results
    a, b = ranks[0]["ddp_jvp_on_module"], ranks[1]["ddp_jvp_on_module"]
    assert not torch.allclose(a, b)  # unsynchronised: the replicas would drift apart
    torch.testing.assert_close(a, ranks[0]["meanflow_local"], rtol=1e-9, atol=1e-12)


def test_image_trainer_data_parallel(results):
    tmp, ranks = results
    torch.testing.assert_close(ranks[0]["trained"], ranks[1]["trained"], rtol=0, atol=0)  # identical replicas
    assert ranks[0]["world"] == WORLD and ranks[1]["rank"] == 1
    run = tmp / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # one writer
    assert records[-1]["images_per_s"] > 0
    state = torch.load(run / "ckpt.pt", weights_only=True)
    assert len(state["rank_states"]) == WORLD and state["step"] == 2
    assert not torch.equal(state["rank_states"][0]["generator"], state["rank_states"][1]["generator"])
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png"]


def test_single_process_helpers_are_no_ops():
    info = init_distributed()
    assert info == DistInfo() and info.is_main and not info.active
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    assert sync_gradients(model) == 0
    cleanup(info)
    assert rank_seed(5, 0) == 5 and rank_seed(5, 1) != 5
    with pytest.raises(ValueError, match="rank"):
        rank_seed(0, -1)
