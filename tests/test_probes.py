"""Probe sets: text and JSONL parsing, stable ids, errors naming the line, fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from repspace.errors import FormatError, InputError, RepspaceError
from repspace.probes import Probe, load_probe, text_id


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_text_id_is_sha256_prefix() -> None:
    assert text_id("Hello world.") == sha16("Hello world.")
    assert len(text_id("x")) == 16
    assert text_id("Grüße, café") == sha16("Grüße, café")
    assert text_id("a") != text_id("b")


def test_text_file_skips_blank_lines_and_hashes_ids(tmp_path: Path) -> None:
    path = tmp_path / "probe.txt"
    path.write_text("  The cat sat.  \n\n   \nA dog barked loudly.\r\nÉté à Paris.\n",
                    encoding="utf-8")
    probe = load_probe(path)
    assert probe.texts == ("The cat sat.", "A dog barked loudly.", "Été à Paris.")
    assert probe.ids == tuple(sha16(t) for t in probe.texts)
    assert len(probe) == 3
    assert probe.source == str(path)
    again = load_probe(path)
    assert again.ids == probe.ids
    assert again.fingerprint == probe.fingerprint


def test_text_file_ids_do_not_depend_on_position(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("first one\nsecond one\n", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("\nsecond one\nfirst one\n", encoding="utf-8")
    assert load_probe(a).ids == tuple(reversed(load_probe(b).ids))


def test_byte_order_mark_is_not_part_of_the_first_sample(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"Hello there.\nSecond line.\n")
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfHello there.\nSecond line.\n")
    assert load_probe(bom).texts == load_probe(plain).texts
    assert load_probe(bom).ids == load_probe(plain).ids


def test_jsonl_with_and_without_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "probe.jsonl", [
        {"id": "q1", "text": "What is this?"},
        {"text": "No id here."},
        {"id": 7, "text": "Numeric id."},
        {"id": None, "text": "Null id."},
    ])
    probe = load_probe(path)
    assert probe.texts == ("What is this?", "No id here.", "Numeric id.", "Null id.")
    assert probe.ids == ("q1", sha16("No id here."), "7", sha16("Null id."))


def test_jsonl_skips_blank_lines_and_keeps_whitespace_in_text(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    path.write_text('{"id": "a", "text": "  padded  "}\n\n   \n{"id": "b", "text": "x"}\n',
                    encoding="utf-8")
    probe = load_probe(path)
    assert probe.ids == ("a", "b")
    assert probe.texts == ("  padded  ", "x")


def test_json_suffix_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "probe.json", [{"id": "x", "text": "hello"}])
    assert load_probe(path).ids == ("x",)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n{"text": "ok too"}\n',
                    encoding="utf-8")
    with pytest.raises(FormatError, match="invalid JSON") as info:
        load_probe(path)
    assert f"{path}:3:" in str(info.value)


@pytest.mark.parametrize("record", [{"id": "a"}, {"text": 5}, ["text"], "just a string"])
def test_jsonl_record_without_text_string(tmp_path: Path, record: object) -> None:
    path = write_jsonl(tmp_path / "probe.jsonl", [{"text": "fine"}, record])
    with pytest.raises(FormatError, match='"text"') as info:
        load_probe(path)
    assert f"{path}:2:" in str(info.value)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_bytes_name_the_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"probe{suffix}"
    lines = [b'{"text": "one"}', b'{"text": "two"}', b'{"text": "caf\xe9"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(FormatError, match="UTF-8") as info:
        load_probe(path)
    assert f"{path}:3:" in str(info.value)


@pytest.mark.parametrize("name,content", [("empty.txt", b""), ("blank.txt", b"\n  \n\t\n"),
                                          ("empty.jsonl", b""), ("blank.jsonl", b"\n\n")])
def test_empty_probe_file_is_an_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RepspaceError) as info:
        load_probe(path)
    message = str(info.value)
    assert "empty" in message or "no samples" in message
    assert str(path) in message


def test_missing_probe_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        load_probe(tmp_path / "absent.txt")


def test_duplicate_ids_name_both_samples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "probe.jsonl", [
        {"id": "a", "text": "one"}, {"id": "b", "text": "two"}, {"id": "a", "text": "three"}])
    with pytest.raises(InputError, match="duplicate") as info:
        load_probe(path)
    message = str(info.value)
    assert "'a'" in message
    assert "samples 1 and 3" in message


def test_duplicate_text_lines_are_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "probe.txt"
    path.write_text("same\nother\n\nsame\n", encoding="utf-8")
    with pytest.raises(InputError, match="samples 1 and 3"):
        load_probe(path)


def test_limit_keeps_the_first_samples(tmp_path: Path) -> None:
    path = tmp_path / "probe.txt"
    path.write_text("\n".join(f"sentence number {i}" for i in range(10)) + "\n",
                    encoding="utf-8")
    full = load_probe(path)
    three = load_probe(path, limit=3)
    assert three.texts == full.texts[:3]
    assert three.ids == full.ids[:3]
    assert three.fingerprint != full.fingerprint
    assert load_probe(path, limit=100).ids == full.ids
    for bad in (0, -1):
        with pytest.raises(InputError, match="limit"):
            load_probe(path, limit=bad)


def test_batches_cover_every_sample_in_order() -> None:
    probe = Probe.from_texts([f"t{i}" for i in range(7)])
    batches = list(probe.batches(3))
    assert [len(ids) for ids, _ in batches] == [3, 3, 1]
    assert [t for _, texts in batches for t in texts] == list(probe.texts)
    assert [i for ids, _ in probe.batches(3, start=5) for i in ids] == list(probe.ids[5:])


def test_fingerprint_follows_ids_and_texts() -> None:
    texts = ["alpha beta", "gamma delta", "epsilon"]
    probe = Probe.from_texts(texts, ids=["a", "b", "c"])
    same = Probe.from_texts(list(texts), ids=["a", "b", "c"], source="elsewhere")
    assert probe.fingerprint == same.fingerprint
    assert len(probe.fingerprint) == 64
    other_text = Probe.from_texts(["alpha beta", "gamma delta!", "epsilon"], ids=["a", "b", "c"])
    other_id = Probe.from_texts(texts, ids=["a", "b", "z"])
    reordered = Probe.from_texts(texts[::-1], ids=["c", "b", "a"])
    fewer = Probe.from_texts(texts[:2], ids=["a", "b"])
    prints = {p.fingerprint for p in (probe, other_text, other_id, reordered, fewer)}
    assert len(prints) == 5


def test_fingerprint_is_not_fooled_by_separators_in_texts() -> None:
    one = Probe(("a",), ("b\nc\0d",))
    two = Probe(("a", "c"), ("b", "d"))
    assert one.fingerprint != two.fingerprint


def test_probe_rejects_mismatched_or_empty_inputs() -> None:
    with pytest.raises(InputError, match="2 ids for 1 texts"):
        Probe(("a", "b"), ("x",))
    with pytest.raises(InputError, match="no samples"):
        Probe.from_texts([])


def test_shipped_default_probe() -> None:
    probe = load_probe()
    assert probe.source == "data/probe_general.txt"  # the same on every machine
    assert len(probe) >= 1000
    lengths = [len(text.split()) for text in probe.texts]
    too_short_or_long = [t for t, n in zip(probe.texts, lengths, strict=True)
                         if not 4 <= n <= 40]
    assert too_short_or_long == []
    assert len(set(probe.texts)) == len(probe)
    assert len({t.casefold() for t in probe.texts}) == len(probe)
    assert len(set(probe.ids)) == len(probe)
    assert load_probe(limit=48).ids == probe.ids[:48]
