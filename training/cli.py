"""The ``latentzoo`` command line: quickstart, train, generate, evaluate, push, demo, projector, forward-process.

``generate`` samples a grid from a saved pipeline of any family (a prompt for text-to-image, class labels or nothing
for the others), with the guidance scale and steps the model was validated with unless told otherwise.

A user mistake (a ValueError, TypeError, missing file or folder, an unavailable Hub dataset, or the Hub out of
reach: offline mode, no network, not logged in) in any command is one line ``error: ...`` on stderr and exit
status 2; ``latentzoo --debug COMMAND ...`` shows the traceback instead. Numbers out of range are refused by the
parser itself (its usage line, exit status 2) before anything loads. Training that diverges is one ``error:`` line
and exit status 1; SIGTERM or Ctrl-C during training writes a checkpoint first, then one ``interrupted:`` line and
exit status 128 + the signal number (143, 130).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

import yaml

# Ten prompts for the quickstart grid, one per digit, in phrasings and attribute combinations of all kinds.
QUICKSTART_PROMPTS = (
    "a bold zero",
    "the digit 1, thin",
    "a thin two slanted to the left",
    "handwritten number three",
    "a bold 4 slanted to the right",
    "the digit 5",
    "a thin upright six",
    "a bold seven slanted to the right",
    "handwritten number eight, thin",
    "a bold 9",
)


class UsageError(SystemExit):
    """A user mistake, already reported on stderr: exit status 2. `str()` gives the reported line."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises offline, without a network or without a login: its own errors and its HTTP
    client's (httpx's base error since huggingface_hub 1.0; before, requests' HTTPError and ConnectionError)."""
    from huggingface_hub import errors

    network = [errors.HTTPError]
    try:
        import requests

        network.append(requests.ConnectionError)
    except ImportError:
        pass
    return (errors.OfflineModeIsEnabled, errors.LocalTokenNotFoundError, errors.HfHubHTTPError, *network)


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..data import HubDatasetUnavailableError

    return (
        ValueError,
        TypeError,
        FileNotFoundError,
        NotADirectoryError,
        HubDatasetUnavailableError,
        *_hub_errors(),
    )


def _training_failures() -> tuple[type[BaseException], ...]:
    """Failures of a run, not mistakes of its user (exit status 1): training diverged."""
    from .trainer import NonFiniteLossError

    return (NonFiniteLossError,)


def _error_line(error: BaseException) -> str:
    """The one line `main` prints for a user mistake: its message, or for the Hub what failed and the fix."""
    from huggingface_hub import errors, get_token

    login = "log in with `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN to a token with write access"
    if isinstance(error, errors.OfflineModeIsEnabled):
        message = (
            "this needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE "
            "and run it again with network access."
        )
    elif isinstance(error, errors.LocalTokenNotFoundError):
        message = f"not logged in to the Hugging Face Hub: {login}."
    elif isinstance(error, errors.HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        detail = str(error).splitlines()[0]
        fix = login if status in (401, 403) else "check the repository id and your access to it"
        message = f"the Hugging Face Hub refused the request ({detail}): {fix}."
    elif isinstance(error, _hub_errors()):
        message = (
            f"cannot reach the Hugging Face Hub ({type(error).__name__}: {error}): check the network connection "
            "(and HTTPS_PROXY if you use one) and run it again."
        )
    else:
        message = str(error)
    line = "error: " + " ".join(message.split())
    # A token never reaches the terminal, even inside a message quoted from a library.
    token = get_token()
    return line.replace(token, "***") if token else line


def positive_int(text: str) -> int:
    """argparse `type=`: an int >= 1 (image, step and sample counts)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=`: an int >= 0 (seeds; counts where 0 skips)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse `type=`: a finite float >= 0 (guidance scales); refuses nan and inf."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """argparse `type=`: a float in [0, 1] (fractions of the sampling steps)."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse `type=`: a finite float > 0 (truncation thresholds); refuses nan and inf."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def class_label_list(text: str) -> list[int]:
    """argparse `type=`: one class label or a comma-separated list of them, each an int >= 0 ("3", "3,7")."""
    try:
        labels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 0 or a list such as 3,7, got {text}"
        ) from None
    if any(label < 0 for label in labels):
        raise argparse.ArgumentTypeError(f"class labels are integers >= 0, got {text}")
    return labels


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latentzoo")
    except PackageNotFoundError:
        return "unknown (not installed)"


def image_file(text: str) -> str:
    """argparse `type=`: a path whose extension PIL can write (.png, .jpg, .webp, ...)."""
    from PIL import Image

    Image.init()
    if Image.registered_extensions().get(Path(text).suffix.lower()) not in Image.SAVE:
        raise argparse.ArgumentTypeError(
            f"cannot write an image to {text!r}: end the name with .png (or .jpg, .webp, ...)"
        )
    return text


def _train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .trainer import train

    # A configuration mistake is a ValueError: `main` reports it in one line, without a traceback.
    output_dir = train(load_config(args.config, args.overrides))
    print(f"Saved to {output_dir}")


def _load_pipeline(path: str, sampler: str | None = None):
    """The pipeline saved in `path`, with `sampler` when it has a scheduler (AE and GAN pipelines have none)."""
    from ..pipelines.loading import load_pipeline
    from ..pipelines.samplers import make_sampler

    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"{path} does not exist: pass the folder a training run saved its pipeline in."
        )
    pipeline = load_pipeline(path)
    if sampler is not None and "scheduler" in pipeline.components:
        pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
    # A diffusion pipeline's bar counts the denoising steps of each call (a batch of images), on stderr.
    pipeline.set_progress_bar_config(desc="sampling", leave=False)
    return pipeline


def _generate_grid(
    pipeline, prompts: list[str], per_prompt: int, steps: int, guidance: float, seed: int, **kwargs
):
    import torch

    from ..evaluation.images import make_image_grid

    generator = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts) * per_prompt)]
    images = pipeline(
        prompts,
        num_images_per_prompt=per_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generator,
        output_type="pt",
        **kwargs,
    ).images
    # One row per prompt.
    return make_image_grid(images, nrow=per_prompt)


# `generate`'s options that only some pipelines take: option → the `__call__` parameter it sets.
GENERATE_OPTIONS = {
    "negative_prompt": "negative_prompt",
    "class_label": "class_labels",
    "steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "guidance_start": "guidance_start",
    "guidance_stop": "guidance_stop",
    "truncation": "truncation",
    "height": "height",
    "width": "width",
}


def _what_it_takes(kind: type, parameters) -> str:
    """What `generate` gives a pipeline class: "no prompt; options --class-label K (class-conditional models), ..."."""
    options = [
        "--class-label K (class-conditional models)"
        if option == "class_label"
        else "--" + option.replace("_", "-")
        for option, name in GENERATE_OPTIONS.items()
        if name in parameters
    ]
    if "scheduler" in inspect.signature(kind.__init__).parameters:
        options.append("--sampler")
    if "prior" in inspect.signature(kind.__init__).parameters:
        options.append("--prior")
    prompt = "a prompt" if "prompt" in parameters else "no prompt"
    return f"{prompt}; options {', '.join(options)}" if options else f"{prompt} and no options"


def _check_generate_arguments(args: argparse.Namespace) -> type:
    """Raise unless the pipeline class in `args.model_dir` takes what the command line gives; that class.

    Reads model_index.json only: every mistake is reported before any weights load.
    """
    from ..pipelines.loading import pipeline_class

    model_dir = args.model_dir
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(
            f"{model_dir} does not exist: pass the folder a training run saved its pipeline in."
        )
    kind = pipeline_class(model_dir)
    parameters = inspect.signature(kind.__call__).parameters
    takes = _what_it_takes(kind, parameters)
    if "prompt" in parameters and args.prompt is None:
        raise ValueError(
            f"{model_dir} holds a {kind.__name__}, which needs a prompt: latentzoo generate {model_dir} "
            f'"a thin 3" -n 16 (it takes {takes}).'
        )
    if "prompt" not in parameters and args.prompt is not None:
        raise ValueError(
            f"{model_dir} holds a {kind.__name__}, which takes no prompt: drop {args.prompt!r} (it takes {takes}), "
            f"e.g. latentzoo generate {model_dir} -n 16 -o grid.png; score it with `latentzoo evaluate {model_dir}`."
        )
    given = [option for option in GENERATE_OPTIONS if getattr(args, option) is not None]
    # options that set a component rather than a call argument: the component they set
    components = {"sampler": "scheduler", "prior": "prior"}
    given += [option for option in components if getattr(args, option, None) is not None]
    init_parameters = inspect.signature(kind.__init__).parameters
    refused = [
        "--" + option.replace("_", "-")
        for option in given
        if (option in components and components[option] not in init_parameters)
        or (option not in components and GENERATE_OPTIONS[option] not in parameters)
    ]
    if refused:
        raise ValueError(
            f"{model_dir} holds a {kind.__name__}, which takes no {', '.join(refused)}: it takes {takes}."
        )
    return kind


def _class_labels(
    pipeline, given: list[list[int]] | None, num_images: int, model_dir: str
) -> list[int] | None:
    """One label per image: the given ones, cycled over the images; all classes cycled when none are given; None
    for an unconditional pipeline (an error if labels were given)."""
    from ..models.checks import cycle_class_labels

    labels = [label for labels in given or [] for label in labels]
    if pipeline.num_classes is None:
        if labels:
            raise ValueError(
                f"{model_dir} holds an unconditional {type(pipeline).__name__}, which takes no --class-label: "
                "drop it."
            )
        return None
    if not labels:
        return cycle_class_labels(num_images, pipeline.num_classes)
    bad = [label for label in labels if not 0 <= label < pipeline.num_classes]
    if bad:
        raise ValueError(
            f"--class-label {bad[0]}: {model_dir} holds a {type(pipeline).__name__} of {pipeline.num_classes} "
            f"classes; pass labels from 0 to {pipeline.num_classes - 1}."
        )
    return [labels[i % len(labels)] for i in range(num_images)]


def _describe_settings(pipeline, call_kwargs: dict, class_labels: list[int] | None) -> str:
    """The settings a diffusion pipeline samples with, given or saved: "20 DPMSolverMultistepScheduler steps, ..."."""
    if not hasattr(pipeline, "default_num_inference_steps"):
        truncation = call_kwargs.get("truncation")
        return "" if truncation is None else f" (truncation {truncation})"
    steps = call_kwargs.get("num_inference_steps", pipeline.default_num_inference_steps)
    guidance = call_kwargs.get("guidance_scale")
    if guidance is None:
        # A pixel-diffusion pipeline guides towards class labels only; without them it samples unguided.
        takes_prompt = "prompt" in inspect.signature(type(pipeline).__call__).parameters
        guidance = pipeline.default_guidance_scale if takes_prompt or class_labels is not None else 1.0
    interval = ""
    if "guidance_start" in call_kwargs or "guidance_stop" in call_kwargs:
        start, stop = call_kwargs.get("guidance_start", 0.0), call_kwargs.get("guidance_stop", 1.0)
        interval = f" on the steps from {start:g} to {stop:g} of the way"
    return f" ({steps} {type(pipeline.scheduler).__name__} steps, guidance scale {guidance}{interval})"


def _make_parent(path: str) -> None:
    """Create the folder `path` goes in (`-o out/grid.png` works); one line when a file is in the way."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(f"cannot write {path}: {error.filename} is a file, not a folder.") from error


def _generate(args: argparse.Namespace) -> None:
    import torch

    from ..evaluation.images import make_image_grid
    from ..evaluation.sampling import sample_images
    from ..pipelines.utils import compile_denoiser

    # Every check that needs no weights before they load and the sampling starts.
    _check_generate_arguments(args)
    _make_parent(args.output)
    pipeline = _load_pipeline(args.model_dir, args.sampler)
    if args.prior == "standard-normal":
        pipeline.register_modules(prior=None)  # the pipeline then draws latents from N(0, I)
    if args.device is not None:
        pipeline.to(args.device)
    n = args.num_images
    # Options not given are not passed: the pipeline's saved defaults (what the model was validated with) apply.
    call_kwargs = {
        GENERATE_OPTIONS[option]: getattr(args, option)
        for option in (
            "negative_prompt",
            "steps",
            "guidance_scale",
            "guidance_start",
            "guidance_stop",
            "truncation",
            "height",
            "width",
        )
        if getattr(args, option) is not None
    }
    if args.compile:
        if getattr(pipeline, "unet", None) is None:
            raise ValueError(
                f"--compile compiles a diffusion model's UNet; {args.model_dir} has none: leave --compile out."
            )
        compile_denoiser(pipeline, torch.bfloat16 if args.precision == "bf16" else None)
    # bf16 autocast: matmuls and convolutions in bf16, the scheduler and the rest in fp32 (README: 1.4-1.6x the
    # images/s on a 2-core CPU with bf16 kernels, the same judge scores).
    precision = (
        torch.autocast(pipeline.device.type, dtype=torch.bfloat16)
        if args.precision == "bf16"
        else contextlib.nullcontext()
    )
    if args.prompt is not None:
        class_labels, nrow, what = None, n, f"for {args.prompt!r}"
        with precision:
            images = sample_images(pipeline, n, args.seed, prompt=[args.prompt] * n, **call_kwargs)
    else:
        class_labels = _class_labels(pipeline, args.class_label, n, args.model_dir)
        if class_labels is None:
            nrow, what = None, "(unconditional)"
        else:
            # Cycled classes: one column per class; given labels: a square-ish grid.
            nrow = min(n, pipeline.num_classes) if args.class_label is None else None
            shown = class_labels if len(class_labels) <= 10 else [*class_labels[:10], "..."]
            what = "of classes " + ", ".join(map(str, shown))
        if args.prior == "standard-normal":
            what += " from N(0, I)"
        with precision:
            images = sample_images(pipeline, n, args.seed, class_labels=class_labels, **call_kwargs)
    # sample_images returns [-1, 1]; the grid takes [0, 1].
    make_image_grid((images + 1) / 2, nrow=nrow).save(args.output)
    settings = _describe_settings(pipeline, call_kwargs, class_labels)
    if args.precision == "bf16":
        settings += " under bf16 autocast"
    if args.compile:
        settings += ", UNet compiled"
    print(f"Wrote {n} images {what}{settings} to {args.output}")


# The MNIST judge protocol of text-to-image models: its options and their defaults.
JUDGE_DEFAULTS = {"per_digit": 100, "held_out_per_digit": 20, "mnist_test": None}


def _read_run_config(model_dir: Path) -> dict:
    """The run's training_config.yaml as plain data; {} when the folder has none."""
    path = model_dir / "training_config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _pipeline_class_name(model_dir: Path) -> str:
    from ..pipelines.loading import pipeline_class

    return pipeline_class(model_dir).__name__


def _dataset_options(run_config: dict, name: str) -> dict:
    """`load_dataset` keyword arguments (beside name and split) that reload the data `run_config` trained on.

    The run's resolution, channels, caption and label columns and seed (captions, and shapes' scenes); its
    `dataset_kwargs` too when `name` is of the same kind (mnist, shapes, imagefolder:, hub:) as the run's
    dataset. Never `random_flip`: evaluation compares with the images as they are.
    """
    from .config import TrainingConfig, build_dataclass

    config = build_dataclass(TrainingConfig, {**run_config, "model": {}})
    config.random_flip = False
    trained_on = str(run_config.get("dataset", ""))
    if trained_on.split(":", 1)[0] != name.split(":", 1)[0]:
        config.dataset_kwargs = {}
    return config.dataset_arguments()


def _judge_report(model_dir: Path, args: argparse.Namespace) -> dict:
    """The MNIST judge protocol of a text-to-image model (prompt, weight and slant accuracy, judge-FID)."""
    from ..evaluation import load_mnist_idx
    from ..evaluation.protocol import evaluate_text_to_image

    options = {key: getattr(args, key, None) for key in JUDGE_DEFAULTS}
    options = {
        key: default if options[key] is None else options[key] for key, default in JUDGE_DEFAULTS.items()
    }
    pipeline = _load_pipeline(str(model_dir), args.sampler)
    reference = None
    if options["mnist_test"]:
        images, _ = load_mnist_idx(options["mnist_test"])
        reference = images
    result = evaluate_text_to_image(
        pipeline,
        per_digit=options["per_digit"],
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        reference_images=reference,
        held_out_per_digit=options["held_out_per_digit"],
    )
    return {
        "metrics": result["metrics"],
        "protocol": result["protocol"],
        "sampling": result.get("sampling", {}),
    }


def _domain_report(model_dir: Path, args: argparse.Namespace, run_config: dict, name: str) -> dict:
    """Any family on any dataset: `evaluate_pipeline` in the features of the dataset's domain encoder."""
    from ..data import load_dataset
    from ..evaluation import SHAPES_FAMILIES, evaluate_pipeline, evaluate_shapes, pipeline_family

    if name.startswith("imagefolder:") and not os.path.isdir(name.removeprefix("imagefolder:")):
        raise ValueError(
            f"{model_dir} was trained on {name!r}, which is not a folder here (a run records the folder's name, "
            "never its path): pass --dataset imagefolder:PATH with the folder of images it was trained on."
        )
    options = _dataset_options(run_config, name)
    train = load_dataset(name, "train", **options)
    validation = load_dataset(name, "validation", **options)
    pipeline = _load_pipeline(str(model_dir), args.sampler)
    result = evaluate_pipeline(
        pipeline,
        train,
        validation,
        num_samples=args.num_samples,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        load_options={"name": name, **options},
        domain_recipe={"num_steps": args.domain_steps},
    )
    report = {"metrics": result["metrics"], "protocol": result["protocol"], "sampling": result["sampling"]}
    if name == "shapes" and pipeline_family(pipeline) == "text-to-image":
        # Compositional prompts: GenEval's families, scored exactly because the renderer is known.
        per_family = max(1, args.num_samples // len(SHAPES_FAMILIES))
        geneval = evaluate_shapes(
            pipeline,
            per_family=per_family,
            seed=args.seed,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
        )
        report["metrics"].update({f"geneval/{k}": v for k, v in geneval["metrics"].items()})
        report["protocol"] += f" GenEval-style (geneval/*): {geneval['protocol']}"
    return report


def _evaluate_into(model_dir: Path, args: argparse.Namespace) -> dict:
    """Evaluate the pipeline in `model_dir`, write model_dir/metrics.json and rewrite its model card.

    A text-to-image model on mnist (or with a judge option such as --per-digit) gets the MNIST judge protocol;
    every other model and dataset gets `evaluate_pipeline`, on the dataset of the run's training_config.yaml
    (or --dataset).
    """
    from .model_card import public_dataset_name, write_model_card

    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} does not exist: pass the output_dir of a training run.")
    run_config = _read_run_config(model_dir)
    class_name = _pipeline_class_name(model_dir)
    name = getattr(args, "dataset", None) or run_config.get("dataset")
    judge_options = [key for key in JUDGE_DEFAULTS if getattr(args, key, None) is not None]
    if class_name == "LatentTextToImagePipeline" and (name in (None, "mnist") or judge_options):
        # The judge's numbers are on MNIST, whatever the run trained on.
        report, name = _judge_report(model_dir, args), "mnist"
    else:
        if judge_options:
            flags = ", ".join("--" + key.replace("_", "-") for key in judge_options)
            raise ValueError(
                f"{flags}: options of the MNIST judge protocol of text-to-image models; {model_dir} holds a "
                f"{class_name}: set the sample count with --num-samples."
            )
        if name is None:
            raise ValueError(
                f"{model_dir} has no training_config.yaml to read its dataset from: pass --dataset NAME "
                "(mnist, digits, shapes, imagefolder:PATH, hub:NAME)."
            )
        report = _domain_report(model_dir, args, run_config, str(name))
    # The dataset the numbers are on, by its public name (cards and model-index never show a local path).
    report["dataset"] = public_dataset_name(str(name))
    (model_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    if (model_dir / "training_config.yaml").is_file():
        write_model_card(model_dir)
    return report


def _print_report(report: dict) -> None:
    for name, value in report["metrics"].items():
        print(f"  {name:45s} {value:.4f}" if isinstance(value, float) else f"  {name:45s} {value}")
    print(f"  protocol: {report['protocol']}")


def _evaluate(args: argparse.Namespace) -> None:
    model_dir = Path(args.model_dir)
    report = _evaluate_into(model_dir, args)
    _print_report(report)
    card = " and updated the model card" if (model_dir / "training_config.yaml").is_file() else ""
    print(f"Wrote {model_dir / 'metrics.json'}{card}.")


def _quickstart(args: argparse.Namespace) -> None:
    from ..evaluation.sampling import sampling_settings
    from .config import load_config
    from .model_card import write_model_card
    from .trainer import train

    output_dir = Path(args.output_dir)
    # Stage folders inside the preset's output_dir (vae/, stages/text_encoder/) move with it (`load_config`).
    train(load_config(args.config, [*args.overrides, f"output_dir={output_dir}"]))

    pipeline = _load_pipeline(str(output_dir), args.sampler)
    # Not given: the guidance scale and steps the model was validated with, saved with it; said below as used.
    settings = sampling_settings(pipeline, args.steps, args.guidance_scale)
    steps, guidance = settings["num_inference_steps"], settings["guidance_scale"]
    grid = _generate_grid(pipeline, list(QUICKSTART_PROMPTS), 8, steps, guidance, args.seed)
    grid_path = output_dir / "samples_grid.png"
    grid.save(grid_path)
    write_model_card(output_dir)
    if args.per_digit > 0:
        _print_report(_evaluate_into(output_dir, args))
    print(
        f"\nSamples for {len(QUICKSTART_PROMPTS)} prompts (one row each): {grid_path.resolve()}\n"
        f"Pipeline and model card: {output_dir.resolve()}\n\n"
        "Use it:\n"
        "    import torch\n"
        "    from latentzoo.pipelines import LatentTextToImagePipeline\n"
        f'    pipe = LatentTextToImagePipeline.from_pretrained("{output_dir}")\n'
        f"    # as the grid above: {steps} {type(pipeline.scheduler).__name__} steps, guidance scale {guidance}\n"
        f'    image = pipe("a bold seven slanted to the right", guidance_scale={guidance}, '
        f"num_inference_steps={steps}, generator=torch.Generator().manual_seed(0)).images[0]\n"
        f'or: latentzoo generate {output_dir} "a thin 3" -n 16 -o grid.png'
    )


# What a model folder's `from_pretrained` reads: configs, weights, tokenizer and feature-extractor files, code a
# model_index.json names. Beside them a run folder holds what training left: its state, logs, samples, checkpoints.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".py")
TRAINING_LEFTOVERS = ("train_state.json", "metrics.json", "manifest.json")
# Beside the model: the card (rendered, uploaded as README.md), the sample grid, the run's config and numbers.
CARD_FILES = ("README.md", "samples_grid.png", "training_config.yaml", "metrics.json")


def _model_files(folder: Path, root: Path) -> list[str]:
    """The files `from_pretrained` reads in one model or component folder (not its subfolders), relative to
    `root`."""
    return [
        path.relative_to(root).as_posix()
        for path in sorted(folder.iterdir())
        if path.is_file()
        and path.suffix in MODEL_FILE_SUFFIXES
        and path.name not in TRAINING_LEFTOVERS
        and not path.name.startswith(".")
    ]


def upload_files(model_dir: str | Path, include_logs: bool = False) -> list[str]:
    """The files `latentzoo push` uploads from `model_dir`, as sorted relative POSIX paths.

    A pipeline folder: model_index.json, any custom pipeline code beside it (*.py) and, for each component it
    names (a non-null entry), the files of that component's folder that `from_pretrained` reads; a single-model
    folder (config.json at the top): its own. Plus the model card (README.md), samples_grid.png,
    training_config.yaml and metrics.json where present. Never logs, samples, stage folders or the training state
    (`vae/logs`, `vae/train_state.json`, ...) unless `include_logs`: then every file but checkpoints and temporary
    files. Never checkpoints.
    """
    from ..pipelines.loading import read_model_index

    model_dir = Path(model_dir)
    if (model_dir / "model_index.json").is_file():
        model_index = read_model_index(model_dir)
        files = ["model_index.json", *(path.name for path in model_dir.glob("*.py") if path.is_file())]
        for name, entry in model_index.items():
            if name.startswith("_") or not isinstance(entry, list) or None in entry:
                continue
            if not (model_dir / name).is_dir():
                raise ValueError(
                    f"{model_dir / 'model_index.json'} names the component {name!r}, but {model_dir / name} is "
                    "missing: re-save the pipeline with save_pretrained."
                )
            files += _model_files(model_dir / name, model_dir)
    elif (model_dir / "config.json").is_file():
        files = _model_files(model_dir, model_dir)
    else:
        raise ValueError(f"{model_dir} holds no saved pipeline or model (no model_index.json / config.json).")
    files += [name for name in CARD_FILES if (model_dir / name).is_file()]
    if include_logs:
        files += [
            relative.as_posix()
            for relative in (path.relative_to(model_dir) for path in model_dir.rglob("*") if path.is_file())
            if "checkpoints" not in relative.parts
            and not any(part.startswith(".") for part in relative.parts)
        ]
    return sorted(set(files))


def _push(args: argparse.Namespace) -> None:
    """Upload what `from_pretrained` needs, with the card rendered in memory: no local file changes, ever."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import LocalTokenNotFoundError

    from .model_card import render_model_card

    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} does not exist: pass the output_dir of a training run.")
    files = upload_files(model_dir, include_logs=args.include_logs)
    if get_token() is None:
        raise LocalTokenNotFoundError("no Hugging Face token")  # `main` words it with the fix
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name))
        for name in files
        if name != "README.md"
    ]
    if (model_dir / "training_config.yaml").is_file():
        # The card is rendered from the run's files for this repository and uploaded from memory.
        card = str(render_model_card(model_dir, repo_id=args.repo_id))
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    elif "README.md" in files:
        # A folder saved by hand uploads with its own README.md.
        operations.append(
            CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(model_dir / "README.md"))
        )
    # The token comes from HF_TOKEN or `hf auth login`'s cache, read by huggingface_hub itself; it is never
    # printed, logged or written here.
    api = HfApi()
    repo_url = api.create_repo(args.repo_id, private=args.private or None, exist_ok=True)
    repo_id = getattr(repo_url, "repo_id", None) or args.repo_id
    if args.revision is not None:
        api.create_branch(repo_id, branch=args.revision, exist_ok=True)
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    url = commit.pr_url if args.create_pr else commit.commit_url
    what = "Opened a pull request with" if args.create_pr else "Pushed"
    print(f"{what} {len(operations)} files from {model_dir} to {repo_id}: {url}")


def _forward_process(args: argparse.Namespace) -> None:
    from ..data import load_dataset
    from ..evaluation.forward_process import forward_process_strip, plot_noise_schedules
    from .tasks.diffusion import NOISE_SCHEDULES, make_noise_scheduler

    schedulers = {name: make_noise_scheduler(name, args.num_train_timesteps) for name in NOISE_SCHEDULES}
    dataset = load_dataset(args.dataset, split="validation")
    images = dataset.pixel_values[: args.num_images]
    output_dir = Path(args.output_dir)
    strip = forward_process_strip(
        schedulers, images, args.timesteps, output_dir / "forward_process.png", args.seed
    )
    plot = plot_noise_schedules(schedulers, output_dir / "noise_schedules.png")
    print(
        f"Wrote {strip} (x_0 -> x_t at t={args.timesteps}) and {plot} (ᾱ_t and sqrt(ᾱ_t), linear vs cosine)"
    )


def _projector(args: argparse.Namespace) -> None:
    from ..data import load_dataset
    from ..evaluation.projector import export_latent_visualisations

    pipeline = _load_pipeline(args.model_dir)
    if not hasattr(pipeline, "autoencoder"):
        raise ValueError(
            f"{args.model_dir} holds a {type(pipeline).__name__}; `projector` needs an autoencoder "
            "pipeline (a run of autoencoder-mnist, vae-mnist, mdn-prior-mnist, ...)."
        )
    dataset = load_dataset(args.dataset, split=args.split, image_size=pipeline.autoencoder.config.sample_size)
    count = min(args.num_images, len(dataset))
    output_dir = Path(args.output_dir or Path(args.model_dir) / "projector")
    labels = dataset.class_labels[:count] if dataset.class_labels is not None else None
    paths = export_latent_visualisations(pipeline, dataset.pixel_values[:count], output_dir, labels)
    print(f"Wrote {count} latents ({args.dataset} {args.split}) and pictures to {output_dir}:")
    for name in paths:
        print(f"  {name}")
    print(f"View them: tensorboard --logdir {output_dir}   (tabs Projector and Images)")


def _demo(args: argparse.Namespace) -> None:
    # Without folders: the one `latentzoo quickstart` saves its model in (its --output-dir default).
    default_dir = "outputs/text2img-mnist"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the demo needs Gradio: pip install "latentzoo[demo]"') from None
    model_dirs = args.model_dirs
    if not model_dirs:
        if not Path(default_dir).is_dir():
            raise FileNotFoundError(
                f"no model folder given and there is no {default_dir}: make one with `latentzoo quickstart`, or "
                "pass folders saved by training runs: latentzoo demo DIR [DIR ...]"
            )
        model_dirs = [default_dir]
    from ..demo import build_demo, launch_demo

    launch_demo(build_demo(model_dirs), port=args.port, share=args.share)


def _add_sampling_args(
    parser: argparse.ArgumentParser, per_digit_default: int | None = None, judge_options: bool = False
) -> None:
    """--steps, --guidance-scale, --sampler, --seed (and the judge protocol's options). The first three default to
    None, "what the pipeline was saved with" (the values its model was validated with), in every command."""
    from ..pipelines.samplers import CONSISTENCY_SAMPLERS, FLOW_SAMPLERS, SAMPLERS

    saved = "default: the value the model was validated with, saved with it"
    parser.add_argument("--steps", type=positive_int, help=f"diffusion: number of inference steps ({saved})")
    parser.add_argument(
        "--guidance-scale", type=non_negative_float, help=f"diffusion: classifier-free guidance ({saved})"
    )
    parser.add_argument(
        "--sampler",
        choices=sorted(set(SAMPLERS) | set(FLOW_SAMPLERS) | set(CONSISTENCY_SAMPLERS)),
        help="diffusion: default: the scheduler saved with the model; flow-matching models take euler, heun or "
        "dpm++, few-step (consistency-distilled) models lcm or tcd",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    if per_digit_default is not None or judge_options:
        # On `evaluate` the defaults are None ("not given"): giving one selects the judge protocol.
        given = per_digit_default is None
        parser.add_argument(
            "--per-digit",
            type=non_negative_int,
            default=per_digit_default,
            help=f"judge protocol: evaluation samples per digit (default {JUDGE_DEFAULTS['per_digit']}; 0: skip)",
        )
        parser.add_argument(
            "--held-out-per-digit",
            type=non_negative_int,
            default=None if given else JUDGE_DEFAULTS["held_out_per_digit"],
            help="judge protocol: samples per digit with phrasings never seen in training (default 20; 0: skip)",
        )
        parser.add_argument(
            "--mnist-test", help="judge protocol: folder of the MNIST test split (IDX) as FID reference"
        )


def build_parser() -> argparse.ArgumentParser:
    # --debug works before the command (`latentzoo --debug train ...`) and after it; SUPPRESS keeps a
    # subcommand's absent flag from overwriting the global one (the parsed args lack `debug` when neither is given).
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error instead of one line",
    )
    parser = argparse.ArgumentParser(
        prog="latentzoo",
        description=__doc__,
        parents=[debug],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    quickstart = commands.add_parser(
        "quickstart",
        parents=[debug],
        help="train the default text-to-image model on the embedded MNIST digits, sample a grid, evaluate",
    )
    quickstart.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    quickstart.add_argument(
        "--config", default="text2img-mnist", help="config file or preset (default text2img-mnist)"
    )
    quickstart.add_argument("--output-dir", default="outputs/text2img-mnist")
    _add_sampling_args(quickstart, per_digit_default=100)
    quickstart.set_defaults(func=_quickstart)

    train = commands.add_parser(
        "train",
        parents=[debug],
        help="train one config (also: accelerate launch -m latentzoo.training CONFIG ...)",
        description="Train from a YAML config or a preset name, with key=value overrides (model.KEY for the task's keys).",
    )
    train.add_argument(
        "config", help="a YAML file or a preset name from latentzoo/configs, e.g. text2img-mnist"
    )
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 max_train_steps=500")
    train.set_defaults(func=_train)

    generate = commands.add_parser(
        "generate",
        parents=[debug],
        help="sample a grid of images from a saved pipeline of any family",
        description=(
            "Sample a grid from a saved pipeline: for a prompt (text-to-image), for class labels (class-conditional "
            "models; all classes in turn when none are given) or unconditionally. Diffusion models sample with the "
            "guidance scale, steps and scheduler they were validated with unless told otherwise; image i is drawn "
            "with generator seed SEED + i."
        ),
    )
    generate.add_argument(
        "model_dir", help="a folder a training run (or save_pretrained) saved a pipeline in"
    )
    generate.add_argument(
        "prompt", nargs="?", help="what to draw: required for text-to-image, refused by every other family"
    )
    generate.add_argument(
        "-n", "--num-images", type=positive_int, default=16, help="number of images (default 16)"
    )
    generate.add_argument(
        "-o", "--output", type=image_file, default="grid.png", help="its folder is created (default grid.png)"
    )
    generate.add_argument("--negative-prompt", help="text-to-image: what to guide away from")
    generate.add_argument(
        "--class-label",
        type=class_label_list,
        action="append",
        metavar="K",
        help="class-conditional models: a class, repeatable or a list (3,7), cycled over the images "
        "(default: all classes in turn)",
    )
    generate.add_argument(
        "--truncation",
        type=positive_float,
        metavar="T",
        help="GAN: redraw latent entries beyond +-T (the truncation trick; default none)",
    )
    generate.add_argument(
        "--prior",
        choices=("saved", "standard-normal"),
        help="autoencoders: sample latents from the prior saved with the model (default) or from N(0, I)",
    )
    generate.add_argument(
        "--height",
        type=positive_int,
        help="text-to-image: image height in pixels (default: the trained size)",
    )
    generate.add_argument(
        "--width", type=positive_int, help="text-to-image: image width in pixels (default: the trained size)"
    )
    generate.add_argument(
        "--device", help="where to sample: cpu (default), cuda, cuda:1, mps, ... (any torch device)"
    )
    generate.add_argument(
        "--guidance-start",
        type=unit_fraction,
        help="diffusion: guide only from this fraction of the steps on (default 0)",
    )
    generate.add_argument(
        "--guidance-stop",
        type=unit_fraction,
        help="diffusion: guide only up to this fraction of the steps; the others run unguided at half the UNet "
        "cost (default 1: every step)",
    )
    generate.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: sample under bf16 autocast (faster where the hardware has bf16 kernels; default fp32)",
    )
    generate.add_argument(
        "--compile",
        action="store_true",
        help="diffusion: torch.compile the UNet first (with --precision bf16, its weights in bf16): faster steps "
        "after a compilation of a minute or two, so for many images, not a grid",
    )
    _add_sampling_args(generate)
    generate.set_defaults(func=_generate)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[debug],
        help="score a saved pipeline of any family: domain-FID beside its real-vs-real floor, and more",
        description=(
            "Text-to-image models on mnist: prompt, weight and slant accuracy and judge-FID (the MNIST judge "
            "protocol). Every other model and dataset: domain-FID beside the real-vs-real floor, in the features "
            "of a domain encoder trained (once, cached) on the dataset's training split; plus prompt alignment "
            "(text-to-image), class accuracy (class-conditional) and reconstruction PSNR (autoencoders). "
            "Diffusion models sample with the guidance scale, steps and scheduler they were validated with unless "
            "told otherwise. Writes MODEL_DIR/metrics.json (with the settings used) and updates the model card."
        ),
    )
    evaluate.add_argument(
        "model_dir", help="the output_dir of a training run, or a folder save_pretrained wrote"
    )
    evaluate.add_argument(
        "--dataset",
        help="default: the run's training_config.yaml; an imagefolder run needs --dataset imagefolder:PATH",
    )
    evaluate.add_argument(
        "--num-samples",
        type=positive_int,
        default=500,
        help="samples to score (default 500, at most the validation split's size)",
    )
    evaluate.add_argument(
        "--domain-steps",
        type=positive_int,
        default=1000,
        help="training steps of the domain encoder when none is cached for the dataset (default 1000)",
    )
    _add_sampling_args(evaluate, judge_options=True)
    evaluate.set_defaults(func=_evaluate)

    push = commands.add_parser(
        "push",
        parents=[debug],
        help="upload a saved folder with its model card to the Hugging Face Hub",
        description=(
            "Upload what from_pretrained needs (model_index.json and each component's configs, weights and "
            "tokenizer files, or a single model's), the model card rendered for REPO_ID as README.md, "
            "samples_grid.png, training_config.yaml and metrics.json: no logs, samples, stage folders or training "
            "state unless --include-logs, never checkpoints. No local file changes. Needs a token: `hf auth login` "
            "or HF_TOKEN."
        ),
    )
    push.add_argument("model_dir", help="the output_dir of a training run, or a folder save_pretrained wrote")
    push.add_argument("repo_id", help="the Hub repository to create or update, e.g. you/text2img-mnist")
    push.add_argument(
        "--private",
        action="store_true",
        help="create the repository private (an existing one keeps its visibility)",
    )
    push.add_argument("--revision", help="the branch to push to, created if missing (default: main)")
    push.add_argument(
        "--create-pr", action="store_true", help="open a pull request instead of committing to the branch"
    )
    push.add_argument(
        "--include-logs",
        action="store_true",
        help="also upload logs, samples, stage folders and training state (never checkpoints)",
    )
    push.add_argument(
        "--commit-message", default="Upload latentzoo model", help="default: Upload latentzoo model"
    )
    push.set_defaults(func=_push)

    projector = commands.add_parser(
        "projector",
        parents=[debug],
        help="latents for TensorBoard's embedding projector, interpolation and attribute strips, 2-D manifold",
    )
    projector.add_argument("model_dir", help="a saved AutoencoderPipeline folder")
    projector.add_argument("--output-dir", help="default MODEL_DIR/projector")
    projector.add_argument("--dataset", default="mnist")
    projector.add_argument("--split", default="validation", choices=["train", "validation"])
    projector.add_argument("--num-images", type=positive_int, default=1000)
    projector.set_defaults(func=_projector)

    forward = commands.add_parser(
        "forward-process",
        parents=[debug],
        help="figures of the diffusion forward process: x_0 -> x_t strips and ᾱ_t, linear vs cosine schedule",
    )
    forward.add_argument("--dataset", default="mnist")
    forward.add_argument("--num-images", type=positive_int, default=2, help="images per schedule (default 2)")
    forward.add_argument(
        "--timesteps", type=non_negative_int, nargs="+", default=[0, 50, 100, 250, 500, 750, 999]
    )
    forward.add_argument("--num-train-timesteps", type=positive_int, default=1000)
    forward.add_argument("--seed", type=non_negative_int, default=0)
    forward.add_argument("--output-dir", default="outputs/forward-process")
    forward.set_defaults(func=_forward_process)

    demo = commands.add_parser(
        "demo",
        parents=[debug],
        help="an interactive Gradio app over saved models of every family, in the browser",
        description=(
            "Start a Gradio app on localhost with a tab per model folder (text to image, class-conditional "
            "diffusion, GAN, latent explorer for autoencoders) and the diffusion forward process. Needs the demo "
            'extra: pip install "latentzoo[demo]".'
        ),
    )
    demo.add_argument(
        "model_dirs",
        nargs="*",
        metavar="DIR",
        help="folders training runs (or save_pretrained) saved pipelines in (default: outputs/text2img-mnist, "
        "where `latentzoo quickstart` saves its model)",
    )
    demo.add_argument("--port", type=positive_int, help="default: 7860, or the next free port")
    demo.add_argument(
        "--share", action="store_true", help="also open a public link through Gradio's servers (default: off)"
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    debug = getattr(args, "debug", False)
    try:
        args.func(args)
    except _user_errors() as error:
        if debug:
            raise
        # One line, whatever the message holds: the user's mistake, said once, with its fix.
        message = _error_line(error)
        print(message, file=sys.stderr)
        raise UsageError(message) from None
    except KeyboardInterrupt as interrupted:
        # Training wrote a checkpoint first (TrainingInterrupted says where); anything else just stops. 128 + the
        # signal number, as a shell reports a process that a signal ended.
        if debug:
            raise
        number = getattr(interrupted, "signal_number", signal.SIGINT)
        print(f"interrupted: {' '.join(str(interrupted).split()) or 'stopped'}", file=sys.stderr)
        raise SystemExit(128 + number) from None
    except _training_failures() as error:
        if debug:
            raise
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
