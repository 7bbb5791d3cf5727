#!/usr/bin/env bash
# The GPU kit: jobs/gpu_bench.py on a machine that has torch, pyarrow, psutil, opencv-headless and
# nvidia-ml-py but neither Ray nor ultralytics; the rest travels as wheels (about 38 MiB).
#
#   jobs/gpu_kit.sh wheels DIR [PYTHON_VERSION]   download the carried wheels into DIR
#                                                 (for the target's Python, default: this one's)
#   jobs/gpu_kit.sh run DIR [gpu_bench.py args]   install DIR's wheels into a private folder
#                                                 (nothing else is touched) and run the kit
#
# $PYTHON picks the interpreter for `run` (default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHEELS="ultralytics==8.4.190 ultralytics-thop==2.2.3 av==18.1.0 pyyaml==6.0.3"
python="${PYTHON:-python3}"

case "${1:-}" in
  wheels)
    dir="${2:?usage: gpu_kit.sh wheels DIR [PYTHON_VERSION]}"
    version="${3:-$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$dir" $WHEELS
    du -sh "$dir"
    ;;
  run)
    dir="${2:?usage: gpu_kit.sh run DIR [gpu_bench.py args]}"
    shift 2
    site="$(mktemp -d -t gpu-kit-site.XXXXXX)"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$dir"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" YOLO_OFFLINE=1
    exec "$python" "$here/gpu_bench.py" "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
