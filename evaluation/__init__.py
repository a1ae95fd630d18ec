"""Evaluation: the MNIST judge and its metrics; for any dataset, a domain encoder trained on it (FID in its features,
CLIP-score-style prompt alignment, class accuracy) behind `evaluate_pipeline`; the GenEval-style compositional
score of `shapes`."""

from .domain import DomainEncoder, dataset_fingerprint, load_domain_encoder, train_domain_encoder
from .generic import evaluate_pipeline, match_images, pipeline_family, prompt_alignment
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
    "DomainEncoder",
    "Judge",
    "attribute_accuracy",
    "class_coverage",
    "dataset_fingerprint",
    "detect_shapes",
    "evaluate_pipeline",
    "evaluate_shapes",
    "fid_report",
    "frechet_distance",
    "judge_accuracy",
    "judge_fid",
    "load_judge",
    "load_domain_encoder",
    "load_mnist_idx",
    "match_images",
    "mse",
    "pipeline_family",
    "prompt_accuracy",
    "prompt_alignment",
    "psnr",
    "read_idx",
    "score_shapes",
    "shapes_prompts",
    "train_domain_encoder",
    "train_judge",
]
