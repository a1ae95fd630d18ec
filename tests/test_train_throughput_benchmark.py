"""The training-throughput benchmark's reimplementation of diffusers' `train_unconditional.py` (issue 18): its data
pipeline gives the images the example would train on, and its loop runs and times steps."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import latentzoo
from latentzoo.data import load_dataset

BENCHMARK = Path(latentzoo.__file__).parent / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_example_dataset_gives_the_training_digits_as_rgb_in_minus_one_one(throughput):
    dataset = throughput.example_dataset(resolution=32)
    digits = load_dataset("mnist").pixel_values
    assert len(dataset) == len(digits)
    for index in (0, 7, len(digits) - 1):
        image = dataset[index]["input"]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        # PNG round trip of 8-bit digits, then ToTensor + Normalize: the same values, one per channel.
        torch.testing.assert_close(image, digits[index].expand(3, -1, -1), atol=1e-6, rtol=0)


def test_example_dataset_resizes_bilinearly_to_the_requested_resolution(throughput):
    image = throughput.example_dataset(resolution=16)[3]["input"]
    assert image.shape == (3, 16, 16)
    assert image.min() >= -1 and image.max() <= 1


def test_example_loop_trains_and_times_its_steps(throughput, tmp_path):
    tiny = tmp_path / "unet.json"  # the layout of ../shared/bench/unet_small.json at widths 4/8/8
    tiny.write_text(
        json.dumps(
            {
                "sample_size": 32,
                "in_channels": 3,
                "out_channels": 3,
                "layers_per_block": 1,
                "block_out_channels": [4, 8, 8],
                "norm_num_groups": 4,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            }
        )
    )
    seconds, fetch = throughput.example_loop(tiny, steps=2, warmup=1, work_dir=tmp_path / "run", batch_size=8)
    assert 0 < fetch < seconds
    # Its per-step tensorboard log, as the example writes it.
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
