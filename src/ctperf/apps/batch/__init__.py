"""Cohort batches on Dask: one task per study through the Mode A workflow (see :mod:`.runner`)."""

from ctperf.apps.batch.discover import Study, find_studies
from ctperf.apps.batch.runner import SUMMARY_FILE, BatchResult, run_batch, run_study

__all__ = ["BatchResult", "Study", "SUMMARY_FILE", "find_studies", "run_batch", "run_study"]
