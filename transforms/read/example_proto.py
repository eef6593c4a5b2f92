"""The ``tf.train.Example`` message class, with or without TensorFlow.

TensorFlow and the ``tfrecord`` package both carry a generated
``example_pb2``; protobuf refuses to load the second one into a process
("duplicate symbol 'tensorflow.BytesList'"). The CPU path has TensorFlow
loaded anyway, so it uses TensorFlow's; the GPU path runs Keras on JAX and
may have no TensorFlow at all (the GPU worker image has none), so it uses
the ``tfrecord`` package's, the same message.
"""
import os
import sys


def example_pb2():
  """Returns the generated module holding ``Example``."""
  uses_tensorflow = ('tensorflow' in sys.modules or os.environ.get(
      'KERAS_BACKEND', 'tensorflow') == 'tensorflow')
  if uses_tensorflow:
    try:
      # pylint: disable=import-outside-toplevel
      from tensorflow.core.example import example_pb2 as module
      return module
    except ImportError:
      pass
  from tfrecord import example_pb2 as module  # pylint: disable=import-outside-toplevel
  return module
