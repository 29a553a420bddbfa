"""CelebA at 64 x 64 from the official aligned release, preprocessed once into a uint8 cache.

CelebA's licence (non-commercial research only, no redistribution) forbids shipping it, so fmlab never downloads
it: you put the files in a folder and point fmlab at it, with an argument (`root=`, `--data-root`) or the
environment variable FMLAB_CELEBA. The folder holds the official files, as downloaded:

    ROOT/img_align_celeba/000001.jpg ... 202599.jpg     (or ROOT/img_align_celeba.zip, unextracted)
    ROOT/list_eval_partition.txt                        ("000001.jpg 0" per line: 0 train, 1 valid, 2 test)
    ROOT/list_attr_celeba.txt                           (optional: the 40 binary attributes, for conditioning)

(also found: ROOT/celeba/..., and the Google Drive layout ROOT/Img/img_align_celeba.zip + ROOT/Eval/... +
ROOT/Anno/list_attr_celeba.txt).

Attributes: `CelebA64(...).attribute("Smiling")` reads list_attr_celeba.txt (a count line, a line of the 40 names,
then "000001.jpg -1 1 ..." per image) and returns 0/1 labels (1 where the file says 1) aligned with `images`, for
class-conditional training (fmlab.train_images, `attribute=`). Names are CelebA's (Smiling, Eyeglasses, Male, ...;
matched without regard to case).

Preprocessing (the aligned images are 178 wide x 218 high):

    crop 'ddim'       the 128 x 128 box centred at (x, y) = (89, 121), i.e. columns 25..152, rows 57..184
                      (the DDPM/DDIM lineage's CelebA-64), then resize to 64 x 64
    crop 'center140'  the centred 140 x 140 box (columns 19..158, rows 39..178), then resize
    crop 'center178'  the centred 178 x 178 box (rows 20..197), then resize

Resizing is PIL bilinear with PIL's built-in antialiasing (what torchvision's Resize does on a PIL image). Random
horizontal flips are applied at training time (fmlab.train_images.ImageStream), not in the cache. The split comes
from list_eval_partition.txt: train 162,770, valid 19,867, test 19,962 images.

The cache is one uint8 array [N, size, size, 3] per (split, crop, size) in ROOT/fmlab_cache/ (or `cache_dir`),
written atomically with a JSON sidecar recording what built it; it is read memory-mapped, so a 162,770-image
training split (2 GB at 64 x 64) costs no RAM up front. Building it once takes a few minutes on one core.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CELEBA_ENV", "CROPS", "SPLITS", "IMAGE_SIZE", "CelebA64", "CelebASource", "CelebANotFoundError",
           "locate_celeba", "read_partition", "preprocess", "celeba_available", "DOWNLOAD_HELP", "ATTR_FILE",
           "locate_attributes", "read_attributes"]

CELEBA_ENV = "FMLAB_CELEBA"
IMAGE_SIZE = (178, 218)  # width, height of img_align_celeba
CROPS = {  # PIL boxes (left, upper, right, lower), right/lower exclusive
    "ddim": (89 - 64, 121 - 64, 89 + 64, 121 + 64),
    "center140": (19, 39, 159, 179),
    "center178": (0, 20, 178, 198),
}
SPLITS = {"train": 0, "valid": 1, "test": 2}
_NAME = re.compile(r"^\d{6}\.jpg$")
ATTR_FILE = "list_attr_celeba.txt"

DOWNLOAD_HELP = f"""CelebA is not shipped with fmlab (its licence forbids redistribution). To use it:
  1. Download, from the official page https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (links to Google Drive /
     Baidu), the files
       Img/img_align_celeba.zip        ("Align&Cropped Images": 202,599 JPEGs of 178 x 218, 1.4 GB)
       Eval/list_eval_partition.txt    (the train / valid / test split)
  2. Put them in one folder ROOT as
       ROOT/img_align_celeba.zip       (or unzip it: ROOT/img_align_celeba/000001.jpg ...)
       ROOT/list_eval_partition.txt
  3. Pass the folder: `root=ROOT` in Python, `--data-root ROOT` on the command line, or set {CELEBA_ENV}=ROOT.
Without CelebA, the procedural faces (fmlab.data.faces, `--data faces`) run the same pipeline with no download."""


class CelebANotFoundError(FileNotFoundError):
    """CelebA (or one of its files) is not where fmlab looked; the message says what to put where."""


@dataclass(frozen=True)
class CelebASource:
    """Where the images (a folder of JPEGs or the zip) and the partition file are."""

    images: Path
    partition: Path

    @property
    def is_zip(self) -> bool:
        return self.images.suffix == ".zip"


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        env = os.environ.get(CELEBA_ENV, "").strip()
        if not env:
            raise CelebANotFoundError(f"no CelebA folder given: pass root= (--data-root) or set {CELEBA_ENV}.\n"
                                      + DOWNLOAD_HELP)
        root = env
    path = Path(root).expanduser()
    if not path.is_dir():
        raise CelebANotFoundError(f"CelebA folder {str(path)!r} does not exist.\n" + DOWNLOAD_HELP)
    return path


def _has_jpgs(folder: Path) -> bool:
    return folder.is_dir() and any(_NAME.match(p.name) for p in _first(folder.iterdir(), 50))


def _first(items, n: int) -> list:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out


def locate_celeba(root: str | os.PathLike | None = None) -> CelebASource:
    """Find the aligned images and list_eval_partition.txt under `root` (default: $FMLAB_CELEBA).

    Raises CelebANotFoundError (a FileNotFoundError) with download instructions when something is missing.
    """
    base = _root(root)
    bases = [base, base / "celeba", base / "Img", base / "Eval", base / "CelebA"]
    images = None
    for b in bases:
        for cand in (b / "img_align_celeba" / "img_align_celeba", b / "img_align_celeba"):
            if _has_jpgs(cand):
                images = cand
                break
        if images is None and (b / "img_align_celeba.zip").is_file():
            images = b / "img_align_celeba.zip"
        if images is not None:
            break
    partition = next((b / "list_eval_partition.txt" for b in bases if (b / "list_eval_partition.txt").is_file()),
                     None)
    missing = []
    if images is None:
        missing.append("img_align_celeba/ (a folder of 000001.jpg ... files) or img_align_celeba.zip")
    if partition is None:
        missing.append("list_eval_partition.txt")
    if missing:
        raise CelebANotFoundError(f"CelebA folder {str(base)!r} lacks {' and '.join(missing)}.\n" + DOWNLOAD_HELP)
    return CelebASource(images=images, partition=partition)


def locate_attributes(root: str | os.PathLike | None = None) -> Path:
    """The path of list_attr_celeba.txt under `root` (default $FMLAB_CELEBA), looked for where the images' folder
    layouts put it; CelebANotFoundError naming the file and where to put it when it is missing."""
    base = _root(root)
    folders = (base, base / "Anno", base / "celeba", base / "celeba" / "Anno", base / "CelebA",
               base / "CelebA" / "Anno")
    for b in folders:
        if (b / ATTR_FILE).is_file():
            return b / ATTR_FILE
    raise CelebANotFoundError(
        f"CelebA attributes need {ATTR_FILE}, which is not in {str(base)!r}. Download it from the official page "
        f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Anno/{ATTR_FILE} in the Google Drive folder) and put it "
        f"at {str(base / ATTR_FILE)!r} (or in {str(base / 'Anno')!r}). Without it, train unconditionally or on the "
        f"procedural faces, whose attributes are built in (fmlab.data.faces.FACE_ATTRIBUTES).")


def read_attributes(path: str | os.PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """(the attribute names, {file name: int8 [n_attributes] of 0/1}) from list_attr_celeba.txt (1 -> 1, -1 -> 0).

    Raises ValueError naming the file and line when the file is not in the official format."""
    rows: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        first, header = f.readline().split(), f.readline().split()
        if len(first) != 1 or not first[0].isdigit() or not header:
            raise ValueError(f"{str(path)!r} does not start with an image count and a line of attribute names: is "
                             f"this the official {ATTR_FILE}?")
        for number, line in enumerate(f, 3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(header) + 1 or not _NAME.match(parts[0]) or any(v not in ("1", "-1") for v in
                                                                                  parts[1:]):
                raise ValueError(f"{str(path)!r} line {number} is not 'NNNNNN.jpg' followed by {len(header)} values "
                                 f"of 1 or -1: is this the official {ATTR_FILE}?")
            rows[parts[0]] = (np.array(parts[1:], dtype=np.int8) > 0).astype(np.int8)
    return header, rows


def celeba_available(root: str | os.PathLike | None = None) -> bool:
    """True if `locate_celeba(root)` finds the files (no exception, no message)."""
    try:
        locate_celeba(root)
    except FileNotFoundError:
        return False
    return True


def read_partition(path: str | os.PathLike) -> dict[str, list[str]]:
    """{'train': [...], 'valid': [...], 'test': [...]} file names from list_eval_partition.txt.

    Raises ValueError naming the file and line when a line is not 'NNNNNN.jpg k' with k in {0, 1, 2}.
    """
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    by_code = {str(v): k for k, v in SPLITS.items()}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not _NAME.match(parts[0]) or parts[1] not in by_code:
                raise ValueError(f"{str(path)!r} line {number} is {line.strip()!r}; expected 'NNNNNN.jpg k' with k in "
                                 f"0 (train), 1 (valid), 2 (test): is this the official list_eval_partition.txt?\n"
                                 + DOWNLOAD_HELP)
            out[by_code[parts[1]]].append(parts[0])
    if not any(out.values()):
        raise ValueError(f"{str(path)!r} lists no images.\n" + DOWNLOAD_HELP)
    return out


class _Reader:
    """Open CelebA JPEGs by name from the folder or the zip (members may sit under img_align_celeba/)."""

    def __init__(self, source: CelebASource):
        self.source = source
        self.zip = zipfile.ZipFile(source.images) if source.is_zip else None
        self.members: dict[str, str] = {}
        if self.zip is not None:
            self.members = {Path(n).name: n for n in self.zip.namelist() if _NAME.match(Path(n).name)}

    def has(self, name: str) -> bool:
        return name in self.members if self.zip is not None else (self.source.images / name).is_file()

    def open(self, name: str):
        from PIL import Image

        if self.zip is not None:
            with self.zip.open(self.members[name]) as f:
                img = Image.open(f)
                img.load()
                return img
        return Image.open(self.source.images / name)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def preprocess(img, crop: str = "ddim", size: int = 64) -> np.ndarray:
    """A 178 x 218 aligned CelebA PIL image -> uint8 [size, size, 3]: crop box CROPS[crop], then bilinear resize."""
    from PIL import Image

    if crop not in CROPS:
        raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
    if img.size != IMAGE_SIZE:
        raise ValueError(f"expected an aligned CelebA image of {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]} (img_align_celeba), "
                         f"got {img.size[0]} x {img.size[1]}: the in-the-wild images (img_celeba) are not supported")
    out = img.convert("RGB").crop(CROPS[crop]).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def _fingerprint(source: CelebASource, names: list[str]) -> str:
    h = hashlib.sha1()
    h.update(Path(source.partition).read_bytes())
    h.update("\n".join(names).encode())
    return h.hexdigest()


class CelebA64:
    """Aligned CelebA, one split, preprocessed to uint8 `images` [N, size, size, 3] (memory-mapped cache).

    root: the folder (see the module docstring; default $FMLAB_CELEBA). split: 'train', 'valid', 'test' or 'all'.
    crop: 'ddim' (default), 'center140' or 'center178'. size: output side (64). cache_dir: where the uint8 cache
    goes (default ROOT/fmlab_cache). limit: use only the first `limit` images of the split (quick looks; cached
    separately). The first use builds the cache (progress bar); later uses open it at once. A missing or malformed
    folder raises an error whose message says what to download and where to put it.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", crop: str = "ddim",
                 size: int = 64, cache_dir: str | os.PathLike | None = None, limit: int | None = None,
                 progress: bool = True):
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 128:
            raise ValueError(f"size must be an integer in [8, 128], got {size!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
        self.source = locate_celeba(root)
        self.root = _root(root)
        parts = read_partition(self.source.partition)
        names = sum(parts.values(), []) if split == "all" else parts[split]
        if not names:
            raise ValueError(f"{str(self.source.partition)!r} lists no images for split {split!r}.\n" + DOWNLOAD_HELP)
        self.names = names[:limit] if limit is not None else names
        self.split, self.crop, self.size = split, crop, size
        root_dir = self.source.partition.parent
        self.cache_dir = Path(cache_dir) if cache_dir is not None else root_dir / "fmlab_cache"
        tag = f"celeba_{split}_{crop}_{size}" + (f"_first{limit}" if limit is not None else "")
        self.cache_path = self.cache_dir / f"{tag}.npy"
        self.images = self._load_or_build(progress)
        self.name = f"CelebA {size}x{size} ({split}, crop {crop}, n={len(self.images)})"

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"CelebA64({self.name})"

    def attribute(self, name: str) -> np.ndarray:
        """0/1 labels int64 [N] of the CelebA attribute `name` (e.g. 'Smiling', 'Eyeglasses'; any case), aligned
        with `images`, from list_attr_celeba.txt next to the partition file (CelebANotFoundError if it is absent)."""
        names, rows = read_attributes(locate_attributes(self.root))
        index = {n.lower(): i for i, n in enumerate(names)}
        if not isinstance(name, str) or name.lower() not in index:
            raise ValueError(f"attribute must be one of CelebA's {names}, got {name!r}")
        missing = [n for n in self.names if n not in rows]
        if missing:
            raise ValueError(f"{ATTR_FILE} lacks {len(missing)} of the {len(self.names)} images of split "
                             f"{self.split!r} (first: {missing[:3]}): is it from the same release as the images?")
        column = index[name.lower()]
        return np.array([rows[n][column] for n in self.names], dtype=np.int64)

    def _meta(self) -> dict:
        return {"n": len(self.names), "crop": self.crop, "size": self.size, "split": self.split,
                "fingerprint": _fingerprint(self.source, self.names), "format": "uint8 [N, H, W, 3] RGB"}

    def _load_or_build(self, progress: bool) -> np.ndarray:
        meta_path = self.cache_path.with_suffix(".json")
        meta = self._meta()
        if self.cache_path.is_file() and meta_path.is_file():
            try:
                saved = json.loads(meta_path.read_text())
                images = np.load(self.cache_path, mmap_mode="r")
                if saved == meta and images.shape == (meta["n"], self.size, self.size, 3):
                    return images
            except (OSError, ValueError):
                pass  # a damaged cache is rebuilt
        return self._build(meta, meta_path, progress)

    def _build(self, meta: dict, meta_path: Path, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        from ..checkpoint import atomic_write

        reader = _Reader(self.source)
        try:
            absent = [n for n in self.names if not reader.has(n)]
            if absent:
                raise ValueError(f"{len(absent)} of the {len(self.names)} images that list_eval_partition.txt lists "
                                 f"for split {self.split!r} are missing from {str(self.source.images)!r} (first: "
                                 f"{absent[:3]}); the download may be incomplete.\n" + DOWNLOAD_HELP)
            out = np.empty((len(self.names), self.size, self.size, 3), np.uint8)
            for i, name in enumerate(tqdm(self.names, desc=f"caching CelebA {self.split} ({self.crop}, "
                                          f"{self.size}px)", disable=not progress, unit="img")):
                try:
                    img = reader.open(name)
                except OSError as err:
                    raise ValueError(f"cannot read {name!r} in {str(self.source.images)!r} ({err}); the file is "
                                     f"damaged: download it again.\n" + DOWNLOAD_HELP) from err
                try:
                    out[i] = preprocess(img, self.crop, self.size)
                except ValueError as err:
                    raise ValueError(f"{name!r}: {err}.\n" + DOWNLOAD_HELP) from err
        finally:
            reader.close()
        atomic_write(self.cache_path, lambda f: np.save(f, out))
        text = json.dumps(meta, indent=1)
        atomic_write(meta_path, lambda f: f.write(text.encode()))
        return np.load(self.cache_path, mmap_mode="r")
