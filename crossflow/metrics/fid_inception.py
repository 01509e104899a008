"""The FID InceptionV3: TensorFlow's 2015-12-05 Inception graph in torchvision's ``Inception3`` layout.

Our own implementation (no torchvision) of the network that the standard FID weights file
``pt_inception-2015-12-05-6726825d.pth`` belongs to: torchvision's key names, 1008 output classes,
no auxiliary head, and the FID variants of the pooling branches (the TF graph averages without
counting the zero padding, and the last block max-pools). Inputs in [0, 1] are resized to 299×299
bilinearly (``align_corners=False``) and mapped to [-1, 1]; the output is the 2048-d pool3 feature.
:meth:`FIDInceptionV3.features_and_logits` adds the 1008-class logits without the bias (``pool3 · Wᵀ``),
the Inception Score's input in the OpenAI evaluator and torch-fidelity (``logits_unbiased``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: File name of the standard FID weights (as used by pytorch-fid and the official evaluation).
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_SIZE = 299
FID_FEATURE_DIM = 2048

Pool = Literal["avg", "max"]


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as the TF graph), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool3x3(x: Tensor, kind: Pool) -> Tensor:
    """3×3 stride-1 pooling with padding 1: ``avg`` ignores the padded zeros (TF), ``max`` as usual."""
    if kind == "avg":
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """Mixed_5b/c/d: 1×1, 5×5, double 3×3 and pooled branches (64 + 64 + 96 + ``pool_features`` channels)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(pool3x3(x, "avg"))], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a: stride-2 reduction (3×3, double 3×3, max-pool)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """Mixed_6b–e: factorised 7×7 branches of width ``channels_7x7`` (4 × 192 output channels)."""

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

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(pool3x3(x, "avg"))], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a: stride-2 reduction (3×3, 7×7-then-3×3, max-pool)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b/c: expanded 3×3 branches; ``pool`` is ``avg`` for 7b and ``max`` for 7c in the FID graph."""

    def __init__(self, in_channels: int, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], dim=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool3x3(x, self.pool))], dim=1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 for FID: ``(B, 3, H, W)`` images in [0, 1] → ``(B, 2048)`` pool3 features.

    Args:
        resize_input: bilinearly resize every input to 299×299 first (``align_corners=False``), as the
            standard FID code does; without it the net still pools any size ≥ 75 to 2048 features.
        normalize_input: map [0, 1] inputs to the [-1, 1] range the weights expect.
    """

    def __init__(self, *, resize_input: bool = True, normalize_input: bool = True) -> None:
        super().__init__()
        self.resize_input = resize_input
        self.normalize_input = normalize_input
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
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)  # not used for FID; its weight (no bias) gives the Inception Score logits

    def forward(self, x: Tensor) -> Tensor:
        """Pool3 features ``(B, 2048)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = x.to(self.fc.weight.dtype)
        if self.resize_input:
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One forward: pool3 features ``(B, 2048)`` (exactly :meth:`forward`) and logits ``(B, 1008)``.

        The logits are ``features · fc.weightᵀ`` *without* ``fc.bias``, as the IS code of the OpenAI
        evaluator (``softmax/logits/MatMul``) and torch-fidelity (``logits_unbiased``) take them.

        Args:
            x: ``(B, 3, H, W)`` images in [0, 1] (resized and normalised as in :meth:`forward`).
        """
        features = self(x)
        return features, F.linear(features, self.fc.weight)


def load_fid_inception(path: str | Path, *, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load the FID weights file strictly, in eval mode.

    Args:
        path: local ``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict in the torchvision layout).
        device: where the network goes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file's keys or shapes do not match the layout (missing/unexpected keys named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights {path} not found (the standard file is {FID_WEIGHTS_NAME}, "
                                f"distributed with pytorch-fid)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # the safe loader: tensors only
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - text files, truncated archives, pickled objects: KeyError, EOFError,
        # RuntimeError, UnpicklingError ...; the loader's own text may suggest weights_only=False, which would run
        # code from the file: not repeated here.
        raise ValueError(f"{path} is not a valid FID weights file: it cannot be read as a torch file of tensors "
                         f"({type(exc).__name__}); the expected file is {FID_WEIGHTS_NAME} (pytorch-fid's "
                         "InceptionV3 state dict)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a valid FID weights file: it holds a {type(state).__name__}, not a state "
                         f"dict ({FID_WEIGHTS_NAME} is pytorch-fid's InceptionV3 state dict)")
    model = FIDInceptionV3()
    expected = model.state_dict()
    # The released file predates BatchNorm's num_batches_tracked buffer; it plays no part in eval mode.
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        details = "; ".join(f"{label} ({len(keys)}): {keys[:4]}" for label, keys in
                            (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys)
        raise ValueError(f"{path} is not an FID InceptionV3 state dict in the torchvision layout: {details}")
    model.load_state_dict(state, strict=True)
    log.info("loaded FID InceptionV3 weights from %s", path)
    return model.to(device).eval().requires_grad_(False)
