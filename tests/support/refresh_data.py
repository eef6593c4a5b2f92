"""Small TFRecord shards of real photos for refresh tests, and one
refresh of them."""
import os

from benchmarks import dataset as bench_dataset
from pipeline import demo, options
from pipeline.refresh import refresh_job
from transforms.read import tfrecord_framing

LOCAL = demo.LOCAL_CONFIG


JOB = ('--weights', 'random', '--layer', 'block2_pool', '--pooling', 'avg',
       '--batch-size', '4', '--max-error-fraction', '1')


IMAGES_PER_SHARD = 3


def write_shard(folder, index: int, variant: int = 0, corrupt=False) -> str:
  """Shard ``index``: 3 distinct photos (another 3 for another variant)."""
  samples = list(bench_dataset.photo_variants(
      IMAGES_PER_SHARD * (index + 1) + 30 * variant, (160, 120)))
  samples = samples[-IMAGES_PER_SHARD:]
  data = b''.join(tfrecord_framing.encode_record(demo.image_example(
      demo.Sample(f'shard{index}-v{variant}/{s.key}', s.data, index)))
                  for s in samples)
  if corrupt:
    bad = bytearray(tfrecord_framing.encode_record(demo.image_example(
        demo.Sample('corrupt', samples[0].data, 0))))
    bad[100] ^= 0xFF
    data += bytes(bad)
  path = os.path.join(folder, f'part-{index:05d}.tfrecord')
  with open(path, 'wb') as f:
    f.write(data)
  return path


def do_refresh(root, pattern, *extra):
  job = options.parse_run_args(
      ['--config', LOCAL, '--input', pattern, '--output', root, *JOB,
       *extra])
  return refresh_job.refresh(job.job, job.beam_args, log=lambda _: None)
