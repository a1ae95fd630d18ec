"""GAN latent arithmetic the DCGAN way: `GANPipeline.attribute_vector_from_samples` on a tiny GAN trained a few
steps, checked against the group means of z computed here; strength 0 changes nothing; bad arguments are
ValueErrors naming the argument."""

import pytest
import torch
from tiny_pipelines import gan_pipeline

from latentzoo.data.attributes import WEIGHT_THRESHOLDS
from latentzoo.models.checks import cycle_class_labels
from latentzoo.pipelines import GANPipeline
from latentzoo.pipelines.gan import SampledAttributeVector
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training import Trainer, load_config

NUM_SAMPLES = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> GANPipeline:
    """A class-conditional (3 of the digits' classes are enough) GAN on 8x8 `digits`, trained 3 steps and loaded."""
    config = load_config(
        None,
        [
            "task=gan",
            "dataset=digits",
            "report_to=none",
            "train_batch_size=16",
            "learning_rate=1e-3",
            "max_grad_norm=null",
            "max_train_steps=3",
            "model.latent_dim=8",
            "model.generator_channels=[16,8]",
            "model.discriminator_channels=[8,16]",
            "model.class_conditional=true",
            "model.class_embed_dim=4",
            f"output_dir={tmp_path_factory.mktemp('tiny-gan')}",
        ],
    )
    pipe = load_pipeline(Trainer(config).train())
    assert isinstance(pipe, GANPipeline)
    return pipe


def seeded_latents(count: int, latent_dim: int) -> torch.Tensor:
    """z_i ~ N(0, I) drawn with torch.Generator().manual_seed(i), as a list of generators draws them."""
    return torch.cat(
        [torch.randn(1, latent_dim, generator=torch.Generator().manual_seed(i)) for i in range(count)]
    )


def brightness_measure(images: torch.Tensor, low: float, high: float) -> dict[str, torch.Tensor]:
    """A stub measurement: mean pixel value, mapped linearly so that `low` and `high` fall on the weight thresholds
    (below `low`: "thin", from `high` on: "bold")."""
    brightness = images.flatten(1).mean(1)
    thin_below, bold_from = WEIGHT_THRESHOLDS
    weight = thin_below + (brightness - low) / (high - low) * (bold_from - thin_below)
    return {"weight": weight}


def test_vector_from_samples_is_the_difference_of_the_two_group_means_of_z(trained):
    labels = cycle_class_labels(NUM_SAMPLES, trained.num_classes)
    # Independently: the same z's, their images, and thresholds halfway between neighbouring brightnesses at the
    # tertiles (so no sample sits on a boundary).
    z = seeded_latents(NUM_SAMPLES, trained.latent_dim)
    with torch.no_grad():
        brightness = trained.generator(z, torch.tensor(labels)).flatten(1).mean(1)
    ordered = brightness.sort().values
    low, high = ((ordered[k - 1] + ordered[k]).item() / 2 for k in (NUM_SAMPLES // 3, 2 * NUM_SAMPLES // 3))
    thin, bold = brightness < low, brightness >= high
    expected = z[bold].mean(0) - z[thin].mean(0)

    result = trained.attribute_vector_from_samples(
        "weight",
        "bold",
        "thin",
        num_samples=NUM_SAMPLES,
        class_labels=labels,
        generator=[torch.Generator().manual_seed(i) for i in range(NUM_SAMPLES)],
        batch_size=16,  # 60 = 3 x 16 + 12: batches do not change the samples
        measure=lambda images: brightness_measure(images, low, high),
    )
    assert isinstance(result, SampledAttributeVector)
    torch.testing.assert_close(result.latents, z)
    torch.testing.assert_close(result.vector, expected)
    assert result.vector.shape == (trained.latent_dim,) and result.vector.norm() > 0
    assert result.counts == {"thin": 20, "regular": 20, "bold": 20}
    assert [c == "bold" for c in result.classes] == bold.tolist()
    torch.testing.assert_close(
        result.values, brightness_measure(brightness.view(-1, 1, 1, 1), low, high)["weight"]
    )


def test_the_same_generator_gives_the_same_vector_whatever_the_batch_size():
    pipe = gan_pipeline(num_classes=None)
    count = 40

    def lean(images: torch.Tensor) -> torch.Tensor:  # a stub "slant": left half minus right half of the ink
        half = images.shape[-1] // 2
        return images[..., :half].mean((1, 2, 3)) - images[..., half:].mean((1, 2, 3))

    with torch.no_grad():
        centre = lean(pipe.generator(seeded_latents(count, pipe.latent_dim))).median()
    runs = [
        pipe.attribute_vector_from_samples(
            "slant",
            "right",
            "left",
            count,
            generator=[torch.Generator().manual_seed(i) for i in range(count)],
            batch_size=batch_size,
            measure=lambda images: {"slant": (lean(images) - centre) * 100},
        )
        for batch_size in (7, 40)
    ]
    assert sum(runs[0].counts.values()) == count and min(runs[0].counts.values()) > 0
    assert torch.equal(runs[0].latents, runs[1].latents) and runs[0].classes == runs[1].classes
    torch.testing.assert_close(runs[0].vector, runs[1].vector)


def test_apply_attribute_with_strength_zero_returns_the_original_images_exactly(trained):
    z = seeded_latents(6, trained.latent_dim)
    labels = [0, 1, 2, 0, 1, 2]
    vector = torch.randn(trained.latent_dim, generator=torch.Generator().manual_seed(9))
    original = trained.decode(z, labels, output_type="pt").images
    same = trained.apply_attribute(z, vector, 0.0, class_labels=labels, output_type="pt").images
    assert torch.equal(same, original)
    # ... and the z's the pipeline draws itself are these ones.
    drawn = trained(
        class_labels=labels, generator=[torch.Generator().manual_seed(i) for i in range(6)], output_type="pt"
    ).images
    assert torch.equal(drawn, original)
    # Any other strength moves them.
    moved = trained.apply_attribute(z, vector, 2.0, class_labels=labels, output_type="pt").images
    assert not torch.equal(moved, original)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attribute": "colour"}, r"`attribute` must be one of \['slant', 'weight'\].*'colour'"),
        (
            {"high": "heavy"},
            r"`high` must be a weight class, one of \['thin', 'regular', 'bold'\], got 'heavy'",
        ),
        ({"low": "left"}, r"`low` must be a weight class.*got 'left'"),
        ({"low": "bold"}, r"`high` and `low` must be two different weight classes"),
        ({"num_samples": 1}, r"`num_samples` must be"),
        ({"batch_size": 0}, r"`batch_size` must be"),
        ({"truncation": -1.0}, r"`truncation` must be"),
        ({"class_labels": None}, r"class-conditional.*pass `class_labels`"),
        ({"class_labels": [0, 1]}, r"`num_samples`=20 disagrees with the 2 `class_labels`"),
        ({"generator": [torch.Generator()] * 3}, r"`generator` is a list of 3"),
        (
            {"measure": lambda images: {"slant": images.mean((1, 2, 3))}},
            r"`measure` must return a dict with the key 'weight'",
        ),
        ({"measure": lambda images: {"weight": torch.zeros(1)}}, r"`measure` gave \d+ values for 20 images"),
    ],
)
def test_bad_arguments_are_value_errors_naming_the_argument(kwargs, message):
    pipe = gan_pipeline(num_classes=3)
    arguments = {
        "attribute": "weight",
        "high": "bold",
        "low": "thin",
        "num_samples": 20,
        "class_labels": 1,
        "measure": lambda images: {"weight": torch.linspace(1.0, 3.0, len(images))},
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        pipe.attribute_vector_from_samples(**arguments)


def test_a_class_without_samples_says_how_many_each_class_got_and_suggests_more_samples():
    pipe = gan_pipeline(num_classes=None)
    all_thin = lambda images: {"weight": torch.full((len(images),), 1.5)}  # noqa: E731
    with pytest.raises(
        ValueError, match=r"No sample of the 20 was measured 'bold'.*thin 20, regular 0, bold 0.*more samples"
    ):
        pipe.attribute_vector_from_samples("weight", "bold", "thin", 20, measure=all_thin)
    with pytest.raises(ValueError, match=r"'right' or 'left'"):
        pipe.attribute_vector_from_samples(
            "slant", "right", "left", 20, measure=lambda images: {"slant": torch.zeros(len(images))}
        )


def test_the_default_measurement_is_the_projects_stroke_width_and_slant():
    """Without a stub the samples are measured by `measure_attribute_values`: an untrained tiny GAN's near-constant
    images all measure upright, and the refusal counts them as that measurement does."""
    from latentzoo.data.attributes import bin_attribute, measure_attribute_values

    pipe = gan_pipeline(num_classes=None)
    with torch.no_grad():
        slant = measure_attribute_values(pipe.generator(seeded_latents(50, pipe.latent_dim)))["slant"]
    classes = bin_attribute("slant", slant)
    found = ", ".join(f"{name} {classes.count(name)}" for name in ("left", "upright", "right"))
    with pytest.raises(ValueError, match=rf"\(slant: {found}\)"):
        pipe.attribute_vector_from_samples(
            "slant", "right", "left", 50, generator=[torch.Generator().manual_seed(i) for i in range(50)]
        )
