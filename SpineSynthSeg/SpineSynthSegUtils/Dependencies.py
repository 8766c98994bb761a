"""Install SpineSynthSeg's Python dependencies into Slicer on demand (never at import time).

* torch comes from the PyTorch extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``),
  which picks the build for the machine's GPU; pip never pulls it in transitively.
* Everything else comes from ``Resources/requirements.txt`` (``>=`` bounds) through
  ``slicer.packaging.pip_install`` (Slicer >= 5.9) or ``slicer.util.pip_install``; packages whose
  own dependencies include torch (``NO_DEPS``) are installed with ``--no-deps``.
* The user is asked first; declining raises `DependencyError` with a message saying what is
  missing and how to install it by hand.

``slicer`` and ``qt`` are imported inside the functions, and every collaborator (confirmation
dialog, pip, PyTorch logic) can be injected, so this file also runs in plain Python.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"
NO_DEPS = ("monai",)
log = logging.getLogger(__name__)  # their metadata requires torch: never let pip resolve it


class DependencyError(RuntimeError):
    """A dependency is missing and was not installed (declined, or the install failed)."""


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in re.split(r"[.+-]", text):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def isSatisfied(requirement: str, installed: Callable[[str], str | None] | None = None) -> bool:
    """Whether ``requirement`` ('name>=x.y' or 'name') is met by the installed distribution."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.+\-]*))?\s*", requirement)
    if not match:
        raise ValueError(f"unsupported requirement {requirement!r}: use 'name' or 'name>=version'")
    name, minimum = match.groups()
    version = (installed or installedVersion)(name)
    if version is None:
        return False
    return minimum is None or _version_tuple(version) >= _version_tuple(minimum)


def installedVersion(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pipInstall(args: str) -> None:
    import slicer

    try:
        from slicer.packaging import pip_install
    except ImportError:
        pip_install = slicer.util.pip_install
    pip_install(args)


def _confirm(text: str) -> bool:
    import slicer

    return slicer.util.confirmOkCancelDisplay(text, windowTitle="SpineSynthSeg: install dependencies")


def _torchLogic():
    try:
        import PyTorchUtils
    except ImportError as err:
        raise DependencyError(
            "SpineSynthSeg needs the PyTorch extension to install torch. Install 'PyTorch' from the "
            "Extensions Manager, restart Slicer, and try again."
        ) from err
    return PyTorchUtils.PyTorchUtilsLogic()


class DependencyInstaller:
    """Checks and installs the packages a feature needs.

    Args:
        requirementsFile: the ``>=`` requirements (default: the module's Resources file).
        confirm: ``confirm(text) -> bool`` asks the user (default: an OK/Cancel dialog).
        pipInstall: ``pipInstall(args)`` (default: Slicer's pip_install).
        torchLogic: factory of an object with ``installTorch(askConfirmation, torchVersionRequirement)``
            (default: the PyTorch extension's logic).
        installed: ``installed(name) -> version or None`` (default: importlib.metadata).
    """

    def __init__(self, requirementsFile: Path = REQUIREMENTS_FILE, confirm=None, pipInstall=None, torchLogic=None,
                 installed=None):
        self.requirements = readRequirements(requirementsFile)
        self.confirm = confirm or _confirm
        self.pipInstall = pipInstall or _pipInstall
        self.torchLogic = torchLogic or _torchLogic
        self.installed = installed or installedVersion

    def missing(self, withTorch: bool = True) -> list[str]:
        """Requirements not met now (torch first when ``withTorch``)."""
        wanted = ([TORCH_REQUIREMENT] if withTorch else []) + self.requirements
        return [r for r in wanted if not isSatisfied(r, self.installed)]

    def ensure(self, withTorch: bool = True) -> list[str]:
        """Install what is missing after asking; returns what was installed.

        Raises:
            DependencyError: the user declined, or an install failed; the message lists the
                packages and the manual command.
        """
        missing = self.missing(withTorch)
        if not missing:
            return []
        manual = " ".join(f'"{r}"' for r in missing if not r.startswith("torch"))
        text = ("SpineSynthSeg needs these Python packages, which are not installed yet:\n\n  "
                + "\n  ".join(missing)
                + "\n\ntorch is installed by the PyTorch extension; the others with pip. This can take several "
                  "minutes. Install now?")
        if not self.confirm(text):
            raise DependencyError(
                "Dependencies not installed (declined): " + ", ".join(missing) + ". The feature needs them. "
                "Install torch with the PyTorch Utils module and the others from Slicer's Python console with "
                f"slicer.util.pip_install('{manual.replace(chr(34), '')}'), or accept the prompt next time."
            )
        done = []
        for requirement in missing:
            log.info("SpineSynthSeg: installing %s", requirement)
            if requirement.startswith("torch"):
                torch = self.torchLogic().installTorch(askConfirmation=False,
                                                       torchVersionRequirement=requirement[len("torch"):])
                if torch is None:
                    raise DependencyError("PyTorch was not installed (PyTorch Utils returned nothing). Install it "
                                          "with the PyTorch Utils module, then try again.")
            else:
                name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0]
                try:
                    self.pipInstall(f"{requirement} --no-deps" if name in NO_DEPS else requirement)
                except Exception as err:  # pip's CalledProcessError and friends
                    raise DependencyError(f"installing {requirement} failed: {err}") from err
            done.append(requirement)
        return done
