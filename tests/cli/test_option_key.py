"""Every option of every command that computes features, classified and checked (issue 14 §1).

``CASES`` classifies each option (read from the typer app, so an option added later and not
classified here fails :func:`test_every_option_is_classified`) as

* ``feature``: it changes the features, so the feature-cache key changes (and the features do);
* ``same``: it cannot change them (evaluation settings, output paths, batch size, workers), so
  the key and the features stay the same;
* ``which``: it chooses which feature sets are computed (each keeps its own key).

Each case runs the command through the real CLI and extraction code on a tiny ViT (width 48,
depth 1) and a few images, twice: the base arguments, then with the option changed. A
recorder on :func:`~dinoeval.features.extract.feature_meta` and the model's forward pass notes
each extraction's cache key and features; and over every run of this module, one key never
stands for two different feature arrays (what a cache would serve wrongly). Commands without a
feature cache (attention, video-seg, dense) are checked on the values they compute.
:func:`test_the_checker_fails_when_the_key_misses_a_feature_option` shows the check fails when
the key builder drops what tells the teacher from the student.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np
import pytest
import torch
import typer.main
import typer.testing
from PIL import Image
from typer.testing import CliRunner

from dinoeval.cli import _common as cli_common
from dinoeval.cli import app
from dinoeval.cli import attention as cli_attention
from dinoeval.cli import knn as cli_knn
from dinoeval.cli import retrieval as cli_retrieval
from dinoeval.cli import scale as cli_scale
from dinoeval.cli import stats as cli_stats
from dinoeval.cli import video as cli_video
from dinoeval.models import DINOHead, ViTArch, build_vit

runner = CliRunner()

# Commands that compute no features through the options below, with the reason.
EXEMPT = {
    "report": "reads results tables",
    "inspect": "reads a checkpoint's structure",
    "pretrain": "trains a network; its k-NN monitor extracts in memory, never through the cache",
    "knn-bank": "reads feature-cache entries; computes none (tests/pipeline/test_bank_identity.py)",
    "demo": "a fixed showcase over the runners checked here (tests/test_demo.py)",
}


@dataclasses.dataclass(frozen=True)
class Case:
    """How to check one option: its category, the arguments that change it (``alt``), extra
    arguments both runs share (``base``; a ``--ckpt`` there replaces the default one), base
    options to leave out of the changed run (``drop``), or why it cannot run here (``skip``)."""

    kind: str
    alt: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    skip: str = ""
    alone: bool = False  # an old spelling that may not be given with the new one


F, S, W = "feature", "same", "which"
NO_DEVICE = "needs a second device (the key leaves the device out by design)"
NO_TIMM = "needs a timm:NAME model and two weight files; weights are hashed (test_identity.py)"
PIX8 = ("--ckpt", "pixels", "--pixel-size", "8")

BACKBONE = {  # BackboneOptions, shared by most commands
    "ckpt": Case(F, ("--ckpt", "{other}")),
    "checkpoint_key": Case(F, ("--checkpoint-key", "student")),
    "weights": Case(F, skip=NO_TIMM),
    "img_size": Case(F, ("--img-size", "8")),
    "num_heads": Case(F, ("--num-heads", "1")),
    "pixel_size": Case(F, ("--pixel-size", "12"), base=PIX8),
}
EXTRACT = {  # ExtractOptions
    "feature": Case(F, ("--feature", "cls+avgpool")),
    "batch_size": Case(S, ("--batch-size", "3")),
    "device": Case(S, skip=NO_DEVICE),
    "num_workers": Case(S, ("--workers", "1")),
    "precision": Case(F, ("--precision", "bf16")),
    "skip_bad_images": Case(S, ("--skip-bad-images",)),
    "cache_dir": Case(S, ("--cache-dir", "{tmp}/cache-{uniq}")),
}
OUT = Case(S, ("--out", "{tmp}/other.csv"))
KNN = {"ks": Case(S, ("--k", "1")), "temperature": Case(S, ("--temperature", "0.5")),
       "per_class": Case(S, ("--per-class",))}
TRAIN_VAL = {"train": Case(F, ("--train", "digits:train[:50]")),
             "val": Case(F, ("--val", "digits:test[:6]"))}
RET = {"ks": Case(S, ("--k", "2")), "ap_kind": Case(S, ("--ap", "step")),
       "max_memory": Case(S, ("--max-memory", "2GB")), "show": Case(S, ("--show", "1")),
       "html": Case(S, ("--html", "{tmp}/hits.html")),
       "out": OUT,
       **{k: v for k, v in {**BACKBONE, **EXTRACT}.items() if k not in ("feature", "img_size")}}

BASE = {  # each command's arguments besides --ckpt (8-60 tiny images)
    "knn": ("--train", "digits:train[:60]", "--val", "digits:test[:8]", "--k", "3",
            "--img-size", "16"),
    "linear": ("--train", "digits:train[:60]", "--val", "digits:test[:8]", "--epochs", "1",
               "--lr", "0.1", "--wd", "0", "--img-size", "16"),
    "clusters": ("--data", "digits:test[:12]", "--seeds", "1", "--img-size", "16"),
    "collapse-stats": ("--data", "digits:test[:12]", "--align-pairs", "4", "--img-size", "16"),
    "extract": ("--data", "digits:test[:8]", "--cache-dir", "{tmp}/feats-{uniq}", "--img-size",
                "16"),
    "extract-sharded": ("--data", "digits:test[:8]", "--cache-dir", "{tmp}/shards-{uniq}",
                        "--img-size", "16"),
    "retrieval": ("--query", "digits:test[:8]", "--img-size", "16"),
    "copy-detection": ("--data", "digits:test[:12]", "--originals", "3", "--n-distractors", "3",
                       "--n-whitening", "3", "--img-size", "16"),
    "attention": ("--data", "shapes:test@n=3,size=16", "--report-dir", "{tmp}/attn", "--no-png"),
    "video-seg": ("--data", "moving-shapes@videos=1,frames=3,height=32,width=48,objects=1",
                  "--short-side", "32", "--multiple", "16"),
    "dense": ("--train", "shapes:train@n=6,size=16", "--test", "shapes:test@n=3,size=16",
              "--method", "knn", "--k", "3", "--max-bank", "500"),
}

JSON = Case(S, ("--json",))
CASES: dict[str, dict[str, Case]] = {
    "knn": {**BACKBONE, **EXTRACT, **KNN, **TRAIN_VAL, "out": OUT},
    "linear": {**BACKBONE, **EXTRACT, **TRAIN_VAL, "out": OUT,
               "mode": Case(S, ("--mode", "logreg", "--c", "1")),
               "learning_rates": Case(S, ("--lr", "0.5")), "weight_decays": Case(S, ("--wd", "0.1")),
               "epochs": Case(S, ("--epochs", "2")), "cs": Case(S, ("--c", "0.1")),
               "val_fraction": Case(S, ("--val-fraction", "0.5")), "seed": Case(S, ("--seed", "3"))},
    "clusters": {**BACKBONE, **EXTRACT, "out": OUT,
                 "data": Case(F, ("--data", "digits:test[:10]")), "k": Case(S, ("--k", "2")),
                 "seeds": Case(S, ("--seeds", "2")), "spherical": Case(S, ("--spherical",)),
                 "silhouette_samples": Case(S, ("--silhouette-samples", "0")),
                 "seed": Case(S, ("--seed", "1"))},
    "collapse-stats": {**BACKBONE, **EXTRACT, "out": OUT,
                       "data": Case(F, ("--data", "digits:test[:10]")),
                       "head": Case(W, ("--no-head",)),
                       "neural_collapse": Case(S, ("--no-neural-collapse",)),
                       "align_pairs": Case(S, ("--align-pairs", "2")),
                       "teacher_temp": Case(S, ("--teacher-temp", "0.07")),
                       "seed": Case(S, ("--seed", "2"))},
    "extract": {**{k: v for k, v in {**BACKBONE, **EXTRACT}.items() if k != "cache_dir"},
                "data": Case(F, ("--data", "digits:test[:6]")),
                "cache_dir": Case(S, ("--cache-dir", "{tmp}/feats2-{uniq}")),
                "old_out": Case(S, ("--out", "{tmp}/feats3-{uniq}"), drop=("--cache-dir",),
                                alone=True)},
    "extract-sharded": {**{k: v for k, v in {**BACKBONE, **EXTRACT}.items() if k != "cache_dir"},
                        "data": Case(F, ("--data", "digits:test[:6]")),
                        "cache_dir": Case(S, ("--cache-dir", "{tmp}/shards2-{uniq}")),
                        "old_out": Case(S, ("--out", "{tmp}/shards3-{uniq}"),
                                        drop=("--cache-dir",), alone=True),
                        "rank": Case(S, skip="a shard holds part of the rows, under the key "
                                     "of the whole extraction (merged once complete)"),
                        "world_size": Case(S, skip="see --rank")},
    "retrieval": {**RET, "query": Case(F, ("--query", "digits:test[:6]")),
                  "gallery": Case(F, ("--gallery", "digits:test[:10]")),
                  "protocols": Case(S, ("--protocol", "hard")),
                  "multiscale": Case(F, ("--multiscale",)),
                  "resize": Case(F, ("--resize", "square"),
                                 base=("--query", "imagefolder:{tmp}/nonsquare")),
                  "img_size": Case(F, ("--img-size", "8"))},
    "copy-detection": {**RET, "data": Case(F, ("--data", "digits:test[:10]")),
                       "copydays": Case(F, skip="needs a Copydays folder (a data source: its "
                                        "fingerprint is in the key, as --data's)"),
                       "distractors": Case(F, skip="with --copydays only"),
                       "whitening_data": Case(F, skip="with --copydays only"),
                       "originals": Case(F, ("--originals", "2")),
                       "n_distractors": Case(F, ("--n-distractors", "2")),
                       "n_whitening": Case(W, ("--n-whitening", "0")),
                       "copies": Case(F, ("--copies", "2")), "seed": Case(F, ("--seed", "1")),
                       "img_size": Case(F, ("--img-size", "8")),
                       "whiten": Case(W, ("--no-whiten",)),
                       "whitening_power": Case(S, ("--whitening-power", "0.25"))},
    "attention": {**{k: v for k, v in BACKBONE.items() if k != "pixel_size"},
                  "ckpt": Case(F, ("--ckpt", "{other}")),
                  "report_dir": Case(S, ("--report-dir", "{tmp}/attn2")),
                  "out": Case(S, ("--out", "{tmp}/attn.csv")),
                  "old_results": Case(S, ("--results", "{tmp}/attn-old.csv"), alone=True),
                  "data": Case(F, ("--data", "shapes:test@n=3,size=16,seed=1")),
                  "images": Case(F, ("--images", "{img0}"), drop=("--data",)),
                  "more_images": Case(F, ("--images", "{img0}", "{img1}"), drop=("--data",)),
                  "n": Case(F, ("--n", "2")), "show": Case(S, ("--show", "1")),
                  "png": Case(S, ("--png",)), "block": Case(F, ("--block", "0")),
                  "mass": Case(S, ("--mass", "0.3")), "resize": Case(F, ("--resize", "20")),
                  "fit": Case(F, ("--fit", "pad"), base=("--resize", "18")),
                  "batch_size": Case(S, ("--batch-size", "1")),
                  "device": Case(S, skip=NO_DEVICE)},
    "video-seg": {"ckpt": BACKBONE["ckpt"], "checkpoint_key": BACKBONE["checkpoint_key"],
                  "num_heads": BACKBONE["num_heads"], "out": OUT,
                  "data": Case(F, ("--data", "moving-shapes@videos=1,frames=3,height=32,"
                                             "width=48,objects=1,seed=1")),
                  "n_last_frames": Case(S, ("--n-last-frames", "1")),
                  "topk": Case(S, ("--topk", "2")), "temperature": Case(S, ("--temperature", "1")),
                  "radius": Case(S, ("--radius", "1")),
                  "short_side": Case(F, ("--short-side", "16")),
                  "multiple": Case(F, ("--multiple", "32")),
                  "masks_dir": Case(S, ("--masks-dir", "{tmp}/masks")),
                  "html": Case(S, ("--html", "{tmp}/video.html")),
                  "pixel_patch": Case(F, ("--pixel-patch", "16"), base=("--ckpt", "pixels")),
                  "batch_size": Case(S, ("--batch-size", "1")),
                  "device": Case(S, skip=NO_DEVICE)},
    "dense": {"ckpt": BACKBONE["ckpt"], "checkpoint_key": BACKBONE["checkpoint_key"],
              "num_heads": BACKBONE["num_heads"], "out": OUT,
              "train": Case(F, ("--train", "shapes:train@n=5,size=16")),
              "test": Case(F, ("--test", "shapes:test@n=2,size=16")),
              "methods": Case(S, ("--method", "linear", "--max-iter", "2")),
              "targets": Case(S, ("--targets", "soft")), "k": Case(S, ("--k", "2")),
              "temperature": Case(S, ("--temperature", "0.5")),
              "max_bank": Case(S, ("--max-bank", "400")),
              "weight_decay": Case(S, ("--weight-decay", "0.1")),
              "max_iter": Case(S, ("--max-iter", "3")),
              "img_size": Case(F, ("--img-size", "8")),
              "pixel_patch": Case(F, ("--pixel-patch", "4"), base=("--ckpt", "pixels")),
              "batch_size": Case(S, ("--batch-size", "1")),
              "device": Case(S, skip=NO_DEVICE)},
}


GROUP = typer.main.get_command(app)  # click's view of typer's app
for _name, _cases in CASES.items():  # --json prints the same rows as JSON
    if _name not in ("extract", "extract-sharded"):
        _cases["json_"] = JSON


def _commands() -> dict[str, list[str]]:
    """Every command of the app and the names of its options."""
    return {name: [p.name for p in cmd.params] for name, cmd in GROUP.commands.items()}


def test_every_option_is_classified():
    missing = []
    for command, options in _commands().items():
        if command in EXEMPT:
            continue
        if command not in CASES:
            missing.append(f"classify command {command} (CASES) or exempt it (EXEMPT)")
            continue
        missing += [f"classify option {o} of command {command}" for o in options
                    if o not in CASES[command]]
        missing += [f"CASES lists {o} of {command}, which has no such option"
                    for o in CASES[command] if o not in options]
    assert not missing, "; ".join(missing)


# ---------------------------------------------------------------------------------------------
# Running a command and recording what it extracts


@dataclasses.dataclass
class Extraction:
    key: str | None  # the feature-cache key (None: a command without a cache)
    chunks: list[np.ndarray]

    def values(self) -> np.ndarray:
        return np.concatenate([c.reshape(len(c), -1) for c in self.chunks]) if self.chunks \
            else np.zeros((0, 0), np.float32)


SEEN: dict[str, np.ndarray] = {}  # every key of every run here -> its features
BASE_RUNS: dict[tuple[str, ...], list[Extraction]] = {}  # base command line -> its extractions
_UNIQ = itertools.count()


class Recorder:
    """Wraps the extraction code's key builder and forward passes (and the cache-free
    commands' encoders) to note each extraction's key and features."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import dinoeval.features.extract as ex
        import dinoeval.features.sharded as sh
        import dinoeval.pipeline.attention as at
        import dinoeval.pipeline.dense as de
        import dinoeval.pipeline.video_seg as vs
        from dinoeval.features.cache import FeatureCache, cache_key

        self.runs: list[Extraction] = []
        monkeypatch.setattr(typer.testing, "_get_command", lambda _: GROUP)  # built once
        for mod in (cli_attention, cli_knn, cli_retrieval, cli_scale, cli_stats, cli_video,
                    cli_common):  # the rich tables cost more than the tiny runs
            if hasattr(mod, "print_results"):
                monkeypatch.setattr(mod, "print_results", lambda *a, **k: None)
        meta_fn, fwd = ex.feature_meta, ex.forward_features

        def meta(*a, **k):
            m = meta_fn(*a, **k)
            key = cache_key(m)
            if not (self.runs and self.runs[-1].key == key and not self.runs[-1].chunks):
                self.runs.append(Extraction(key, []))  # (sharded: asked again per shard)
            return m

        def forward(*a, **k):
            out = fwd(*a, **k)
            self.runs[-1].chunks.append(out.float().cpu().numpy().copy())
            return out

        for mod in (ex, sh):
            monkeypatch.setattr(mod, "feature_meta", meta)
            monkeypatch.setattr(mod, "forward_features", forward)
        get = FeatureCache.get

        def cached(cache, m):  # a cache hit: the features it serves
            fs = get(cache, m)
            if fs is not None:
                self.runs[-1].chunks = [np.asarray(fs.features).copy()]
            return fs

        monkeypatch.setattr(FeatureCache, "get", cached)
        self._wrap(monkeypatch, at, "_extract", lambda r: np.stack(r[0]))
        for mod in (de, vs):
            self._wrap(monkeypatch, mod, "patch_grid", lambda r: r.float().cpu().numpy())

    def _wrap(self, monkeypatch, mod, name, to_array) -> None:
        fn = getattr(mod, name)

        def wrapped(*a, **k):
            out = fn(*a, **k)
            self.runs.append(Extraction(None, [to_array(out).copy()]))
            return out

        monkeypatch.setattr(mod, name, wrapped)


def _argv(command: str, case_base: tuple[str, ...], alt: tuple[str, ...], drop: tuple[str, ...],
          files: dict[str, str]) -> list[str]:
    base = list(BASE[command])
    for opt in drop:
        i = base.index(opt)
        del base[i:i + 2]
    extra = [*case_base, *alt]
    ckpt = [] if "--ckpt" in extra else ["--ckpt", files["ckpt"]]
    uniq = next(_UNIQ)  # fresh output folders and caches for every run
    return [a.format(**files, uniq=uniq) for a in (command, *ckpt, *base, *extra)]


def run_recorded(rec: Recorder, argv: list[str]) -> list[Extraction]:
    """Run the command line ``argv``; its extractions (each key checked against every earlier
    run's features)."""
    rec.runs = []
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, f"{' '.join(argv)}\n{r.output}"
    assert rec.runs, f"{' '.join(argv)}: nothing was extracted"
    if all(e.key is None for e in rec.runs):  # a cache-free command: all it computed, in order
        rec.runs = [Extraction(None, [c.reshape(-1) for e in rec.runs for c in e.chunks])]
        rec.runs[0].chunks = [np.concatenate(rec.runs[0].chunks)[None]]
    for e in rec.runs:  # one key never stands for two different feature arrays
        if e.key is None:
            continue
        x = e.values()
        if e.key in SEEN:
            assert _same(SEEN[e.key], x), f"cache key {e.key} stands for two feature arrays"
        SEEN[e.key] = x
    return rec.runs


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5)


def _digest(runs: list[Extraction]) -> list[np.ndarray]:
    return [e.values() for e in runs]


def check_option(monkeypatch, command: str, option: str, case: Case,
                 files: dict[str, str]) -> None:
    """Run ``command`` with and without the option changed; assert what its class promises."""
    rec = Recorder(monkeypatch)
    argv = _argv(command, case.base, (), (), files)
    a = BASE_RUNS[tuple(argv)] if tuple(argv) in BASE_RUNS else run_recorded(rec, argv)
    BASE_RUNS[tuple(argv)] = a
    b = run_recorded(rec, _argv(command, case.base, case.alt, case.drop, files))
    keys_a, keys_b = [e.key for e in a], [e.key for e in b]
    fa, fb = _digest(a), _digest(b)
    same_values = len(fa) == len(fb) and all(_same(x, y) for x, y in zip(fa, fb, strict=True))
    label = f"{command} --{option.replace('_', '-')}" if option[0] != "(" else f"{command} " \
        f"{' '.join(case.alt)} {option}"
    if case.kind == F:
        assert not same_values, f"{label}: classified as changing the features, and did not"
        if keys_a[0] is not None:
            assert set(keys_a) != set(keys_b), f"{label} changes the features, not the cache key"
    elif case.kind == S:
        assert keys_a == keys_b, f"{label} cannot change the features, and changed the key"
        assert same_values, f"{label} cannot change the features, and they changed"
    else:  # which: one run computes a subset of the other's feature sets
        ka, kb = set(keys_a), set(keys_b)
        assert ka != kb or len(fa) != len(fb), f"{label}: computed the same feature sets"
        assert ka <= kb or kb <= ka, f"{label}: chose sets with other keys"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A DINO training checkpoint (teacher != student, with DINO heads and the loss center;
    width 48, depth 2, 3 heads, patch 4), another network, and two image files."""
    tmp = tmp_path_factory.mktemp("options")
    arch = ViTArch(embed_dim=48, depth=2, num_heads=3, patch_size=4, img_size=(16, 16))
    torch.manual_seed(0)
    teacher, student, other = build_vit(arch), build_vit(arch), build_vit(arch)
    for net in (teacher, student, other):  # non-trivial position embeddings and CLS tokens
        with torch.no_grad():
            net.pos_embed.normal_(0, 0.5)
            net.cls_token.normal_(0, 0.5)
    heads = [DINOHead(48, 32, hidden_dim=64, bottleneck_dim=16) for _ in range(2)]
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                            **{f"head.{k}": v for k, v in heads[0].state_dict().items()}},
                "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                            **{f"module.head.{k}": v for k, v in heads[1].state_dict().items()}},
                "dino_loss": {"center": torch.zeros(1, 32)}, "epoch": 1,
                "args": argparse.Namespace(arch="vit_tiny", patch_size=4)}, tmp / "ckpt.pth")
    torch.save(other.state_dict(), tmp / "other.pth")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp / f"{i}.png")
    for c in ("a", "b"):  # labelled 20x24 images (retrieval --resize matters for these)
        (tmp / "nonsquare" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                tmp / "nonsquare" / c / f"{i}.png")
    return {"ckpt": str(tmp / "ckpt.pth"), "other": str(tmp / "other.pth"), "tmp": str(tmp),
            "img0": str(tmp / "0.png"), "img1": str(tmp / "1.png")}


CHANGING = [(c, o, case) for c, opts in CASES.items() for o, case in opts.items()
            if case.kind != S]


@pytest.mark.parametrize(("command", "option", "case"), CHANGING,
                         ids=[f"{c}--{o}" for c, o, _ in CHANGING])
def test_an_option_that_changes_the_features_changes_the_key(monkeypatch, files, command,
                                                             option, case):
    if case.skip:
        pytest.skip(case.skip)
    check_option(monkeypatch, command, option, case, files)


@pytest.mark.parametrize("command", list(CASES))
def test_options_that_cannot_change_the_features_keep_the_key(monkeypatch, files, command):
    """All of a command's ``same`` options changed in one run (cheap); when that fails, one run
    per option names the culprit."""
    same = {o: c for o, c in CASES[command].items() if c.kind == S and not c.skip}
    together = Case(S, tuple(a for c in same.values() if not c.alone for a in c.alt))
    try:
        check_option(monkeypatch, command, "(every same option)", together, files)
    except AssertionError:
        for option, case in same.items():
            check_option(monkeypatch, command, option, case, files)
        raise
    for option, case in same.items():
        if case.alone:
            check_option(monkeypatch, command, option, case, files)


def test_the_checker_fails_when_the_key_misses_a_feature_option(monkeypatch, files):
    """With a key builder that forgets the weights (the checkpoint file and architecture still
    in it), teacher and student of one file share a key: the check above must fail."""
    import dinoeval.features.identity as ident

    real = ident.network_identity

    def forgetful(backbone):
        return {k: v for k, v in real(backbone).items() if k != "weights"}

    monkeypatch.setattr(ident, "network_identity", forgetful)
    saved, saved_base = dict(SEEN), dict(BASE_RUNS)
    SEEN.clear()  # keys made by the forgetful builder must not meet the real ones
    BASE_RUNS.clear()
    try:
        with pytest.raises(AssertionError, match=r"stands for two feature arrays|not the "
                           r"cache key"):
            check_option(monkeypatch, "knn", "checkpoint_key", CASES["knn"]["checkpoint_key"],
                         files)
    finally:
        SEEN.clear()
        SEEN.update(saved)
        BASE_RUNS.clear()
        BASE_RUNS.update(saved_base)


def test_rows_of_every_command_carry_their_data_and_resolution(monkeypatch, files):
    """The identity columns are filled by every command that writes rows."""
    from dinoeval.results import read_results

    rec = Recorder(monkeypatch)
    for command in ("knn", "clusters", "retrieval", "copy-detection", "video-seg", "dense"):
        out = f"{files['tmp']}/ident-{command}.csv"
        run_recorded(rec, [*_argv(command, (), (), (), files), "--out", out])
        df = read_results(out)
        assert len(df), command
        assert (df["data"] != "").all() and df["data_n"].notna().all(), command
        assert (df["resolution"] != "").all(), command
