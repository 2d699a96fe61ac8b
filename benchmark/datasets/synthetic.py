"""Deterministic generated semantic-segmentation data set that needs no files.

Each image is a background region plus a few occluding shapes (rotated rectangles, ellipses,
triangles, half-planes); every painted region takes one of its class's appearance *modes*:
a base colour, a texture (stripes, checkerboard or smooth shading) and per-pixel noise.

Why several prototypes per class help: the C*M mode colours are a well-spread set, assigned
so that the modes of one class lie far apart in colour space. A class's mean colour is then
close to the centre of the cube and to other classes' means (one prototype per class cannot
separate them by colour), while each (class, mode) cluster is tight and distinct, which is
exactly what a head with several prototypes per class can represent.

The appearance tables depend only on (num_classes, modes_per_class, PALETTE_SEED), never on
`SyntheticConfig.seed`, so every split and data seed shares the same class appearance; item i
of a split is a pure function of (cfg, split, i) through its own `torch.Generator`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = [
    "PALETTE_SEED",
    "SPLITS",
    "Appearance",
    "SyntheticConfig",
    "SyntheticSegmentation",
    "build_appearance",
    "display_palette",
    "item_seed",
    "validate_config",
]

PALETTE_SEED: int = 20220601  # fixed: class appearance is shared by all splits and data seeds
SPLITS: tuple[str, ...] = ("train", "val", "test")
NOISE_STD: float = 0.04  # per-pixel Gaussian noise on the [0, 1] colour scale
_TEXTURE_POWER: tuple[float, ...] = (0.5, 1.0, 0.5)  # E[pattern^2]: stripes, checker, shading
_SHAPES_MIN, _SHAPES_MAX = 3, 6


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: classes, appearance modes, image size, split length and data seed."""

    num_classes: int = 6
    image_size: int = 64  # square images, H = W = image_size
    modes_per_class: int = 3  # distinct appearance modes per class
    num_images: int = 256  # length of every split built from this config
    seed: int = 0  # data-set seed; each (seed, split, index) hashes to its own item seed
    ignore_index: int = 255
    ignore_fraction: float = 0.0  # > 0: unlabelled band along region edges, width / image_size


@dataclass(frozen=True, eq=False)
class Appearance:
    """Per-(class, mode) appearance tables, flattened to index a = class * M + mode."""

    colours: torch.Tensor  # (C*M, 3) float32 base RGB in [0, 1]
    texture: torch.Tensor  # (C*M,) int64: 0 stripes, 1 checkerboard, 2 smooth shading
    angle: torch.Tensor  # (C*M,) float32 texture orientation in radians
    period: torch.Tensor  # (C*M,) float32 texture period in pixels
    amplitude: torch.Tensor  # (C*M,) float32 texture amplitude on the [0, 1] scale
    mean: torch.Tensor  # (3,) float32 approximate per-channel pixel mean (for normalising)
    std: torch.Tensor  # (3,) float32 approximate per-channel pixel std (for normalising)


def validate_config(cfg: SyntheticConfig) -> None:
    """Raise a one-line ValueError naming the first bad field of `cfg`."""
    checks: list[tuple[str, bool, str]] = [
        ("num_classes", cfg.num_classes >= 2, ">= 2"),
        ("modes_per_class", cfg.modes_per_class >= 1, ">= 1"),
        ("image_size", cfg.image_size >= 16, ">= 16"),
        ("num_images", cfg.num_images >= 1, ">= 1"),
        ("ignore_fraction", 0.0 <= cfg.ignore_fraction < 0.5, "in [0, 0.5)"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"SyntheticConfig.{name} must be {rule}, got {getattr(cfg, name)!r}")
    if 0 <= cfg.ignore_index < cfg.num_classes:
        raise ValueError(
            f"SyntheticConfig.ignore_index must lie outside [0, num_classes={cfg.num_classes}), "
            f"got {cfg.ignore_index!r}"
        )


def item_seed(seed: int, split: str, index: int) -> int:
    """Stable 63-bit seed for one item (blake2b, not the salted built-in `hash`)."""
    key = f"protoseg-synthetic|{seed}|{split}|{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)


def display_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct display colours per class (the PASCAL VOC bit-interleaved colour map)."""
    out: list[tuple[int, int, int]] = []
    for k in range(num_classes):
        r = g = b = 0
        c = k + 1  # skip black
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def _spread_colours(count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` well-spread RGB colours in [0.15, 0.85]^3 by farthest-point sampling."""
    cand = torch.rand(max(4096, 8 * count), 3, generator=gen) * 0.7 + 0.15
    chosen = [0]
    dist = (cand - cand[0]).norm(dim=1)
    for _ in range(count - 1):
        k = int(dist.argmax())
        chosen.append(k)
        dist = torch.minimum(dist, (cand - cand[k]).norm(dim=1))
    return cand[chosen]


@functools.lru_cache(maxsize=32)
def build_appearance(num_classes: int, modes_per_class: int) -> Appearance:
    """Appearance tables for C classes x M modes, a pure function of (C, M, PALETTE_SEED).

    Colours: a farthest-point spread set, handed out round-robin so that each class's next
    mode takes the free colour farthest from that class's modes so far; a class's modes thus
    span colour space and its mean colour says little (not linearly separable by colour).
    Do not modify the returned tensors (the result is cached).
    """
    return _build_appearance(num_classes, modes_per_class)


def _build_appearance(C: int, M: int) -> Appearance:
    """Body of `build_appearance`."""
    gen = torch.Generator().manual_seed(PALETTE_SEED + 1009 * C + M)
    pool = _spread_colours(C * M, gen)[torch.randperm(C * M, generator=gen)]
    free = torch.ones(C * M, dtype=torch.bool)
    colours = torch.empty(C, M, 3)
    class_order = torch.randperm(C, generator=gen).tolist()
    for m in range(M):
        for c in class_order:
            if m == 0:
                k = int(free.nonzero()[0])
            else:
                d = torch.cdist(pool, colours[c, :m]).min(dim=1).values
                k = int(torch.where(free, d, torch.full_like(d, -1.0)).argmax())
            free[k] = False
            colours[c, m] = pool[k]
    colours = colours.reshape(C * M, 3)
    texture = torch.randint(0, 3, (C * M,), generator=gen)
    angle = torch.rand(C * M, generator=gen) * math.pi
    period = 4.0 + 8.0 * torch.rand(C * M, generator=gen)
    amplitude = 0.06 + 0.08 * torch.rand(C * M, generator=gen)
    power = torch.tensor(_TEXTURE_POWER)[texture]
    mean = colours.mean(dim=0)
    var = colours.var(dim=0, unbiased=False) + (amplitude**2 * power).mean() + NOISE_STD**2
    return Appearance(colours, texture, angle, period, amplitude, mean, var.sqrt())


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) pixel-centre coordinates in [0, 1], each (size, size); cached, do not modify."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return t[:, None].expand(size, size), t[None, :].expand(size, size)


def _shape_mask(kind: int, p: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Boolean (H, W) mask of one shape; `p` holds 8 uniform [0, 1) parameters."""
    cy, cx = 0.1 + 0.8 * p[0], 0.1 + 0.8 * p[1]
    rot = p[2] * math.pi
    cos, sin = torch.cos(rot), torch.sin(rot)
    dy, dx = y - cy, x - cx
    if kind == 3:  # half-plane through a central point
        return dx * cos + dy * sin > 0
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    a, b = 0.08 + 0.22 * p[3], 0.08 + 0.22 * p[4]
    if kind == 0:  # rotated rectangle
        return (u.abs() < a) & (v.abs() < b)
    if kind == 1:  # rotated ellipse
        return (u / a) ** 2 + (v / b) ** 2 < 1.0
    # triangle: three vertices at jittered angles around the centre, CCW in (x, y)
    ang = rot * 2 + torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + (p[5:8] - 0.5) * 1.2
    rad = 0.12 + 0.22 * torch.stack([p[3], p[4], p[5]])
    vx, vy = cx + rad * torch.cos(ang), cy + rad * torch.sin(ang)
    inside = torch.ones_like(x, dtype=torch.bool)
    for k in range(3):
        j = (k + 1) % 3
        inside &= (vx[j] - vx[k]) * (y - vy[k]) - (vy[j] - vy[k]) * (x - vx[k]) >= 0
    return inside


CACHE_LIMIT_BYTES = 512 * 2**20  # splits up to this size keep their generated items in memory


class SyntheticSegmentation(Dataset):
    """Generated segmentation split: item i is (image (3,H,W) float32, label (H,W) int64).

    Images are normalised with fixed per-channel statistics of the appearance tables (roughly
    zero mean, unit variance); labels are in [0, num_classes) or `ignore_index`.
    """

    def __init__(self, cfg: SyntheticConfig, split: str = "train") -> None:
        """Validate `cfg` and `split` (one of SPLITS); nothing is generated up front."""
        validate_config(cfg)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        self.cfg = cfg
        self.split = split
        self.appearance = build_appearance(cfg.num_classes, cfg.modes_per_class)
        self.class_names: list[str] = [f"class{c}" for c in range(cfg.num_classes)]
        self.palette: list[tuple[int, int, int]] = display_palette(cfg.num_classes)
        self.mean: torch.Tensor = self.appearance.mean.clone()
        self.std: torch.Tensor = self.appearance.std.clone()
        # per-(class, mode) rows: r, g, b, cos, sin, radians per pixel, then the texture
        # amplitude spread one-hot over (stripes, checkerboard, shading); one gather per image
        app = self.appearance
        weights = app.amplitude[:, None] * F.one_hot(app.texture, len(_TEXTURE_POWER))
        direction = torch.stack([app.angle.cos(), app.angle.sin(), 2 * math.pi / app.period], 1)
        self._table = torch.cat([app.colours, direction, weights], dim=1)
        item_bytes = (3 * 4 + 8) * cfg.image_size ** 2  # float32 image + int64 label
        self._cacheable = cfg.num_images * item_bytes <= CACHE_LIMIT_BYTES
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        """Number of items in the split (`cfg.num_images`)."""
        return self.cfg.num_images

    def __getitem__(self, i: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, label) of item i; see `sample` for the mode map as well.

        Items are pure functions of i, and a training run reads each several times (the smoke
        grid: about 15 epochs), so small splits keep what they generated (copies are returned):
        generating was 12% of a smoke training step (perf/profile_step.py).
        """
        index = self._index(i)
        cached = self._cache.get(index)
        if cached is None:
            image, label, _ = self._generate(index)
            cached = (image, label)
            if self._cacheable:
                self._cache[index] = cached
        return cached[0].clone(), cached[1].clone()

    def _index(self, i: int | tuple[int, int]) -> int:
        if isinstance(i, tuple):  # (index, sample_seed) from the engine: nothing random to seed
            i = i[0]
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for split {self.split!r} of length {n}")
        return i % n

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, label, mode) of item i; `mode` (H, W) int64 is each pixel's appearance mode.

        A pure function of (cfg, split, i): a fresh generator seeded by `item_seed`.
        """
        return self._generate(self._index(i))

    def _generate(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body of `sample` for a checked index i in [0, len)."""
        cfg = self.cfg
        C, M, S = cfg.num_classes, cfg.modes_per_class, cfg.image_size
        gen = torch.Generator().manual_seed(item_seed(cfg.seed, self.split, i))

        # scene: region 0 is the background, regions 1..n are shapes painted in order
        n = int(torch.randint(_SHAPES_MIN, _SHAPES_MAX + 1, (1,), generator=gen))
        region_class = torch.randint(0, C, (n + 1,), generator=gen)
        region_mode = torch.randint(0, M, (n + 1,), generator=gen)
        kinds = torch.multinomial(torch.tensor([0.3, 0.3, 0.3, 0.1]), n, True, generator=gen)
        params = torch.rand(n, 8, generator=gen)
        phase = torch.rand(n + 1, 2, generator=gen) * (2 * math.pi)
        y, x = _grid(S)
        region = torch.zeros(S, S, dtype=torch.long)
        for k in range(n):
            region = torch.where(_shape_mask(int(kinds[k]), params[k], y, x), k + 1, region)
        label, mode = region_class[region], region_mode[region]

        # appearance: base colour + oriented texture + Gaussian noise; per-region rows of
        # (colour, direction, frequency, texture weights, phases) gathered once per pixel
        rows = torch.cat([self._table[region_class * M + region_mode], phase], dim=1)
        r, g, b, cos, sin, freq, w_stripes, w_checker, w_shading, ph0, ph1 = rows.T[:, region]
        ys, xs = y * S, x * S  # pixel units, so textures keep their scale at any image size
        proj, orth = xs * cos + ys * sin, ys * cos - xs * sin
        stripes = torch.sin(freq * proj + ph0)
        checker = torch.sign(stripes * torch.sin(freq * orth + ph1))
        shading = torch.sin((math.pi / S) * proj + ph0)
        pattern = w_stripes * stripes + w_checker * checker + w_shading * shading
        image = torch.stack([r, g, b]) + pattern + NOISE_STD * torch.randn(3, S, S, generator=gen)
        image = (image.clamp(0.0, 1.0) - self.mean[:, None, None]) / self.std[:, None, None]

        if cfg.ignore_fraction > 0:
            label = self._ignore_borders(label, region)
        return image.contiguous(), label, mode

    def _ignore_borders(self, label: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Set a band about ignore_fraction * S pixels wide (>= 2) along region edges to ignore."""
        w = max(1, round(self.cfg.ignore_fraction * self.cfg.image_size / 2))
        f = region[None, None].float()
        hi = F.max_pool2d(f, 2 * w + 1, stride=1, padding=w)
        lo = -F.max_pool2d(-f, 2 * w + 1, stride=1, padding=w)
        return torch.where((hi != lo)[0, 0], self.cfg.ignore_index, label)
