"""New report figures: confusion matrices, the RankMe spectrum, 2-D maps, per-class accuracy,
error bars from *_std rows, no bars for constants; PNG/PDF files."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.eval.collapse import collapse_stats, rankme
from dinoeval.eval.embedding import embed_2d, subsample
from dinoeval.eval.knn import confusion_matrix, knn_classify
from dinoeval.eval.linear import LinearProbeConfig, linear_probe
from dinoeval.report import figure_set as S
from dinoeval.report import figures as F
from dinoeval.report import rows as R
from dinoeval.results import Context, Row, concat, to_frame


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 1, 0], [0, 1, 1]])


def test_typed_results_carry_the_arrays_figures_need():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    x[:, :3] += 4 * np.eye(3)[y]
    knn = knn_classify(x, y, x[:30], y[:30], ks=(5,))
    assert knn.confusion[5].sum() == 30
    cm = knn.confusion[5]
    assert cm.shape == (3, 3)
    with np.errstate(invalid="ignore"):  # class 2 is absent from the test rows: NaN in both
        np.testing.assert_allclose(np.diag(cm) / cm.sum(1), knn.per_class[5])
    lin = linear_probe(x, y, x[:30], y[:30], config=LinearProbeConfig(
        learning_rates=(0.1,), weight_decays=(0.0,), epochs=2))
    assert lin.confusion.shape == (3, 3) and lin.confusion.sum() == 30
    st = collapse_stats(x)
    np.testing.assert_allclose(st.singular_values, np.linalg.svd(x, compute_uv=False),
                               rtol=1e-4)
    assert st.rankme == pytest.approx(rankme(x))


def _line_data(fig) -> list:
    return [line.get_xdata() for ax in fig.axes for line in ax.lines]


def test_spectrum_is_log_scaled_and_marks_the_effective_rank():
    sv = {"a": np.array([4.0, 2.0, 1.0, 1.0]), "b": np.array([1.0, 1.0, 1.0, 1.0])}
    fig = F.plot_spectrum(sv, {"a": 3.1, "b": 4.0})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    xs = _line_data(fig)
    assert [list(x) for x in xs if len(x) == 2] == [[3.1, 3.1], [4.0, 4.0]]  # axvlines
    assert "RankMe 3.1" in ax.get_legend().get_texts()[0].get_text()


def test_confusion_figure_normalises_rows():
    fig = F.plot_confusion_matrix(np.array([[8, 2], [0, 0]]), ["cat", "dog"])
    img = np.ma.filled(fig.axes[0].get_images()[0].get_array().astype(float), np.nan)
    assert img[0, 0] == pytest.approx(0.8) and np.isnan(img[1, 0])  # absent class: blank
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog"]


def test_embedding_map_colours_each_class():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 6)) + 5 * np.eye(6)[c] for c in range(3)])
    y = np.repeat(np.arange(3), 20)
    xy = embed_2d(x, seed=0)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    fig = F.plot_embedding(xy, y, ["a", "b", "c"])
    assert len(fig.axes[0].collections) == 3
    assert len(subsample(y, 30, seed=1)) == 30 and len(set(y[subsample(y, 30)])) == 3


def _rows() -> list:
    frames = []
    for spec, nmi, std in (("a.pth", 0.5, 0.02), ("b.pth", 0.6, 0.01)):
        ctx = Context(spec, spec, "ViT", "d", "test", "cls")
        rows = [Row("knn", "top1", 0.7 + 0.01 * k / 10, f"k={k}") for k in (10, 20, 100)]
        rows += [Row("kmeans", "nmi", nmi, "k=3,seeds=3"), Row("kmeans", "nmi_std", std,
                                                               "k=3,seeds=3"),
                 Row("collapse", "dim", 64.0), Row("collapse", "rankme", 20.0, "eps=1e-7"),
                 Row("knn", "recall[cat]", 0.9, "k=20"), Row("knn", "recall[dog]", 0.4, "k=20")]
        frames.append(to_frame(rows, ctx))
    return R.labelled_rows([concat(frames)])


def test_table_figures_use_std_rows_as_error_bars_and_skip_constants():
    figs = S.table_figures(_rows())
    assert "collapse_dim" not in figs and "collapse_rankme" in figs
    assert {"knn_top1_vs_k", "knn_per_class_k_20", "kmeans_nmi"} <= set(figs)
    ax = figs["kmeans_nmi"].axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert len(bars) == 1 and bars[0].errorbar is not None
    texts = [t.get_text() for t in ax.texts]
    assert "0.5 ± 0.02" in texts and "0.6 ± 0.01" in texts


def test_figures_are_written_as_png_and_pdf(tmp_path):
    paths = S.save_figures(S.table_figures(_rows()), tmp_path / "figs")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert (tmp_path / "figs" / "kmeans_nmi.pdf").read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "figs" / "kmeans_nmi.png").read_bytes()[:4] == b"\x89PNG"
