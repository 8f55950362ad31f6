"""``python -m sdverify``: the same command line as the ``sdverify`` script."""

from sdverify.cli import entrypoint

entrypoint()
