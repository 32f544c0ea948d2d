"""Entry points beyond the CLI (each behind an optional extra); they call the workflows only."""
