"""Packaging for featurize.

Dataflow stages this file with ``--setup_file``; the pins below are versions
verified to install together on Python 3.11 and 3.12.
"""
import setuptools

INSTALL_REQUIRES = [
    'apache-beam[gcp]==2.77.0',
    'tensorflow-cpu==2.21.0',
    'keras==3.15.1',
    'numpy==2.4.6',
    'pillow==12.3.0',
    # libspng: plain PNGs in about half Pillow's time
    # (transforms/decode/imaging.py).
    'pyspng==0.1.4',
    'tfrecord==1.14.6',
    'google-cloud-storage==3.17.1',
    'google-crc32c==1.9.0',
    'h5py==3.14.0',
    'PyYAML==6.0.4',
    # The progress line on a terminal (Keras depends on it too).
    'rich==15.0.0',
    # Carries the real photos of the bundled demo dataset in its wheel.
    'scikit-image==0.26.0',
]

TEST_REQUIRES = [
    'pytest==9.2.0',
    # Benchmark plots (the benchmark's smoke test runs in the suite).
    'matplotlib==3.11.2',
    # Kubernetes' own schemas, for the Flink-on-Kubernetes manifest's Job.
    'kubernetes-validate==1.37.0',
    # The FlinkDeployment against the Flink operator's CRD schema.
    'jsonschema==4.26.0',
    'hypothesis==6.170.15',  # tests/system/test_fuzz.py: fuzzing the bytes
    # The fast loop's linter and type checker (tests/unit/test_lint.py).
    'ruff==0.17.6',
    'mypy==2.4.1',
    'types-PyYAML==6.0.12.20261122',
    # The GPU path's model on JAX's CPU device, against TensorFlow's
    # (tests/system/test_gpu_path_on_cpu.py); the same jax as the gpu extra, so
    # that both extras install together. jax 0.11 needs Python 3.12.
    'jax[cpu]==0.10.2; python_version < "3.12"',
    'jax[cpu]==0.11.2; python_version >= "3.12"',
]

# --device gpu: Keras on JAX with CUDA 13, nvJPEG through torchvision. The
# GPU machine the benchmark ran on had jax 0.11.2 (Python 3.12); jax 0.11
# needs Python 3.12, so 3.11 gets 0.10.2. PyPI's torch 2.11.0 is built
# for CUDA 13, like jax[cuda13].
GPU_REQUIRES = [
    'jax[cuda13]==0.10.2; python_version < "3.12"',
    'jax[cuda13]==0.11.2; python_version >= "3.12"',
    'torch==2.11.0',
    'torchvision==0.26.0',
]
# Also for the tests: benchmarks/requirements-nodeps.txt, installed with
# --no-deps (see that file for why).

setuptools.setup(
    name='featurize',
    version='0.1.0',
    description=(
        'Apache Beam pipeline: image shards in, VGG16 features out as '
        'sharded TFRecords, with bounded memory per worker.'),
    python_requires='>=3.11,<3.13',
    # Every subpackage too (pipeline.runners.flink_local, transforms.read,
    # ...).
    packages=setuptools.find_packages(include=['pipeline', 'pipeline.*',
                                               'transforms', 'transforms.*']),
    install_requires=INSTALL_REQUIRES,
    extras_require={'test': TEST_REQUIRES,
                    'gpu': GPU_REQUIRES,
                    # featurize inspect --plot
                    'plot': ['matplotlib==3.11.2']},
    entry_points={'console_scripts': ['featurize=pipeline.cli:main']},
)
