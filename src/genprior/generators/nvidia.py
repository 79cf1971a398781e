"""NVIDIA network pickles (``ffhq.pkl`` of stylegan2-ada-pytorch and its kin), read without
running anything from the file, and mapped onto the project's StyleGAN2.

NVIDIA's own loader unpickles the file the ordinary way: every network is a
``torch_utils.persistence`` object whose reconstruction ``exec``s the Python source stored beside
its weights, so an untrusted file runs code. genprior reads it with a restricted unpickler:

* ``torch_utils.persistence._reconstruct_persistent_obj`` becomes :class:`Persistent`, which
  keeps the class name and the object's state (its ``__dict__``: parameters, buffers, child
  modules, plain attributes) and drops the source;
* tensors are rebuilt here: each storage is a legacy ``torch.save`` stream that
  ``torch.storage._load_from_bytes`` would hand to ``torch.load(weights_only=False)``;
  :func:`read_legacy_storage` parses it itself (a restricted pickle naming only a storage type,
  then the raw bytes);
* the other globals these files name are replaced by inert equivalents (``OrderedDict``, ``set``,
  ``EasyDict`` as a plain dict, numpy's numeric scalars and dtypes under their numpy 1 and 2
  names, numpy arrays as inert placeholders, which a StyleGAN2 never needs);
* anything else is refused, naming it.

Then :func:`convert_network_pickle` maps ``G_ema`` onto the rosinality layout that
:class:`~genprior.generators.stylegan2.StyleGAN2Generator` loads (see its table), with
``latent_avg`` (NVIDIA's ``w_avg``) and the ``conv_clamp`` the file sets. StyleGAN3, the
``resnet`` and ``orig`` architectures and conditional generators are refused with one line.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..io import atomic_path

#: the magic number that opens a legacy (non-zip) ``torch.save`` stream
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Persistent:
    """What ``torch_utils.persistence`` stored for one object: its class name and its state. The
    stored source code is dropped unread."""

    def __init__(self, class_name: str, state: Mapping[str, Any]) -> None:
        self.class_name = class_name
        self.state = dict(state)

    def child(self, name: str) -> Persistent | None:
        """The child module ``name`` (``_modules[name]``), or None."""
        found = (self.state.get("_modules") or {}).get(name)
        return found if isinstance(found, Persistent) else None

    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    def tensor(self, name: str) -> Tensor | None:
        """The parameter or buffer ``name``, or None."""
        for group in ("_parameters", "_buffers"):
            t = (self.state.get(group) or {}).get(name)
            if isinstance(t, Tensor):
                return t
        return None

    def __repr__(self) -> str:
        return f"Persistent({self.class_name!r})"


def _reconstruct_persistent(meta: Any) -> Persistent:
    if (
        not isinstance(meta, Mapping)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), Mapping)
    ):
        raise pickle.UnpicklingError("a torch_utils.persistence record that is not a class instance")
    return Persistent(str(meta.get("class_name")), meta["state"])


class _PlainDict(dict):
    """``dnnlib.util.EasyDict``: its items, nothing else."""

    def __setstate__(self, state: Any) -> None:  # an EasyDict pickles its (empty) __dict__
        pass


class _InertArray:
    """A numpy array of the file, never rebuilt (a StyleGAN2 has none; StyleGAN3 has some)."""

    def __setstate__(self, state: Any) -> None:
        pass


def _inert_array(*args: Any) -> _InertArray:
    return _InertArray()


_NUMERIC_KINDS = "biufc"


class _DType:
    """A numpy dtype named in the file, kept as its code and byte order (numpy's own
    ``__setstate__`` never sees the file's data); numeric kinds only."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        self.code, self.order = str(code), "="
        if np.dtype(self.code).kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(
                f"numpy dtype {code!r} is not numeric; genprior reads numeric scalars only"
            )

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


def _scalar(dtype: Any, data: Any = b"") -> Any:
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype=dtype.numpy(), count=1)[0].item()


def _rebuild_tensor(storage: Tensor, offset: int, size: Any, stride: Any, *rest: Any) -> Tensor:
    if not isinstance(storage, Tensor):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: Any, *rest: Any) -> Tensor:
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("a parameter whose data is not a tensor")
    return data


def _numpy_names(module: str, name: str) -> list[tuple[str, str]]:
    return [(f"numpy.core.{module}", name), (f"numpy._core.{module}", name)]


#: (module, name) -> what the restricted unpickler gives in its place
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("dnnlib.util", "EasyDict"): _PlainDict,
    ("numpy", "dtype"): _DType,
    ("numpy", "ndarray"): _InertArray,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda data: read_legacy_storage(data),
    **{key: _scalar for key in _numpy_names("multiarray", "scalar")},
    **{key: _inert_array for key in _numpy_names("multiarray", "_reconstruct")},
}


class _NetworkUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id in a network pickle")


# ---------------------------------------------------------------------------------------------
# storages: a legacy torch.save stream of one storage
# ---------------------------------------------------------------------------------------------
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _StorageUnpickler(pickle.Unpickler):
    """The pickles of a legacy stream: plain data, storage types, and persistent storage ids."""

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self.storages: list[tuple[str, torch.dtype, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a storage")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("a persistent id that is not a storage")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType) or numel < 0:
            raise pickle.UnpicklingError("a storage id without a storage type")
        self.storages.append((key, kind.dtype, numel))
        return key


def read_legacy_storage(data: bytes) -> Tensor:
    """The storage in a legacy ``torch.save`` stream of one storage, as a flat tensor, read
    without ``torch.load``: magic number, protocol, system info and key list are plain pickles;
    the storage is named by a persistent id; its bytes follow, each storage as an int64 element
    count then the elements, little-endian."""
    f = io.BytesIO(data)
    header = [_StorageUnpickler(f).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != 1001:
        raise pickle.UnpicklingError("a storage that is not a legacy torch.save stream")
    unpickler = _StorageUnpickler(f)
    root = unpickler.load()
    keys = _StorageUnpickler(f).load()
    if not isinstance(keys, list) or len(unpickler.storages) != 1 or root != unpickler.storages[0][0]:
        raise pickle.UnpicklingError("a storage stream that does not hold exactly one storage")
    key, dtype, numel = unpickler.storages[0]
    if keys != [key]:
        raise pickle.UnpicklingError("a storage stream whose key list does not match its storage")
    (count,) = struct.unpack("<q", f.read(8))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = f.read(count * itemsize)
    if count != numel or len(raw) != count * itemsize:
        raise pickle.UnpicklingError("a truncated storage")
    if sys.byteorder != "little":
        raise pickle.UnpicklingError("reading it needs a little-endian machine")
    return torch.frombuffer(bytearray(raw), dtype=dtype) if count else torch.empty(0, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# reading the file
# ---------------------------------------------------------------------------------------------
def is_network_pickle(path: str | os.PathLike) -> bool:
    """True for a ``.pkl`` file or a plain pickle that names ``torch_utils.persistence`` near its
    start (NVIDIA's network pickles); False for ``torch.save`` archives (even named ``.pkl``) and
    anything else."""
    p = Path(path)
    if zipfile.is_zipfile(p):
        return False  # a torch.save archive, whatever its name
    if p.suffix.lower() == ".pkl":
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head[:1] == b"\x80" and b"torch_utils.persistence" in head


def read_network_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level dict of a network pickle (``G``, ``D``, ``G_ema``, ...), networks as
    :class:`Persistent` records, read without running anything from the file.

    Raises:
        UserError: the file is missing, unreadable, or names a global outside the allow-list.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"network pickle {p} does not exist: give the path of a StyleGAN2-ADA .pkl file")
    try:
        with open(p, "rb") as f:
            top = _NetworkUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{p} was refused: {e} (genprior never runs code from a checkpoint); "
            "give a network pickle written by stylegan2-ada-pytorch or stylegan3"
        ) from None
    except (
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        OSError,
    ) as e:
        raise UserError(
            f"{p} is not a readable network pickle ({e.__class__.__name__}: {e}): give a .pkl written by "
            "stylegan2-ada-pytorch or stylegan3"
        ) from None
    if not isinstance(top, dict):
        raise UserError(
            f"{p} holds a {type(top).__name__}, not a network pickle's dict: give a StyleGAN2-ADA .pkl"
        )
    return top


# ---------------------------------------------------------------------------------------------
# G_ema -> the rosinality layout
# ---------------------------------------------------------------------------------------------
def _refuse(source: str, what: str) -> UserError:
    return UserError(
        f"{source} holds {what}, which genprior does not support: give a StyleGAN2(-ADA) "
        "generator with the default 'skip' architecture and no class labels"
    )


def convert_network_pickle(
    path_or_top: str | os.PathLike | Mapping[str, Any], which: str = "G_ema", source: str | None = None
) -> dict[str, Any]:
    """A rosinality-layout checkpoint ``{"g_ema": state_dict, "latent_avg": w_avg, "config": ...}``
    of the generator ``which`` of a network pickle; ``config`` holds ``lr_mlp`` and ``conv_clamp``,
    which :func:`~genprior.generators.stylegan2.load_stylegan2` reads.

    Raises:
        UserError: the file is not a StyleGAN2 network pickle, or holds a StyleGAN3, a ``resnet`` or
            ``orig`` architecture, or a conditional generator (one line naming which).
    """
    if isinstance(path_or_top, Mapping):
        top, source = dict(path_or_top), source or "the network pickle"
    else:
        top, source = read_network_pickle(path_or_top), source or str(path_or_top)
    g = top.get(which)
    if not isinstance(g, Persistent):
        keys = ", ".join(map(str, top)) or "none"
        raise UserError(
            f"{source} has no network {which!r} (keys: {keys}): give a network pickle holding G_ema"
        )
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if mapping is None or synthesis is None:
        raise UserError(
            f"{source}[{which!r}] is a {g.class_name} without mapping and synthesis networks: "
            "give a StyleGAN2 generator pickle"
        )
    if synthesis.child("input") is not None or any(re.fullmatch(r"L\d+_.*", n) for n in synthesis.children()):
        raise _refuse(source, "a StyleGAN3 (alias-free) generator")
    c_dim = int(g.state.get("c_dim", mapping.state.get("c_dim", 0)) or 0)
    if c_dim > 0 or mapping.child("embed") is not None:
        raise _refuse(source, f"a conditional generator (c_dim={c_dim})")
    res = sorted(int(m.group(1)) for n in synthesis.children() if (m := re.fullmatch(r"b(\d+)", n)))
    if not res or res[0] != 4 or res != [2**i for i in range(2, 2 + len(res))]:
        raise UserError(
            f"{source}[{which!r}] has synthesis blocks {res}, not b4, b8, ...: give a StyleGAN2 pickle"
        )
    blocks = [synthesis.child(f"b{r}") for r in res]
    for r, b in zip(res, blocks):
        arch = b.state.get("architecture", "skip")
        if arch != "skip" or b.child("skip") is not None:
            raise _refuse(source, f"a generator with the {arch!r} architecture")
        if b.child("torgb") is None:
            raise _refuse(source, f"a generator without a ToRGB layer in b{r}")
    return {
        "g_ema": _state_dict(mapping, blocks, source),
        "latent_avg": _need(mapping, "w_avg", source).float().clone(),
        "config": {"lr_mlp": _lr_multiplier(mapping, source), "conv_clamp": _conv_clamp(blocks)},
        "source": f"NVIDIA network pickle {Path(source).name}[{which}]",
    }


def _need(module: Persistent, name: str, source: str) -> Tensor:
    t = module.tensor(name)
    if t is None:
        raise UserError(
            f"{source}: the {module.class_name} lacks {name!r}: give an unmodified StyleGAN2-ADA pickle"
        )
    return t.float()


def _lr_multiplier(mapping: Persistent, source: str) -> float:
    fc0 = mapping.child("fc0")  # FullyConnectedLayer keeps lr_multiplier as its bias gain
    value = fc0.state.get("bias_gain") if fc0 is not None else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise UserError(
            f"{source}: the mapping network has no lr_multiplier: give an unmodified StyleGAN2-ADA pickle"
        )
    return float(value)


def _conv_clamp(blocks: list[Persistent]) -> float | None:
    clamps = {
        b.child(n).state.get("conv_clamp") for b in blocks for n in ("conv0", "conv1", "torgb") if b.child(n)
    }
    clamps.discard(None)
    if len(clamps) > 1:
        raise UserError(
            f"the synthesis layers clamp at different values {sorted(clamps)}: not a StyleGAN2-ADA pickle"
        )
    return float(clamps.pop()) if clamps else None


def _state_dict(mapping: Persistent, blocks: list[Persistent], source: str) -> dict[str, Tensor]:
    sd: dict[str, Tensor] = {}
    fcs = sorted(int(m.group(1)) for n in mapping.children() if (m := re.fullmatch(r"fc(\d+)", n)))
    if fcs != list(range(len(fcs))) or not fcs:
        raise UserError(f"{source}: mapping layers {fcs} are not fc0, fc1, ...: give a StyleGAN2-ADA pickle")
    dims = set()
    for i in fcs:
        fc = mapping.child(f"fc{i}")
        if fc.state.get("activation", "lrelu") != "lrelu":
            raise _refuse(source, f"a mapping network with {fc.state.get('activation')!r} activations")
        sd[f"style.{i + 1}.weight"] = _need(fc, "weight", source)
        sd[f"style.{i + 1}.bias"] = _need(fc, "bias", source)
        dims.update(sd[f"style.{i + 1}.weight"].shape)
    if len(dims) != 1:
        raise _refuse(
            source, f"a mapping network of widths {sorted(dims)} (z_dim, its layers and w_dim differ)"
        )

    def layer(prefix: str, conv: Persistent, noise_index: int) -> None:
        if conv.state.get("activation", "lrelu") != "lrelu":
            raise _refuse(source, f"synthesis layers with {conv.state.get('activation')!r} activations")
        weight = _need(conv, "weight", source)
        sd[f"{prefix}.conv.weight"] = weight.unsqueeze(0)
        sd[f"{prefix}.conv.modulation.weight"] = _need(conv.child("affine"), "weight", source)
        sd[f"{prefix}.conv.modulation.bias"] = _need(conv.child("affine"), "bias", source)
        sd[f"{prefix}.activate.bias"] = _need(conv, "bias", source)
        r = int(conv.state.get("resolution", 0)) or 0
        noise = conv.tensor("noise_const")
        strength = conv.tensor("noise_strength")
        if noise is None or strength is None or not conv.state.get("use_noise", True):
            noise, strength = torch.zeros(r, r), torch.zeros(())
        sd[f"{prefix}.noise.weight"] = strength.float().reshape(1)
        sd[f"noises.noise_{noise_index}"] = noise.float().reshape(1, 1, *noise.shape[-2:])
        if conv.state.get("up", 1) == 2:
            sd[f"{prefix}.conv.blur.kernel"] = _need(conv, "resample_filter", source) * 4

    def torgb(prefix: str, rgb: Persistent) -> None:
        sd[f"{prefix}.conv.weight"] = _need(rgb, "weight", source).unsqueeze(0)
        sd[f"{prefix}.conv.modulation.weight"] = _need(rgb.child("affine"), "weight", source)
        sd[f"{prefix}.conv.modulation.bias"] = _need(rgb.child("affine"), "bias", source)
        sd[f"{prefix}.bias"] = _need(rgb, "bias", source).reshape(1, -1, 1, 1)

    b4 = blocks[0]
    sd["input.input"] = _need(b4, "const", source).unsqueeze(0)
    layer("conv1", b4.child("conv1"), 0)
    torgb("to_rgb1", b4.child("torgb"))
    for i, b in enumerate(blocks[1:]):
        layer(f"convs.{2 * i}", b.child("conv0"), 2 * i + 1)
        layer(f"convs.{2 * i + 1}", b.child("conv1"), 2 * i + 2)
        torgb(f"to_rgbs.{i}", b.child("torgb"))
        sd[f"to_rgbs.{i}.upsample.kernel"] = _need(b, "resample_filter", source) * 4
    return sd


def write_converted(path_in: str | os.PathLike, path_out: str | os.PathLike) -> dict[str, Any]:
    """:func:`convert_network_pickle` then ``torch.save`` to ``path_out`` atomically; returns the
    checkpoint. The file loads with ``torch.load(weights_only=True)`` and rosinality's code."""
    ckpt = convert_network_pickle(path_in)
    with atomic_path(path_out) as tmp:
        torch.save(ckpt, tmp)
    return ckpt
