"""The ``adr-rl`` command line: the demo's run folder, every subcommand's help, and the
one-line errors a user gets for the mistakes they can make."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from adr_rl_app import cli
from adr_rl_app.eval.loading import UserError, check_spaces, detect_algorithm, resolve_device

ZOO = Path(__file__).resolve().parents[1] / "agents" / "zoo"
TD3 = str(ZOO / "td3_Pendulum-v1.zip")
PPO = str(ZOO / "ppo_coinrun.zip")


def adr_rl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script when there is one, else the same module."""
    exe = shutil.which("adr-rl")
    command = [exe] if exe else [sys.executable, "-m", "adr_rl_app"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def leaves() -> list[list[str]]:
    out = []
    for name, entry in cli.COMMANDS.items():
        if isinstance(entry, dict):
            out += [[name, sub] for sub in entry]
        else:
            out.append([name])
    return out


@pytest.mark.slow
def test_demo_quick_writes_run_folder(tmp_path: Path) -> None:
    proc = adr_rl("demo", "--quick", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").glob("demo-*")
    results = json.loads((run_dir / "results.json").read_text())
    refine, attack = results["refine"], results["attack"]
    assert [r["method"] for r in refine["rows"]] == ["none", "adr"]
    assert all(len(r["returns"]) == 2 for r in refine["rows"])
    # ADR starts from the actor's action and keeps the better one: Q never drops.
    assert refine["rows"][1]["q_gain_per_step"] >= 0
    assert [(r["method"], r["eps"]) for r in attack["rows"]] == [
        ("none", 0.0),
        ("pgd", 8.0),
        ("adr", 8.0),
    ]
    assert all(r["n_episodes"] == 2 for r in attack["rows"])
    assert all(0.0 <= r["flip_rate"] <= 1.0 for r in attack["rows"][1:])
    assert results["config"]["quick"] is True and results["config"]["seed"] == 0
    for png in ("refine.png", "attack.png"):
        image = matplotlib.image.imread(run_dir / png)
        assert image.ndim == 3 and image.shape[0] > 100
    summary = (run_dir / "summary.md").read_text()
    assert "| method |" in summary and summary.strip() in proc.stdout


def test_unknown_command_and_bare_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
    assert cli.main(["bench", "nope"]) == 2


@pytest.mark.parametrize("path", leaves(), ids=" ".join)
def test_every_subcommand_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"adr-rl {' '.join(path)}" in out
    assert "--" in out  # lists its flags


def _corrupt_weights(tmp_path: Path) -> str:
    """A real SB3 zip whose weights are garbage."""
    bad = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(TD3) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = b"not a torch file" if item.filename == "policy.pth" else src.read(item)
            dst.writestr(item, data)
    return str(bad)


USER_ERRORS = {
    "missing model": (["refine", "{tmp}/missing.zip", "--env", "Pendulum-v1"], "does not exist"),
    "not a zip": (["refine", "{tmp}/junk.zip", "--env", "Pendulum-v1"], "not a Stable-Baselines3"),
    "corrupt weights": (["refine", "{corrupt}", "--env", "Pendulum-v1"], "could not be loaded"),
    "unknown env": (["refine", TD3, "--env", "Pendulm-v1"], "did you mean Pendulum-v1"),
    "missing env": (["refine", TD3], "--env is required"),
    "spaces differ": (
        ["refine", TD3, "--env", "MountainCarContinuous-v0"],
        "observation space Box(3,) float32 does not match",
    ),
    "no critic": (["refine", PPO, "--env", "Pendulum-v1"], "holds a PPO agent"),
    "not procgen": (["attack", TD3, "--game", "coinrun"], "holds a TD3 agent"),
    "negative eps": (["attack", PPO, "--game", "coinrun", "--eps", "-1"], "--eps must be >= 0"),
    "unknown game": (["attack", PPO, "--game", "pong"], "not a Procgen game"),
    "unknown autocast": (
        ["attack", PPO, "--game", "coinrun", "--autocast", "fp8"],
        "--autocast takes none or bf16, got 'fp8'",
    ),
    "unknown method": (["refine", TD3, "--env", "Pendulum-v1", "--method", "sgd"], "unknown"),
    "compile with cem": (
        ["refine", TD3, "--env", "Pendulum-v1", "--method", "cem", "--compile"],
        "--compile supports adr, adr_sync, gd, pgd",
    ),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.zip").write_bytes(b"\x00 not a zip")
    argv, message = USER_ERRORS[case]
    fill = {"tmp": str(tmp_path), "corrupt": _corrupt_weights(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    status = cli.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("adr-rl: error: ") and "\n" not in err
    assert message in err
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["refine", TD3, "--env", "Pendulum-v1", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu0")


def test_console_script_error_is_one_line_on_stderr(tmp_path: Path) -> None:
    """The real process: exit status 2 and one line, no traceback and no gym notice."""
    proc = adr_rl("refine", "missing.zip", "--env", "Pendulum-v1", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "adr-rl: error: model file missing.zip does not exist"
    ]
    assert not (tmp_path / "runs").exists()


def test_detect_algorithm_on_every_kind(tmp_path: Path) -> None:
    """The zip's own metadata names the algorithm; DDPG and A2C are told apart from
    TD3 and PPO, which share their policy classes."""
    from sb3_contrib import TQC
    from stable_baselines3 import A2C, DDPG, DQN, SAC
    from stable_baselines3 import PPO as PPOAlgo
    from stable_baselines3 import TD3 as TD3Algo

    for cls, env_id in [
        (TD3Algo, "Pendulum-v1"),
        (DDPG, "Pendulum-v1"),
        (SAC, "Pendulum-v1"),
        (TQC, "Pendulum-v1"),
        (PPOAlgo, "CartPole-v1"),
        (A2C, "CartPole-v1"),
        (DQN, "CartPole-v1"),
    ]:
        path = tmp_path / f"{cls.__name__}.zip"
        # A fresh dict each time: SB3 adds its own keys to policy_kwargs.
        cls("MlpPolicy", env_id, policy_kwargs={"net_arch": [8]}, device="cpu").save(path)
        assert detect_algorithm(path) == cls.__name__.lower()
    assert detect_algorithm(TD3) == "td3" and detect_algorithm(PPO) == "ppo"


def test_action_bounds_must_match() -> None:
    """Same shape, other bounds: SB3 would rescale every action with the wrong range."""
    from gymnasium import spaces
    from stable_baselines3 import TD3 as TD3Algo

    model = TD3Algo.load(TD3, device="cpu")  # Pendulum: torque in [-2, 2]
    check_spaces(model, model.observation_space, model.action_space, "Pendulum-v1")
    other = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    with pytest.raises(UserError, match=r"action space Box\(1,\) float32 in \[-2, 2\]"):
        check_spaces(model, model.observation_space, other, "env")


def test_shipped_model_paths_resolve_from_any_working_directory(tmp_path, monkeypatch) -> None:
    """`agents/zoo/...` (README, sweep configs) works outside the repository root; a path
    that exists nowhere still fails with the name the user gave."""
    from adr_rl_app.eval.loading import OFF_POLICY, load_model, resolve_model_path

    monkeypatch.chdir(tmp_path)
    path = resolve_model_path("agents/zoo/td3_Pendulum-v1.zip")
    assert path.is_absolute() and path.exists()
    assert type(load_model("agents/zoo/td3_Pendulum-v1.zip", OFF_POLICY)).__name__ == "TD3"
    with pytest.raises(UserError, match=r"model file agents/zoo/nope.zip does not exist"):
        load_model("agents/zoo/nope.zip", OFF_POLICY)
    local = tmp_path / "mine.zip"
    shutil.copy(path, local)
    assert resolve_model_path("mine.zip") == Path("mine.zip")  # the cwd wins when it has it


FLAG_ERRORS = {
    "misspelled flag": (
        ["--radus", "0.3"],
        "Unrecognized options: --radus, 0.3; did you mean --radius?",
    ),
    "bad value": (["--radius", "abc"], "Error parsing --radius: could not convert string to float"),
}


@pytest.mark.parametrize("case", list(FLAG_ERRORS))
def test_flag_errors_are_one_line(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra, message = FLAG_ERRORS[case]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["refine", TD3, "--env", "Pendulum-v1", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adr-rl refine: error: ") and "\n" not in err and message in err
    assert not any(ch in err for ch in "╭│╰")


def test_flag_mistakes_are_reported_before_torch_loads(tmp_path: Path) -> None:
    """The argument checks import neither torch nor SB3, so a mistake costs no import time."""
    code = (
        "import sys\n"
        "from adr_rl_app import cli\n"
        "status = cli.main(['refine', 'x.zip', '--env', 'Pendulum-v1', '--method', 'sgd'])\n"
        "assert status == 2, status\n"
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "adr-rl: error: --method 'sgd' is unknown; choose from "
        "adr, adr_sync, gd, pgd, apgd, fgsm, adam, restart_gd, perturbed_gd, cem, random, milp"
    ]


def test_python_m_adr_rl_points_to_the_moved_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adr_rl", "demo"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "python -m adr_rl_app" in proc.stderr


def test_few_episodes_warn(capsys: pytest.CaptureFixture[str]) -> None:
    from adr_rl_app.eval.stats import MIN_EPISODES, warn_if_few_episodes

    assert warn_if_few_episodes(2) and "2 episodes per setting" in capsys.readouterr().err
    assert not warn_if_few_episodes(MIN_EPISODES) and capsys.readouterr().err == ""
