"""Illustrations of what the SpineSynthSeg panels compute, rendered with the library only (no Slicer).

The extension's catalogue entry shows two images (EXTENSION_SCREENSHOTURLS in the top-level
CMakeLists.txt). They are made here, without a Slicer application, from the built-in phantom
(`SpineSynthSegLib.phantom.generate_phantom`), and each carries a caption saying it is a library
rendering, not a Slicer screenshot:

* ``preview.png``: mid-sagittal slices of synthetic contrasts that the preview panel computes
  (`SpineSynthSegLib.contrast_preview`: physics sequences and domain randomization), with the
  outline of the phantom's vertebral bodies and discs;
* ``measurements.png``: a synthetic T2-weighted mid-sagittal slice with the vertebral body and
  disc height lines of the measurements panel (`SpineSynthSegLib.measure`, the end points of
  measurements.json as ``spinesynthseg measure`` writes it), coloured as the panel colours its
  markups lines (a flagged level in red), and a table of the values.

Usage (from the repository; writes SpineSynthSeg/Resources/Screenshots by default)::

    python SpineSynthSeg/Scripts/render_panel_images.py [--output FOLDER]

Needs numpy, Pillow, matplotlib (drawn with the Agg canvas) and the library's dependencies.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
DEFAULT_OUTPUT = HERE.parents[1] / "Resources" / "Screenshots"
CAPTION = "Library rendering (SpineSynthSegLib on its built-in phantom), not a Slicer screenshot."
PHANTOM_SEED = 0  # with the configuration below: a wedge fracture of L3 (Genant 2), flagged by the panel
PREVIEWS = (  # (title, contrast_preview settings)
    ("T1w spin echo\nTR 500 ms, TE 12 ms", {"tr": 500.0, "te": 12.0}),
    ("T2w spin echo\nTR 4000 ms, TE 90 ms", {"tr": 4000.0, "te": 90.0}),
    ("STIR (inversion recovery)\nTR 4000, TE 40, TI 150 ms",
     {"sequence": "inversion_recovery", "tr": 4000.0, "te": 40.0, "ti": 150.0}),
    ("domain randomization\nseed 1, contrast only", {"mode": "random", "seed": 1}),
    ("domain randomization\nseed 2, full chain", {"mode": "random", "seed": 2, "full_chain": True}),
)  # the full chain deforms the image: its tile is shown without the (undeformed) outline
T2W = {"tr": 4000.0, "te": 90.0}
HEIGHTS = ("anterior_height_mm", "middle_height_mm", "posterior_height_mm")
DISC_HEIGHTS = ("disc_anterior_height_mm", "disc_middle_height_mm", "disc_posterior_height_mm")


def _add_library_path() -> None:
    """Make SpineSynthSegLib importable from the source tree or the installed extension."""
    for root in (HERE.parents[1], HERE.parents[2]):
        if (root / "SpineSynthSegLib").is_dir() and str(root) not in sys.path:
            sys.path.insert(0, str(root))


def make_phantom():
    """(generation label map, its LabelTable, level targets) of the illustrated phantom."""
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets

    config = PhantomConfig(shape=(144, 112, 48), spacing=(1.5, 1.5, 1.5), scoliosis_deg=(0.0, 0.0),
                           wedge_fracture_prob=1.0, wedge_fracture_loss=(0.4, 0.45), disc_degeneration_prob=0.0)
    labels, table = generate_phantom(config, seed=PHANTOM_SEED)
    return labels, table, phantom_targets(labels, table)


class SagittalView:
    """The mid-sagittal slice of a volume's grid (superior up, anterior left) and RAS -> pixel mapping."""

    def __init__(self, vol):
        from SpineSynthSegLib.io import reorient

        ras, _ = reorient(vol, "RAS")
        self.shape = ras.shape
        self.to_ijk = np.linalg.inv(ras.affine_ras)
        self.aspect = ras.spacing[2] / ras.spacing[1]  # rows follow S (k), columns A (j)

    def slice(self, vol) -> np.ndarray:
        from SpineSynthSegLib.preview import mid_sagittal

        return mid_sagittal(vol)

    def pixel(self, point_ras) -> tuple[float, float]:
        """(column, row) of a RAS point projected on the slice."""
        _i, j, k = (self.to_ijk @ [*point_ras, 1.0])[:3]  # i: across sagittal slices (projected)
        return self.shape[1] - 1 - j, self.shape[2] - 1 - k


def outline(levels: np.ndarray) -> np.ndarray:
    """RGBA image: the boundary pixels of every level, in its segment colour (transparent elsewhere)."""
    from SpineSynthSegLib.slicer_terminology import label_color

    edge = np.zeros(levels.shape, bool)
    edge[:-1] |= levels[:-1] != levels[1:]
    edge[1:] |= levels[:-1] != levels[1:]
    edge[:, :-1] |= levels[:, :-1] != levels[:, 1:]
    edge[:, 1:] |= levels[:, :-1] != levels[:, 1:]
    edge &= levels > 0
    rgba = np.zeros((*levels.shape, 4))
    for label in np.unique(levels[edge]):
        rgba[edge & (levels == label)] = (*label_color(int(label)), 1.0)
    return rgba


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _caption(fig, detail: str) -> None:
    fig.text(0.5, 0.015, f"{CAPTION}\n{detail}", ha="center", va="bottom", color="white", fontsize=8.5,
             linespacing=1.4)


def _save(fig, path: Path, dpi: int) -> Path:
    """PNG with a 256-colour palette (small files; the images are grey levels and a few colours)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor(), metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, format="PNG", optimize=True)
    return path


def render_preview(path: Path, labels, table, targets) -> Path:
    """preview.png: the preview panel's synthetic contrasts of the phantom, with the level outline."""
    from SpineSynthSegLib.contrast_preview import PreviewSettings, contrast_preview

    view = SagittalView(labels)
    rim = outline(view.slice(targets))
    fig = _figure(11.0, 4.1)
    for n, (title, settings) in enumerate(PREVIEWS):
        image = contrast_preview(labels, table, PreviewSettings(**settings))
        ax = fig.add_axes((0.005 + n * 0.198, 0.13, 0.19, 0.74))
        ax.imshow(view.slice(image), cmap="gray", vmin=0.0, vmax=1.0, aspect=view.aspect, interpolation="bilinear")
        if not settings.get("full_chain"):
            ax.imshow(rim, aspect=view.aspect, interpolation="nearest")
        ax.set_title(title, color="white", fontsize=9)
        ax.set_axis_off()
    fig.text(0.5, 0.955, "Synthetic contrast preview: one phantom label map, several sequences",
             ha="center", color="white", fontsize=11, weight="bold")
    _caption(fig, "contrast_preview(...) on the phantom's label map; outline: its vertebral bodies and discs (not on "
                  "the deformed full chain). Mid-sagittal slices, superior up, anterior left.")
    return _save(fig, path, dpi=80)


def measurements_document(targets) -> dict:
    """The measurements.json document of the phantom's levels (as ``spinesynthseg measure`` writes it)."""
    import json

    from SpineSynthSegLib.measure import measure_volume
    from SpineSynthSegLib.measure_report import to_json

    doc = to_json(measure_volume(targets, "phantom"), {"segmentation": "phantom", "convention": "spineps"})
    return json.loads(json.dumps(doc))


def _cell(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_measurements(path: Path, labels, table, targets) -> Path:
    """measurements.png: height lines over a T2w phantom slice and the values of the table."""
    from matplotlib.lines import Line2D

    from SpineSynthSegLib.contrast_preview import PreviewSettings, contrast_preview
    from SpineSynthSegLib.slicer_measurements import LINE_COLOURS, SUSPICIOUS_COLOUR, line_kind, suspicious_levels

    doc = measurements_document(targets)
    flagged = suspicious_levels(doc)
    view = SagittalView(labels)
    image = contrast_preview(labels, table, PreviewSettings(**T2W))
    fig = _figure(10.0, 5.6)
    ax = fig.add_axes((0.01, 0.12, 0.42, 0.76))
    ax.imshow(view.slice(image), cmap="gray", vmin=0.0, vmax=1.0, aspect=view.aspect, interpolation="bilinear")
    for item in doc["levels"]:
        colour = SUSPICIOUS_COLOUR if item["level"] in flagged else None
        for key in HEIGHTS + DISC_HEIGHTS:
            m = item["measurements"].get(key)
            if not m:
                continue
            (c0, r0), (c1, r1) = (view.pixel(p) for p in m["points_ras"])
            ax.plot([c0, c1], [r0, r1], color=colour or LINE_COLOURS[line_kind(key)], linewidth=1.6,
                    solid_capstyle="butt")
        if item["kind"] == "vertebra" and "frame" in item:
            c, r = view.pixel(item["frame"]["origin_ras"])
            ax.text(c - 24, r, item["level"], color=SUSPICIOUS_COLOUR if item["level"] in flagged else "white",
                    fontsize=9, ha="right", va="center", weight="bold")
    ax.set_xlim(-0.5, view.shape[1] - 0.5)
    ax.set_axis_off()
    ax.set_title("Height lines (markups lines in Slicer)", color="white", fontsize=10)

    rows = [[item["level"], *(_cell(item["values"].get(k)) for k in HEIGHTS),
             _cell(item["values"].get("genant_grade"), 0), flagged.get(item["level"], "")]
            for item in doc["levels"] if item["kind"] == "vertebra" and item["status"] != "not measurable"]
    tab = fig.add_axes((0.45, 0.12, 0.54, 0.76))
    tab.set_axis_off()
    tab.set_title("Measurements table (mm)", color="white", fontsize=10)
    cells = tab.table(cellText=rows, colLabels=["level", "anterior", "middle", "posterior", "Genant", "flag"],
                      loc="upper center", cellLoc="center", colWidths=[0.1, 0.14, 0.14, 0.14, 0.11, 0.37])
    cells.auto_set_font_size(False)
    cells.set_fontsize(9)
    cells.scale(1.0, 1.5)
    for (r, _c), cell in cells.get_celld().items():
        red = r > 0 and rows[r - 1][-1]
        cell.set_facecolor("#3a0d0d" if red else "#202020" if r else "#404040")
        cell.set_edgecolor("#606060")
        cell.get_text().set_color("white")
    key = [(LINE_COLOURS["height"], "vertebral body heights: anterior, middle, posterior"),
           (LINE_COLOURS["disc"], "disc heights"),
           (SUSPICIOUS_COLOUR, "every line of a flagged level (Genant >= 1 or Meyerding >= 1)")]
    for n, (colour, text) in enumerate(key):
        y = 0.36 - n * 0.05
        fig.add_artist(Line2D([0.47, 0.51], [y, y], color=colour, linewidth=2.5))
        fig.text(0.52, y, text, color="white", fontsize=9, va="center")
    fig.text(0.5, 0.955, "Spine measurements: vertebral body and disc heights, Genant grades",
             ha="center", color="white", fontsize=11, weight="bold")
    _caption(fig, "measure_volume(...) on the phantom's levels (one wedge fracture); the lines join the end points "
                  "in measurements.json.")
    return _save(fig, path, dpi=90)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="render_panel_images.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", default=str(DEFAULT_OUTPUT), help="folder for preview.png, measurements.png")
    args = parser.parse_args(argv)
    _add_library_path()
    out = Path(args.output)
    labels, table, targets = make_phantom()
    paths = [render_preview(out / "preview.png", labels, table, targets),
             render_measurements(out / "measurements.png", labels, table, targets)]
    for path in paths:
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    return paths


if __name__ == "__main__":
    main()
