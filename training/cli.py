"""The ``latentzoo`` command line: quickstart, train, generate, evaluate, push."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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


def _load_config_or_exit(config, overrides):
    from .config import load_config

    try:
        return load_config(config, overrides)
    except ValueError as error:
        # A configuration mistake is the user's to fix: say what and how, without a traceback.
        raise SystemExit(f"error: {error}") from None


def _train(args: argparse.Namespace) -> None:
    from .trainer import train

    output_dir = train(_load_config_or_exit(args.config, args.overrides))
    print(f"Saved to {output_dir}")


def _load_pipeline(path: str, sampler: str | None = None):
    from ..pipelines.loading import load_pipeline

    try:
        pipeline = load_pipeline(path, sampler)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _generate_grid(
    pipeline, prompts: list[str], per_prompt: int, steps: int, guidance: float, seed: int, **kwargs
):
    import torch

    from .trainer import make_image_grid

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


def _generate(args: argparse.Namespace) -> None:
    pipeline = _load_pipeline(args.model_dir, args.sampler)
    extra = {"negative_prompt": args.negative_prompt} if args.negative_prompt else {}
    grid = _generate_grid(
        pipeline, [args.prompt], args.num_images, args.steps, args.guidance_scale, args.seed, **extra
    )
    grid.save(args.output)
    print(f"Wrote {args.num_images} images for {args.prompt!r} to {args.output}")


def _evaluate_into(model_dir: Path, args: argparse.Namespace) -> dict:
    from ..evaluation import load_mnist_idx
    from ..evaluation.protocol import evaluate_text_to_image
    from .model_card import write_model_card

    pipeline = _load_pipeline(str(model_dir), args.sampler)
    reference = None
    if getattr(args, "mnist_test", None):
        images, _ = load_mnist_idx(args.mnist_test)
        reference = images
    result = evaluate_text_to_image(
        pipeline,
        per_digit=args.per_digit,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        reference_images=reference,
        held_out_per_digit=args.held_out_per_digit,
    )
    report = {"metrics": result["metrics"], "protocol": result["protocol"]}
    (model_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    write_model_card(model_dir)
    return report


def _print_report(report: dict) -> None:
    for name, value in report["metrics"].items():
        print(f"  {name:45s} {value:.4f}" if isinstance(value, float) else f"  {name:45s} {value}")
    print(f"  protocol: {report['protocol']}")


def _evaluate(args: argparse.Namespace) -> None:
    report = _evaluate_into(Path(args.model_dir), args)
    _print_report(report)
    print(f"Wrote {Path(args.model_dir) / 'metrics.json'} and updated the model card.")


def _quickstart(args: argparse.Namespace) -> None:
    from .model_card import write_model_card
    from .trainer import train

    output_dir = Path(args.output_dir)
    # Stage folders inside the preset's output_dir (vae/, stages/text_encoder/) move with it (`load_config`).
    train(_load_config_or_exit(args.config, [*args.overrides, f"output_dir={output_dir}"]))

    pipeline = _load_pipeline(str(output_dir), args.sampler)
    grid = _generate_grid(pipeline, list(QUICKSTART_PROMPTS), 8, args.steps, args.guidance_scale, args.seed)
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
        f'    image = pipe("a bold seven slanted to the right", guidance_scale={args.guidance_scale}, '
        f"num_inference_steps={args.steps}, generator=torch.Generator().manual_seed(0)).images[0]\n"
        f'or: latentzoo generate {output_dir} "a thin 3" -n 16 -o grid.png'
    )


def _push(args: argparse.Namespace) -> None:
    from huggingface_hub import HfApi

    from .model_card import write_model_card

    model_dir = Path(args.model_dir)
    if not (model_dir / "model_index.json").is_file() and not (model_dir / "config.json").is_file():
        raise SystemExit(
            f"error: {model_dir} holds no saved pipeline or model (no model_index.json / config.json)."
        )
    write_model_card(model_dir, repo_id=args.repo_id)
    # The token comes from HF_TOKEN or `huggingface-cli login`'s cache, read by huggingface_hub itself; it is
    # never printed, logged or written here.
    api = HfApi()
    url = api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    api.upload_folder(
        folder_path=str(model_dir),
        repo_id=args.repo_id,
        commit_message=args.commit_message,
        # Stage folders (stages/: the contrastive text encoder before fine-tuning) are inputs of training, not
        # part of the pipeline.
        ignore_patterns=["checkpoints/*", "logs/*", "stages/*", "**/.tmp-*"],
    )
    print(f"Pushed {model_dir} to {url}")


def _forward_process(args: argparse.Namespace) -> None:
    from ..data import load_dataset
    from ..evaluation.forward_process import forward_process_strip, plot_noise_schedules
    from .tasks.ddpm import DDPMConfig
    from .tasks.diffusion import NOISE_SCHEDULES, make_noise_scheduler

    schedulers = {
        name: make_noise_scheduler(
            DDPMConfig(noise_schedule=name, num_train_timesteps=args.num_train_timesteps)
        )
        for name in NOISE_SCHEDULES
    }
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
        raise SystemExit(
            f"error: {args.model_dir} holds a {type(pipeline).__name__}; `projector` needs an autoencoder "
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


def _add_sampling_args(parser: argparse.ArgumentParser, per_digit_default: int | None = None) -> None:
    from ..pipelines.samplers import SAMPLERS

    parser.add_argument("--steps", type=int, default=20, help="number of inference steps (default 20)")
    parser.add_argument(
        "--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)"
    )
    parser.add_argument(
        "--sampler", choices=sorted(SAMPLERS), default="dpm++", help="default dpm++ (DPM-Solver++)"
    )
    parser.add_argument("--seed", type=int, default=0)
    if per_digit_default is not None:
        parser.add_argument(
            "--per-digit", type=int, default=per_digit_default, help="evaluation samples per digit (0: skip)"
        )
        parser.add_argument(
            "--held-out-per-digit",
            type=int,
            default=20,
            help="samples per digit with phrasings never seen in training (default 20; 0: skip)",
        )
        parser.add_argument("--mnist-test", help="folder of the MNIST test split (IDX) as FID reference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentzoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    quickstart = commands.add_parser(
        "quickstart",
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
        help="train one config (also: accelerate launch -m latentzoo.training CONFIG ...)",
        description="Train from a YAML config or a preset name, with key=value overrides (model.KEY for the task's keys).",
    )
    train.add_argument(
        "config", help="a YAML file or a preset name from latentzoo/configs, e.g. text2img-mnist"
    )
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 max_train_minutes=5")
    train.set_defaults(func=_train)

    generate = commands.add_parser(
        "generate", help="sample a grid of images for a prompt from a saved pipeline"
    )
    generate.add_argument("model_dir")
    generate.add_argument("prompt")
    generate.add_argument("-n", "--num-images", type=int, default=16)
    generate.add_argument("-o", "--output", default="grid.png")
    generate.add_argument("--negative-prompt")
    _add_sampling_args(generate)
    generate.set_defaults(func=_generate)

    evaluate = commands.add_parser("evaluate", help="prompt accuracy, attribute accuracy and judge-FID")
    evaluate.add_argument("model_dir")
    _add_sampling_args(evaluate, per_digit_default=100)
    evaluate.set_defaults(func=_evaluate)

    push = commands.add_parser(
        "push", help="upload a saved folder with its model card to the Hugging Face Hub"
    )
    push.add_argument("model_dir")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--commit-message", default="Upload latentzoo model")
    push.set_defaults(func=_push)

    projector = commands.add_parser(
        "projector",
        help="latents for TensorBoard's embedding projector, interpolation and attribute strips, 2-D manifold",
    )
    projector.add_argument("model_dir", help="a saved AutoencoderPipeline folder")
    projector.add_argument("--output-dir", help="default MODEL_DIR/projector")
    projector.add_argument("--dataset", default="mnist")
    projector.add_argument("--split", default="validation", choices=["train", "validation"])
    projector.add_argument("--num-images", type=int, default=1000)
    projector.set_defaults(func=_projector)

    forward = commands.add_parser(
        "forward-process",
        help="figures of the diffusion forward process: x_0 -> x_t strips and ᾱ_t, linear vs cosine schedule",
    )
    forward.add_argument("--dataset", default="mnist")
    forward.add_argument("--num-images", type=int, default=2, help="images per schedule (default 2)")
    forward.add_argument("--timesteps", type=int, nargs="+", default=[0, 50, 100, 250, 500, 750, 999])
    forward.add_argument("--num-train-timesteps", type=int, default=1000)
    forward.add_argument("--seed", type=int, default=0)
    forward.add_argument("--output-dir", default="outputs/forward-process")
    forward.set_defaults(func=_forward_process)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.func(args)


if __name__ == "__main__":
    main()
