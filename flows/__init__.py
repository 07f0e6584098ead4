"""Prefect flows: thin, each task one call into surd.pipeline."""
