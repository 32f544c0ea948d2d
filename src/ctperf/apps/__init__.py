"""Entry points (command line, ...): thin layers over the workflows."""
