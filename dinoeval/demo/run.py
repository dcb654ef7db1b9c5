"""The demo runner: optional pretraining, then every evaluation of the plan on three backbones."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from dinoeval.checks import check_output_dir
from dinoeval.data import ImageSource, get_source
from dinoeval.demo import plan
from dinoeval.demo.config import ASSETS, DemoConfig, DemoResult, shipped_checkpoint
from dinoeval.demo.outputs import write_outputs
from dinoeval.demo.plan import BackboneRun
from dinoeval.demo.summary import check_targets, peak_rss_mb, summarize, summary_markdown
from dinoeval.errors import DinoevalError
from dinoeval.models import load_backbone
from dinoeval.pipeline.attention import attention_frame, mask_provider
from dinoeval.pipeline.setup import ExtractOptions, ProgressFactory, get_features
from dinoeval.results import concat

EventFn = Callable[[str, dict[str, Any]], None]


def pretrain_checkpoint(config: DemoConfig, out_dir: Path, *,
                        on_event: EventFn | None = None) -> Path:
    """Train the demo's recipe from scratch on a ``config.pretrain_epochs`` schedule, stopping
    at ``config.pretrain_minutes``; the checkpoint path."""
    from pretrain import PretrainConfig, train_loop
    from pretrain.config import RECIPES

    ds = config.dataset()
    base = dict(RECIPES[ds.recipe])
    base.update(data=config.train or ds.train, device=config.device, seed=config.seed,
                epochs=config.pretrain_epochs, time_budget_minutes=config.pretrain_minutes,
                num_threads=0)  # all cores
    pcfg = PretrainConfig(**base)
    run_dir = out_dir / "pretrain"
    if (run_dir / "checkpoint.pth").exists():
        raise DinoevalError(f"{run_dir} already holds a pretraining run; delete it or pass "
                            "--report-dir to another folder")
    result = train_loop(pcfg, run_dir, on_event=on_event)
    if result.checkpoint is None:
        raise DinoevalError(f"pretraining in {run_dir} wrote no checkpoint")
    return Path(result.checkpoint)


def run_demo(config: DemoConfig, out_dir: str | Path, *, progress: ProgressFactory | None = None,
             on_pretrain_event: EventFn | None = None) -> DemoResult:
    """Run the whole demo and write its files under ``out_dir`` (see :mod:`dinoeval.demo`)."""
    t_start = time.perf_counter()
    ds = config.dataset()
    out = check_output_dir(Path(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if config.pretrain:
        ckpt = str(pretrain_checkpoint(config, out, on_event=on_pretrain_event))
    else:
        ckpt = config.ckpt or str(shipped_checkpoint(config.data))
    train_src, test_src = get_source(config.train or ds.train), get_source(config.test or ds.test)
    retrieval_src = get_source(config.retrieval_spec())
    bench = plan.copy_benchmark(config, retrieval_src, notes)  # made once, before any backbone
    c = max(len(train_src.classes), len(test_src.classes))

    specs = [("DINO", ckpt), ("random init", f"random:{ckpt}"), ("pixels", "pixels")]
    runs: list[BackboneRun] = []
    attention_runs: list[Any] = []
    video_runs: list[tuple[str, Any]] = []
    patch = 8
    for role, spec in specs:
        backbone = load_backbone(spec, seed=config.seed)
        patch = backbone.patch_size if backbone.kind == "vit" else patch  # pixels: DINO's grid
        notes += [f"{role}: {n}" for n in backbone.notes]
        runs.append(_one_backbone(role, backbone, train_src, test_src, retrieval_src, bench,
                                  config, c, notes, progress))
        if (backbone.kind == "vit" and config.attention_images > 0
                and mask_provider(test_src) is not None):
            run = plan.attention(runs[-1], test_src, config, progress)
            attention_runs.append((role, run))
            runs[-1].frames.append(attention_frame(run, test_src))
        if config.data == "shapes":
            runs[-1].frames.extend(plan.dense_evals(backbone, role, config, patch, progress,
                                                    video_runs))
    return _finish(runs, attention_runs, video_runs, config, out, ckpt, specs, train_src,
                   test_src, t_start, notes)


def _one_backbone(role: str, backbone: Any, train_src: ImageSource, test_src: ImageSource,
                  retrieval_src: ImageSource, bench: Any, config: DemoConfig, c: int,
                  notes: list[str], progress: ProgressFactory | None) -> BackboneRun:
    extract = ExtractOptions(feature="cls", batch_size=config.batch_size, device=config.device)
    pf = plan.prefixed(progress, role)
    b = BackboneRun(role, backbone, get_features(backbone, train_src, extract, pf),
                    get_features(backbone, test_src, extract, pf))
    plan.evaluate_features(b, train_src, test_src, config, c, notes)
    plan.retrieval_evals(b, retrieval_src, bench, config, pf)
    return b


def _finish(runs: list[BackboneRun], attention_runs: list[Any],
            video_runs: list[tuple[str, Any]], config: DemoConfig, out: Path, ckpt: str,
            specs: list[tuple[str, str]], train_src: ImageSource, test_src: ImageSource,
            t_start: float, notes: list[str]) -> DemoResult:
    """The table, the summary, the target checks and every file."""
    ds = config.dataset()
    # Results name a shipped checkpoint by its path inside the package, not this machine's path.
    ckpt_shown = _display_path(ckpt)
    shown = {spec: spec.replace(ckpt, ckpt_shown) for _, spec in specs}
    frame: pd.DataFrame = concat([f for r in runs for f in r.frames])
    frame["backbone"] = frame["backbone"].map(lambda s: shown.get(s, s))
    roles = {shown[spec]: role for role, spec in specs}
    summary = summarize(frame, roles, k=config.knn_k)
    targets = check_targets(summary, config.data)
    files = write_outputs(out, frame, summary, runs, attention_runs, test_src, config, ds,
                          ckpt_shown)
    if video_runs:
        from dinoeval.report.video import write_video_report

        files["video"] = write_video_report(out / "video" / "index.html", video_runs,
                                            title=f"Label propagation on {config.video}")
    seconds = time.perf_counter() - t_start
    files["results.md"] = out / "results.md"
    md = summary_markdown(summary, targets, ds=ds, ckpt=ckpt_shown, train=train_src.spec,
                          test=test_src.spec, seconds=seconds, peak_rss_mb=peak_rss_mb())
    md += _more_notes(config)
    files["results.md"].write_text(md)
    return DemoResult(frame=frame, summary=summary, targets=targets, files=files, notes=notes,
                      seconds=seconds)


def _more_notes(config: DemoConfig) -> str:
    """What the dense, retrieval and copy-detection columns measured, for ``results.md``."""
    md = ""
    if config.data == "shapes" and (config.video or config.dense_train):
        md += (f"\nDense evaluations: video J&F on `{config.video}` (DINO's DAVIS label "
               "propagation: first + 7 previous frames, top-5 within 12 patches, T=0.1; pixels "
               "use the DINO patch grid); dense mIoU fitted on "
               f"`{config.dense_train}`, scored on `{config.dense_test}` (linear probe; k-NN "
               "k=20 over at most 20,000 train patches). Overlay strips: `video/index.html`.\n")
    md += (f"\nRetrieval (`dinoeval retrieval`'s runner): every image of "
           f"`{config.retrieval_spec()}` queries the others (itself ignored), same class = "
           "relevant; mAP is the revisited trapezoid AP over the full ranking of CLS features "
           "at each backbone's input size. Top hits: `retrieval/index.html`.\n")
    if config.copy_originals:
        md += (f"\nCopy detection (`dinoeval copy-detection`'s runner): {config.copy_originals} "
               "seeded strong copies (crop, rotation, jitter, blur, text, patches, JPEG q5-25) "
               f"of images of that set, found among {config.copy_distractors} distractors; "
               "CLS + GeM(p=4) of the last block's patch tokens, PCA-whitened (power 0.5) on "
               f"{config.copy_whitening} other images. Top hits: `copies/index.html`.\n")
    return md


def _display_path(path: str) -> str:
    """A checkpoint path relative to the package when it is a shipped one."""
    p = Path(path).resolve()
    if not p.is_relative_to(ASSETS.resolve()):
        return path
    return str(p.relative_to(ASSETS.parent.parent.parent.resolve()))
