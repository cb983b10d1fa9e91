"""SpectralMonitor: windows, logging cadence, CSV/TensorBoard output, values against float64
references; the plot-history command (figure data, and failures through the console-script
entry point); the Lightning callback when lightning is installed."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import reprdiag
from reprdiag.errors import InputError, UsageError
from reprdiag.monitor import SpectralMonitor, history_metrics, read_history
from reprdiag.report.plots import history_figure
from tests.helpers import run_main

F64 = torch.float64


def numpy_vne(x: np.ndarray) -> float:
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    eta = np.linalg.eigvalsh(z.T @ z / len(z))
    eta = eta[eta > 1e-15]
    return float(-(eta * np.log(eta)).sum())


def numpy_rankme(x: np.ndarray) -> float:
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def batches(n_steps: int, rows: int = 16, d: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.linspace(1.0, 0.05, d)
    return [rng.standard_normal((rows, d)) * scales * (1 + 0.3 * k) for k in range(n_steps)]


# -- values and windows ------------------------------------------------------------------------


def test_design_reference_values_streamed_in_batches(reference_x: np.ndarray) -> None:
    mon = SpectralMonitor(every_n_steps=4, metrics=["vne", "cov_offdiag", "er_entropy"])
    for k in range(4):
        mon.update(torch.from_numpy(reference_x[16 * k:16 * (k + 1)]))
    (row,) = mon.history
    assert row["rows"] == 64 and row["step"] == 4
    assert row["vne"] == pytest.approx(2.656603471446447, rel=1e-12)
    assert row["cov_offdiag"] == pytest.approx(0.18377334262265937, rel=1e-12)
    assert row["er_entropy"] == pytest.approx(-1.8296316874093703, rel=1e-12)


def test_reset_window_covers_the_last_n_steps() -> None:
    data = batches(9)
    mon = SpectralMonitor(every_n_steps=3, metrics=["vne", "rankme"])
    returned = [mon.update(torch.from_numpy(b), step=10 * i) for i, b in enumerate(data)]
    assert [r is not None for r in returned] == [False, False, True] * 3
    assert [r["step"] for r in mon.history] == [20, 50, 80]
    for k, row in enumerate(mon.history):
        window = np.concatenate(data[3 * k:3 * k + 3])
        assert row["rows"] == 48
        assert row["vne"] == pytest.approx(numpy_vne(window), rel=1e-10)
        assert row["rankme"] == pytest.approx(numpy_rankme(window), rel=1e-10)


def test_cumulative_window_covers_every_row() -> None:
    data = batches(6)
    mon = SpectralMonitor(every_n_steps=2, metrics=["vne"], window="cumulative")
    for b in data:
        mon.update(torch.from_numpy(b))
    assert [r["rows"] for r in mon.history] == [32, 64, 96]
    for k, row in enumerate(mon.history):
        assert row["vne"] == pytest.approx(numpy_vne(np.concatenate(data[:2 * k + 2])),
                                           rel=1e-10)


def test_float32_training_embeddings_with_grad() -> None:
    x = torch.from_numpy(np.concatenate(batches(2))).float().requires_grad_()
    mon = SpectralMonitor(every_n_steps=2, metrics=["vne"])
    mon.update(x[:16] * 2.0)
    mon.update(x[16:] * 2.0)
    assert mon.history[0]["vne"] == pytest.approx(numpy_vne(x.detach().double().numpy()),
                                                  rel=1e-5)


def test_default_metrics_skip_the_sample_based_ones() -> None:
    mon = SpectralMonitor(every_n_steps=1)
    names = [m.name for m in mon.infos]
    assert "vne" in names and "rankme" in names
    assert "er_entropy" not in names and "partition_isotropy" not in names


def test_close_flushes_the_unfinished_window() -> None:
    data = batches(5)
    mon = SpectralMonitor(every_n_steps=2, metrics=["vne"])
    for b in data:
        mon.update(torch.from_numpy(b))
    assert len(mon.history) == 2
    mon.close()
    assert len(mon.history) == 3 and mon.history[-1]["rows"] == 16
    assert mon.history[-1]["vne"] == pytest.approx(numpy_vne(data[-1]), rel=1e-10)
    assert mon.log() is None  # nothing new since


def test_nonfinite_rows_dropped_and_counted() -> None:
    b = batches(1)[0]
    bad = b.copy()
    bad[3, 2] = np.nan
    mon = SpectralMonitor(every_n_steps=1, metrics=["vne"])
    row = mon.update(torch.from_numpy(bad))
    assert row["rows"] == 15 and row["rows_dropped"] == 1
    assert row["vne"] == pytest.approx(numpy_vne(np.delete(b, 3, axis=0)), rel=1e-10)
    strict = SpectralMonitor(every_n_steps=1, metrics=["vne"], nan="error")
    with pytest.raises(InputError, match="NaN"):
        strict.update(torch.from_numpy(bad))


def test_window_of_one_row_logs_nan() -> None:
    mon = SpectralMonitor(every_n_steps=1, metrics=["vne"])
    row = mon.update(torch.ones(1, 4))
    assert row["rows"] == 1 and math.isnan(row["vne"])


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="every_n_steps"):
        SpectralMonitor(every_n_steps=0)
    with pytest.raises(UsageError, match="unknown metric"):
        SpectralMonitor(metrics=["vnee"])
    with pytest.raises(UsageError, match="window"):
        SpectralMonitor(window="sliding")
    with pytest.raises(UsageError, match="kappa"):
        SpectralMonitor(metrics=["er_entropy"], options={"kappa": -1.0})
    mon = SpectralMonitor(every_n_steps=5)
    with pytest.raises(InputError, match="batch, d"):
        mon.update(torch.ones(2, 3, 4))
    mon.update(torch.randn(4, 3))
    with pytest.raises(InputError, match="width changed"):
        mon.update(torch.randn(4, 5))


# -- outputs -----------------------------------------------------------------------------------


def numpy_label_and_pair_metrics(x: np.ndarray, y: np.ndarray, v: np.ndarray
                                  ) -> dict[str, float]:
    """nc1 (Papyan et al. 2020), alignment (Wang & Isola 2020, α = 2) and uniformity (t = 2,
    all pairs) in float64 numpy, from their definitions."""
    mu = x.mean(axis=0)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    within = sum((x[y == c] - means[i]).T @ (x[y == c] - means[i])
                 for i, c in enumerate(classes)) / len(x)
    between = (means - mu).T @ (means - mu) / len(classes)
    lam, vec = np.linalg.eigh(between)
    keep = lam > x.shape[1] * np.finfo(float).eps * lam.max()
    pinv = (vec[:, keep] / lam[keep]) @ vec[:, keep].T
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = v / np.linalg.norm(v, axis=1, keepdims=True)
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)[np.triu_indices(len(z), 1)]
    return {"nc1": float(np.trace(within @ pinv)) / len(classes),
            "alignment": float(((z - w) ** 2).sum(axis=1).mean()),
            "uniformity": float(np.log(np.exp(-2.0 * sq).mean()))}


def test_label_pair_and_sample_metrics_from_update_batches() -> None:
    """Issue 19: labels= and pair= in each update feed the label and paired-view metrics,
    equal to float64 references and to analyze --labels/--pair on the same rows."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    x = rng.standard_normal((300, 6)) + 2.0 * np.eye(4, 6)[y]
    v = x + 0.3 * rng.standard_normal((300, 6))
    names = ["vne", "nc1", "lidar", "alignment", "pair_cka", "uniformity"]
    mon = SpectralMonitor(every_n_steps=3, metrics=names, sample_size=1000)
    for i in range(3):
        rows = slice(100 * i, 100 * (i + 1))
        row = mon.update(torch.from_numpy(x[rows]), labels=torch.from_numpy(y[rows]),
                         pair=torch.from_numpy(v[rows]))
    assert row is not None and row["rows"] == 300
    for name, want in numpy_label_and_pair_metrics(x, y, v).items():
        assert row[name] == pytest.approx(want, rel=1e-9), name
    same = reprdiag.analyze(x, metrics=["vne"], device="cpu")  # moment metrics unchanged
    assert row["vne"] == pytest.approx(same.metrics["vne"], rel=1e-12)


def test_label_and_pair_metrics_need_their_update_arguments() -> None:
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(UsageError, match="'nc1' needs labels="):
        SpectralMonitor(metrics=["nc1"]).update(x)
    with pytest.raises(UsageError, match="'alignment' needs pair="):
        SpectralMonitor(metrics=["alignment"]).update(x, labels=y)
    with pytest.raises(InputError, match=r"labels= has shape \(9,\) for 10"):
        SpectralMonitor(metrics=["nc1"]).update(x, labels=y[:9])
    with pytest.raises(InputError, match="pair= has shape"):
        SpectralMonitor(metrics=["alignment"]).update(x, pair=torch.randn(10))
    row = SpectralMonitor(every_n_steps=1, metrics=["vne"]).update(x, labels=y)  # not needed
    assert row is not None and list(row) == ["step", "rows", "rows_dropped", "vne"]


def test_csv_rewritten_at_each_log(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "history.csv"
    mon = SpectralMonitor(every_n_steps=2, metrics=["vne", "rankme"], csv=path)
    data = batches(4)
    mon.update(torch.from_numpy(data[0]))
    assert not path.exists()
    mon.update(torch.from_numpy(data[1]))
    assert len(pd.read_csv(path)) == 1
    mon.update(torch.from_numpy(data[2]))
    mon.update(torch.from_numpy(data[3]))
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["step", "rows", "rows_dropped", "vne", "rankme"]
    assert frame["step"].tolist() == [2, 4]
    np.testing.assert_allclose(frame["vne"], [r["vne"] for r in mon.history], rtol=1e-15)
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.csv"]  # no temp files


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, global_step: int | None = None) -> None:
        self.calls.append((tag, value, global_step))


def test_scalars_go_to_a_writer() -> None:
    writer = FakeWriter()
    mon = SpectralMonitor(every_n_steps=2, metrics=["vne", "isoscore"], tensorboard=writer,
                          prefix="enc")
    for i, b in enumerate(batches(4)):
        mon.update(torch.from_numpy(b), step=100 + i)
    assert [(t, s) for t, _, s in writer.calls] == [("enc/vne", 101), ("enc/isoscore", 101),
                                                    ("enc/vne", 103), ("enc/isoscore", 103)]
    assert writer.calls[2][1] == mon.history[1]["vne"]


def test_tensorboard_event_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with SpectralMonitor(every_n_steps=1, metrics=["vne"], tensorboard=tmp_path) as mon:
        for b in batches(3):
            mon.update(torch.from_numpy(b))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Scalars("reprdiag/vne")
    assert [s.step for s in scalars] == [1, 2, 3]
    np.testing.assert_allclose([s.value for s in scalars], [r["vne"] for r in mon.history],
                               rtol=1e-6)


# -- plot-history ------------------------------------------------------------------------------


def write_history(tmp_path: Path) -> Path:
    path = tmp_path / "h.csv"
    mon = SpectralMonitor(every_n_steps=1, metrics=["vne", "rankme", "avg_cosine"], csv=path)
    for i, b in enumerate(batches(5)):
        mon.update(torch.from_numpy(b), step=7 * i)
    return path


def test_history_figure_data(tmp_path: Path) -> None:
    frame = read_history(write_history(tmp_path))
    names = history_metrics(frame)
    assert names == ["vne", "rankme", "avg_cosine"]
    fig = history_figure(frame, names)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == names
    for ax, name in zip(axes, names, strict=True):
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_xdata(), [0, 7, 14, 21, 28])
        np.testing.assert_array_equal(line.get_ydata(), frame[name].to_numpy())
    assert history_metrics(frame, ["rankme"]) == ["rankme"]
    with pytest.raises(UsageError, match="not in the history"):
        history_metrics(frame, ["er_entropy"])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_main(list(args))


def test_plot_history_cli(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    out = tmp_path / "plots" / "history.png"
    done = run_cli("plot-history", str(path), "--out", str(out), "--metrics", "vne,rankme")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 metrics, 5 steps" in done.stdout


def test_plot_history_cli_failures(tmp_path: Path) -> None:
    """Two failures through the console-script entry point (exit code, the one stderr
    line)..."""
    good = write_history(tmp_path)
    cases = [
        (["plot-history", str(tmp_path / "missing.csv")], "no such file"),
        (["plot-history", str(good), "--metrics", "er_entropy"], "not in the history"),
    ]
    for args, message in cases:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("reprdiag: error: "), done.stderr
        assert message in lines[0]


def test_plot_history_cli_failures_in_process(tmp_path: Path) -> None:
    """...and the others through typer's CliRunner (the same handler)."""
    from typer.testing import CliRunner

    from reprdiag.cli import app

    good = write_history(tmp_path)
    no_step = tmp_path / "no_step.csv"
    no_step.write_text("a,b\n1,2\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    cases = [
        ([str(no_step)], "no 'step' column"),
        ([str(binary)], "cannot be read as CSV"),
        ([str(good), "--out", str(tmp_path / "h.jpgx")], "plot format"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["plot-history", *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("reprdiag: error: "), result.stderr
        assert message in lines[0]


# -- Lightning ---------------------------------------------------------------------------------


def test_lightning_callback(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from reprdiag.integrations.lightning import SpectralMonitorCallback

    class Recorder(pl.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "recorder"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, *args: object, **kwargs: object) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            if any(k.startswith("reprdiag/") for k in metrics):
                self.rows.append((step, metrics))

    class Model(pl.LightningModule):
        def __init__(self, key: str = "embeddings") -> None:
            super().__init__()
            self.encoder = torch.nn.Linear(6, 4)
            self.key = key

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict:
            z = self.encoder(batch[0])
            return {"loss": (z**2).mean(), self.key: z}

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.TensorDataset(torch.randn(64, 6))
    for how in ({"key": "embeddings"}, {"layer": "encoder"}):
        logger = Recorder()
        callback = SpectralMonitorCallback(every_n_steps=3, metrics=["vne"],
                                           csv=tmp_path / f"{next(iter(how))}.csv", **how)
        trainer = pl.Trainer(max_steps=7, logger=logger, callbacks=[callback],
                             accelerator="cpu", enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path)
        trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=8))
        history = callback.monitor.history
        assert [r["step"] for r in history] == [3, 6, 7]  # the last window is flushed
        assert [r["rows"] for r in history] == [24, 24, 8]
        assert [s for s, _ in logger.rows] == [3, 6, 7]
        assert logger.rows[0][1]["reprdiag/vne"] == history[0]["vne"]
        assert pd.read_csv(tmp_path / f"{next(iter(how))}.csv")["step"].tolist() == [3, 6, 7]


def test_distributed_monitor_logs_every_ranks_rows(tmp_path: Path) -> None:
    """Two gloo ranks feed different batches; each evaluation merges both ranks' statistics,
    so every rank logs the metrics of the union of the window's rows (= analyze on them)."""
    from tests.ranks import WORKER, run_ranks

    runs = run_ranks([str(WORKER), "--monitor", str(tmp_path)], 2)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    ranks = [torch.load(tmp_path / f"monitor{r}.pt") for r in range(2)]
    for window, first in (("reset", lambda k: 3 * k), ("cumulative", lambda k: 0)):
        history = ranks[0][window]
        assert history == ranks[1][window] and [h["step"] for h in history] == [2, 5]
        for k, row in enumerate(history):
            rows = torch.cat([b for r in ranks for b in r["batches"][first(k):3 * k + 3]])
            assert row["rows"] == rows.shape[0]
            want = reprdiag.analyze(rows, metrics=["vne", "rankme", "avg_cosine", "er_entropy"],
                                    precision="float64", sample_size=1000, device="cpu").metrics
            for name, value in want.items():
                assert row[name] == pytest.approx(value, rel=1e-9), (window, k, name)
        assert (tmp_path / f"{window}0.csv").exists()
        assert not (tmp_path / f"{window}1.csv").exists()  # rank 0 alone writes
    assert ranks[0]["labelled"] == ranks[1]["labelled"]  # labels= and pair= merged too
    for k, row in enumerate(ranks[0]["labelled"]):
        part = {key: torch.cat([b for r in ranks for b in r[key][3 * k:3 * k + 3]]).numpy()
                for key in ("batches", "labels", "pairs")}
        want = numpy_label_and_pair_metrics(part["batches"].astype(np.float64), part["labels"],
                                            part["pairs"].astype(np.float64))
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-9), (k, name)


def test_distributed_monitor_needs_a_process_group() -> None:
    with pytest.raises(UsageError, match="process group"):
        SpectralMonitor(distributed=True)
