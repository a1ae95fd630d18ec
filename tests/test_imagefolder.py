"""`imagefolder:PATH` (and the shared Hub conversion): user folders load as expected, bad ones fail early."""

import json
import logging
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from latentzoo.data import clear_prepared_cache, load_dataset
from latentzoo.data import imagefolder as imagefolder_module

pytestmark = pytest.mark.filterwarnings("ignore:tiny dataset")  # checked where it matters


@pytest.fixture(autouse=True)
def fresh_memo():
    clear_prepared_cache()
    yield
    clear_prepared_cache()


def load(folder, split="train", **kwargs):
    """`load_dataset("imagefolder:folder")` with datasets' cache next to (not inside) the folder."""
    cache_dir = str(folder.parent / f".hf-cache-{folder.name}")
    return load_dataset(f"imagefolder:{folder}", split, cache_dir=cache_dir, **kwargs)


def random_images(count, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def write_metadata(folder, rows, name="metadata.jsonl"):
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / name).write_text("\n".join(lines) + "\n")


def make_folder(tmp_path, arrays, name="images", captions=True, mode=None):
    """Save `arrays` as 000.png, 001.png, ...; with captions "picture i" in metadata.jsonl."""
    folder = tmp_path / name
    folder.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array, mode=mode).save(folder / f"{i:03d}.png")
    if captions:
        write_metadata(
            folder, [{"file_name": f"{i:03d}.png", "text": f"picture {i}"} for i in range(len(arrays))]
        )
    return folder


def to_pixels(array):
    """uint8 (H, W[, C]) → (C, H, W) float32 in [-1, 1], the dataset's encoding."""
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor / 255.0 * 2 - 1


# ----------------------------------------------------------------------------------------------------
# What loads


def test_eight_rgb_images_with_captions_load_and_warn_that_the_dataset_is_tiny(tmp_path):
    arrays = random_images(8, (16, 16, 3))
    folder = make_folder(tmp_path, arrays)
    with pytest.warns(UserWarning, match="tiny dataset: expect memorisation"):
        train = load(folder)
    validation = load(folder, "validation")
    assert (len(train), len(validation)) == (7, 1)
    assert train.pixel_values.shape == (7, 3, 16, 16) and validation[0]["pixel_values"].shape == (3, 16, 16)
    assert train.has_captions and train.class_labels is None and train.num_classes is None
    seen = []
    for dataset in (train, validation):
        for index in range(len(dataset)):
            (caption,) = dataset.captions(index)
            number = int(caption.removeprefix("picture "))
            assert dataset[index]["text"] == caption
            # The pixels are the saved image's, exactly (no resize at the native square size).
            assert torch.equal(dataset[index]["pixel_values"], to_pixels(arrays[number]))
            seen.append(number)
    assert sorted(seen) == list(range(8))


def test_grayscale_folder_has_one_channel_and_rgb_three(tmp_path):
    arrays = random_images(12, (8, 8))
    gray = load(make_folder(tmp_path, arrays, "gray", mode="L"))
    assert gray.num_channels == 1
    number = int(gray.captions(0)[0].split()[-1])
    assert torch.equal(gray.pixel_values[0], to_pixels(arrays[number]))

    as_rgb = load(tmp_path / "gray", channels=3)
    assert as_rgb.num_channels == 3
    assert torch.equal(as_rgb.pixel_values, gray.pixel_values.expand(-1, 3, -1, -1))


def test_channels_1_from_rgb_is_pils_luma_conversion(tmp_path):
    arrays = random_images(12, (8, 8, 3))
    folder = make_folder(tmp_path, arrays)
    gray = load(folder, channels=1)
    assert gray.num_channels == 1
    for index in range(len(gray)):
        number = int(gray.captions(index)[0].split()[-1])
        expected = np.asarray(Image.fromarray(arrays[number]).convert("L"))
        assert torch.equal(gray.pixel_values[index], to_pixels(expected))


def test_mixed_gray_and_rgb_folder_is_rgb(tmp_path):
    folder = make_folder(tmp_path, random_images(5, (8, 8)), mode="L", captions=False)
    Image.fromarray(random_images(1, (8, 8, 3))[0]).save(folder / "colour.png")
    assert load(folder).num_channels == 3


def test_transparent_pixels_are_composited_over_white(tmp_path):
    folder = tmp_path / "rgba"
    folder.mkdir()
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere ...
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # ... but (0, 0) fully transparent
    rgba[0, 1, 3] = 128  # and (0, 1) half transparent
    for i in range(4):
        Image.fromarray(rgba, mode="RGBA").save(folder / f"{i}.png")
    dataset = load(folder)
    assert dataset.num_channels == 3
    pixels = dataset.pixel_values[0]  # (3, 4, 4)
    assert torch.equal(pixels[:, 0, 0], torch.ones(3))  # transparent → white
    assert torch.equal(pixels[:, 1, 1], to_pixels(np.array([[[200, 0, 0]]], np.uint8))[:, 0, 0])
    half = ((pixels[:, 0, 1] + 1) * 127.5).round()
    assert torch.allclose(half, torch.tensor([227.0, 127.0, 127.0]), atol=1)  # 50% over white

    gray_alpha = tmp_path / "gray_alpha"
    gray_alpha.mkdir()
    for i in range(4):
        Image.fromarray(np.stack([np.full((4, 4), 30, np.uint8), rgba[..., 3]], -1), mode="LA").save(
            gray_alpha / f"{i}.png"
        )
    dataset = load(gray_alpha)
    assert dataset.num_channels == 1  # LA counts as grayscale
    assert dataset.pixel_values[0, 0, 0, 0] == 1 and dataset.pixel_values[0, 0, 1, 1] == to_pixels(
        np.full((1, 1), 30, np.uint8)
    )


def test_palette_image_with_a_transparent_index_is_composited_over_white(tmp_path):
    folder = tmp_path / "palette"
    folder.mkdir()
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0] + [10, 20, 30] * 255)
    image.putpixel((0, 0), 0)
    for i in range(3):
        image.save(folder / f"{i}.png", transparency=0)
    pixels = load(folder).pixel_values[0]
    assert torch.equal(pixels[:, 0, 0], torch.ones(3))
    assert torch.equal(pixels[:, 2, 2], to_pixels(np.array([[[10, 20, 30]]], np.uint8))[:, 0, 0])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    for i in range(3):
        Image.fromarray(values).save(folder / f"{i}.png")
    dataset = load(folder)
    assert dataset.num_channels == 1
    assert torch.equal(dataset.pixel_values[0], to_pixels(np.array([[0, 100], [200, 255]], np.uint8)))


def test_non_square_images_are_resized_on_the_shorter_side_and_centre_cropped(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    wide = np.zeros((16, 48, 3), np.uint8)  # (H, W): red | green | blue thirds
    wide[:, :16, 0], wide[:, 16:32, 1], wide[:, 32:, 2] = 255, 255, 255
    Image.fromarray(wide).save(folder / "a_wide.png")
    Image.fromarray(wide.transpose(1, 0, 2).copy()).save(folder / "b_tall.png")  # red / green / blue rows
    Image.fromarray(random_images(1, (40, 30, 3))[0]).save(folder / "c_odd.png")
    Image.fromarray(random_images(1, (32, 32, 3), seed=1)[0]).save(folder / "d_square.png")
    write_metadata(
        folder,
        [{"file_name": n, "text": n} for n in ("a_wide.png", "b_tall.png", "c_odd.png", "d_square.png")],
    )
    train, validation = load(folder, image_size=16), load(folder, "validation", image_size=16)
    by_name = {d.captions(i)[0]: d.pixel_values[i] for d in (train, validation) for i in range(len(d))}
    green = to_pixels(np.full((16, 16, 3), (0, 255, 0), np.uint8))
    assert torch.equal(by_name["a_wide.png"], green) and torch.equal(by_name["b_tall.png"], green)
    # Same computation done by hand: shorter side 30 → 16 (40 → int(16·40/30) = 21), bicubic; rows 2..18.
    odd = Image.fromarray(random_images(1, (40, 30, 3))[0]).resize((16, 21), Image.Resampling.BICUBIC)
    assert torch.equal(by_name["c_odd.png"], to_pixels(np.asarray(odd)[2:18]))
    square = Image.fromarray(random_images(1, (32, 32, 3), seed=1)[0]).resize(
        (16, 16), Image.Resampling.BICUBIC
    )
    assert torch.equal(by_name["d_square.png"], to_pixels(np.asarray(square)))


def test_first_image_sets_the_size_and_must_then_be_square(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (12, 12, 3)), captions=False)
    Image.fromarray(random_images(1, (24, 24, 3))[0]).save(folder / "zz_large.png")
    assert load(folder).image_size == 12  # the first image's; the others resized to it

    folder = make_folder(tmp_path, random_images(4, (12, 16, 3)), name="wide", captions=False)
    with pytest.raises(ValueError, match=r"first image \(.*000\.png\) is 16×12, not square.*Pass image_size"):
        load(folder)
    assert load(folder, image_size=8).image_size == 8


def make_class_folders(tmp_path, classes=("dog", "cat"), per_class=6):
    folder = tmp_path / "pets"
    for value, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 40 * value, np.uint8)).save(folder / name / f"{i}.png")
    return folder


def test_sub_folders_become_class_labels(tmp_path):
    folder = make_class_folders(tmp_path)  # dog pixels 0, cat pixels 40
    train, validation = load(folder), load(folder, "validation")
    assert (train.num_classes, train.class_names, train.has_captions) == (2, ["cat", "dog"], False)
    assert len(train) + len(validation) == 12
    for dataset in (train, validation):
        for index in range(len(dataset)):
            item = dataset[index]
            expected = "cat" if item["pixel_values"][0, 0, 0] > -1 else "dog"
            assert dataset.class_names[item["class_labels"]] == expected
    assert train.describe()["class_names"] == ["cat", "dog"]


def test_metadata_labels_strings_become_sorted_class_names_and_integers_stay(tmp_path):
    arrays = random_images(6, (8, 8, 3))
    folder = make_folder(tmp_path, arrays, captions=False)
    species = ["zebra", "ant", "moth", "ant", "zebra", "moth"]
    write_metadata(folder, [{"file_name": f"{i:03d}.png", "label": s} for i, s in enumerate(species)])
    both = [load(folder), load(folder, "validation")]
    assert both[0].class_names == ["ant", "moth", "zebra"] and both[0].num_classes == 3
    for dataset in both:
        for index in range(len(dataset)):
            number = next(
                i for i in range(6) if torch.equal(dataset.pixel_values[index], to_pixels(arrays[i]))
            )
            assert dataset.class_names[dataset.class_labels[index]] == species[number]

    write_metadata(folder, [{"file_name": f"{i:03d}.png", "kind": i % 3, "text": "x"} for i in range(6)])
    assert load(folder).class_labels is None  # "kind" is not looked for unless named
    numbered = load(folder, label_column="kind")
    assert numbered.num_classes == 3 and numbered.class_names is None and numbered.has_captions


def test_a_label_column_of_scores_is_not_a_class_label_unless_named(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    write_metadata(folder, [{"file_name": f"{i:03d}.png", "label": i / 4} for i in range(4)])
    assert load(folder).class_labels is None
    with pytest.raises(ValueError, match=r"line 1: the label in column 'label' must be a class name"):
        load(folder, label_column="label")


def test_caption_column_can_be_named(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    write_metadata(
        folder, [{"file_name": f"{i:03d}.png", "description": f"d{i}", "text": "t"} for i in range(4)]
    )
    assert load(folder).captions(0) == ["t"]
    assert load(folder, caption_column="description").captions(0)[0].startswith("d")


def test_csv_metadata_works_too(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    (folder / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f"{i:03d}.png,pic {i}\n" for i in range(4))
    )
    dataset = load(folder)
    assert dataset.has_captions and dataset.captions(0)[0].startswith("pic ")


def test_random_flip_is_a_function_of_seed_epoch_and_index(tmp_path):
    folder = make_folder(tmp_path, random_images(100, (8, 8, 3)))
    dataset = load(folder, random_flip=True, seed=3)
    again = load(folder, random_flip=True, seed=3)  # e.g. a resumed run

    def flips(d, epoch):
        d.set_epoch(epoch)
        return [d.is_flipped(i) for i in range(len(d))]

    epoch_0 = flips(dataset, 0)
    assert 20 < sum(epoch_0) < len(dataset) - 20  # some flipped, some not
    assert flips(again, 0) == epoch_0 and flips(dataset, 1) != epoch_0 and flips(dataset, 0) == epoch_0
    assert flips(load(folder, random_flip=True, seed=4), 0) != epoch_0
    for index in range(len(dataset)):
        image = dataset[index]["pixel_values"]
        stored = dataset.pixel_values[index]
        assert torch.equal(image, stored.flip(-1) if epoch_0[index] else stored)
    plain = load(folder, seed=3)
    assert not any(flips(plain, 0)) and torch.equal(plain[0]["pixel_values"], plain.pixel_values[0])
    # Flips do not draw from the global RNG.
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    [dataset[i] for i in range(len(dataset))]
    assert torch.equal(torch.rand(1), expected)


def test_random_flip_and_channels_work_for_the_builtin_datasets():
    shapes = load_dataset("shapes", size=20, random_flip=True, channels=1)
    assert shapes.num_channels == 1 and shapes.random_flip
    assert any(shapes.is_flipped(i) for i in range(20)) and not all(shapes.is_flipped(i) for i in range(20))
    digits = load_dataset("digits", split="validation", channels=3)
    assert digits.pixel_values.shape[1] == 3 and torch.equal(
        digits.pixel_values[:, 0], digits.pixel_values[:, 1]
    )
    with pytest.raises(TypeError, match="caption_column"):
        load_dataset("digits", caption_column="text")
    with pytest.raises(TypeError, match="label_column"):
        load_dataset("shapes", label_column="label")
    with pytest.raises(ValueError, match="`channels` must be 1.*3"):
        load_dataset("digits", channels=2)


# ----------------------------------------------------------------------------------------------------
# What fails, and how


def test_a_path_that_is_not_a_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        load(tmp_path / "file.png")


def test_a_folder_without_images_names_the_recognised_extensions(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "photo.heic").write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"contains no images.*\.jpeg.*\.png.*\.webp.*\.heic"):
        load(folder)


def jsonl_error(tmp_path, rows, match, **kwargs):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    write_metadata(folder, rows)
    with pytest.raises(ValueError, match=match) as error:
        load(folder, **kwargs)
    assert str(folder / "metadata.jsonl") in str(error.value)
    return str(error.value)


def test_a_metadata_line_that_is_not_json_names_the_line(tmp_path):
    rows = [
        {"file_name": "000.png", "text": "a"},
        {"file_name": "001.png", "text": "b"},
        '{"file_name": 002.png}',
    ]
    jsonl_error(tmp_path, rows, "metadata.jsonl, line 3: not valid JSON")


def test_a_metadata_line_without_file_name_names_the_line(tmp_path):
    rows = [{"file_name": "000.png", "text": "a"}, {"image": "001.png", "text": "b"}]
    jsonl_error(tmp_path, rows, 'metadata.jsonl, line 2: no "file_name"')


def test_a_metadata_file_name_that_does_not_exist_names_the_line(tmp_path):
    rows = [{"file_name": "000.png", "text": "a"}, {"file_name": "missing.png", "text": "b"}]
    jsonl_error(tmp_path, rows, "metadata.jsonl, line 2: file_name 'missing.png' does not exist")


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        ({"file_name": "002.png"}, "no caption in column 'text', but other lines have one"),
        ({"file_name": "002.png", "text": None}, "no caption in column 'text'"),
        ({"file_name": "002.png", "text": ""}, "the caption in column 'text' must be a non-empty string"),
        ({"file_name": "002.png", "text": 7}, "the caption in column 'text' must be a non-empty string"),
    ],
)
def test_a_missing_or_bad_caption_names_the_line(tmp_path, bad_row, problem):
    rows = [{"file_name": "000.png", "text": "a"}, {"file_name": "001.png", "text": "b"}, bad_row]
    jsonl_error(tmp_path, rows, f"metadata.jsonl, line 3: {problem}")


def test_a_named_caption_or_label_column_that_is_missing_lists_the_columns(tmp_path):
    rows = [{"file_name": f"{i:03d}.png", "text": "a"} for i in range(4)]
    message = jsonl_error(
        tmp_path, rows, "caption_column 'description' is not a column", caption_column="description"
    )
    assert "['file_name', 'text']" in message
    clear_prepared_cache()
    folder = tmp_path / "images"
    with pytest.raises(
        ValueError,
        match=r"label_column 'species' is not a column of .*metadata.jsonl.*\['file_name', 'text'\]",
    ):
        load(folder, label_column="species")
    # Without metadata the message says where labels and captions come from.
    pets = make_class_folders(tmp_path)
    with pytest.raises(
        ValueError, match=r"label_column 'species' is not a column.*\['image', 'label'\].*sub-folder"
    ):
        load(pets, label_column="species")
    with pytest.raises(ValueError, match=r"caption_column 'text' is not a column.*no metadata.jsonl"):
        load(pets, caption_column="text")


def test_a_missing_caption_column_in_csv_names_the_csv(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    (folder / "metadata.csv").write_text("file_name,text\n000.png,a\n001.png,\n")
    with pytest.raises(ValueError, match=r"metadata.csv, line 3: no caption in column 'text'"):
        load(folder)
    with pytest.raises(ValueError, match=r"caption_column 'prompt' is not a column of .*metadata.csv"):
        load(folder, caption_column="prompt")


def test_labels_mixing_names_and_integers_name_the_line(tmp_path):
    rows = [
        {"file_name": "000.png", "label": 1},
        {"file_name": "001.png"},
        {"file_name": "002.png", "label": "b"},
    ]
    jsonl_error(tmp_path, rows, "metadata.jsonl, line 2: no label in column 'label'")
    clear_prepared_cache()
    rows[1]["label"] = 0
    folder = tmp_path / "images"
    write_metadata(folder, rows)
    with pytest.raises(
        ValueError, match="line 3: the label in column 'label' is a string, but line 1 has an integer"
    ):
        load(folder)


def test_an_image_pil_cannot_open_is_named(tmp_path):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)), captions=False)
    (folder / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot open image .*broken\.png.*Replace or remove it"):
        load(folder)


def test_a_truncated_image_is_named(tmp_path, monkeypatch):
    folder = make_folder(tmp_path, random_images(4, (32, 32, 3)), captions=False)
    data = (folder / "001.png").read_bytes()
    (folder / "001.png").write_bytes(data[: len(data) // 2])
    # The header opens but `verify` finds the file cut short, whichever split holds it.
    with pytest.raises(ValueError, match=r"cannot open image .*001\.png.*Replace or remove it"):
        load(folder)
    # Past the check (as a truncated JPEG can be), decoding names the file too.
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "verify", lambda self: None)
    with pytest.raises(ValueError, match=r"cannot decode image .*001\.png.*Replace or remove it"):
        load(folder)
        load(folder, "validation")


def test_a_folder_without_training_images_fails_clearly(tmp_path):
    folder = tmp_path / "only_test"
    (folder / "test").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(random_images(1, (8, 8, 3), seed=i)[0]).save(folder / "test" / f"{i}.png")
    with pytest.raises(ValueError, match="has no training images"):
        load(folder)

    single = make_folder(tmp_path, random_images(1, (8, 8, 3)), name="single", captions=False)
    with pytest.warns(UserWarning, match="tiny dataset"):
        assert len(load(single)) == 1
    with pytest.raises(ValueError, match="split 'validation' is empty.*Add images"):
        load(single, "validation")


def test_held_out_sub_folders_are_the_validation_split(tmp_path):
    folder = tmp_path / "split"
    for split, count in (("train", 5), ("validation", 2)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(random_images(1, (8, 8, 3), seed=i)[0]).save(folder / split / f"{i}.png")
    assert (len(load(folder)), len(load(folder, "validation"))) == (5, 2)


def test_images_missing_from_the_metadata_are_reported(tmp_path, caplog):
    folder = make_folder(tmp_path, random_images(4, (8, 8, 3)))
    Image.fromarray(random_images(1, (8, 8, 3))[0]).save(folder / "extra.png")
    with caplog.at_level(logging.WARNING, logger="latentzoo.data.imagefolder"):
        assert len(load(folder)) + len(load(folder, "validation")) == 4
    assert "1 image(s) are not listed in metadata.jsonl" in caplog.text and "extra.png" in caplog.text


# ----------------------------------------------------------------------------------------------------
# Memo, chunks, description, Hub


def test_a_second_load_reuses_the_decoded_split_until_a_file_changes(tmp_path, monkeypatch):
    folder = make_folder(tmp_path, random_images(12, (8, 8, 3)))
    decoded = []
    decode_split = imagefolder_module.decode_split
    monkeypatch.setattr(
        imagefolder_module, "decode_split", lambda *a, **k: decoded.append(1) or decode_split(*a, **k)
    )

    first = load(folder)
    second = load(folder, seed=5, random_flip=True)  # seed and flips do not change the prepared split
    assert second.pixel_values is first.pixel_values and len(decoded) == 1
    assert second.seed == 5 and first.random_flip is False  # but each load is its own dataset
    load(folder, "validation")
    load(folder, image_size=4)
    assert len(decoded) == 3

    path = folder / "003.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = load(folder)
    assert len(decoded) == 4 and third.pixel_values is not first.pixel_values
    changed = [i for i in range(len(third)) if not torch.equal(third.pixel_values[i], first.pixel_values[i])]
    assert len(changed) <= 1 and any(torch.all(third.pixel_values[i] == -1) for i in changed)


def test_decoding_in_chunks_gives_the_same_tensor(tmp_path, monkeypatch):
    folder = make_folder(tmp_path, random_images(10, (12, 20, 3)))
    whole = load(folder, image_size=8).pixel_values
    clear_prepared_cache()
    monkeypatch.setattr(imagefolder_module, "DECODE_CHUNK", 3)
    assert torch.equal(load(folder, image_size=8).pixel_values, whole)


def test_describe_names_the_folder_never_its_path(tmp_path):
    folder = make_class_folders(tmp_path)
    for path in (str(folder), str(folder) + os.sep):
        dataset = load_dataset(f"imagefolder:{path}", cache_dir=str(tmp_path / "cache"))
        description = dataset.describe()
        assert description == {
            "name": "imagefolder:pets",
            "split": "train",
            "num_images": len(dataset),
            "image_size": 8,
            "channels": 3,
            "num_classes": 2,
            "class_names": ["cat", "dog"],
            "has_captions": False,
        }
        assert str(tmp_path) not in json.dumps(description)
        assert dataset.name == f"imagefolder:{path}"  # unchanged for other code
    assert load_dataset("digits", split="validation").describe()["name"] == "digits"


def test_hub_datasets_share_the_conversion(tmp_path, monkeypatch):
    arrays = random_images(20, (10, 14, 4))
    table = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(a, mode="RGBA") for a in arrays],
            "label": [i % 2 for i in range(20)],
            "caption": [f"hub picture {i}" for i in range(20)],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=["odd", "even"]),
                "caption": datasets.Value("string"),
            }
        ),
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kwargs: calls.append(name) or table)
    train = load_dataset("hub:someone/pictures", image_size=8, random_flip=True)
    validation = load_dataset("hub:someone/pictures", split="validation", image_size=8)
    assert (len(train), len(validation)) == (18, 2) and calls == ["someone/pictures"] * 2
    assert train.pixel_values.shape == (18, 3, 8, 8) and train.class_names == ["odd", "even"]
    assert (
        train.captions(0)[0].startswith("hub picture") and train.describe()["name"] == "hub:someone/pictures"
    )
    load_dataset("hub:someone/pictures", image_size=8)
    assert len(calls) == 2  # memoised
    with pytest.raises(ValueError, match=r"caption_column 'text' is not a column of hub:someone/pictures"):
        load_dataset("hub:someone/pictures", caption_column="text")


@pytest.mark.parametrize(
    "layout",
    [
        ["a.png", "b.png", "metadata.jsonl"],
        ["train/a.png", "train/b.png", "test/c.png"],
        ["train/cat/a.png", "train/dog/b.png", "validation/cat/c.png"],
        ["cat/a.png", "dog/b.png"],
        ["train-0.png", "train-1.png", "test-0.png", "notes.txt"],
        ["data/train-00000-of-00001.png", "data/test-00000-of-00001.png"],
        ["photos/my_training_set/a.png", "photos/eval/b.png", ".hidden/c.png", "__cache__/d.png"],
    ],
)
def test_split_detection_matches_datasets_own(tmp_path, layout):
    for relpath in layout:
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"")
    ours = imagefolder_module.split_patterns(imagefolder_module.list_folder(str(tmp_path)))
    assert ours == datasets.data_files.get_data_patterns(str(tmp_path))
