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
