"""Datasets: manifests, validated readers, synthetic corpora, splits."""
