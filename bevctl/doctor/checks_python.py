"""Python, PyTorch, spconv and GPU checks.

torch and spconv are imported only in a child process (`probe`), so the CLI never loads torch and a broken CUDA
install that hangs or aborts on import shows up as a failed check instead of taking the report down.
GPUs are read from the driver (NVML through ctypes, else `nvidia-smi`), independently of torch.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bevctl.doctor.core import Context, python_label, short_path

TORCH_PIN = "2.13.0"
TRAIN_PACKAGES = ["torch", "numpy", "scipy", "nuscenes-devkit", "shapely", "pillow", "matplotlib"]
PROBE_TIMEOUT = 60.0

_PROBE = r"""
import json, sys
out = {}
try:
    import torch
    t = {"version": torch.__version__, "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None),
         "path": torch.__file__, "arch_list": [], "available": False, "devices": []}
    try:
        t["arch_list"] = list(torch.cuda.get_arch_list())
        t["available"] = bool(torch.cuda.is_available())
        if t["available"]:
            for i in range(torch.cuda.device_count()):
                t["devices"].append({"name": torch.cuda.get_device_name(i),
                                     "capability": list(torch.cuda.get_device_capability(i))})
    except Exception as exc:
        t["cuda_error"] = f"{type(exc).__name__}: {exc}"
    out["torch"] = t
except BaseException as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
if "torch" in out:
    try:
        import spconv
        import spconv.pytorch
        out["spconv"] = {"version": getattr(spconv, "__version__", "?")}
    except BaseException as exc:
        out["spconv_error"] = f"{type(exc).__name__}: {exc}"
sys.stdout.write("\nBEVCTL_PROBE " + json.dumps(out) + "\n")
"""


def probe(ctx: Context) -> dict[str, Any]:
    """torch/spconv facts from a child interpreter (the one running bevctl), once per report."""

    def run() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        for line in proc.stdout.splitlines():
            if line.startswith("BEVCTL_PROBE "):
                return json.loads(line[len("BEVCTL_PROBE "):])
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"python died importing torch (exit {proc.returncode}): {tail}")

    return ctx.once("probe", run)


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _needed(ctx: Context) -> tuple[str, str]:
    """Status for a missing training dependency, and why: fail where the trainer runs here, else warn."""
    if ctx.trains_here == "yes":
        return "fail", ""
    return "warn", " (needed to train outside the container)"


def _install_fix(ctx: Context) -> str:
    if ctx.gpu_phase:
        return f"pip install -e '.[train]' torch=={TORCH_PIN} (CUDA wheel) spconv-cu126, or train in the image: bevctl build"
    return "pip install -e '.[train,cpu]' (or `make setup`)"


# --------------------------------------------------------------------------------------------- python


def check_python(ctx: Context):
    if sys.version_info < (3, 10):
        return "fail", f"Python {python_label()} is too old; bevctl needs 3.10+", "use Python 3.11: make setup"
    return "ok", f"Python {python_label()}", None


def check_bevctl(ctx: Context):
    from bevctl import __version__

    here = Path(__file__).resolve().parents[1]  # the bevctl package this report comes from
    found = shutil.which("bevctl", path=ctx.env.get("PATH"))
    if not found:  # works when called by path (make demo does); only typing `bevctl` needs the venv activated
        activate = short_path(Path(sys.executable).parent / "activate")
        return "ok", f"bevctl {__version__} ({here}); not on PATH: `source {activate}` to type just `bevctl`", None
    # A second install (pipx, another venv) earlier on PATH runs another Python with other packages.
    try:
        with open(found, "rb") as handle:
            first = handle.readline(512).decode("utf-8", "replace")
    except OSError:
        first = ""
    if first.startswith("#!"):
        interpreter = first[2:].strip().split()[0] if first[2:].strip() else ""
        if interpreter and Path(interpreter).name.startswith("python") and \
                Path(interpreter).resolve() != Path(sys.executable).resolve() and \
                Path(interpreter).parent.resolve() != Path(sys.executable).parent.resolve():
            return ("warn", f"`bevctl` on PATH ({found}) runs {interpreter}, not this {short_path(sys.executable)}",
                    f"put {Path(sys.executable).parent} first on PATH, or remove the other install")
    return "ok", f"bevctl {__version__} ({here})", None


def check_packages(ctx: Context):
    if ctx.trains_here == "no":
        return "skipped", "the phase trains in the container; check there with --in-container", None
    missing = [p for p in TRAIN_PACKAGES if installed(p) is None]
    if not missing:
        return "ok", f"training dependencies installed ({len(TRAIN_PACKAGES)} packages)", None
    status, why = _needed(ctx)
    if len(missing) == len(TRAIN_PACKAGES):
        return status, f"no training dependencies installed{why}", _install_fix(ctx)
    return status, f"missing {', '.join(missing)}{why}", _install_fix(ctx)


def check_torch(ctx: Context):
    if ctx.trains_here == "no":
        return "skipped", "the phase trains in the container; check there with --in-container", None
    if installed("torch") is None:
        status, why = _needed(ctx)
        return status, f"torch is not installed{why}", _install_fix(ctx)
    info = probe(ctx)
    if "torch_error" in info:
        status, why = _needed(ctx)
        return status, f"torch does not import: {info['torch_error']}{why}", "reinstall it: " + _install_fix(ctx)
    t = info["torch"]
    build = f"CUDA {t['cuda']}" if t["cuda"] else (f"ROCm {t['hip']}" if t.get("hip") else "CPU build")
    message = f"torch {t['version']} ({build})"
    if ctx.gpu_phase and not t["cuda"]:
        return (_needed(ctx)[0], f"{message}: this phase trains on {ctx.gpus_wanted} GPU(s) but torch has no CUDA",
                f"install the CUDA wheel of torch=={TORCH_PIN}, or train in the image (bevctl build; launch.where: container)")
    if t["version"].split("+")[0] != TORCH_PIN:
        return "warn", f"{message}; bevctl is tested with {TORCH_PIN}", f"pip install torch=={TORCH_PIN}"
    return "ok", message, None


def spconv_flavour() -> tuple[str | None, str | None]:
    """(distribution, CUDA version) of the installed spconv: ("spconv", None) is the CPU build."""
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name == "spconv":
            return name, None
        match = re.fullmatch(r"spconv-cu(\d+)(\d)", name)
        if match:
            return name, f"{match.group(1)}.{match.group(2)}"
    return None, None


def check_spconv(ctx: Context):
    if ctx.trains_here == "no":
        return "skipped", "the phase trains in the container; check there with --in-container", None
    dist, cuda = spconv_flavour()
    if dist is None:
        status, why = _needed(ctx)
        fix = "pip install spconv-cu126 (match torch's CUDA)" if ctx.gpu_phase else "pip install spconv==2.3.8"
        return status, f"spconv is not installed (the LiDAR backbone needs it){why}", fix
    info = probe(ctx)
    if "torch_error" in info:
        return "skipped", "torch does not import (see python.torch)", None
    if "spconv_error" in info:
        return "fail", f"{dist} does not import: {info['spconv_error']}", f"reinstall it: pip install --force-reinstall {dist}"
    torch_cuda = info["torch"]["cuda"]
    label = f"{dist} {info['spconv']['version']} ({'CUDA ' + cuda if cuda else 'CPU build'})"
    if ctx.gpu_phase and cuda is None:
        want = f"spconv-cu{torch_cuda.replace('.', '')[:3]}" if torch_cuda else "spconv-cu126"
        return _needed(ctx)[0], f"{label}: GPU training needs a CUDA build", f"pip uninstall -y spconv && pip install {want}"
    if cuda and torch_cuda and cuda.split(".")[0] != torch_cuda.split(".")[0]:
        return ("fail", f"{label} but torch is built with CUDA {torch_cuda}",
                f"pip uninstall -y {dist} && pip install spconv-cu{torch_cuda.replace('.', '')[:3]}")
    if cuda and not torch_cuda:
        return "warn", f"{label} with a CPU build of torch: sparse conv runs on CPU only", None
    return "ok", label, None


# --------------------------------------------------------------------------------------------- GPUs


class NvmlError(RuntimeError):
    NAMES = {9: "driver not loaded", 12: "library/driver version mismatch (reboot or reinstall the driver)",
             18: "library/driver version mismatch", 999: "unknown error"}

    def __init__(self, call: str, code: int):
        super().__init__(f"NVML {call}: {self.NAMES.get(code, f'error {code}')}")
        self.code = code


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml() -> dict[str, Any]:
    lib = ctypes.CDLL("libnvidia-ml.so.1")

    def call(name: str, *args: Any) -> None:
        code = getattr(lib, name)(*args)
        if code != 0:
            raise NvmlError(name, code)

    call("nvmlInit_v2")
    try:
        buf = ctypes.create_string_buffer(96)
        call("nvmlSystemGetDriverVersion", buf, ctypes.c_uint(96))
        driver = buf.value.decode()
        cuda = ctypes.c_int()
        call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(cuda))
        count = ctypes.c_uint()
        call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(i), ctypes.byref(handle))
            call("nvmlDeviceGetName", handle, buf, ctypes.c_uint(96))
            major, minor = ctypes.c_int(), ctypes.c_int()
            call("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor))
            mem = _Memory()
            call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem))
            gpus.append({"name": buf.value.decode(), "capability": [major.value, minor.value],
                         "memory_mib": mem.total // 2**20})
        return {"source": "NVML", "driver": driver,
                "cuda": f"{cuda.value // 1000}.{cuda.value % 1000 // 10}", "gpus": gpus}
    finally:
        lib.nvmlShutdown()


def _nvidia_smi(ctx: Context) -> dict[str, Any]:
    exe = shutil.which("nvidia-smi", path=ctx.env.get("PATH"))
    if not exe:
        raise FileNotFoundError("neither libnvidia-ml.so.1 nor nvidia-smi found")
    query = [exe, "--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"]
    proc = subprocess.run(query, capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        raise RuntimeError(f"nvidia-smi failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    gpus, driver = [], None
    for line in proc.stdout.strip().splitlines():
        name, memory, cap, driver = [part.strip() for part in line.split(",")]
        major, minor = cap.split(".")
        gpus.append({"name": name, "capability": [int(major), int(minor)], "memory_mib": int(float(memory))})
    header = subprocess.run([exe], capture_output=True, text=True, timeout=15).stdout
    match = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {"source": "nvidia-smi", "driver": driver, "cuda": match.group(1) if match else None, "gpus": gpus}


def driver_info(ctx: Context) -> dict[str, Any] | None:
    """The NVIDIA driver's view: driver and CUDA versions and the GPUs; None when there is no NVIDIA driver."""

    def read() -> dict[str, Any] | None:
        nvml_error = None
        try:
            return _nvml()
        except OSError:  # no libnvidia-ml: try the CLI, which also covers unusual library paths
            pass
        except NvmlError as exc:
            nvml_error = exc
        try:
            return _nvidia_smi(ctx)
        except FileNotFoundError:
            if nvml_error is None or nvml_error.code == 9:  # library present but no driver loaded: no GPU here
                return None
            raise nvml_error from None

    return ctx.once("driver", read)


def _no_gpu_status(ctx: Context) -> str:
    return "fail" if ctx.gpu_phase else "warn"


def check_gpus(ctx: Context):
    try:
        info = driver_info(ctx)
    except Exception as exc:
        return (_no_gpu_status(ctx), f"the NVIDIA driver does not answer: {exc}",
                "check `nvidia-smi`; a driver/library version mismatch needs a reboot or driver reinstall")
    want = ctx.gpus_wanted
    if info is None or not info["gpus"]:
        if ctx.phase is not None and not ctx.gpu_phase:
            return "warn", "no NVIDIA GPU found: fine for this CPU phase, GPU phases will not run here", None
        what = f"this phase trains on {want} GPU(s)" if want else "GPU phases need one"
        return (_no_gpu_status(ctx), f"no NVIDIA GPU found ({what})",
                "run on a GPU server with the NVIDIA driver installed (nvidia-smi must list the GPUs), or use --phase demo")
    names: dict[str, int] = {}
    for gpu in info["gpus"]:
        label = f"{gpu['name']} ({gpu['memory_mib'] // 1024} GiB, sm_{gpu['capability'][0]}{gpu['capability'][1]})"
        names[label] = names.get(label, 0) + 1
    listing = ", ".join(f"{n}× {label}" for label, n in names.items())
    message = f"{listing}; driver {info['driver']} (CUDA {info['cuda']}) via {info['source']}"
    if want and len(info["gpus"]) < want:
        return ("fail", f"{len(info['gpus'])} GPU(s) found, the phase wants {want}: {message}",
                f"set launch.gpus to {len(info['gpus'])} (--set launch.gpus={len(info['gpus'])}) or use a bigger server")
    small = [g for g in info["gpus"] if g["memory_mib"] < 24 * 1024]
    if want and small and ctx.phase is not None and ctx.phase.model.config == "full":
        return ("warn", f"{message}; the full model needs > 24 GiB per GPU at batch 4",
                "lower train.batch_size (--set train.batch_size=1) or use GPUs with more memory")
    return "ok", message, None


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or "")[:2])


def check_cuda(ctx: Context):
    """torch's CUDA build against what the driver supports (the mmcv-era build-vs-runtime trap)."""
    if ctx.trains_here == "no":
        return "skipped", "torch runs in the container; check there with --in-container", None
    try:
        info = driver_info(ctx)
    except Exception as exc:
        return "skipped", f"no driver information ({exc})", None
    if installed("torch") is None:
        return "skipped", "torch is not installed (see python.torch)", None
    t = probe(ctx).get("torch")
    if t is None:
        return "skipped", "torch does not import (see python.torch)", None
    if not t["cuda"]:
        if ctx.gpu_phase:
            return (_needed(ctx)[0], f"torch {t['version']} is a CPU build; this phase needs CUDA",
                    f"install the CUDA wheel of torch=={TORCH_PIN}, or train in the image (bevctl build)")
        if ctx.phase is None:
            return "ok", f"torch {t['version']} is a CPU build (GPU phases need the CUDA wheel)", None
        return "ok", f"torch {t['version']} is a CPU build (this phase runs on CPU)", None
    if info is None or not info["gpus"]:
        return (_no_gpu_status(ctx), f"torch is built for CUDA {t['cuda']} but there is no NVIDIA driver/GPU",
                "install the NVIDIA driver, or run on a GPU server")
    built, driver = _version(t["cuda"]), _version(info["cuda"])
    if driver and built[:1] > driver[:1]:
        return ("fail", f"torch needs CUDA {t['cuda']}, the driver {info['driver']} supports only CUDA {info['cuda']}",
                f"update the NVIDIA driver, or install a torch build for CUDA {info['cuda']}")
    if not t["available"]:
        why = t.get("cuda_error") or "torch.cuda.is_available() is False"
        return ("fail", f"torch (CUDA {t['cuda']}) cannot use the GPU: {why}",
                "check CUDA_VISIBLE_DEVICES and the driver; inside docker run with --gpus all")
    if driver and built > driver:
        return ("warn", f"torch CUDA {t['cuda']} is newer than the driver's CUDA {info['cuda']} (minor-version compatibility)",
                "update the NVIDIA driver if kernels fail to load (PTX JIT errors)")
    return "ok", f"torch CUDA {t['cuda']}, driver {info['driver']} supports CUDA {info['cuda']}", None


def arch_supported(capability: list[int] | tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a device of `capability` can run kernels from a torch built for `arch_list`.

    A cubin for sm_XY runs on devices of the same major X with minor >= Y; PTX (compute_XY) is JIT-compiled for any
    device >= XY.
    """
    major, minor = capability
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)a?", arch)
        if not match:
            continue
        a_major, a_minor = int(match.group(2)), int(match.group(3))
        if match.group(1) == "sm" and a_major == major and a_minor <= minor:
            return True
        if match.group(1) == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def check_arch(ctx: Context):
    """The GPU's compute capability against the architectures torch was compiled for (sm_90 on H100/H200)."""
    if ctx.trains_here == "no":
        return "skipped", "torch runs in the container; check there with --in-container", None
    try:
        info = driver_info(ctx)
    except Exception as exc:
        return "skipped", f"no driver information ({exc})", None
    if info is None or not info["gpus"]:
        return "skipped", "no NVIDIA GPU", None
    if installed("torch") is None:
        return "skipped", "torch is not installed (see python.torch)", None
    t = probe(ctx).get("torch")
    if t is None or not t["cuda"]:
        return "skipped", "torch has no CUDA (see gpu.cuda)", None
    caps = sorted({tuple(g["capability"]) for g in info["gpus"]})
    bad = [c for c in caps if not arch_supported(c, t["arch_list"])]
    archs = " ".join(t["arch_list"]) or "(none)"
    if bad:
        sms = ", ".join(f"sm_{a}{b}" for a, b in bad)
        return ("fail", f"torch {t['version']} has no kernels for {sms} (built for {archs}): "
                        "'no kernel image is available for execution'",
                f"install a torch built with {sms} (CUDA >= 11.8 for sm_90), e.g. the project image: bevctl build")
    return "ok", f"{', '.join(f'sm_{a}{b}' for a, b in caps)} covered by torch's {archs}", None
