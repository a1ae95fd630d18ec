"""Argument checks shared by latentzoo's models and pipelines: numbers and class labels.

One place decides what a valid number or class label is and how an error about it is worded: the error names the
argument, says what it got and the valid range, and how to fix the call. Pipelines run these before any work;
models run the label check in `forward`. (Models cannot import `latentzoo.pipelines`, so these live here.)

    guidance_scale = check_number(guidance_scale, "guidance_scale", low=0, example=3.0)
    labels = check_class_labels([3, 7], num_classes=10)                     # tensor([3, 7])
    grid = cycle_class_labels(num_images=6, num_classes=4)                  # [0, 1, 2, 3, 0, 1]
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["ClassLabels", "check_class_labels", "check_number", "cycle_class_labels"]

ClassLabels = int | Sequence[int] | torch.Tensor | np.ndarray


def _describe_range(low, high, low_inclusive: bool, high_inclusive: bool, integer: bool) -> str:
    """E.g. "a positive int", "a number >= 0", "a number in [0, 1]"."""
    kind = "an int" if integer else "a number"
    if high is None:
        if low is None:
            return kind
        if integer and low == 1 and low_inclusive:
            return "a positive int"
        if not integer and low == 0 and not low_inclusive:
            return "a positive number"
        return f"{kind} {'>=' if low_inclusive else '>'} {low}"
    if low is None:
        return f"{kind} {'<=' if high_inclusive else '<'} {high}"
    return f"{kind} in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"


def check_number(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    example: float | None = None,
    hint: str = "",
) -> int | float:
    r"""
    Raise unless `value`, the argument called `name`, is a finite number (an int if `integer`) within the range.

    Args:
        value:
            The argument. Python and NumPy numbers and one-element tensors are numbers; bools are not, and neither
            is 2.0 where an int is wanted.
        name (`str`):
            The argument's name, as the caller wrote it (e.g. `"guidance_scale"`).
        low, high (`float`, *optional*):
            Bounds of the valid range; None leaves that side open.
        low_inclusive, high_inclusive (`bool`, defaults to `True`):
            Whether `low` / `high` themselves are valid.
        integer (`bool`, defaults to `False`):
            Whether only ints are valid.
        example (`float`, *optional*):
            A valid value, for the error's fix: "pass e.g. `name=example`".
        hint (`str`, *optional*):
            One more sentence for the error, e.g. what the values mean.

    Returns:
        `int` or `float`: the value as a Python number.

    Raises:
        `TypeError`: not a number (or not an int where `integer`).
        `ValueError`: NaN, ±inf, or outside the range.
    """
    what = _describe_range(low, high, low_inclusive, high_inclusive, integer)

    def message(problem: str) -> str:
        fix = [f"pass e.g. `{name}={example!r}`"] if example is not None else []
        return "; ".join([f"`{name}` must be {problem}", *fix, *([hint] if hint else [])]) + "."

    shown = value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    wanted = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise TypeError(message(f"{what}, got {type(shown).__name__} {reprlib.repr(shown)}"))
    if integer:
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(message(f"finite ({what}), got {value}"))
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(message(f"{what}, got {value!r}"))
    return value


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _is_int(value) -> bool:
    """An int (Python or NumPy, not a bool) or a 0-d integer tensor."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and _is_integer_dtype(value.dtype)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_class_labels(
    class_labels: ClassLabels,
    num_classes: int,
    batch_size: int | None = None,
    *,
    batch_name: str = "batch_size",
    hint: str = "",
) -> torch.Tensor:
    r"""
    Check class labels against `num_classes` and return them as a (B,) int64 tensor.

    Args:
        class_labels (`int`, `list[int]`, `tuple[int]`, or a 1-D integer `torch.Tensor` / `np.ndarray`):
            The labels, each in [0, num_classes - 1]. One int is one label, or the label of all `batch_size`
            images when `batch_size` is given. Floats (even 2.0), bools and strings are refused rather than
            converted: a float label is a bug upstream, and `int(0.5)` would silently be class 0.
        num_classes (`int`):
            The number of classes the model knows.
        batch_size (`int`, *optional*):
            The number of labels the call needs, if it is known.
        batch_name (`str`, defaults to `"batch_size"`):
            Where `batch_size` comes from, for the error, e.g. `"len(latents)"`.
        hint (`str`, *optional*):
            One more sentence for the out-of-range error, e.g. about a null class.

    Returns:
        `torch.Tensor`: (B,) int64 labels, on the device of a given tensor (else the CPU).

    Raises:
        `TypeError`: labels that are not ints.
        `ValueError`: an empty or multi-dimensional batch, labels out of range, or a count other than `batch_size`.
    """
    valid = f"[0, {num_classes - 1}]"
    fix = f"pass e.g. `class_labels=[0, {min(1, num_classes - 1)}]`, one int in {valid} per image"

    def type_error(got: str) -> TypeError:
        return TypeError(
            f"`class_labels` must be an int, a list of ints or a 1-D integer tensor, each in {valid}; got {got} "
            f"(labels are never rounded); {fix}."
        )

    if isinstance(class_labels, np.ndarray):
        if class_labels.dtype.kind not in "iu":
            raise type_error(f"a numpy {class_labels.dtype} array")
        class_labels = torch.from_numpy(class_labels.astype(np.int64))
    if isinstance(class_labels, torch.Tensor):
        if not _is_integer_dtype(class_labels.dtype):
            raise type_error(f"a {class_labels.dtype} tensor")
        if class_labels.ndim > 1:
            raise ValueError(
                f"`class_labels` must be 1-D, one label per image, got shape {tuple(class_labels.shape)}: {fix}."
            )
        labels = class_labels.long()
        single = labels.ndim == 0
    elif isinstance(class_labels, list | tuple):
        wrong = [c for c in class_labels if not _is_int(c)]
        if wrong:
            raise type_error(
                f"{type(class_labels).__name__} holding {type(wrong[0]).__name__} {reprlib.repr(wrong[0])}"
            )
        labels = torch.tensor([int(c) for c in class_labels], dtype=torch.long)
        single = False
    elif _is_int(class_labels):
        labels = torch.tensor(int(class_labels), dtype=torch.long)
        single = True
    else:
        raise type_error(f"{type(class_labels).__name__} {reprlib.repr(class_labels)}")

    if single:
        labels = labels.expand(batch_size or 1).clone()
    if len(labels) == 0:
        raise ValueError(f"`class_labels` is empty: {fix}.")
    out_of_range = (labels < 0) | (labels >= num_classes)
    if out_of_range.any():
        bad = labels[out_of_range].unique().tolist()
        raise ValueError(
            f"`class_labels` must lie in {valid} (this model has {num_classes} classes, [0, {num_classes})), got "
            f"{bad}; {fix}" + (f"; {hint}." if hint else ".")
        )
    if batch_size is not None and len(labels) != batch_size:
        raise ValueError(
            f"`{batch_name}`={batch_size} disagrees with the {len(labels)} `class_labels`: pass one label per image, "
            "or one int for all of them."
        )
    return labels


def cycle_class_labels(num_images: int, num_classes: int) -> list[int]:
    """Labels 0, 1, ..., num_classes - 1, 0, 1, ... for `num_images` images: every class equally often (up to one),
    in order, so each row of a validation grid of `num_classes` columns reads off one class per column."""
    check_number(num_images, "num_images", low=0, integer=True)
    check_number(num_classes, "num_classes", low=1, integer=True)
    return [i % num_classes for i in range(num_images)]
