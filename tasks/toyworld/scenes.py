"""Toy-world scene definitions, rendering (RGB + depth) and captions.

A scene is a single coloured shape on a plain background, described by four
discrete attributes (color, shape, size, position) plus small continuous
jitter.  Geometry is defined on a 32x32 canvas in continuous pixel units
(pixel ``i`` covers ``[i, i + 1)``, row 0 is the top); other resolutions are
rendered by scaling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

CANVAS: int = 32
BACKGROUND: tuple[int, int, int] = (128, 128, 128)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 190, 70),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 50),
    "purple": (170, 40, 210),
    "cyan": (60, 210, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 12, "large": 20}
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (16.0, 16.0),
    "top left": (11.5, 11.5),
    "top right": (20.5, 11.5),
    "bottom left": (11.5, 20.5),
    "bottom right": (20.5, 20.5),
}
POSITION_JITTER: float = 1.0  # max |dx|, |dy| in canvas pixels
SIZE_JITTER: float = 1.0  # max |dsize| in canvas pixels
COLOR_JITTER: int = 10  # max per-channel colour offset
SUPERSAMPLE: int = 4
DEPTH_TOP, DEPTH_BOTTOM = 4.0, 2.0  # background plane depth at top / bottom
DEPTH_BASE: dict[str, float] = {"small": 1.6, "large": 1.2}
SPHERE_BULGE, TRIANGLE_TILT = 0.4, 0.25

TEMPLATES: list[str] = [
    "a {size} {color} {shape} in the {position}",
    "there is a {color} {shape} at the {position}, it is {size}",
    "{position}: one {size} {shape}, colored {color}",
    "the {shape} in the {position} is {size} and {color}",
    "a {color} {shape}, {size}, located at the {position} of the image",
    "in the {position} of the picture sits a {size} {color} {shape}",
    "{size} {shape} painted {color}, placed at the {position}",
    "{color}, {size}, {shape}, {position}",
]


@dataclass(frozen=True)
class Scene:
    """One toy-world scene: discrete attributes plus continuous jitter.

    Attributes:
        color: Key of ``PALETTE``.
        shape: Element of ``SHAPES``.
        size: Key of ``SIZES``.
        position: Key of ``POSITIONS``.
        dx: Horizontal offset of the centre in canvas pixels.
        dy: Vertical offset of the centre in canvas pixels.
        dsize: Offset of the bounding-box side in canvas pixels.
        dcolor: Per-channel RGB offset added to the palette colour.
    """

    color: str
    shape: str
    size: str
    position: str
    dx: float = 0.0
    dy: float = 0.0
    dsize: float = 0.0
    dcolor: tuple[int, int, int] = (0, 0, 0)

    @property
    def attributes(self) -> dict[str, str]:
        """The four discrete attributes as a dict."""
        return {"color": self.color, "shape": self.shape, "size": self.size, "position": self.position}

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Jittered RGB colour, clipped to [0, 255]."""
        base = PALETTE[self.color]
        return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(base, self.dcolor))  # type: ignore[return-value]

    @property
    def side(self) -> float:
        """Bounding-box side length in canvas pixels."""
        return SIZES[self.size] + self.dsize

    @property
    def center(self) -> tuple[float, float]:
        """Bounding-box centre ``(x, y)`` in canvas pixels."""
        px, py = POSITIONS[self.position]
        return px + self.dx, py + self.dy


def sample_scenes(n: int, seed: int | np.random.Generator, balanced: bool = False) -> list[Scene]:
    """Samples ``n`` scenes reproducibly.

    Args:
        n: Number of scenes.
        seed: Integer seed or a numpy ``Generator``.
        balanced: If True, attribute combinations are drawn by cycling through a
            shuffled list of all combinations (exactly uniform marginals when
            ``n`` is a multiple of the number of combinations); otherwise each
            attribute is drawn independently and uniformly.

    Returns:
        List of ``Scene`` objects.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    colors, sizes, positions = list(PALETTE), list(SIZES), list(POSITIONS)
    if balanced:
        combos = [(c, s, z, p) for c in colors for s in SHAPES for z in sizes for p in positions]
        rounds = [rng.permutation(len(combos)) for _ in range(-(-n // len(combos)))]
        order = np.concatenate(rounds)[:n] if rounds else np.zeros(0, np.int64)
        attrs = [combos[i] for i in order]
    else:
        ci, si = rng.integers(len(colors), size=n), rng.integers(len(SHAPES), size=n)
        zi, pi = rng.integers(len(sizes), size=n), rng.integers(len(positions), size=n)
        attrs = [(colors[a], SHAPES[b], sizes[c], positions[d]) for a, b, c, d in zip(ci, si, zi, pi)]
    jit = rng.uniform(-1.0, 1.0, size=(n, 3)) * np.array([POSITION_JITTER, POSITION_JITTER, SIZE_JITTER])
    dcol = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=(n, 3))
    return [
        Scene(c, s, z, p, float(j[0]), float(j[1]), float(j[2]), tuple(int(v) for v in d))  # type: ignore[arg-type]
        for (c, s, z, p), j, d in zip(attrs, jit, dcol)
    ]


def _inset_polygon(verts: np.ndarray, delta: float) -> np.ndarray:
    """Moves every edge of a convex tangential polygon inward by ``delta``.

    Valid for polygons with an incircle (squares, triangles): scales the
    vertices about the incentre by ``1 - delta / inradius``.
    """
    nxt = np.roll(verts, -1, axis=0)
    edges = np.linalg.norm(nxt - verts, axis=1)
    area = 0.5 * abs(np.sum(verts[:, 0] * nxt[:, 1] - nxt[:, 0] * verts[:, 1]))
    inradius = 2.0 * area / edges.sum()
    if len(verts) == 3:  # incentre weights: length of the opposite edge
        opposite = np.roll(edges, -1)
        incentre = (opposite[:, None] * verts).sum(0) / opposite.sum()
    else:
        incentre = verts.mean(0)
    return incentre + (verts - incentre) * (1.0 - delta / inradius)


def coverage(scene: Scene, resolution: int = CANVAS) -> np.ndarray:
    """Anti-aliased object coverage (alpha) map of a scene, ``(H, W)`` float32 in [0, 1]."""
    return shape_coverage(scene.shape, scene.center, scene.side, resolution)


def shape_coverage(shape: str, center: tuple[float, float], side: float, resolution: int = CANVAS) -> np.ndarray:
    """Anti-aliased coverage map of one shape.

    The shape is drawn at ``SUPERSAMPLE``x resolution with sub-pixel precision
    and area-downsampled.

    Args:
        shape: Element of ``SHAPES``.
        center: Bounding-box centre ``(x, y)`` in canvas pixels.
        side: Bounding-box side in canvas pixels.
        resolution: Output side length in pixels.

    Returns:
        ``(H, W)`` float32 array in [0, 1].
    """
    hi = resolution * SUPERSAMPLE
    scale = hi / CANVAS
    canvas = np.zeros((hi, hi), np.uint8)
    cx, cy = center
    half = side / 2.0

    def fx(x: float, y: float) -> tuple[int, int]:
        # continuous canvas coords -> hi-res pixel-centre coords, 4 fractional bits
        return int(round((x * scale - 0.5) * 16)), int(round((y * scale - 0.5) * 16))

    inset = 0.5 / scale  # cv2 fills boundary pixels inclusively: shrink by half a hi-res pixel
    if shape == "circle":
        radius = int(round((half - 0.75 * inset) * scale * 16))
        cv2.circle(canvas, fx(cx, cy), radius, 255, -1, cv2.LINE_8, 4)
    elif shape in ("square", "triangle"):
        if shape == "square":
            verts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
        else:
            verts = np.array([[0, -1], [1, 1], [-1, 1]], np.float64) * half
        verts = _inset_polygon(verts, inset) + np.array([cx, cy])
        pts = np.array([fx(float(x), float(y)) for x, y in verts], np.int32)
        cv2.fillConvexPoly(canvas, pts, 255, cv2.LINE_8, 4)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    small = cv2.resize(canvas, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _object_depth(scene: Scene, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Background-plane depth and (extrapolated) object-surface depth maps."""
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) * (CANVAS / resolution)
    xs, ys = np.meshgrid(coords, coords)
    background = DEPTH_TOP + (DEPTH_BOTTOM - DEPTH_TOP) * ys / CANVAS
    cx, cy = scene.center
    half = scene.side / 2.0
    base = DEPTH_BASE[scene.size]
    if scene.shape == "circle":
        r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / half**2
        obj = base - SPHERE_BULGE * np.sqrt(np.clip(1.0 - r2, 0.0, None))
    elif scene.shape == "triangle":
        obj = base + TRIANGLE_TILT * np.clip((ys - cy) / half, -1.0, 1.0)
    else:
        obj = np.full_like(xs, base)
    return background.astype(np.float32), obj.astype(np.float32)


def render_scene(scene: Scene, resolution: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Renders the RGB image and depth map sharing one coverage computation.

    Args:
        scene: The scene.
        resolution: Output side length in pixels.

    Returns:
        ``(image, depth)``: ``(H, W, 3)`` uint8 and ``(H, W)`` float32 (> 0).
    """
    alpha = coverage(scene, resolution)[..., None]
    bg = np.asarray(BACKGROUND, np.float32)
    image = bg + alpha * (np.asarray(scene.rgb, np.float32) - bg)
    background, obj = _object_depth(scene, resolution)
    depth = background + alpha[..., 0] * (obj - background)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), depth.astype(np.float32)


def render(scene: Scene, resolution: int = CANVAS) -> np.ndarray:
    """Renders the anti-aliased RGB image, ``(H, W, 3)`` uint8."""
    return render_scene(scene, resolution)[0]


def render_depth(scene: Scene, resolution: int = CANVAS) -> np.ndarray:
    """Renders the depth map, ``(H, W)`` float32, all values > 0.

    The background is a plane receding towards the top (``DEPTH_TOP`` at the
    top edge, ``DEPTH_BOTTOM`` at the bottom); the object is nearer (large
    objects nearer than small ones) with a sphere bulge (circle), flat face
    (square) or tilted plane (triangle). Edges are coverage-blended.
    """
    return render_scene(scene, resolution)[1]


def caption(scene: Scene, template_index: int) -> str:
    """Fills ``TEMPLATES[template_index]`` with the scene's attributes."""
    return TEMPLATES[template_index % len(TEMPLATES)].format(**scene.attributes)


def _vocab_pattern(words: list[str]) -> re.Pattern[str]:
    alternatives = sorted(words, key=len, reverse=True)  # longest first: "top left" before "left"
    return re.compile(r"\b(" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in alternatives) + r")\b")


_PATTERNS: dict[str, re.Pattern[str]] = {
    "position": _vocab_pattern(list(POSITIONS)),
    "color": _vocab_pattern(list(PALETTE)),
    "shape": _vocab_pattern(list(SHAPES)),
    "size": _vocab_pattern(list(SIZES)),
}


def parse_caption(text: str) -> dict[str, str | None]:
    """Recovers the four attributes from a caption (any template or free text).

    Matching is case-insensitive on whole words; multi-word positions are
    matched first and removed so that their words cannot match elsewhere.

    Args:
        text: Caption text.

    Returns:
        Dict with keys color, shape, size, position (``None`` when absent).
    """
    remaining = " ".join(text.lower().split())
    out: dict[str, str | None] = {}
    for key, pattern in _PATTERNS.items():
        match = pattern.search(remaining)
        out[key] = " ".join(match.group(1).split()) if match else None
        if match:
            remaining = remaining[: match.start()] + " " + remaining[match.end() :]
    return {k: out[k] for k in ("color", "shape", "size", "position")}
