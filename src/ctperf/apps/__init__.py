"""Entry points built on the workflows (web app, ...); each sits behind an optional extra."""
