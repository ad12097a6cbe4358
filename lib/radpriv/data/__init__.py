"""Datasets: report and image manifests with validated loading, synthetic reports and radiographs, splits."""

from radpriv.data.errors import DataError
from radpriv.data.manifest import Dataset, available_manifests, load_dataset, load_manifest

__all__ = ["DataError", "Dataset", "available_manifests", "load_dataset", "load_manifest"]
