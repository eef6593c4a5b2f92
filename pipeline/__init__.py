"""featurize: options, graph building and the command line.

Importing this package does not import TensorFlow (``read_features`` must
stay usable where TensorFlow is absent).
"""
