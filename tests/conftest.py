import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network; set before huggingface_hub / datasets read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Shared helpers of the tests (tiny_pipelines.py): importable by name under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _no_timing_decides_a_test(monkeypatch):
    """`mixed_precision=auto` resolves to fp32 + SDPA without a probe in tests: which setting a timing race picks
    depends on the machine's load, and a test's outcome must not (one process keeps the first Trainer's precision
    for all later ones). tests/test_speed_probe.py sets the CPU's bf16 support and the clock itself; runs in
    subprocesses name their settings."""
    from latentzoo.training import trainer

    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: False)
