"""The CLI's answer to user mistakes: one line ``error: ...`` on stderr naming the problem and the fix, exit status 2,
no traceback (``--debug`` shows it); numbers out of range are refused by the parser before anything loads; a
model folder never makes latentzoo import code."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from diffusers import DPMSolverMultistepScheduler
from huggingface_hub import constants, errors
from tiny_pipelines import gan_pipeline, text_to_image_pipeline

from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training.cli import main

FAKE_TOKEN = "hf_fakeTokenThatMustNeverBeShown0123"


@pytest.fixture(scope="module")
def text_to_image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "text2img"
    text_to_image_pipeline(DPMSolverMultistepScheduler(), size=16, widths=(8, 16)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "gan"
    gan_pipeline(None, widths=(16, 8)).save_pretrained(folder)
    return folder


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI on `argv`, expect exit status 2 with exactly one `error:` line and no traceback; that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]) and "Traceback" not in out + err
    return lines[0]


def parser_error(capsys, argv: list[str]) -> str:
    """Run the CLI on `argv`, expect argparse's refusal (usage, then `PROG: error: ...`, exit status 2); stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err.splitlines()[-1] and "Traceback" not in err
    return err.splitlines()[-1]


# ------------------------------------------------------------------------------------------ model_index.json


def test_malformed_model_index_names_the_file_and_the_position(capsys, text_to_image_folder, tmp_path):
    folder = copy_of(text_to_image_folder, tmp_path)
    (folder / "model_index.json").write_text('{"_class_name": "LatentTextToImagePipeline",\n')
    line = user_error(capsys, ["generate", str(folder), "a 3"])
    assert (
        str(folder / "model_index.json") in line and "not valid JSON" in line and "line 2, column 1" in line
    )


@pytest.mark.parametrize(
    "class_name, named",
    [
        (["my_pipeline", "MyPipeline"], "custom pipeline code"),  # diffusers' custom-code form
        ("os.system", "'os.system'"),
        ("UNet2DModel", "'UNet2DModel'"),  # a diffusers class, but not a pipeline
    ],
    ids=["list", "dotted", "not-a-pipeline"],
)
def test_class_name_that_is_not_a_known_pipeline_is_refused_not_imported(
    capsys, text_to_image_folder, tmp_path, class_name, named
):
    folder = copy_of(text_to_image_folder, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": class_name}))
    with pytest.raises(ValueError, match="never code a model folder names") as error_info:
        load_pipeline(folder)
    assert named in str(error_info.value) and "trust_remote_code" in str(error_info.value)
    line = user_error(capsys, ["generate", str(folder), "a 3"])
    assert named in line and str(folder / "model_index.json") in line


# ----------------------------------------------------------------------------------- corrupt or missing files


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, named",
    [
        (
            lambda f: truncate(f / "unet" / "diffusion_pytorch_model.safetensors"),
            "unet/diffusion_pytorch_model",
        ),
        (
            lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").write_text("garbage"),
            "vae/diffusion",
        ),
        (lambda f: truncate(f / "text_encoder" / "model.safetensors"), "text_encoder/model.safetensors"),
        (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(), "unet/ has no weights"),
        (lambda f: (f / "tokenizer" / "tokenizer.json").write_text("{bad"), "tokenizer/tokenizer.json"),
        (
            lambda f: (f / "scheduler" / "scheduler_config.json").write_text("{bad"),
            "scheduler/scheduler_config",
        ),
        (lambda f: shutil.rmtree(f / "unet"), "component(s) unet"),
    ],
    ids=[
        "truncated-unet",
        "garbage-vae",
        "truncated-text-encoder",
        "no-weights",
        "tokenizer",
        "scheduler",
        "no-unet",
    ],
)
def test_corrupt_or_missing_file_names_it_and_says_to_save_or_download_again(
    capsys, text_to_image_folder, tmp_path, damage, named
):
    folder = copy_of(text_to_image_folder, tmp_path)
    damage(folder)
    with pytest.raises(ValueError, match="re-save the pipeline with save_pretrained or download it again"):
        load_pipeline(folder)
    line = user_error(capsys, ["generate", str(folder), "a 3", "-o", str(tmp_path / "grid.png")])
    assert named in line and str(folder) in line
    assert not (tmp_path / "grid.png").exists()


# ------------------------------------------------------------------------------------- pipeline kinds, output


def test_generate_on_a_pipeline_without_prompts_says_what_it_holds_and_what_fits(capsys, gan_folder):
    line = user_error(capsys, ["generate", str(gan_folder), "a 3"])
    assert "holds a GANPipeline, which takes no prompt" in line and f"latentzoo evaluate {gan_folder}" in line


def test_generate_on_a_missing_folder(capsys, tmp_path):
    line = user_error(capsys, ["generate", str(tmp_path / "nowhere"), "a 3"])
    assert f"{tmp_path / 'nowhere'} does not exist" in line


def test_generate_creates_the_folder_of_its_output(capsys, text_to_image_folder, tmp_path):
    output = tmp_path / "new" / "folder" / "grid.png"
    main(["generate", str(text_to_image_folder), "a 3", "-n", "2", "--steps", "1", "-o", str(output)])
    assert output.is_file() and f"to {output}" in capsys.readouterr().out


def test_generate_into_a_file_as_folder_is_one_line(capsys, text_to_image_folder, tmp_path):
    (tmp_path / "a-file").write_text("")
    line = user_error(
        capsys, ["generate", str(text_to_image_folder), "a 3", "-o", str(tmp_path / "a-file" / "g.png")]
    )
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in line


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "argv, argument",
    [
        (["generate", "M", "p", "-n", "0"], "-n/--num-images"),
        (["generate", "M", "p", "--steps", "0"], "--steps"),
        (["generate", "M", "p", "--guidance-scale", "nan"], "--guidance-scale"),
        (["generate", "M", "p", "--guidance-scale", "-1"], "--guidance-scale"),
        (["generate", "M", "p", "--guidance-scale", "inf"], "--guidance-scale"),
        (["generate", "M", "p", "--seed", "-1"], "--seed"),
        (["generate", "M", "p", "-o", "grid.xyz"], "-o/--output"),
        (["generate", "M", "p", "-o", "no-extension"], "-o/--output"),
        (["evaluate", "M", "--num-samples", "0"], "--num-samples"),
        (["evaluate", "M", "--domain-steps", "0"], "--domain-steps"),
        (["evaluate", "M", "--per-digit", "-1"], "--per-digit"),
        (["evaluate", "M", "--steps", "-3"], "--steps"),
        (["quickstart", "--steps", "0"], "--steps"),
        (["quickstart", "--held-out-per-digit", "-1"], "--held-out-per-digit"),
        (["quickstart", "--guidance-scale", "nan"], "--guidance-scale"),
        (["projector", "M", "--num-images", "0"], "--num-images"),
        (["forward-process", "--num-images", "0"], "--num-images"),
        (["forward-process", "--num-train-timesteps", "0"], "--num-train-timesteps"),
        (["forward-process", "--timesteps", "0", "-5"], "--timesteps"),
        (["forward-process", "--seed", "-1"], "--seed"),
        (["generate", "M", "p", "-n", "two"], "-n/--num-images"),
    ],
)
def test_numbers_out_of_range_are_refused_by_the_parser(capsys, monkeypatch, argv, argument):
    def command(args):
        raise AssertionError("the parser let it through")  # no command may start (quickstart would train)

    for name in ("_quickstart", "_generate", "_evaluate", "_projector", "_forward_process"):
        monkeypatch.setattr(f"latentzoo.training.cli.{name}", command)
    assert f"argument {argument}:" in parser_error(capsys, argv)


def test_zero_still_skips_the_judge_protocol_of_quickstart():
    from latentzoo.training.cli import build_parser

    assert build_parser().parse_args(["quickstart", "--per-digit", "0", "--seed", "0"]).per_digit == 0


# ------------------------------------------------------------------------------------------------- train


@pytest.mark.parametrize(
    "dataset, named",
    [
        ("nosuch", "Unknown dataset 'nosuch'"),
        ("imagefolder:{tmp}/no-folder", "does not exist"),
        ("hub:latentzoo-tests/never-cached", "not in the local cache"),
    ],
    ids=["unknown", "missing-folder", "uncached-hub"],
)
def test_train_on_data_that_is_not_there(capsys, tmp_path, monkeypatch, dataset, named):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    dataset = dataset.format(tmp=tmp_path)
    line = user_error(capsys, ["train", "gan-mnist", f"dataset={dataset}", f"output_dir={tmp_path / 'run'}"])
    assert named in line


# -------------------------------------------------------------------------------------------------- push


@pytest.fixture
def run_folder(gan_folder, tmp_path, monkeypatch):
    """A GAN folder with a training_config.yaml (`push` writes its card), and a fake token in HF_TOKEN."""
    folder = copy_of(gan_folder, tmp_path)
    (folder / "training_config.yaml").write_text("task: gan\ndataset: digits\n")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return folder


def assert_no_token(capsys_output: str, folder) -> None:
    assert FAKE_TOKEN not in capsys_output
    assert not any(FAKE_TOKEN.encode() in file.read_bytes() for file in folder.rglob("*") if file.is_file())


def test_push_offline_says_so_and_never_shows_the_token(capsys, run_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = {path: path.read_bytes() for path in run_folder.rglob("*") if path.is_file()}
    line = user_error(capsys, ["push", str(run_folder), "someone/tiny-gan"])
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in line and "unset HF_HUB_OFFLINE" in line
    assert_no_token(line, run_folder)
    # The card for the Hub is rendered in memory: no local file changes, before or after a failed upload.
    assert {path: path.read_bytes() for path in run_folder.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    "raised, expected",
    [
        (
            lambda: errors.HTTPError("[Errno -2] Name or service not known"),
            "cannot reach the Hugging Face Hub",
        ),
        (
            lambda: errors.HfHubHTTPError(
                f"401 Client Error: Unauthorized (token {FAKE_TOKEN})",
                response=SimpleNamespace(status_code=401, headers={}, request=None),
            ),
            "hf auth login",
        ),
        (lambda: errors.LocalTokenNotFoundError("no token"), "not logged in to the Hugging Face Hub"),
    ],
    ids=["no-network", "unauthorized", "no-login"],
)
def test_push_without_network_or_login_says_what_failed_and_the_fix(
    capsys, run_folder, monkeypatch, raised, expected
):
    def create_repo(*args, **kwargs):
        raise raised()

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", create_repo)
    output = user_error(capsys, ["push", str(run_folder), "someone/tiny-gan"])
    assert expected in output
    assert_no_token(output, run_folder)


def test_push_with_no_token_at_all_asks_to_log_in(capsys, run_folder, monkeypatch):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    line = user_error(capsys, ["push", str(run_folder), "someone/tiny-gan"])
    assert "not logged in" in line and "HF_TOKEN" in line


def test_push_of_a_missing_folder(capsys, tmp_path):
    line = user_error(capsys, ["push", str(tmp_path / "nowhere"), "someone/tiny-gan"])
    assert f"{tmp_path / 'nowhere'} does not exist" in line


# ----------------------------------------------------------------------------------------- debug, entry point


def test_debug_shows_the_error_itself(text_to_image_folder, tmp_path):
    folder = copy_of(text_to_image_folder, tmp_path)
    (folder / "model_index.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON") as error_info:
        main(["--debug", "generate", str(folder), "a 3"])
    assert isinstance(error_info.value.__cause__, json.JSONDecodeError)


def test_the_real_entry_point_prints_one_line_and_exits_2(text_to_image_folder, tmp_path):
    folder = copy_of(text_to_image_folder, tmp_path)
    truncate(folder / "unet" / "diffusion_pytorch_model.safetensors")
    result = subprocess.run(
        [sys.executable, "-m", "latentzoo.training.cli", "generate", str(folder), "a 3"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "unet/diffusion_pytorch_model.safetensors is unreadable" in line


TINY_TRAIN = [
    "autoencoder_kl-mnist",
    "dataset=digits",
    "train_batch_size=16",
    "report_to=none",
    "num_validation_images=4",
    "model.block_out_channels=[4, 8]",
    "model.norm_num_groups=4",
    "model.scaling_samples=64",
]


def test_training_that_diverges_is_one_line_and_exit_1(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY_TRAIN, f"output_dir={tmp_path}", "max_train_steps=50", "learning_rate=1e10"])
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "learning_rate" in line
    assert "diverged at step" in line or "not finite" in line


def test_sigterm_to_latentzoo_train_checkpoints_and_exits_143_without_a_traceback(tmp_path):
    from latentzoo.training import list_checkpoints

    command = [sys.executable, "-m", "latentzoo.training.cli", "train", *TINY_TRAIN, f"output_dir={tmp_path}"]
    process = subprocess.Popen(
        [*command, "max_train_steps=100000", "checkpointing_steps=20"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while (
        not list_checkpoints(tmp_path / "checkpoints")
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    step = int(re.search(r"SIGTERM at step (\d+): checkpoint written to", line).group(1))
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == f"checkpoint-{step}"
    assert "resume_from_checkpoint=latest" in line
