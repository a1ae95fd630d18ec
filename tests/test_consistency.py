"""Few-step generation: a guidance-distilled UNet in LatentTextToImagePipeline samples exactly as diffusers'
LatentConsistencyModelPipeline, and latent consistency distillation trains, checkpoints and resumes."""

import numpy as np
import pytest
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler
from tiny_pipelines import text_to_image_pipeline

from latentzoo.pipelines import LatentTextToImagePipeline
from latentzoo.pipelines.utils import guidance_scale_embedding

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


def test_saved_few_step_defaults_are_used(tmp_path):
    lcm_pipeline(default_guidance_scale=2.0, default_num_inference_steps=2).save_pretrained(tmp_path)
    pipe = LatentTextToImagePipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    pipe("a five", output_type="np", callback_on_step_end=lambda p, i, t, kw: seen.append(int(t)) or kw)
    assert len(seen) == 2 and pipe.guidance_scale == 2.0
    assert isinstance(pipe.scheduler, LCMScheduler)
