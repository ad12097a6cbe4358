"""Datasets: manifests and validated loading, synthetic corpora, splits."""

from radpriv.data.manifest import DataError, Dataset, available_manifests, load_dataset, load_manifest

__all__ = ["DataError", "Dataset", "available_manifests", "load_dataset", "load_manifest"]
