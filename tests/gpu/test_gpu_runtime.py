"""The GPU runtime's CUDA seams on a real GPU (run_on_device.sh)."""


def test_the_cuda_schedule_takes_on_the_context_jax_made():
  # pylint: disable=import-outside-toplevel
  import jax
  import torch
  from transforms.extract.gpu import runtime
  jax.devices()  # XLA makes and retains the primary context here
  try:
    assert runtime.set_cuda_schedule('blocking') is True
    # torch and JAX still run on it, now waiting without spinning.
    x = torch.ones(1 << 20, device='cuda')
    torch.cuda.synchronize()
    assert float(x.sum()) == 1 << 20
    assert float(jax.numpy.ones(1000).sum()) == 1000.0
  finally:
    runtime.set_cuda_schedule('auto')
