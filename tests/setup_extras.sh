#!/usr/bin/env bash
# Optional test-only installs that need more than pip: each part is added by the issue that needs it and must
# print what it did. Failing to set up an optional part makes the dependent tests skip with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
# --- mmdet reference stack (tests/test_equivalence_mmdet.py, marker mmdet) ---------------------------------------
# mmcv 2.1.0 has no wheel for this torch: build it once from source with its CPU ops (~8+ min on 2 cores) and cache
# the wheel; mmdet/mmdet3d go in with --no-deps (their full requirements pull open3d, the lyft SDK, ...), plus the
# few small packages their model code imports. On failure the mmdet tests skip and print why.
setup_mmdet() {
  local py=.venv/bin/python pip=".venv/bin/pip" cache="${BEVCTL_WHEEL_CACHE:-$HOME/.cache/bevctl/wheels}"
  local log="${TMPDIR:-/tmp}/bevctl-mmcv-build.log"
  mkdir -p "$cache"
  if $py -c "import mmcv, mmdet, mmdet3d, mmcv.ops" 2>/dev/null; then
    echo "setup_extras: mmcv/mmdet/mmdet3d already installed ($($py -c 'import mmcv,mmdet,mmdet3d;print(mmcv.__version__,mmdet.__version__,mmdet3d.__version__)'))"
    return 0
  fi
  local wheel
  wheel=$(ls "$cache"/mmcv-2.1.0-*.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "setup_extras: building mmcv 2.1.0 with CPU ops into $cache (log: $log; takes 8+ minutes)"
    local bvenv="${TMPDIR:-/tmp}/bevctl-mmcv-build-venv"
    # a scratch venv: the build needs setuptools<70, which the project venv must not be downgraded to
    # same interpreter as .venv: the wheel is tagged for its Python version
    { "$($py -c 'import sys; print(sys._base_executable)')" -m venv "$bvenv" \
      && "$bvenv/bin/pip" install -q "torch==2.13.0" "numpy<2" "opencv-python-headless<4.12" six wheel ninja \
           packaging addict yapf mmengine \
      && "$bvenv/bin/pip" install -q --no-deps "setuptools<70" \
      && (cd "${TMPDIR:-/tmp}" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 "$bvenv/bin/pip" wheel --no-build-isolation \
           --no-deps -w "$cache" "mmcv==2.1.0"); } >"$log" 2>&1
    wheel=$(ls "$cache"/mmcv-2.1.0-*.whl 2>/dev/null | head -1)
    if [ -z "$wheel" ]; then
      echo "setup_extras: mmcv build FAILED (tail of $log below); mmdet equivalence tests will skip"
      tail -5 "$log"
      return 1
    fi
    echo "setup_extras: built $wheel"
  else
    echo "setup_extras: reusing cached $wheel"
  fi
  if $pip install -q --no-deps "$wheel" "mmengine==0.10.7" "mmdet==3.3.0" "mmdet3d==1.4.0" \
     && $pip install -q "addict" "yapf" "six" "terminaltables" "numba" "plyfile" "trimesh" "scikit-image" "termcolor" \
        "pycocotools" "shapely" "opencv-python-headless<4.12" "numpy<2"; then
    echo "setup_extras: installed mmcv 2.1.0 (cached wheel), mmengine 0.10.7, mmdet 3.3.0, mmdet3d 1.4.0 (--no-deps)"
  else
    echo "setup_extras: installing mmdet/mmdet3d FAILED; mmdet equivalence tests will skip"
    return 1
  fi
}
setup_mmdet || true
# --- launchers (tests/launch, markers mpi and slurm): OpenMPI + torchpack + mpi4py, Slurm ------------------------
# torchpack goes in with --no-deps: its requirements pull torchvision (an unpinned torch) and tensorpack, none of
# which `torchpack dist-run` uses. Slurm's daemons are started per test by tests/helpers/slurm_cluster.py.
setup_launchers() {
  local py=.venv/bin/python pip=".venv/bin/pip" need=()
  command -v mpirun >/dev/null || need+=(openmpi-bin libopenmpi-dev)
  command -v slurmctld >/dev/null || need+=(slurm-wlm)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      { DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
             --no-install-recommends "${need[@]}"; }; } >/tmp/bevctl-launchers-apt.log 2>&1 \
        && echo "setup_extras: installed ${need[*]}" \
        || echo "setup_extras: apt-get install ${need[*]} FAILED (see /tmp/bevctl-launchers-apt.log); mpi/slurm tests will skip"
    else
      echo "setup_extras: ${need[*]} missing and apt-get as root unavailable; mpi/slurm tests will skip"
    fi
  else
    echo "setup_extras: OpenMPI and Slurm already installed ($(mpirun --version 2>/dev/null | head -1); $(slurmctld -V 2>/dev/null))"
  fi
  if $py -c "import torchpack, mpi4py" 2>/dev/null; then
    echo "setup_extras: torchpack and mpi4py already installed"
  elif $pip install -q --no-deps "torchpack==0.3.1" && $pip install -q loguru multimethod tqdm "mpi4py>=3.1"; then
    echo "setup_extras: installed torchpack 0.3.1 (--no-deps) and mpi4py"
  else
    echo "setup_extras: installing torchpack/mpi4py FAILED; mpi tests will skip"
  fi
}
setup_launchers || true
