"""Stage 1, read: image shards in, one ``ImageRecord`` per image out.

* ``image_shards``: ``ReadImageShards``, the stage's transform (one shard
  a bundle, every bad record an ``ErrorRecord``).
* ``shard_readers``: TFRecord, WebDataset tar and plain image files, each
  read as a stream.
* ``tfrecord_framing``: TFRecord's length-and-CRC framing.
* ``example_proto``: ``tf.train.Example`` without TensorFlow.
"""
