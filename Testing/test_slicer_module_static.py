"""Checks of the Slicer extension that need no Slicer application.

Static: the module compiles; its four classes have the right bases; every ``self.ui.X`` exists in
the .ui file; every ``SlicerParameterName`` names a parameter of the wrapper class with a widget
that Slicer's GUI connectors accept; the .ui is valid Qt Designer XML; the CMake lists name every
script and resource (and nothing missing) and the scripted library lists every library file.

Run with plain Python: the module's support code (dependency installer, the segmentation command
it starts), the headless batch script (SpineSynthSeg/Scripts/headless_batch.py) and the script
rendering the catalogue's panel images (SpineSynthSeg/Scripts/render_panel_images.py).
"""

from __future__ import annotations

import ast
import json
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SpineSynthSeg"
MODULE = MODULE_DIR / "SpineSynthSeg.py"
UI = MODULE_DIR / "Resources" / "UI" / "SpineSynthSeg.ui"
BATCH = MODULE_DIR / "Scripts" / "headless_batch.py"
RENDER = MODULE_DIR / "Scripts" / "render_panel_images.py"
SCREENSHOTS = MODULE_DIR / "Resources" / "Screenshots"
sys.path.insert(0, str(MODULE_DIR))  # SpineSynthSegUtils, as Slicer's module path provides it


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _parameters(tree: ast.Module) -> dict[str, str]:
    """Parameter name -> annotation source of the @parameterNodeWrapper class."""
    wrapper = next(c for c in _classes(tree).values()
                   if any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in c.decorator_list))
    return {s.target.id: ast.unparse(s.annotation) for s in wrapper.body if isinstance(s, ast.AnnAssign)}


def _parameter_names(element: ET.Element) -> str | None:
    for prop in element.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.findtext("string")
    return None


# ----------------------------------------------------------------------------- the module file


@pytest.mark.parametrize("path", [MODULE, BATCH, RENDER, *sorted((MODULE_DIR / "SpineSynthSegUtils").glob("*.py"))],
                         ids=lambda p: p.name)
def test_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_four_classes_with_the_right_bases(tree):
    bases = {name: [ast.unparse(b) for b in c.bases] for name, c in _classes(tree).items()}
    assert bases["SpineSynthSeg"] == ["ScriptedLoadableModule"]
    assert bases["SpineSynthSegWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["SpineSynthSegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["SpineSynthSegTest"] == ["ScriptedLoadableModuleTest"]


def test_module_metadata_is_set(tree):
    init = next(f for f in _classes(tree)["SpineSynthSeg"].body if isinstance(f, ast.FunctionDef))
    assigned = {ast.unparse(t) for s in ast.walk(init) if isinstance(s, ast.Assign) for t in s.targets}
    for attr in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attr}" in assigned


def test_module_stays_thin(tree):
    """No numpy in the module and no library import at import time (it is installed on demand)."""
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {n.module for n in top if isinstance(n, ast.ImportFrom)}
    assert not any(str(n).startswith("SpineSynthSegLib") for n in names)
    everywhere = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    everywhere |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {"numpy", "torch", "scipy"} & everywhere


@pytest.mark.parametrize("path", sorted((MODULE_DIR / "SpineSynthSegUtils").glob("*.py")), ids=lambda p: p.name)
def test_helpers_import_the_library_lazily(path):
    """The module imports its helpers when Slicer loads it, before the library's dependencies are installed."""
    top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in ("SpineSynthSegLib", "numpy", "torch", "scipy")}


def test_ui_names_used_by_the_module_exist(tree, ui_widgets):
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "ui"
            and ast.unparse(n.value) == "self.ui"}
    dynamic = set(re.findall(r'getattr\(self\.ui, "(\w+)"\)', MODULE.read_text()))
    dynamic |= {m for group in re.findall(r'for name in \(([^)]*)\):\s*getattr\(self\.ui', MODULE.read_text())
                for m in re.findall(r'"(\w+)"', group)}
    assert used, "no self.ui.X found: the parser is broken"
    missing = sorted((used | dynamic) - set(ui_widgets))
    assert not missing, f"widgets used by SpineSynthSeg.py but absent from the .ui: {missing}"


# Widget class -> parameter types its GUI connector accepts (slicer.parameterNodeWrapper.guiConnectors).
_CONNECTORS = {
    "QCheckBox": ("bool",), "QSpinBox": ("int",), "ctkSliderWidget": ("float",), "QDoubleSpinBox": ("float",),
    "QComboBox": ("str",), "QLineEdit": ("str",), "ctkPathLineEdit": ("Path",), "qMRMLNodeComboBox": ("vtkMRML",),
}


def test_parameter_names_match_the_wrapper(tree, ui_widgets):
    params = _parameters(tree)
    bound = {}
    for name, element in ui_widgets.items():
        param = _parameter_names(element)
        if param is None:
            continue
        assert param in params, f"{name}: SlicerParameterName {param!r} is not a parameter of the wrapper class"
        annotation = params[param]
        cls = element.get("class")
        base = annotation.split("[", 1)[1] if annotation.startswith("Annotated[") else annotation
        assert any(base.startswith(t) or (t == "vtkMRML" and "vtkMRML" in base) for t in _CONNECTORS[cls]), \
            f"{name} ({cls}) cannot represent {param}: {annotation}"
        if cls in ("ctkSliderWidget",):
            assert "WithinRange" in annotation, f"{param}: a slider needs a bounded float"
        if cls == "QComboBox":
            assert "Choice" in annotation, f"{param}: a combo box needs Choice([...])"
        bound[param] = name
    assert sorted(set(params) - set(bound)) == [], "parameters without a widget"


def test_ui_is_valid_qt_designer_xml(ui_widgets):
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == "SpineSynthSeg"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SpineSynthSeg"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if not c.startswith("Q")}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    for conn in root.iter("connection"):
        assert conn.findtext("sender") in ui_widgets and conn.findtext("receiver") in ui_widgets
    for name in ("previewCollapsibleButton", "segmentationCollapsibleButton", "measurementsCollapsibleButton"):
        assert ui_widgets[name].get("class") == "ctkCollapsibleButton"
    nodes = [w.get("name") for w in root.iter("widget") if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")]
    receivers = {c.findtext("receiver") for c in root.iter("connection") if "mrmlSceneChanged" in c.findtext("signal")}
    assert set(nodes) <= receivers, "every MRML widget gets the scene"


def test_mirrored_constants_match_the_library(tree):
    values = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and t.id in ("SEQUENCES", "CONVENTIONS")}
    from SpineSynthSegLib.label_converters import INSTANCE_CONVENTIONS as CONVENTIONS
    from SpineSynthSegLib.synthesis.physics_contrast import SEQUENCES

    assert values == {"SEQUENCES": tuple(SEQUENCES), "CONVENTIONS": tuple(CONVENTIONS)}


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "SpineSynthSeg.png") as img:
        assert img.format == "PNG" and img.size == (128, 128)


# ----------------------------------------------------------------------------- CMake


def _cmake_list(text: str, var: str, subst: dict[str, str]) -> list[str]:
    match = re.search(rf"set\({var}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"set({var} ...) not found"
    items = [w for w in match.group(1).split() if not w.startswith("#")]
    for key, value in subst.items():
        items = [i.replace("${" + key + "}", value) for i in items]
    return items


def test_module_cmake_lists_everything_and_nothing_missing():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", {"MODULE_NAME": "SpineSynthSeg"})
    listed += _cmake_list(text, "MODULE_PYTHON_RESOURCES", {"MODULE_NAME": "SpineSynthSeg"})
    missing = [f for f in listed if not (MODULE_DIR / f).is_file()]
    assert not missing, f"listed but missing: {missing}"
    present = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert present - set(listed) == set(), f"files not listed in SpineSynthSeg/CMakeLists.txt: {present - set(listed)}"
    assert "WITH_GENERIC_TESTS" in text and "slicerMacroBuildScriptedModule" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py\s*\)", text)


def test_top_level_cmake_metadata_and_scripted_library():
    text = (ROOT / "CMakeLists.txt").read_text()
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({var} "[^"]+"\)', text), f"{var} is empty"
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    assert re.search(r'set\(EXTENSION_DEPENDS "[^"]*\bPyTorch\b', text)
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(SpineSynthSeg)" in text
    assert "ctkMacroCompilePythonScript" in text and "TARGET_NAME SpineSynthSegLib" in text
    listed = _cmake_list(text, "SpineSynthSegLib_PYTHON_SCRIPTS", {})
    missing = [f for f in listed if not (ROOT / f).is_file()]
    assert not missing, f"library files listed but missing: {missing}"
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "SpineSynthSegLib").rglob("*.py") if "__pycache__" not in p.parts}
    assert package - set(listed) == set(), f"library files not listed in CMakeLists.txt: {package - set(listed)}"
    icon = re.search(r'set\(EXTENSION_ICONURL "[^"]*/main/([^"]+)"\)', text).group(1)
    assert (ROOT / icon).is_file(), "EXTENSION_ICONURL points at a file of this repository"
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split()
    prefix = "https://raw.githubusercontent.com/SpineSynthSeg/SpineSynthSeg/main/"
    assert urls and all(u.startswith(prefix) and (ROOT / u.removeprefix(prefix)).is_file() for u in urls), \
        "EXTENSION_SCREENSHOTURLS point at files of this repository"


# ----------------------------------------------------------------------------- panel images (screenshots)


def _load_script(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_panel_image(path: Path) -> None:
    from PIL import Image, ImageStat

    assert path.stat().st_size > 10_000, f"{path.name}: {path.stat().st_size} bytes"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 300
        assert max(hi - lo for lo, hi in img.convert("RGB").getextrema()) > 100, f"{path.name} is a constant image"
        assert max(ImageStat.Stat(img.convert("L")).stddev) > 10


def test_render_panel_images_script(tmp_path):
    """The script renders both images from the phantom with the library only (no Slicer)."""
    pytest.importorskip("matplotlib")
    paths = _load_script("render_panel_images", RENDER).main(["--output", str(tmp_path)])
    assert sorted(p.name for p in paths) == ["measurements.png", "preview.png"]
    for path in paths:
        _check_panel_image(path)


@pytest.mark.parametrize("name", ["preview.png", "measurements.png"])
def test_committed_panel_images(name):
    path = SCREENSHOTS / name
    _check_panel_image(path)
    assert path.stat().st_size < 150 * 1024, "keep the catalogue images small"


# ----------------------------------------------------------------------------- support code (plain Python)


def test_requirements_file_has_lower_bounds_only():
    from SpineSynthSegUtils.Dependencies import REQUIREMENTS_FILE, readRequirements

    reqs = readRequirements(REQUIREMENTS_FILE)
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-]+>=[0-9.]+", r) for r in reqs)
    names = {r.split(">=")[0].lower() for r in reqs}
    assert not names & {"torch", "numpy", "simpleitk"}, "torch comes from PyTorchUtils; numpy/SimpleITK are Slicer's"
    assert "monai" in names


def test_dependency_installer_asks_and_uses_pytorch_utils():
    from SpineSynthSegUtils.Dependencies import DependencyError, DependencyInstaller, isSatisfied

    versions = {"monai": None, "scipy": "1.9.0", "nibabel": "5.2.1", "scikit-image": "0.22", "tqdm": "4.66.1",
                "pillow": "10.0.0", "torch": None}
    assert isSatisfied("nibabel>=5.0", versions.get) and not isSatisfied("scipy>=1.10", versions.get)
    assert isSatisfied("scikit-image>=0.21", versions.get)
    pip, torch_calls, asked = [], [], []

    class FakeTorchLogic:
        def installTorch(self, askConfirmation, torchVersionRequirement):
            torch_calls.append(torchVersionRequirement)
            return object()

    def make(answer):
        return DependencyInstaller(confirm=lambda text: asked.append(text) or answer, pipInstall=pip.append,
                                   torchLogic=FakeTorchLogic, installed=versions.get)

    assert make(True).missing() == ["torch>=2.1", "monai>=1.3", "scipy>=1.10"]
    with pytest.raises(DependencyError, match="declined.*torch>=2.1"):
        make(False).ensure()
    assert not pip and not torch_calls
    assert make(True).ensure() == ["torch>=2.1", "monai>=1.3", "scipy>=1.10"]
    assert torch_calls == [">=2.1"]
    assert pip == ["monai>=1.3 --no-deps", "scipy>=1.10"]  # monai must never pull torch
    assert "PyTorch extension" in asked[-1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained, very small checkpoint (the real shipped model may not exist yet)."""
    import torch

    from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network, save_checkpoint

    torch.manual_seed(0)
    meta = ModelMeta(model=ModelConfig(features=(4, 4, 8, 8, 8, 4)), spacing=(3.0, 3.0, 3.0), patch_size=(16, 32, 32))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_network(meta.model), meta)
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    from SpineSynthSegLib.io import Volume, write_volume

    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, (40, 36, 14)).astype(np.float32)
    image[10:30, 12:26, 4:10] += 150
    write_volume(Volume(image, (2.0, 2.0, 3.0)), folder / "case1.nrrd")
    return folder


def test_segment_command_runs_the_cli(tiny_model, scans, tmp_path):
    """The exact command line the module starts in its background process."""
    from SpineSynthSegUtils.SegmentationProcess import segmentCommand

    args = segmentCommand(str(scans / "case1.nrrd"), str(tmp_path / "out"), str(tiny_model), "cpu", tta=False)
    done = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "case1_semantic.nii.gz").is_file()


# ----------------------------------------------------------------------------- headless batch script


@pytest.fixture(scope="module")
def batch():
    return _load_script("headless_batch", BATCH)


def test_batch_without_a_shipped_model_gives_the_library_error(batch, scans, tmp_path, monkeypatch, capsys):
    from SpineSynthSegLib import inference

    monkeypatch.setattr(inference, "DEFAULT_MODEL", tmp_path / "models" / "default.pt")
    assert batch.main(["--", "--input", str(scans), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "no shipped default model" in capsys.readouterr().err


def test_batch_end_to_end(batch, tiny_model, scans, tmp_path):
    out = tmp_path / "out"
    code = batch.main(["--input", str(scans), "--output", str(out), "--model", str(tiny_model), "--device", "cpu",
                       "--no-progress"])
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["case1"] and (out / "summary.csv").is_file()
    assert (out / "case1_instances.seg.nrrd").is_file() or rows[0]["status"] == "failed"
    assert code == (0 if rows[0]["status"] == "ok" else 1)  # an untrained network may find no vertebra


def test_batch_measure_case_on_a_phantom(batch, tmp_path):
    """A segmented case: measurements, suspicious levels, SNOMED CT terminology in the .seg.nrrd."""
    from SpineSynthSegLib.labels import vertebra_name
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets
    from SpineSynthSegLib.segment_files import CaseResult, write_seg_nrrd

    cfg = PhantomConfig(shape=(96, 64, 32), spacing=(2.0, 2.0, 2.0), wedge_fracture_prob=1.0,
                        wedge_fracture_loss=(0.45, 0.5))
    vol, table = generate_phantom(cfg, seed=3)
    target = phantom_targets(vol, table)
    seg = write_seg_nrrd(target.with_array(target.array.astype(np.uint8)), tmp_path / "p_instances.seg.nrrd",
                         {int(v): vertebra_name(int(v)) for v in np.unique(target.array) if v})
    image = tmp_path / "p.nrrd"
    from SpineSynthSegLib.io import write_volume

    write_volume(vol.with_array(vol.array.astype(np.float32)), image)
    row = batch.measure_case(CaseResult(image, "p", outputs=[seg]), tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["measured"] >= 5 and "Genant" in row["suspicious"]
    assert Path(row["measurements_json"]).is_file() and Path(row["measurements_csv"]).is_file()
    failed = batch.measure_case(CaseResult(image, "q", status="failed", error="boom", bad_input=True), tmp_path)
    assert batch.exit_status([row]) == 0 and batch.exit_status([row, failed]) == 2
    assert batch.exit_status([row, dict(failed, bad_input=False)]) == 1
    try:
        import slicerio
    except ImportError:
        return
    if row["terminology"]:
        disk = slicerio.read_segmentation(str(seg))
        l3 = next(s for s in disk["segments"] if s["name"] == "L3")
        assert l3["terminology"]["type"] == ["SCT", "36470004", "L3 vertebra"]
