"""Experiments that were tried and not shipped (not part of the ``radsight`` wheel).

Each one runs from the repository root with one command, given in its module docstring and
in the model card that reports its figures (docs/models/*.md), e.g.
``python -m experiments.mmg_convergence ../shared/data build/mmg-convergence``. They import
only public names of ``radsight_train`` and ``radsight``'s pure metrics.
"""
