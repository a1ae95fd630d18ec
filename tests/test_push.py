"""`latentzoo push` against a fake `HfApi`: exactly what `from_pretrained` needs plus the card, grid, config and
metrics; the card rendered in memory; `--revision` / `--create-pr` passed through; no local file changed, ever; one
line offline or without a token. And the card itself: machine-readable results that `ModelCard.load` reads back."""

import hashlib
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL
from huggingface_hub import ModelCard, constants, errors
from tiny_pipelines import text_to_image_pipeline

from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training.cli import main, upload_files
from latentzoo.training.model_card import render_model_card

FAKE_TOKEN = "hf_latentzooPushFakeToken0123456789abcdXYZ"

MODEL_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
CARD_FILES = ["README.md", "metrics.json", "samples_grid.png", "training_config.yaml"]
LEFTOVERS = [
    "logs/events.out.tfevents.1",
    "checkpoints/checkpoint-4/manifest.json",
    "checkpoints/checkpoint-4/unet/diffusion_pytorch_model.safetensors",
    "stages/text_encoder/config.json",
    "stages/text_encoder/model.safetensors",
    "samples/step-000002.png",
    "train_state.json",
    "vae/logs/x",
    "vae/samples/step-000001.png",
    "vae/train_state.json",
    "vae/training_config.yaml",
    "vae/README.md",
    "vae/checkpoints/checkpoint-1/manifest.json",
    "unet/.tmp-upload",
]
METRICS = {
    "metrics": {"prompt accuracy": 0.75, "judge-FID (100 samples)": 12.5, "images/s (sampling)": 40.0},
    "protocol": "100 samples, 4 DDIMScheduler steps, guidance scale 2.0",
    "sampling": {"sampler": "DDIMScheduler", "num_inference_steps": 4, "guidance_scale": 2.0},
    "dataset": "mnist",
}


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    text_to_image_pipeline(default_guidance_scale=2.0, default_num_inference_steps=4).save_pretrained(folder)
    return folder


@pytest.fixture
def run_folder(saved_pipeline, tmp_path, monkeypatch):
    """A saved text-to-image folder as a training run leaves it: the card's files, and leftovers everywhere."""
    folder = tmp_path / "run"
    shutil.copytree(saved_pipeline, folder)
    (folder / "training_config.yaml").write_text("task: text2img\ndataset: mnist\nmax_train_steps: 4\n")
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# the local card, as training wrote it\n"
    )
    (folder / "samples_grid.png").write_bytes(b"\x89PNG grid")
    for name in LEFTOVERS:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"leftover {name}")
    state = {"global_step": 4, "images_seen": 64, "elapsed_seconds": 90.0}
    (folder / "train_state.json").write_text(json.dumps(state))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return folder


def snapshot(folder) -> dict:
    """Every file under `folder` and the hash of its bytes."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class FakeApi:
    """Records what `push` asks of the Hub; `fail` makes the commit raise."""

    calls: dict = {}
    fail: BaseException | None = None

    def __init__(self, *args, **kwargs):
        FakeApi.calls["init"] = kwargs

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        FakeApi.calls["create_repo"] = {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, branch, exist_ok=False, **kwargs):
        FakeApi.calls["create_branch"] = {"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok}

    def create_commit(self, repo_id, operations, commit_message, revision=None, create_pr=None, **kwargs):
        operations = list(operations)
        FakeApi.calls["create_commit"] = {
            "repo_id": repo_id,
            "revision": revision,
            "create_pr": create_pr,
            "files": sorted(op.path_in_repo for op in operations),
            "contents": {
                op.path_in_repo: op.path_or_fileobj if isinstance(op.path_or_fileobj, bytes) else None
                for op in operations
            },
            "sources": {op.path_in_repo: op.path_or_fileobj for op in operations},
        }
        if FakeApi.fail is not None:
            raise FakeApi.fail
        return SimpleNamespace(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if create_pr else None,
        )


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls, FakeApi.fail = {}, None
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    return FakeApi


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ---------------------------------------------------------------------------------------------- upload list


def test_upload_files_is_what_from_pretrained_reads_plus_the_card_files(run_folder):
    assert upload_files(run_folder) == sorted(MODEL_FILES + CARD_FILES)


def test_the_uploaded_files_alone_load_and_sample_the_same_images(run_folder, tmp_path):
    copy = tmp_path / "uploaded"
    for name in upload_files(run_folder):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_folder / name, copy / name)
    images = [
        load_pipeline(folder)(
            ["a bold 3"], generator=torch.Generator().manual_seed(0), output_type="pt"
        ).images
        for folder in (run_folder, copy)
    ]
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)


def test_include_logs_adds_the_run_record_but_never_checkpoints(run_folder):
    files = upload_files(run_folder, include_logs=True)
    assert set(MODEL_FILES + CARD_FILES) <= set(files)
    assert {
        "logs/events.out.tfevents.1",
        "vae/logs/x",
        "vae/train_state.json",
        "samples/step-000002.png",
    } <= set(files)
    assert "stages/text_encoder/model.safetensors" in files
    assert not any("checkpoints" in name or ".tmp-" in name for name in files), files


def test_a_single_model_folder_uploads_its_config_and_weights(tmp_path):
    folder = tmp_path / "vae"
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(4,), norm_num_groups=4, latent_channels=2).save_pretrained(folder)
    for name in ("train_state.json", "logs/events", "samples/step-1.png", "checkpoints/checkpoint-1/x.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("leftover")
    (folder / "training_config.yaml").write_text("task: autoencoder_kl\ndataset: digits\n")
    assert upload_files(folder) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "training_config.yaml",
    ]


def test_custom_code_the_folder_names_is_uploaded(run_folder):
    (run_folder / "pipeline.py").write_text("# a custom pipeline class")
    (run_folder / "unet" / "my_unet.py").write_text("# a custom model class")
    files = upload_files(run_folder)
    assert "pipeline.py" in files and "unet/my_unet.py" in files


def test_upload_files_of_a_folder_without_a_model(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events").write_text("x")
    for include_logs in (False, True):
        with pytest.raises(ValueError, match="no saved pipeline or model"):
            upload_files(tmp_path, include_logs=include_logs)


# -------------------------------------------------------------------------------------------------- push


def test_push_uploads_exactly_the_list_with_the_rendered_card_and_changes_nothing(
    run_folder, fake_api, capsys
):
    before = snapshot(run_folder)
    main(["push", str(run_folder), "someone/tiny-text2img"])
    commit = fake_api.calls["create_commit"]
    assert commit["files"] == sorted(MODEL_FILES + CARD_FILES)
    assert commit["repo_id"] == "someone/tiny-text2img" and commit["revision"] is None
    assert not commit["create_pr"]
    assert fake_api.calls["create_repo"] == {
        "repo_id": "someone/tiny-text2img",
        "private": None,
        "exist_ok": True,
    }
    assert "create_branch" not in fake_api.calls
    # The card is rendered for the repository, uploaded from memory; the local README.md stays as it was.
    card = commit["contents"]["README.md"].decode()
    assert "# someone/tiny-text2img" in card and 'from_pretrained("someone/tiny-text2img")' in card
    assert "the local card" not in card
    assert all(
        source == str(run_folder / name) for name, source in commit["sources"].items() if name != "README.md"
    )
    assert snapshot(run_folder) == before
    out = capsys.readouterr().out
    assert "https://huggingface.co/someone/tiny-text2img/commit/abc123" in out
    assert FAKE_TOKEN not in out


def test_push_passes_private_revision_and_create_pr_through(run_folder, fake_api, capsys):
    argv = ["push", str(run_folder), "someone/tiny", "--private", "--revision", "v2", "--create-pr"]
    main(argv)
    assert fake_api.calls["create_repo"]["private"] is True
    assert fake_api.calls["create_branch"] == {"repo_id": "someone/tiny", "branch": "v2", "exist_ok": True}
    commit = fake_api.calls["create_commit"]
    assert commit["revision"] == "v2" and commit["create_pr"] is True
    assert "https://huggingface.co/someone/tiny/discussions/1" in capsys.readouterr().out


def test_push_with_include_logs_uploads_the_run_record(run_folder, fake_api):
    main(["push", str(run_folder), "someone/tiny", "--include-logs"])
    files = fake_api.calls["create_commit"]["files"]
    assert "vae/logs/x" in files and "logs/events.out.tfevents.1" in files
    assert not any("checkpoints" in name for name in files)


def test_a_failed_upload_changes_no_local_file(run_folder, fake_api, capsys):
    fake_api.fail = errors.HfHubHTTPError(
        "500 Server Error: Internal Server Error",
        response=SimpleNamespace(status_code=500, headers={}, request=None),
    )
    before = snapshot(run_folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(run_folder), "someone/tiny-text2img"])
    assert exit_info.value.code == 2
    assert "the Hugging Face Hub refused the request" in one_error_line(capsys)
    assert snapshot(run_folder) == before


def test_push_offline_is_one_line_and_changes_nothing(run_folder, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = snapshot(run_folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(run_folder), "someone/tiny-text2img"])
    assert exit_info.value.code != 0
    line = one_error_line(capsys)
    assert "offline mode is on" in line and FAKE_TOKEN not in line
    assert snapshot(run_folder) == before


def test_push_without_a_token_is_one_line(run_folder, monkeypatch, fake_api, capsys):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(run_folder), "someone/tiny-text2img"])
    assert exit_info.value.code == 2
    assert "not logged in" in one_error_line(capsys)
    assert "create_commit" not in fake_api.calls


# ---------------------------------------------------------------------------------------------------- card


def test_card_results_are_machine_readable_and_round_trip(run_folder, tmp_path):
    path = tmp_path / "README.md"
    render_model_card(run_folder, repo_id="someone/tiny-text2img").save(path)
    card = ModelCard.load(path)
    assert card.data.model_name == "someone/tiny-text2img"
    results = {result.metric_name: result for result in card.data.eval_results}
    assert {name: result.metric_value for name, result in results.items()} == METRICS["metrics"]
    result = results["prompt accuracy"]
    assert result.task_type == "text-to-image"
    assert result.dataset_type == "ylecun/mnist" and result.dataset_name == "mnist"
    assert result.metric_type == "prompt-accuracy"
    # The sampler, steps and guidance the numbers were measured with, and the saved defaults.
    assert "Measured with 4 DDIMScheduler steps, guidance scale 2.0." in card.text
    assert "latentzoo's pipeline class samples with\n4 DDIMScheduler steps, guidance scale 2.0" in card.text
    assert "| steps | 4 |" in card.text and "| training time | 1.5 minutes" in card.text


def test_card_without_metrics_has_no_results_and_never_a_local_path_as_dataset(run_folder, tmp_path):
    (run_folder / "metrics.json").unlink()
    card = render_model_card(run_folder)
    assert card.data.eval_results is None and "Not evaluated yet" in card.text

    metrics = {**METRICS, "dataset": None}
    (run_folder / "metrics.json").write_text(json.dumps(metrics))
    (run_folder / "training_config.yaml").write_text(
        "task: text2img\ndataset: imagefolder:my-pictures\nmax_train_steps: 4\n"
    )
    card = render_model_card(run_folder)
    names = {(result.dataset_type, result.dataset_name) for result in card.data.eval_results}
    assert names == {("imagefolder:my-pictures", "imagefolder:my-pictures")}
