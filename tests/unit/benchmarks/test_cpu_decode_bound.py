"""benchmarks.gpu.cpu_decode_bound: the bound's arithmetic, which images it
counts as the CPU's, and its command line on a small profile."""
import dataclasses
import json

import pytest

from benchmarks.gpu import cpu_decode_bound, profiles
from transforms.decode import imaging


def test_the_bound_divides_the_cpu_rate_by_its_share():
  result = cpu_decode_bound.bound(1000.0, 0.2, ceiling=10000.0)
  assert result.images_per_s == pytest.approx(5000.0)
  assert result.ratio == pytest.approx(0.5)
  assert cpu_decode_bound.bound(1000.0, 0.2).ratio is None
  for share in (0.0, 1.5):
    with pytest.raises(ValueError, match='share'):
      cpu_decode_bound.bound(1000.0, share)


def test_it_counts_what_the_run_sends_to_the_cpu():
  """Progressive JPEGs and other formats, as the GPU path routes them;
  baseline JPEGs stay the device's."""
  profile = dataclasses.replace(
      profiles.PROFILES['web'], name='mix', progressive=0.3,
      other_formats=(profiles.OtherFormat(0.1, 'PNG', 'png'),
                     profiles.OtherFormat(0.1, 'WEBP', 'webp')))
  plans = profiles.draw_plans(profile, 60, seed=3)
  encoded = profiles.encode_all(plans)
  routed = cpu_decode_bound.cpu_routed(encoded, imaging.DecodeConfig())
  progressive = sum(p.progressive and p.pil_format == 'JPEG' for p in plans)
  assert progressive > 0
  assert len(routed.get('progressive', [])) == progressive
  for fmt in ('PNG', 'WEBP'):
    assert len(routed[f'not_jpeg/{fmt}']) == sum(
        p.pil_format == fmt for p in plans)
  baseline = [e for p, e in zip(plans, encoded)
              if p.pil_format == 'JPEG' and not p.progressive and
              p.mode != 'CMYK']
  cpu = {id(data) for images in routed.values() for data in images}
  assert baseline and not any(id(data) in cpu for data in baseline)


def test_the_command_prints_each_target_and_writes_its_report(tmp_path,
                                                              capsys):
  report = cpu_decode_bound.main([
      '--profile', 'web', '--distinct', '48', '--workers', '1',
      '--seconds', '1', '--ceiling', '1e9', '--target', '0.5',
      '--out', str(tmp_path)])
  printed = capsys.readouterr().out
  assert 'FAIL: web avg >= 0.5' in printed
  assert report['cpu_images_per_s_all_cores'] > 0
  assert report['targets'] == [{'target': 0.5, 'pass': False}]
  with open(tmp_path / 'cpu_decode_bound-web.json') as f:
    assert json.load(f)['bound_ratio'] == report['bound_ratio']
