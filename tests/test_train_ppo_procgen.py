"""Subprocess smoke tests of agents/train_ppo_procgen.py with a tiny budget, and of resuming."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import NatureCNN

from adr_rl.extractors import ImpalaCNN
from adr_rl_app.agents.fast_ppo import RECIPE, FastPPO
from adr_rl_app.agents.train_ppo_procgen import Args, parse_args

# The procgen extra provides the games: module procgen on 3.10-3.12, procgen_gym on 3.13.
pytestmark = pytest.mark.procgen

TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "32",
    "--num-minibatches",
    "2",
    "--threads",
    "1",
    "--checkpoint-freq",
    "64",
    "--no-progress-bar",
]


def _train(tmp_path: Path, *extra: str) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.agents.train_ppo_procgen",
        "--runs-dir",
        str(tmp_path),
        *TINY,
        *extra,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[1]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_line = next(line for line in out.stdout.splitlines() if line.startswith("run: "))
    return Path(run_line.removeprefix("run: "))


def test_parse_args_defaults_follow_cleanrl():
    args = parse_args([])
    assert args == Args()
    assert (args.num_envs, args.num_steps, args.update_epochs, args.num_minibatches) == (
        64,
        256,
        3,
        8,
    )
    assert (args.learning_rate, args.gamma, args.gae_lambda) == (5e-4, 0.999, 0.95)
    assert args.clip_coef == 0.2
    assert (args.ent_coef, args.max_grad_norm, args.threads) == (0.01, 0.5, 1)
    # CleanRL's value weight 0.5 multiplies half the squared error; SB3's, the whole.
    assert args.vf_coef is None and RECIPE.vf_coef == 0.25
    # baselines' and CleanRL's value clipping, not SB3's.
    assert args.value_loss is None and RECIPE.value_loss == "max"
    assert (args.extractor, args.numerics) == ("impala", "auto")
    flipped = parse_args(["--no-anneal-lr", "--env", "fruitbot", "--extractor", "nature"])
    assert not flipped.anneal_lr and flipped.env == "fruitbot" and flipped.extractor == "nature"


@pytest.fixture(scope="module")
def nature_run(tmp_path_factory) -> Path:
    return _train(
        tmp_path_factory.mktemp("runs"),
        "--env",
        "coinrun",
        "--extractor",
        "nature",
        "--total-timesteps",
        "128",
    )


def _resume(run: Path, tmp_path: Path, total_timesteps: int, *extra: str) -> Path:
    """Continue the NatureCNN ``run`` from its checkpoint to ``total_timesteps``."""
    return _train(
        tmp_path,
        "--env",
        "coinrun",
        "--extractor",
        "nature",
        "--total-timesteps",
        str(total_timesteps),
        *extra,
        "--resume",
        str(run / "checkpoints" / "latest.zip"),
    )


def _check_run(run: Path, extractor_cls: type) -> None:
    name = run.name.split("__")
    assert name[:3] == ["coinrun", "ppo_procgen", "1"] and name[3].isdigit()
    for f in [
        "progress.csv",
        "monitor.csv",
        "args.json",
        "command.txt",
        "summary.json",
        "machine.json",
        "checkpoints/latest.zip",
        "checkpoints/latest_vecnormalize.pkl",
    ]:
        assert (run / f).exists(), f
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard events"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_timesteps"] == 128
    assert summary["numerics"] in ("fp32-cl", "bf16-cl") and summary["machine"]["cpu_model"]
    model = PPO.load(run / "checkpoints" / "latest.zip", device="cpu")
    assert model.num_timesteps == 128 and model.n_envs == 2 and model.n_epochs == 3
    assert isinstance(model.policy.features_extractor, extractor_cls)


def test_smoke_train_nature(nature_run):
    _check_run(nature_run, NatureCNN)


def test_smoke_train_impala(tmp_path):
    run = _train(tmp_path, "--env", "coinrun", "--extractor", "impala", "--total-timesteps", "128")
    _check_run(run, ImpalaCNN)


def test_smoke_resume_continues_counting(nature_run, tmp_path):
    resumed = _resume(nature_run, tmp_path, 256)
    assert json.loads((resumed / "summary.json").read_text())["num_timesteps"] == 256
    # A new run gets the recipe's value weight, a resumed one keeps its checkpoint's.
    assert PPO.load(nature_run / "checkpoints" / "latest.zip").vf_coef == 0.25
    assert json.loads((resumed / "args.json").read_text())["vf_coef"] == 0.25
    assert FastPPO.load(nature_run / "checkpoints" / "latest.zip").value_loss == "max"
    assert json.loads((resumed / "args.json").read_text())["value_loss"] == "max"
    progress = (resumed / "progress.csv").read_text().splitlines()
    header = progress[0].split(",")
    steps = [
        int(float(row.split(",")[header.index("time/total_timesteps")])) for row in progress[1:]
    ]
    assert steps == [192, 256]


def test_sigterm_saves_a_final_checkpoint(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.agents.train_ppo_procgen",
        "--runs-dir",
        str(tmp_path),
        *TINY,
        "--total-timesteps",
        "1000000",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    run = None
    for line in proc.stdout:
        if line.startswith("run: "):
            run = Path(line.strip().removeprefix("run: "))
        if line.startswith("checkpoint: "):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 0 and run is not None
    steps = json.loads((run / "summary.json").read_text())["num_timesteps"]
    assert 64 <= steps < 1_000_000
    assert PPO.load(run / "checkpoints" / "latest.zip").num_timesteps == steps


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from adr_rl_app.agents import train_ppo_procgen

    monkeypatch.setattr(train_ppo_procgen.time, "time", lambda: 1795956956.4)
    dirs = [
        train_ppo_procgen.make_run_dir(tmp_path / "runs", "fruitbot__ppo_procgen__1")
        for _ in range(3)
    ]
    assert [d.name for d in dirs] == [
        "fruitbot__ppo_procgen__1__1795956956",
        "fruitbot__ppo_procgen__1__1795956956-2",
        "fruitbot__ppo_procgen__1__1795956956-3",
    ]
    assert all(d.is_dir() and not any(d.iterdir()) for d in dirs)


def test_resume_can_change_the_value_weight_and_loss(nature_run, tmp_path):
    resumed = _resume(nature_run, tmp_path, 256, "--vf-coef", "0.1", "--value-loss", "clipped")
    model = FastPPO.load(resumed / "checkpoints" / "latest.zip")
    assert (model.vf_coef, model.value_loss) == (0.1, "clipped")
    args = json.loads((resumed / "args.json").read_text())
    assert (args["vf_coef"], args["value_loss"]) == (0.1, "clipped")
    header = (resumed / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/value_clip_fraction", "train/value_away_fraction"} <= set(header)
