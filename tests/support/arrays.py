"""How close two sets of features are."""
import numpy as np


def relative_l2(a, b) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cosines(a, b) -> np.ndarray:
  a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
  return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
