"""SB3 callbacks shared by the training scripts."""

from __future__ import annotations

import sys

from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm


class TqdmCallback(BaseCallback):
    """A tqdm bar over env steps (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        # Under nohup the bar goes to a log file: refresh rarely to keep it small.
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total,
            initial=self.model.num_timesteps,
            unit="step",
            mininterval=0.5 if interactive else 60.0,
            dynamic_ncols=interactive,
        )

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.model.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        assert self.bar is not None
        self.bar.close()
