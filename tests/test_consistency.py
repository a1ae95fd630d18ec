"""Few-step generation: a guidance-distilled UNet in LatentTextToImagePipeline samples exactly as diffusers'
LatentConsistencyModelPipeline, and latent consistency distillation trains, checkpoints and resumes."""

import json

import numpy as np
import pytest
import torch
import yaml
from diffusers import (
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchLCMScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    TCDScheduler,
)
from safetensors.torch import load_file
from test_cli_errors import user_error
from test_text_to_image_training import tiny_text2img_overrides
from tiny_pipelines import text_to_image_pipeline

from latentzoo.data import load_dataset
from latentzoo.pipelines import LatentTextToImagePipeline
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.samplers import make_sampler
from latentzoo.pipelines.utils import guidance_scale_embedding
from latentzoo.training import Trainer, list_checkpoints, load_config, train
from latentzoo.training.cli import main
from latentzoo.training.tasks.consistency import ConsistencyDistillationTask

# --- sampling a guidance-distilled UNet ---------------------------------------------------------------------


def lcm_pipeline(**defaults) -> LatentTextToImagePipeline:
    scheduler = LCMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    return text_to_image_pipeline(scheduler, time_cond_proj_dim=8, **defaults)


def test_guidance_embedding_equals_diffusers():
    scales = torch.tensor([1.0, 2.5, 3.0, 8.0])
    for dim in (7, 8, 256):
        expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, scales - 1, dim)
        assert torch.equal(guidance_scale_embedding(scales, dim), expected)


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_images_equal_latent_consistency_model_pipeline(steps, guidance_scale):
    ours = lcm_pipeline()
    reference = LatentConsistencyModelPipeline(
        **{name: getattr(ours, name) for name in ("vae", "text_encoder", "tokenizer", "unet")},
        scheduler=LCMScheduler.from_config(ours.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    reference.set_progress_bar_config(disable=True)
    prompts = ["a bold five", "the digit 1"]
    kwargs = {"num_inference_steps": steps, "guidance_scale": guidance_scale, "output_type": "np"}
    expected = reference(prompts, generator=torch.Generator().manual_seed(0), **kwargs).images
    actual = ours(prompts, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert ours.guidance_is_embedded and not ours.do_classifier_free_guidance
    assert actual.shape == (2, 8, 8, 3)
    assert np.abs(actual - expected).max() <= 1e-5
    # the scale is an input of the UNet: a different one gives different images
    other = ours(prompts, generator=torch.Generator().manual_seed(0), **{**kwargs, "guidance_scale": 6.0})
    assert np.abs(other.images - actual).max() > 1e-4


def test_guidance_distilled_pipeline_refuses_a_negative_prompt():
    with pytest.raises(ValueError, match="negative_prompt"):
        lcm_pipeline()("a five", negative_prompt="a blurry digit", num_inference_steps=1)


def test_consistency_samplers_and_only_they_sample_a_consistency_model():
    pipe = lcm_pipeline()
    pipe.scheduler = make_sampler("tcd", pipe.scheduler.config)
    assert isinstance(pipe.scheduler, TCDScheduler)
    kwargs = {"num_inference_steps": 2, "guidance_scale": 3.0, "output_type": "np"}
    deterministic = [
        pipe("a five", generator=torch.Generator().manual_seed(s), **kwargs).images for s in (0, 0)
    ]
    assert np.isfinite(deterministic[0]).all() and np.array_equal(*deterministic)
    with pytest.raises(
        ValueError, match=r"'dpm\+\+' does not sample a consistency-distilled model.*'lcm', 'tcd'"
    ):
        make_sampler("dpm++", pipe.scheduler.config)
    with pytest.raises(ValueError, match="'lcm' samples consistency-distilled models only"):
        make_sampler("lcm", text_to_image_pipeline().scheduler.config)


def test_generate_samples_a_few_step_folder_with_its_samplers_and_refuses_others(capsys, tmp_path):
    folder = tmp_path / "lcm"
    lcm_pipeline(default_guidance_scale=3.0, default_num_inference_steps=2).save_pretrained(folder)
    for sampler in ([], ["--sampler", "tcd"]):
        output = tmp_path / f"grid{len(sampler)}.png"
        main(["generate", str(folder), "a 3", "-n", "2", "-o", str(output), *sampler])
        assert output.is_file()
    out = capsys.readouterr().out
    assert "(2 LCMScheduler steps, guidance scale 3.0)" in out and "(2 TCDScheduler steps" in out
    line = user_error(capsys, ["generate", str(folder), "a 3", "--sampler", "dpm++"])
    assert "does not sample a consistency-distilled model" in line


def test_saved_few_step_defaults_are_used(tmp_path):
    lcm_pipeline(default_guidance_scale=2.0, default_num_inference_steps=2).save_pretrained(tmp_path)
    pipe = LatentTextToImagePipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    pipe("a five", output_type="np", callback_on_step_end=lambda p, i, t, kw: seen.append(int(t)) or kw)
    assert len(seen) == 2 and pipe.guidance_scale == 2.0
    assert isinstance(pipe.scheduler, LCMScheduler)


# --- latent consistency distillation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny text2img teacher (its VAE stage, then the UNet with a jointly trained text encoder)."""
    tmp_path = tmp_path_factory.mktemp("teacher")
    return train(load_config(None, tiny_text2img_overrides(tmp_path)))


def lcd_overrides(teacher, output_dir, *extra):
    return [
        "task=text2img_lcd",
        "dataset=digits",
        f"output_dir={output_dir}",
        f"model.teacher={teacher}",
        "model.teacher_config=null",
        "train_batch_size=8",
        "report_to=none",
        "num_validation_images=4",
        "model.validation_prompts=[a bold five, the digit 1]",
        "model.guidance_embedding_dim=8",
        *extra,
    ]


def test_the_student_starts_as_the_teacher_and_the_teacher_step_is_ddim(teacher, tmp_path):
    config = load_config(None, lcd_overrides(teacher, tmp_path))
    task = ConsistencyDistillationTask(config.model, load_dataset("digits", "train", image_size=8))
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, 4, 4, 4, generator=generator)
    start = torch.tensor([999, 519, 39])
    text = task.text_encoder(task.tokenize(["a bold five", "the digit 1", ""]))[0]
    scales = torch.tensor([1.0, 3.0, 5.0])
    embedding = guidance_scale_embedding(scales, 8)
    with torch.no_grad():
        teacher_output = task.teacher_unet(noisy, start, encoder_hidden_states=text).sample
        student_output = task.student(
            noisy, start, encoder_hidden_states=text, timestep_cond=embedding
        ).sample
    assert torch.equal(student_output, teacher_output)  # the zero-initialised guidance input adds nothing yet

    # With s = 1 (no guidance) the teacher's step is diffusers' DDIM step (η = 0) from t to t - T/N.
    ddim = DDIMScheduler.from_config(task.scheduler.config)
    ddim.set_timesteps(config.model.num_ddim_timesteps)
    ones = torch.ones(3)
    actual = task.teacher_step(noisy, start, start - 20, text, ones)
    for i in range(3):
        expected = ddim.step(teacher_output[i : i + 1], int(start[i]), noisy[i : i + 1], eta=0.0).prev_sample
        assert torch.allclose(actual[i : i + 1], expected, atol=1e-5)
    # guided: cond + (s - 1)(cond - uncond) moves the step away from the unconditional one
    unconditional_text = task.text_encoder(task.tokenize([""] * 3))[0]
    plain = task.teacher_step(noisy, start, start - 20, unconditional_text, ones)
    guided = task.teacher_step(noisy, start, start - 20, text, scales)
    # (s = 1 for the first image; the third's prompt is "" itself, so its guidance changes nothing)
    assert torch.allclose(guided[0], actual[0]) and torch.allclose(guided[2], actual[2], atol=1e-5)
    assert not torch.allclose(guided[1], actual[1], atol=1e-4)
    assert not torch.allclose(plain, actual, atol=1e-4)
    # boundary condition of the consistency function: f(z, 0) = z
    zero = torch.zeros(3, dtype=torch.long)
    assert torch.allclose(task.ode.consistency(teacher_output, noisy, zero), noisy, atol=1e-6)


def test_distillation_resumes_bit_identically_and_saves_a_few_step_pipeline(teacher, tmp_path):
    common = ["max_train_steps=6", "checkpointing_steps=3", "model.validation_num_inference_steps=2"]
    straight = train(load_config(None, lcd_overrides(teacher, tmp_path / "straight", *common)))

    class DiesAtStep5(ConsistencyDistillationTask):
        def training_step(self, batch, modules, step):
            if step == 4:
                raise KeyboardInterrupt("simulated kill")
            return super().training_step(batch, modules, step)

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            load_config(None, lcd_overrides(teacher, resumed_dir, *common)), task_class=DiesAtStep5
        ).train()
    assert [p.name for p in list_checkpoints(resumed_dir / "checkpoints")] == ["checkpoint-3"]
    Trainer(
        load_config(None, lcd_overrides(teacher, resumed_dir, *common, "resume_from_checkpoint=latest"))
    ).train()
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the target network moved with the student and was restored with the checkpoint
    target = load_file(resumed_dir / "checkpoints" / "checkpoint-3" / "task_target.safetensors")
    assert int(target["task_target.updated_at_step"]) == 2
    initial = load_file(teacher / "unet" / "diffusion_pytorch_model.safetensors")
    moved = [k for k in initial if not torch.equal(initial[k], target[f"task_target.unet.{k}"])]
    assert moved

    pipe = LatentTextToImagePipeline.from_pretrained(straight)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.guidance_is_embedded
    assert pipe.scheduler.config.original_inference_steps == 50
    assert pipe.scheduler.config.prediction_type == load_pipeline(teacher).scheduler.config.prediction_type
    assert (pipe.default_num_inference_steps, pipe.default_guidance_scale) == (2, 3.0)
    images = pipe(
        ["a bold five"] * 2, generator=[torch.Generator().manual_seed(i) for i in range(2)], output_type="np"
    )
    assert images.images.shape == (2, 8, 8, 1) and np.isfinite(images.images).all()
    saved = yaml.safe_load((straight / "training_config.yaml").read_text())
    assert saved["task"] == "text2img_lcd" and saved["model"]["teacher"] == str(teacher)


def test_teacher_stage_trains_first_when_its_folder_is_empty(tmp_path):
    teacher_dir = tmp_path / "teacher"
    preset = tmp_path / "teacher.yaml"
    overrides = dict(item.split("=", 1) for item in tiny_text2img_overrides(tmp_path))
    model = {
        k.removeprefix("model."): yaml.safe_load(v) for k, v in overrides.items() if k.startswith("model.")
    }
    values = {k: yaml.safe_load(v) for k, v in overrides.items() if not k.startswith("model.")}
    preset.write_text(yaml.safe_dump({**values, "output_dir": str(teacher_dir), "model": model}))
    config = load_config(
        None,
        [
            *lcd_overrides(teacher_dir, tmp_path / "student", "max_train_steps=2"),
            f"model.teacher_config={preset}",
            "stages.teacher.max_train_steps=3",
        ],
    )
    assert [stage.name for stage in ConsistencyDistillationTask.stages(config.model)] == ["teacher"]
    train(config)
    assert json.loads((teacher_dir / "train_state.json").read_text())["global_step"] == 3
    assert json.loads((tmp_path / "student" / "train_state.json").read_text())["global_step"] == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.guidance_scale_min=4", "guidance_scale_min"),
        ("model.validation_guidance_scale=9", "validation_guidance_scale"),
        ("model.num_ddim_timesteps=0", "num_ddim_timesteps"),
        ("model.target_decay=1.5", "target_decay"),
    ],
)
def test_bad_distillation_settings_are_refused_before_training(teacher, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, lcd_overrides(teacher, tmp_path, "model.guidance_scale_max=3", override))


def test_a_few_step_model_is_refused_as_a_teacher(teacher, tmp_path):
    student = train(load_config(None, lcd_overrides(teacher, tmp_path / "student", "max_train_steps=1")))
    config = load_config(None, lcd_overrides(student, tmp_path / "again", "max_train_steps=1"))
    with pytest.raises(ValueError, match="already a few-step"):
        train(config)


@pytest.fixture(scope="module")
def flow_teacher(tmp_path_factory):
    """The tiny text2img teacher trained with the flow-matching objective."""
    tmp_path = tmp_path_factory.mktemp("flow_teacher")
    return train(load_config(None, [*tiny_text2img_overrides(tmp_path), "model.objective=flow_matching"]))


def test_a_flow_teacher_steps_by_euler_and_its_consistency_function_is_x0(flow_teacher, tmp_path):
    config = load_config(None, lcd_overrides(flow_teacher, tmp_path))
    task = ConsistencyDistillationTask(config.model, load_dataset("digits", "train", image_size=8))
    assert isinstance(task.scheduler, FlowMatchLCMScheduler)
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, 4, 4, 4, generator=generator)
    start, end = torch.tensor([1000.0, 531.5, 12.0]), torch.tensor([980.0, 511.5, 0.0])
    text = task.text_encoder(task.tokenize(["a bold five", "the digit 1", "a 7"]))[0]
    with torch.no_grad():
        velocity = task.teacher_unet(noisy, start, encoder_hidden_states=text).sample
    # s = 1: the teacher's step is diffusers' Euler step of its velocity from t to t'
    actual = task.teacher_step(noisy, start, end, text, torch.ones(3))
    for i in range(3):
        euler = FlowMatchEulerDiscreteScheduler.from_config(load_pipeline(flow_teacher).scheduler.config)
        euler.set_timesteps(sigmas=[float(start[i]) / 1000, float(end[i]) / 1000])
        expected = euler.step(velocity[i : i + 1], euler.timesteps[0], noisy[i : i + 1]).prev_sample
        assert torch.allclose(actual[i : i + 1], expected, atol=1e-5)
    # f(x, t) = x - t·v: x̂_0 on the straight path, and f(x, 0) = x
    t = (start / 1000).view(-1, 1, 1, 1)
    assert torch.allclose(task.ode.consistency(velocity, noisy, start), noisy - t * velocity, atol=1e-6)
    assert torch.equal(task.ode.consistency(velocity, noisy, torch.zeros(3)), noisy)
    # the start times cover (0, 1] (the sampler's own timesteps lie anywhere in it), the end one step of 1/N below
    torch.manual_seed(0)
    drawn_start, drawn_end = task.ode.draw(4096, "cpu")
    assert 0 < drawn_start.min() < 50 and 950 < drawn_start.max() <= 1000
    assert torch.allclose(drawn_end, (drawn_start - 1000 / config.model.num_ddim_timesteps).clamp(min=0))


def test_a_flow_teacher_distils_into_a_few_step_flow_pipeline(flow_teacher, tmp_path, capsys):
    common = ["max_train_steps=4", "checkpointing_steps=2", "model.validation_num_inference_steps=2"]
    straight = train(load_config(None, lcd_overrides(flow_teacher, tmp_path / "straight", *common)))
    resumed = tmp_path / "resumed"
    train(load_config(None, lcd_overrides(flow_teacher, resumed, *common[1:], "max_train_steps=2")))
    train(load_config(None, lcd_overrides(flow_teacher, resumed, *common, "resume_from_checkpoint=latest")))
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    pipe = LatentTextToImagePipeline.from_pretrained(straight)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, FlowMatchLCMScheduler) and pipe.guidance_is_embedded
    assert pipe.default_num_inference_steps == 2
    for steps in (1, 2, 4):
        images = [
            pipe(
                ["a bold five", "a 7"],
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            ).images
            for _ in range(2)
        ]
        assert images[0].shape == (2, 8, 8, 1) and np.isfinite(images[0]).all()
        assert np.array_equal(*images)
    # every step evaluates the student at its own noise level (FLUX's spacing), none at t ≈ 0 where it returns its
    # input: 2 steps are not 1 step's images
    for steps, expected in ((1, [1000.0]), (2, [1000.0, 500.0]), (4, [1000.0, 750.0, 500.0, 250.0])):
        seen = []

        def record(pipe, i, t, kwargs, seen=seen):
            seen.append(float(t))
            return kwargs

        pipe("a 7", num_inference_steps=steps, callback_on_step_end=record)
        assert seen == pytest.approx(expected)
    one, two = (
        pipe(
            "a 7", num_inference_steps=n, generator=torch.Generator().manual_seed(0), output_type="np"
        ).images
        for n in (1, 2)
    )
    assert np.abs(one - two).max() > 1e-3
    assert make_sampler("lcm", pipe.scheduler.config).__class__ is FlowMatchLCMScheduler
    with pytest.raises(ValueError, match=r"'tcd' does not sample a consistency-distilled model.*\['lcm'\]"):
        make_sampler("tcd", pipe.scheduler.config)
    main(["generate", str(straight), "a 3", "-n", "2", "-o", str(tmp_path / "grid.png")])
    assert "(2 FlowMatchLCMScheduler steps, guidance scale 3.0)" in capsys.readouterr().out


def test_the_objective_is_read_from_the_teacher_and_a_contradiction_refused(teacher, flow_teacher, tmp_path):
    for path, objective in ((teacher, "ddpm"), (flow_teacher, "flow_matching")):
        config = load_config(None, lcd_overrides(path, tmp_path / objective))
        ConsistencyDistillationTask(config.model, load_dataset("digits", "train", image_size=8))
        assert config.model.objective == objective
    config = load_config(None, lcd_overrides(teacher, tmp_path / "wrong", "model.objective=flow_matching"))
    with pytest.raises(ValueError, match=r"teacher was trained with ddpm.*leave `model.objective` out"):
        ConsistencyDistillationTask(config.model, load_dataset("digits", "train", image_size=8))


def test_a_missing_teacher_is_named_with_the_fix(tmp_path):
    config = load_config(None, lcd_overrides(tmp_path / "nothing", tmp_path / "out", "max_train_steps=1"))
    with pytest.raises(ValueError, match=r"model.teacher.*holds no trained text-to-image pipeline"):
        train(config)
