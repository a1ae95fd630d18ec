"""A GenEval-style compositional score for the `shapes` dataset, exact by construction.

GenEval (Ghosh et al. 2023, arXiv:2310.11513) samples prompts from six families, detects the objects in
each generated image and checks the prompt's structure (which objects, how many, which colours, where).
For `shapes` the renderer is known, so the detector need not be learned: every pixel is assigned to the
nearest palette colour of `latentzoo.data.shapes.COLORS` or to the black background, each colour's connected
components are shapes, and a shape's kind follows from its geometry (fill ratio of its bounding box and
vertical asymmetry, both measured on antialiased coverage, not on a thresholded mask).

The families, phrased in the training captions' grammar (`Scene.captions()`; the model knows no other):

- single_object, "a small red circle": a circle is detected.
- two_objects, "a small red circle and a large blue square": a circle and a square are detected.
- counting, "one small red circle on black" or "a small red circle and a large blue circle": exactly one
  (two) shapes are detected, of the named kinds (one circle; two circles).
- colors, "a red circle": a red circle is detected.
- position, "a red circle to the left of a blue square": a circle and a square are detected and the
  circle's centre lies left of the square's (`relation_holds`).
- color_attribute_binding, "a small red circle and a large blue square": a red circle and a blue square
  are detected.

As in GenEval, only the family's skill is checked: two_objects and position ignore colours (the grammar
names them anyway), no family checks sizes. Kinds differ within two_objects, position and colour binding
prompts, and colours within colour binding, so every check is unambiguous. The reported `overall` is the mean
of the family accuracies, GenEval's overall score.

Evaluation prompts come from `np.random.default_rng([seed, 0x6E6E, family])`: training scenes use
`[seed, split_id, i]` with split ids 0 and 1, so no evaluation prompt is drawn from a stream the training
data used.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..data.shapes import COLORS, RELATIONS, SHAPE_NAMES, SIZES, Scene, Shape, place_centers, render_scene
from .sampling import sample_images, sampling_record, sampling_settings

FAMILIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attribute_binding")
EVALUATION_STREAM = 0x6E6E  # second seed word of the prompt generator; training uses split ids 0 and 1
MAX_COLOR_DISTANCE = 0.4  # RGB distance in [0, 1]^3 to the nearest colour; beyond it a pixel is background
MIN_AREA_FRACTION = 0.25  # components under this share of the smallest shape's area are noise
COVERAGE_FLOOR = 0.15  # coverage below this (relative to the shape's interior) is noise, not shape
POSITION_MARGIN = 0.1  # GenEval's POSITION_THRESHOLD: centres must differ by 0.1 × (sum of extents)
# Prototypes in (fill ratio of the bounding box, |vertical asymmetry|): a disc fills π/4 of its box; a square
# all of it; render_scene's triangle (apex at y - r, base at y + 0.8 r) half of it, and its centroid lies
# 0.3 r below its box centre, 1/6 of its height 1.8 r.
KIND_PROTOTYPES = {"circle": (math.pi / 4, 0.0), "square": (1.0, 0.0), "triangle": (0.5, 1 / 6)}

_PALETTE = np.array([(0, 0, 0), *COLORS.values()], dtype=np.float32) / 255  # (7, 3): background first
_COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class DetectedShape:
    kind: str  # one of SHAPE_NAMES
    color: str  # one of COLORS
    size: str  # the SIZES entry whose rendered area is nearest (on a log scale)
    center: tuple[float, float]  # coverage-weighted centroid (x, y) as shares of the image side
    extent: tuple[float, float]  # (width, height) as shares of the image side
    area: float  # covered pixels as a share of the image area


@dataclass(frozen=True)
class ObjectSpec:
    kind: str  # one of SHAPE_NAMES
    color: str  # one of COLORS
    size: str | None = None  # one of SIZES, or None where the prompt names no size


@dataclass(frozen=True)
class ShapesPrompt:
    family: str  # one of FAMILIES
    prompt: str  # the text given to the model, a training-caption phrasing
    objects: tuple[ObjectSpec, ...]  # one or two objects, in the order the prompt names them
    relation: str | None = None  # how objects[0] stands to objects[1] (position family only)
    count: int | None = None  # exact number of shapes required (counting family only)


# --------------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------------


def _to_hwc(image) -> np.ndarray:
    """(3, H, W) float in [0, 1] (tensor or array), or (H, W, 3) uint8 → (H, W, 3) float32 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"`image` as uint8 must be (H, W, 3), got shape {array.shape}.")
        array = array.astype(np.float32) / 255
    else:
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"`image` as floats must be (3, H, W) in [0, 1], got shape {array.shape}.")
        array = np.clip(array.astype(np.float32).transpose(1, 2, 0), 0, 1)
    if array.shape[0] != array.shape[1]:
        raise ValueError(f"`image` must be square, got {array.shape[1]}×{array.shape[0]} pixels.")
    return array


@functools.cache
def reference_areas(image_size: int) -> dict[tuple[str, str], float]:
    """Covered pixels of each (kind, size) as `render_scene` draws it at `image_size`, centred."""
    white = COLORS["white"][0]  # (240, 240, 240): a pixel's coverage is its value / 240
    areas = {}
    for kind, size in itertools.product(SHAPE_NAMES, SIZES):
        scene = Scene((Shape(kind, "white", size, (0.5, 0.5)),), None)
        areas[kind, size] = float(render_scene(scene, image_size)[..., 0].sum()) / white
    return areas


def classify_pixels(pixels: np.ndarray, max_color_distance: float = MAX_COLOR_DISTANCE) -> np.ndarray:
    """(H, W, 3) in [0, 1] → (H, W) labels: 0 background, k ≥ 1 the k-th colour of COLORS.

    A pixel takes the nearest of black and the palette; one farther than `max_color_distance` from its
    nearest colour is murky and counts as background.
    """
    distances = np.linalg.norm(pixels[:, :, None, :] - _PALETTE, axis=-1)  # (H, W, 7)
    labels = distances.argmin(axis=-1)
    labels[distances.min(axis=-1) > max_color_distance] = 0
    return labels


def _coverage(pixels: np.ndarray, component: np.ndarray, background: np.ndarray, color: np.ndarray):
    """(H, W) share of each pixel covered by `color` on black, over the component and its 1-pixel rim.

    An antialiased edge pixel is alpha · colour (box downsampling mixes with black linearly), so alpha is
    the projection <p, c> / <c, c>; the rim includes edge pixels too dark to pass the colour threshold.
    Alpha is relative to the shape's own interior (its 90th percentile: 1 on renders), so a uniformly
    dimmer shape keeps its geometry, and coverage under COVERAGE_FLOOR (noise on the rim) is dropped.
    """
    rim = ndimage.binary_dilation(component, structure=np.ones((3, 3), bool)) & (background | component)
    alpha = np.clip(pixels @ color / (color @ color), 0, 1) * rim  # (H, W)
    interior = max(float(np.percentile(alpha[component], 90)), 1e-6)
    alpha = np.clip(alpha / interior, 0, 1)
    return np.where(alpha < COVERAGE_FLOOR, 0.0, alpha)


def _kind(alpha: np.ndarray, width: float, height: float, area: float) -> str:
    """Nearest KIND_PROTOTYPES entry in (fill ratio, |vertical asymmetry|), from coverage `alpha` (H, W)."""
    fill = area / (width * height)
    rows = alpha.max(axis=1)  # (H,) coverage profile down the image
    covered = np.nonzero(rows)[0]
    top = covered[0] + 1 - rows[covered[0]]  # sub-pixel box edges from the partial first/last rows
    bottom = covered[-1] + rows[covered[-1]]
    centroid_y = (alpha.sum(axis=1) * (np.arange(len(rows)) + 0.5)).sum() / area
    asymmetry = abs(centroid_y - (top + bottom) / 2) / height  # |·|: a flipped triangle is still one
    features = np.array([fill, asymmetry])
    return min(KIND_PROTOTYPES, key=lambda kind: np.linalg.norm(features - KIND_PROTOTYPES[kind]))


def _size(kind: str, area: float, image_size: int) -> str:
    """The SIZES entry whose rendered area of `kind` is nearest to `area` on a log scale."""
    areas = reference_areas(image_size)
    return min(SIZES, key=lambda size: abs(math.log(area / areas[kind, size])))


def detect_shapes(
    image,
    max_color_distance: float = MAX_COLOR_DISTANCE,
    min_area_fraction: float = MIN_AREA_FRACTION,
) -> list[DetectedShape]:
    """The coloured shapes in one image, largest first.

    Args:
        image: (3, H, W) float in [0, 1], tensor or array, as pipelines return with `output_type="pt"`;
            a (H, W, 3) uint8 array, as `render_scene` returns, is converted. Square, any side (32-64 tested).
        max_color_distance: RGB distance (in [0, 1]^3) beyond which a pixel is background.
        min_area_fraction: components covering less than this share of the smallest shape's rendered
            area at this resolution (a small triangle) are dropped as noise.
    """
    if not 0 <= min_area_fraction < 1:
        raise ValueError(f"`min_area_fraction` must be in [0, 1), got {min_area_fraction}.")
    pixels = _to_hwc(image)  # (S, S, 3)
    side = pixels.shape[0]
    labels = classify_pixels(pixels, max_color_distance)
    background = labels == 0
    min_area = min_area_fraction * min(reference_areas(side).values())
    ys, xs = np.mgrid[:side, :side] + 0.5  # pixel centres

    shapes = []
    for index, name in enumerate(_COLOR_NAMES, start=1):
        components, count = ndimage.label(labels == index)  # 4-connected
        for component in range(1, count + 1):
            alpha = _coverage(pixels, components == component, background, _PALETTE[index])
            area = float(alpha.sum())
            if area <= 0 or area < min_area:
                continue
            width, height = float(alpha.max(axis=0).sum()), float(alpha.max(axis=1).sum())
            kind = _kind(alpha, width, height, area)
            center = (float((alpha * xs).sum() / area / side), float((alpha * ys).sum() / area / side))
            shapes.append(
                DetectedShape(
                    kind=kind,
                    color=name,
                    size=_size(kind, area, side),
                    center=center,
                    extent=(width / side, height / side),
                    area=area / side**2,
                )
            )
    return sorted(shapes, key=lambda shape: -shape.area)


def relation_holds(first: DetectedShape, second: DetectedShape, relation: str) -> bool:
    """Whether `first` stands `relation` to `second`, e.g. "to the left of".

    GenEval's rule along the relation's axis: the centres differ in the right direction by more than
    POSITION_MARGIN × (sum of both extents along the axis). Unlike GenEval the relation need not be the
    dominant direction: training scenes separate shapes along the axis and place them anywhere across it.
    """
    if relation not in RELATIONS:
        raise ValueError(f"`relation` must be one of {list(RELATIONS)}, got {relation!r}.")
    axis = RELATIONS[relation][1]  # 0: x, 1: y (rows grow down)
    first_is_lower = relation in ("to the left of", "above")
    offset = second.center[axis] - first.center[axis]  # > 0 when `first` is lower on the axis
    margin = POSITION_MARGIN * (first.extent[axis] + second.extent[axis])
    return offset > margin if first_is_lower else -offset > margin


# --------------------------------------------------------------------------------------------------------
# Checks: one per family, GenEval's rules on the detections
# --------------------------------------------------------------------------------------------------------


def _find(shapes: list[DetectedShape], kind: str, color: str | None = None) -> DetectedShape | None:
    """The largest detection of `kind` (and `color`, if given), or None."""
    return next((s for s in shapes if s.kind == kind and color in (None, s.color)), None)


def _check_single_object(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    return _find(shapes, prompt.objects[0].kind) is not None


def _check_two_objects(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    return all(_find(shapes, spec.kind) is not None for spec in prompt.objects)


def _check_counting(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    return len(shapes) == prompt.count and sorted(s.kind for s in shapes) == sorted(
        spec.kind for spec in prompt.objects
    )


def _check_colors(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    (spec,) = prompt.objects
    return _find(shapes, spec.kind, spec.color) is not None


def _check_position(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    first, second = (_find(shapes, spec.kind) for spec in prompt.objects)
    return first is not None and second is not None and relation_holds(first, second, prompt.relation)


def _check_color_attribute_binding(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    return all(_find(shapes, spec.kind, spec.color) is not None for spec in prompt.objects)


FAMILY_CHECKS = {
    "single_object": _check_single_object,
    "two_objects": _check_two_objects,
    "counting": _check_counting,
    "colors": _check_colors,
    "position": _check_position,
    "color_attribute_binding": _check_color_attribute_binding,
}


def check_prompt(shapes: list[DetectedShape], prompt: ShapesPrompt) -> bool:
    """Whether detections `shapes` satisfy `prompt` under its family's rule (see the module docstring)."""
    if prompt.family not in FAMILY_CHECKS:
        raise ValueError(f"`prompt.family` must be one of {FAMILIES}, got {prompt.family!r}.")
    return FAMILY_CHECKS[prompt.family](shapes, prompt)


# --------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------


def _balanced(rng: np.random.Generator, options: Sequence, n: int) -> list:
    """`n` picks from `options`, each ⌊n/k⌋ or ⌈n/k⌉ times: seeded permutations end to end, truncated."""
    rounds = -(-n // len(options))
    return [options[i] for _ in range(rounds) for i in rng.permutation(len(options))][:n]


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _describe(spec: ObjectSpec) -> str:
    """The object as `Shape.describe` words it: "small red circle", or "red circle" without a size."""
    return f"{spec.size} {spec.color} {spec.kind}" if spec.size else f"{spec.color} {spec.kind}"


_KIND_PAIRS = list(itertools.permutations(SHAPE_NAMES, 2))  # 6 ordered pairs of different kinds
_COLOR_PAIRS = list(itertools.permutations(_COLOR_NAMES, 2))  # 30 ordered pairs of different colours
_SIZE_NAMES = tuple(SIZES)


def _single_object_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """Prompts like "a small red circle": kinds, colours and sizes each balanced."""
    kinds, colors, sizes = (
        _balanced(rng, options, n) for options in (SHAPE_NAMES, _COLOR_NAMES, _SIZE_NAMES)
    )
    specs = [ObjectSpec(k, c, s) for k, c, s in zip(kinds, colors, sizes, strict=True)]
    return [ShapesPrompt("single_object", f"a {_describe(spec)}", (spec,)) for spec in specs]


def _and_prompt(family: str, specs: tuple[ObjectSpec, ObjectSpec], count: int | None = None) -> ShapesPrompt:
    """The training phrasing "a small red circle and a large blue square" (it always names sizes)."""
    return ShapesPrompt(family, f"a {_describe(specs[0])} and a {_describe(specs[1])}", specs, count=count)


def _two_objects_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """Ordered pairs of different kinds balanced; colours and sizes drawn freely."""
    prompts = []
    for kinds in _balanced(rng, _KIND_PAIRS, n):
        specs = tuple(ObjectSpec(k, _pick(rng, _COLOR_NAMES), _pick(rng, _SIZE_NAMES)) for k in kinds)
        prompts.append(_and_prompt("two_objects", specs))
    return prompts


def _counting_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """(count, kind) balanced: "one small red circle on black", "a small red circle and a large blue circle"
    (two of a kind: the grammar has no numerals)."""
    prompts = []
    for count, kind in _balanced(rng, list(itertools.product((1, 2), SHAPE_NAMES)), n):
        if count == 1:
            spec = ObjectSpec(kind, _pick(rng, _COLOR_NAMES), _pick(rng, _SIZE_NAMES))
            prompts.append(ShapesPrompt("counting", f"one {_describe(spec)} on black", (spec,), count=1))
        else:  # two of a kind need two colours: training never repeats a (kind, colour)
            colors = _pick(rng, _COLOR_PAIRS)
            specs = tuple(ObjectSpec(kind, c, _pick(rng, _SIZE_NAMES)) for c in colors)
            prompts.append(_and_prompt("counting", specs, count=2))
    return prompts


def _colors_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """Prompts like "a red circle": (kind, colour) balanced over all 18 pairs."""
    combos = _balanced(rng, list(itertools.product(SHAPE_NAMES, _COLOR_NAMES)), n)
    return [ShapesPrompt("colors", f"a {c} {k}", (ObjectSpec(k, c),)) for k, c in combos]


def _position_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """Prompts like "a red circle to the left of a blue square": relations and ordered kind pairs balanced."""
    relations = _balanced(rng, list(RELATIONS), n)
    prompts = []
    for relation, kinds in zip(relations, _balanced(rng, _KIND_PAIRS, n), strict=True):
        specs = tuple(ObjectSpec(k, _pick(rng, _COLOR_NAMES)) for k in kinds)
        text = f"a {_describe(specs[0])} {relation} a {_describe(specs[1])}"
        prompts.append(ShapesPrompt("position", text, specs, relation=relation))
    return prompts


def _color_attribute_binding_prompts(rng: np.random.Generator, n: int) -> list[ShapesPrompt]:
    """Ordered kind pairs and ordered pairs of different colours, each balanced; sizes drawn freely."""
    prompts = []
    for kinds, colors in zip(_balanced(rng, _KIND_PAIRS, n), _balanced(rng, _COLOR_PAIRS, n), strict=True):
        specs = tuple(ObjectSpec(k, c, _pick(rng, _SIZE_NAMES)) for k, c in zip(kinds, colors, strict=True))
        prompts.append(_and_prompt("color_attribute_binding", specs))
    return prompts


_FAMILY_PROMPTS = {
    "single_object": _single_object_prompts,
    "two_objects": _two_objects_prompts,
    "counting": _counting_prompts,
    "colors": _colors_prompts,
    "position": _position_prompts,
    "color_attribute_binding": _color_attribute_binding_prompts,
}


def shapes_prompts(per_family: int = 100, seed: int = 0) -> list[ShapesPrompt]:
    """`per_family` prompts of each family, in FAMILIES order, drawn from a stream training never uses.

    Family `f` draws from `np.random.default_rng([seed, EVALUATION_STREAM, f])`; training scenes come from
    `[seed, split_id, i]` with split ids 0 and 1.
    """
    if per_family < 1:
        raise ValueError(f"`per_family` must be a positive number of prompts, got {per_family}.")
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, got {seed}.")
    prompts = []
    for index, family in enumerate(FAMILIES):
        rng = np.random.default_rng([seed, EVALUATION_STREAM, index])
        prompts.extend(_FAMILY_PROMPTS[family](rng, per_family))
    return prompts


def prompt_scene(prompt: ShapesPrompt, rng: np.random.Generator) -> Scene:
    """A scene satisfying `prompt`; drawn: unnamed sizes, the placement and (for two objects) the relation."""
    sizes = [spec.size or _pick(rng, _SIZE_NAMES) for spec in prompt.objects]
    relation = prompt.relation
    if relation is None and len(prompt.objects) == 2:
        relation = _pick(rng, list(RELATIONS))
    centers = place_centers(rng, sizes, relation)
    shapes = tuple(
        Shape(spec.kind, spec.color, size, center)
        for spec, size, center in zip(prompt.objects, sizes, centers, strict=True)
    )
    return Scene(shapes, relation)


def render_prompt(prompt: ShapesPrompt, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A real render of a scene satisfying `prompt`: uint8 (image_size, image_size, 3)."""
    return render_scene(prompt_scene(prompt, rng), image_size)


# --------------------------------------------------------------------------------------------------------
# Scoring and the protocol
# --------------------------------------------------------------------------------------------------------


def score_shapes(images, prompts: Sequence[ShapesPrompt]) -> dict:
    """Per-family accuracy, `overall` (their mean, GenEval's overall) and per-image `correct` (list of bool).

    `images`: (N, 3, H, W) floats in [0, 1], or a sequence of N images in any form `detect_shapes` takes.
    Families without prompts are left out of the scores and of `overall`.
    """
    if len(images) != len(prompts):
        raise ValueError(
            f"`images` and `prompts` must match in length, got {len(images)} and {len(prompts)}."
        )
    if not prompts:
        raise ValueError("`prompts` must not be empty.")
    correct = [
        check_prompt(detect_shapes(image), prompt) for image, prompt in zip(images, prompts, strict=True)
    ]
    scores = {}
    for family in FAMILIES:
        outcomes = [ok for ok, prompt in zip(correct, prompts, strict=True) if prompt.family == family]
        if outcomes:
            scores[family] = sum(outcomes) / len(outcomes)
    scores["overall"] = sum(scores.values()) / len(scores)
    scores["correct"] = correct
    return scores


def evaluate_shapes(
    pipeline,
    per_family: int = 100,
    seed: int = 0,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 100,
) -> dict:
    """Sample `shapes_prompts(per_family, seed)` through a text-to-image pipeline and score them.

    One generator per image, seeded `seed + i`, so batching changes nothing. Returns
    ``{"metrics": {family: accuracy, ..., "overall": ...}, "protocol": str, "sampling", "images", "prompts",
    "correct"}`` with images (N, 3, H, W) in [0, 1]. `num_inference_steps` and `guidance_scale` default to the ones
    saved with the pipeline; the protocol and "sampling" name the values used.
    """
    prompts = shapes_prompts(per_family, seed)
    settings = sampling_settings(pipeline, num_inference_steps, guidance_scale)
    num_inference_steps, guidance_scale = settings["num_inference_steps"], settings["guidance_scale"]
    texts = [p.prompt for p in prompts]
    images = (sample_images(pipeline, len(texts), seed, batch_size, prompt=texts, **settings) + 1) / 2
    scores = score_shapes(images, prompts)
    correct = scores.pop("correct")
    sampler = type(pipeline.scheduler).__name__
    protocol = (
        f"{len(prompts)} samples ({per_family} prompts per GenEval family: {', '.join(FAMILIES)}; phrased "
        f"in the training caption grammar, drawn with seed {seed} from a stream training never uses), "
        f"{num_inference_steps} {sampler} steps, guidance scale {guidance_scale}, generator seeds "
        f"{seed}..{seed + len(prompts) - 1}; scored by an exact palette/geometry detector of the shapes "
        f"renderer; overall = mean of the family accuracies."
    )
    return {
        "metrics": scores,
        "protocol": protocol,
        "sampling": sampling_record(pipeline, settings),
        "images": images,
        "prompts": prompts,
        "correct": correct,
    }
