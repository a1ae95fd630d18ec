"""Generated scenes of coloured shapes with compositional captions.

Each scene holds one shape or two shapes in a spatial relation, drawn on black and captioned
"a small red circle to the left of a large blue square". Scene `i` of a split is a pure function
of `(seed, split, i)`, so a dataset of any length is reproducible and the splits never share a scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPE_NAMES = ("circle", "square", "triangle")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (60, 90, 240),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (240, 240, 240),
}
SIZES = {"small": 0.13, "large": 0.21}  # radius as a share of the image side
# relation: (inverse relation, axis along which the first shape comes first: 0 = x, 1 = y)
RELATIONS = {
    "to the left of": ("to the right of", 0),
    "to the right of": ("to the left of", 0),
    "above": ("below", 1),
    "below": ("above", 1),
}
SPLIT_IDS = {"train": 0, "validation": 1}
_SUPERSAMPLE = 4  # draw at 4× and downsample: antialiased edges


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPE_NAMES
    color: str  # one of COLORS
    size: str  # one of SIZES
    center: tuple[float, float]  # (x, y) as shares of the image side, in [0, 1]

    def describe(self, with_size: bool = True) -> str:
        return f"{self.size} {self.color} {self.kind}" if with_size else f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # one or two shapes
    relation: str | None  # how shapes[0] stands to shapes[1], e.g. "to the left of"

    def captions(self) -> list[str]:
        """All phrasings of this scene's caption; the first is the canonical one."""
        if len(self.shapes) == 1:
            (a,) = self.shapes
            return [f"a {a.describe()}", f"a {a.describe(with_size=False)}", f"one {a.describe()} on black"]
        a, b = self.shapes
        inverse = RELATIONS[self.relation][0]
        return [
            f"a {a.describe()} {self.relation} a {b.describe()}",
            f"a {b.describe()} {inverse} a {a.describe()}",
            f"a {a.describe(with_size=False)} {self.relation} a {b.describe(with_size=False)}",
            f"a {a.describe()} and a {b.describe()}",
        ]


def place_centers(
    rng: np.random.Generator, sizes: Sequence[str], relation: str | None
) -> list[tuple[float, float]]:
    """Centres (x, y) for one shape (`relation` None) or two shapes, the first `relation` the second.

    This is how `sample_scene` places its shapes (same draws in the same order), shared with callers that
    choose the kinds, colours, sizes and relation themselves (e.g. `latentzoo.evaluation.shapes`).
    """
    radii = [SIZES[s] for s in sizes]
    if relation is None:
        if len(radii) != 1:
            raise ValueError(f"`sizes` must name one shape when `relation` is None, got {list(sizes)}.")
        r = radii[0]
        return [(float(rng.uniform(r, 1 - r)), float(rng.uniform(r, 1 - r)))]
    if relation not in RELATIONS:
        raise ValueError(f"`relation` must be one of {list(RELATIONS)} or None, got {relation!r}.")
    if len(radii) != 2:
        raise ValueError(f"`sizes` must name two shapes for a relation, got {list(sizes)}.")

    axis = RELATIONS[relation][1]
    first_is_lower = relation in ("to the left of", "above")  # smaller x / smaller y (rows grow down)
    # Along `axis` the shapes are apart by more than their radii (no overlap, the relation holds
    # for every pixel); across it, anywhere. Rejection sampling: at most a few draws.
    order = 1 if first_is_lower else -1
    while True:
        along = [rng.uniform(r, 1 - r) for r in radii]
        if order * (along[1] - along[0]) >= radii[0] + radii[1] + 0.04:
            break
    across = [rng.uniform(r, 1 - r) for r in radii]
    return [
        (float(along[k]), float(across[k])) if axis == 0 else (float(across[k]), float(along[k]))
        for k in range(2)
    ]


def sample_scene(rng: np.random.Generator, two_shape_probability: float = 0.75) -> Scene:
    """Draw a random scene; two shapes never share both kind and colour, so captions are unambiguous."""

    def random_shape(center: tuple[float, float], size: str, exclude: tuple[str, str] | None = None) -> Shape:
        while True:
            kind = SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
            color = list(COLORS)[rng.integers(len(COLORS))]
            if (kind, color) != exclude:
                return Shape(kind, color, size, center)

    sizes = [list(SIZES)[rng.integers(len(SIZES))] for _ in range(2)]
    if rng.random() >= two_shape_probability:
        (center,) = place_centers(rng, sizes[:1], None)
        return Scene((random_shape(center, sizes[0]),), None)

    relation = list(RELATIONS)[rng.integers(len(RELATIONS))]
    centers = place_centers(rng, sizes, relation)
    a = random_shape(centers[0], sizes[0])
    b = random_shape(centers[1], sizes[1], exclude=(a.kind, a.color))
    return Scene((a, b), relation)


def render_scene(scene: Scene, image_size: int = 32) -> np.ndarray:
    """Draw a scene: uint8 array (image_size, image_size, 3)."""
    side = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x, y, r = shape.center[0] * side, shape.center[1] * side, SIZES[shape.size] * side
        color = COLORS[shape.color]
        if shape.kind == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
        elif shape.kind == "square":
            h = r * 0.85  # same area feel as the circle
            draw.rectangle([x - h, y - h, x + h, y + h], fill=color)
        else:
            draw.polygon([(x, y - r), (x - r, y + 0.8 * r), (x + r, y + 0.8 * r)], fill=color)
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(image)


def generate_scenes(num_scenes: int, seed: int, split: str = "train") -> list[Scene]:
    """Scenes `0 .. num_scenes-1` of a split; scene `i` depends only on `(seed, split, i)`."""
    if split not in SPLIT_IDS:
        raise ValueError(f"`split` must be one of {sorted(SPLIT_IDS)}, got {split!r}.")
    return [sample_scene(np.random.default_rng([seed, SPLIT_IDS[split], i])) for i in range(num_scenes)]
