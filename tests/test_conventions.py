"""Conventions every pipeline and every metric shares: `num_classes` (the one answer to "conditional on what?"),
the one image grid (`evaluation.images.make_image_grid`) and the one seeded sampling loop
(`evaluation.sampling.sample_images`: image i drawn with generator seed `seed + i`). Tiny CPU models."""

import numpy as np
import pytest
import torch
from tiny_pipelines import autoencoder_pipeline, gan_pipeline, pixel_pipeline, text_to_image_pipeline

from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.projector import make_sprite
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines import (
    PixelDiffusionPipeline,
)


# ------------------------------------------------------------------------------------------------ num_classes
@pytest.mark.parametrize(
    "build, expected",
    [
        (text_to_image_pipeline, None),
        (lambda: pixel_pipeline(2), 2),  # the null class is not one of them
        (lambda: pixel_pipeline(None), None),
        (lambda: gan_pipeline(3), 3),
        (lambda: gan_pipeline(None), None),
        (lambda: autoencoder_pipeline("mdn-classes"), 10),
        (lambda: autoencoder_pipeline("mdn"), None),
        (lambda: autoencoder_pipeline("gaussian"), None),
        (lambda: autoencoder_pipeline(None), None),
    ],
    ids=[
        "text2img",
        "pixel",
        "pixel-uncond",
        "gan",
        "gan-uncond",
        "ae-mdn",
        "ae-mdn-uncond",
        "ae-gauss",
        "ae-none",
    ],
)
def test_every_pipeline_says_how_many_real_classes_it_takes_read_only(build, expected):
    pipe = build()
    assert pipe.num_classes == expected
    with pytest.raises(AttributeError):
        pipe.num_classes = 5


@pytest.mark.parametrize(
    "build", [pixel_pipeline, gan_pipeline, autoencoder_pipeline], ids=["pixel", "gan", "ae"]
)
def test_num_classes_is_the_range_of_class_labels(build):
    pipe = build()
    last = pipe.num_classes - 1
    kwargs = {"num_inference_steps": 1} if isinstance(pipe, PixelDiffusionPipeline) else {}
    images = pipe(
        class_labels=[0, last], generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs
    )
    assert len(images.images) == 2
    with pytest.raises(ValueError, match=rf"`class_labels` must lie in \[0, {last}\]"):
        pipe(class_labels=[pipe.num_classes], output_type="pt", **kwargs)


# --------------------------------------------------------------------------------------------------- the grid
def test_grid_lays_images_out_row_by_row_with_blank_cells_at_the_end():
    images = torch.stack([torch.full((1, 2, 3), i / 10) for i in range(1, 6)])  # 5 flat grey 2x3 images
    grid = make_image_grid(images, nrow=2)
    assert grid.mode == "L" and grid.size == (2 * 3, 3 * 2)  # 2 per row, 3 rows: (width, height)
    array = np.asarray(grid)
    for i in range(5):
        row, col = divmod(i, 2)
        assert (array[row * 2 : (row + 1) * 2, col * 3 : (col + 1) * 3] == round((i + 1) / 10 * 255)).all()
    assert (array[4:6, 3:6] == 0).all()  # the sixth cell is blank
    assert make_image_grid(images).size == (3 * 3, 2 * 2)  # default: ceil(sqrt(5)) = 3 per row
    assert make_image_grid(images, nrow=2, rows=4).size == (6, 8)  # extra blank rows on request
    with pytest.raises(ValueError, match="fewer than the 5 given"):
        make_image_grid(images, nrow=2, rows=2)


def test_grid_keeps_channels_clamps_and_rounds_to_8_bits():
    rgb = (
        torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    )  # some outside [0, 1]
    grid = make_image_grid(rgb, nrow=4)
    assert grid.mode == "RGB" and grid.size == (20, 5)
    expected = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 3, 1).reshape(5, 20, 3)
    assert np.array_equal(np.asarray(grid), expected.numpy())
    assert make_image_grid(rgb[:, :1]).mode == "L"  # grayscale stays one channel


def test_projector_sprite_is_the_grid_in_a_square_from_minus_one_to_one():
    images = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sprite = make_sprite(images)
    assert sprite.size == (16, 16)  # ceil(sqrt(10)) = 4 per side, 4 rows though 3 would hold them
    assert np.array_equal(np.asarray(sprite), np.asarray(make_image_grid((images + 1) / 2, nrow=4, rows=4)))


# --------------------------------------------------------------------------------------------- seeded sampling
def by_hand(pipe, seeds, **kwargs) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return pipe(generator=generators, output_type="pt", **kwargs).images.float() * 2 - 1


SAMPLING = {
    "text2img": (
        text_to_image_pipeline,
        {"prompt": ["a bold seven", "a thin two", "a one", "zero", "a four"]},
        {"num_inference_steps": 2, "guidance_scale": 3.0},
    ),
    "pixel": (
        pixel_pipeline,
        {"class_labels": [0, 1, 1, 0, 1]},
        {"num_inference_steps": 2, "guidance_scale": 2.0},
    ),
    "gan": (gan_pipeline, {"class_labels": torch.tensor([2, 0, 1, 1, 2])}, {"truncation": 1.5}),
    "gan-uncond": (lambda: gan_pipeline(None), {}, {}),
    "ae": (autoencoder_pipeline, {"class_labels": [3, 9, 0, 0, 7]}, {}),
}


@pytest.mark.parametrize("kind", SAMPLING)
def test_sample_images_is_the_pipeline_called_by_hand_with_one_generator_per_image(kind):
    build, condition, settings = SAMPLING[kind]
    pipe = build()
    name, values = next(iter(condition.items()), (None, None))  # the per-image condition, if any

    def hand(start, stop):
        part = {name: values[start:stop]} if name else {"batch_size": stop - start}
        return by_hand(pipe, range(10 + start, 10 + stop), **part, **settings)

    # One call: exactly the pipeline's own images, generator seeds 10..14.
    images = sample_images(pipe, 5, seed=10, **condition, **settings)
    assert images.shape[0] == 5 and images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, hand(0, 5))
    # Batches of 2: calls on images [0, 2), [2, 4), [4, 5), each with its own slice of the condition and seeds.
    batched = sample_images(pipe, 5, seed=10, batch_size=2, **condition, **settings)
    assert torch.equal(batched, torch.cat([hand(0, 2), hand(2, 4), hand(4, 5)]))
    # The batch size changes no image beyond the summation order of batched kernels.
    torch.testing.assert_close(batched, images, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        sample_images(pipe, 5, seed=10, batch_size=1, **condition, **settings), images, atol=1e-5, rtol=1e-4
    )
    assert not torch.equal(sample_images(pipe, 5, seed=11, **condition, **settings)[0], images[0])


def test_sample_images_wants_one_condition_per_image():
    pipe = gan_pipeline()
    with pytest.raises(ValueError, match="`class_labels` has 2 entries for 3 images"):
        sample_images(pipe, 3, seed=0, class_labels=[0, 1])
    with pytest.raises(ValueError, match="not both"):
        sample_images(pipe, 2, seed=0, class_labels=[0, 1], prompt=["a", "b"])
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        sample_images(pipe, 2, seed=0, batch_size=0, class_labels=[0, 1])
