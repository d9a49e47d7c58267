"""Filter steps (length, diversity, IFD, selection, baselines), one module each."""
