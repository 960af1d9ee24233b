"""Datasets: the registry of named datasets and their loaders (:mod:`hwsim.data.datasets`)."""

from hwsim.data.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    Dataset,
    DatasetInfo,
    augment_batch,
    dataset_info,
    default_data_dir,
    iterate_batches,
    load_dataset,
    normalize,
    read_idx,
)

__all__ = ["DATASETS", "DEFAULT_DATASET", "Dataset", "DatasetInfo", "augment_batch",
           "dataset_info", "default_data_dir", "iterate_batches", "load_dataset", "normalize",
           "read_idx"]
