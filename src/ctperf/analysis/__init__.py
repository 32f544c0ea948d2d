"""Maps -> masks -> indices -> metrics (pure numpy; no file I/O)."""
