"""Command-line commands that start from images: run, search by image, extract, train."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from treeseek.choices import DEFAULT_HIERARCHY
from treeseek.errors import TreeseekError

SUBCLASSES_HELP = ("Split classes that are not one Gaussian into sub-classes (X-means): off, auto (kept only when "
                   "the validation split gains), or the most parts per class.")


def parse_subclasses(text: str) -> int | str:
    """``--subclasses``: ``off`` (1), ``auto``, or the most sub-classes per class."""
    if text in ("off", "auto"):
        return 1 if text == "off" else "auto"
    if not text.isdigit() or int(text) < 1:
        raise TreeseekError(f"--subclasses must be off, auto or an integer >= 1, got {text!r}")
    return int(text)


def _split_files(text: Optional[str]) -> list[str]:
    return [part.strip() for part in text.split(",")] if text else []


def run(
    source: Path = typer.Argument(..., help="Image folder (one subfolder per class), or a CIFAR / Fashion-MNIST directory."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    dataset: str = typer.Option("folder", help="folder, cifar or fashion-mnist."),
    split_files: Optional[str] = typer.Option(None, help="TRAIN.txt,TEST.txt listing <class>/<file> lines "
                                              "(default: train.txt/test.txt beside the folder, else a stratified 80/20 split)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone name or a 'treeseek train' directory."),
    weights: Optional[str] = typer.Option(None, help="Weights file for the backbone."),
    classes: Optional[int] = typer.Option(None, help="Use only the first N classes (alphabetical)."),
    per_class: Optional[int] = typer.Option(None, help="Use at most N images per class in each split."),
    taxonomy: Optional[str] = typer.Option(None, help="Evaluation taxonomy for mAHP, nDCG and mistake severity."),
    hierarchy: str = typer.Option(DEFAULT_HIERARCHY, help="The tree builder (as in 'treeseek fit'); "
                                  "average:16:cosine:names also weighs what the folder names mean."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    quick: bool = typer.Option(False, help="A small validation grid (for tries and tests)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    subclasses: str = typer.Option("auto", help=SUBCLASSES_HELP),
) -> None:
    """The main job: features, a model tuned on a validation split, an index, a report and pictures."""
    from treeseek.apps.jobs.config import ImageJob
    from treeseek.apps.jobs.main_job import run_main_job

    most = parse_subclasses(subclasses)

    job = ImageJob(source, dataset, _split_files(split_files), classes, per_class, backbone=backbone, weights=weights,
                   batch_size=batch_size, progress=progress)
    run_main_job(job, out, taxonomy=taxonomy, grid=QUICK_GRID if quick else None, hierarchy=hierarchy,
                 subclasses=most)
    typer.echo((out / "report.md").read_text())


QUICK_GRID = {"max_components": [64], "covariance": ["tied"], "edges_per_class": [0.5, 1.0], "alpha": [1.0, 3.0]}


def experiment(
    source: Path = typer.Argument(..., help="Image folder (one subfolder per class), or a CIFAR / Fashion-MNIST directory."),
    out: Path = typer.Option(..., "--out", help="Output directory (report.html, report.json, pictures)."),
    taxonomy: str = typer.Option(..., help="Taxonomy of the classes: the semantic baselines and mAHP use it."),
    dataset: str = typer.Option("folder", help="folder, cifar or fashion-mnist."),
    split_files: Optional[str] = typer.Option(None, help="TRAIN.txt,TEST.txt (as for 'treeseek run')."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone name or a 'treeseek train' directory."),
    weights: Optional[str] = typer.Option(None, help="Weights file for the backbone."),
    classes: Optional[int] = typer.Option(None, help="Use only the first N classes (alphabetical)."),
    per_class: Optional[int] = typer.Option(None, help="Use at most N images per class in each split."),
    perturbations: str = typer.Option("blur,saturation,occlusion", help="Robustness conditions ('' for none)."),
    examples: int = typer.Option(4, help="Example queries shown as image grids."),
    full_ranking: bool = typer.Option(True, help="Also score mAP over the whole ranking (slow on big sets)."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    quick: bool = typer.Option(False, help="A small validation grid (for tries and tests)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache directory (default OUT/cache)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    convention: str = typer.Option("treeseek", help="Also report the metrics as this peer defines them: barz, hpdh, "
                                   "deephash, pml or bertinetto."),
) -> None:
    """The paper's study: every baseline, the t/alpha grid search, robustness, and a self-contained HTML report."""
    from treeseek.apps.jobs.config import ImageJob
    from treeseek.apps.jobs.experiment import run_experiment
    from treeseek.evaluation.conventions import get_convention

    get_convention(convention)  # an unknown one fails before the features are extracted

    job = ImageJob(source, dataset, _split_files(split_files), classes, per_class, backbone=backbone, weights=weights,
                   batch_size=batch_size, progress=progress)
    report = run_experiment(job, out, taxonomy=taxonomy, perturbations=[p for p in perturbations.split(",") if p],
                            grid=QUICK_GRID if quick else None, examples=examples, full_ranking=full_ranking,
                            cache_dir=cache, convention=convention)
    for row, values in report["metrics"].items():
        typer.echo(f"{row:<40} mAP@10 {values['map@10']:.4f}  mAHP@250 {values['mahp@250']:.4f}")
    typer.echo(f"report: {out / 'report.html'}")


def train(
    source: Path = typer.Argument(..., help="Image folder with one subfolder per class."),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory (resumed when it exists)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone to fine-tune."),
    weights: Optional[str] = typer.Option(None, help="Weights file for the backbone."),
    epochs: Optional[int] = typer.Option(None, help="Epochs in total (default 10; --gaussian: 30; a resumed run "
                                         "continues to this number)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: SGD 0.01; --gaussian: Adam 0.001)."),
    batch_size: int = typer.Option(32, help="Images per step."),
    freeze_backbone: bool = typer.Option(False, help="Train only the classification head."),
    classes: Optional[int] = typer.Option(None, help="Use only the first N classes."),
    per_class: Optional[int] = typer.Option(None, help="Use at most N images per class."),
    device: str = typer.Option("auto", help="auto (a GPU when present), cpu or cuda."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    gaussian: bool = typer.Option(False, help="Learn a Gaussian latent space (MAPLE): cross-entropy + triplet loss "
                                  "+ X-means sub-classes, as a projection of the backbone's frozen features."),
    embed_dim: int = typer.Option(128, help="With --gaussian: dimensions of the embedding."),
    max_subclasses: int = typer.Option(4, "--subclasses", help="With --gaussian: most sub-classes per class "
                                       "(1: never split)."),
    end_to_end: bool = typer.Option(False, help="With --gaussian: fine-tune the whole network with MAPLE's loss "
                                    "and sub-classes (SGD, augmentation) instead of a head on frozen features; "
                                    "meant for a GPU."),
) -> None:
    """Fine-tune a classifier (cross-entropy, SGD, flips and +-30 degree rotations), or with --gaussian learn a
    Gaussian latent space (a head on frozen features; with --end-to-end, the whole network); each is usable as
    a backbone."""
    from treeseek.apps.jobs.config import ImageJob

    job = ImageJob(source, classes=classes, per_class=per_class, backbone=backbone, weights=weights,
                   batch_size=batch_size, device=device, progress=progress)
    if end_to_end and not gaussian:
        raise TreeseekError("--end-to-end trains with --gaussian's loss: add --gaussian (plain fine-tuning is the "
                            "default)")
    gaussian_settings = None
    if gaussian:
        from treeseek.training.gaussian_latent import GaussianTraining

        gaussian_settings = GaussianTraining(embed_dim=embed_dim, epochs=epochs or 30, lr=lr or 1e-3,
                                             max_subclasses=max_subclasses)
    if gaussian and not end_to_end:
        from treeseek.training.gaussian_checkpoint import train_gaussian_head

        head = train_gaussian_head(job.images(), job.load_backbone(), out, weights=job.weights, settings=gaussian_settings,
                                   batch_size=job.batch_size, progress=job.progress)
        for entry in head.history_:
            typer.echo(f"epoch {entry['epoch']}: loss {entry['loss']:.4f}, validation accuracy "
                       f"{entry['val_accuracy']:.1%}, {entry['subclasses']} sub-classes")
        typer.echo(f"checkpoint: {out} (use it as --backbone {out})")
        return
    from treeseek.training.classifier import train_classifier

    history = train_classifier(job.images(), out, backbone_name=job.backbone, weights=job.weights,
                               epochs=epochs or 10, lr=lr or 0.01, batch_size=job.batch_size,
                               freeze_backbone=freeze_backbone, device=job.device, progress=job.progress,
                               gaussian=gaussian_settings)
    for entry in history:
        typer.echo(f"epoch {entry['epoch']}: loss {entry['train_loss']:.4f}, validation accuracy "
                   f"{entry['val_accuracy']:.1%}" + (f", {entry['subclasses']} sub-classes" if gaussian else ""))
    typer.echo(f"checkpoint: {out} (use it as --backbone {out})")
