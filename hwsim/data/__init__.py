"""Datasets: the registry of named datasets and their loaders (:mod:`hwsim.data.datasets`),
and a user's image folder (:mod:`hwsim.data.imagefolder`, ``imagefolder:PATH``)."""

from hwsim.data import imagefolder  # noqa: F401, E402  (registers imagefolder:PATH)
from hwsim.data.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    Dataset,
    DatasetInfo,
    augment_batch,
    dataset_entry,
    dataset_info,
    default_data_dir,
    iterate_batches,
    load_dataset,
    normalize,
    read_idx,
)

__all__ = ["DATASETS", "DEFAULT_DATASET", "Dataset", "DatasetInfo", "augment_batch",
           "dataset_entry", "dataset_info", "default_data_dir", "iterate_batches",
           "load_dataset", "normalize", "read_idx"]
