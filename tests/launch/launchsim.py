"""Simulate launching a chapter on Colab or Binder, here, without the services.

**Colab.** A fresh virtual environment holds only what Colab preinstalls that the book could
use (:data:`COLAB_PREINSTALLED`); the chapter's paired ``.ipynb`` (what the Colab button
opens) then runs top to bottom in a kernel of that environment, and its own hidden setup
cell installs the rest. The setup cell reads ``GMBOOK_SOURCE`` for where pip takes gmbook
from: here a copy of this checkout's ``code/`` instead of the GitHub URL, so the test
installs the code under test, and the machine needs no access to GitHub.

**Binder.** A fresh virtual environment gets exactly ``.binder/requirements.txt``, as
repo2docker installs it from the repository root, except its CPU-only torch index (not
reachable here): torch is the local CPU wheel (``torch==2.13.0``), installed first. The
notebook then runs with ``GMBOOK_SOURCE`` unset, so a setup cell that tried to install
anything would fail (no network to GitHub): Binder must have everything already.

Kernels start from a scrubbed environment (no ``PYTHONPATH``, no user site, fresh IPython
and Jupyter folders, cwd outside the repository), so nothing of the developer's set-up
leaks in. Usable from the command line::

    python tests/launch/launchsim.py colab book/appendix/probability.md
    python tests/launch/launchsim.py binder book/diffusion/ddpm.md

and from ``tests/launch/test_launch.py`` (``pytest tests/launch --launch``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The chapter the simulation launches by default: the cheapest one (about 10 s).
DEFAULT_CHAPTER = "book/appendix/probability.md"

#: What a fresh Colab runtime has that the book could use. Colab preinstalls far more
#: (scipy, tqdm, ...), but not myst-nb, pot or torchdiffeq; anything outside this list
#: must come from the setup cell. torch is this machine's local CPU build.
COLAB_PREINSTALLED = ["torch==2.13.0", "numpy", "matplotlib", "scikit-learn", "ipywidgets",
                      "ipykernel"]
#: The local CPU build of torch, installed before .binder/requirements.txt.
TORCH = "torch==2.13.0"
#: The one option line of .binder/requirements.txt that the simulation drops.
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
#: Seconds one cell may take (the setup cell installs packages on a loaded machine).
CELL_TIMEOUT = 1200
#: Environment variables that would let the developer's set-up leak into a fresh one.
_LEAKS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "GMBOOK_STATIC",
          "GMBOOK_SOURCE", "JUPYTER_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
          "IPYTHONDIR", "MPLBACKEND", "CONDA_PREFIX")


class LaunchError(AssertionError):
    """The notebook did not run top to bottom in the simulated service."""


@dataclass
class Env:
    """A fresh virtual environment and the scrubbed process environment to use it in."""

    root: Path
    home: Path  # folder for IPython/Jupyter/matplotlib state and the kernel's cwd

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _LEAKS}
        env.update(PYTHONNOUSERSITE="1", IPYTHONDIR=str(self.home / "ipython"),
                   JUPYTER_CONFIG_DIR=str(self.home / "jupyter"),
                   JUPYTER_DATA_DIR=str(self.home / "jupyter-data"),
                   MPLCONFIGDIR=str(self.home / "mpl"), PIP_NO_INPUT="1")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.update(extra)
        return env

    def pip(self, *args: str, cwd: Path | None = None) -> None:
        _run([str(self.python), "-m", "pip", "install", "--quiet", *args],
             env=self.environ(), cwd=cwd or self.home)

    def can_import(self, module: str) -> bool:
        done = subprocess.run([str(self.python), "-c", f"import {module}"], env=self.environ(),
                              cwd=self.home, capture_output=True, timeout=300)
        return done.returncode == 0

    def copy(self, dest: Path) -> Env:
        """A copy of this environment (its interpreter is only ever run as ``bin/python``)."""
        shutil.copytree(self.root, dest / "venv", symlinks=True)
        (dest / "home").mkdir(parents=True, exist_ok=True)
        return Env(dest / "venv", dest / "home")


def _run(cmd: list[str], *, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def fresh_env(dest: Path, packages: list[str]) -> Env:
    """``python -m venv`` at ``dest/venv`` (this interpreter's base Python), then ``packages``."""
    dest.mkdir(parents=True, exist_ok=True)
    home = dest / "home"
    home.mkdir(exist_ok=True)
    env = Env(dest / "venv", home)
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(env.root)], env=env.environ(), cwd=home)
    if packages:
        env.pip(*packages)
    return env


def colab_env(dest: Path) -> Env:
    """A fresh environment with only :data:`COLAB_PREINSTALLED`."""
    env = fresh_env(dest, COLAB_PREINSTALLED)
    for module in ("gmbook", "myst_nb"):
        if env.can_import(module):
            raise RuntimeError(f"the fresh Colab-like environment already has {module}")
    return env


def binder_requirements(dest: Path) -> Path:
    """``.binder/requirements.txt`` without its CPU torch index (unreachable here).

    Every other line is kept verbatim; relative paths (``-e ./code``) resolve against the
    repository root, where pip runs, as in repo2docker.
    """
    lines = (ROOT / ".binder" / "requirements.txt").read_text().splitlines()
    dropped = [line for line in lines if line.strip() == CPU_INDEX]
    if len(dropped) != 1:
        raise RuntimeError(f".binder/requirements.txt should have the line {CPU_INDEX!r} once")
    out = dest / "binder-requirements.txt"
    out.write_text("\n".join(line for line in lines if line.strip() != CPU_INDEX) + "\n")
    return out


def binder_env(dest: Path) -> Env:
    """A fresh environment built from ``.binder/`` alone (torch from the local wheel)."""
    env = fresh_env(dest, [TORCH])
    env.pip("-r", str(binder_requirements(dest)), cwd=ROOT)
    return env


def local_source(dest: Path) -> str:
    """A ``file://`` URL of a copy of this checkout's ``code/`` (pip builds in-tree, so a
    copy keeps ``build/`` and ``*.egg-info`` out of the working tree)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT / "code", dest / "code", ignore=junk)
    return (dest / "code").as_uri()


def read_notebook(chapter: str | Path):
    """The paired ``.ipynb`` of a chapter given as ``book/<part>/<name>(.md|.ipynb)``."""
    import nbformat

    path = (ROOT / chapter).with_suffix(".ipynb")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a chapter's paired notebook)")
    return nbformat.read(path, as_version=4)


def run_notebook(nb, env: Env, *, name: str = "notebook", **environ: str) -> float:
    """Execute ``nb`` top to bottom in a kernel of ``env``; return the seconds it took.

    Raises:
        LaunchError: a cell raised; the message names the cell and quotes the error.
    """
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    kernels = env.home / "kernels"
    spec = kernels / "launchsim"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(env.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "launch simulation", "language": "python"}))
    km = KernelManager(kernel_name="launchsim",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(env.home)}})
    start = time.perf_counter()
    try:
        client.execute(env=env.environ(**environ), cwd=str(env.home))
    except CellExecutionError as err:
        raise LaunchError(f"{name} stopped at a cell: {err}") from err
    finally:
        import nbformat

        if km.has_kernel:  # nbclient leaves a kernel manager it was given running
            km.shutdown_kernel(now=True)
        nbformat.write(nb, env.home / f"{Path(name).stem}.executed.ipynb")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=["colab", "binder"])
    parser.add_argument("chapter", help="book/<part>/<name>.md (its paired .ipynb runs)")
    parser.add_argument("--keep", action="store_true", help="keep the environment")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"gmbook-{args.service}-"))
    try:
        start = time.perf_counter()
        if args.service == "colab":
            env = colab_env(tmp)
            extra = {"GMBOOK_SOURCE": local_source(tmp)}
        else:
            env = binder_env(tmp)
            extra = {}
        built = time.perf_counter() - start
        seconds = run_notebook(read_notebook(args.chapter), env, name=args.chapter, **extra)
        print(f"{args.service}: {args.chapter} ran top to bottom in {seconds:.0f} s "
              f"(environment built in {built:.0f} s) in {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
