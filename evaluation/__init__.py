"""Evaluation: the judge classifier, FID in its features, prompt/attribute accuracy, PSNR and MSE."""

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

__all__ = [
    "Judge",
    "attribute_accuracy",
    "class_coverage",
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
    "train_judge",
]
