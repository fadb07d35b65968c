"""The training loop on real digits: determinism, resume, NaN handling, named losses."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.runner import execute_run
from engine.spec import parse_spec
from engine.store import run_dir
from engine.train import NonFiniteLoss, NullReporter, StepTimer
from tests.conftest import tiny_spec_dict


def _run(home: Path, run_id: str, **overrides) -> tuple[dict, NullReporter]:
    reporter = NullReporter()
    spec = parse_spec(tiny_spec_dict(**overrides))
    return execute_run(spec, run_id, home, reporter), reporter


def _final_weights(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]


def test_a_distillation_run_learns_and_logs_named_losses(home: Path) -> None:
    result, reporter = _run(home, "a", epochs=3)
    assert result["test_acc"] > 0.8, result
    keys = {row[3] for row in reporter.rows if row[0] == "main"}
    assert {"loss/total", "loss/task", "loss/path:t-kd", "weight/path:t-kd", "acc/val", "acc/test"} <= keys
    assert {row[0] for row in reporter.rows} == {"main", "teacher:t"}
    assert result["teacher_test_acc"]["t"] > 0.8
    total = reporter.series("loss/total")
    assert total[-1] < total[0]


def test_step_time_is_split_into_every_section(home: Path) -> None:
    """The Live page's "where step time goes": each section logged on every logged step, the backward pass
    (which dominates a real step) apart from the weighting's own work."""
    _, reporter = _run(home, "a", epochs=1)
    main = [row for row in reporter.rows if row[0] == "main"]
    logged_steps = {row[1] for row in main if row[3] == "loss/total"}
    for section in StepTimer.SECTIONS:
        series = [row for row in main if row[3] == f"time/{section}"]
        assert {row[1] for row in series} == logged_steps, section
        assert all(row[4] >= 0 for row in series), section
    assert all(value > 0 for value in reporter.series("time/backward"))
    assert all(value > 0 for value in reporter.series("throughput/samples_per_s"))


def test_step_timer_carries_an_epochs_last_steps_into_the_next_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Section times of steps after an epoch's last log reach the next log; samples/s leaves out the
    time between epochs (evaluation)."""
    clock = iter([0.0,  # window start
                  1.0, 1.5, 2.5,  # epoch 0's step after its last log: start, data 0.5 s, student 1 s
                  10.0,  # begin_epoch, after 7.5 s of evaluation
                  10.0, 10.5, 11.5,  # epoch 1's first step: the same times
                  12.0, 12.0])  # report: the elapsed time, then the next window's start
    monkeypatch.setattr("engine.train.time.perf_counter", lambda: next(clock))
    timer = StepTimer(torch.device("cpu"))
    for epoch in range(2):
        if epoch:
            timer.begin_epoch()
        timer.start(measure=True)
        timer.mark("data")
        timer.mark("student")
        timer.end(64)
    report = timer.report()
    assert report["time/data"] == pytest.approx(500.0) and report["time/student"] == pytest.approx(1000.0)
    assert report["throughput/samples_per_s"] == pytest.approx(64 / 2.0)  # epoch 1's samples over its 2 s


def test_same_seed_is_bit_for_bit_identical(home: Path) -> None:
    first, rep1 = _run(home, "a")
    second, rep2 = _run(home, "b")
    assert rep1.series("loss/total") == rep2.series("loss/total")
    assert first["test_acc"] == second["test_acc"]
    w1, w2 = _final_weights(home, "a"), _final_weights(home, "b")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    _, rep3 = _run(home, "c", seed=1)
    assert rep3.series("loss/total") != rep1.series("loss/total")


def test_resume_continues_exactly(home: Path) -> None:
    _run(home, "straight", epochs=3)
    _run(home, "resumed", epochs=2)
    _, reporter = _run(home, "resumed", epochs=3)  # finds epoch 2's checkpoint and trains epoch 3 only
    assert any("resumed main from the checkpoint of epoch 2" in message for _, message in reporter.events)
    w1, w2 = _final_weights(home, "straight"), _final_weights(home, "resumed")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert sorted(p.name for p in (run_dir(home, "resumed") / "checkpoints").iterdir()) == [
        "epoch_000.pt", "epoch_001.pt", "epoch_002.pt", "final.pt", "last.pt"]


def test_inline_teacher_is_cached_across_runs(home: Path) -> None:
    _run(home, "a")
    _, reporter = _run(home, "b")
    assert any("reused cached" in message for _, message in reporter.events)
    assert not [row for row in reporter.rows if row[0] == "teacher:t"]


def test_exploding_loss_names_step_and_term(home: Path) -> None:
    with pytest.raises(NonFiniteLoss) as info:
        _run(home, "a", optimizer={"name": "sgd", "lr": 1e12})
    assert info.value.phase == "main"
    assert info.value.term in {"task", "path:t-kd", "total"}
    assert f"at step {info.value.step}" in str(info.value)


def test_fixed_weighting_uses_spec_weight(home: Path) -> None:
    data = tiny_spec_dict(weighting={"name": "fixed"})
    data["paths"][0]["weight"] = 0.25
    reporter = NullReporter()
    execute_run(parse_spec(data), "a", home, reporter)
    assert set(reporter.series("weight/path:t-kd")) == {0.25}
    total, task, kd = (reporter.series(k) for k in ("loss/total", "loss/task", "loss/path:t-kd"))
    assert total[0] == pytest.approx(task[0] + 0.25 * kd[0], rel=1e-5)
