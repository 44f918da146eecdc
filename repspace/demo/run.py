"""A study: tune every arm with several seeds, evaluating (and, for seed 0, snapshotting) it
along the way; capture the base, the tuned models and the snapshots on the task inputs and on
general text; measure forgetting; compute the metrics, the trajectories and the claim checks,
and hand them to the report.

Everything is cached under ``OUT/cache`` (checkpoints by training settings, feature stores by
model and probe fingerprints), so a second run with the same settings only recomputes numbers.
The weight-space analysis (:func:`repspace.analysis.weights.weight_report`) of the seed-0
checkpoints is written to ``OUT/weights.json`` and ``OUT/weights.csv``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from repspace import metrics
from repspace.analysis.cache import cached_capture
from repspace.analysis.weights import weight_report
from repspace.capture import resolve_layers
from repspace.demo import claims as checks
from repspace.demo.forgetting import knowledge_accuracy, lm_loss, paraphrase_retrieval
from repspace.demo.settings import Arm, StudySettings
from repspace.errors import FormatError
from repspace.models import LoadedModel, export_checkpoint, load_model
from repspace.probes import Probe, iter_jsonl, load_probe
from repspace.results import WeightReport
from repspace.store import FeatureStore
from repspace.tune import tune
from repspace.tune.data import read_jsonl
from repspace.utils.device import resolve_device
from repspace.utils.files import json_text, write_text_atomic

#: Matrices with a longer side (a vocabulary embedding under full fine-tuning) get only their
#: norms in the study: their SVDs would cost more than all other matrices together.
WEIGHT_MAX_DIM = 4096
SETS = ("task", "general")
#: The suffix of the stores of last-token features (``task@last``, ``general@last``).
LAST = "@last"


@dataclass
class StudyResult:
    """Every number of a study (written to ``results.json``)."""

    settings: dict[str, Any]
    layers: list[str]
    methods: list[str]
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    trajectories: dict[str, list[dict[str, Any]]]
    checks: list[dict[str, Any]]
    verdict: dict[str, str]
    spectra: dict[str, list[float]] = field(default_factory=dict)
    weights: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "repspace-study", "version": 2, **asdict(self)}

    def method_summary(self, method: str) -> dict[str, Any]:
        return next(s for s in self.summary if s["method"] == method)

    @property
    def metric(self) -> str:
        """The task score's name: ``accuracy`` or ``exact_match``."""
        return "accuracy" if self.settings["task"] == "classification" else "exact_match"


def _subset_file(source: str, limit: int | None, folder: Path, task: str) -> Path:
    records = read_jsonl(source, task)[:limit]
    path = folder / f"{Path(source).stem}-{len(records)}.jsonl"
    if not path.exists():
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return path


def _steps_per_epoch(settings: StudySettings, train: Path) -> int:
    """Optimizer steps per epoch over ``train``."""
    return math.ceil(len(read_jsonl(train, settings.task)) / settings.batch_size)


def _epochs(arm: Arm, settings: StudySettings) -> tuple[int, dict]:
    """Epochs of the arm's (last) stage and its options: PT-PEFT splits ``epochs`` evenly, or,
    with one epoch, halves the training set per stage (see :func:`_train`)."""
    options = dict(arm.options)
    if arm.method != "pt-peft":
        return settings.epochs, options
    options["stage1_epochs"] = max(1, settings.epochs // 2)
    return max(1, settings.epochs - options["stage1_epochs"]), options


def _train(arm: Arm, seed: int, base: LoadedModel, settings: StudySettings, train: Path,
           evaluation: Path, folder: Path, device: str) -> Path:
    """The arm's tuned checkpoint for ``seed``, trained unless cached; seed 0 also writes a
    snapshot at every evaluation."""
    path = folder / f"{arm.label}-seed{seed}-{settings.key(arm, train, evaluation)}.pt"
    if path.exists():
        try:
            load_model(path, base=base)
            return path
        except FormatError:
            path.unlink()
    epochs, options = _epochs(arm, settings)
    data = train
    if arm.method == "pt-peft" and settings.epochs == 1:
        # one epoch in all: each stage sees half of the examples once
        records = read_jsonl(train, settings.task)
        data = _subset_file(str(train), len(records) // 2, folder, settings.task)
    # evaluation spacing from the full set, so that PT-PEFT's half-set stages do not get more
    every = math.ceil(_steps_per_epoch(settings, train) / settings.evaluations)
    tune(base, arm.method, task=settings.task, data=data, eval_data=evaluation, out=path,
         epochs=epochs, lr=arm.lr, batch_size=settings.batch_size,
         max_length=settings.max_length, seed=seed, device=device, progress=False,
         peft_folder=False, eval_every=every, snapshots=seed == 0, **options)
    return path


def _snapshots(checkpoint: Path) -> dict[int, Path]:
    """``{step: path}`` of the snapshots written beside ``checkpoint``."""
    pattern = re.compile(re.escape(checkpoint.stem) + r"\.step(\d+)\.pt$")
    found = {int(m.group(1)): p for p in checkpoint.parent.iterdir()
             if (m := pattern.match(p.name))}
    return dict(sorted(found.items()))


def _task_probe(path: Path, task: str) -> Probe:
    records = read_jsonl(path, task)
    key = "text" if task == "classification" else "prompt"
    return Probe(tuple(str(r.get("id", i)) for i, r in enumerate(records)),
                 tuple(r[key] for r in records), str(path))


def _paraphrase_probe(path: str, limit: int | None) -> Probe:
    """All first sentences, then all second sentences, of the first ``limit`` pairs."""
    records = [record for _, record in iter_jsonl(path, ("a", "b"))][:limit]
    ids = [f"{r['id']}/{side}" for side in ("a", "b") for r in records]
    texts = [r[side] for side in ("a", "b") for r in records]
    return Probe(tuple(ids), tuple(texts), path)


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the study's output folder, as ``results.json`` records it."""
    return Path(path).relative_to(out).as_posix()


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    return metrics.mean_std(present) if present else (None, None)


def _long_tokens(tokens: list[np.ndarray], length: int) -> list[np.ndarray]:
    """The first ``length`` token rows of every sample with at least that many."""
    return [t[:length] for t in tokens if t.shape[0] >= length]


class _Features:
    """The pooled (and, where kept, token) features of one model on the study's probe sets;
    ``last``: with ``last_token`` (decoder studies), the last real token's features, taken from
    the kept token rows or, for models captured without them, from stores named ``SET@last``
    (the same hidden state: the last row of a sample's token matrix)."""

    def __init__(self, stores: dict[str, Path], layers: list[str],
                 last_token: bool = False) -> None:
        self.pooled: dict[str, dict[str, np.ndarray]] = {}
        self.tokens: dict[str, dict[str, list[np.ndarray]]] = {}
        self.last: dict[str, dict[str, np.ndarray]] = {}
        for name, path in stores.items():
            with FeatureStore(path) as store:
                if name.endswith(LAST):
                    self.last[name.removesuffix(LAST)] = {la: store.pooled(la) for la in layers}
                    continue
                names = layers if name in SETS else layers[-1:]
                self.pooled[name] = {la: store.pooled(la) for la in names}
                if name in SETS and store.meta.get("tokens"):
                    self.tokens[name] = {la: store.tokens(la) for la in layers}
        if last_token:
            for name in set(self.tokens) - set(self.last):
                self.last[name] = {la: np.stack([t[-1] for t in rows])
                                   for la, rows in self.tokens[name].items()}


def _space(features: _Features, probe_set: str, layer: str, rank_tokens: int,
           base_rank: float | None = None) -> dict[str, Any]:
    pooled = features.pooled[probe_set][layer]
    row: dict[str, Any] = {"effective_rank": metrics.effective_rank(pooled)}
    if base_rank is not None:
        row["effective_rank_ratio"] = row["effective_rank"] / base_rank
    tokens = features.tokens.get(probe_set, {}).get(layer)
    long = _long_tokens(tokens, rank_tokens) if tokens else []
    row["rank_ratio"] = metrics.rank_ratio(long) if len(long) >= 2 else None
    row["rank_samples"] = len(long)
    return row


def run_study(out: str | Path = "repspace-demo", *, settings: StudySettings | None = None,
              device: str | None = None, progress: bool = True) -> StudyResult:
    """Run the whole study into ``out`` and return its numbers (see :class:`StudyResult`).

    ``device`` overrides the preset's (``auto``: CUDA if present, else the CPU).
    """
    from repspace.demo.report import write_report

    settings = settings or StudySettings()
    device = device or settings.device
    out = Path(out)
    cache = out / "cache"
    base_pt = cache / f"base-{settings.study}.pt"
    if not base_pt.exists():
        export_checkpoint(settings.base, base_pt)
    base = load_model(base_pt)
    train = _subset_file(settings.train, settings.train_limit, cache / "data", settings.task)
    evaluation = _subset_file(settings.eval, settings.eval_limit, cache / "data", settings.task)
    probes = {"task": _task_probe(evaluation, settings.task),
              "general": load_probe(settings.general, limit=settings.general_limit)}
    if settings.paraphrases:
        probes["paraphrase"] = _paraphrase_probe(settings.paraphrases, settings.paraphrase_limit)
    jobs = [(arm, seed) for arm in settings.arms for seed in range(settings.seeds)]
    checkpoints = {}
    for arm, seed in tqdm(jobs, desc="tune", unit="run", disable=not progress):
        checkpoints[arm.label, seed] = _train(arm, seed, base, settings, train, evaluation,
                                              cache / "checkpoints", device)
    blocks = resolve_layers(base.backbone, "blocks")
    layers = list(dict.fromkeys(blocks[::settings.layer_stride] + blocks[-1:]))

    def capture(model: LoadedModel, name: str, tokens: bool, which: list[str],
                pooling: str = "mean") -> Path:
        length = settings.max_length if name == "task" else settings.general_length
        return cached_capture(model, probes[name], cache_dir=cache, layers=which,
                              pooling=pooling, tokens=tokens, max_length=length, batch_size=32,
                              device=device, progress=False, skip_first=settings.skip_first)

    models = [("base", None)] + [(arm.label, seed) for arm, seed in jobs]
    stores: dict[Any, dict[str, Path]] = {}
    snapshot_stores: dict[str, dict[int, Path]] = {}
    forgetting: dict[Any, dict[str, Any]] = {}
    knowledge = (read_jsonl(settings.knowledge, "generation")[:settings.knowledge_limit]
                 if settings.knowledge else None)
    for label, seed in tqdm(models, desc="measure", unit="model", disable=not progress):
        model = base if label == "base" else load_model(checkpoints[label, seed], base=base)
        keep_tokens = seed in (None, 0)
        stores[label, seed] = {
            name: capture(model, name, keep_tokens and name in SETS,
                          layers if name in SETS else layers[-1:]) for name in probes}
        if settings.last_token and not keep_tokens:  # else read from the token rows
            stores[label, seed].update({name + LAST: capture(model, name, False, layers, "last")
                                        for name in SETS})
        if knowledge is not None:
            forgetting[label, seed] = _decoder_forgetting(model, knowledge, probes["general"],
                                                          settings, device)
        if seed == 0:
            snapshot_stores[label] = {
                step: capture(load_model(path, base=base), "task", False, layers[-1:])
                for step, path in _snapshots(checkpoints[label, 0]).items()}
    base_score = _base_score(base, evaluation, settings, device)
    result = _analyse(settings, layers, checkpoints, stores, snapshot_stores, forgetting,
                      jobs, base_score, out)
    weights = weight_report(base, [checkpoints[arm.label, 0] for arm in settings.arms],
                            names=[arm.label for arm in settings.arms], max_dim=WEIGHT_MAX_DIM,
                            progress=progress)
    weights.to_json(out / "weights.json")
    weights.to_csv(out / "weights.csv")
    result.weights = weight_summary(weights)
    json_text(result.to_dict(), out / "results.json")
    write_report(result, out, weights)
    return result


def _decoder_forgetting(model: LoadedModel, knowledge: list[dict], general: Probe,
                        settings: StudySettings, device: str) -> dict[str, Any]:
    """General-knowledge accuracy (and per-question hits) and LM loss on general text."""
    runner = model.model.to(resolve_device(device))
    accuracy, hits = knowledge_accuracy(runner, model.tokenizer, knowledge)
    loss = lm_loss(runner, model.tokenizer, list(general.texts),
                   max_length=settings.general_length)
    runner.to("cpu")
    return {"knowledge": accuracy, "knowledge_hits": hits, "lm_loss": loss}


def _base_score(base: LoadedModel, evaluation: Path, settings: StudySettings,
                device: str) -> float:
    """The task score before tuning: the majority label's share for classification (an
    untrained head), the base's exact match for generation."""
    records = read_jsonl(evaluation, settings.task)
    if settings.task == "classification":
        return Counter(r["label"] for r in records).most_common(1)[0][1] / len(records)
    from repspace.tune.data import collate, encode_generation
    from repspace.tune.tasks import Generator

    data = encode_generation(records, base.tokenizer, settings.max_length)
    generator = Generator(base.model.to(resolve_device(device))).eval()
    pad = base.tokenizer.pad_token_id or 0
    hits = []
    with torch.inference_mode():
        for start in range(0, len(data), settings.batch_size):
            batch = collate(data, list(range(start, min(start + settings.batch_size,
                                                        len(data)))), pad)
            device_batch = {k: v.to(next(base.model.parameters()).device)
                            for k, v in batch.items()}
            hits.append(generator.per_example(device_batch)[1].cpu())
    base.model.to("cpu")
    return float(torch.cat(hits).float().mean())


def weight_summary(report: WeightReport) -> list[dict[str, Any]]:
    """The per-method weight summary for ``results.json``: undefined entries (a mean over no
    changed matrix) are left out rather than written as null."""
    return [{"method": row["model"], **{k: v for k, v in row.items()
                                        if k not in ("model", "method") and v is not None}}
            for row in report.summary()]


def _analyse(settings: StudySettings, layers: list[str], checkpoints: dict, stores: dict,
             snapshot_stores: dict, forgetting: dict, jobs: list, base_score: float,
             out: Path) -> StudyResult:
    last = layers[-1]
    base = _Features(stores["base", None], layers, settings.last_token)
    base_space = {s: [_space(base, s, la, settings.rank_tokens) for la in layers] for s in SETS}
    base_info: dict[str, Any] = {
        "stores": {k: _relative(v, out) for k, v in stores["base", None].items()},
        "score": base_score, **{f"{s}_space": base_space[s] for s in SETS}}
    if "paraphrase" in base.pooled:
        base_info["retrieval"] = paraphrase_retrieval(base.pooled["paraphrase"][last])
    if forgetting:
        base_info.update({k: v for k, v in forgetting["base", None].items()
                          if k != "knowledge_hits"})
    runs, features = [], {}
    for arm, seed in jobs:
        tuned = _Features(stores[arm.label, seed], layers, settings.last_token)
        features[arm.label, seed] = tuned
        payload = torch.load(checkpoints[arm.label, seed], weights_only=True)
        training = payload["training"]
        per_set = {}
        for s in SETS:
            rows = []
            for i, layer in enumerate(layers):
                x, y = base.pooled[s][layer], tuned.pooled[s][layer]
                row = {"layer": layer, "cka": metrics.linear_cka(x, y),
                       "cka_debiased": metrics.linear_cka(x, y, debiased=True),
                       **_space(tuned, s, layer, settings.rank_tokens,
                                base_space[s][i]["effective_rank"])}
                if s in base.last:
                    row["cka_last_token"] = metrics.linear_cka(base.last[s][layer],
                                                               tuned.last[s][layer])
                rows.append(row)
            per_set[s] = rows
        run = {"method": arm.label, "seed": seed,
               "checkpoint": _relative(checkpoints[arm.label, seed], out),
               "stores": {k: _relative(v, out) for k, v in stores[arm.label, seed].items()},
               "score": training["final_metric"], "history": training["history"],
               "trainable_params": training["trainable_params"],
               "total_params": training["total_params"], **per_set}
        if "paraphrase" in tuned.pooled:
            run["retrieval"] = paraphrase_retrieval(tuned.pooled["paraphrase"][last])
        if forgetting:
            run.update(forgetting[arm.label, seed])
        runs.append(run)
    labels = [arm.label for arm in settings.arms]
    summary = [_summarise(label, [r for r in runs if r["method"] == label], layers)
               for label in labels]
    trajectories = {label: _trajectory(base, snapshot_stores[label], features[label, 0],
                                       next(r for r in runs if r["method"] == label),
                                       base_score, last) for label in labels}
    items = {"task": len(base.pooled["task"][last]),
             "retrieval": len(base.pooled["paraphrase"][last]) if "paraphrase" in base.pooled
             else 0, "knowledge": len(forgetting["base", None]["knowledge_hits"])
             if forgetting else 0}
    found = _checks(settings, base, features, summary, trajectories, last, items)
    spectra = {"base": metrics.singular_values(base.pooled["task"][last]).tolist(),
               **{label: metrics.singular_values(features[label, 0].pooled["task"][last]).tolist()
                  for label in labels}}
    return StudyResult(settings.to_dict() | {"smoke_run": settings.smoke_reason}, layers,
                       labels, base_info, runs, summary, trajectories, found,
                       checks.summarise(found), spectra)


def _summarise(label: str, runs: list[dict], layers: list[str]) -> dict[str, Any]:
    """Means and standard deviations over seeds of one arm; last-layer numbers and per-layer
    curves on both probe sets; whether its score had plateaued."""
    row: dict[str, Any] = {"method": label, "seeds": len(runs)}
    values = {"score": [r["score"] for r in runs]}
    for s in SETS:
        for key in ("cka", "cka_debiased", "effective_rank", "effective_rank_ratio",
                    "rank_ratio", "cka_last_token"):
            if key == "cka_last_token" and key not in runs[0][s][-1]:
                continue  # encoders: no last-token measure
            values[f"{s}_{key}"] = [r[s][-1].get(key) for r in runs]
            row[f"{s}_{key}_by_layer"] = [
                _mean_std([r[s][i].get(key) for r in runs])[0] for i in range(len(layers))]
    for key in ("retrieval", "knowledge", "lm_loss"):
        if key in runs[0]:
            values[key] = [r[key] for r in runs]
    for name, vals in values.items():
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(vals)
    flag = checks.plateau([r["history"] for r in runs])
    row |= {"last_gain": flag["last_gain"], "plateaued": flag["plateaued"],
            "still_rising": flag["still_rising"],
            "plateau_test": {k: flag[k] for k in ("gained", "lost", "p")}}
    row["trainable_params"] = runs[0]["trainable_params"]
    row["trainable_percent"] = 100 * runs[0]["trainable_params"] / runs[0]["total_params"]
    return row


def _trajectory(base: _Features, snapshots: dict[int, Path], final: _Features, run: dict,
                base_score: float, last: str) -> list[dict[str, Any]]:
    """Seed 0's path in the plane (task score, preservation on the task inputs at the last
    layer): the base, every snapshot, the final model."""
    base_rows = base.pooled["task"][last]
    base_rank = metrics.effective_rank(base_rows)
    scores = {h["step"]: h.get("accuracy", h.get("exact_match")) for h in run["history"]}
    points = [{"step": 0, "score": base_score, "cka": 1.0, "effective_rank_ratio": 1.0}]
    final_step = max(scores)
    for step, path in snapshots.items():
        if step == final_step:
            continue
        with FeatureStore(path) as store:
            rows = store.pooled(last)
        points.append({"step": step, "score": scores[step],
                       "cka": metrics.linear_cka(base_rows, rows),
                       "effective_rank_ratio": metrics.effective_rank(rows) / base_rank})
    rows = final.pooled["task"][last]
    points.append({"step": final_step, "score": scores[final_step],
                   "cka": metrics.linear_cka(base_rows, rows),
                   "effective_rank_ratio": metrics.effective_rank(rows) / base_rank})
    return points


def _checks(settings: StudySettings, base: _Features, features: dict, summary: list[dict],
            trajectories: dict, last: str, items: dict[str, int]) -> list[dict[str, Any]]:
    """The claim checks, representation ones on both probe sets, the CKA ones also on the
    last token where it was captured (probe set ``SET, last token``; see :mod:`claims`)."""
    labels = {row["method"] for row in summary}
    rows = {row["method"]: row for row in summary}
    seeds = settings.seeds

    def arm(label: str, probe_set: str, kind: str = "pooled") -> list[np.ndarray]:
        return [getattr(features[label, s], kind)[probe_set][last] for s in range(seeds)]

    def erank_ratio(base_rows: np.ndarray, tuned: np.ndarray) -> float:
        return metrics.effective_rank(tuned) / metrics.effective_rank(base_rows)

    pairs = [("prefix", "lora", "LoRA bends the space more than prefix tuning", "CKA"),
             ("prefix", "adapter", "adapters bend the space more than prefix tuning", "CKA"),
             ("prefix", "lora", "LoRA lowers the effective rank more than prefix tuning",
              "rank"),
             ("pt-peft-lora", "lora", "PT-PEFT (LoRA) keeps more of the space than LoRA", "CKA"),
             ("pt-peft-adapter", "adapter", "PT-PEFT (adapter) keeps more of the space than "
              "adapters", "CKA")]
    found = []
    for kept, bent, claim, what in pairs:
        if not {kept, bent} <= labels:
            continue
        for s in SETS:
            statistic = metrics.linear_cka if what == "CKA" else erank_ratio
            name = "linear CKA to base" if what == "CKA" else "effective rank / base's"
            found.append(checks.representation_check(
                claim, s, statistic, base.pooled[s][last], arm(kept, s), arm(bent, s),
                labels=(kept, bent), n_boot=settings.bootstrap, what=name))
            if what == "CKA" and s in base.last:
                found.append(checks.representation_check(
                    claim, f"{s}, last token", statistic, base.last[s][last],
                    arm(kept, s, "last"), arm(bent, s, "last"), labels=(kept, bent),
                    n_boot=settings.bootstrap, what=name))
    n = items["task"] * seeds
    score = "accuracy" if settings.task == "classification" else "exact match"
    if {"lora", "prefix"} <= labels:
        found.append(checks.proportion_check(
            "prefix tuning alone scores below LoRA", "task",
            ("lora", rows["lora"]["score_mean"]), ("prefix", rows["prefix"]["score_mean"]), n,
            what=score))
    for second in ("lora", "adapter"):
        pt = f"pt-peft-{second}"
        if {pt, second} <= labels:
            found.append(checks.proportion_check(
                f"PT-PEFT ({second}) matches the task score of {second}", "task",
                (pt, rows[pt]["score_mean"]), (second, rows[second]["score_mean"]), n,
                margin=checks.SCORE_MARGIN, what=score))
            found.append(checks.trajectory_check(
                f"at equal task score, PT-PEFT ({second}) keeps more of the space than "
                f"{second}", (pt, trajectories[pt]), (second, trajectories[second])))
    forgetting_key = "knowledge" if "knowledge_mean" in rows.get("lora", {}) else "retrieval"
    if {"prefix", "lora"} <= labels and f"{forgetting_key}_mean" in rows["lora"]:
        what = ("general-knowledge accuracy" if forgetting_key == "knowledge"
                else "paraphrase retrieval")
        for kept in ("prefix", "pt-peft-lora"):
            if kept in labels:
                found.append(checks.proportion_check(
                    f"{kept} forgets less than LoRA", "general",
                    (kept, rows[kept][f"{forgetting_key}_mean"]),
                    ("lora", rows["lora"][f"{forgetting_key}_mean"]), items[forgetting_key] * seeds,
                    what=what))
    return found
