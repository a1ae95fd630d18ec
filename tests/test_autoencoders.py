"""Autoencoder, VariationalAutoencoder, GaussianPrior and AutoencoderPipeline on tiny models: save/load, seeded
sampling, the KL term, input checks, latent arithmetic on a trained model, the training tasks, the projector."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentzoo.data import load_dataset, measure_attribute_values
from latentzoo.models import (
    Autoencoder,
    GaussianPrior,
    MixtureDensityNetwork,
    VariationalAutoencoder,
    kl_divergence,
)
from latentzoo.pipelines import AutoencoderPipeline
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training.tasks import Stage

TINY = dict(sample_size=8, latent_dim=4, block_out_channels=(8, 16))


def tiny(model_class, **kwargs):
    torch.manual_seed(0)
    return model_class(**{**TINY, **kwargs}).eval()


def images(n=4, size=8, channels=1, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("model_class", [Autoencoder, VariationalAutoencoder])
def test_model_save_load_round_trip(tmp_path, model_class):
    model = tiny(model_class, reconstruction_loss="mse")
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    assert loaded.config.latent_dim == 4 and loaded.config.reconstruction_loss == "mse"
    x = images()
    with torch.no_grad():
        expected = model(x, **({"sample_posterior": False} if model_class is VariationalAutoencoder else {}))
        got = loaded(x, **({"sample_posterior": False} if model_class is VariationalAutoencoder else {}))
    assert torch.equal(got.sample, expected.sample) and torch.equal(got.loss, expected.loss)


def test_gaussian_prior_fits_and_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0], [1.0, 0.5]])
    latents = torch.randn(20_000, 2, generator=generator) @ mixing.T + torch.tensor([1.0, -3.0])
    prior = GaussianPrior.from_latents(latents)
    torch.testing.assert_close(prior.mean, torch.tensor([1.0, -3.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(prior.scale_tril @ prior.scale_tril.T, mixing @ mixing.T, atol=0.1, rtol=0)
    prior.save_pretrained(tmp_path)
    loaded = GaussianPrior.from_pretrained(tmp_path)
    draws = [p.sample(5, generator=torch.Generator().manual_seed(1)) for p in (prior, loaded)]
    assert torch.equal(draws[0], draws[1])
    with pytest.raises(ValueError, match="unconditional"):
        prior.sample(2, class_labels=torch.tensor([1, 2]))


def pipelines():
    """An AutoencoderPipeline for each kind of prior."""
    autoencoder = tiny(Autoencoder)
    return {
        "vae": (AutoencoderPipeline(tiny(VariationalAutoencoder)), {}),
        "ae-standard-normal": (AutoencoderPipeline(autoencoder), {}),
        "ae-gaussian": (AutoencoderPipeline(autoencoder, GaussianPrior.from_latents(torch.randn(50, 4))), {}),
        "ae-mdn": (
            AutoencoderPipeline(
                autoencoder, MixtureDensityNetwork(4, num_classes=10, hidden_dims=(8,)).eval()
            ),
            {"class_labels": [3, 1, 4]},
        ),
    }


@pytest.mark.parametrize("kind", ["vae", "ae-standard-normal", "ae-gaussian", "ae-mdn"])
def test_pipeline_save_load_round_trip_samples_the_same_images(tmp_path, kind):
    pipe, kwargs = pipelines()[kind]
    kwargs = kwargs or {"batch_size": 3}
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path)
    assert type(loaded) is AutoencoderPipeline
    assert type(loaded.prior) is type(pipe.prior)
    expected = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="np").images
    got = loaded(**kwargs, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert expected.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["vae", "ae-gaussian", "ae-mdn"])
def test_seeded_sampling_is_reproducible_and_batching_changes_nothing(kind):
    pipe, kwargs = pipelines()[kind]
    kwargs = kwargs or {"batch_size": 3}

    def sample(generator):
        return pipe(**kwargs, generator=generator, output_type="latent").images

    assert torch.equal(sample(torch.Generator().manual_seed(0)), sample(torch.Generator().manual_seed(0)))
    assert not torch.equal(sample(torch.Generator().manual_seed(0)), sample(torch.Generator().manual_seed(1)))
    batch = sample([torch.Generator().manual_seed(i) for i in range(3)])
    labels = kwargs.get("class_labels")
    one_by_one = [
        pipe(
            **({"class_labels": [labels[i]]} if labels else {"batch_size": 1}),
            generator=torch.Generator().manual_seed(i),
            output_type="latent",
        ).images
        for i in range(3)
    ]
    torch.testing.assert_close(batch, torch.cat(one_by_one))


def test_pipeline_output_types():
    pipe, _ = pipelines()["vae"]
    generator = torch.Generator().manual_seed(0)
    pil = pipe(batch_size=2, generator=generator).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    pt = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert pt.shape == (2, 1, 8, 8) and pt.min() >= 0 and pt.max() <= 1
    latents = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert latents.shape == (2, 4)
    decoded = pipe(latents=latents, output_type="pt").images
    torch.testing.assert_close(decoded, pt)
    assert pipe(batch_size=1, return_dict=False)[0][0].size == (8, 8)


def test_vae_samples_the_posterior_through_its_generator():
    vae = tiny(VariationalAutoencoder)
    x = images()
    with torch.no_grad():
        first = vae(x, generator=torch.Generator().manual_seed(0)).latents
        again = vae(x, generator=torch.Generator().manual_seed(0)).latents
        other = vae(x, generator=torch.Generator().manual_seed(1)).latents
        mean = vae(x, sample_posterior=False).latents
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(mean, vae.encode(x).mean)


# ------------------------------------------------------------------------------------------------- KL term
def test_kl_is_zero_exactly_when_the_posterior_is_the_prior_and_positive_otherwise():
    zeros = torch.zeros(3, 5)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    generator = torch.Generator().manual_seed(0)
    assert (kl_divergence(torch.randn(3, 5, generator=generator), zeros) > 0).all()
    assert (kl_divergence(zeros, torch.randn(3, 5, generator=generator)) > 0).all()
    # Same value as torch.distributions computes.
    mean, logvar = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(1)
    torch.testing.assert_close(kl_divergence(mean, logvar), reference)

    # Through the model: an encoder whose head outputs 0 gives q(z|x) = N(0, I) for every image: KL exactly 0.
    vae = tiny(VariationalAutoencoder, beta=1.0)
    with torch.no_grad():
        vae.encoder.head.weight.zero_()
        vae.encoder.head.bias.zero_()
        output = vae(images(), generator=torch.Generator().manual_seed(0))
        assert output.kl.item() == 0.0
        assert torch.equal(output.loss, output.reconstruction_loss)
        vae.encoder.head.bias[0] = 0.5  # mean of one latent dimension moves off the prior
        assert vae(images(), generator=torch.Generator().manual_seed(0)).kl.item() > 0


# ------------------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize("model_class", [Autoencoder, VariationalAutoencoder])
def test_wrong_image_sizes_and_channel_counts_raise_clear_errors(model_class):
    model = tiny(model_class)
    with pytest.raises(ValueError, match=r"is 32x32 but the model was built for 8x8.*image_size=8"):
        model(images(size=32))
    with pytest.raises(
        ValueError, match=r"has 3 channels but the model was built with in_channels=1.*grayscale"
    ):
        model(images(channels=3))
    with pytest.raises(ValueError, match=r"add the batch dimension"):
        model.encode(images()[0])
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model.encode(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"latents` must have shape \(B, latent_dim=4\)"):
        model.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* len\\(block_out_channels\\) = 4"):
        model_class(sample_size=10, block_out_channels=(8, 16))
    pipe = AutoencoderPipeline(model)
    with pytest.raises(ValueError, match="in_channels=1"):
        pipe.encode(images(channels=3))


def test_pipeline_argument_errors_name_the_fix():
    unconditional, _ = pipelines()["vae"]
    with pytest.raises(ValueError, match="class-conditional prior"):
        unconditional(class_labels=[1, 2])
    conditional, _ = pipelines()["ae-mdn"]
    with pytest.raises(ValueError, match="pass `class_labels`"):
        conditional(batch_size=2)
    with pytest.raises(ValueError, match="disagrees with the 2 `class_labels`"):
        conditional(batch_size=3, class_labels=[1, 2])
    with pytest.raises(ValueError, match="`output_type` must be one of"):
        unconditional(output_type="jpeg")
    with pytest.raises(ValueError, match="list of 2 generators"):
        unconditional(batch_size=3, generator=[torch.Generator(), torch.Generator()])


# ------------------------------------------------------------------------- latent arithmetic on a trained model
@pytest.fixture(scope="module")
def trained_pipeline():
    """A tiny autoencoder trained for a few hundred steps on the 8x8 digits."""
    pixel_values = load_dataset("digits", split="train").pixel_values
    torch.manual_seed(0)
    model = Autoencoder(sample_size=8, latent_dim=8, block_out_channels=(16, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = pixel_values[torch.randint(len(pixel_values), (64,), generator=generator)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return AutoencoderPipeline(model.eval()), pixel_values


def test_reconstruction_and_interpolation_on_a_trained_model(trained_pipeline):
    pipe, pixel_values = trained_pipeline
    x = pixel_values[:8]
    reconstruction = pipe.reconstruct(x, output_type="pt").images * 2 - 1
    assert (reconstruction - x).pow(2).mean() < 0.5 * x.var()
    strips = pipe.interpolate(x[:2], x[2:4], num_steps=5, method="lerp", output_type="pt").images
    assert strips.shape == (10, 1, 8, 8)
    torch.testing.assert_close(strips[0], pipe.reconstruct(x[:1], output_type="pt").images[0])
    torch.testing.assert_close(strips[9], pipe.reconstruct(x[3:4], output_type="pt").images[0])


def test_bold_minus_thin_vector_raises_the_measured_stroke_weight(trained_pipeline):
    pipe, pixel_values = trained_pipeline
    weight = measure_attribute_values(pixel_values)["weight"]
    low, high = weight.quantile(1 / 3), weight.quantile(2 / 3)
    vector = pipe.attribute_vector(pixel_values[weight >= high], pixel_values[weight < low])
    assert vector.shape == (8,)

    held_out = load_dataset("digits", split="validation").pixel_values[:100]
    strips = pipe.apply_attribute(held_out, vector, strength=[-1.0, 0.0, 1.0], output_type="pt").images
    measured = measure_attribute_values(strips * 2 - 1)["weight"].view(100, 3)  # (image, strength)
    thinner, unchanged, bolder = measured.mean(0)
    assert thinner < unchanged < bolder
    assert (measured[:, 2] > measured[:, 1]).float().mean() > 0.7  # most digits, not only on average


# ------------------------------------------------------------------------------------------ training tasks
def test_mdn_prior_task_trains_its_autoencoder_first_and_samples_by_class(tmp_path):
    from latentzoo.training import load_config, train
    from latentzoo.training.tasks.autoencoder import MixtureDensityPriorTask

    stage_1 = tmp_path / "ae.yaml"
    stage_1.write_text(
        json.dumps(
            {
                "task": "autoencoder",
                "dataset": "digits",
                "max_train_steps": 3,
                "train_batch_size": 32,
                "report_to": "none",
                "num_validation_images": 4,
                "model": {"latent_dim": 2, "block_out_channels": [8, 16]},
            }
        )
    )
    config = load_config(
        None,
        [
            "task=mdn_prior",
            "dataset=digits",
            f"output_dir={tmp_path / 'mdn'}",
            f"model.autoencoder={tmp_path / 'ae'}",
            f"model.autoencoder_config={stage_1}",
            "max_train_steps=3",
            "train_batch_size=32",
            "report_to=none",
            "num_validation_images=10",
            "model.hidden_dims=[16]",
            "model.num_components=3",
        ],
    )
    (stage,) = MixtureDensityPriorTask.stages(config.model)
    assert stage == Stage("autoencoder", str(stage_1), str(tmp_path / "ae")) and not stage.trained
    train(config)
    autoencoder = load_pipeline(tmp_path / "ae")
    assert type(autoencoder.prior) is GaussianPrior  # the `autoencoder` task fits one at save time
    pipe = load_pipeline(tmp_path / "mdn")
    assert pipe.is_class_conditional and pipe.prior.config.num_classes == 10
    torch.testing.assert_close(
        pipe.autoencoder.decoder.linear.weight, autoencoder.autoencoder.decoder.linear.weight
    )
    images = pipe(class_labels=[0, 7], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1)


# ----------------------------------------------------------------------------------------------- projector
def test_projector_writes_the_files_tensorboard_reads_with_agreeing_shapes(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    from latentzoo.evaluation.projector import PROJECTOR_FILES
    from latentzoo.training.cli import main

    tiny(VariationalAutoencoder, latent_dim=2).save_pretrained(tmp_path / "model" / "autoencoder")
    AutoencoderPipeline(
        VariationalAutoencoder.from_pretrained(tmp_path / "model" / "autoencoder")
    ).save_pretrained(tmp_path / "model")
    output_dir = tmp_path / "projector"
    main(
        [
            "projector",
            str(tmp_path / "model"),
            "--dataset",
            "digits",
            "--num-images",
            "20",
            "--output-dir",
            str(output_dir),
        ]
    )

    assert all((output_dir / name).is_file() for name in PROJECTOR_FILES)
    config = text_format.Parse(
        (output_dir / "projector_config.pbtxt").read_text(), projector.ProjectorConfig()
    )
    (embedding,) = config.embeddings
    assert (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path) == (
        "tensors.tsv",
        "metadata.tsv",
        "sprite.png",
    )
    assert list(embedding.sprite.single_image_dim) == [8, 8]
    tensors = np.loadtxt(output_dir / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (20, 2)
    rows = (output_dir / "metadata.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["label", "weight", "slant", "stroke width", "shear"]
    assert len(rows) == 1 + 20 and all(len(row.split("\t")) == 5 for row in rows)
    # 20 thumbnails of 8x8 in a square of ceil(sqrt(20)) = 5 per side.
    assert Image.open(output_dir / "sprite.png").size == (40, 40)
    # The 2-D latent space also gets its manifold (20 x 20 decoded quantiles); strips are 8 rows.
    assert Image.open(output_dir / "latent_manifold.png").size == (160, 160)
    assert Image.open(output_dir / "interpolation_slerp.png").size == (10 * 8, 8 * 8)
    assert Image.open(output_dir / "attribute_bold_minus_thin.png").size == (5 * 8, 8 * 8)
    assert list(output_dir.glob("events.out.tfevents.*"))


def test_latent_manifold_needs_a_2d_latent_space_and_projector_checks_counts(tmp_path):
    from latentzoo.evaluation.projector import latent_manifold, write_projector

    with pytest.raises(ValueError, match="needs a 2-D latent space; this autoencoder's latent_dim is 4"):
        latent_manifold(AutoencoderPipeline(tiny(VariationalAutoencoder)))
    with pytest.raises(ValueError, match="metadata column 'label' has 2 values for 3 embeddings"):
        write_projector(tmp_path, torch.zeros(3, 2), {"label": [1, 2]})
    # A single metadata column has no header row, as TensorBoard expects.
    write_projector(tmp_path, torch.zeros(3, 2), {"label": [1, 2, 3]})
    assert (tmp_path / "metadata.tsv").read_text().splitlines() == ["1", "2", "3"]


def test_autoencoder_and_mdn_tasks_train_under_bf16_autocast(tmp_path):
    """Accelerate's mixed-precision wrapper rebuilds a model's output from a dict (`type(output)({...})`): the
    autoencoder's and the MDN's outputs must allow it. A fresh process: Accelerate fixes the precision per process."""
    import subprocess
    import sys

    stage = {
        "task": "vae",
        "dataset": "digits",
        "max_train_steps": 2,
        "train_batch_size": 16,
        "report_to": "none",
        "num_validation_images": 4,
        "model": {"latent_dim": 2, "block_out_channels": [8, 16]},
    }
    (tmp_path / "vae.yaml").write_text(json.dumps(stage))
    run = {
        "task": "mdn_prior",
        "dataset": "digits",
        "output_dir": str(tmp_path / "mdn"),
        "max_train_steps": 2,
        "train_batch_size": 16,
        "report_to": "none",
        "num_validation_images": 10,
        "mixed_precision": "bf16",
        "attention": "sdpa",
        "model": {
            "autoencoder": str(tmp_path / "vae"),
            "autoencoder_config": str(tmp_path / "vae.yaml"),
            "hidden_dims": [16],
        },
    }
    (tmp_path / "mdn.yaml").write_text(json.dumps(run))
    result = subprocess.run(
        [sys.executable, "-m", "latentzoo.training.cli", "train", str(tmp_path / "mdn.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mixed precision bf16" in result.stderr
    for folder in ("vae", "mdn"):
        assert (tmp_path / folder / "training_config.yaml").is_file()
