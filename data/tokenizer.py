"""The CLIP tokenizer, built offline from the BPE vocabulary bundled in ``data/clip_tokenizer/``.

The vocabulary is OpenAI CLIP's (49,408 tokens, MIT licensed; converted from the copy shipped in
``open-clip-torch`` by ``scripts/convert_clip_vocab.py``), so token ids match ``openai/clip-vit-*``
and a pretrained CLIP text encoder drops in.
"""

from pathlib import Path

from transformers import CLIPTokenizer

CLIP_TOKENIZER_DIR = Path(__file__).resolve().parent / "clip_tokenizer"


def load_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """Load the bundled CLIP tokenizer; no network access.

    Args:
        model_max_length (`int`, *optional*, defaults to 77):
            The context length: prompts are padded (with `<|endoftext|>`, as Stable Diffusion does) and
            truncated to this many tokens, `<|startoftext|>` and `<|endoftext|>` included. 77 is CLIP's.

    Returns:
        `transformers.CLIPTokenizer`: `<|startoftext|>` = 49406, `<|endoftext|>` = 49407 (also the pad token).

    Example:
        >>> tokenizer = load_clip_tokenizer()
        >>> tokenizer("a photo of a cat").input_ids
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    if model_max_length < 2:
        raise ValueError(
            f"`model_max_length` must be at least 2 (start and end tokens), got {model_max_length}."
        )
    return CLIPTokenizer.from_pretrained(
        CLIP_TOKENIZER_DIR, model_max_length=model_max_length, local_files_only=True
    )
