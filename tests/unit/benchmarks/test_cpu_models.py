"""The CPU models benchmark gives each model a timed span of its own."""
from benchmarks import run


def test_a_light_model_gets_more_images_in_whole_batches():
  # EfficientNetB0 at 35 images/s for 30 s: 1,050, rounded up to batches.
  assert run.images_for(35.0, 30, 256, 2000, 16) == 1056
  # VGG16 at 4 images/s needs fewer than the least: the least.
  assert run.images_for(4.0, 30, 256, 2000, 16) == 256
  # Never more than the images made, in whole batches.
  assert run.images_for(500.0, 30, 256, 2000, 16) == 2000
  assert run.images_for(500.0, 30, 256, 1990, 16) == 1984


def test_the_models_images_are_a_profiles_files_written_once(tmp_path):
  from benchmarks import dataset
  stats = dataset.write_profile_folder(str(tmp_path), 3, 'web', seed=1)
  names = sorted(p.name for p in tmp_path.glob('*.jpg'))
  assert names == ['img-00000.jpg', 'img-00001.jpg', 'img-00002.jpg']
  assert stats['images'] == 3 and stats['mean_kb'] > 0
  # The bytes are the profile's seeded draw, whatever the encoder's pool.
  from benchmarks.gpu import profiles
  plans = profiles.draw_plans('web', 3, seed=1)
  assert (tmp_path / 'img-00001.jpg').read_bytes() == profiles.encode(
      plans[1])
  # Cached: a second call with the same arguments writes nothing.
  (tmp_path / 'img-00000.jpg').write_bytes(b'kept')
  assert dataset.write_profile_folder(str(tmp_path), 3, 'web',
                                      seed=1) == stats
  assert (tmp_path / 'img-00000.jpg').read_bytes() == b'kept'
