"""Live training curves: TensorBoard event files mirror the history rows (dango_nb.train.tensorboard)."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dango_nb.fileio import atomic_write_table
from dango_nb.train import TensorBoardLogger, TrainConfig, fit
from dango_nb.train.callbacks import Callback
from dango_nb.train.tensorboard import tag_of

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = ROOT / "params" / "tiny" / "train.yaml"
LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


def cfg(**kw):
    # transition_epoch 1: epoch 0 trains the reconstruction only, later epochs the interaction only,
    # so the history holds NaN (loss_rec and its channels from epoch 1 on)
    base = dict(epochs=3, batch_size=256, transition_epoch=1, progress=False, device="cpu",
                model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """Each column's finite values as (epoch, float32 value), NaN left out."""
    out = {}
    for col in history.columns:
        if col == "epoch":
            continue
        points = [(int(e), float(np.float32(v))) for e, v in zip(history["epoch"], history[col]) if not math.isnan(v)]
        if points:
            out[tag_of(col)] = points
    return out


def history_csv(history: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The history as a run folder stores it (history.csv), read back."""
    atomic_write_table(history, folder / "history.csv")
    return pd.read_csv(folder / "history.csv")


class FailAfter(Callback):
    """Raises in ``on_epoch_end`` of ``epoch`` (after the checkpoint of that epoch is written)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, loop, epoch, row):
        if epoch == self.epoch:
            raise RuntimeError(f"failed after epoch {epoch}")
        return False


class Probe(Callback):
    """Reads the event files at each epoch end (after the logger): what a live TensorBoard sees."""

    def __init__(self, log_dir):
        self.log_dir, self.seen = log_dir, []

    def on_epoch_end(self, loop, epoch, row):
        got = scalars(self.log_dir)
        self.seen.append(sorted(tag_of(c) for c, v in row.items()
                                if c != "epoch" and not math.isnan(v) and epoch not in [s for s, _ in got.get(tag_of(c), [])]))
        return False


def test_tags_of_history_columns():
    assert tag_of("loss_total") == "loss/total"
    assert tag_of("loss_rec_coexpression") == "loss/rec_coexpression"
    assert tag_of("loss_int_weighted") == "loss/int_weighted"
    assert tag_of("train_pearson") == "train/pearson" and tag_of("val_mse") == "val/mse"
    assert {tag_of(c) for c in ("lr", "alpha", "w_rec", "w_int")} == {
        "schedule/lr", "schedule/alpha", "schedule/w_rec", "schedule/w_int"}
    assert tag_of("time_s") == "time/epoch_s"


def test_scalars_mirror_the_history_rows_and_skip_nan(study, split, tmp_path):
    train, val = split
    probe = Probe(tmp_path / "tb")
    result = fit(study.cell_graph, train, val, cfg(), LAMBDAS, callbacks=[TensorBoardLogger(tmp_path / "tb"), probe])
    assert probe.seen == [[], [], []]  # every value of an epoch is on disk when the epoch ends
    history = history_csv(result.history, tmp_path)
    assert history["loss_rec"].isna().any() and history["loss_rec"].notna().any()  # both cases are exercised
    got = scalars(tmp_path / "tb")
    want = expected(history)
    assert set(got) == set(want)
    assert {"loss/total", "loss/rec", "loss/int", "loss/rec_weighted", "loss/int_weighted", "loss/rec_coexpression",
            "train/pearson", "train/spearman", "train/mse", "val/pearson", "val/spearman", "val/mse",
            "schedule/lr", "schedule/alpha", "schedule/w_rec", "schedule/w_int", "time/epoch_s"} <= set(got)
    for tag, points in want.items():
        assert got[tag] == points, tag
    assert [s for s, _ in got["loss/rec"]] == [0]  # NaN in epochs 1 and 2: not written
    # without a validation set the val_* columns are all NaN: no val/ tag at all
    fit(study.cell_graph, train, None, cfg(epochs=2), LAMBDAS, callbacks=[TensorBoardLogger(tmp_path / "noval")])
    tags = set(scalars(tmp_path / "noval"))
    assert "loss/total" in tags and not any(t.startswith("val/") for t in tags)


def test_resume_shows_each_epoch_once_with_the_history_values(study, split, tmp_path):
    train, val = split
    ckpt, tb = tmp_path / "ckpt", tmp_path / "tb"
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(ckpt)), LAMBDAS,
        callbacks=[TensorBoardLogger(tb)])
    snapshot = tmp_path / "after_epoch_1"
    shutil.copytree(ckpt, snapshot)
    # the run goes on to log epoch 2, then loses that checkpoint (an older intact one is used):
    # epoch 2 is trained again and must not show twice
    fit(study.cell_graph, train, val, cfg(epochs=3, checkpoint_dir=str(ckpt)), LAMBDAS,
        callbacks=[TensorBoardLogger(tb)])
    shutil.rmtree(ckpt)
    shutil.copytree(snapshot, ckpt)
    resumed = fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(ckpt)), LAMBDAS,
                  callbacks=[TensorBoardLogger(tb)])
    history = history_csv(resumed.history, tmp_path)
    assert list(history["epoch"]) == [0, 1, 2, 3]
    got = scalars(tb)
    want = expected(history)
    assert set(got) == set(want)
    for tag in ("loss/total", "train/pearson", "val/pearson", "schedule/lr", "time/epoch_s"):
        assert [s for s, _ in got[tag]] == [0, 1, 2, 3], tag
    for tag, points in want.items():
        assert got[tag] == points, tag


def test_a_failing_run_closes_the_writer_and_its_resume_has_no_gap(study, split, tmp_path):
    train, val = split
    ckpt, tb = tmp_path / "ckpt", tmp_path / "tb"
    logger = TensorBoardLogger(tb)
    closed = []

    class Writer(logger._writer_class):
        def close(self):
            closed.append(self.log_dir)
            super().close()

    logger._writer_class = Writer
    # fails after epoch 1 is checkpointed, before the logger (run last) has written it
    with pytest.raises(RuntimeError, match="failed after epoch 1"):
        fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(ckpt)), LAMBDAS,
            callbacks=[FailAfter(1), logger])
    assert closed == [str(tb)] and logger.writer is None
    assert [s for s, _ in scalars(tb)["loss/total"]] == [0]  # epoch 0 was flushed when it ended
    resumed = fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(ckpt)), LAMBDAS,
                  callbacks=[TensorBoardLogger(tb)])
    history = history_csv(resumed.history, tmp_path)
    got = scalars(tb)
    assert [s for s, _ in got["loss/total"]] == [0, 1, 2, 3]
    for tag, points in expected(history).items():
        assert got[tag] == points, tag


def test_plain_fit_writes_no_events(study, split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path / "ckpt")), LAMBDAS)
    assert list(tmp_path.rglob("events.out.tfevents.*")) == []


def test_missing_tensorboard_says_how_to_install_it(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_importing_the_training_package_does_not_import_tensorboard():
    code = ("import sys, dango_nb.train as t; t.fit; t.TrainingLoop; t.TensorBoardLogger; "
            "import dango_nb.runs.folder; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard' or 'utils.tensorboard' in m); "
            "print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dango_nb_train_writes_readable_event_files_into_the_run_folder(tmp_path):
    from dango_nb.__main__ import main
    from dango_nb.runs.folder import partial_path

    out = tmp_path / "runs" / "x"
    rc = main(["train", str(TINY_TRAIN), "--out", str(out), "--set", f"data.data_dir={tmp_path / 'data'}",
               "--no-progress"])
    assert rc == 0
    assert not partial_path(out).exists()
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    history = pd.read_csv(out / "history.csv")
    got = scalars(out / "tensorboard")
    want = expected(history)
    assert set(got) == set(want) and "val/pearson" in got and "loss/rec_coexpression" in got
    for tag, points in want.items():
        assert got[tag] == points, tag
    assert "tensorboard --logdir" in (out / "README.md").read_text()
    # `tensorboard --logdir runs/` finds the run under its folder name
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs"))
    mux.Reload()
    assert list(mux.Runs()) == ["x/tensorboard"]
