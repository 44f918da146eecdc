"""The demo study: tune every method with several seeds on the shipped task, capture base and
tuned models on the general probe, the task's eval set and the paraphrase set, compute the
metrics and statistics, and hand them to the report.

Everything is cached under ``OUT/cache`` (checkpoints by training settings, feature stores by
model and probe fingerprints), so a second run with the same settings only recomputes numbers.
The weight-space analysis (:func:`repspace.analysis.weights.weight_report`) of the seed-0
checkpoints is written to ``OUT/weights.json`` and ``OUT/weights.csv``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from repspace import metrics
from repspace.analysis.cache import cached_capture
from repspace.analysis.compare import pair_metrics, space_metrics
from repspace.analysis.weights import weight_report
from repspace.capture import resolve_layers
from repspace.demo.settings import ARMS, Arm, DemoSettings
from repspace.errors import FormatError
from repspace.models import LoadedModel, export_checkpoint, load_model
from repspace.probes import Probe, iter_jsonl, load_probe
from repspace.results import WeightReport
from repspace.store import FeatureStore
from repspace.tune import tune
from repspace.tune.data import read_jsonl
from repspace.utils.files import finite_json

#: Matrices with a longer side (the 30,522 x 384 vocabulary embedding of full fine-tuning) get
#: only their norms in the demo: their SVDs would cost more than all other matrices together.
WEIGHT_MAX_DIM = 4096


@dataclass
class DemoResult:
    """Every number of the study (written to ``results.json``)."""

    settings: dict[str, Any]
    layers: list[str]
    methods: list[str]
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    stats: dict[str, Any]
    claims: dict[str, Any]
    spectra: dict[str, list[float]] = field(default_factory=dict)
    umap: dict[str, Any] = field(default_factory=dict)
    weights: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "repspace-demo", "version": 1, **asdict(self)}

    def method_summary(self, method: str) -> dict[str, Any]:
        return next(s for s in self.summary if s["method"] == method)


def _subset_file(source: str, limit: int | None, folder: Path, task: str) -> Path:
    records = read_jsonl(source, task)[:limit]
    path = folder / f"{Path(source).stem}-{len(records)}.jsonl"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _train(arm: Arm, seed: int, base: LoadedModel, settings: DemoSettings, train: Path,
           evaluation: Path, folder: Path, device: str, progress: bool) -> Path:
    """The arm's tuned checkpoint for ``seed``, trained unless cached."""
    path = folder / f"{arm.label}-seed{seed}-{settings.key(arm, train, evaluation)}.pt"
    if path.exists():
        try:
            load_model(path, base=base)
            return path
        except FormatError:
            path.unlink()
    options = dict(arm.options)
    epochs = settings.epochs
    if arm.method == "pt-peft":
        options["stage1_epochs"] = max(1, epochs // 2)
        epochs = max(1, epochs - options["stage1_epochs"])
    tune(base, arm.method, data=train, eval_data=evaluation, out=path, epochs=epochs, lr=arm.lr,
         batch_size=settings.batch_size, max_length=settings.max_length, seed=seed,
         device=device, progress=progress, peft_folder=False, **options)
    return path


def _paraphrase_probe(path: str, limit: int | None) -> Probe:
    """All first sentences, then all second sentences, of the first ``limit`` pairs."""
    records = [record for _, record in iter_jsonl(path, ("a", "b"))][:limit]
    ids = [f"{r['id']}/{side}" for side in ("a", "b") for r in records]
    texts = [r[side] for side in ("a", "b") for r in records]
    return Probe(tuple(ids), tuple(texts), path)


def _task_probe(path: Path) -> Probe:
    records = read_jsonl(path, "classification")
    return Probe(tuple(str(r.get("id", i)) for i, r in enumerate(records)),
                 tuple(r["text"] for r in records), str(path))


def _retrieval(features: np.ndarray) -> float:
    """Mean of a->b and b->a top-1 paraphrase retrieval accuracy (rows: all a, then all b)."""
    half = features.shape[0] // 2
    a, b = features[:half], features[half:]
    return (metrics.retrieval_accuracy(a, b) + metrics.retrieval_accuracy(b, a)) / 2


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the demo's output folder, as ``results.json`` records it."""
    return Path(path).relative_to(out).as_posix()


def _mean_std(values: list[float]) -> tuple[float, float]:
    return metrics.mean_std([v for v in values if v is not None]) if any(
        v is not None for v in values) else (None, None)


def run_demo(out: str | Path = "repspace-demo", *, settings: DemoSettings | None = None,
             device: str = "auto", progress: bool = True) -> DemoResult:
    """Run the whole study into ``out`` and return its numbers (see :class:`DemoResult`)."""
    from repspace.demo.report import write_report

    settings = settings or DemoSettings()
    out = Path(out)
    cache = out / "cache"
    base_pt = cache / "base.pt"
    if not base_pt.exists():
        export_checkpoint(settings.base, base_pt)
    base = load_model(base_pt)
    train = _subset_file(settings.train, settings.train_limit, cache / "data", "classification")
    evaluation = _subset_file(settings.eval, settings.eval_limit, cache / "data",
                              "classification")
    probes = {"probe": load_probe(limit=settings.probe_limit), "task": _task_probe(evaluation),
              "paraphrase": _paraphrase_probe(settings.paraphrases,
                                                settings.paraphrase_limit)}
    jobs = [(arm, seed) for arm in ARMS for seed in range(settings.seeds)]
    checkpoints = {}
    for arm, seed in tqdm(jobs, desc="tune", unit="run", disable=not progress):
        checkpoints[arm.label, seed] = _train(arm, seed, base, settings, train, evaluation,
                                              cache / "checkpoints", device, False)
    layers = resolve_layers(base.backbone, "blocks")
    captured: dict[Any, dict[str, Path]] = {}
    models = [("base", None, base)] + [
        (arm.label, seed, None) for arm, seed in jobs]
    for label, seed, loaded in tqdm(models, desc="capture", unit="model", disable=not progress):
        model = loaded or load_model(checkpoints[label, seed], base=base)
        stores = {}
        for name, probe in probes.items():
            stores[name] = cached_capture(
                model, probe, cache_dir=cache, layers=layers if name != "paraphrase"
                else layers[-1:], pooling="mean", tokens=name == "probe",
                max_length=settings.max_length if name == "task" else 128, batch_size=64,
                device=device, progress=False)
        captured[label, seed] = stores
    result = _analyse(settings, base, layers, checkpoints, captured, jobs, out)
    reason = smoke_reason(settings)
    if reason:
        result.settings["smoke_run"] = reason
    weights = weight_report(base, [checkpoints[arm.label, 0] for arm in ARMS],
                            names=[arm.label for arm in ARMS], max_dim=WEIGHT_MAX_DIM,
                            progress=progress)
    weights.to_json(out / "weights.json")
    weights.to_csv(out / "weights.csv")
    result.weights = weight_summary(weights)
    (out / "results.json").write_text(json.dumps(finite_json(result.to_dict()), indent=2) + "\n")
    write_report(result, out, weights)
    return result


def smoke_reason(settings: DemoSettings) -> str | None:
    """Why the numbers of a run with ``settings`` mean nothing (those of ``--quick``: a smoke
    run of the pipeline), or ``None``."""
    if settings != DemoSettings.quick().with_seeds(settings.seeds):
        return None
    return (f"--quick: {settings.train_limit} training examples, {settings.epochs} epoch, "
            f"{settings.seeds} seed{'s' if settings.seeds > 1 else ''}; the methods are far "
            "from trained")


def weight_summary(report: WeightReport) -> list[dict[str, Any]]:
    """The per-method weight summary for ``results.json``: undefined entries (a mean over no
    changed matrix) are left out rather than written as null."""
    return [{"method": row["model"], **{k: v for k, v in row.items()
                                        if k not in ("model", "method") and v is not None}}
            for row in report.summary()]


def _analyse(settings: DemoSettings, base: LoadedModel, layers: list[str],
             checkpoints: dict, captured: dict, jobs: list, out: Path) -> DemoResult:
    last = layers[-1]
    base_stores = captured["base", None]
    with FeatureStore(base_stores["probe"]) as s, FeatureStore(base_stores["task"]) as t, \
            FeatureStore(base_stores["paraphrase"]) as p:
        base_probe = {layer: s.pooled(layer) for layer in layers}
        base_task = {layer: t.pooled(layer) for layer in layers}
        base_space = {layer: space_metrics(base_probe[layer], s.tokens(layer)) for layer in layers}
        base_info = {"stores": {k: _relative(v, out) for k, v in base_stores.items()},
                     "effective_rank": [base_space[la]["effective_rank"] for la in layers],
                     "rank_ratio": [base_space[la]["rank_ratio"] for la in layers],
                     "retrieval": _retrieval(p.pooled(last)),
                     "total_params": sum(x.numel() for x in base.model.parameters())}
    spectra = {"base": metrics.singular_values(base_probe[last]).tolist()}
    runs, last_features = [], {}
    for arm, seed in jobs:
        stores = captured[arm.label, seed]
        payload = torch.load(checkpoints[arm.label, seed], weights_only=True)
        training = payload["training"]
        per_layer = []
        with FeatureStore(stores["probe"]) as s, FeatureStore(stores["task"]) as t, \
                FeatureStore(stores["paraphrase"]) as p:
            for layer in layers:
                pooled = s.pooled(layer)
                task_pooled = t.pooled(layer)
                per_layer.append({
                    "layer": layer, **pair_metrics(base_probe[layer], pooled, k=10),
                    **space_metrics(pooled, s.tokens(layer)),
                    "task_cka": metrics.linear_cka(base_task[layer], task_pooled),
                    "task_cka_debiased": metrics.linear_cka(base_task[layer], task_pooled,
                                                            debiased=True)})
            retrieval = _retrieval(p.pooled(last))
            last_features[arm.label, seed] = s.pooled(last)
        if seed == 0:
            spectra[arm.label] = metrics.singular_values(last_features[arm.label, 0]).tolist()
        runs.append({"method": arm.label, "seed": seed,
                     "checkpoint": _relative(checkpoints[arm.label, seed], out),
                     "stores": {k: _relative(v, out) for k, v in stores.items()},
                     "accuracy": training["final_metric"],
                     "trainable_params": training["trainable_params"],
                     "layers": per_layer, "retrieval": retrieval})
    labels = list(dict.fromkeys(arm.label for arm, _ in jobs))
    summary = [_summarise(label, [r for r in runs if r["method"] == label], base_info,
                          base_probe[last], [last_features[k] for k in sorted(last_features)
                                             if k[0] == label], settings)
               for label in labels]
    stats = _statistics(runs, base_probe[last], last_features, settings)
    claims = evaluate_claims(summary)
    from repspace.demo.embedding import umap_coordinates

    umap = umap_coordinates(base_probe[last], {label: last_features[label, 0]
                                               for label in labels}, settings.umap_points)
    return DemoResult(settings.to_dict(), layers, labels, base_info, runs, summary, stats,
                      claims, spectra, umap)


def _summarise(label: str, runs: list[dict], base_info: dict, base_last: np.ndarray,
               tuned_last: list[np.ndarray], settings: DemoSettings) -> dict[str, Any]:
    def values(key: str, index: int = -1) -> list[float]:
        return [r["layers"][index][key] for r in runs]

    row: dict[str, Any] = {"method": label, "seeds": len(runs)}
    for name, vals in {
        "accuracy": [r["accuracy"] for r in runs],
        "cka_last": values("cka"),
        "cka_last_debiased": values("cka_debiased"),
        "cka_mean_layers": [float(np.mean([la["cka"] for la in r["layers"]])) for r in runs],
        "task_cka_last": values("task_cka"),
        "rank_ratio_last": values("rank_ratio"),
        "effective_rank_last": values("effective_rank"),
        "procrustes_last": values("procrustes"),
        "mutual_knn_last": values("mutual_knn"),
        "retrieval": [r["retrieval"] for r in runs],
    }.items():
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(vals)
    row["cka_by_layer_mean"] = [float(np.mean([r["layers"][i]["cka"] for r in runs]))
                                for i in range(len(runs[0]["layers"]))]
    row["cka_by_layer_std"] = [metrics.mean_std([r["layers"][i]["cka"] for r in runs])[1]
                               for i in range(len(runs[0]["layers"]))]
    row["effective_rank_by_layer_mean"] = [
        float(np.mean([r["layers"][i]["effective_rank"] for r in runs]))
        for i in range(len(runs[0]["layers"]))]

    def seed_mean_cka(base_rows: np.ndarray, *tuned: np.ndarray) -> float:
        return float(np.mean([metrics.linear_cka(base_rows, t) for t in tuned]))

    _, low, high = metrics.bootstrap_ci(seed_mean_cka, base_last, *tuned_last,
                                        n_boot=settings.bootstrap, seed=0, method="normal")
    row["cka_last_ci"] = [low, high]
    row["trainable_params"] = runs[0]["trainable_params"]
    row["trainable_percent"] = 100 * runs[0]["trainable_params"] / base_info["total_params"]
    return row


def _statistics(runs: list[dict], base_last: np.ndarray, last: dict,
                settings: DemoSettings) -> dict[str, Any]:
    """Is the space kept better by prefix tuning than by LoRA? A permutation test over seeds
    and a paired bootstrap over probe samples of the CKA difference at the last layer."""
    def cka(label: str) -> list[float]:
        return [r["layers"][-1]["cka"] for r in runs if r["method"] == label]

    seeds = sorted(k[1] for k in last if k[0] == "prefix")

    def difference(base_rows: np.ndarray, *pairs: np.ndarray) -> float:
        half = len(pairs) // 2
        return float(np.mean([metrics.linear_cka(base_rows, p) - metrics.linear_cka(base_rows, q)
                              for p, q in zip(pairs[:half], pairs[half:], strict=True)]))

    point, low, high = metrics.bootstrap_ci(
        difference, base_last, *[last["prefix", s] for s in seeds],
        *[last["lora", s] for s in seeds], n_boot=settings.bootstrap, seed=1, method="normal")
    found = {"prefix": cka("prefix"), "lora": cka("lora"), "difference": point,
             "difference_ci": [low, high],
             "test": "one-sided two-sample permutation test over seeds (exact); paired "
                     "bootstrap over probe samples for the CI of the difference"}
    if len(seeds) > 1:  # with one seed per method there is no permutation distribution
        found["permutation_p"] = metrics.permutation_test(cka("prefix"), cka("lora"),
                                                          alternative="greater")
    else:
        found["permutation"] = "n/a (1 seed)"
    return {"prefix_vs_lora_cka_last": found}


def evaluate_claims(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the claim against the numbers: LoRA and adapters bend the space (lower CKA at the
    last layer than prefix tuning), prefix tuning keeps it, PT-PEFT reaches the accuracy of
    LoRA/adapters (within 1 point) with more of the space kept."""
    rows = {s["method"]: s for s in summary}
    cka = {m: r["cka_last_mean"] for m, r in rows.items()}
    acc = {m: r["accuracy_mean"] for m, r in rows.items()}
    checks = {
        "lora_distorts_more_than_prefix": cka["lora"] < cka["prefix"],
        "adapter_distorts_more_than_prefix": cka["adapter"] < cka["prefix"],
        "pt_peft_lora_keeps_more_than_lora": cka["pt-peft-lora"] > cka["lora"],
        "pt_peft_adapter_keeps_more_than_adapter": cka["pt-peft-adapter"] > cka["adapter"],
        "pt_peft_lora_matches_lora_accuracy": acc["pt-peft-lora"] >= acc["lora"] - 0.01,
        "pt_peft_adapter_matches_adapter_accuracy": acc["pt-peft-adapter"] >= acc["adapter"] - 0.01,
        "prefix_scores_below_lora": acc["prefix"] < acc["lora"],
    }
    return {"checks": checks, "holds": all(checks.values()),
            "cka_last": cka, "accuracy": acc}
