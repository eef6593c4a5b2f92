"""``python -m benchmarks.decode_ahead``: is decoding ahead worth a thread?

In one process, over the same 160 of the benchmark's JPEGs and one built
model, it times four ways of feeding the model batches of 16, in turns so
that the machine's drift falls on all of them alike:

* ``in place``: decode a batch, then run it (the stage without a helper);
* ``ahead``: a helper thread at normal priority decodes the next batch
  while the model runs this one;
* ``ahead, lowest priority``: the same helper at nice 19
  (``decode_images.lower_priority``, what ``DecodeImages`` does);
* ``bare``: the model alone over batches decoded beforehand (the ceiling).

It prints each way's images/s (median over ``--repeats``) and its ratio to
``bare``, the median of the per-turn ratios. The results are in
``benchmarks/results/decode_ahead.txt`` and docs/PERFORMANCE.md ("Other
models").
"""
import argparse
import concurrent.futures
import glob
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.decode_ahead')
  parser.add_argument('--model', default='efficientnetb0')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--images', default=os.path.join(
      '/tmp', 'featurize-bench', 'imagenet'),
                      help='A folder of JPEGs (python -m benchmarks.run '
                      'makes one).')
  args = parser.parse_args(argv)
  # pylint: disable=import-outside-toplevel
  from benchmarks import dataset
  from transforms.decode import decode_images, imaging
  from transforms.extract import models
  if not glob.glob(os.path.join(args.images, '*.jpg')):
    dataset.write_image_folder(args.images, 160)
  config = models.ModelConfig(model=args.model, weights='random',
                              batch_size=16)
  decode = imaging.DecodeConfig(
      image_size=config.image_size,
      resize_shorter=imaging.shorter_side(config.image_size))
  data = [open(p, 'rb').read()
          for p in sorted(glob.glob(os.path.join(args.images, '*.jpg')))[:160]]
  model = models.build_feature_model(config)

  def run(batch):
    np.asarray(model.predict_on_batch(models.to_model_input(
        batch, config.preprocess)))

  run([imaging.decode_image(d, decode) for d in data[:16]])
  normal = concurrent.futures.ThreadPoolExecutor(1)
  lowest = concurrent.futures.ThreadPoolExecutor(
      1, initializer=decode_images.lower_priority)
  batches = [data[i:i + 16] for i in range(0, len(data), 16)]

  def in_place():
    for batch in batches:
      run([imaging.decode_image(d, decode) for d in batch])

  def ahead(pool):
    def go():
      futures = [pool.submit(imaging.decode_image, d, decode)
                 for d in batches[0]]
      for following in batches[1:] + [[]]:
        pixels = [f.result() for f in futures]
        futures = [pool.submit(imaging.decode_image, d, decode)
                   for d in following]
        run(pixels)
    return go

  decoded = [[imaging.decode_image(d, decode) for d in b] for b in batches]

  def bare():
    for pixels in decoded:
      run(pixels)

  ways = {'in place': in_place, 'ahead': ahead(normal),
          'ahead, lowest priority': ahead(lowest), 'bare': bare}
  rates = {name: [] for name in ways}
  for _ in range(args.repeats):
    for name, way in ways.items():
      started = time.perf_counter()
      way()
      rates[name].append(len(data) / (time.perf_counter() - started))
  print(f'{args.model}, {len(data)} images, batch 16, {args.repeats} turns')
  for name, values in rates.items():
    ratio = statistics.median(
        a / b for a, b in zip(values, rates['bare']))
    print(f'  {name:24s} {statistics.median(values):6.1f} images/s, '
          f'{ratio:.3f} of bare')
  return 0


if __name__ == '__main__':
  sys.exit(main())
