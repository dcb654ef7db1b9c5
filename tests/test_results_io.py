"""The results table under concurrent writers, schema changes and damaged files (issue 17)."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from dinoeval.errors import DinoevalError
from dinoeval.pipeline import save_config
from dinoeval.results import (
    COLUMNS,
    Context,
    Row,
    append_results,
    append_run_config,
    read_results,
    to_frame,
)

CTX = Context(backbone="b", ckpt_hash="h", arch="a", dataset="d", split="s", feature="cls")
N_PROCS, N_APPENDS = 8, 4


def _frame(tag: str, n: int = 2) -> pd.DataFrame:
    return to_frame([Row(eval="knn", metric="top1", value=float(i), param=tag) for i in range(n)],
                    CTX)


def _writer(path: str, config: str, worker: int, barrier) -> None:
    barrier.wait()
    for j in range(N_APPENDS):
        append_results(path, _frame(f"w{worker}-{j}"))
        save_config(config, worker=worker, append=j)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_parallel_appends_keep_every_row_and_config_entry(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N_PROCS)
    procs = [ctx.Process(target=_writer, args=(str(path), str(tmp_path / "t.csv"), w, barrier))
             for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    df = read_results(path)
    assert len(df) == N_PROCS * N_APPENDS * 2
    expected = {f"w{w}-{j}" for w in range(N_PROCS) for j in range(N_APPENDS)}
    assert df.groupby("param").size().to_dict() == {t: 2 for t in expected}
    runs = json.loads((tmp_path / "t.csv.config.json").read_text())["runs"]
    assert sorted((r["worker"], r["append"]) for r in runs) == sorted(
        (w, j) for w in range(N_PROCS) for j in range(N_APPENDS))
    assert not list(tmp_path.glob(".*.tmp*"))


def test_files_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o002)
    try:
        append_results(tmp_path / "t.csv", _frame("x"))
        append_run_config(tmp_path / "t.csv", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "t.csv").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "t.csv.config.json").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_extra_column_is_kept_and_old_rows_get_missing_values(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    append_results(path, _frame("old"))
    append_results(path, _frame("new").assign(top5=[0.5, 0.75], note=["x", "y"]))
    append_results(path, _frame("after"))
    df = read_results(path)
    assert list(df.columns) == [*COLUMNS, "top5", "note"]
    assert len(df) == 6
    top5 = df.set_index("param")["top5"]
    assert np.isnan(top5["old"]).all() and np.isnan(top5["after"]).all()
    assert top5["new"].tolist() == [0.5, 0.75]
    assert df.loc[df.param == "new", "note"].tolist() == ["x", "y"]


def test_a_cut_last_line_is_reported_not_kept_as_a_half_row(tmp_path):
    path = tmp_path / "t.csv"
    append_results(path, _frame("a", 3))
    lines = path.read_text().splitlines(keepends=True)
    last = lines[-1]
    path.write_text("".join(lines[:-1]) + last[: last.index(",knn,")])  # killed mid-line
    with pytest.raises(DinoevalError, match=rf"line 4 has \d+ fields where the header has {len(COLUMNS)} "
                                            r"\(the last line, cut short\?\)"):
        read_results(path)
    before = path.read_text()
    with pytest.raises(DinoevalError, match="line 4"):
        append_results(path, _frame("b"))
    assert path.read_text() == before


def test_a_malformed_middle_row_is_reported(tmp_path):
    path = tmp_path / "t.csv"
    append_results(path, _frame("a", 3))
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + ",extra\n"
    path.write_text("".join(lines))
    with pytest.raises(DinoevalError, match=f"line 3 has {len(COLUMNS) + 1} fields where the "
                                            f"header has {len(COLUMNS)}; "):
        read_results(path)
