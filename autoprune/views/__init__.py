"""Ways to look at runs: plots of the front, an HTML report, runs compared, a run's status.

Everything here reads a run directory as :func:`autoprune.api.open_run` does (no lock,
nothing written into the run) and writes only the file a user names.
"""
