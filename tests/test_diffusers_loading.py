"""Saved folders load where their model cards say.

diffusers alone (a process that never imports latentzoo) loads the cross-attention text-to-image folder as
StableDiffusionPipeline, its guidance-distilled student as LatentConsistencyModelPipeline and the unconditional pixel
DDPM as DDPMPipeline, with the same images as latentzoo's classes give for the same folder and generator. Every
family's card snippet runs as it stands in a fresh interpreter. Folders saved before keep loading, with our classes
and with `latentzoo generate`. Tiny CPU models (tests/tiny_pipelines.py); nothing is trained.
"""

import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchLCMScheduler,
    LCMScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from huggingface_hub import ModelCard
from tiny_pipelines import (
    autoencoder_pipeline,
    gan_pipeline,
    pixel_pipeline,
    text_to_image_pipeline,
    two_stage_vae_pipeline,
    vae_pipeline,
)

from latentzoo.models.conditioning import PromptProjection
from latentzoo.pipelines import LatentTextToImagePipeline, PixelDiffusionPipeline
from latentzoo.pipelines.loading import load_pipeline, pipeline_class
from latentzoo.training.cli import main
from latentzoo.training.model_card import card_fields, write_model_card
from latentzoo.training.tasks.ddpm import DDPMTask
from latentzoo.training.tasks.diffusion import make_objective
from latentzoo.training.tasks.text_to_image import TextToImageTask

PROMPTS = ["a bold five", "a thin 1"]


def run_python(code: str, cwd, *args: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (outside the repository, where `import latentzoo` finds the installed package)."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


# ------------------------------------------------------------------------------------------ the folders


def text_to_image(objective: str = "ddpm", **kwargs) -> LatentTextToImagePipeline:
    """Cross-attention, with the sampler the text2img task saves for `objective` (DPM-Solver++ on the noise
    schedule, or flow-matching Euler)."""
    sampler = make_objective(TextToImageTask.Config(objective=objective), clip_sample=False).sampler()
    return text_to_image_pipeline(
        sampler, default_guidance_scale=3.0, default_num_inference_steps=2, **kwargs
    )


def consistency_student(objective: str = "ddpm") -> LatentTextToImagePipeline:
    """Guidance-distilled UNet with the sampler the text2img_lcd task saves for a teacher of `objective`: an
    LCMScheduler, or a FlowMatchLCMScheduler."""
    if objective == "flow_matching":
        scheduler = FlowMatchLCMScheduler()
    else:
        scheduler = LCMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False, timestep_scaling=10.0)
    return text_to_image_pipeline(
        scheduler, time_cond_proj_dim=8, default_guidance_scale=3.0, default_num_inference_steps=4
    )


def unconditional_ddpm(objective: str = "ddpm") -> PixelDiffusionPipeline:
    """With the sampler the ddpm task saves for `objective`."""
    sampler = make_objective(DDPMTask.Config(class_conditional=False, objective=objective)).sampler()
    return pixel_pipeline(None, sampler, default_num_inference_steps=2)


def concatenation_text_to_image() -> LatentTextToImagePipeline:
    base = text_to_image()
    unet = UNet2DConditionModel.from_config(base.unet.config, in_channels=6)  # 4 latent + 2 prompt channels
    components = {**base.components, "unet": unet.eval(), "prompt_projection": PromptProjection(16, 2).eval()}
    pipe = LatentTextToImagePipeline(**components, default_guidance_scale=3.0, default_num_inference_steps=2)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# name: (builder, the diffusers class its folder is saved as, a call)
DIFFUSERS_LOADABLE = {
    "text2img": (text_to_image, "StableDiffusionPipeline", {"prompt": PROMPTS, "guidance_scale": 3.0}),
    "text2img_lcd": (
        consistency_student,
        "LatentConsistencyModelPipeline",
        {"prompt": PROMPTS, "guidance_scale": 3.0},
    ),
    "ddpm": (unconditional_ddpm, "DDPMPipeline", {"batch_size": 2}),
    "ddpm-flow": (lambda: unconditional_ddpm("flow_matching"), "DDPMPipeline", {"batch_size": 2}),
}
STEPS = 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers-loading")
    for name, (build, _, _) in DIFFUSERS_LOADABLE.items():
        build().save_pretrained(root / name)
    return root


def ours(folder, call: dict) -> np.ndarray:
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {**call, "num_inference_steps": STEPS, "output_type": "np"}
    return pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images


# One interpreter for all folders (importing diffusers costs seconds): each folder loaded with
# DiffusionPipeline.from_pretrained and with the class model_index.json names, images saved beside it.
DIFFUSERS_ONLY = """
import json, sys
import diffusers, numpy as np, torch
from diffusers import DiffusionPipeline

cases = json.loads(sys.argv[1])
classes = {}
for name, (folder, call) in cases.items():
    named = json.load(open(folder + "/model_index.json"))["_class_name"]
    for loader in (DiffusionPipeline, getattr(diffusers, named)):
        pipe = loader.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(**call, generator=torch.Generator().manual_seed(0)).images
        np.save(f"{folder}/{loader.__name__}.npy", images)
        classes.setdefault(name, []).append(type(pipe).__name__)
assert "latentzoo" not in sys.modules, "a diffusers-only process imported latentzoo"
print(json.dumps(classes))
"""


@pytest.fixture(scope="module")
def loaded_by_diffusers(folders):
    """{folder name: [class DiffusionPipeline.from_pretrained gave, class the named class gave]}; stderr."""
    cases = {
        name: (str(folders / name), {**call, "num_inference_steps": STEPS, "output_type": "np"})
        for name, (_, _, call) in DIFFUSERS_LOADABLE.items()
    }
    result = run_python(DIFFUSERS_ONLY, folders, json.dumps(cases))
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.parametrize("name", DIFFUSERS_LOADABLE)
def test_diffusers_alone_loads_the_folder_and_samples_our_images(folders, loaded_by_diffusers, name):
    _, diffusers_class, call = DIFFUSERS_LOADABLE[name]
    folder = folders / name
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == diffusers_class
    classes, stderr = loaded_by_diffusers
    assert classes[name] == [diffusers_class, diffusers_class]
    expected = ours(folder, call)
    for loader in ("DiffusionPipeline", diffusers_class):
        images = np.load(folder / f"{loader}.npy")
        assert images.shape == expected.shape
        assert np.abs(images - expected).max() <= 1e-5, loader
    # diffusers' class ignores latentzoo's saved defaults, and says so in one warning (no error)
    assert "default_num_inference_steps" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("name", DIFFUSERS_LOADABLE)
def test_our_class_loads_the_folder_with_its_saved_defaults_and_saves_it_again_the_same(
    folders, tmp_path, name
):
    _, diffusers_class, _ = DIFFUSERS_LOADABLE[name]
    kind = LatentTextToImagePipeline if name.startswith("text2img") else PixelDiffusionPipeline
    assert pipeline_class(folders / name) is kind
    pipe = kind.from_pretrained(folders / name)
    assert isinstance(pipe, kind) and pipe.diffusers_class_name == diffusers_class
    saved = json.loads((folders / name / "model_index.json").read_text())
    assert pipe.default_num_inference_steps == saved["default_num_inference_steps"]
    if saved.get("default_guidance_scale") is not None:
        assert pipe.default_guidance_scale == saved["default_guidance_scale"]
    pipe.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert {key: value for key, value in again.items() if key != "_name_or_path"} == saved


def test_a_stable_diffusion_folder_names_no_safety_checker_and_needs_none(folders):
    index = json.loads((folders / "text2img" / "model_index.json").read_text())
    assert index["safety_checker"] == index["feature_extractor"] == index["image_encoder"] == [None, None]
    assert index["requires_safety_checker"] is False
    assert "prompt_projection" not in index  # latentzoo's absent optional component: not a diffusers one


# name: (builder, why no diffusers pipeline computes what it computes)
LATENTZOO_ONLY = {
    "concatenation": (concatenation_text_to_image, "Stable Diffusion has no prompt projection"),
    "flow-matching text2img": (
        lambda: text_to_image_pipeline(FlowMatchEulerDiscreteScheduler(shift=1.0)),
        "StableDiffusionPipeline calls scale_model_input, which flow-matching schedulers lack",
    ),
    "DDIM with steps_offset 0": (
        lambda: text_to_image_pipeline(DDIMScheduler(clip_sample=False)),
        "StableDiffusionPipeline would set steps_offset to 1, moving the 'leading' timesteps",
    ),
    "clipping sampler": (
        lambda: text_to_image_pipeline(DDIMScheduler(steps_offset=1)),
        "StableDiffusionPipeline would switch clip_sample off",
    ),
    "class-conditional ddpm": (lambda: pixel_pipeline(3), "DDPMPipeline takes no class labels"),
    "euler ddpm": (
        lambda: pixel_pipeline(None, EulerDiscreteScheduler()),
        "DDPMPipeline scales neither x_T nor the UNet's input",
    ),
    "pndm ddpm": (
        lambda: pixel_pipeline(None, PNDMScheduler()),
        "DDPMPipeline passes a generator to every step, which PNDM's does not take",
    ),
}


@pytest.mark.parametrize("name", LATENTZOO_ONLY)
def test_a_pipeline_no_diffusers_class_computes_is_saved_under_its_own_name(tmp_path, name):
    build, _ = LATENTZOO_ONLY[name]
    pipe = build()
    assert pipe.diffusers_class_name is None
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__ and "safety_checker" not in index
    assert isinstance(load_pipeline(tmp_path), type(pipe))


def test_a_stable_diffusion_folder_with_a_safety_checker_keeps_diffusers_class(folders, tmp_path):
    """Ours run no safety checker: a Stable Diffusion folder that has one is not quietly loaded without it."""
    folder = shutil.copytree(folders / "text2img", tmp_path / "sd")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    assert pipeline_class(folder).__name__ == "StableDiffusionPipeline"


# ------------------------------------------------------------------------------------------ old folders


def as_saved_before(folder) -> None:
    """Rewrite `folder`/model_index.json as save_pretrained wrote it before folders carried diffusers' names."""
    index = json.loads((folder / "model_index.json").read_text())
    for key in ("safety_checker", "feature_extractor", "image_encoder", "requires_safety_checker"):
        index.pop(key, None)
    kind = pipeline_class(folder).__name__
    index["_class_name"] = kind
    if kind == "LatentTextToImagePipeline":
        index["prompt_projection"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


@pytest.mark.parametrize("name", ["text2img", "text2img_lcd", "ddpm"])
def test_a_folder_saved_before_loads_with_our_class_and_generates(folders, tmp_path, capsys, name):
    _, _, call = DIFFUSERS_LOADABLE[name]
    old = shutil.copytree(folders / name, tmp_path / name)
    as_saved_before(old)
    kind = pipeline_class(folders / name)
    assert pipeline_class(old) is kind
    assert isinstance(kind.from_pretrained(old), kind)
    assert np.array_equal(ours(old, call), ours(folders / name, call))
    prompt = ["a thin 3"] if "prompt" in call else []
    for i, folder in enumerate((old, folders / name)):
        output = tmp_path / f"grid-{i}.png"
        main(["generate", str(folder), *prompt, "-n", "2", "--steps", "2", "-o", str(output)])
        assert output.is_file()


# ------------------------------------------------------------------------------------------ card snippets


def single_autoencoder_kl(folder) -> None:
    text_to_image_pipeline().vae.save_pretrained(folder)


def single_text_encoder(folder) -> None:
    pipe = text_to_image_pipeline()
    pipe.text_encoder.save_pretrained(folder)
    pipe.tokenizer.save_pretrained(folder)


def saved(build):
    return lambda folder: build().save_pretrained(folder)


# variant: (task, `model:` settings, what writes the folder, {name the snippet binds: number of PIL images, or None
# for a tensor})
CARDS = {
    "autoencoder": (
        "autoencoder",
        {},
        saved(lambda: autoencoder_pipeline("gaussian")),
        {"images": 16, "reconstructions": 4},
    ),
    "vae": ("vae", {}, saved(vae_pipeline), {"images": 16, "strip": 8}),
    "two_stage_vae": ("two_stage_vae", {}, saved(two_stage_vae_pipeline), {"images": 16, "first_stage": 16}),
    "mdn_prior": ("mdn_prior", {}, saved(autoencoder_pipeline), {"sevens": 8}),
    "autoencoder_kl": ("autoencoder_kl", {}, single_autoencoder_kl, {"reconstruction": None}),
    "clip_text": ("clip_text", {}, single_text_encoder, {"hidden_states": None}),
    "ddpm": ("ddpm", {"class_conditional": False}, saved(unconditional_ddpm), {"images": 4}),
    "ddpm-classes": ("ddpm", {}, saved(lambda: pixel_pipeline(4)), {"images": 4}),
    "gan": ("gan", {}, saved(lambda: gan_pipeline(None)), {"images": 16, "strip": 8}),
    "gan-classes": (
        "gan",
        {"class_conditional": True},
        saved(lambda: gan_pipeline(10)),
        {"images": 4, "strip": 8},
    ),
    "text2img": ("text2img", {}, saved(text_to_image), {"images": 4}),
    "text2img-concatenation": (
        "text2img",
        {"conditioning": "concatenation"},
        saved(concatenation_text_to_image),
        {"images": 4},
    ),
    "text2img-flow": (
        "text2img",
        {"objective": "flow_matching"},
        saved(lambda: text_to_image("flow_matching")),
        {"images": 4},
    ),
    "text2img_lcd": ("text2img_lcd", {}, saved(consistency_student), {"images": 4}),
    "text2img_lcd-flow": (
        "text2img_lcd",
        {"objective": "flow_matching"},
        saved(lambda: consistency_student("flow_matching")),
        {"images": 4},
    ),
    "ddpm_lcd": (
        "ddpm_lcd",
        {},
        saved(lambda: pixel_pipeline(4, LCMScheduler(), distilled_guidance_scale=3.0)),
        {"images": 4},
    ),
}
WITHOUT_LATENTZOO = {"autoencoder_kl", "clip_text", "ddpm", "text2img", "text2img_lcd"}

CHECK = """
import sys as _sys
import PIL.Image as _Image
import torch as _torch

for _name, _count in {expected!r}.items():
    _value = globals()[_name]
    if _count is None:
        assert isinstance(_value, _torch.Tensor) and _torch.isfinite(_value).all(), _name
    else:
        assert len(_value) == _count and all(isinstance(_v, _Image.Image) for _v in _value), _name
if {without_latentzoo!r}:
    assert "latentzoo" not in _sys.modules, "the snippet imported latentzoo"
print("snippet ok")
"""


def usage_snippet(readme: str) -> str:
    return re.search(r"## Usage\s+```python\n(.*?)\n```", readme, re.DOTALL).group(1)


@pytest.mark.parametrize("variant", CARDS)
def test_every_card_snippet_runs_as_it_stands_in_a_fresh_interpreter(tmp_path, variant):
    task, model, write, expected = CARDS[variant]
    folder = tmp_path / variant
    write(folder)
    run = {"task": task, "dataset": "digits", "output_dir": str(folder), "model": model}
    (folder / "training_config.yaml").write_text(yaml.safe_dump(run))
    card = write_model_card(folder)
    snippet = usage_snippet(card.read_text())
    assert str(folder) in snippet and "MODEL_DIR" not in snippet
    # the card's metadata names the library its snippet loads with
    library = ModelCard.load(card).data.library_name
    assert library == (
        "diffusers"
        if variant in WITHOUT_LATENTZOO - {"clip_text"}
        else "transformers"
        if variant == "clip_text"
        else "latentzoo"
    )
    without_latentzoo = variant in WITHOUT_LATENTZOO
    assert ("from latentzoo" in snippet) != without_latentzoo
    check = textwrap.dedent(CHECK).format(expected=expected, without_latentzoo=without_latentzoo)
    assert "snippet ok" in run_python(snippet + "\n" + check, tmp_path).stdout


@pytest.mark.parametrize(
    ("task", "model", "library_name"),
    [
        ("text2img", {}, "diffusers"),
        ("text2img", {"conditioning": "concatenation"}, "latentzoo"),
        ("text2img", {"objective": "flow_matching"}, "latentzoo"),
        ("text2img_lcd", {}, "diffusers"),
        ("text2img_lcd", {"objective": "flow_matching"}, "latentzoo"),
        ("ddpm_lcd", {}, "latentzoo"),
        ("ddpm", {"class_conditional": False}, "diffusers"),
        ("ddpm", {"class_conditional": False, "objective": "flow_matching"}, "diffusers"),
        ("ddpm", {}, "latentzoo"),
        ("gan", {}, "latentzoo"),
        ("autoencoder", {}, "latentzoo"),
        ("vae", {}, "latentzoo"),
        ("two_stage_vae", {}, "latentzoo"),
        ("mdn_prior", {}, "latentzoo"),
        ("autoencoder_kl", {}, "diffusers"),
        ("clip_text", {}, "transformers"),
    ],
)
def test_each_card_names_the_library_that_loads_the_folder(task, model, library_name):
    from latentzoo.training.config import TrainingConfig, build_dataclass
    from latentzoo.training.tasks import get_task_class

    config = build_dataclass(TrainingConfig, {"task": task, "dataset": "digits", "model": {}})
    config.model = build_dataclass(get_task_class(task).Config, model, prefix="model.")
    fields = card_fields(task, config)
    assert fields["library_name"] == library_name
    diffusers_snippet = "from diffusers import DiffusionPipeline" in fields["usage"]
    assert diffusers_snippet == (library_name == "diffusers" and task != "autoencoder_kl")
