# The Dataflow worker image for GPU mining (Beam's custom-container guide for GPUs):
# Beam's Python SDK image of the pinned Beam version, the CUDA build of the pinned torch, and
# ugains installed from its wheel, so workers start without installing anything.
#
#   python -m pip wheel --no-deps -w dist .
#   docker build -f docker/dataflow-gpu.Dockerfile \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/<CUDA tag of your torch build> \
#       -t REGION-docker.pkg.dev/PROJECT/REPO/ugains-gpu:VERSION .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/ugains-gpu:VERSION
#   ugains mine --config mining_configs/dataflow_gpu.yaml \
#       --sdk_container_image REGION-docker.pkg.dev/PROJECT/REPO/ugains-gpu:VERSION ...
#
# Dataflow installs the NVIDIA driver (`install-nvidia-driver` in the config's service
# options); torch's CUDA wheels carry the CUDA runtime. The versions below must match the
# project's pins (requirements/constraints.txt, setup.py): tests/test_docker_image.py checks.

ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

ARG BEAM_VERSION=2.77.0
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX
RUN test -n "${TORCH_INDEX}" \
    || (echo "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/<CUDA tag> is required" \
        && exit 1)
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

COPY dist/ugains-*.whl /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/ugains-*.whl "apache-beam[gcp]==${BEAM_VERSION}" \
    && rm -rf /tmp/wheels

# Beam's worker boot program, as in the base image.
ENTRYPOINT ["/opt/apache/beam/boot"]
