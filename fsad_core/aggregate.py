"""Weights, presets and the weighted combination of component maps: the one place for all of them.

The studio, the CLI (`--weights`), eval, batch inspection and weight tuning all call this module.

A **weight set** (`WeightSet`) is score weights, a score rule and (optionally) separate map weights:

- ``mean_of_scores`` (Abdali et al. 2025, eq. 2): aggregate score = sum_c w_c s_c / sum_c w_c over the
  components present. The aggregate *map* is the weighted combination of the **spatial** components
  only (weights renormalised over them): `text` is one number per image, so adding it to a map would
  only shift the map by a constant. With the `paper` preset the score is eq. 2 exactly,
  A = 1/3 (a_zs + max M^W + max M^W+) with a_zs = `text` and 1/12 on each of the 8 memory scores.
- ``max_of_map`` (WinCLIP+, Jeong et al. 2023, as anomalib computes it; APRIL-GAN's few-shot score):
  weights normalised to sum 1 over the components present; aggregate score =
  sum_{non-spatial c} w_c s_c + max over the grid of sum_{spatial c} w_c M_c ("max of a mean", not a
  mean of per-component maxima). The map uses `map_weights` when the preset has them (WinCLIP+'s map
  is 1/2 zero_shot + 1/2 mean normal map, its score 1/2 text + 1/2 max mean normal map).

Groups renormalise over what a result has: with no anomalous shot, `paper` gives 1/2 text +
1/6 on each normal@s (four scales); with no shots at all, `text` alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .results import ScoreMap

STABLE_NAMES: tuple[str, ...] = (
    "text", "zero_shot",
    "normal@16", "normal@32", "normal@48", "normal@112",
    "anomalous@16", "anomalous@32", "anomalous@48", "anomalous@112",
    "adapter", "adapter_memory", "adapter_text", "patchcore", "personal", "pool",
)
#: components that are one number per image (their map is a constant): left out of aggregate maps
NON_SPATIAL = frozenset({"text"})
RULES = ("mean_of_scores", "max_of_map")
WINCLIP_PLUS_SCALES = ("normal@16", "normal@32", "normal@48")  # anomalib's WinCLIP+ (scales 2, 3 + patches)


def scale_px(scale: int, patch_px: int = 16) -> int:
    return scale * patch_px


@dataclass(frozen=True)
class WeightSet:
    """Score weights, how they turn into one image score, and (optionally) separate map weights.

    name: a preset name, "tuned", "saved: <name>" or "custom" (what the studio's preset label shows).
    requires: components without which the set measures something else (an error when missing).
    """

    weights: Mapping[str, float]
    rule: str = "mean_of_scores"
    map_weights: Mapping[str, float] | None = None
    name: str = "custom"
    requires: tuple[str, ...] = ()

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"score rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        object.__setattr__(self, "weights", validate_weights(self.weights))
        if self.map_weights is not None:
            object.__setattr__(self, "map_weights", validate_weights(self.map_weights))

    def to_dict(self) -> dict:
        return {"name": self.name, "rule": self.rule, "weights": dict(self.weights),
                "map_weights": None if self.map_weights is None else dict(self.map_weights),
                "requires": list(self.requires)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "WeightSet":
        return cls(dict(d["weights"]), d.get("rule", "mean_of_scores"), d.get("map_weights"),
                   d.get("name", "custom"), tuple(d.get("requires", ())))


# -- presets ------------------------------------------------------------------------------------------
def paper_weights(names: Iterable[str]) -> dict[str, float]:
    """Eq. 2 over the given names: 1/3 on `text`, 1/3 split evenly over the `normal@*` components and
    1/3 over the `anomalous@*` ones (1/12 each with four scales); every other name gets 0."""
    names = list(names)
    w = {n: 0.0 for n in names}
    if "text" in w:
        w["text"] = 1 / 3
    for prefix in ("normal@", "anomalous@"):
        group = [n for n in names if n.startswith(prefix)]
        for n in group:
            w[n] = 1 / (3 * len(group))
    return w


def equal_weights(names: Iterable[str]) -> dict[str, float]:
    names = list(names)
    return {n: 1.0 / len(names) for n in names} if names else {}


def _winclip_plus(names: Sequence[str]) -> WeightSet:
    normal = [n for n in WINCLIP_PLUS_SCALES if n in names] or list(WINCLIP_PLUS_SCALES)
    score = {"text": 0.5, **{n: 0.5 / len(normal) for n in normal}}
    map_w = {"zero_shot": 0.5, **{n: 0.5 / len(normal) for n in normal}}
    return WeightSet(score, "max_of_map", map_w, "winclip+")


def _one_to_normal(names: Sequence[str]) -> WeightSet:
    # Li et al. 2024: A = S_P + 1.0 S_N + 0.5 S_text. S_text is the APRIL-GAN head's `adapter_text`
    # when an adapter is loaded, else WinCLIP's zero-shot map stands in for it (said in the UI/metrics).
    text = "adapter_text" if "adapter_text" in names else "zero_shot"
    return WeightSet({"personal": 1.0, "pool": 1.0, text: 0.5}, "mean_of_scores", None, "one-to-normal",
                     ("personal", "pool"))


def _april_gan(names: Sequence[str]) -> WeightSet:
    # Chen et al. 2023, section 2.2: map M + M_f, image score text + max(M + M_f) (up to a factor 1/3).
    return WeightSet({"text": 1 / 3, "adapter": 1 / 3, "adapter_memory": 1 / 3}, "max_of_map",
                     {"adapter": 0.5, "adapter_memory": 0.5}, "april-gan", ("adapter",))


PRESET_BUILDERS: dict[str, Callable[[Sequence[str]], WeightSet]] = {
    "paper": lambda names: WeightSet(paper_weights(names), name="paper"),
    "equal": lambda names: WeightSet(equal_weights(names), name="equal"),
    "winclip+": _winclip_plus,
    "one-to-normal": _one_to_normal,
    "april-gan": _april_gan,
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESET_BUILDERS)


def preset(name: str, names: Sequence[str] = STABLE_NAMES) -> WeightSet:
    """The weight set a preset name stands for over the given component names."""
    if name == "default":
        name = "paper"
    try:
        return PRESET_BUILDERS[name](list(names))
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESET_NAMES)}") from None


def default_weights(names: Iterable[str]) -> dict[str, float]:
    return paper_weights(names)


# -- parsing and validation ---------------------------------------------------------------------------
def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for k, v in weights.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"weight for {k!r} must be a number, got {v!r}") from None
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"weight for {k!r} must be a finite non-negative number, got {v}")
        out[str(k)] = v
    return out


def parse_weight_text(text: str) -> dict[str, float]:
    """'text=1,normal@16=0.5' -> {'text': 1.0, 'normal@16': 0.5}."""
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"bad weight {part!r}: write name=value, e.g. text=1,normal@16=0.5, "
                             f"or a preset name ({', '.join(PRESET_NAMES)})")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"bad weight value {v!r} for {k.strip()!r}: must be a number") from None
    return out


def missing_required(wset: WeightSet, names: Sequence[str]) -> list[str]:
    """Components the weight set needs that `names` lacks (e.g. one-to-normal without `personal`)."""
    return [n for n in wset.requires if n not in names]


def check_weight_set(wset: WeightSet, names: Sequence[str], hints: Mapping[str, str] | None = None,
                     strict: bool = True) -> WeightSet:
    """An error unless every weighted name is among `names` (only with `strict`: the CLI's typo check),
    required components are there and at least one weight on a present component is positive.
    `hints`: how to get a missing component (e.g. personal: "--personalize fast")."""
    hints = hints or {}
    names = list(names)
    # presets drop their absent optional parts; custom, tuned and saved weights must name real components
    check_names = strict and wset.name not in PRESET_BUILDERS
    for label, w in (("weights", wset.weights), ("map weights", wset.map_weights or {})) if check_names else ():
        unknown = [k for k in w if k not in names]
        if unknown:
            how = "; ".join(f"{k}: {hints[k]}" for k in unknown if k in hints)
            raise ValueError(f"{label} for unknown components {', '.join(unknown)} (this run does not compute them"
                             f"{'; ' + how if how else ''}); valid names here: {', '.join(names)}")
    lost = missing_required(wset, names)
    if lost:
        how = "; ".join(f"{k}: {hints[k]}" for k in lost if k in hints)
        raise ValueError(f"the {wset.name} weights need {', '.join(lost)}, which this run does not compute"
                         f"{' (' + how + ')' if how else ''}; with only the rest they would measure something else")
    if not any(v > 0 for k, v in wset.weights.items() if k in names):
        raise ValueError("every weight is 0 (or on components this run lacks): raise at least one "
                         f"of {', '.join(names)}")
    return wset


def resolve_weights(spec, names: Sequence[str] = STABLE_NAMES, hints: Mapping[str, str] | None = None,
                    strict: bool = True) -> WeightSet:
    """None / 'default' / a preset name / 'name=w,...' / a mapping / a WeightSet -> a checked WeightSet
    (`check_weight_set`; `strict=False` lets weights on absent components drop out)."""
    if spec is None:
        spec = "paper"
    if isinstance(spec, WeightSet):
        wset = spec
    elif isinstance(spec, str):
        text = spec.strip()
        if text in PRESET_BUILDERS or text == "default":
            wset = preset(text, names)
        else:
            wset = WeightSet(parse_weight_text(text))
    elif isinstance(spec, Mapping):
        wset = WeightSet(dict(spec))
    else:
        raise TypeError(f"weights must be a preset name, 'name=w,...', a mapping or a WeightSet, got {type(spec)}")
    return check_weight_set(wset, names, hints, strict)


def effective_weights(wset: WeightSet, names: Iterable[str]) -> dict[str, float]:
    """The score weights that act on a result with these components (absent ones dropped, the rest
    renormalised to sum 1): what a report should print next to the aggregate score."""
    w = _present(wset.weights, names)
    total = sum(w.values())
    return {k: v / total for k, v in w.items()} if total > 0 else {}


# -- combination --------------------------------------------------------------------------------------
def _present(weights: Mapping[str, float], available: Iterable[str]) -> dict[str, float]:
    avail = set(available)
    return {k: v for k, v in validate_weights(weights).items() if v > 0 and k in avail}


def _as_array(x) -> np.ndarray:
    return np.asarray(x.map if isinstance(x, ScoreMap) else x, dtype=np.float32)


def combine_map(maps: Mapping[str, object], weights: Mapping[str, float]) -> np.ndarray:
    """sum_c w_c M_c / sum_c w_c over the present components with w_c > 0; `maps` holds plain arrays
    (e.g. the studio's display-size maps) or ScoreMaps. Non-spatial components are left out unless
    every weighted component is non-spatial."""
    w = _present(weights, maps)
    spatial = {k: v for k, v in w.items() if k not in NON_SPATIAL}
    w = spatial or w
    if not w:
        raise ValueError("no positive weight on any component present "
                         f"(present: {', '.join(maps) or 'none'}; weights given for: {', '.join(weights) or 'none'})")
    total = sum(w.values())
    acc = np.zeros_like(_as_array(maps[next(iter(w))]), dtype=np.float32)
    for name, wt in w.items():
        acc += np.float32(wt / total) * _as_array(maps[name])
    return acc


def _combined_grid(components: Mapping[str, ScoreMap], w: Mapping[str, float]) -> np.ndarray | None:
    grids = [components[k].grid for k in w]
    if any(g is None for g in grids) or len({np.shape(g) for g in grids}) != 1:
        return None
    acc = np.zeros(np.shape(grids[0]), dtype=np.float64)
    for k, wt in w.items():
        acc += wt * np.asarray(components[k].grid, np.float64)
    return acc


def combine_score(components: Mapping[str, ScoreMap], weights: Mapping[str, float], rule: str = "mean_of_scores") -> float:
    """The aggregate image score of a weight set's score weights under `rule` (module docstring)."""
    w = _present(weights, components)
    if not w:
        raise ValueError("no positive weight on any component of this result "
                         f"(components: {', '.join(components) or 'none'}; weights given for: {', '.join(weights) or 'none'})")
    total = sum(w.values())
    w = {k: v / total for k, v in w.items()}
    if rule == "mean_of_scores":
        return float(sum(wt * float(components[k].score) for k, wt in w.items()))
    if rule != "max_of_map":
        raise ValueError(f"score rule must be one of {', '.join(RULES)}, got {rule!r}")
    score = sum(wt * float(components[k].score) for k, wt in w.items() if k in NON_SPATIAL)
    spatial = {k: v for k, v in w.items() if k not in NON_SPATIAL}
    if spatial:
        grid = _combined_grid(components, spatial)
        if grid is None:  # components on different grids: take the max at the query's resolution
            grid = sum(wt * components[k].map.astype(np.float64) for k, wt in spatial.items())
        score += float(np.max(grid))
    return float(score)


def combine(components: Mapping[str, ScoreMap], weights, rule: str | None = None,
            maps: Mapping[str, object] | None = None) -> ScoreMap:
    """The aggregate ScoreMap of `components` under a weight set (a WeightSet, or plain score weights
    with `rule`). Absent components drop out and the rest renormalise.

    maps: optional plain arrays (e.g. display-size maps) to combine instead of the components' maps;
    the score always comes from the components, so it is the same at any display size.
    """
    wset = weights if isinstance(weights, WeightSet) else WeightSet(dict(weights), rule or "mean_of_scores")
    score = combine_score(components, wset.weights, wset.rule)
    src = maps if maps is not None else components
    map_w = wset.map_weights if wset.map_weights is not None else wset.weights
    if not _present(map_w, src):
        map_w = wset.weights
    acc = combine_map(src, map_w)
    grid = None
    if maps is None:
        w = {k: v for k, v in _present(map_w, components).items() if k not in NON_SPATIAL}
        if w:
            g = _combined_grid(components, w)
            grid = None if g is None else (g / sum(w.values())).astype(np.float32)
    return ScoreMap(map=acc, score=score, grid=grid)


#: the plain weights of each preset over every stable name (kept for callers that want a dict), as for a
#: run without an APRIL-GAN adapter: `adapter_text` is a stable name (it has a slider) but one-to-normal's
#: S_text falls back to zero_shot here; `preset(name, names)` picks adapter_text when a result has it.
PRESETS: dict[str, dict[str, float]] = {k: dict(f([n for n in STABLE_NAMES if n != "adapter_text"]).weights)
                                        for k, f in PRESET_BUILDERS.items()}
