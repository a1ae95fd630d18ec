"""Guidance on an interval of the sampling steps (`guidance_start`, `guidance_stop`): the steps diffusers' guider
guides, the conditional batch alone on the others, and the default unchanged."""

import numpy as np
import pytest
import torch
from diffusers.guiders import ClassifierFreeGuidance
from test_cli_errors import user_error
from tiny_pipelines import gan_pipeline, pixel_pipeline, text_to_image_pipeline

from latentzoo.pipelines.utils import guidance_enabled
from latentzoo.training.cli import main


@pytest.mark.parametrize("num_steps", [1, 4, 7, 20])
@pytest.mark.parametrize("start, stop", [(0.0, 1.0), (0.0, 0.5), (0.25, 0.6), (0.1, 0.1), (0.5, 1.0)])
def test_the_guided_steps_are_those_of_diffusers_guider(num_steps, start, stop):
    guider = ClassifierFreeGuidance(guidance_scale=3.0, start=start, stop=stop)
    for step in range(num_steps):
        guider.set_state(step, num_steps, torch.tensor(0))
        assert guidance_enabled(step, num_steps, start, stop) == guider._is_cfg_enabled(), (step, num_steps)


def unet_batch_sizes(pipe) -> list[int]:
    sizes = []
    pipe.unet.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
    return sizes


def test_text_to_image_guides_only_inside_the_interval():
    pipe = text_to_image_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=["a five", "a one"], num_inference_steps=4, guidance_scale=3.0, output_type="np")

    def images(**kwargs):
        return pipe(**call, **kwargs, generator=torch.Generator().manual_seed(0)).images

    sizes = unet_batch_sizes(pipe)
    default = images()
    assert sizes == [4, 4, 4, 4]
    sizes.clear()
    half = images(guidance_start=0.0, guidance_stop=0.5)
    assert sizes == [4, 4, 2, 2]  # guided, guided, then the conditional rows alone
    np.testing.assert_array_equal(images(guidance_start=0.0, guidance_stop=1.0), default)
    assert np.abs(half - default).max() > 1e-4
    # An empty interval is the conditional model alone, as guidance_scale=1 samples it.
    unguided = pipe(**{**call, "guidance_scale": 1.0}, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_allclose(images(guidance_start=0.5, guidance_stop=0.5), unguided, atol=1e-6)


def test_pixel_diffusion_guides_only_inside_the_interval():
    pipe = pixel_pipeline(3)
    call = dict(class_labels=[0, 2], num_inference_steps=4, guidance_scale=3.0, output_type="np")
    sizes = unet_batch_sizes(pipe)
    late = pipe(**call, guidance_start=0.5, generator=torch.Generator().manual_seed(0)).images
    assert sizes == [2, 2, 4, 4]
    unguided = pipe(**{**call, "guidance_scale": 1.0}, generator=torch.Generator().manual_seed(0)).images
    empty = pipe(
        **call, guidance_start=0.0, guidance_stop=0.0, generator=torch.Generator().manual_seed(0)
    ).images
    np.testing.assert_allclose(empty, unguided, atol=1e-6)
    assert np.abs(late - unguided).max() > 1e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guidance_start": 0.6, "guidance_stop": 0.4}, r"guidance_start.*after.*guidance_stop"),
        ({"guidance_stop": 1.5}, r"guidance_stop"),
        ({"guidance_start": -0.1}, r"guidance_start"),
    ],
)
def test_a_bad_interval_is_refused_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pixel_pipeline(3)(class_labels=[0], guidance_scale=3.0, **kwargs)
    with pytest.raises(ValueError, match=message):
        text_to_image_pipeline()("a five", **kwargs)


def test_generate_takes_the_interval_for_diffusion_and_refuses_it_elsewhere(tmp_path, capsys):
    model_dir = tmp_path / "text2img"
    text_to_image_pipeline(default_guidance_scale=3.0, default_num_inference_steps=4).save_pretrained(
        model_dir
    )
    grid = tmp_path / "grid.png"
    main(["generate", str(model_dir), "a five", "-n", "2", "--guidance-stop", "0.5", "-o", str(grid)])
    assert grid.is_file()
    assert "guidance scale 3.0 on the steps from 0 to 0.5 of the way" in capsys.readouterr().out
    gan_dir = tmp_path / "gan"
    gan_pipeline(None).save_pretrained(gan_dir)
    assert "--guidance-stop" in user_error(capsys, ["generate", str(gan_dir), "--guidance-stop", "0.5"])
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["generate", str(model_dir), "a five", "--guidance-stop", "2"])
    assert exit_info.value.code == 2
    assert "--guidance-stop: must be a number from 0 to 1, got 2" in capsys.readouterr().err
