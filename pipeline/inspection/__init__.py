"""``featurize inspect``: what an output holds.

``inspect_output`` reads a run's folder or a dataset version (manifest, error
files, leftovers of killed runs) and runs the command; ``summary`` turns
what it read into a typed summary and its text report (pure functions);
``plot`` draws the picture (``--plot``, matplotlib).
"""
