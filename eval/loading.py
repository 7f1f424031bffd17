"""What a user hands the command line, checked: devices, SB3 model files, env ids.

Every mistake a user can make here raises :class:`UserError` with one line that names
the problem; ``adr-rl`` prints that line and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

import difflib
import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from adr_rl_app.eval.errors import UserError

#: Algorithms the command line loads, by the name it reports.
OFF_POLICY = ("td3", "sac", "ddpg", "tqc")
ON_PROCGEN = ("ppo", "a2c", "dqn")
#: The shipped control agents (``agents/zoo/<name>.zip``) the refinement experiments use.
CONTROL_AGENTS = (
    "td3_Pendulum-v1",
    "sac_Pendulum-v1",
    "td3_LunarLanderContinuous-v3",
    "td3_HalfCheetah-v5",
)


def resolve_device(device: str) -> str:
    """``auto`` -> CUDA when present, else CPU; a CUDA device on a machine without one
    is a user error, not torch's assertion deep inside the first ``.to()``."""
    import torch  # here, not at the top: flag checks run before torch loads

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise UserError(
            f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, auto)"
        ) from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"--device {device}: CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    if parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: only cpu, cuda and auto are supported")
    return device


def resolve_device_and_threads(device: str, threads: int) -> str:
    """:func:`resolve_device`, and ``torch.set_num_threads(threads)`` when ``threads``
    is not 0 (0: leave torch's setting), as every command's ``--device``/``--threads``."""
    import torch

    resolved = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    return resolved


def _read_data(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"model file {path} does not exist")
    if path.is_dir():
        raise UserError(f"model file {path} is a directory, expected an SB3 .zip")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"model file {path} is not a Stable-Baselines3 model zip ({exc})") from exc
    if not isinstance(data, dict) or "policy_class" not in data:
        raise UserError(f"model file {path} is not a Stable-Baselines3 model zip (no policy class)")
    return data


def detect_algorithm(path: str | Path) -> str:
    """The SB3 algorithm that saved ``path``, from the zip's metadata (no unpickling).

    The policy class's module names the family; TD3 and DDPG share a policy (DDPG is
    TD3 with ``policy_delay=1`` and the target noise clipped to 0), PPO and A2C too (PPO has a
    clip range)."""
    data = _read_data(Path(path))
    policy = data["policy_class"]
    module = policy.get("__module__", "") if isinstance(policy, dict) else ""
    if module.startswith("sb3_contrib.tqc"):
        return "tqc"
    if module.startswith("stable_baselines3.sac"):
        return "sac"
    if module.startswith("stable_baselines3.td3"):
        ddpg = data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0
        return "ddpg" if ddpg else "td3"
    if module.startswith("stable_baselines3.dqn"):
        return "dqn"
    if module.startswith("stable_baselines3.common.policies"):
        return "ppo" if "clip_range" in data else "a2c"
    raise UserError(f"model file {path}: unsupported algorithm (policy module {module or '?'})")


def _algorithm_class(algo: str) -> Any:
    if algo == "tqc":
        try:
            from sb3_contrib import TQC
        except ImportError as exc:
            raise UserError("TQC models need sb3-contrib: pip install -e '.[control]'") from exc
        return TQC
    import stable_baselines3 as sb3

    return getattr(sb3, algo.upper())


def resolve_model_path(path: str | Path) -> Path:
    """``path`` as given if it exists; a relative path that does not is looked up from the
    project root too (where ``agents/`` lives), so the shipped ``agents/zoo/...`` paths in
    the docs and the sweep configs work from any working directory."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    candidate = _agents_dir().parent / path
    return candidate if candidate.exists() else path


def _agents_dir() -> Path:
    """The installed ``agents`` package (its ``zoo/`` holds the shipped agents)."""
    from adr_rl_app import agents

    return Path(agents.__file__).resolve().parent


def load_model(
    path: str | Path,
    allowed: tuple[str, ...],
    device: str = "cpu",
    purpose: str = "this command supports",
) -> Any:
    """Load an SB3 model of one of the ``allowed`` algorithms, or say why not
    (``purpose`` leads the list of allowed ones in that message)."""
    path = resolve_model_path(path)
    algo = detect_algorithm(path)
    if algo not in allowed:
        raise UserError(
            f"model file {path} holds a {algo.upper()} agent; {purpose} "
            + ", ".join(a.upper() for a in allowed)
        )
    try:
        return _algorithm_class(algo).load(path, device=device)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"model file {path} could not be loaded as {algo.upper()}: {first}"
        ) from exc


def check_env_id(env_id: str) -> None:
    """A registered Gymnasium id, or an error with the closest registered ids."""
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"env id {env_id!r} does not exist in Gymnasium's registry{hint}")


def _describe(space: spaces.Space, bounds: bool = False) -> str:
    if isinstance(space, spaces.Box):
        text = f"Box{tuple(space.shape)} {space.dtype}"
        if bounds:
            text += f" in [{np.min(space.low):g}, {np.max(space.high):g}]"
        return text
    return str(space)


def _same_space(a: spaces.Space, b: spaces.Space, bounds: bool) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, spaces.Box) and isinstance(b, spaces.Box):
        same = a.shape == b.shape and a.dtype == b.dtype
        # Continuous actions are rescaled with the model's bounds: other bounds in the
        # env would make every action silently wrong.
        if same and bounds:
            same = bool(np.allclose(a.low, b.low) and np.allclose(a.high, b.high))
        return same
    if isinstance(a, spaces.Discrete) and isinstance(b, spaces.Discrete):
        return int(a.n) == int(b.n)
    return a == b


def check_spaces(
    model: Any, observation_space: spaces.Space, action_space: spaces.Space, what: str
) -> None:
    """The model was trained on spaces like ``what``'s (shapes, dtypes, action count,
    and the bounds of continuous actions)."""
    for kind, mine, theirs in (
        ("observation", model.observation_space, observation_space),
        ("action", model.action_space, action_space),
    ):
        bounds = kind == "action"
        if not _same_space(mine, theirs, bounds):
            raise UserError(
                f"the model's {kind} space {_describe(mine, bounds)} does not match {what}'s "
                f"{_describe(theirs, bounds)}"
            )


def zoo_path(name: str) -> Path:
    """A shipped agent, ``agents/zoo/<name>.zip``, wherever the command runs from."""
    path = _agents_dir() / "zoo" / f"{name}.zip"
    if not path.exists():
        raise UserError(f"shipped agent {name!r} not found at {path}")
    return path
