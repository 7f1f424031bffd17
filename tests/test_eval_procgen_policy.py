"""The Procgen model card: what it reads from a tracked training folder and what it says."""

from __future__ import annotations

import json

import pytest

from adr_rl_app.eval import eval_procgen_policy as card
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.learning_curves import reference_at_marks

MACHINE = {
    "cpu_model": "AMD EPYC",
    "cpu_native_bf16": True,
    "cpu_count": 2,
    "torch_threads": 1,
    "numerics": "bf16-cl",
}


def _summary(mean: float) -> dict[str, float]:
    return {
        "mean_return": mean,
        "ci95_low": mean - 1,
        "ci95_high": mean + 1,
        "std_return": 2.0,
        "mean_length": 300.0,
    }


def _report(openai: dict) -> dict:
    levels = {"start_level": 0, "num_levels": 200}
    return {
        "config": {
            "model": "agents/zoo/ppo_fruitbot.zip",
            "env": "fruitbot",
            "n_episodes": 200,
            "seed": 0,
            "deterministic": False,
            "device": "legacy device text",
            "eval_machine": "AMD EPYC, 1 torch thread",
            "unseen_levels": {"start_level": 10000, "num_levels": 1000000},
            "train_levels": levels,
        },
        "training": {
            "extractor": "IMPALA CNN",
            "command": "python -m adr_rl_app.agents.train_ppo_procgen --env fruitbot",
            "seed": 1,
            "num_timesteps": 2_490_624,
            "wall_time_h": 4.9,
            "machine_text": card.machine_text(MACHINE, "bf16-cl"),
        },
        "results": {
            "ppo_unseen": _summary(21.96),
            "ppo_train": _summary(23.0),
            "random_unseen": _summary(-2.8),
            "random_train": _summary(-1.9),
        },
        "openai_at_steps": openai,
        "resume_command": "adr-rl train ppo-procgen --resume x.zip",
        "notes": "",
    }


def test_tracked_segments_follow_training_json_order(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"segments": ["b", "a"]}))
    evals = [{"num_timesteps": 5, "split": "unseen", "mean_return": 1.0}]
    (tmp_path / "evaluations.json").write_text(json.dumps(evals))
    runs, got = card.tracked_segments(tmp_path)
    assert runs == [str(tmp_path / "segments" / "b"), str(tmp_path / "segments" / "a")]
    assert got == evals


def test_tracked_segments_without_training_json_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="training.json"):
        card.tracked_segments(tmp_path)


def test_machine_text_names_cpu_threads_and_numerics():
    text = card.machine_text(MACHINE, "bf16-cl")
    assert text == "AMD EPYC (native bf16), 2 cores, 1 torch thread, numerics bf16-cl"
    plain = card.machine_text({**MACHINE, "cpu_native_bf16": False, "torch_threads": 2}, None)
    assert "no native bf16" in plain and "2 torch threads" in plain and "bf16-cl" in plain


def test_card_lists_returns_machine_and_openai_at_the_same_step(tmp_path):
    openai = {s: c[0] for s, c in reference_at_marks("fruitbot", [2_490_624]).items()}
    path = tmp_path / "card.md"
    card.write_card(path, _report(openai), "curve.png")
    text = path.read_text()
    assert "| training machine | AMD EPYC (native bf16), 2 cores, 1 torch thread" in text
    assert "| evaluated on | AMD EPYC, 1 torch thread |" in text
    assert "| PPO | unseen (10000+, 1000000) | 21.96 | [20.96, 22.96] |" in text
    test = openai["test"]
    assert (
        f"| OpenAI PPO IMPALA at 2,490,624 steps (their runs, interpolated; mean, range) "
        f"| test | {test['mean']:.2f} | [{test['min']:.2f}, {test['max']:.2f}] |" in text
    )
    assert "![learning curve](curve.png)" in text and "--resume x.zip" in text


def test_card_without_a_training_machine_falls_back_to_the_device_text(tmp_path):
    report = _report({"train": None, "test": None})
    del report["training"]["machine_text"]
    path = tmp_path / "card.md"
    card.write_card(path, report, "")
    text = path.read_text()
    assert "| training machine | legacy device text |" in text
    assert "OpenAI PPO IMPALA at" not in text
