"""Embedded datasets, captions, and the attribute measurement shared with evaluation."""

from .attributes import (
    SLANT_CLASSES,
    SLANT_THRESHOLDS,
    WEIGHT_CLASSES,
    WEIGHT_THRESHOLDS,
    measure_attribute_values,
    measure_attributes,
)
from .captions import (
    NUM_PHRASINGS,
    caption_for,
    captions_for,
    mnist_label_words,
    parse_attributes,
    parse_digit,
)
from .datasets import DATASET_NAMES, HubDatasetUnavailableError, ImageDataset, load_dataset
from .imagefolder import clear_prepared_cache
from .tokenizer import load_clip_tokenizer

__all__ = [
    "DATASET_NAMES",
    "NUM_PHRASINGS",
    "SLANT_CLASSES",
    "SLANT_THRESHOLDS",
    "WEIGHT_CLASSES",
    "WEIGHT_THRESHOLDS",
    "HubDatasetUnavailableError",
    "ImageDataset",
    "caption_for",
    "clear_prepared_cache",
    "load_clip_tokenizer",
    "captions_for",
    "load_dataset",
    "measure_attribute_values",
    "measure_attributes",
    "mnist_label_words",
    "parse_attributes",
    "parse_digit",
]
