import gzip
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentzoo.data import caption_for, load_dataset, measure_attributes
from latentzoo.evaluation import (
    Judge,
    attribute_accuracy,
    class_coverage,
    fid_report,
    frechet_distance,
    judge_accuracy,
    judge_fid,
    load_judge,
    load_mnist_idx,
    mse,
    prompt_accuracy,
    psnr,
)
from latentzoo.evaluation.judge import METRICS_FILE


@pytest.fixture(scope="session")
def judge_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("latentzoo-cache")


@pytest.fixture(scope="session")
def judge(judge_cache):
    # Trained once per session (about 10 s on idle cores) and cached under $LATENTZOO_CACHE.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LATENTZOO_CACHE", str(judge_cache))
        return load_judge()


@pytest.fixture(scope="module")
def validation():
    return load_dataset("mnist", split="validation")


def gaussian_blur(images, sigma):
    radius = 3
    kernel = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius,) * 4, value=-1.0)
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def test_judge_reaches_96_percent_on_the_validation_split(judge, validation):
    assert judge.validation_accuracy >= 0.96
    # The recorded number is the one measured on the held-out split.
    measured = judge_accuracy(judge, validation.pixel_values, validation.class_labels)
    assert measured == pytest.approx(judge.validation_accuracy, abs=1e-6)
    assert judge.metrics["train_examples"] == 4500


def test_cached_judge_reloads_identically(judge, judge_cache, validation):
    folder = judge_cache / "judge-v1"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((folder / METRICS_FILE).read_text())["validation_accuracy"] == judge.validation_accuracy
    reloaded = load_judge(cache_dir=folder)
    images = validation.pixel_values[:64]
    assert torch.equal(reloaded.features(images), judge.features(images))
    assert isinstance(reloaded, Judge) and not reloaded.training


def test_judge_checks_its_inputs(judge, validation):
    predictions = judge.predict(validation.pixel_values[:8])
    assert predictions.dtype == torch.int64 and predictions.shape == (8,)
    features = judge.features(validation.pixel_values[:8])
    assert features.dtype == torch.float32 and features.shape == (8, judge.config.feature_dim)
    # Batched and one-by-one agree.
    one_by_one = torch.cat([judge.features(validation.pixel_values[i : i + 1]) for i in range(8)])
    assert torch.allclose(one_by_one, features, atol=1e-5)
    with pytest.raises(ValueError, match="32"):
        judge.predict(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        judge.predict(torch.full((2, 1, 32, 32), 255.0))


def test_fid_of_real_vs_real_is_far_below_fid_of_degraded_images(judge, validation):
    generator = torch.Generator().manual_seed(0)
    reference, real = validation.pixel_values[:250], validation.pixel_values[250:]  # disjoint halves
    real_fid = judge_fid(judge, real, reference)
    degraded = {
        "blurred": gaussian_blur(real, sigma=1.0),
        "shifted": torch.roll(real, shifts=(3, 3), dims=(2, 3)),
        "noised": (real + 0.3 * torch.randn(real.shape, generator=generator)).clamp(-1, 1),
    }
    for name, images in degraded.items():
        fid = judge_fid(judge, images, reference)
        assert fid > 3 * real_fid, (name, fid, real_fid)

    report = fid_report(judge, degraded["blurred"], validation.pixel_values)
    assert report["num_samples"] == 250
    assert report["real_vs_real_fid"] < report["fid"] / 3


def test_fid_report_draws_a_random_subset_of_images_sorted_by_class(judge, validation):
    # Generated images usually come sorted by requested class; a prefix would be a few classes only.
    train = load_dataset("mnist", split="train")
    order = torch.argsort(train.class_labels[:1000], stable=True)
    sorted_real = train.pixel_values[:1000][order]
    report = fid_report(judge, sorted_real, validation.pixel_values)
    prefix_fid = judge_fid(judge, sorted_real[: report["num_samples"]], validation.pixel_values[:250])
    assert report["fid"] < 2 * report["real_vs_real_fid"] < prefix_fid / 3, (report, prefix_fid)


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean moved by c: the distance is ||c||².
    c = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(feats, feats + c) == pytest.approx(c @ c, rel=1e-6)
    # Against the symmetric form Tr(S_a + S_b - 2 (S_a^½ S_b S_a^½)^½) computed with eigh.
    other = rng.normal(size=(300, 6)) * 2 + 1
    cov_a, cov_b = np.cov(feats, rowvar=False), np.cov(other, rowvar=False)
    eigenvalues, vectors = np.linalg.eigh(cov_a)
    root_a = vectors @ np.diag(np.sqrt(eigenvalues)) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    diff = feats.mean(0) - other.mean(0)
    expected = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    assert frechet_distance(torch.tensor(feats), other) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(feats, other[:, :3])


def test_prompt_accuracy_scores_the_digit_the_prompt_names(judge, validation):
    images, labels = validation.pixel_values[:100], validation.class_labels[:100].tolist()
    right = [caption_for(label, "bold", "left", phrasing=i % 8) for i, label in enumerate(labels)]
    wrong = [caption_for((label + 1) % 10, phrasing=2) for label in labels]
    accuracy = prompt_accuracy(judge, images, right)
    assert accuracy == pytest.approx(judge_accuracy(judge, images, validation.class_labels[:100]))
    assert accuracy > 0.95
    assert prompt_accuracy(judge, images, wrong) < 0.05
    # Prompts without a digit are skipped; none at all is an error.
    assert prompt_accuracy(judge, images[:2], [right[0], "a cat"]) == prompt_accuracy(
        judge, images[:1], right[:1]
    )
    with pytest.raises(ValueError, match="names a digit"):
        prompt_accuracy(judge, images[:2], "a cat")
    with pytest.raises(ValueError, match="one prompt per image"):
        prompt_accuracy(judge, images[:3], right[:2])


def test_attribute_accuracy_compares_prompts_with_measured_attributes(validation):
    images = validation.pixel_values[:60]
    measured = measure_attributes(images)
    labels = validation.class_labels[:60].tolist()
    matching = [
        caption_for(label, w, s, 0)
        for label, w, s in zip(labels, measured["weight"], measured["slant"], strict=True)
    ]
    assert attribute_accuracy(images, matching) == {"weight": 1.0, "slant": 1.0}

    flip = {
        "thin": "bold",
        "regular": "thin",
        "bold": "regular",
        "left": "right",
        "upright": "left",
        "right": "upright",
    }
    wrong = [
        caption_for(label, flip[w], flip[s], 3)
        for label, w, s in zip(labels, measured["weight"], measured["slant"], strict=True)
    ]
    assert attribute_accuracy(images, wrong) == {"weight": 0.0, "slant": 0.0}

    # Weight only: slant is not scored; half right, half wrong.
    half = [
        caption_for(label, w if i % 2 else flip[w], None, 1)
        for i, (label, w) in enumerate(zip(labels, measured["weight"], strict=True))
    ]
    assert attribute_accuracy(images, half) == {"weight": 0.5, "slant": None}


def test_psnr_and_mse():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    assert mse(x, x) == 0.0 and psnr(x, x) == math.inf
    assert mse(x, x + 0.1) == pytest.approx(0.01)
    assert psnr(x, x + 0.1) == pytest.approx(10 * math.log10(4 / 0.01))
    noise = torch.randn(x.shape, generator=generator)
    assert mse(x, x + noise) == pytest.approx(mse(x + noise, x))
    assert psnr(x, x + 0.05 * noise) > psnr(x, x + 0.2 * noise)
    per_image = psnr(x, x + 0.1 * noise, reduction="none")
    assert per_image.shape == (4,) and psnr(x, x + 0.1 * noise) == pytest.approx(
        per_image.mean().item(), rel=1e-6
    )
    assert psnr(x, x + 0.1, data_range=1.0) == pytest.approx(10 * math.log10(1 / 0.01))
    with pytest.raises(ValueError, match="same shape"):
        mse(x, x[:2])


def test_load_mnist_idx_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    header = lambda ndim, shape: bytes([0, 0, 0x08, ndim]) + np.array(shape, dtype=">u4").tobytes()  # noqa: E731
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as file:
        file.write(header(3, images.shape) + images.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(header(1, labels.shape) + labels.tobytes())

    pixel_values, class_labels = load_mnist_idx(tmp_path)
    assert pixel_values.shape == (5, 1, 32, 32) and pixel_values.dtype == torch.float32
    assert torch.equal(class_labels, torch.tensor([3, 1, 4, 1, 5]))
    assert torch.allclose(
        (pixel_values[:, 0, 2:30, 2:30] + 1) * 127.5, torch.from_numpy(images).float(), atol=1e-4
    )
    assert torch.all(pixel_values[:, :, :2] == -1)
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist_idx(tmp_path, prefix="train")


def test_class_coverage_measures_mode_collapse():
    uniform = class_coverage(torch.arange(100) % 10)
    assert uniform["classes_covered"] == 10 and uniform["entropy"] == pytest.approx(1.0)
    assert uniform["largest_share"] == pytest.approx(0.1) and sum(uniform["histogram"]) == pytest.approx(1.0)
    collapsed = class_coverage(torch.full((50,), 7))
    assert collapsed["classes_covered"] == 1 and collapsed["largest_share"] == 1.0
    assert str(collapsed["entropy"]) == "0.0"  # not "-0.0"
    # One stray sample in 200 (0.5%) does not count as covering its class.
    assert class_coverage(torch.tensor([3] * 199 + [4]))["classes_covered"] == 1
    with pytest.raises(ValueError, match="predicted"):
        class_coverage(torch.rand(10))
