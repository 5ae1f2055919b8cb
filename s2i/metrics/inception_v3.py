"""ImageNet Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision"), with parameter names laid out as torchvision's ``inception_v3``.

Written from the architecture so that torchvision's released ``inception_v3_google-*.pth`` (the
Google TF weights converted by torchvision) loads strictly into :class:`InceptionV3` without
torchvision being installed. The layout follows torchvision's ``models/inception.py``:

* ``BasicConv2d`` = conv (no bias) → BatchNorm (eps 1e-3) → ReLU, as ``<name>.conv`` / ``<name>.bn``;
* stem ``Conv2d_1a_3x3`` … ``Conv2d_4a_3x3`` with two 3×3/2 max pools, then ``Mixed_5b``–``Mixed_5d``
  (35×35), ``Mixed_6a`` (grid reduction), ``Mixed_6b``–``Mixed_6e`` (17×17, factorised 7×7),
  ``Mixed_7a`` (reduction), ``Mixed_7b``/``Mixed_7c`` (8×8, expanded 3×3 banks), global average pool
  → 2048-d "pool3" → dropout → ``fc``;
* ``AuxLogits`` on the 17×17 grid, kept so that the released weights load strictly; it is never
  run here (evaluation only needs the main head).

``transform_input=True`` reproduces torchvision's handling of the Google weights: the input is
expected normalised with the ImageNet mean/std, and the first step turns it back into the
``(x - 0.5) / 0.5`` scaling those weights were trained with.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InceptionV3", "load_inception_v3"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm(eps=1e-3) → ReLU. ``(B, in, H, W)`` → ``(B, out, H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_branch(x: torch.Tensor, conv: BasicConv2d) -> torch.Tensor:
    # 3x3 average pool, stride 1, zero padding counted in the mean (TF "SAME" avg pool in the
    # converted graph, and torchvision's default count_include_pad=True).
    return conv(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b–5d): 1×1, 5×5, double 3×3 and pool branches → ``224 + pool_features``."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _pool_branch(x, self.branch_pool),
        ], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (Mixed_6a): strided 3×3, strided double 3×3, max pool → ``480 + in``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class InceptionC(nn.Module):
    """17×17 block (Mixed_6b–6e) with 7×7 convolutions factorised into 1×7 and 7×1 → 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = conv(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            _pool_branch(x, self.branch_pool),
        ], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17→8 (Mixed_7a): strided 3×3, 7×7-then-strided-3×3, max pool → ``512 + in``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            b7,
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class InceptionE(nn.Module):
    """8×8 block (Mixed_7b, 7c) with 3×3 convolutions expanded into parallel 1×3 and 3×1 → 2048."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            _pool_branch(x, self.branch_pool),
        ], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17×17 grid (training-time regulariser; unused at evaluation)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(nn.Module):
    """Inception-v3 classifier for ``(B, 3, 299, 299)`` RGB input.

    Args:
        num_classes: size of ``fc`` (1000 for ImageNet).
        aux_logits: build ``AuxLogits`` (needed to load torchvision's released weights strictly).
        transform_input: expect ImageNet mean/std-normalised input and map it to ``(x - 0.5) / 0.5``
            first, as torchvision does for the Google weights. With ``False`` the input goes to
            ``Conv2d_1a_3x3`` unchanged.

    ``forward`` returns ``(B, num_classes)`` logits; :meth:`features` the ``(B, 2048)`` pool3
    vector before dropout and ``fc``.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, num_classes)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        # Undo the ImageNet normalisation per channel and apply (x - 0.5) / 0.5 in one affine step.
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 299, 299)`` → ``(B, 2048)`` globally average-pooled Mixed_7c output (pool3)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"InceptionV3 expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
        if self.transform_input:
            x = self._transform(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 299, 299)`` → ``(B, num_classes)`` logits (the auxiliary head is not run)."""
        return self.fc(self.dropout(self.features(x)))


def load_inception_v3(path: str | Path, transform_input: bool = True) -> InceptionV3:
    """Build :class:`InceptionV3` from a torchvision-layout state dict (e.g. ``inception_v3_google-*.pth``).

    The number of classes is read from ``fc.weight``; ``AuxLogits`` is built when the file has its
    weights. A ``module.`` prefix (DataParallel/DDP) is stripped. Loading is strict, so a file of
    another architecture fails with the names of the missing or unexpected keys.

    Args:
        path: the ``.pth`` file.
        transform_input: see :class:`InceptionV3`; ``True`` for torchvision's Google weights.

    Returns:
        The network in eval mode, on CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception-v3 weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means "not a state dict"
        raise ValueError(f"{path} is not a readable PyTorch state dict: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "fc.weight" not in {k.removeprefix("module.") for k in state}:
        raise ValueError(f"{path} is not a torchvision-layout Inception-v3 state dict (no 'fc.weight' key)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = InceptionV3(num_classes=int(state["fc.weight"].shape[0]),
                      aux_logits=any(k.startswith("AuxLogits.") for k in state), transform_input=transform_input)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[1:3])
        raise ValueError(f"{path} does not match torchvision's Inception-v3 layout: {detail[:500]}") from None
    return net.eval()
