"""Composite PTransforms of featurize and the pure functions they call."""
