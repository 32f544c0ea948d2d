"""Data model and pure helpers (numpy/scipy only) shared by the engine and the analysis."""
