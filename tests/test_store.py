"""The HDF5 feature store: round trips, layout, completeness, resuming, corrupt files, alignment."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from repspace.errors import FormatError, InputError, MismatchError, RepspaceError
from repspace.store import FORMAT_VERSION, FeatureStore, StoreWriter, check_aligned

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


def test_datasets_are_chunked_by_rows_and_compressed(tmp_path: Path, data: dict) -> None:
    path = write_store(tmp_path / "s.h5", data)
    with h5py.File(path, "r") as f:
        for name, attrs in LAYERS.items():
            for key in ("pooled", "tokens"):
                dataset = f["layers"][name][key]
                assert dataset.chunks is not None
                assert dataset.chunks[1] == attrs["dim"]  # whole rows per chunk
                assert dataset.compression is not None
                assert dataset.maxshape == (None, attrs["dim"])  # grows batch by batch
            assert f["layers"][name]["offsets"].shape == (N + 1,)
        assert f["sample_ids"].chunks is not None


def test_append_rejects_a_batch_of_the_wrong_shape(tmp_path: Path, data: dict) -> None:
    with StoreWriter(tmp_path / "s.h5", meta=make_meta(), layers=LAYERS) as writer:
        pooled = {k: v[:4] for k, v in data["pooled"].items()}
        with pytest.raises(InputError, match=r"encoder\.layer"):
            writer.append(data["ids"][:3], pooled)


def test_unfinished_store_is_refused_unless_allowed(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, data, 0, 2 * BATCH)
    with pytest.raises(FormatError, match="incomplete") as info:
        FeatureStore(path)
    assert f"{2 * BATCH} of {N}" in str(info.value)
    with FeatureStore(path, allow_incomplete=True) as store:
        assert not store.complete
        assert store.sample_ids == data["ids"][: 2 * BATCH]
        np.testing.assert_array_equal(store.pooled("encoder.layer.10"),
                                      data["pooled"]["encoder.layer.10"][: 2 * BATCH])
        assert len(store.tokens("encoder.layer.2")) == 2 * BATCH


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


def test_resume_drops_rows_of_an_unfinished_batch(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True) as writer:
        append_batches(writer, data, 0, BATCH)
    # A capture killed mid-batch: rows (and tokens) written, n_written not yet updated.
    with h5py.File(path, "r+") as f:
        for name in LAYERS:
            layer = f["layers"][name]
            layer["pooled"].resize((BATCH + 3, layer["pooled"].shape[1]))
            layer["pooled"][BATCH:] = 99.0
            layer["tokens"].resize((layer["tokens"].shape[0] + 5, layer["tokens"].shape[1]))
            layer["tokens"][-5:] = 99.0
            layer["offsets"].resize((BATCH + 4,))
            layer["offsets"][BATCH + 1:] = layer["offsets"][BATCH] + np.array([1, 3, 5])
        f["sample_ids"].resize((BATCH + 3,))
        f["sample_ids"][BATCH:] = ["junk-0", "junk-1", "junk-2"]
    with StoreWriter(path, meta=make_meta(), layers=LAYERS, tokens=True,
                     resume=True) as writer:
        assert writer.n_written == BATCH
        append_batches(writer, data, BATCH, N)
        writer.finish()
    assert_same_contents(path, data)


@pytest.mark.parametrize("key", ["model_fingerprint", "probe_fingerprint", "pooling"])
def test_resume_with_other_meta_is_a_mismatch(tmp_path: Path, data: dict, key: str) -> None:
    path = tmp_path / "s.h5"
    with StoreWriter(path, meta=make_meta(), layers=LAYERS) as writer:
        append_batches(writer, data, 0, BATCH, tokens=False)
    with pytest.raises(MismatchError, match=key):
        StoreWriter(path, meta=make_meta(**{key: "something-else"}), layers=LAYERS,
                    resume=True)
    with FeatureStore(path, allow_incomplete=True) as store:  # the store is left as it was
        assert store.sample_ids == data["ids"][:BATCH]
        assert store.meta["model_fingerprint"] == "model-abc"


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
