"""Evaluation: the paper's metrics on labelled datasets (``ugains evaluate``).

:mod:`datasets` reads the dataset layouts, :mod:`variants` names the table's rows,
:mod:`pipeline` runs them in Beam (the mining ModelHandler, exact metric accumulators in a
CombineFn), :mod:`report` prints and writes the table, :mod:`cli` is the command. Nothing is
imported here, so the command line starts without Beam and torch.
"""
