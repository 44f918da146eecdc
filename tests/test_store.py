"""The HDF5 feature store: round trips, layout, completeness, resuming, corrupt files, alignment."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from repspace.errors import FormatError, InputError, MismatchError, RepspaceError
from repspace.store import (
    FORMAT_VERSION,
    FeatureStore,
    StoreWriter,
    check_aligned,
    merge_stores,
    partial_path,
    partial_progress,
)

# Deliberately not in alphabetical order: "encoder.layer.10" sorts before "encoder.layer.2".
LAYERS = {
    "encoder.layer.10": {"module_path": "encoder.layer.10", "dim": 6,
                         "token_selection": "real tokens", "modality": "text"},
    "encoder.layer.2": {"module_path": "encoder.layer.2", "dim": 3,
                        "token_selection": "real tokens", "modality": "text"},
}
N = 10
BATCH = 4  # batches of 4, 4, 2


def make_meta(n_expected: int = N, **changes: object) -> dict:
    meta = {"model_fingerprint": "model-abc", "model_source": "base.pt",
            "probe_fingerprint": "probe-123", "pooling": "mean",
            "settings": {"layers": list(LAYERS), "max_length": 128}, "n_expected": n_expected}
    meta.update(changes)
    return meta


def make_data(n: int = N, seed: int = 0) -> dict:
    """Ids (non-ASCII among them), pooled rows and ragged token matrices (one empty) per layer."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=n)
    lengths[3] = 0
    ids = [f"sample-{i}" for i in range(n)]
    ids[1] = "échantillon-ü"
    pooled = {name: rng.normal(size=(n, a["dim"])).astype(np.float32)
              for name, a in LAYERS.items()}
    tokens = {name: [rng.normal(size=(int(k), a["dim"])).astype(np.float32) for k in lengths]
              for name, a in LAYERS.items()}
    return {"ids": ids, "pooled": pooled, "tokens": tokens, "lengths": lengths}


def append_batches(writer: StoreWriter, data: dict, start: int, stop: int,
                   tokens: bool = True) -> None:
    for i in range(start, stop, BATCH):
        j = min(i + BATCH, stop)
        writer.append(data["ids"][i:j], {k: v[i:j] for k, v in data["pooled"].items()},
                      {k: v[i:j] for k, v in data["tokens"].items()} if tokens else None)


def write_store(path: Path, data: dict, *, tokens: bool = True, meta: dict | None = None) -> Path:
    with StoreWriter(path, meta=meta or make_meta(), layers=LAYERS, tokens=tokens) as writer:
        append_batches(writer, data, 0, len(data["ids"]), tokens)
        return writer.finish()


def assert_same_contents(path: Path, data: dict) -> None:
    with FeatureStore(path) as store:
        assert store.complete
        assert store.sample_ids == data["ids"]
        assert store.layers == list(LAYERS)
        for name in LAYERS:
            np.testing.assert_array_equal(store.pooled(name), data["pooled"][name])
            np.testing.assert_array_equal(store.token_counts(name), data["lengths"])
            got = store.tokens(name)
            assert len(got) == len(data["ids"])
            for a, b in zip(got, data["tokens"][name], strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.fixture
def data() -> dict:
    return make_data()


def test_round_trip_preserves_arrays_ids_and_layer_order(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    assert_same_contents(path, data)
    with FeatureStore(path) as store:
        assert store.has_tokens
        assert store.layers == ["encoder.layer.10", "encoder.layer.2"]
        assert store.pooled("encoder.layer.10").dtype == np.float32
        assert store.pooled("encoder.layer.2").shape == (N, 3)
        meta = store.meta
        assert meta["model_fingerprint"] == "model-abc"
        assert meta["probe_fingerprint"] == "probe-123"
        assert meta["settings"] == {"layers": list(LAYERS), "max_length": 128}
        assert meta["n_expected"] == meta["n_written"] == N
        assert meta["format_version"] == FORMAT_VERSION
        attrs = store.layer_attrs("encoder.layer.2")
        assert attrs["module_path"] == "encoder.layer.2"
        assert int(attrs["dim"]) == 3
        assert attrs["modality"] == "text"


def test_pooled_only_store_has_no_tokens(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data, tokens=False)
    with FeatureStore(path) as store:
        assert not store.has_tokens
        np.testing.assert_array_equal(store.pooled("encoder.layer.2"),
                                      data["pooled"]["encoder.layer.2"])
        with pytest.raises(InputError, match="token"):
            store.tokens("encoder.layer.2")


def test_unknown_layer_names_the_layers_it_has(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    with FeatureStore(path) as store, pytest.raises(InputError) as info:
        store.pooled("encoder.layer.3")
    assert "encoder.layer.10" in str(info.value)
    assert "encoder.layer.2" in str(info.value)


def test_datasets_are_chunked_by_whole_rows(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    with h5py.File(path, "r") as f:
        for name, attrs in LAYERS.items():
            for key in ("pooled", "tokens"):
                dataset = f["layers"][name][key]
                assert dataset.chunks is not None
                assert dataset.chunks[1] == attrs["dim"]  # whole rows per chunk
                assert dataset.compression is None  # float32 activations barely compress
                n_chunks = -(-dataset.shape[0] // dataset.chunks[0])  # space comes in chunks:
                assert n_chunks * dataset.chunks[0] - dataset.shape[0] < n_chunks  # little waste
            assert f["layers"][name]["offsets"].shape == (N + 1,)
            assert f["layers"][name]["offsets"][0] == 0
        assert f["sample_ids"].chunks is not None
    assert not partial_path(path).exists()  # the unfinished capture's folder is gone


def test_append_rejects_a_batch_of_the_wrong_shape(tmp_path: Path, data: dict) -> None:
    with StoreWriter(tmp_path / "s.h5", meta=make_meta(), layers=LAYERS) as writer:
        pooled = {k: v[:4] for k, v in data["pooled"].items()}
        with pytest.raises(InputError, match=r"encoder\.layer"):
            writer.append(data["ids"][:3], pooled)


def test_unfinished_store_is_incomplete_and_never_at_its_path(tmp_path: Path,
                                                              data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        with pytest.raises(FormatError, match=f"incomplete \\(0 of {N} samples"):
            FeatureStore(path)
        append_batches(writer, data, 0, 2 * BATCH)
    assert not path.exists()
    for allow in (False, True):
        with pytest.raises(FormatError, match="incomplete") as info:
            FeatureStore(path, allow_incomplete=allow)
        assert f"{2 * BATCH} of {N}" in str(info.value)
        assert "--resume" in str(info.value)
    assert partial_progress(path) == (2 * BATCH, N)
    assert partial_progress(tmp_path / "other.h5") is None


def test_a_file_marked_incomplete_is_refused_unless_allowed(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(FormatError, match="incomplete"):
        FeatureStore(path)
    with FeatureStore(path, allow_incomplete=True) as store:
        assert not store.complete
        assert store.sample_ids == data["ids"]


def test_finish_with_missing_samples_raises_and_leaves_store_incomplete(
        tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, data, 0, 2 * BATCH)
        with pytest.raises(InputError, match=f"{2 * BATCH} of {N}"):
            writer.finish()
    with pytest.raises(FormatError, match="incomplete"):
        FeatureStore(path)


def test_resume_continues_to_the_same_store(tmp_path: Path, data: dict) -> None:
    whole = write_store(tmp_path / "whole.h5", data)
    path = tmp_path / "resumed.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, data, 0, 2 * BATCH)
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True,
                     resume=True) as writer:
        assert writer.n_written == 2 * BATCH
        append_batches(writer, data, writer.n_written, N)
        writer.finish()
    assert_same_contents(path, data)
    with FeatureStore(whole) as a, FeatureStore(path) as b:
        assert check_aligned(a, b) == data["ids"]
        for name in LAYERS:
            np.testing.assert_array_equal(a.pooled(name), b.pooled(name))


def test_resume_drops_a_half_written_segment_and_segments_after_a_gap(
        tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, data, 0, 2 * BATCH)
    folder = partial_path(path)
    # A kill while the third segment was written leaves its temporary file, cut short; a
    # segment that does not continue the others (here: its predecessor was deleted) is junk.
    (folder / f"seg-{2 * BATCH:012d}-{N:012d}.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n cut")
    (folder / f"seg-{BATCH:012d}-{2 * BATCH:012d}.h5").unlink()
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True,
                     resume=True) as writer:
        assert writer.n_written == BATCH
        assert sorted(p.name for p in folder.iterdir()) == [
            "header.json", f"seg-{0:012d}-{BATCH:012d}.h5"]
        append_batches(writer, data, BATCH, N)
        writer.finish()
    assert_same_contents(path, data)
    assert not folder.exists()


def test_a_new_capture_replaces_an_old_store_only_when_finished(tmp_path: Path,
                                                                data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    other = make_data(seed=1)
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, other, 0, 2 * BATCH)
        assert_same_contents(path, data)  # readers still see the old, complete store
        append_batches(writer, other, 2 * BATCH, N)
        writer.finish()
    assert_same_contents(path, other)


def test_merge_of_shards_in_any_order_equals_one_store(tmp_path: Path, data: dict) -> None:
    whole = write_store(tmp_path / "whole.h5", data)
    bounds = [(0, 3), (3, 8), (8, N)]
    shards = []
    for k, (a, b) in enumerate(bounds):
        part = {"ids": data["ids"][a:b], "pooled": {n: v[a:b] for n, v in data["pooled"].items()},
                "tokens": {n: v[a:b] for n, v in data["tokens"].items()}}
        meta = make_meta(b - a, probe_fingerprint=f"sub-{k}", shard_of={
            "probe_fingerprint": "probe-123", "n": N, "start": a, "stop": b})
        shards.append(write_store(tmp_path / f"shard{k}.h5", part, meta=meta))
    merged = merge_stores(shards[::-1], tmp_path / "merged.h5")
    assert_same_contents(merged, data)
    with FeatureStore(whole) as a, FeatureStore(merged) as b:
        for key in ("probe_fingerprint", "n_expected", "n_written", "settings", "layer_order"):
            assert a.meta[key] == b.meta[key]
        assert "shard_of" not in b.meta
        for name in LAYERS:
            assert a.layer_attrs(name) == b.layer_attrs(name)
    with pytest.raises(InputError, match="cover"):
        merge_stores(shards[:2], tmp_path / "short.h5")
    with pytest.raises(InputError, match="exactly once"):
        merge_stores([shards[0], shards[2]], tmp_path / "gap.h5")
    with pytest.raises(InputError, match="not a shard"):
        merge_stores([whole], tmp_path / "x.h5")
    assert not (tmp_path / "short.h5").exists() and not (tmp_path / "gap.h5").exists()


@pytest.mark.parametrize("key", ["model_fingerprint", "probe_fingerprint", "pooling"])
def test_resume_with_other_meta_is_a_mismatch(tmp_path: Path, data: dict, key: str) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS) as writer:
        append_batches(writer, data, 0, BATCH, tokens=False)
    with pytest.raises(MismatchError, match=key):
        StoreWriter(path, meta=make_meta(**{key: "something-else"}), layers=LAYERS,
                    resume=True)
    assert partial_progress(path) == (BATCH, N)  # the unfinished capture is left as it was
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, resume=True) as writer:
        assert writer.n_written == BATCH
        assert writer.attrs["model_fingerprint"] == "model-abc"


def test_resume_with_other_settings_or_token_flag_is_a_mismatch(
        tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS) as writer:
        append_batches(writer, data, 0, BATCH, tokens=False)
    with pytest.raises(MismatchError, match="settings"):
        StoreWriter(path, meta=make_meta(settings={"max_length": 64}), layers=LAYERS,
                    resume=True)
    with pytest.raises(MismatchError, match="token"):
        StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True, resume=True)


def test_resume_with_other_layers_is_a_mismatch(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS) as writer:
        append_batches(writer, data, 0, BATCH, tokens=False)
    other = {"encoder.layer.11": {"module_path": "encoder.layer.11", "dim": 6}}
    with pytest.raises(MismatchError):
        StoreWriter(path, meta=make_meta(), layers=other, resume=True)


def test_resume_of_a_complete_store_keeps_it_unless_it_differs(tmp_path: Path,
                                                                data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    before = path.stat().st_mtime_ns
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True,
                     resume=True) as writer:
        assert writer.n_written == N
        assert writer.finish() == path
    assert path.stat().st_mtime_ns == before
    assert_same_contents(path, data)
    with pytest.raises(MismatchError, match="model_fingerprint"):
        StoreWriter(path, meta=make_meta(model_fingerprint="other"), layers=LAYERS,
                    tokens=True, resume=True)


def test_resume_without_a_file_starts_a_new_store(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "new.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True,
                     resume=True) as writer:
        assert writer.n_written == 0
        append_batches(writer, data, 0, N)
        writer.finish()
    assert_same_contents(path, data)


def test_missing_store_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        FeatureStore(tmp_path / "nope.h5")


def test_garbage_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really hdf5 at all " * 50)
    with pytest.raises(FormatError, match="corrupt or truncated"):
        FeatureStore(path)


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_store_is_a_format_error(tmp_path: Path, data: dict, fraction: float) -> None:
    whole = write_store(tmp_path / "whole.h5", data)
    raw = whole.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(FormatError):
        with FeatureStore(cut) as store:  # if opening passed, reading must still fail cleanly
            for name in store.layers:
                store.pooled(name)
                store.tokens(name)


def test_plain_hdf5_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(FormatError, match="not a repspace feature store"):
        FeatureStore(path)


def test_other_format_version_is_refused_naming_it(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 7
    with pytest.raises(FormatError, match="version") as info:
        FeatureStore(path)
    assert "7" in str(info.value)
    assert str(FORMAT_VERSION) in str(info.value)


def test_check_aligned_same_ids(tmp_path: Path, data: dict) -> None:
    a = write_store(tmp_path / "a.h5", data)
    b = write_store(tmp_path / "b.h5", make_data(seed=1))  # same ids, other features
    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        assert check_aligned(sa, sb) == data["ids"]


def test_check_aligned_same_ids_other_order(tmp_path: Path, data: dict) -> None:
    a = write_store(tmp_path / "a.h5", data)
    shuffled = make_data()
    order = [1, 0, *range(2, N)]
    shuffled["ids"] = [data["ids"][i] for i in order]
    b = write_store(tmp_path / "b.h5", shuffled)
    with FeatureStore(a) as sa, FeatureStore(b) as sb, pytest.raises(MismatchError,
                                                                     match="order"):
        check_aligned(sa, sb)


def test_check_aligned_different_ids(tmp_path: Path, data: dict) -> None:
    a = write_store(tmp_path / "a.h5", data)
    other = make_data()
    other["ids"] = [*data["ids"][:-1], "someone-else"]
    b = write_store(tmp_path / "b.h5", other)
    with FeatureStore(a) as sa, FeatureStore(b) as sb, pytest.raises(MismatchError) as info:
        check_aligned(sa, sb)
    assert "different samples" in str(info.value)
    assert isinstance(info.value, RepspaceError)


def test_store_size_is_the_payload_without_chunk_padding(tmp_path: Path) -> None:
    """1,000 rows of 384 floats: chunks of about 1 MiB would be 682 rows, leaving 364 empty
    rows in the second chunk; chunks are sized so that they fill evenly instead."""
    layers = {"block": {"module_path": "block", "dim": 384}}
    rows = np.random.default_rng(0).normal(size=(1000, 384)).astype(np.float32)
    ids = [f"s{i}" for i in range(1000)]
    with StoreWriter(tmp_path / "s.h5", meta=make_meta(1000), layers=layers) as writer:
        for i in range(0, 1000, 300):
            writer.append(ids[i:i + 300], {"block": rows[i:i + 300]})
        path = writer.finish()
    assert rows.nbytes < path.stat().st_size < rows.nbytes + 100_000
    with FeatureStore(path) as store:
        np.testing.assert_array_equal(store.pooled("block"), rows)
