"""Triton Inference Server without a container: the PyTriton wheel unpacked, the Python backend stub for the running
Python, numpy 1 for the stub, and the environment the server needs.

``nvidia-pytriton==0.7.0`` (``envs/triton.txt``) carries a real ``tritonserver`` 2.51.0, ``libtritonserver``, the Python
backend and its stubs for Python 3.8-3.13. The wheel is unpacked, never installed (it would pull PyTriton's own
Python API and pins). ``make triton`` does all of it into the ignored ``.venv-triton/``:

* ``.venv-triton/server/``: the unpacked wheel, with ``backends/python/triton_python_backend_stub`` for this Python;
* ``.venv-triton/numpy1/``: numpy 1.26.4 alone (``pip install --target``): the stub is built for numpy 1, so the
  preprocessing and postprocessing models put this folder first on ``sys.path`` (BYTES tensors need it);
* ``.venv-triton/tools/``: a venv with genai-perf 0.0.16 and perf_analyzer (``tritonclient`` 2.50.0's binary).

On another machine (the GPU image, Python 3.12) the same functions run on a staged wheel:
``unpack_wheel(WHEEL, DEST)``, ``install_stub(DEST)``, ``install_numpy1(DIR)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path


def pin(name: str, fallback: str) -> str:
    """``name==version`` as ``envs/triton.txt`` pins it (the one place the versions are written)."""
    from llmstudy.core.paths import repo_root

    f = repo_root() / "envs" / "triton.txt"
    if f.is_file():
        for line in f.read_text().splitlines():
            req = line.split("#")[0].strip()
            if req.split("==")[0].split("[")[0].strip().lower() == name:
                return req
    return fallback


PYTRITON_PIN = pin("nvidia-pytriton", "nvidia-pytriton==0.7.0")
NUMPY1_PIN = pin("numpy", "numpy==1.26.4")
SERVER_VERSION = "2.51.0"  # what the wheel's tritonserver reports at /v2


def default_root() -> Path:
    """``$LLMSTUDY_TRITON_HOME`` or the repository's ``.venv-triton``."""
    env = os.environ.get("LLMSTUDY_TRITON_HOME")
    if env:
        return Path(env)
    from llmstudy.core.paths import repo_root

    return repo_root() / ".venv-triton"


@dataclass(frozen=True)
class TritonInstall:
    """Where the unpacked server, numpy 1 and the load-generator venv live (``root`` = ``.venv-triton``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def default(cls) -> TritonInstall:
        return cls(default_root())

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def tritonserver(self) -> Path:
        return self.server_dir / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_dir / "pytriton" / "tritonserver" / "backends"

    @property
    def libs(self) -> Path:
        return self.server_dir / "nvidia_pytriton.libs"

    @property
    def numpy1(self) -> Path:
        return self.root / "numpy1"

    @property
    def tools_bin(self) -> Path:
        return self.root / "tools" / "bin"

    def missing(self) -> list[str]:
        """What is not installed yet (empty when the server can start)."""
        out = []
        if not self.tritonserver.is_file():
            out.append(f"{self.tritonserver} (run `make triton`, or unpack_wheel + install_stub)")
        elif not (self.backends / "python" / "triton_python_backend_stub").is_file():
            out.append(f"{self.backends / 'python' / 'triton_python_backend_stub'} (install_stub for this Python)")
        if not (self.numpy1 / "numpy" / "__init__.py").is_file():
            out.append(f"{self.numpy1} (numpy 1 for the Python backend stub: install_numpy1)")
        return out

    def server_env(self, python: str | None = None) -> dict:
        """Variables tritonserver and its stubs need: the wheel's libraries and the Python's ``libpython``."""
        libdir = python_libdir(python)
        paths = [str(self.libs), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
        return {"LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


def python_libdir(python: str | None = None) -> str:
    """The folder holding ``libpython3.X.so.1.0`` of ``python`` (default: this interpreter)."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return sysconfig.get_config_var("LIBDIR") or ""
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def python_version(python: str | None = None) -> str:
    if python is None:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    out = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def unpack_wheel(wheel: Path | str, dest: Path | str) -> Path:
    """Unzip the PyTriton wheel into ``dest`` keeping the executable bits (zipfile drops them)."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                continue  # PyTriton's own Python API is not needed
            path = Path(z.extract(info, tmp))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)
    exe = tmp / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not exe.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{wheel} holds no pytriton/tritonserver/bin/tritonserver: not an nvidia-pytriton wheel")
    exe.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def install_stub(server_dir: Path | str, python: str | None = None) -> Path:
    """Copy the Python backend stub built for ``python``'s version into ``backends/python/`` (the backend looks
    there). The wheel ships stubs for 3.8-3.13; another version is a clear error."""
    server_dir = Path(server_dir)
    ver = python_version(python)
    stubs = server_dir / "pytriton" / "tritonserver" / "python_backend_stubs"
    src = stubs / ver / "triton_python_backend_stub"
    if not src.is_file():
        have = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
        raise FileNotFoundError(f"no Python backend stub for Python {ver} in {stubs} (the wheel has {have})")
    dst = server_dir / "pytriton" / "tritonserver" / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(src, dst)
    dst.chmod(0o755)
    return dst


def install_numpy1(dest: Path | str, python: str | None = None, find_links: str | None = None) -> Path:
    """numpy 1.26.4 alone into ``dest`` for ``python`` (``pip install --target``; ``find_links``: a folder of staged
    wheels on a machine without an index)."""
    dest = Path(dest)
    if (dest / "numpy" / "__init__.py").is_file():
        return dest
    cmd = [python or sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(dest), NUMPY1_PIN]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    subprocess.run(cmd, check=True)
    return dest


def download_wheel(dest_dir: Path | str, python: str | None = None) -> Path:
    """``pip download <PYTRITON_PIN> --no-deps`` into ``dest_dir``; returns the wheel."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pattern = "nvidia_pytriton-" + PYTRITON_PIN.split("==")[1] + "-*.whl"
    found = sorted(dest_dir.glob(pattern))
    if not found:
        subprocess.run([python or sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest_dir), PYTRITON_PIN], check=True)
        found = sorted(dest_dir.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip downloaded no {pattern} into {dest_dir}")
    return found[-1]


def install(root: Path | str | None = None, wheel: Path | str | None = None, python: str | None = None,
            find_links: str | None = None) -> TritonInstall:
    """Everything the server needs under ``root`` (default ``.venv-triton``): unpacked wheel, stub, numpy 1.
    Offline (the GPU machine): ``wheel`` = the staged PyTriton wheel, ``find_links`` = a folder holding numpy 1.26.4's
    wheel for ``python``."""
    inst = TritonInstall(Path(root) if root else default_root())
    if not inst.tritonserver.is_file():
        unpack_wheel(wheel or download_wheel(inst.root / "wheels", python), inst.server_dir)
    install_stub(inst.server_dir, python)
    install_numpy1(inst.numpy1, python, find_links)
    return inst


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="unpack the PyTriton wheel's tritonserver, its Python stub and numpy 1")
    ap.add_argument("--root", default=None, help="default: .venv-triton (or $LLMSTUDY_TRITON_HOME)")
    ap.add_argument("--wheel", default=None, help="a staged nvidia_pytriton-0.7.0 wheel (default: pip download)")
    ap.add_argument("--python", default=None, help="the Python whose stub is installed (default: this one)")
    ap.add_argument("--find-links", default=None, help="a folder with numpy 1.26.4's wheel (no index: offline)")
    a = ap.parse_args()
    done = install(a.root, a.wheel, a.python, a.find_links)
    print(f"tritonserver {SERVER_VERSION}: {done.tritonserver}")
