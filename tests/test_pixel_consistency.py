"""Few-step class-conditional pixel DDPM (task `ddpm_lcd`): the student starts as the teacher, the teacher's guided
step is DDIM on the classifier-free-guided output, distillation resumes bit-identically, and the saved pipeline makes
one conditional call per step at its distilled scale, in 1, 2 or 4 steps."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchLCMScheduler, LCMScheduler
from safetensors.torch import load_file
from test_ddpm import tiny_unet

from latentzoo.data import load_dataset
from latentzoo.pipelines import PixelDiffusionPipeline
from latentzoo.training import Trainer, list_checkpoints, load_config, train
from latentzoo.training.tasks.consistency import PixelConsistencyDistillationTask
from latentzoo.training.tasks.diffusion import make_noise_scheduler

TINY_TEACHER = [
    "task=ddpm",
    "dataset=digits",
    "train_batch_size=16",
    "report_to=none",
    "num_validation_images=4",
    "max_train_steps=3",
    "model.class_conditional=true",
    "model.block_out_channels=[8, 16]",
    "model.attention_levels=[]",
    "model.norm_num_groups=4",
    "model.validation_num_inference_steps=2",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny class-conditional pixel DDPM (v-prediction, cosine schedule: the preset's objective)."""
    return train(load_config(None, [*TINY_TEACHER, f"output_dir={tmp_path_factory.mktemp('teacher')}"]))


def lcd_overrides(teacher, output_dir, *extra):
    return [
        "task=ddpm_lcd",
        "dataset=digits",
        f"output_dir={output_dir}",
        f"model.teacher={teacher}",
        "model.teacher_config=null",
        "train_batch_size=8",
        "report_to=none",
        "num_validation_images=4",
        *extra,
    ]


def test_the_student_starts_as_the_teacher_and_the_guided_teacher_step_is_ddim(teacher, tmp_path):
    config = load_config(None, lcd_overrides(teacher, tmp_path))
    task = PixelConsistencyDistillationTask(config.model, load_dataset("digits", "train"))
    noisy = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    start, labels = torch.tensor([999, 519, 39]), torch.tensor([3, 7, 0])
    with torch.no_grad():
        conditional = task.teacher_unet(noisy, start, class_labels=labels).sample
        unconditional = task.teacher_unet(noisy, start, class_labels=torch.full_like(labels, 10)).sample
        assert torch.equal(task.student_output(task.student, noisy, start, labels, None), conditional)
        guided = task.teacher_step(noisy, start, start - 20, labels, torch.full((3,), 3.0))
    # Guidance is linear in the prediction: the guided step is diffusers' DDIM step (η = 0) on
    # uncond + 3 (cond - uncond), the output the 20-step teacher's pipeline samples with.
    ddim = DDIMScheduler.from_config(task.scheduler.config)
    ddim.set_timesteps(config.model.num_ddim_timesteps)
    cfg = unconditional + 3.0 * (conditional - unconditional)
    for i in range(3):
        expected = ddim.step(cfg[i : i + 1], int(start[i]), noisy[i : i + 1], eta=0.0).prev_sample
        torch.testing.assert_close(guided[i : i + 1], expected, atol=1e-5, rtol=1e-5)
    assert task.scheduler.config.prediction_type == "v_prediction"


def test_pixel_distillation_resumes_bit_identically_and_saves_a_few_step_pipeline(teacher, tmp_path):
    common = ["max_train_steps=6", "checkpointing_steps=3", "model.validation_num_inference_steps=2"]
    straight = train(load_config(None, lcd_overrides(teacher, tmp_path / "straight", *common)))

    class DiesAtStep5(PixelConsistencyDistillationTask):
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
    target = load_file(resumed_dir / "checkpoints" / "checkpoint-3" / "task_target.safetensors")
    assert int(target["task_target.updated_at_step"]) == 2

    pipe = PixelDiffusionPipeline.from_pretrained(straight)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.guidance_is_distilled
    assert (pipe.config.distilled_guidance_scale, pipe.default_num_inference_steps) == (3.0, 2)
    for steps in (1, 2, 4):
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        images = pipe(
            class_labels=[0, 5, 9], num_inference_steps=steps, generator=generators, output_type="np"
        )
        assert images.images.shape == (3, 8, 8, 1) and np.isfinite(images.images).all()
        again = pipe(
            class_labels=[0, 5, 9],
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(i) for i in range(3)],
            output_type="np",
        )
        np.testing.assert_array_equal(images.images, again.images)


def distilled_pipeline(**kwargs) -> PixelDiffusionPipeline:
    scheduler = LCMScheduler.from_config(make_noise_scheduler(prediction_type="v_prediction").config)
    return PixelDiffusionPipeline(
        unet=tiny_unet(2).eval(), scheduler=scheduler, distilled_guidance_scale=3.0, **kwargs
    )


def test_a_distilled_pipeline_makes_one_conditional_call_per_step_and_round_trips(tmp_path):
    pipe = distilled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.unet.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs["class_labels"]), with_kwargs=True
    )
    images = pipe(
        class_labels=[1, 0], num_inference_steps=4, generator=torch.Generator().manual_seed(0)
    ).images
    assert len(images) == 2 and len(calls) == 4
    assert all(torch.equal(labels, torch.tensor([1, 0])) for labels in calls)  # no null-class half
    pipe.save_pretrained(tmp_path)
    loaded = PixelDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.distilled_guidance_scale == 3.0
    kwargs = dict(class_labels=[1, 0], num_inference_steps=2, output_type="np")
    np.testing.assert_array_equal(
        pipe(**kwargs, generator=torch.Generator().manual_seed(1)).images,
        loaded(**kwargs, generator=torch.Generator().manual_seed(1)).images,
    )


def test_a_distilled_pipeline_refuses_another_scale_and_unlabelled_samples():
    pipe = distilled_pipeline()
    with pytest.raises(ValueError, match=r"distilled at guidance scale 3.0.*leave `guidance_scale` out"):
        pipe(class_labels=[1], guidance_scale=2.0)
    pipe(class_labels=[1], guidance_scale=3.0, num_inference_steps=1)  # its own scale is fine
    with pytest.raises(ValueError, match=r"distilled for class labels.*pass `class_labels`"):
        pipe(batch_size=2)
    with pytest.raises(ValueError, match=r"distilled_guidance_scale.*unconditional"):
        PixelDiffusionPipeline(unet=tiny_unet(None), scheduler=LCMScheduler(), distilled_guidance_scale=3.0)


def test_an_unconditional_teacher_is_refused(tmp_path):
    unconditional = train(
        load_config(
            None, [*TINY_TEACHER, "model.class_conditional=false", f"output_dir={tmp_path / 'teacher'}"]
        )
    )
    with pytest.raises(ValueError, match=r"unconditional.*class-conditional teacher"):
        train(load_config(None, lcd_overrides(unconditional, tmp_path / "student", "max_train_steps=1")))


def test_a_flow_matching_teacher_distils_with_its_guided_euler_step(tmp_path):
    teacher = train(
        load_config(None, [*TINY_TEACHER, "model.objective=flow_matching", f"output_dir={tmp_path / 't'}"])
    )
    config = load_config(None, lcd_overrides(teacher, tmp_path / "student", "max_train_steps=2"))
    task = PixelConsistencyDistillationTask(config.model, load_dataset("digits", "train"))
    noisy = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    start, end, labels = torch.tensor([1000.0, 417.0]), torch.tensor([980.0, 397.0]), torch.tensor([3, 7])
    with torch.no_grad():
        conditional = task.teacher_unet(noisy, start, class_labels=labels).sample
        unconditional = task.teacher_unet(noisy, start, class_labels=torch.full_like(labels, 10)).sample
        guided = task.teacher_step(noisy, start, end, labels, torch.full((2,), 3.0))
    # x_t' = x_t + (t' - t) v on the guided velocity uncond + 3 (cond - uncond)
    velocity = unconditional + 3.0 * (conditional - unconditional)
    expected = noisy + ((end - start) / 1000).view(-1, 1, 1, 1) * velocity
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-5)

    student = train(config)
    pipe = PixelDiffusionPipeline.from_pretrained(student)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, FlowMatchLCMScheduler) and pipe.guidance_is_distilled
    for steps in (1, 2, 4):
        images = [
            pipe(
                class_labels=[3, 7],
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            ).images
            for _ in range(2)
        ]
        assert images[0].shape == (2, 8, 8, 1) and np.array_equal(*images)
