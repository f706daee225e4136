"""Named model sizes and the one dial that turns a parameter target into a shape.

The dial, :func:`shape_for_params`, maps a target number of NON-embedding parameters
(Kaplan et al. 2020's N) to ``(n_layer, d_model, n_head, d_ff)``:

1. **Depth from a fixed aspect ratio.** Hold d_model / n_layer at ``aspect_ratio`` = 64,
   the rule of nanochat's single ``--depth`` dial (model_dim = 64 x depth; GPT-2 small is
   768 / 12 = 64). Kaplan et al. 2020 (Section 3.1, Figure 5) found the loss at fixed N
   changes by only a few percent for aspect ratios between about 20 and 200, so a fixed
   ratio costs little and keeps a ladder comparable. With ~12 d^2 parameters per block,
   N = 12 x 64^2 x s^3 for a continuous depth s; n_layer is s rounded in log space (the
   boundary between L and L+1 layers is at s = sqrt(L (L+1))), at least 1.
2. **Width for that depth**: d_model = sqrt(N / (12 n_layer)) rounded to the nearest
   allowed width: multiples of 8 up to 32, of 16 up to 128, of 32 up to 512, then of 64.
3. **Heads**: head dim 64 (GPT-2, nanochat, Chinchilla up to 300M), or for narrow
   models the largest of 32, 16, 8, 4 that divides d_model and leaves at least 2 heads.
4. **d_ff is the fine knob**: a multiple of :func:`~scalelab.models.config.ffn_multiple`
   chosen so that N hits the target. It stays within 0.75-1.36x the nominal 8/3
   d_model (SwiGLU) or 4 d_model (gpt2, bert) from two layers up, 0.8-1.25x from four
   (one-layer models, below ~1.4e5, range wider).

The result is within ~3% of the target from 1e4 to 1e10 (tested), and monotone: a larger
target never gives fewer parameters or fewer layers. Monotone by construction: every
(n_layer, d_model) cell owns an interval of targets and may only use d_ff values whose
count lies inside it; the dial returns the admissible shape nearest the target (in log),
which is the nearest member of one sorted chain.

Named sizes (``tiny`` is a fixed shape for tests; the others are targets for the dial;
shapes below are for arch llama, d_ff for gpt2/bert differs; N = non-embedding):

======  =========  =======  =======  ======  =====  ===============
name    target     n_layer  d_model  n_head  d_ff   N
======  =========  =======  =======  ======  =====  ===============
tiny    --         2        64       2       176    100,672
10k     1e4        1        32       2       60     9,952
20k     2e4        1        48       3       72     19,728
50k     5e4        1        64       2       176    50,368
100k    1e5        1        96       3       216    99,360
200k    2e5        2        96       3       216    198,624
500k    5e5        2        128      2       464    488,064
1m      1e6        3        160      5       480    999,520
2m      2e6        3        224      7       688    1,990,688
5m      5e6        5        288      9       768    4,979,808
10m     1e7        6        384      6       928    9,958,272
20m     2e7        7        480      15      1344   20,005,920
50m     5e7        10       640      10      1728   49,575,040
100m    1e8        13       768      12      2304   99,700,992
200m    2e8        16       1024     16      2688   199,263,232
500m    5e8        22       1344     21      3840   499,641,408
1b      1e9        27       1728     27      4864   1,003,385,664
2b      2e9        34       2240     35      5760   1,998,592,960
5b      5e9        47       3008     47      7808   5,012,913,216
10b     1e10       59       3776     59      9920   9,995,430,720
======  =========  =======  =======  ======  =====  ===============
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re

from scalelab.errors import UserError
from scalelab.models.accounting import param_counts
from scalelab.models.config import ModelConfig, default_d_ff, ffn_multiple

ASPECT_RATIO = 64.0
"""d_model / n_layer held by the dial (nanochat's depth dial; GPT-2 small)."""

_PER_LAYER = 12.0  # non-embedding parameters per block / d_model^2 at the nominal d_ff
MIN_TARGET, MAX_TARGET = 1e3, 1e13


@dataclasses.dataclass(frozen=True)
class Shape:
    """The shape of a Transformer; ``d_ff`` None means the architecture's default."""

    n_layer: int
    d_model: int
    n_head: int
    d_ff: int | None = None

    def to_config(self, **fields: object) -> ModelConfig:
        """A :class:`ModelConfig` of this shape with the other ``fields`` given."""
        return ModelConfig.from_shape(self, **fields)


SIZES: dict[str, Shape | float] = {
    "tiny": Shape(n_layer=2, d_model=64, n_head=2),
    **{
        name: float(value)
        for name, value in (
            ("10k", 1e4),
            ("20k", 2e4),
            ("50k", 5e4),
            ("100k", 1e5),
            ("200k", 2e5),
            ("500k", 5e5),
            ("1m", 1e6),
            ("2m", 2e6),
            ("5m", 5e6),
            ("10m", 1e7),
            ("20m", 2e7),
            ("50m", 5e7),
            ("100m", 1e8),
            ("200m", 2e8),
            ("500m", 5e8),
            ("1b", 1e9),
            ("2b", 2e9),
            ("5b", 5e9),
            ("10b", 1e10),
        )
    },
}
"""Named sizes: a fixed :class:`Shape`, or a non-embedding parameter target for the dial."""


# ====================================================================== shape rules


def head_dim_for(d_model: int) -> int:
    """64, or for narrow models the largest of 32/16/8/4 dividing d_model with >= 2 heads."""
    if d_model % 64 == 0 and d_model >= 128:
        return 64
    for hd in (32, 16, 8, 4):
        if d_model % hd == 0 and d_model // hd >= 2:
            return hd
    return d_model  # one head (odd widths the dial never produces)


def _width_quantum(w: float) -> int:
    return 64 if w >= 512 else 32 if w >= 128 else 16 if w >= 32 else 8


@functools.cache
def _widths(limit: int) -> tuple[int, ...]:
    """Allowed widths up to ``limit``: 8..32 step 8, 48..128 step 16, 160..512 step 32, 576.. step 64."""
    out, d = [], 8
    while d <= limit:
        out.append(d)
        d += _width_quantum(d + 0.5)
    return tuple(out)


def _depth(s: float) -> int:
    """Layers for continuous depth s: L with L(L-1) <= s^2 < L(L+1), at least 1."""
    return max(1, math.floor((1.0 + math.sqrt(1.0 + 4.0 * s * s)) / 2.0))


def _target_of_s(s: float, rho: float) -> float:
    return _PER_LAYER * rho * rho * s**3


def _s_of_target(t: float, rho: float) -> float:
    return (t / (_PER_LAYER * rho * rho)) ** (1.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class _Cell:
    n_layer: int
    d_model: int
    t_lo: float  # this cell owns targets in [t_lo, t_hi)
    t_hi: float
    base: int  # non-embedding N at d_ff = 0 (by linearity in d_ff)
    slope: int  # extra N per unit of d_ff
    lo: int  # admissible d_ff range: base + slope * d_ff within [t_lo, t_hi]
    hi: int

    def count(self, d_ff: int) -> int:
        return self.base + self.slope * d_ff


def _non_embedding(arch: str, n_layer: int, d_model: int, d_ff: int) -> int:
    cfg = ModelConfig(
        arch=arch,  # type: ignore[arg-type]
        n_layer=n_layer,
        d_model=d_model,
        n_head=d_model // head_dim_for(d_model),
        d_ff=d_ff,
        vocab_size=2,
        max_seq_len=1,
    )
    return param_counts(cfg).non_embedding


@functools.cache
def _plateau(arch: str, n_layer: int, rho: float) -> tuple[_Cell, ...]:
    """The cells (one per width) of the targets that get ``n_layer`` layers."""
    s_lo, s_hi = math.sqrt(n_layer * (n_layer - 1)), math.sqrt(n_layer * (n_layer + 1))
    t_lo, t_hi = _target_of_s(s_lo, rho), _target_of_s(s_hi, rho)

    def width_of(t: float) -> float:
        return math.sqrt(t / (_PER_LAYER * n_layer))

    widths = _widths(int(width_of(t_hi)) + 128)
    cells = []
    for i, d in enumerate(widths):
        # Width d serves w in [midpoint below, midpoint above); in targets t = 12 L w^2.
        w_lo = 0.0 if i == 0 else (widths[i - 1] + d) / 2.0
        w_hi = (d + widths[i + 1]) / 2.0 if i + 1 < len(widths) else math.inf
        a = max(t_lo, _PER_LAYER * n_layer * w_lo * w_lo)
        b = min(t_hi, _PER_LAYER * n_layer * w_hi * w_hi)
        if a >= b:
            continue
        one = _non_embedding(arch, n_layer, d, 1)
        slope = _non_embedding(arch, n_layer, d, 2) - one
        base = one - slope
        m = ffn_multiple(d)
        lo = m if a <= 0 else max(m, m * math.ceil((a - base) / (slope * m)))
        hi = m * math.floor((b - base) / (slope * m))
        cells.append(_Cell(n_layer, d, a, b, base, slope, lo, hi))
    return tuple(cells)


def shape_for_params(
    target_non_embedding_params: float, *, arch: str = "llama", aspect_ratio: float = ASPECT_RATIO
) -> Shape:
    """The shape whose non-embedding parameter count is nearest the target (module docstring)."""
    target = float(target_non_embedding_params)
    if not MIN_TARGET <= target <= MAX_TARGET:
        raise UserError(
            f"size target {target:.3g} is outside the dial's range [{MIN_TARGET:.0e}, {MAX_TARGET:.0e}]"
        )
    if arch not in ("llama", "gpt2", "bert"):
        raise UserError(f"unknown arch {arch!r}; known: llama, gpt2, bert")
    if not aspect_ratio > 0:
        raise UserError(f"aspect_ratio must be positive, got {aspect_ratio}")
    depth = _depth(_s_of_target(target, aspect_ratio))
    cells = [
        c
        for n in range(max(1, depth - 2), depth + 3)
        for c in _plateau(arch, n, float(aspect_ratio))
    ]
    here = next(i for i, c in enumerate(cells) if c.t_lo <= target < c.t_hi)
    candidates: list[tuple[_Cell, int]] = []
    cell = cells[here]
    if cell.lo <= cell.hi:
        m = ffn_multiple(cell.d_model)
        exact = (target - cell.base) / cell.slope
        for f in (m * math.floor(exact / m), m * math.ceil(exact / m)):
            candidates.append((cell, min(max(f, cell.lo), cell.hi)))
    # The nearest admissible shapes of the neighbouring cells (the chain's neighbours).
    prev = next((c for c in reversed(cells[:here]) if c.lo <= c.hi), None)
    nxt = next((c for c in cells[here + 1 :] if c.lo <= c.hi), None)
    if prev is not None:
        candidates.append((prev, prev.hi))
    if nxt is not None:
        candidates.append((nxt, nxt.lo))
    best_cell, best_f = min(
        candidates, key=lambda cf: (abs(math.log(cf[0].count(cf[1]) / target)), cf[0].count(cf[1]))
    )
    d = best_cell.d_model
    return Shape(n_layer=best_cell.n_layer, d_model=d, n_head=d // head_dim_for(d), d_ff=best_f)


# ====================================================================== registry

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def resolve_size(size: str | float, *, arch: str = "llama") -> Shape:
    """A registry name (``tiny``, ``1m``, ...) or a number (``3e6``, ``250k``) -> a shape."""
    if isinstance(size, str) and size.strip().lower() in SIZES:
        entry = SIZES[size.strip().lower()]
        if isinstance(entry, Shape):
            return entry
        return shape_for_params(entry, arch=arch)
    if isinstance(size, int | float) and not isinstance(size, bool):
        return shape_for_params(size, arch=arch)
    match = _NUMBER.match(str(size))
    if not match:
        raise UserError(
            f"unknown model size {size!r}: use a name ({', '.join(SIZES)}) or a "
            "non-embedding parameter count such as 3e6 or 250k"
        )
    return shape_for_params(float(match.group(1)) * _SUFFIX[match.group(2).lower()], arch=arch)


def model_config(
    size: str | float, *, arch: str = "llama", vocab_size: int, max_seq_len: int, **fields: object
) -> ModelConfig:
    """A :class:`ModelConfig` for a named or numeric size (other fields as keywords)."""
    shape = resolve_size(size, arch=arch)
    return shape.to_config(arch=arch, vocab_size=vocab_size, max_seq_len=max_seq_len, **fields)


def size_table(arch: str = "llama") -> list[dict[str, object]]:
    """One row per named size: name, target, shape and its non-embedding N."""
    rows = []
    for name, entry in SIZES.items():
        shape = resolve_size(name, arch=arch)
        d_ff = shape.d_ff if shape.d_ff is not None else default_d_ff(arch, shape.d_model)
        n = _non_embedding(arch, shape.n_layer, shape.d_model, d_ff)
        rows.append(
            {
                "name": name,
                "target": None if isinstance(entry, Shape) else entry,
                "n_layer": shape.n_layer,
                "d_model": shape.d_model,
                "n_head": shape.n_head,
                "d_ff": d_ff,
                "non_embedding": n,
            }
        )
    return rows
