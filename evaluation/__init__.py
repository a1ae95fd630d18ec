"""Evaluation: the judge classifier, FID in its features, prompt/attribute accuracy, PSNR and MSE; the GenEval-style
compositional score of `shapes`."""

from .judge import Judge, judge_accuracy, load_judge, train_judge
from .metrics import (
    attribute_accuracy,
    class_coverage,
    fid_report,
    frechet_distance,
    judge_fid,
    mse,
    prompt_accuracy,
    psnr,
)
from .mnist_idx import load_mnist_idx, read_idx
from .shapes import FAMILIES as SHAPES_FAMILIES
from .shapes import detect_shapes, evaluate_shapes, score_shapes, shapes_prompts

__all__ = [
    "SHAPES_FAMILIES",
    "Judge",
    "attribute_accuracy",
    "class_coverage",
    "detect_shapes",
    "evaluate_shapes",
    "fid_report",
    "frechet_distance",
    "judge_accuracy",
    "judge_fid",
    "load_judge",
    "load_mnist_idx",
    "mse",
    "prompt_accuracy",
    "psnr",
    "read_idx",
    "score_shapes",
    "shapes_prompts",
    "train_judge",
]
