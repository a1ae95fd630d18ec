"""Flow matching as a diffusion objective: the closed form, training, sampling through both pipelines, resume."""

import json

import pytest
import torch
import yaml
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)
from safetensors.torch import load_file

from latentzoo.data import ImageDataset
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.samplers import make_sampler
from latentzoo.training import Trainer, list_checkpoints, load_config, train
from latentzoo.training.tasks.ddpm import DDPMConfig, DDPMTask
from latentzoo.training.tasks.diffusion import FlowMatchingObjective, make_objective


def test_noise_is_the_straight_path_with_a_velocity_target():
    objective = make_objective(DDPMConfig(objective="flow_matching", timestep_sampling="uniform"))
    assert isinstance(objective, FlowMatchingObjective)
    x0 = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    noised = objective.noise(x0)
    torch.manual_seed(0)  # the same draws, in the documented order: ε, then t
    noise, t = torch.randn_like(x0), torch.rand(6)
    expected = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(noised.sample, expected)
    torch.testing.assert_close(noised.target, noise - x0)
    torch.testing.assert_close(noised.timesteps, t * 1000)
    assert noised.weight is None
    # t = 0 is the data, t = 1 the noise, and the target is their difference: x_t's derivative in t.
    perfect = noised.target
    assert objective.loss(perfect, noised).item() == 0.0


def test_logit_normal_timesteps_crowd_the_middle_of_the_path():
    torch.manual_seed(0)
    uniform = make_objective(DDPMConfig(objective="flow_matching", timestep_sampling="uniform")).sample_t(
        20000, "cpu"
    )
    logit = make_objective(DDPMConfig(objective="flow_matching")).sample_t(20000, "cpu")
    assert logit.min() > 0 and logit.max() < 1
    assert abs(logit.mean().item() - 0.5) < 0.01 and abs(uniform.mean().item() - 0.5) < 0.01
    assert logit.std() < 0.8 * uniform.std()  # sigmoid(N(0, 1)): std ~0.21 against U(0, 1)'s 0.29
    shifted = make_objective(DDPMConfig(objective="flow_matching", logit_mean=1.0)).sample_t(20000, "cpu")
    assert shifted.mean() > 0.65  # more weight near the noise end


def two_class_dataset(n: int = 256) -> ImageDataset:
    """Class 0: bright top half; class 1: bright bottom half; plus a little noise. (N, 1, 8, 8) in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    top = (torch.arange(8).view(1, 8, 1) < 4).float().expand(n, 8, 8)
    bright = torch.where(labels.view(-1, 1, 1) == 0, top, 1 - top)
    pixel_values = (bright * 2 - 1 + 0.1 * torch.randn(n, 8, 8, generator=generator)).clamp(-1, 1)
    return ImageDataset(pixel_values.unsqueeze(1), labels, num_classes=2, name="two-halves")


@pytest.fixture(scope="module")
def flow_pipeline():
    """A tiny class-conditional flow-matching model trained through the task's training_step for 300 steps."""
    dataset = two_class_dataset()
    config = DDPMConfig(
        objective="flow_matching",
        block_out_channels=(8, 16),
        attention_levels=(1,),
        attention_head_dim=4,
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    task = DDPMTask(config, dataset)
    modules = task.trainable_modules()
    optimizer = torch.optim.AdamW(modules["unet"].parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=32, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    losses, step = [], 0
    while step < 300:
        for batch in loader:
            loss = task.training_step(batch, modules, step)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
    modules["unet"].eval()
    pipeline = task.make_pipeline(modules)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, losses


def test_a_tiny_flow_model_trains(flow_pipeline):
    _, losses = flow_pipeline
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("sampler, steps", [("euler", 8), ("euler", 20), ("heun", 8), ("dpm++", 8)])
def test_flow_samplers_generate_the_requested_class(flow_pipeline, sampler, steps):
    pipeline, _ = flow_pipeline
    saved = pipeline.scheduler
    assert isinstance(saved, FlowMatchEulerDiscreteScheduler)  # what the task saves its pipeline with
    pipeline.scheduler = make_sampler(sampler, saved.config)
    expected = {"euler": FlowMatchEulerDiscreteScheduler, "heun": FlowMatchHeunDiscreteScheduler}
    assert isinstance(pipeline.scheduler, expected.get(sampler, DPMSolverMultistepScheduler))
    class_labels = [0, 1] * 8
    images = pipeline(
        class_labels=class_labels,
        num_inference_steps=steps,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    predicted = (images[:, :, :4].mean(dim=(1, 2, 3)) < images[:, :, 4:].mean(dim=(1, 2, 3))).long()
    accuracy = (predicted == torch.tensor(class_labels)).float().mean().item()
    pipeline.scheduler = saved
    assert accuracy >= 0.9, accuracy


def test_noise_schedule_samplers_are_refused_for_a_flow_model(flow_pipeline):
    pipeline, _ = flow_pipeline
    with pytest.raises(ValueError, match=r"'ddim' does not integrate a flow-matching model.*euler"):
        make_sampler("ddim", pipeline.scheduler.config)


TINY_DDPM = [
    "task=ddpm",
    "dataset=digits",
    "train_batch_size=32",
    "report_to=none",
    "num_validation_images=4",
    "model.objective=flow_matching",
    "model.block_out_channels=[8, 16]",
    "model.attention_levels=[]",
    "model.norm_num_groups=4",
    "model.validation_num_inference_steps=4",
]


class DiesAtStep7(DDPMTask):
    def training_step(self, batch, modules, step):
        if step == 6:
            raise KeyboardInterrupt("simulated kill")
        return super().training_step(batch, modules, step)


def test_flow_resume_is_bit_identical_and_the_saved_folder_samples_with_its_scheduler(tmp_path):
    common = [*TINY_DDPM, "max_train_steps=10", "checkpointing_steps=5", "use_ema=true"]
    straight = load_config(None, [*common, f"output_dir={tmp_path / 'straight'}"])
    Trainer(straight).train()
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        Trainer(load_config(None, [*common, f"output_dir={resumed_dir}"]), task_class=DiesAtStep7).train()
    assert [p.name for p in list_checkpoints(resumed_dir / "checkpoints")] == ["checkpoint-5"]
    Trainer(
        load_config(None, [*common, f"output_dir={resumed_dir}", "resume_from_checkpoint=latest"])
    ).train()
    a = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    pipeline = load_pipeline(tmp_path / "straight")
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    kwargs = dict(class_labels=[1, 2], num_inference_steps=4, output_type="pt")
    first = pipeline(**kwargs, generator=torch.Generator().manual_seed(0)).images
    again = pipeline(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 1, 8, 8) and torch.isfinite(first).all() and torch.equal(first, again)
    saved = yaml.safe_load((tmp_path / "straight" / "training_config.yaml").read_text())
    assert saved["model"]["objective"] == "flow_matching"
    card = (tmp_path / "straight" / "README.md").read_text()
    assert "flow matching" in card.lower()


def test_text_to_image_trains_and_samples_with_flow_matching(tmp_path):
    vae_config = tmp_path / "vae.yaml"
    vae_config.write_text(
        yaml.safe_dump(
            {
                "task": "autoencoder_kl",
                "dataset": "digits",
                "max_train_steps": 3,
                "train_batch_size": 32,
                "report_to": "none",
                "model": {"block_out_channels": [4, 8], "norm_num_groups": 4, "scaling_samples": 64},
            }
        )
    )
    output_dir = train(
        load_config(
            None,
            [
                "task=text2img",
                "dataset=digits",
                f"output_dir={tmp_path / 'model'}",
                f"model.vae={tmp_path / 'model' / 'vae'}",
                f"model.vae_config={vae_config}",
                "model.text_encoder=null",
                "model.text_encoder_config=null",
                "model.objective=flow_matching",
                "max_train_steps=4",
                "train_batch_size=16",
                "report_to=none",
                "num_validation_images=2",
                "model.max_prompt_length=16",
                "model.text_hidden_size=16",
                "model.text_num_layers=1",
                "model.text_num_heads=2",
                "model.text_intermediate_size=32",
                "model.block_out_channels=[8, 16]",
                "model.attention_head_dim=4",
                "model.norm_num_groups=4",
                "model.validation_prompts=[a bold five]",
                "model.validation_num_inference_steps=2",
            ],
        )
    )
    pipeline = load_pipeline(output_dir)
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    for sampler in ("euler", "dpm++"):
        pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
        images = pipeline(
            ["a thin three", "a bold seven"],
            num_inference_steps=4,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        assert images.shape == (2, 8, 8, 1) and (images >= 0).all() and (images <= 1).all()
    assert json.loads((output_dir / "train_state.json").read_text())["global_step"] == 4
