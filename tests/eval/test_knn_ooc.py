import numpy as np
import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import _prep, knn_classify, knn_search
from dinoeval.eval.knn_ooc import (
    BankReader,
    decode_bank,
    encode_bank,
    fixed_bytes,
    knn_classify_ooc,
    knn_search_ooc,
    merge_topk,
    plan_blocks,
    precision_effect,
    write_bank,
)


def _data(n=3000, m=300, d=16, c=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d)) * 2
    ty, qy = rng.integers(0, c, n), rng.integers(0, c, m)
    tx = (centers[ty] + rng.standard_normal((n, d))).astype(np.float32)
    qx = (centers[qy] + rng.standard_normal((m, d))).astype(np.float32)
    return tx, ty, qx, qy


def test_merge_topk_orders_by_sim_then_lower_index():
    s, i = merge_topk(np.array([[0.9, 0.5, -np.inf]], np.float32), np.array([[7, 3, -1]]),
                      np.array([[0.5, 0.5, 0.4]], np.float32), np.array([[1, 9, 2]]), 3)
    assert i.tolist() == [[7, 1, 3]] and np.allclose(s, [[0.9, 0.5, 0.5]])


def test_plan_blocks_fits_budget_and_aligns():
    p = plan_blocks(2_000_000, 10_000, 384, 200, 2**30)
    assert p.working_bytes <= 2**30 and p.bank_rows % 1024 == 0 and p.n_blocks > 1
    with pytest.raises(DinoevalError, match="too small"):
        plan_blocks(10_000, 10_000, 384, 200, 10 * 2**20)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_out_of_core_equals_in_memory_many_blocks(tmp_path, backend):
    tx, ty, qx, qy = _data()
    np.save(tmp_path / "bank.npy", tx)
    ref = knn_classify(tx, ty, qx, qy, ks=(1, 5, 20))
    ref_s, ref_i = knn_search(tx, qx, 20)
    # a budget that leaves room for only a few hundred bank rows per block
    per_row = 16 * 8 + (2 * 300 * 4 if backend == "torch" else 0)
    budget = fixed_bytes(len(qx), 16, 20) + 700 * per_row
    assert plan_blocks(3000, 300, 16, 20, budget, backend=backend).n_blocks > 3
    out = knn_classify_ooc(tmp_path / "bank.npy", ty, qx, qy, ks=(1, 5, 20), max_memory=budget,
                           backend=backend)
    s, i = knn_search_ooc(tmp_path / "bank.npy", qx, 20, max_memory=budget, backend=backend)
    if backend == "faiss":
        assert np.array_equal(s, ref_s)  # bit-identical similarities
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-6)
    # same neighbours; only the order inside exact ties may differ from faiss's heap order
    assert np.array_equal(np.sort(i, 1), np.sort(ref_i, 1))
    for k in (1, 5, 20):
        assert np.array_equal(out.predictions[k], ref.predictions[k])
        assert out.top1[k] == ref.top1[k] and out.top5[k] == ref.top5[k]


def _ties(seed=3, copies=30, same_label=True):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    tx = np.concatenate([base] * copies)  # every row many times: ties at the k-th neighbour
    base_y = rng.integers(0, 4, 40)
    ty = np.tile(base_y, copies) if same_label else rng.integers(0, 4, len(tx))
    qx = rng.standard_normal((50, 8)).astype(np.float32)
    return tx, ty, qx, rng.integers(0, 4, 50)


def _small(backend):  # a budget for ~150-row blocks of the 1200-row tie bank
    per_row = 8 * 8 + (2 * 50 * 4 if backend == "torch" else 0)
    return fixed_bytes(50, 8, 45) + 150 * per_row


def test_exact_duplicates_predictions_equal_in_memory(tmp_path):
    tx, ty, qx, qy = _ties(same_label=True)
    np.save(tmp_path / "t.npy", tx)
    ref = knn_classify(tx, ty, qx, qy, ks=(3, 10, 45))
    for bank, backend in ((tx, "faiss"), (tmp_path / "t.npy", "faiss"), (tx, "torch")):
        out = knn_classify_ooc(bank, ty, qx, qy, ks=(3, 10, 45), max_memory=_small(backend),
                               backend=backend)
        for k in (3, 10, 45):
            assert np.array_equal(out.predictions[k], ref.predictions[k])
            assert out.top1[k] == ref.top1[k]


def test_tie_rule_is_faiss_values_then_lowest_index():
    # Tied duplicates with different labels: the vote depends on which copies are kept. faiss's
    # in-memory heap keeps a heap-order subset of exact ties; here exact ties (in faiss's own
    # float32 values) go to the lowest bank index, whatever the blocking.
    import faiss

    tx, ty, qx, qy = _ties(copies=60, same_label=False)
    q, t = _prep(qx, True), _prep(tx, True)
    full_s, full_i = faiss.knn(q, t, len(t), metric=faiss.METRIC_INNER_PRODUCT)
    order = np.lexsort((full_i, -full_s.astype(np.float64)), axis=1)[:, :45]
    want_s, want_i = np.take_along_axis(full_s, order, 1), np.take_along_axis(full_i, order, 1)
    assert (full_s[:, 44] == full_s[:, 45]).sum() > 10  # the test has boundary ties
    per_row = 8 * 8
    blocks_1024 = fixed_bytes(50, 8, 45) + 1500 * per_row
    assert plan_blocks(len(t), 50, 8, 45, blocks_1024).n_blocks == 3
    for mem in (blocks_1024, 2**30):
        s, i = knn_search_ooc(tx, qx, 45, max_memory=mem)
        assert np.array_equal(i, want_i) and np.array_equal(s, want_s)
    a = knn_classify_ooc(tx, ty, qx, qy, ks=(45,), max_memory=blocks_1024)
    b = knn_classify_ooc(tx, ty, qx, qy, ks=(45,), max_memory=2**30)
    assert np.array_equal(a.predictions[45], b.predictions[45])


def test_hand_computed_vote():
    # 4 train points on a circle; query at angle 0; k=2 -> neighbours 0 (cos 1) and 1 (cos 0.6)
    tx = np.array([[1, 0], [0.6, 0.8], [-1, 0], [0.6, -0.8001]], np.float32)
    ty = np.array([0, 1, 1, 0])
    out = knn_classify_ooc(tx, ty, np.array([[1, 0]], np.float32), np.array([1]), ks=(2,),
                           temperature=1.0)
    # votes: class0 e^1, class1 e^0.6 -> predicts 0
    assert out.predictions[2].tolist() == [0] and out.top1[2] == 0.0 and out.top5[2] == 1.0


def test_rows_range_keeps_global_indices():
    tx, _, qx, _ = _data(n=500, m=20)
    _, i = knn_search_ooc(tx, qx, 5, rows=(200, 300))
    assert ((i >= 200) & (i < 300)).all()
    _, i2 = knn_search(tx[200:300], qx, 5)
    assert np.array_equal(i, i2 + 200)


def test_errors_name_the_fix(tmp_path):
    tx, ty, qx, qy = _data(n=50, m=10)
    with pytest.raises(DinoevalError, match="larger than the train set"):
        knn_classify_ooc(tx, ty, qx, qy, ks=(100,))
    bad = tx.copy()
    bad[33, 2] = np.nan
    with pytest.raises(DinoevalError, match="NaN"):
        knn_classify_ooc(bad, ty, qx, qy, ks=(5,))
    with pytest.raises(DinoevalError, match="16 dims"):
        knn_search_ooc(tx, qx[:, :8], 5)
    with pytest.raises(DinoevalError, match="not found"):
        BankReader(tmp_path / "nope.npy")


def test_bank_encodings_roundtrip_and_write_bank(tmp_path):
    x = np.array([[1.0, -2.5, 3.140625, 1e-3]], np.float32)
    assert decode_bank(encode_bank(x, "float32")).tolist() == x.tolist()
    np.testing.assert_allclose(decode_bank(encode_bank(x, "float16")), x, rtol=1e-3)
    bf = encode_bank(x, "bfloat16")
    assert bf.dtype == np.uint16
    ref = torch.from_numpy(x).bfloat16().float().numpy()
    assert np.array_equal(decode_bank(bf), ref)
    tx, ty, qx, qy = _data(n=600, m=50)
    for dt in ("float16", "bfloat16"):
        p = write_bank(tx, tmp_path / f"b.{dt}.npy", dt, block_rows=128)
        assert BankReader(p).storage == dt
        out = knn_classify_ooc(p, ty, qx, qy, ks=(10,))
        ref = knn_classify(tx, ty, qx, qy, ks=(10,))
        assert np.mean(out.predictions[10] == ref.predictions[10]) > 0.95


def test_bfloat16_codec_equals_torch_bit_for_bit():
    """Round-to-nearest-even ties, subnormals, overflow to inf, signed zeros, inf and NaN."""
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.4e38, -3.4e38, 1e-40, -1e-45,
                        np.inf, -np.inf, np.nan], np.float32)
    x = np.concatenate([special, rng.standard_normal(4096).astype(np.float32) * 10.0 ** rng
                        .integers(-30, 30, 4096)]).astype(np.float32)
    ref = torch.from_numpy(x).bfloat16()
    bits = encode_bank(x, "bfloat16")
    finite = ~np.isnan(x)  # NaN stays NaN; its payload bits are not specified
    assert np.array_equal(bits.view(np.int16)[finite], ref.view(torch.int16).numpy()[finite])
    got, want = decode_bank(bits), ref.float().numpy()
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.filterwarnings("error")  # torch: "The given NumPy array is not writable"
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_read_only_memory_mapped_banks_raise_no_warning(tmp_path, backend, dtype):
    tx, _, qx, _ = _data(n=300, m=20)
    p = write_bank(tx, tmp_path / "b.npy", dtype)
    bank = np.load(p, mmap_mode="r")
    assert not bank.flags.writeable
    s, i = knn_search_ooc(bank, qx, 5, backend=backend)
    assert i.shape == (20, 5) and np.isfinite(s).all()
    assert encode_bank(bank[:10], "bfloat16").shape == (10, tx.shape[1])


def test_precision_effect_reports_each_dtype():
    tx, ty, qx, qy = _data(n=800, m=100)
    eff = precision_effect(tx, ty, qx, qy, ks=(5, 20))
    assert set(eff.results) == {"float32", "float16", "bfloat16"}
    assert eff.agreement["float32"] == {5: 1.0, 20: 1.0}
    assert eff.agreement["float16"][20] > 0.95
    rows = eff.to_rows()
    assert {r.metric for r in rows} == {"top1", "top1_minus_fp32", "pred_agreement_fp32"}


@pytest.mark.gpu
def test_torch_backend_on_cuda_equals_faiss():
    tx, ty, qx, qy = _data()
    ref = knn_classify(tx, ty, qx, qy, ks=(1, 20))
    out = knn_classify_ooc(tx, ty, qx, qy, ks=(1, 20), backend="torch", device="cuda",
                           max_memory=64 * 2**20)
    for k in (1, 20):
        assert np.array_equal(out.predictions[k], ref.predictions[k])


def test_the_core_takes_bytes_and_says_where_sizes_are_read():
    tx, ty, qx, qy = _data(n=100, m=5)
    with pytest.raises(DinoevalError, match=r"byte count.*parse_bytes"):
        knn_classify_ooc(tx, ty, qx, qy, ks=(5,), max_memory="1GB")
