"""Batch-norm collapse: a short run's moving statistics do not fit its weights (one class in inference mode
while training mode is right). The regression: with precise batch norm (the default) the saved model's
inference-mode scores on its train windows are its training-mode scores; without it they are not. And the
one-line warning, and the momentum chosen from the run's steps."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from training.bn_check import auto_bn_momentum, collapse_warning  # noqa: E402


def _short_run(tiny_data, tmp_path, **kw):
    """4 optimiser steps (12 train clips in one batch of 16) at Keras's default momentum 0.99."""
    from edge.features import FeatureConfig
    from training.config import TrainConfig
    from training.featureset import model_inputs
    from training.train import TrainSpec, build_featureset, train

    cfg = TrainConfig(network="mobilenet", profile="edge", width=0.25, epochs=4, batch_size=16, learning_rate=3e-3,
                      patience=0, bn_momentum=0.99, dropout=0.0, seed=1, augment=False, jit_compile=False, **kw)
    out = tmp_path / ("precise" if cfg.precise_bn else "plain")
    report = train(TrainSpec(data=tiny_data, out=out, config=cfg, cache_dir=tmp_path / "cache", verbose=0))
    fs, _ = build_featureset(tiny_data, "edge", cache_dir=tmp_path / "cache", progress=False)
    fs.config = FeatureConfig.from_json((out / "feature_config.json").read_text())
    x = model_inputs(fs, fs.indices("train"))
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    inference = np.asarray(model(x, training=False))
    training_mode = np.asarray(model(x, training=True))     # one batch: the statistics of these 12 windows
    return report, inference, training_mode


def test_precise_batch_norm_makes_inference_mode_agree_with_training_mode(tiny_data, tmp_path):
    report, inference, training_mode = _short_run(tiny_data, tmp_path)
    assert np.allclose(inference, training_mode, atol=1e-3), np.abs(inference - training_mode).max()
    bn = report["training"]["batch_norm"]
    assert bn["precise_bn"] and len(bn["drift_per_epoch"]) == 4 and bn["momentum"] == pytest.approx(0.99)
    assert bn["drift_per_epoch"][0] > 0.05          # the moving averages were far off: there was something to repair


@pytest.mark.slow
def test_without_it_the_short_run_collapses(tiny_data, tmp_path):
    _, inference, training_mode = _short_run(tiny_data, tmp_path, precise_bn=False)
    assert np.abs(inference - training_mode).max() > 0.1


def test_the_collapse_line():
    line = collapse_warning(0.10, 0.57, 10)
    assert line is not None and "\n" not in line and "0.100" in line and "0.570" in line
    assert collapse_warning(0.60, 0.70, 10) is None        # healthy
    assert collapse_warning(0.10, 0.15, 10) is None        # did not learn at all: another problem
    assert collapse_warning(0.50, 0.95, 2) is not None     # two classes: chance is 0.5


def test_momentum_from_the_run_s_steps():
    assert auto_bn_momentum(120) == 0.9                     # 20 epochs of 6 steps: the floor
    assert auto_bn_momentum(100_000) == 0.99                # long runs keep Keras's default
    m = auto_bn_momentum(1200)
    assert 0.9 < m < 0.99 and m ** 120 <= 0.0101            # forgets its start within a tenth of the run


def test_batch_size_from_the_train_split():
    from training.config import TrainConfig

    assert TrainConfig().resolved_batch_size(322) == 16         # ESC-10's train split: ~20 steps an epoch
    assert TrainConfig().resolved_batch_size(3965) == 64        # the keyword data keeps its batch
    assert TrainConfig(batch_size=8).resolved_batch_size(3965) == 8
