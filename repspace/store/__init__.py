"""The HDF5 feature store (:mod:`repspace.store.hdf5`, the only module that imports h5py)."""

from repspace.store.hdf5 import (
    FORMAT,
    FORMAT_VERSION,
    FeatureStore,
    StoreWriter,
    check_aligned,
    merge_stores,
    partial_path,
    partial_progress,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "FeatureStore", "StoreWriter", "check_aligned",
           "merge_stores", "partial_path", "partial_progress"]
