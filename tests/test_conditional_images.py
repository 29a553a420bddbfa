"""Class-conditional images: the procedural faces' attributes (deterministic, visible), CelebA's attribute file (read,
aligned, clear messages), labelled image streams, conditional image runs (labels, dropout, exact resume, grids), guided
image sampling and the command line."""

import numpy as np
import pytest
import torch
from PIL import Image

from fmlab.data import celeba as C
from fmlab.data.celeba import CelebA64, read_attributes
from fmlab.data.faces import FACE_ATTRIBUTES, Faces, make_faces
from fmlab.images import sample_images
from fmlab.train_images import ImageStream, ImageTrainConfig, ImageTrainer, generate_images

torch.set_num_threads(1)


def _config(**kw):
    base = dict(data="faces", preset="tiny", image_size=16, batch_size=8, steps=4, warmup=1, lr=1e-3, threads=1,
                n_faces=32, dropout=0.0, log_every=1, ckpt_every=2, sample_every=0, sample_n=4, sample_steps=2,
                attribute="smiling", p_uncond=0.25)
    return ImageTrainConfig(**{**base, **kw})


# --- the procedural faces' attributes ----------------------------------------------------------------------------

def test_face_attributes_are_deterministic_prefix_stable_and_balanced():
    images, attrs = make_faces(600, 16, seed=0, return_attributes=True)
    assert set(attrs) == set(FACE_ATTRIBUTES)
    np.testing.assert_array_equal(make_faces(600, 16, seed=0), images)
    small_images, small = make_faces(20, 16, seed=0, return_attributes=True)
    np.testing.assert_array_equal(small_images, images[:20])
    for name in FACE_ATTRIBUTES:
        np.testing.assert_array_equal(small[name], attrs[name][:20])
        assert set(np.unique(attrs[name])) == {0, 1}
    assert abs(attrs["smiling"].mean() - 0.5) < 0.07 and abs(attrs["glasses"].mean() - 0.15) < 0.05
    faces = Faces(40, 16, seed=0)
    np.testing.assert_array_equal(faces.attribute("smiling"), attrs["smiling"][:40])
    with pytest.raises(ValueError, match="attribute must be one of"):
        faces.attribute("Smiling")


@pytest.mark.parametrize("name, rows", [("smiling", slice(18, 24)), ("glasses", slice(9, 16))])
def test_face_attributes_are_visible_where_they_should_be(name, rows):
    """At 32 px the two classes' mean images differ by > 25 grey levels at the mouth (smiling) or the eyes (glasses),
    and by far less elsewhere (the forehead)."""
    images, attrs = make_faces(1024, 32, seed=3, return_attributes=True)
    on = attrs[name].astype(bool)
    diff = np.abs(images[on].astype(float).mean(0) - images[~on].astype(float).mean(0)).max(-1)  # [32, 32]
    assert diff[rows, 8:24].max() > 25
    assert diff[2:6, 8:24].max() < 10


# --- CelebA's attribute file -------------------------------------------------------------------------------------

N = 12


def _release(root, with_attributes=True):
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{i:06d}.jpg {0 if i <= 8 else 1}\n" for i in range(1, N + 1)]
    (root / "list_eval_partition.txt").write_text("".join(lines))
    (root / "img_align_celeba").mkdir(exist_ok=True)
    for i in range(1, N + 1):
        Image.new("RGB", (178, 218), (7 * i, 0, 0)).save(root / "img_align_celeba" / f"{i:06d}.jpg")
    if with_attributes:
        (root / "Anno").mkdir(exist_ok=True)
        lines = [str(N), "Eyeglasses Smiling Young "]  # the official file ends its name line with a space
        lines += [f"{i:06d}.jpg {1 if i % 3 == 0 else -1}  {1 if i % 2 else -1} 1" for i in range(1, N + 1)]
        (root / "Anno" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_attributes_are_read_and_aligned(tmp_path):
    root = _release(tmp_path / "celeba")
    names, rows = read_attributes(root / "Anno" / "list_attr_celeba.txt")
    assert names == ["Eyeglasses", "Smiling", "Young"] and rows["000003.jpg"].tolist() == [1, 1, 1]
    train = CelebA64(root, split="train", size=16, progress=False)
    np.testing.assert_array_equal(train.attribute("Smiling"), [i % 2 for i in range(1, 9)])
    np.testing.assert_array_equal(train.attribute("eyeglasses"), [int(i % 3 == 0) for i in range(1, 9)])
    with pytest.raises(ValueError, match=r"attribute must be one of CelebA's \['Eyeglasses', 'Smiling', 'Young'\]"):
        train.attribute("Bald")


def test_missing_or_malformed_attribute_file_says_what_to_do(tmp_path):
    root = _release(tmp_path / "bare", with_attributes=False)
    data = CelebA64(root, split="train", size=16, progress=False)
    with pytest.raises(C.CelebANotFoundError) as err:
        data.attribute("Smiling")
    text = str(err.value)
    assert "list_attr_celeba.txt" in text and str(root / "list_attr_celeba.txt") in text and "mmlab" in text
    (root / "list_attr_celeba.txt").write_text("12\nSmiling\n000001.jpg 0\n")
    with pytest.raises(ValueError, match="line 3"):
        data.attribute("Smiling")


# --- labelled streams and conditional image runs -------------------------------------------------------------------

def test_labelled_stream_keeps_labels_with_their_images():
    images = np.repeat(np.arange(10, dtype=np.uint8), 4 * 4 * 3).reshape(10, 4, 4, 3)  # image i is constant i
    labels = np.arange(10) % 3
    stream = ImageStream(images, seed=1, labels=labels)
    x, y = stream(7, torch.Generator().manual_seed(0))
    ids = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()
    assert torch.equal(y, torch.as_tensor(labels)[ids])
    with pytest.raises(ValueError, match="one entry per image"):
        ImageStream(images, labels=labels[:4])


def test_config_sets_two_classes_and_refuses_labels_without_attribute():
    assert _config().n_classes == 2 and _config(attribute=None).n_classes == 0
    with pytest.raises(ValueError, match="needs attribute="):
        _config(attribute=None, n_classes=2)
    with pytest.raises(ValueError, match="2-class label"):
        _config(n_classes=3)


def test_conditional_image_run_resumes_exactly_and_draws_class_grids(tmp_path):
    full = ImageTrainer(_config(out=str(tmp_path / "full")))
    assert full.model.config["n_classes"] == 2
    batch = full.make_batch()
    assert batch.labels is not None and set(batch.labels.tolist()) <= {0, 1, 2}
    full = ImageTrainer(_config(out=str(tmp_path / "full")))
    full.fit(progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(step, record):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        ImageTrainer(_config(out=str(tmp_path / "part"))).fit(progress=False, callback=kill_at_3)
    resumed = ImageTrainer.resume(tmp_path / "part")
    assert resumed.step == 2  # the last checkpoint: label dropout and the data position continue from there
    resumed.fit(progress=False)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    grid = full.sample_grid()
    assert grid.dtype == np.uint8 and grid.shape[-1] == 3


def test_guided_image_sampling():
    trainer = ImageTrainer(_config(steps=1))
    model = trainer.ema
    with torch.no_grad():
        for p in model.parameters():  # an untrained UNet outputs zeros; perturb it so labels matter
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x0 = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = generate_images(model, x0, 2, labels=0, guidance=3.0)
    b = generate_images(model, x0, 2, labels=1, guidance=3.0)
    assert a.shape == x0.shape and not torch.allclose(a, b)
    assert torch.allclose(generate_images(model, x0, 2, labels=torch.tensor([0, 1, 0, 1]), guidance=0.0),
                          generate_images(model, x0, 2), atol=1e-5)  # w = 0: the unconditional model
    images = sample_images(model, 5, 2, label=1, guidance=2.0, batch_size=2)
    assert images.shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"):
        sample_images(ImageTrainer(_config(steps=1, attribute=None)).ema, 2, 1, guidance=2.0)


def test_command_line_conditional_faces(tmp_path):
    from fmlab.cli import main

    out = tmp_path / "run"
    common = ["--preset", "tiny", "--image-size", "16", "--batch-size", "4", "--threads", "1", "--sample-every", "0",
              "--sample-n", "4", "--sample-steps", "1", "--n-faces", "16", "--no-progress"]
    assert main(["train", "--config", "faces32", "--cond", "--attribute", "glasses", "--p-uncond", "0.3",
                 "--steps", "2", "--out", str(out), *common]) == 0
    from fmlab.images import load_image_run

    model, config = load_image_run(out)
    assert config.attribute == "glasses" and config.p_uncond == 0.3 and model.config["n_classes"] == 2
    assert main(["sample", str(out), "--n", "4", "--steps", "1", "--label", "1", "--guidance", "2",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert main(["train", "--config", "faces32", "--attribute", "glasses", "--steps", "1",
                 "--out", str(tmp_path / "r2"), *common]) == 2  # --attribute needs --cond


def test_lab_guidance_run_and_guided_grid_controls():
    """Lab 13's guidance section: a conditional fast-plan run on the faces; the guided grid changes with w and with
    the class (so both controls change the figure), w = 1 is the conditional model, and a bad class is named."""
    import dataclasses

    from fmlab.images import guided_lab_samples, plan_lab, train_lab_guidance
    from fmlab.viz.images import guided_grid_widget, render_guided_grid

    plan = dataclasses.replace(plan_lab(fast=True, device="cpu"), steps=3)
    trainer = train_lab_guidance(plan, live=False)
    assert trainer.config.attribute == "smiling" and trainer.config.n_classes == 2
    assert trainer.config.p_uncond == pytest.approx(0.2)
    grids = {(c, w): guided_lab_samples(trainer, c, w, n=4, steps=2) for c in (0, 1) for w in (0.0, 1.0, 4.0)}
    assert grids[1, 1.0].shape == (4, plan.image_size, plan.image_size, 3) and grids[1, 1.0].dtype == np.uint8
    assert not np.array_equal(grids[1, 1.0], grids[1, 4.0]) and not np.array_equal(grids[0, 4.0], grids[1, 4.0])
    assert np.array_equal(grids[0, 0.0], grids[1, 0.0])  # w = 0: the unconditional model, whatever the class
    titles = {render_guided_grid(trainer, w, c, n=4, steps=2).layout.title.text for c in (0, 1) for w in (1.0, 4.0)}
    assert len(titles) == 4
    with pytest.raises(ValueError, match="label must be 0"):
        render_guided_grid(trainer, 1.0, 2, n=4, steps=2)
    view = guided_grid_widget(trainer, n=4, steps=2)
    assert set(view.controls) == {"w", "label"}
