#!/usr/bin/env bash
# Download, on this (networked) machine, the wheels the device machine lacks into .whl/
# (git-ignored; carried to the device with run(carry=[".whl"])). The device image has torch,
# triton, sympy, networkx, numpy and pytest but not these; it runs CPython 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  lark==1.3.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  flash-linear-attention==0.6.0 fla-core==0.6.0 accelerated-scan==0.3.1
ls .whl
