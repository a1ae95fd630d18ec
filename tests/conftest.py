import os
import sys
from pathlib import Path

# Tests never touch the network; set before huggingface_hub / datasets read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Shared helpers of the tests (tiny_pipelines.py): importable by name under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
