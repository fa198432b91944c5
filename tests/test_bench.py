"""``python -m dango_nb.bench`` on the tiny preset: runs end to end and writes the report keys."""

import json

from dango_nb import bench


def test_bench_tiny_writes_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = bench.main(["--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                         "--threads", "1", "--batch-size", "512", "--hidden-channels", "16", "--device", "cpu"])
    saved = json.loads(out.read_text())
    for key in ("device", "pretrain_epoch_s", "train_epoch_s", "triplets_per_s", "peak_rss_gb", "n_genes",
                "n_triplets", "torch_threads", "batch_size", "hidden_channels", "timestamp", "data_load_s",
                "omp_wait_policy", "omp_num_threads", "train_cpu_s_per_epoch", "pretrain_cpu_s_per_epoch",
                "load_avg_1min"):
        assert key in saved, key
    assert saved == json.loads(json.dumps(report, default=str))
    assert saved["synthetic"] is True and saved["preset"] == "tiny" and saved["torch_threads"] == 1
    assert saved["n_train"] == int(0.8 * saved["n_triplets"]) and saved["batch_size"] == 512
    assert saved["train_epoch_s"] > 0 and saved["triplets_per_s"] == saved["n_train"] / saved["train_epoch_s"]
    assert saved["train_cpu_s_per_epoch"] > 0 and saved["pretrain_cpu_s_per_epoch"] > 0
    assert "SYNTHETIC" in capsys.readouterr().out


def test_bench_batch_sizes_and_step_split(tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(["--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                         "--threads", "1", "--batch-sizes", "256,1024", "--hidden-channels", "16", "--device", "cpu",
                         "--split-steps", "3"])
    rows = report["by_batch_size"]
    assert [r["batch_size"] for r in rows] == [256, 1024] and report["batch_size"] == 256
    assert report["train_epoch_s"] == rows[0]["train_epoch_s"]
    for r in rows:
        sp = r["step_split_ms"]
        assert min(sp["forward"], sp["backward"], sp["optimizer"]) > 0 and sp["steps"] >= 1
        assert abs(sp["total"] - sp["forward"] - sp["backward"] - sp["optimizer"]) < 1e-9
        assert r["peak_cuda_gb"] is None and r["triplets_per_s"] == report["n_train"] / r["train_epoch_s"]
    assert json.loads(out.read_text())["by_batch_size"][1]["batch_size"] == 1024
