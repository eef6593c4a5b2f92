"""The contenders, each run in a process of its own:

    python -m benchmarks.contenders NAME --images DIR --count N ...

Each prints one JSON line last: its own timings (seconds since it started)
and its VmHWM. The outer runner (``benchmarks.run``) measures wall time
and the memory of the whole process tree.

* ``bare``: the ceiling. Decoded, preprocessed tensors already in memory;
  the same Keras model (``--model``), called as featurize calls it
  (``models.batch_predictor``), in a loop. No pipeline can beat it.
* ``naive``: the classic answer's code: load every image into one array,
  ``model.predict`` over it, save the features.
* ``naive_all_layers``: the same, keeping every layer's activations.
* ``stock``: Beam RunInference as a typical user writes it:
  ``TFModelHandlerNumpy``, decode in a ``Map``, ``WriteToTFRecord`` with a
  fixed shard count.
* ``featurize``: this project, ``featurize run`` on the DirectRunner.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np

START = time.perf_counter()


def _since_start() -> float:
  return round(time.perf_counter() - START, 3)


def _vm_hwm_kb() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1])
  return 0


def _paths(args):
  return sorted(glob.glob(os.path.join(args.images, '*.jpg')))[:args.count]


def _model_config(args):
  from transforms.extract import models
  return models.ModelConfig(model=args.model, weights='random',
                            precision=args.precision, layer=args.layer,
                            batch_size=args.batch_size)


def bare(args) -> dict:
  from transforms.decode import imaging
  from transforms.extract import models
  model_config = _model_config(args)
  size = model_config.image_size
  config = imaging.DecodeConfig(image_size=size,
                                resize_shorter=imaging.shorter_side(size))
  pixels = []
  for path in _paths(args):
    with open(path, 'rb') as f:
      pixels.append(imaging.decode_image(f.read(), config))
  batches = [models.to_model_input(pixels[i:i + args.batch_size],
                                   model_config.preprocess)
             for i in range(0, len(pixels), args.batch_size)]
  # Called as featurize calls it, so that the ratio is the pipeline's.
  model = models.batch_predictor(models.build_feature_model(model_config))
  ready = _since_start()
  model.predict_on_batch(batches[0])  # first call builds the graph
  first = _since_start()
  loop_start = time.perf_counter()
  for batch in batches:
    np.asarray(model.predict_on_batch(batch))
  loop = time.perf_counter() - loop_start
  return {'t_model_ready': ready, 't_first_record': first,
          'loop_images_per_s': len(pixels) / loop}


def _naive_model(args, all_layers: bool):
  import keras
  from transforms.extract import models
  if args.precision == 'bfloat16':
    keras.config.set_dtype_policy('mixed_bfloat16')
  model = keras.applications.VGG16(include_top=False, weights=None)
  models.keras_build.set_random_weights(model, 0)  # same weights as the others
  if all_layers:
    return keras.Model(model.input,
                       [layer.output for layer in model.layers[1:]])
  return keras.Model(model.input,
                     model.get_layer(args.layer or 'block5_pool').output)


def naive(args, all_layers: bool = False) -> dict:
  import keras
  from keras.applications.vgg16 import preprocess_input
  model = _naive_model(args, all_layers)
  ready = _since_start()
  images = [keras.utils.img_to_array(keras.utils.load_img(
      p, target_size=(224, 224))) for p in _paths(args)]
  x = preprocess_input(np.stack(images))
  features = model.predict(x, batch_size=args.batch_size, verbose=0)
  first = _since_start()
  np.save(os.path.join(args.output, 'features.npy'),
          features[-1] if all_layers else features)
  return {'t_model_ready': ready, 't_first_record': first}


def naive_all_layers(args) -> dict:
  return naive(args, all_layers=True)


def stock(args) -> dict:
  import apache_beam as beam
  import keras
  import tensorflow as tf
  from apache_beam.ml.inference.base import RunInference
  from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
  from keras.applications.vgg16 import preprocess_input
  os.makedirs(args.output, exist_ok=True)
  model_path = os.path.join(args.output, 'vgg16.keras')
  _naive_model(args, all_layers=False).save(model_path)
  keras.config.set_dtype_policy('float32')

  def decode(path):
    image = keras.utils.load_img(path, target_size=(224, 224))
    return preprocess_input(keras.utils.img_to_array(image))

  def to_example(result):
    example = tf.train.Example(features=tf.train.Features(feature={
        'features': tf.train.Feature(float_list=tf.train.FloatList(
            value=np.asarray(result.inference).reshape(-1)))}))
    return example.SerializeToString()

  handler = TFModelHandlerNumpy(model_uri=model_path,
                                min_batch_size=args.batch_size,
                                max_batch_size=args.batch_size)
  options = beam.options.pipeline_options.PipelineOptions(
      ['--runner=FnApiRunner'])
  with beam.Pipeline(options=options) as p:
    _ = (p
         | beam.Create(_paths(args))
         | 'Decode' >> beam.Map(decode)
         | RunInference(handler)
         | beam.Map(to_example)
         | beam.io.WriteToTFRecord(os.path.join(args.output, 'features'),
                                   num_shards=4))
  return {}


def featurize(args) -> dict:
  from pipeline import cli, demo
  # The first ``count`` images, linked into a folder of their own.
  folder = os.path.join(args.output, 'input')
  os.makedirs(folder, exist_ok=True)
  for path in _paths(args):
    os.symlink(path, os.path.join(folder, os.path.basename(path)))
  extra = []
  if args.workers > 1:
    extra = [f'--direct_num_workers={args.workers}',
             '--direct_running_mode=multi_processing']
  status = cli.main([
      'run', '--input', os.path.join(folder, '*.jpg'), '--output',
      os.path.join(args.output, 'features'), '--format', 'files',
      '--model', args.model, '--weights', 'random', '--precision',
      args.precision, *(['--layer', args.layer] if args.layer else []),
      '--batch-size', str(args.batch_size), '--config',
      demo.LOCAL_CONFIG, *extra])
  if status:
    raise SystemExit(status)
  return {}


CONTENDERS = {f.__name__: f for f in (bare, naive, naive_all_layers, stock,
                                      featurize)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('name', choices=sorted(CONTENDERS))
  parser.add_argument('--images', required=True)
  parser.add_argument('--count', type=int, required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--precision', default='float32')
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--model', default='vgg16',
                      help='bare and featurize: the model (the others '
                      'are VGG16 contenders)')
  parser.add_argument('--layer', default='',
                      help='default: the model\'s feature layer')
  parser.add_argument('--workers', type=int, default=1)
  args = parser.parse_args(argv)
  os.makedirs(args.output, exist_ok=True)
  report = CONTENDERS[args.name](args)
  report.update({'t_done': _since_start(), 'peak_rss_kb': _vm_hwm_kb()})
  print(json.dumps(report))
  return 0


if __name__ == '__main__':
  sys.exit(main())
