"""Tiny on-disk copy-detection and retrieval sets in their real formats: Copydays' folders of JPEGs plus
distractors, and revisitop's ``gnd_<name>.pkl`` with ``jpg/`` (tests/test_search_evaluations.py,
tests/test_bad_input.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def solid(path: Path, colour, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)


def write_copydays(root: Path) -> Path:
    base = root / "copydays"
    colours = {"200000": (200, 30, 30), "200100": (30, 200, 30), "200200": (30, 30, 200)}
    for name, colour in colours.items():
        solid(base / "original" / f"{name}.jpg", colour)
        solid(base / "jpegqual" / "30" / f"{name}.jpg", colour)
    solid(base / "strong" / "200001.jpg", (190, 40, 40))
    solid(base / "strong" / "200201.jpg", (40, 40, 190))
    for i in range(4):
        solid(base / "distractors" / f"d{i}.jpg", (120 + 20 * i, 120, 60 * i))
    return base


def write_revisited(root: Path, name: str = "roxford5k") -> Path:
    base = root / name
    sizes = {"a": (300, 200), "b": (120, 260), "c": (90, 90), "d": (250, 250), "q1": (400, 300), "q2": (200, 150)}
    for i, (image, size) in enumerate(sizes.items()):
        solid(base / "jpg" / f"{image}.jpg", (40 * i, 255 - 40 * i, 100), size)
    gnd = [{"bbx": [10.0, 20.0, 310.0, 245.0], "easy": [0], "hard": [1], "junk": [2]},
           {"bbx": [0.0, 0.0, 100.0, 100.0], "easy": [], "hard": [3], "junk": []}]
    with open(base / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": ["a", "b", "c", "d"], "qimlist": ["q1", "q2"], "gnd": gnd}, f)
    return base
