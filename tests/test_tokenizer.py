"""The bundled CLIP tokenizer: OpenAI CLIP's ids, offline."""

import gzip
import json
import os
import zipfile
from pathlib import Path

import pytest

from latentzoo.data.tokenizer import CLIP_TOKENIZER_DIR, load_clip_tokenizer

START, END = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def test_prompt_gives_openai_clip_ids(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [START, 320, 1125, 539, 320, 2368, END]


def test_vocabulary_size_and_special_tokens(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == START
    assert tokenizer.eos_token_id == END
    assert tokenizer.pad_token_id == END  # Stable Diffusion pads with <|endoftext|>
    assert tokenizer.model_max_length == 77


def test_padding_to_max_length_uses_end_of_text(tokenizer):
    ids = tokenizer("a bold seven, slanted right", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    length = len(tokenizer("a bold seven, slanted right").input_ids)
    assert ids[0] == START and ids[length - 1] == END
    assert ids[length:] == [END] * (77 - length)


def test_long_prompt_is_truncated_with_end_token_kept(tokenizer):
    ids = tokenizer(" ".join(["seven"] * 200), truncation=True, max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == START and ids[-1] == END


def test_model_max_length_is_configurable():
    tokenizer = load_clip_tokenizer(model_max_length=16)
    ids = tokenizer(" ".join(["digit"] * 40), truncation=True, padding="max_length").input_ids
    assert len(ids) == 16 and ids[-1] == END
    with pytest.raises(ValueError, match="model_max_length"):
        load_clip_tokenizer(model_max_length=1)


def test_decode_roundtrip(tokenizer):
    ids = tokenizer("a thin three, upright").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a thin three , upright"


def test_bundled_files_match_conversion_of_open_clip_vocab(tmp_path):
    """Re-run the converter when the open-clip-torch wheel is at hand (it is not needed otherwise)."""
    # .ci/run downloads it (pip download --no-deps open-clip-torch) and points OPEN_CLIP_WHEEL_DIR at it.
    wheels = sorted(Path(os.environ.get("OPEN_CLIP_WHEEL_DIR", "/tmp/oc")).glob("open_clip_torch-*.whl"))
    if not wheels:
        pytest.skip("open-clip-torch wheel not downloaded")
    from importlib import util

    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_clip_vocab.py"
    spec = util.spec_from_file_location("convert_clip_vocab", script)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    merges = module.read_merges(wheels[-1])
    vocab = module.build_vocab(merges)
    assert vocab == json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    bundled_merges = (CLIP_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert bundled_merges[0] == "#version: 0.2" and bundled_merges[1:] == merges
    # Sanity check on the source too: the same merges as open_clip's SimpleTokenizer reads.
    with zipfile.ZipFile(wheels[-1]) as wheel:
        lines = gzip.decompress(wheel.read(module.VOCAB_MEMBER)).decode("utf-8").split("\n")
    assert lines[1 : 49152 - 256 - 2 + 1] == merges
