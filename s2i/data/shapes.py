"""The "shapes" dataset: the offline default that runs anywhere in minutes.

One filled shape (circle, square or triangle) in one of eight colours on a neutral grey background,
small or large, in one of five positions. Class = colour × shape (24 classes). Every image has ten
English captions from varied templates; each names the colour and the shape, some also the size and
the position. Everything is drawn from ``numpy.random.default_rng([seed, index])``, so an image and its
captions depend only on the seed and its index, and an interrupted build resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 130, 0),
    "purple": (130, 40, 170),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.30, "large": 0.60}
POSITIONS = ("center", "left", "right", "top", "bottom")
COLOUR_JITTER = 12
BACKGROUND_RANGE = (100, 160)
# Where each position puts the shape's centre, as a fraction of the side. 0.2 off centre keeps a large
# (60 %) shape inside the frame.
_CENTRES = {"center": (0.5, 0.5), "left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7)}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "center": ("in the center", "in the middle"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
}
# {c} colour, {s} shape, {z} size word, {p} position phrase. Every template names colour and shape.
TEMPLATES = (
    "a {c} {s}",
    "a {z} {c} {s}",
    "a {c} {s} {p}",
    "a {z} {c} {s} {p}",
    "there is a {c} {s}",
    "there is a {z} {c} {s} {p}",
    "this picture shows a {c} {s}",
    "a {c} {s} on a grey background",
    "the image contains one {c} {s} {p}",
    "i can see a {z} {s} that is {c}",
    "a {s} painted {c}",
    "one {c} {s}, quite {z}",
    "a {c} colored {s} {p}",
    "the {s} is {c}",
)


def class_names() -> list[str]:
    """The 24 class names in label order, ``"001.red_circle"`` … ``"024.black_triangle"``."""
    return [f"{i + 1:03d}.{c}_{s}" for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES)]


@dataclass(frozen=True)
class ShapeSample:
    colour: str
    shape: str
    size: str
    position: str
    rgb: tuple[int, int, int]
    background: int
    scale: float

    @property
    def class_name(self) -> str:
        return class_names()[list(COLOURS).index(self.colour) * len(SHAPES) + SHAPES.index(self.shape)]


def draw_sample(rng: np.random.Generator, colour: str, shape: str) -> ShapeSample:
    """The free attributes of one image of class (colour, shape)."""
    base = np.array(COLOURS[colour])
    rgb = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
    size = str(rng.choice(list(SIZES)))
    return ShapeSample(
        colour=colour,
        shape=shape,
        size=size,
        position=str(rng.choice(POSITIONS)),
        rgb=tuple(int(v) for v in rgb),
        background=int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1)),
        scale=float(SIZES[size] * rng.uniform(0.9, 1.1)),
    )


def render(sample: ShapeSample, rng: np.random.Generator, size: int = 256, noise: float = 3.0,
           supersample: int = 4) -> Image.Image:
    """An RGB image of ``sample``: drawn at ``supersample``× and downscaled (anti-aliased edges), plus
    slight Gaussian noise of ``noise`` grey levels."""
    big = size * supersample
    img = Image.new("RGB", (big, big), (sample.background,) * 3)
    draw = ImageDraw.Draw(img)
    cx, cy = (v * big for v in _CENTRES[sample.position])
    half = sample.scale * big / 2
    if sample.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=sample.rgb)
    elif sample.shape == "square":
        side = half * 0.886  # same area as the circle, so size words mean the same for every shape
        draw.rectangle([cx - side, cy - side, cx + side, cy + side], fill=sample.rgb)
    else:
        r = half  # circumradius: the top vertex stays inside the frame at the 'top' position
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
        draw.polygon(pts, fill=sample.rgb)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, noise, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def captions(sample: ShapeSample, rng: np.random.Generator, n: int = 10) -> list[str]:
    """``n`` captions from distinct templates (repeats only when ``n`` exceeds the template count)."""
    order = list(rng.permutation(len(TEMPLATES)))
    while len(order) < n:
        order += list(rng.permutation(len(TEMPLATES)))
    out = []
    for t in order[:n]:
        out.append(TEMPLATES[t].format(
            c=sample.colour,
            s=sample.shape,
            z=str(rng.choice(_SIZE_WORDS[sample.size])),
            p=str(rng.choice(_POSITION_PHRASES[sample.position])),
        ))
    return out


def class_plan(num_images: int, seed: int) -> list[tuple[str, str]]:
    """(colour, shape) of every image index: the classes in turn, so they are balanced, then shuffled."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    plan = [pairs[i % len(pairs)] for i in range(num_images)]
    order = np.random.default_rng([seed, 0xC1A55]).permutation(num_images)
    return [plan[i] for i in order]


def split_indices(
    plan: list[tuple[str, str]], test_fraction: float, seed: int, holdout: tuple[tuple[str, str], ...] = ()
) -> tuple[list[int], list[int]]:
    """Train and test image indices: per class, ``test_fraction`` of its images (at least one) go to test,
    so every class is in both; classes in ``holdout`` (the compositional split) go to test entirely."""
    rng = np.random.default_rng([seed, 0x5B117])
    train, test = [], []
    for pair in dict.fromkeys(plan):
        idx = [i for i, p in enumerate(plan) if p == pair]
        if pair in holdout:
            test += idx
            continue
        idx = list(rng.permutation(idx))
        k = max(1, int(round(test_fraction * len(idx)))) if len(idx) > 1 else 0
        test += [int(i) for i in idx[:k]]
        train += [int(i) for i in idx[k:]]
    return sorted(train), sorted(test)


def parse_holdout(text: str) -> tuple[tuple[str, str], ...]:
    """``"red circle, blue square"`` → ``(("red", "circle"), ("blue", "square"))``, checked."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.replace("_", " ").split()
        if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise ValueError(
                f"holdout pair {part!r} must be '<colour> <shape>' with a colour in {list(COLOURS)} "
                f"and a shape in {list(SHAPES)}"
            )
        pairs.append((words[0], words[1]))
    return tuple(pairs)
