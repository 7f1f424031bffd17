"""SB3 callbacks shared by the training scripts."""

from __future__ import annotations

import json
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
    """Keep one checkpoint, ``path`` (model and optimizer), overwritten every ``freq``
    steps, with what resuming needs beside it: the replay buffer as
    ``<stem>_replay_buffer.pkl`` (off-policy, unless told not to), the ``VecNormalize``
    statistics as ``<stem>_vecnormalize.pkl`` (when the env has them) and the step count
    as ``<stem>.json``.

    Checked at the end of each rollout (a PPO rollout, or an off-policy collection), so a
    checkpoint never splits one. Files are written to a temporary name and moved into
    place, so a run killed mid-save keeps its previous checkpoint.
    """

    def __init__(self, path: Path, freq: int, save_replay_buffer: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.freq = freq
        self.save_replay_buffer = save_replay_buffer
        self.last_saved = 0

    def _on_training_start(self) -> None:
        self.last_saved = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.model.num_timesteps - self.last_saved >= self.freq:
            self.save(self.model)

    def _beside(self, suffix: str) -> Path:
        return self.path.with_name(self.path.stem + suffix)

    @staticmethod
    def _atomic(path: Path, write: Any) -> None:
        tmp = path.with_name("tmp_" + path.name)
        write(tmp)
        os.replace(tmp, path)

    def save(self, model: Any) -> None:
        steps = model.num_timesteps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic(self.path, model.save)
        if self.save_replay_buffer and hasattr(model, "save_replay_buffer"):
            self._atomic(self._beside("_replay_buffer.pkl"), model.save_replay_buffer)
        venv = model.get_vec_normalize_env()
        if venv is not None:
            self._atomic(self._beside("_vecnormalize.pkl"), lambda p: venv.save(str(p)))
        self._beside(".json").write_text(json.dumps({"num_timesteps": steps, "time": time.time()}))
        self.last_saved = steps
        print(f"checkpoint: {steps} steps -> {self.path}", flush=True)
