"""benchmarks.gpu.profiles: images vary as each profile says (measured from
the bytes), and featurize's own shard readers and decoder read every one."""
import dataclasses
import glob
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from benchmarks.gpu import profiles
from benchmarks.gpu.profiles import __main__ as profiles_cli
from benchmarks.gpu.profiles import encoding, shards
from pipeline import demo
from tests.support.paths import ROOT
from transforms.decode import imaging
from transforms.read import image_shards
from transforms.records import ImageRecord



# PNGs named .jpg, CMYK, WebP, GIF and EXIF orientations at shares high
# enough that a few dozen images hold each of them.
ZOO = dataclasses.replace(
    profiles.PROFILES['web'], name='zoo', cmyk=0.15, grayscale=0.15,
    progressive=0.2, exif_rotated=0.2,
    other_formats=(profiles.OtherFormat(0.1, 'PNG', 'jpg'),
                   profiles.OtherFormat(0.05, 'PNG', 'png'),
                   profiles.OtherFormat(0.05, 'WEBP', 'webp'),
                   profiles.OtherFormat(0.05, 'GIF', 'gif')))


def _read_back(data: profiles.ProfileData):
  """Every record of the dataset, through featurize's reader."""
  assert sorted(glob.glob(data.pattern)) == data.paths
  config = image_shards.ReadConfig(pattern=data.pattern)
  records = [r for path in data.paths
             for r in image_shards.iter_shard(path, config)]
  assert all(isinstance(r, ImageRecord) for r in records), records[:3]
  return records


def _decodes(records):
  for record in records:
    array = imaging.decode_image(record.data, imaging.DecodeConfig())
    assert array.shape == (224, 224, 3) and array.dtype.name == 'uint8', (
        record.key)


def _opened(data: bytes) -> Image.Image:
  image = Image.open(io.BytesIO(data))
  image.load()
  return image


def _share(flags) -> float:
  flags = list(flags)
  return sum(flags) / len(flags)


@pytest.fixture(scope='module')
def web(tmp_path_factory):
  data = profiles.write_profile('web', str(tmp_path_factory.mktemp('web')),
                                images=300, per_shard=100, distinct=300)
  return data, _read_back(data)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
  data = profiles.write_profile(
      'imagenet', str(tmp_path_factory.mktemp('imagenet')), images=300,
      per_shard=150, distinct=300)
  return data, _read_back(data)


def test_web_properties_measured_from_the_bytes(web):
  data, records = web
  assert data.shard_format == 'webdataset' and len(data.paths) == 3
  assert len(records) == 300 and len({r.key for r in records}) == 300
  images = [_opened(r.data) for r in records]
  jpegs = [i for i in images if i.format == 'JPEG']
  progressive = _share(bool(i.info.get('progressive')) for i in images)
  assert abs(progressive - 0.15) <= 0.06
  non_jpeg = _share(i.format != 'JPEG' for i in images)
  assert 0.02 <= non_jpeg <= 0.09
  assert {i.format for i in images} - {'JPEG'} <= {'PNG', 'WEBP', 'GIF'}
  assert 0.02 <= _share(i.mode == 'L' for i in images) <= 0.09
  assert {JpegImagePlugin.get_sampling(i) for i in jpegs} >= {0, 1, 2}
  orientations = [i.getexif().get(0x0112, 1) for i in images]
  assert 0.03 <= _share(o != 1 for o in orientations) <= 0.10
  assert set(orientations) <= set(range(1, 9)) and {6, 8} <= set(orientations)
  for image, orientation in zip(images, orientations):
    upright = ImageOps.exif_transpose(image)
    swapped = orientation in (5, 6, 7, 8)
    assert upright.size == (image.size[::-1] if swapped else image.size)
  short_sides = sorted(min(i.size) for i in images)
  assert 240 <= short_sides[len(images) // 2] <= 900
  assert any(max(i.size) >= 1200 for i in images)
  # The stats describe these same bytes.
  stats = data.stats
  assert stats['images'] == stats['distinct'] == 300
  assert stats['progressive_share'] == round(progressive, 4)
  assert stats['non_jpeg_share'] == round(non_jpeg, 4)
  assert 50 <= stats['mean_kb'] <= 200
  _decodes(records)


def test_web_members_are_named_by_their_format(web):
  data, _ = web
  extension_of = {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp', 'GIF': 'gif'}
  with tarfile.open(data.paths[0]) as tar:
    names = tar.getnames()
    for name in names:
      key, extension = name.split('.')
      if extension == 'cls':
        assert int(tar.extractfile(name).read()) == int(key[-7:]) % 1000
        continue
      sniffed = imaging.sniff_format(tar.extractfile(name).read())
      assert extension == extension_of[sniffed], name
  assert len(names) == 200


def test_imagenet_shapes_and_large_tail(imagenet):
  data, records = imagenet
  assert data.shard_format == 'tfrecord'
  assert len(records) == 300 and len({r.key for r in records}) == 300
  assert all(r.key.endswith('.jpg') for r in records)
  assert [r.label for r in records] == list(range(300))
  common = {(s.width, s.height) for s in profiles.IMAGENET_SHAPES}
  sizes = [_opened(r.data).size for r in records]
  assert 0.45 <= _share(s in common for s in sizes) <= 0.65
  assert sum(max(s) >= 800 for s in sizes) >= 5
  assert all(100 <= max(s) <= 4500 for s in sizes)
  stats = data.stats
  assert stats['progressive_share'] <= 0.06
  assert 0.75 <= stats['subsampling_shares']['4:2:0'] <= 0.92
  assert 150_000 <= stats['median_pixels'] <= 200_000
  _decodes(records)


def test_uniform_is_all_500x375_baseline_and_repeats(tmp_path):
  data = profiles.write_profile('uniform', str(tmp_path), images=100,
                                per_shard=30, distinct=40)
  records = _read_back(data)
  assert len(data.paths) == 4 and len(records) == 100
  assert len({r.key for r in records}) == 100
  assert [r.data for r in records[40:]] == [r.data for r in records[:60]]
  assert len({r.data for r in records}) == 40
  for record in records[:40]:
    image = _opened(record.data)
    assert (image.format, image.size, image.mode) == ('JPEG', (500, 375),
                                                      'RGB')
    assert not image.info.get('progressive')
    assert JpegImagePlugin.get_sampling(image) == 2
    assert 0x0112 not in image.getexif()
  assert data.stats['images'] == 100 and data.stats['distinct'] == 40
  assert data.stats['mean_pixels'] == data.stats['max_pixels'] == 187_500


@pytest.mark.parametrize('shard_format', profiles.SHARD_FORMATS)
def test_every_kind_of_image_reads_and_decodes(tmp_path, shard_format):
  data = profiles.write_profile(ZOO, str(tmp_path), images=90, per_shard=40,
                                distinct=60, shard_format=shard_format,
                                processes=1)
  assert data.shard_format == shard_format
  records = _read_back(data)
  assert len(records) == 90 and len({r.key for r in records}) == 90
  assert [r.label for r in records] == list(range(90))
  assert [r.data for r in records[60:]] == [r.data for r in records[:30]]
  facts = [profiles.image_facts(r.data) for r in records[:60]]
  modes = {(f.format, f.mode) for f in facts}
  assert {('JPEG', 'CMYK'), ('JPEG', 'L'), ('JPEG', 'RGB')} <= modes
  assert {'PNG', 'WEBP', 'GIF'} <= {f.format for f in facts}
  plans = profiles.draw_plans(ZOO, 60)
  assert any(p.pil_format == 'PNG' and p.extension == 'jpg' for p in plans)
  _decodes(records)


def test_same_seed_same_bytes(tmp_path):
  def shards(folder, seed, processes):
    data = profiles.write_profile('web', str(tmp_path / folder), images=40,
                                  per_shard=20, distinct=40, seed=seed,
                                  processes=processes)
    return [open(p, 'rb').read() for p in data.paths]

  one_process = shards('a', 0, 1)
  assert shards('b', 0, 2) == one_process
  assert shards('c', 1, 1) != one_process
  assert profiles.draw_plans('web', 10)[:5] == profiles.draw_plans('web', 5)


def test_cache_reuses_shards(tmp_path, monkeypatch):
  first = profiles.write_profile('uniform', str(tmp_path), images=25,
                                 per_shard=10, distinct=10, processes=1)
  written = {p: os.stat(p).st_mtime_ns for p in first.paths}

  def no_encoding(*args, **kwargs):
    raise RuntimeError('encoded again')

  with monkeypatch.context() as patch:
    patch.setattr(shards, 'encode_all', no_encoding)
    assert profiles.write_profile('uniform', str(tmp_path), images=25,
                                  per_shard=10, distinct=10) == first
    assert {p: os.stat(p).st_mtime_ns for p in first.paths} == written
    for changed in (dict(seed=1), dict(distinct=11), dict(per_shard=9),
                    dict(shard_format='webdataset')):
      arguments = {**dict(images=25, per_shard=10, distinct=10), **changed}
      with pytest.raises(RuntimeError):
        profiles.write_profile('uniform', str(tmp_path), **arguments)
  os.remove(first.paths[1])
  again = profiles.write_profile('uniform', str(tmp_path), images=25,
                                 per_shard=10, distinct=10, processes=1)
  assert again == first and all(os.path.exists(p) for p in first.paths)
  assert not glob.glob(str(tmp_path / '*.partial'))


def test_describe_weights_by_repeats():
  def jpeg(size, mode, progressive):
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, 'JPEG', progressive=progressive)
    return out.getvalue()

  encoded = [jpeg((100, 50), 'RGB', False), jpeg((200, 100), 'L', True)]
  stats = profiles.describe(encoded, [3, 1])
  assert (stats['images'], stats['distinct']) == (4, 2)
  assert stats['mean_pixels'] == (3 * 5000 + 20000) / 4
  assert (stats['median_pixels'], stats['p95_pixels'],
          stats['max_pixels']) == (5000, 20000, 20000)
  assert stats['progressive_share'] == stats['grayscale_share'] == 0.25
  assert stats['subsampling_shares'] == {'4:2:0': 0.75, 'grayscale': 0.25}
  assert stats['non_jpeg_share'] == stats['exif_rotated_share'] == 0
  assert json.loads(json.dumps(stats)) == stats


def test_cli_prints_the_stats(tmp_path, capsys):
  profiles_cli.main(['--profile', 'uniform', '--images', '5', '--distinct', '3',
                     '--out', str(tmp_path), '--format', 'webdataset',
                     '--processes', '1'])
  report = json.loads(capsys.readouterr().out)
  assert report['shard_format'] == 'webdataset'
  assert report['stats']['images'] == 5 and report['stats']['distinct'] == 3
  assert len(glob.glob(report['pattern'])) == report['shards'] == 1


def test_profiles_are_checked():
  with pytest.raises(ValueError, match='sum to 1'):
    dataclasses.replace(profiles.PROFILES['imagenet'], shapes_share=0.5)
  with pytest.raises(ValueError, match='dots'):
    dataclasses.replace(profiles.PROFILES['web'], name='a.b')
  with pytest.raises(ValueError, match='unknown profile'):
    profiles.write_profile('nope', '/nonexistent', 1)


def test_runs_without_tensorflow_beam_or_crc32c(tmp_path):
  # As on the bare GPU machine: WebDataset shards need none of them, and
  # TFRecord shards say at once that they need google_crc32c.
  code = f"""if True:
    import sys
    for name in ('tensorflow', 'apache_beam', 'google_crc32c', 'pipeline'):
      sys.modules[name] = None
    from benchmarks.gpu import profiles
    data = profiles.write_profile('web', {str(tmp_path)!r}, 12, distinct=8,
                                  processes=1)
    print(data.stats['images'], data.stats['distinct'])
    try:
      profiles.write_profile('imagenet', {str(tmp_path)!r}, 5, processes=1)
    except ImportError as e:
      print('google_crc32c' in str(e))
    """
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                          capture_output=True, text=True)
  assert result.stdout.split() == ['12', '8', 'True']


def test_photos_are_the_demo_photos():
  assert profiles.PHOTO_FILES == demo.PHOTO_FILES
  demo_photos = sorted(demo.real_photos().items())
  # pylint: disable-next=protected-access
  assert [p.tobytes() for p in encoding._photos()] == [
      p.convert('RGB').tobytes() for _, p in demo_photos]
