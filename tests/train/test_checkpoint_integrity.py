"""Checkpoint integrity: checksums with fall-back to the newest intact checkpoint, file names from
checkpoints and indexes confined to the run directory, stale temporary files removed."""

import hashlib
import json
import os
import warnings

import pandas as pd
import pytest
import torch

from dango_nb.train import TrainConfig, fit, list_checkpoints, load_checkpoint

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


def cfg(**kw):
    base = dict(epochs=3, batch_size=256, schedule="InteractionOnly", progress=False, device="cpu",
                model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


def numbers(h: pd.DataFrame) -> pd.DataFrame:
    return h.drop(columns=["time_s"])


def flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite(path, obj):
    """Replace a checkpoint's contents, keeping its checksum file (if any) in step, as an attacker
    who can write the directory would."""
    torch.save(obj, path)
    side = path.with_name(path.name + ".sha256")
    if side.is_file():
        side.write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")


@pytest.fixture
def victim(tmp_path):
    f = tmp_path / "victim" / "file"
    f.parent.mkdir()
    f.write_text("precious\n")
    return f


# ------------------------------------------------------------------------------------- checksums
def test_every_checkpoint_has_a_sha256_sidecar(study, split, tmp_path):
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=2, keep_top_k=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    files = [tmp_path / "last.pt", tmp_path / "last.prev.pt", *list_checkpoints(tmp_path)["path"]]
    assert len(files) == 4
    for f in files:
        assert f.with_name(f.name + ".sha256").read_text() == hashlib.sha256(f.read_bytes()).hexdigest() + "\n"


def test_flipped_byte_in_last_falls_back_to_previous_and_resume_is_exact(study, split, tmp_path):
    train, val = split
    straight = fit(study.cell_graph, train, val, cfg(epochs=4), LAMBDAS)
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    last, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    flip_byte(last)
    with pytest.warns(UserWarning, match=r"last\.pt: damaged: its SHA-256 is .*; using .*last\.prev\.pt, the newest "
                                         r"intact checkpoint, instead") as rec:
        resumed = fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(tmp_path)), LAMBDAS)
    assert str(last) in str(rec[0].message) and str(prev) in str(rec[0].message)
    # epoch 1 is run again from the state after epoch 0: the numbers equal an uninterrupted run
    pd.testing.assert_frame_equal(numbers(resumed.history), numbers(straight.history), check_exact=True)
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k
    assert (tmp_path / "last.pt.damaged").is_file()  # kept aside for inspection, not loaded
    assert torch.load(last, weights_only=True)["state"]["epoch"] == 4


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(study, split, tmp_path):
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    for name in ("last.pt", "last.prev.pt"):
        flip_byte(tmp_path / name)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()}
    with pytest.raises(ValueError, match=r"no intact checkpoint: .*last\.pt: damaged.*last\.prev\.pt: damaged.*"
                                         r"cannot resume"):
        fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(tmp_path)), LAMBDAS)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == before  # nothing overwritten


def test_damaged_top_k_file_is_refused_by_load_checkpoint(study, split, tmp_path):
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=2, keep_top_k=1, checkpoint_dir=str(tmp_path)), LAMBDAS)
    best = list_checkpoints(tmp_path)["path"].iloc[0]
    load_checkpoint(best)
    flip_byte(best)
    with pytest.raises(ValueError, match=rf"{best.name}: damaged: its SHA-256 is [0-9a-f]{{64}}, "
                                         rf"{best.name}\.sha256 records [0-9a-f]{{64}}"):
        load_checkpoint(best)


def test_file_without_checksum_loads_with_a_warning(study, split, tmp_path):
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=1, keep_top_k=1, checkpoint_dir=str(tmp_path)), LAMBDAS)
    best = list_checkpoints(tmp_path)["path"].iloc[0]
    best.with_name(best.name + ".sha256").unlink()
    with pytest.warns(UserWarning, match=r"no checksum file epoch_0000\.pt\.sha256; loading it unverified"):
        load_checkpoint(best)


# ------------------------------------------------------------------------- confined file names
def test_top_k_index_entry_outside_the_folder_is_refused(study, split, tmp_path, victim):
    train, val = split
    run = tmp_path / "run"
    fit(study.cell_graph, train, val, cfg(epochs=1, keep_top_k=1, checkpoint_dir=str(run)), LAMBDAS)
    for entry, why in [("../victim/file", "contains '..'"), (str(victim), "is an absolute path"),
                       ("top/../../victim/file", "contains '..'"), ("last.pt", "is not in the 'top' folder")]:
        (run / "top_k.json").write_text(json.dumps(
            [{"file": entry, "epoch": 0, "metric": "val_pearson", "value": 0.5}]))
        with pytest.raises(ValueError, match=rf"top_k\.json: entry '{entry}' {why}"):
            list_checkpoints(run)
    assert victim.read_text() == "precious\n"


def test_top_k_symlink_out_of_the_folder_is_refused(study, split, tmp_path, victim):
    train, val = split
    run = tmp_path / "run"
    fit(study.cell_graph, train, val, cfg(epochs=1, keep_top_k=1, checkpoint_dir=str(run)), LAMBDAS)
    link = run / "top" / "epoch_0000.pt"
    link.unlink()
    os.symlink(victim, link)
    with pytest.raises(ValueError, match=r"entry 'top/epoch_0000\.pt' resolves to .*victim/file "
                                         r"\(a symbolic link out of the folder\)"):
        list_checkpoints(run)


def test_last_checkpoint_entry_outside_the_folder_neither_deletes_nor_resumes(study, split, tmp_path, victim):
    train, val = split
    run = tmp_path / "run"
    config = cfg(epochs=1, keep_top_k=1, checkpoint_dir=str(run))
    fit(study.cell_graph, train, val, config, LAMBDAS)
    last = run / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    # ranked last, so the next eligible epoch would evict (delete) it
    ckpt["state"]["top"] = [{"file": "../victim/file", "epoch": 0, "metric": "val_pearson", "value": -1e9}]
    rewrite(last, ckpt)
    with pytest.raises(ValueError, match=r"last\.pt: entry '\.\./victim/file' contains '\.\.'"):
        fit(study.cell_graph, train, val, config.replace(epochs=3), LAMBDAS)
    assert victim.read_text() == "precious\n"


# ----------------------------------------------------------------------------- temporary files
def test_stale_temp_files_are_removed_on_the_next_run(study, split, tmp_path):
    train, val = split
    (tmp_path / "top").mkdir()
    stale = [tmp_path / ".last.pt.k2j3h4g5.tmp.pt", tmp_path / ".last.pt.sha256.a1b2c3d4.tmp",
             tmp_path / ".top_k.json.zz9x8y7w.tmp", tmp_path / "top" / ".epoch_0003.pt.q1w2e3r4.tmp.pt"]
    unrelated = [tmp_path / ".notes.txt.abc.tmp", tmp_path / "my.tmp.pt", tmp_path / "top" / "keep.txt"]
    for f in stale + unrelated:
        f.write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh run: nothing to warn about
        fit(study.cell_graph, train, val, cfg(epochs=1, checkpoint_dir=str(tmp_path)), LAMBDAS)
    assert not any(f.exists() for f in stale)
    assert all(f.read_bytes() == b"partial" for f in unrelated)


def test_best_pt_holds_the_reported_best_epoch_also_after_a_resume(study, split, tmp_path):
    from dango_nb.train.checkpoint import save_checkpoint

    train, val = split
    config = cfg(epochs=3, keep_top_k=0, checkpoint_dir=str(tmp_path))
    result = fit(study.cell_graph, train, val, config, LAMBDAS)
    best = tmp_path / "best.pt"
    assert not (tmp_path / "top").exists()  # keep_top_k 0 keeps no top-k files, but the reported model

    def holds_best_model():
        model, _ = load_checkpoint(best)
        assert torch.load(best, weights_only=True)["epoch"] == result.best_epoch
        for (k, p), q in zip(result.best_model().state_dict().items(), model.state_dict().values()):
            assert torch.equal(p, q), k

    holds_best_model()
    # a best.pt of an epoch the resumed run does not go on from (an interrupted epoch wrote it) is replaced
    saved = torch.load(best, weights_only=True)
    save_checkpoint({**saved, "epoch": result.best_epoch + 1,
                     "model": {k: torch.zeros_like(v) for k, v in saved["model"].items()}}, best)
    fit(study.cell_graph, train, val, config, LAMBDAS)
    holds_best_model()
