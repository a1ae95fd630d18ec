"""The class-conditional MDN prior gives the asked class: on a tiny synthetic two-class dataset that a simple rule
tells apart (a bar on the left half or on the right half), the `mdn_prior` task's pipeline, asked for a class,
draws images that pass that class's rule at least 90% of the time."""

import pytest
import torch

from latentzoo.data.datasets import ImageDataset
from latentzoo.models import Autoencoder
from latentzoo.pipelines import AutoencoderPipeline
from latentzoo.training import load_config
from latentzoo.training.tasks.autoencoder import MixtureDensityPriorTask


def two_bars(n: int, seed: int = 0) -> ImageDataset:
    """(n, 1, 8, 8) images in [-1, 1]: class 0 a vertical bar in columns 0-2, class 1 in columns 5-7, at a random
    column, height and brightness, over faint noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 8, 8, generator=generator) * 0.2 - 1
    columns = torch.randint(0, 3, (n,), generator=generator) + 5 * labels
    tops = torch.randint(0, 3, (n,), generator=generator)
    lengths = torch.randint(4, 6, (n,), generator=generator)
    brightness = torch.rand(n, generator=generator) * 0.5 + 0.5
    for i in range(n):
        images[i, 0, tops[i] : tops[i] + lengths[i], columns[i]] = brightness[i]
    return ImageDataset(images, class_labels=labels, num_classes=2, name="two-bars")


def rule(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 8, 8) → (B,) the class the rule reads: 1 where the right half is brighter than the left."""
    return (images[..., 4:].mean((1, 2, 3)) > images[..., :4].mean((1, 2, 3))).long()


def test_mdn_prior_samples_pass_the_asked_class_rule(tmp_path):
    dataset = two_bars(512)
    assert (rule(dataset.pixel_values) == dataset.class_labels).all()  # the rule tells the data apart

    torch.manual_seed(0)
    autoencoder = Autoencoder(sample_size=8, latent_dim=4, block_out_channels=(8, 16))
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = dataset.pixel_values[torch.randint(len(dataset), (64,), generator=generator)]
        loss = autoencoder(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    AutoencoderPipeline(autoencoder.eval()).save_pretrained(tmp_path / "ae")

    config = load_config(
        None,
        [
            "task=mdn_prior",
            f"model.autoencoder={tmp_path / 'ae'}",
            "model.autoencoder_config=null",
            "model.hidden_dims=[32]",
            "model.class_embed_dim=8",
            "model.num_components=3",
        ],
    )
    task = MixtureDensityPriorTask(config.model, dataset)
    codes = task.train_dataset()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(task.prior.parameters(), lr=3e-3)
    for _ in range(300):
        index = torch.randint(len(codes), (64,), generator=generator)
        batch = {"latents": codes.latents[index], "class_labels": codes.class_labels[index]}
        loss = task.training_step(batch, task.trainable_modules(), 0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipeline = task.make_pipeline({"prior": task.prior.eval()})

    asked = torch.arange(400) % 2
    generators = [torch.Generator().manual_seed(i) for i in range(len(asked))]
    images = pipeline(class_labels=asked, generator=generators, output_type="pt").images * 2 - 1
    assert (rule(images) == asked).float().mean() >= 0.9


# ------------------------------------------------------------------------------ standardized targets, temperature
def _pair(**kwargs):
    """The same weights with and without target statistics."""
    from latentzoo.models import MixtureDensityNetwork

    torch.manual_seed(0)
    plain = MixtureDensityNetwork(
        3, num_components=4, num_classes=2, hidden_dims=(16,), class_embed_dim=4
    ).eval()
    scaled = MixtureDensityNetwork(
        3, num_components=4, num_classes=2, hidden_dims=(16,), class_embed_dim=4, **kwargs
    ).eval()
    scaled.load_state_dict(plain.state_dict())  # the statistics live in the config, not the weights
    return plain, scaled


def test_a_standardized_mdn_is_the_mixture_of_the_standardized_target_mapped_back():
    mean, std = torch.tensor([10.0, -5.0, 0.5]), torch.tensor([12.0, 0.1, 3.0])
    plain, scaled = _pair(target_mean=mean.tolist(), target_std=std.tolist())
    labels = torch.tensor([0, 1, 1, 0])
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * std + mean
    # change of variables: log p(z) = log p'((z − mean) / std) − Σ log std
    expected = plain.log_prob((z - mean) / std, class_labels=labels) - std.log().sum()
    torch.testing.assert_close(scaled.log_prob(z, class_labels=labels), expected)
    draws = [
        m.sample(class_labels=labels, generator=torch.Generator().manual_seed(2), temperature=0.5)
        for m in (plain, scaled)
    ]
    torch.testing.assert_close(draws[1], mean + std * draws[0])


def test_target_statistics_and_default_temperature_round_trip_and_older_folders_load(tmp_path):
    import json

    from latentzoo.models import MixtureDensityNetwork
    from latentzoo.models.mdn import target_statistics

    targets = torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) * 4 + 7
    stats = target_statistics(targets)
    torch.testing.assert_close(torch.tensor(stats["target_mean"]), targets.double().mean(0).float())
    _, mdn = _pair(**stats, default_temperature=0.6)
    mdn.save_pretrained(tmp_path / "new")
    loaded = MixtureDensityNetwork.from_pretrained(tmp_path / "new").eval()
    labels = torch.tensor([0, 1])
    draw = loaded.sample(
        class_labels=labels, generator=torch.Generator().manual_seed(3)
    )  # the saved temperature
    torch.testing.assert_close(
        draw, mdn.sample(class_labels=labels, generator=torch.Generator().manual_seed(3), temperature=0.6)
    )
    # A folder saved before these settings existed samples as it did: no standardization, temperature 1.
    plain, _ = _pair()
    plain.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("target_mean", "target_std", "default_temperature"):
        config.pop(key)
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = MixtureDensityNetwork.from_pretrained(tmp_path / "old").eval()
    torch.testing.assert_close(
        old.sample(class_labels=labels, generator=torch.Generator().manual_seed(3)),
        plain.sample(class_labels=labels, generator=torch.Generator().manual_seed(3), temperature=1.0),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_mean": [0.0, 0.0, 0.0]}, "both"),
        ({"target_mean": [0.0, 0.0], "target_std": [1.0, 1.0]}, "output_dim=3"),
        ({"target_mean": [0.0, 0.0, 0.0], "target_std": [1.0, 0.0, 1.0]}, "positive"),
        ({"default_temperature": -0.5}, "default_temperature"),
    ],
)
def test_bad_target_statistics_and_temperatures_raise_clear_errors(kwargs, match):
    from latentzoo.models import MixtureDensityNetwork

    with pytest.raises(ValueError, match=match):
        MixtureDensityNetwork(3, num_classes=2, **kwargs)


def test_the_mdn_prior_task_standardizes_by_default_and_saves_its_temperature(tmp_path):
    dataset = two_bars(64)
    torch.manual_seed(0)
    AutoencoderPipeline(
        Autoencoder(sample_size=8, latent_dim=4, block_out_channels=(8, 16)).eval()
    ).save_pretrained(tmp_path / "ae")
    base = ["task=mdn_prior", f"model.autoencoder={tmp_path / 'ae'}", "model.autoencoder_config=null"]
    task = MixtureDensityPriorTask(
        load_config(None, [*base, "model.sampling_temperature=0.6"]).model, dataset
    )
    latents = task.train_dataset().latents
    torch.testing.assert_close(task.prior.target_shift, latents.mean(0))
    torch.testing.assert_close(task.prior.target_scale, latents.std(0))
    assert task.prior.config.default_temperature == 0.6
    raw = MixtureDensityPriorTask(
        load_config(None, [*base, "model.standardize_latents=false"]).model, dataset
    )
    assert raw.prior.config.target_mean is None and raw.prior.config.default_temperature == 1.0
    with pytest.raises(ValueError, match="sampling_temperature"):
        load_config(None, [*base, "model.sampling_temperature=-1"])
