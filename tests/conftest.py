"""The test process runs with the start-up settings of the ``ctperf`` command (numpy's BLAS on one thread, small
pages), so that results computed here equal those of the command-line runs the tests start as subprocesses."""

from ctperf.apps.runtime import configure_process


def pytest_configure(config):
    configure_process()
