"""Run by test_reliability.py in a subprocess: the tiny Trainer run of test_trainer.py, each step slowed down so
that a signal sent from outside lands in the middle of training. Exits as `latentzoo train` does after a signal."""

import sys
import time

from latentzoo.training import Trainer, load_config
from latentzoo.training.tasks.autoencoder_kl import AutoencoderKLTask
from latentzoo.training.trainer import TrainingInterrupted


class SlowTask(AutoencoderKLTask):
    step_seconds = 0.05  # sleeping changes no number: the weights match an unslowed run bit for bit

    def training_step(self, batch, modules, step):
        time.sleep(self.step_seconds)
        return super().training_step(batch, modules, step)


if __name__ == "__main__":
    try:
        Trainer(load_config(None, sys.argv[1:]), task_class=SlowTask).train()
    except TrainingInterrupted as interrupted:
        print(interrupted, file=sys.stderr)
        sys.exit(128 + interrupted.signal_number)
