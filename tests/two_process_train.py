"""Launched by test_trainer.py under `accelerate launch --num_processes 2`: trains, then each rank reports."""

import hashlib
import json
import sys
from pathlib import Path

from latentzoo.training import Trainer, load_config

output_dir = Path(sys.argv[1])
config = load_config(None, [*sys.argv[2:], f"output_dir={output_dir}"])
trainer = Trainer(config)
trainer.train()

digest = hashlib.sha256()
for module in trainer.modules.values():
    for name, tensor in sorted(trainer.accelerator.unwrap_model(module).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
rank = trainer.accelerator.process_index
report = {
    "world_size": trainer.accelerator.num_processes,
    "digest": digest.hexdigest(),
    "global_step": trainer.state.global_step,
}
(output_dir / f"rank{rank}.json").write_text(json.dumps(report))
