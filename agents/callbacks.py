"""SB3 callbacks shared by the training scripts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

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


class TimeLimitCallback(BaseCallback):
    """Stop ``learn`` once ``seconds`` of wall time have passed (for fixed compute budgets)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.start = 0.0

    def _on_training_start(self) -> None:
        self.start = time.monotonic()

    def _on_step(self) -> bool:
        return time.monotonic() - self.start < self.seconds


class LatestCheckpointCallback(BaseCallback):
    """Keep one checkpoint, ``path``, overwritten every ``freq`` steps (atomic rename), with
    the replay buffer beside it as ``<stem>_replay_buffer.pkl`` unless told not to."""

    def __init__(self, path: Path, freq: int, save_replay_buffer: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.freq = freq
        self.save_replay_buffer = save_replay_buffer
        self.last = 0

    def _on_step(self) -> bool:
        if self.model.num_timesteps - self.last >= self.freq:
            self.save(self.model)
        return True

    def save(self, model: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("tmp_" + self.path.name)
        model.save(tmp, exclude=["replay_buffer"])
        os.replace(tmp, self.path)
        if self.save_replay_buffer and hasattr(model, "save_replay_buffer"):
            buffer = self.path.with_name(self.path.stem + "_replay_buffer.pkl")
            tmp_buffer = buffer.with_name("tmp_" + buffer.name)
            model.save_replay_buffer(tmp_buffer)
            os.replace(tmp_buffer, buffer)
        self.last = model.num_timesteps
