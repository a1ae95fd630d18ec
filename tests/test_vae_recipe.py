"""The VAE recipe's pieces on tiny models: the learned-variance Gaussian likelihood against torch's Normal, free bits
(the floor is kept, and a plain VAE at the same beta collapses below it), the KL warm-up, their argument checks,
and N(0, I) samples whose pixel statistics are closer to the data's than a plain autoencoder's."""

import json
import math

import pytest
import torch

from latentzoo.data import load_dataset
from latentzoo.models import Autoencoder, VariationalAutoencoder
from latentzoo.models.autoencoder import reconstruction_loss
from latentzoo.training import load_config
from latentzoo.training.tasks.autoencoder import VariationalAutoencoderTask

TINY = dict(sample_size=8, latent_dim=8, block_out_channels=(16, 32))


def test_gaussian_likelihood_is_the_normal_nll_at_the_maximum_likelihood_variance():
    generator = torch.Generator().manual_seed(0)
    decoder_output = torch.randn(4, 1, 8, 8, generator=generator)
    pixel_values = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    prediction = torch.tanh(decoder_output)
    variance = (prediction - pixel_values).pow(2).mean()  # the optimum of one shared σ²
    expected = -torch.distributions.Normal(prediction, variance.sqrt()).log_prob(pixel_values).mean()
    got = reconstruction_loss(decoder_output, pixel_values, "gaussian")
    torch.testing.assert_close(got, expected)
    # Any other shared variance gives a larger NLL: the loss is the minimum over σ.
    for scale in (0.5, 2.0):
        other = (
            -torch.distributions.Normal(prediction, (scale * variance).sqrt()).log_prob(pixel_values).mean()
        )
        assert other > got


def per_dimension_kl(model: VariationalAutoencoder, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        posterior = model.encode(pixel_values)
    return 0.5 * (posterior.mean.pow(2) + posterior.logvar.exp() - 1 - posterior.logvar).mean(0)


def train(model, pixel_values, steps=250, seed=0, **forward_kwargs):
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the posterior's eps
    for _ in range(steps):
        batch = pixel_values[torch.randint(len(pixel_values), (64,), generator=generator)]
        loss = model(batch, **forward_kwargs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="train").pixel_values  # (N, 1, 8, 8) in [-1, 1]


def test_free_bits_keep_every_dimension_above_the_floor_where_a_plain_vae_collapses(digits):
    # A strong KL weight (beta = 4) makes a plain VAE switch latent dimensions off (KL ~ 0); with a floor of
    # 0.5 nats the KL term stops pushing a dimension below it, and reconstruction keeps each one in use.
    floor = 0.5
    kls = {}
    for free_bits in (0.0, floor):
        torch.manual_seed(0)
        model = VariationalAutoencoder(**TINY, reconstruction_loss="gaussian", beta=4.0, free_bits=free_bits)
        kls[free_bits] = per_dimension_kl(train(model, digits, steps=400), digits)
    assert (kls[0.0] < 0.5 * floor).any()  # the plain VAE has collapsed dimensions...
    assert (kls[floor] > floor).all()  # ...the free-bits VAE none: every dimension above the floor


def test_free_bits_change_the_loss_only_below_the_floor():
    torch.manual_seed(0)
    plain = VariationalAutoencoder(**TINY).eval()
    floored = VariationalAutoencoder(**TINY, free_bits=100.0).eval()
    floored.load_state_dict(plain.state_dict())
    pixel_values = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = plain(pixel_values, sample_posterior=False)
    b = floored(pixel_values, sample_posterior=False)
    torch.testing.assert_close(a.kl, b.kl)  # the reported KL is the true one
    # Every dimension is below a 100-nat floor: the KL term is the floor itself, 100 · D nats.
    torch.testing.assert_close(b.loss, b.reconstruction_loss + 100.0 * TINY["latent_dim"] / 64)
    # beta given to the call overrides the configured one; 0 leaves the reconstruction alone.
    torch.testing.assert_close(
        plain(pixel_values, sample_posterior=False, beta=0.0).loss, a.reconstruction_loss
    )


def test_kl_warmup_ramps_beta_linearly_from_the_first_step():
    config = load_config(
        None, ["task=vae", "dataset=digits", "model.beta=2.0", "model.kl_warmup_steps=4", "report_to=none"]
    )
    task = VariationalAutoencoderTask(config.model, load_dataset("digits", split="train"))
    assert [task.kl_weight(step) for step in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    config = load_config(None, ["task=vae", "dataset=digits", "model.beta=2.0", "report_to=none"])
    task = VariationalAutoencoderTask(config.model, load_dataset("digits", split="train"))
    assert task.kl_weight(0) == 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"free_bits": -0.1}, "free_bits"),
        ({"free_bits": math.nan}, "free_bits"),
        ({"beta": -1.0}, "beta"),
        ({"reconstruction_loss": "laplace"}, "reconstruction_loss"),
    ],
)
def test_bad_recipe_values_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VariationalAutoencoder(**TINY, **kwargs)


@pytest.mark.parametrize("override", ["model.free_bits=-1", "model.kl_warmup_steps=-5", "model.beta=-2"])
def test_bad_recipe_config_values_fail_before_training(override):
    with pytest.raises(ValueError, match=override.split("=")[0].split(".")[1]):
        load_config(None, ["task=vae", "dataset=digits", override])


def test_vae_normal_samples_match_the_data_better_than_a_plain_autoencoder(digits):
    """On the same budget, decoding z ~ N(0, I) gives images whose mean image and pixel histogram are closer to
    the data's for the VAE (trained towards N(0, I)) than for a plain autoencoder (whose codes lie anywhere)."""
    torch.manual_seed(0)
    vae = train(VariationalAutoencoder(**TINY, reconstruction_loss="gaussian"), digits)
    torch.manual_seed(0)
    autoencoder = train(Autoencoder(**TINY), digits)
    latents = torch.randn(1000, TINY["latent_dim"], generator=torch.Generator().manual_seed(2))
    quantiles = torch.linspace(0.05, 0.95, 19)
    data_mean, data_quantiles = digits.mean(0), digits.flatten().quantile(quantiles)
    distances = {}
    for name, model in (("vae", vae), ("autoencoder", autoencoder)):
        with torch.no_grad():
            samples = model.decode(latents)
        distances[name] = (
            (samples.mean(0) - data_mean).pow(2).mean().sqrt(),
            (samples.flatten().quantile(quantiles) - data_quantiles).abs().mean(),
        )
    assert distances["vae"][0] < distances["autoencoder"][0]
    assert distances["vae"][1] < distances["autoencoder"][1]


def test_two_stage_vae_task_trains_its_first_stage_then_samples_from_standard_normal_noise(tmp_path):
    from latentzoo.models import TwoStageVAEPrior
    from latentzoo.pipelines.loading import load_pipeline
    from latentzoo.training import train
    from latentzoo.training.tasks import Stage
    from latentzoo.training.tasks.autoencoder import TwoStageVAETask

    first_stage = tmp_path / "vae.yaml"
    first_stage.write_text(
        json.dumps(
            {
                "task": "vae",
                "dataset": "digits",
                "max_train_steps": 3,
                "train_batch_size": 32,
                "report_to": "none",
                "num_validation_images": 4,
                "model": {"latent_dim": 4, "block_out_channels": [8, 16], "reconstruction_loss": "gaussian"},
            }
        )
    )
    config = load_config(
        None,
        [
            "task=two_stage_vae",
            "dataset=digits",
            f"output_dir={tmp_path / 'two-stage'}",
            f"model.vae={tmp_path / 'vae'}",
            f"model.vae_config={first_stage}",
            "model.hidden_dims=[16]",
            "max_train_steps=3",
            "train_batch_size=32",
            "report_to=none",
            "num_validation_images=4",
        ],
    )
    (stage,) = TwoStageVAETask.stages(config.model)
    assert stage == Stage("vae", str(first_stage), str(tmp_path / "vae")) and not stage.trained
    train(config)
    pipe = load_pipeline(tmp_path / "two-stage")
    assert type(pipe.prior) is TwoStageVAEPrior and pipe.num_classes is None
    torch.testing.assert_close(
        pipe.autoencoder.decoder.linear.weight,
        load_pipeline(tmp_path / "vae").autoencoder.decoder.linear.weight,
    )
    # Sampling is u ~ N(0, I) through the second stage's decoder, one generator per image.
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    images = pipe(batch_size=3, generator=generators, output_type="pt").images
    noise = torch.cat([torch.randn(1, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    with torch.no_grad():
        expected = (pipe.autoencoder.decode(pipe.prior.decoder(noise)) + 1) / 2
    torch.testing.assert_close(images, expected)

    # The second stage models a VAE's posteriors: an autoencoder folder is refused with the fix.
    from latentzoo.pipelines import AutoencoderPipeline

    AutoencoderPipeline(Autoencoder(**TINY)).save_pretrained(tmp_path / "ae")
    with pytest.raises(ValueError, match="holds a Autoencoder, not a VariationalAutoencoder"):
        TwoStageVAETask(
            load_config(None, ["task=two_stage_vae", f"model.vae={tmp_path / 'ae'}"]).model,
            load_dataset("digits", split="train"),
        )
