"""``autograder.zip`` for Gradescope: all a container needs to grade a lesson offline.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to build its
image, then ``run_autograder`` once per submission (one container each, at any class size).
The zip holds::

    setup.sh                      installs (CPU torch, the wheel, bubblewrap), prebuilds the zoo
    run_autograder                grades submission/ into results/results.json
    autograder.env                this bundle's settings: preset, weight seed, timeouts, torch version, wheel
    spec.toml                     the lesson's exercise spec (validated before anything is written)
    constraints.txt               the versions CI tested
    sdverify-<version>-*.whl      built from this checkout: Gradescope cannot install it by name

The scripts are static (``templates/``) and read ``autograder.env``; both honour
``$AUTOGRADER_ROOT`` and ``$SDVERIFY_PYTHON``, so the bundle can be tried in a temporary folder.
"""

from __future__ import annotations

import importlib.metadata
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sdverify.errors import UsageError
from sdverify.notebooks.spec import load_spec
from sdverify.presets import get_preset
from sdverify.settings import GRADE, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TEMPLATES = Path(__file__).resolve().parent / "templates"
SCRIPTS = ("setup.sh", "run_autograder")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same inputs give the same zip


def project_root() -> Path:
    """The source checkout this sdverify runs from (a wheel is built from it).

    Raises ValueError where sdverify was installed from a wheel, without its source.
    """
    root = Path(__file__).resolve().parents[2]
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        name = None
    if name != "sdverify" or not (root / "constraints.txt").is_file():
        raise UsageError(
            f"no sdverify source checkout at {root} (pyproject.toml and constraints.txt): the bundle ships a wheel "
            "built from the checkout and its constraints; run this from a clone installed with `pip install -e .`"
        )
    return root


def build_wheel(root: Path, folder: Path) -> Path:
    """``pip wheel`` of the checkout at ``root`` into ``folder`` (pip fetches the build backend,
    hatchling, from the configured registry or wheel folder)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(folder), str(root)]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("sdverify-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise ValueError(f"could not build the sdverify wheel from {root}: {done.stderr.strip()[-2000:]}")
    return wheels[0]


def build_gradescope_bundle(
    out: Path,
    *,
    spec_path: str | Path | None = None,
    settings: Settings = GRADE,
    checkout: Path | None = None,
) -> Path:
    """Write ``out/autograder.zip`` and return its path; the spec is validated first.

    ``settings``: the preset, weight seed and timeouts every submission is graded with (the
    per-submission ``timeout`` should stay under Gradescope's limit); its other fields are the
    grading container's own.

    ``checkout``: the sdverify source tree the wheel is built from (default: :func:`project_root`).
    """
    spec = load_spec(spec_path)
    get_preset(settings.preset)
    if settings.timeout is None:
        raise UsageError("a bundle needs a per-submission timeout (Gradescope stops a run at its own limit)")
    root = checkout or project_root()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "autograder.zip"
    with tempfile.TemporaryDirectory(prefix="sdverify-bundle-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        env = {
            "SDVERIFY_PRESET": settings.preset,
            "SDVERIFY_SEED": str(settings.seed),
            "SDVERIFY_TIMEOUT": f"{settings.timeout:g}",
            "SDVERIFY_CELL_TIMEOUT": f"{min(settings.call_timeout, settings.timeout):g}",  # the per-call limit
            "SDVERIFY_TORCH": importlib.metadata.version("torch").split("+")[0],
            "SDVERIFY_WHEEL": wheel.name,
        }
        files = {
            **{name: (TEMPLATES / name).read_bytes() for name in SCRIPTS},
            "autograder.env": "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()).encode(),
            "spec.toml": spec.text.encode(),
            "constraints.txt": (root / "constraints.txt").read_bytes(),
            wheel.name: wheel.read_bytes(),
        }
        partial = target.with_name(f".{target.name}.tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                info = zipfile.ZipInfo(name, _ZIP_TIME)
                info.external_attr = (0o755 if name in SCRIPTS else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        partial.replace(target)
    return target
