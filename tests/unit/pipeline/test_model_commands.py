"""``featurize models`` and ``featurize layers``."""
from pipeline import cli, model_commands
from transforms.extract import models


def test_layer_costs_are_the_batch_peaks_of_a_model_cut_there():
  costs = {c.name: c for c in model_commands.layer_costs('vgg16')}
  conv = costs['block1_conv2']
  assert conv.shape == (224, 224, 64)
  assert conv.output_bytes == 224 * 224 * 64 * 4
  # Cut at block1_conv2: its input and output are alive at once.
  assert conv.batch_bytes == 16 * 2 * 224 * 224 * 64 * 4
  # Deeper layers hold no more than block 1 did.
  assert costs['block5_pool'].batch_bytes == conv.batch_bytes
  assert costs['fc2'].shape == (4096,)  # the top, at the model's own size
  half = {c.name: c for c in model_commands.layer_costs(
      'vgg16', precision='bfloat16', batch_size=8)}
  assert half['block1_conv2'].batch_bytes == conv.batch_bytes // 4


def test_the_batch_peak_is_what_plans_a_run_cut_there():
  for layer in ('conv2_block1_out', 'conv4_block6_out'):
    cost = next(c for c in model_commands.layer_costs('resnet50', 160)
                if c.name == layer)
    config = models.ModelConfig(model='resnet50', image_size=160, layer=layer)
    assert cost.batch_bytes == 16 * models.activation_bytes(config)


def test_featurize_layers_and_models_print_their_tables(capsys):
  assert cli.main(['layers', 'ResNet50', '--image-size', '160']) == 0
  out = capsys.readouterr().out
  assert out.startswith('ResNet50 at 160x160, float32:')
  last = out.splitlines()[-1].split()
  assert last[:2] == ['conv5_block3_out', '5x5x2048'] and last[-1] == 'default'
  assert cli.main(['models']) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].split()[:3] == ['model', 'input', 'feature']
  rows = {line.split()[0]: line.split() for line in out[1:] if line}
  assert rows['inceptionv3'][1:3] == ['299', 'mixed10']
  assert rows['efficientnetb7'][1:3] == ['600', 'top_activation']
  assert len([r for r in rows if r in models.NAMED_MODELS]) == len(
      models.NAMED_MODELS)
  assert cli.main(['layers', 'resnet5']) == 2
  assert 'did you mean' in capsys.readouterr().err
