# The Dataflow worker image (--sdk_container_image), which is also the Flex
# Template's launcher image: Beam's Python SDK image of the pinned version,
# with TensorFlow, Keras and featurize installed from setup.py's pins.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/featurize/featurize:0.1.0 .
#   docker build --build-arg BAKE_WEIGHTS=notop -t ... .   # weights inside
#
# or without Docker: gcloud builds submit --tag IMAGE . (docs/dataflow.md).
# Keep BEAM_VERSION equal to the apache-beam pin in setup.py;
# tests/unit/pipeline/test_flex_template.py checks that it is.
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

FROM ${LAUNCHER_IMAGE} AS launcher

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

# The Flex Template launcher binary: the same image then launches the job
# and runs its workers, so launcher and workers never disagree on versions.
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
    /opt/google/dataflow/python_template_launcher

WORKDIR /opt/featurize
COPY setup.py ./
COPY pipeline pipeline
COPY transforms transforms
COPY run_configs run_configs
# pip check: the image must hold one consistent set of the pinned versions
# (the base image's own Beam dependencies included).
RUN pip install --no-cache-dir . && pip check

# Optionally bake the official ImageNet weights into the image (notop, top
# or all), so that workers load them from disk instead of downloading them
# from storage.googleapis.com at every start. KERAS_HOME fixes where Keras
# (and featurize's manifest) finds them.
ENV KERAS_HOME=/opt/keras
ARG BAKE_WEIGHTS=none
RUN if [ "$BAKE_WEIGHTS" != none ]; then \
      python -c "import sys, keras; \
[keras.applications.VGG16(include_top=top, weights='imagenet') \
 for top in {'notop': [False], 'top': [True], 'all': [False, True]}[sys.argv[1]]]" \
      "$BAKE_WEIGHTS"; \
    fi

# Flex Template: the file the launcher runs, and no dependency installs at
# launch time (everything is installed above).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/featurize/pipeline/runners/flex_template.py
ENV PIP_NO_DEPS=True

# Beam's worker boot program, as in the base image.
ENTRYPOINT ["/opt/apache/beam/boot"]
