"""Cohort utilities."""
