"""The scorer mechanism: every component the engine computes comes from a Scorer.

A scorer is a small object that, given the engine's shots (a `ScorerContext`), turns a query into
one or more named `ScoreMap`s. The engine owns shots, images and the CLIP encoder; each scorer owns
its own memory (rebuilt in `prepare` when the shots change) and its own models.

    class MyScorer(Scorer):
        name = "mine"
        def prepare(self, ctx):           # shots changed (ctx.version differs): rebuild memories
            ...
        def component_names(self):        # what `score` returns for the prepared context
            return ["mine"]
        def score(self, query):           # -> {"mine": ScoreMap(map at query.size_hw, score)}
            ...

`Engine.add_scorer(scorer)` plugs it in: its names join `Engine.component_names`, hence the studio's
sliders, the CLI's weight validation, eval's columns and the database; `Engine.score` calls it.
Maps are float32 (H, W) at the query's resolution, higher = more anomalous.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..results import ScoreMap

ROLES = ("memory", "validation")


@dataclass(frozen=True)
class ShotData:
    """One shot as scorers see it. rgb: uint8 (H, W, 3); mask: bool (H, W) on anomalous shots."""

    id: str
    kind: str  # "normal" | "anomalous"
    rgb: np.ndarray = field(repr=False, compare=False)
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    defect_type: str | None = None
    role: str = "memory"  # "memory" | "validation" (validation shots never reach a memory)


@dataclass(frozen=True)
class ScorerContext:
    """What a scorer builds its memory from. `shots` holds memory shots only (validation-only normal
    shots are left out); `version` changes whenever shots, masks or the class name change."""

    shots: tuple[ShotData, ...]
    class_name: str
    version: int

    @property
    def normal(self) -> tuple[ShotData, ...]:
        return tuple(s for s in self.shots if s.kind == "normal")

    @property
    def anomalous(self) -> tuple[ShotData, ...]:
        return tuple(s for s in self.shots if s.kind == "anomalous")


@dataclass(frozen=True)
class Query:
    """A query image: decoded pixels, their content hash and size."""

    rgb: np.ndarray = field(repr=False, compare=False)
    sha256: str
    size_hw: tuple[int, int]


class Scorer:
    """Base class of a group of components (see the module docstring)."""

    name: str = "scorer"

    def prepare(self, ctx: ScorerContext) -> None:
        """Build memories from the shots. Called before scoring whenever `ctx.version` changed."""

    def component_names(self) -> list[str]:
        """The component names `score` returns for the prepared context (stable order)."""
        raise NotImplementedError

    def score(self, query: Query) -> dict[str, ScoreMap]:
        raise NotImplementedError

    def score_progressive(self, query: Query) -> Iterator[dict[str, ScoreMap]]:
        """Growing dicts of components (cheap ones first). Default: one step, `score`."""
        yield self.score(query)
