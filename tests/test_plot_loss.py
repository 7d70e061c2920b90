"""``trainer.plot_loss``: LLaMA-Factory's loss plots of a run (training_loss.png, training_eval_loss.png)."""

from __future__ import annotations

import math

import pytest

from ftsweep.loss_plot import smoothed

NO_PRETRAIN = "model.tiny.pretrain_steps=0"


def llama_factory_smooth(scalars: list[float]) -> list[float]:
    """LLaMA-Factory's ``extras/ploting.py`` smooth(), as written there (the reference)."""
    if len(scalars) == 0:
        return []
    last = scalars[0]
    out = []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(scalars))) - 0.5)
    for next_val in scalars:
        smoothed_val = last * weight + (1 - weight) * next_val
        out.append(smoothed_val)
        last = smoothed_val
    return out


@pytest.mark.parametrize("values", [[], [3.0], [4.0, 2.0, 1.0, 1.5], [float(v % 7) for v in range(200)]])
def test_smoothing_is_llama_factorys(values):
    assert smoothed(values) == pytest.approx(llama_factory_smooth(values), rel=1e-12)


def test_a_run_plots_its_losses_only_when_asked(compose, tmp_path):
    from ftsweep.train import run

    common = ("trainer.max_steps=4", "trainer.logging_steps=1", "trainer.eval_steps=2", "logger=none", NO_PRETRAIN)
    run(compose(*common, "trainer.plot_loss=true"), tmp_path / "on")
    for name in ("training_loss.png", "training_eval_loss.png"):
        assert (tmp_path / "on" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    run(compose(*common), tmp_path / "off")
    assert not list((tmp_path / "off").glob("training_*.png"))


def test_a_key_never_logged_is_not_plotted(tmp_path):
    from ftsweep.loss_plot import plot_loss

    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"train_loss": 1.7, "step": 2}]
    assert plot_loss(history, tmp_path) == [tmp_path / "training_loss.png"]


def test_llama_factory_plot_loss_maps_to_it():
    from ftsweep.config.keys import override_for

    assert override_for("plot_loss", True) == "trainer.plot_loss=true"


def test_a_loss_never_logged_is_named_rather_than_left_out_silently(tmp_path, capfd):
    """trainer.logging_steps above the run's steps logs no training loss: training_loss.png is not written, and says so."""
    from ftsweep.loss_plot import plot_loss

    written = plot_loss([{"eval_loss": 4.3, "step": 0}, {"eval_loss": 4.2, "step": 3}, {"train_loss": 4.4, "step": 3}],
                        tmp_path)
    assert [p.name for p in written] == ["training_eval_loss.png"]
    assert capfd.readouterr().err == ("ftsweep: warning: trainer.plot_loss: no training loss was logged (trainer."
                                      "logging_steps is more than the steps trained): training_loss.png not written\n")
    (tmp_path / "b").mkdir()
    plot_loss([{"loss": 4.4, "step": 1}], tmp_path / "b")
    assert capfd.readouterr().err == ("ftsweep: warning: trainer.plot_loss: no eval loss was logged (no validation "
                                      "data): training_eval_loss.png not written\n")
