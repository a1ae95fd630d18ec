"""Convert the CLIP BPE vocabulary shipped in the ``open-clip-torch`` wheel into Hugging Face's
``vocab.json`` + ``merges.txt``, laid out exactly as ``openai/clip-vit-*``'s tokenizer files.

The source file ``open_clip/bpe_simple_vocab_16e6.txt.gz`` (MIT licensed, from OpenAI CLIP) holds a
header line and then BPE merges, one ``"a b"`` pair per line, in priority order. CLIP uses the first
``49152 - 256 - 2`` merges; its vocabulary is, in order (see ``open_clip.tokenizer.SimpleTokenizer``):

    256 byte symbols  +  256 byte symbols with "</w>"  +  48,894 merged symbols  +  2 special tokens
    = 49,408 tokens, <|startoftext|> = 49406, <|endoftext|> = 49407

Usage (needs only the standard library)::

    pip download --no-deps open-clip-torch -d /tmp/oc
    python scripts/convert_clip_vocab.py /tmp/oc/open_clip_torch-*.whl data/clip_tokenizer
"""

import argparse
import gzip
import json
import zipfile
from pathlib import Path

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894: the merges CLIP uses (open_clip's `merges[1 : 49152 - 256 - 2 + 1]`)
SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    byte_values, code_points = printable[:], printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            code_points.append(256 + n)
            n += 1
    return dict(zip(byte_values, map(chr, code_points), strict=True))


def read_merges(source: Path) -> list[str]:
    """The ``"a b"`` merge lines from a wheel (``.whl``) or a ``bpe_simple_vocab_16e6.txt.gz`` file."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            compressed = wheel.read(VOCAB_MEMBER)
    else:
        compressed = source.read_bytes()
    lines = gzip.decompress(compressed).decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]  # line 0 is a header
    if len(merges) != NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{source} does not hold {NUM_MERGES} BPE merges of two symbols each.")
    return merges


def build_vocab(merges: list[str]) -> dict[str, int]:
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    tokens += ["".join(m.split()) for m in merges] + SPECIAL_TOKENS
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the converted vocabulary")
    return vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("output_dir", type=Path, help="folder for vocab.json and merges.txt")
    args = parser.parse_args()

    merges = read_merges(args.source)
    vocab = build_vocab(merges)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    # Same layout as openai/clip-vit-base-patch32: compact JSON, non-ASCII kept, "#version: 0.2" header.
    (args.output_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    (args.output_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.output_dir}")


if __name__ == "__main__":
    main()
