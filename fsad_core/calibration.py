"""Decision thresholds on the aggregate image score, and OK / NG / uncertain verdicts.

One implementation of the three calibration modes (docs/decisions.md says what each guarantees):

- ``conformal``: held-out normal (OK) images only. Threshold = just above the k-th largest of the
  n OK scores, k chosen as large as the guarantee allows. For a new normal image exchangeable with
  the calibration images, the false-alarm rate F of that threshold satisfies

      P(F > alpha) = P(Binomial(n, alpha) <= k - 1) <= 1 - confidence,

  distribution-free (order statistics of a continuous score are Beta distributed: F(s_(n-k+1)) ~
  Beta(n-k+1, k)). With k = 1 (the maximum) this is (1 - alpha)^n <= delta, so 29 OK images give
  "at most 10 % false alarms with 95 % confidence" and 299 give 1 %. The expected (marginal)
  false-alarm rate is at most k / (n + 1).
- ``labelled``: OK and NG images with labels. The F1-max threshold (or the highest threshold that
  reaches a chosen recall), with the confusion matrix, precision and recall it implies on those
  images. No guarantee beyond the images themselves: an estimate, optimistic on few images.
- ``heuristic``: shots only. Augmented copies of the shots (`fsad_core.tuning.validation_set`):
  F1-max between anomalous and normal copies, or just above the highest normal copy when there is
  no anomalous shot. A heuristic: the copies are the shots themselves, distorted.

The decision rule everywhere: ``score >= threshold`` -> NG, else OK; within ``margin`` of the
threshold -> "uncertain" (`verdict`). Thresholds are in the units of the aggregate image score,
so the same number means the same thing on every image of a project (for one weight set).

Pure numpy/scipy functions on score arrays; `calibrate_engine` (used by `Engine.calibrate`, the
CLI and the studio) is the one place that scores images for them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["Calibration", "calibrate", "conformal", "labelled", "heuristic", "verdict", "verdicts",
           "n_needed", "far_upper_bound", "default_margin", "confusion", "calibrate_engine", "MODES", "VERDICTS"]

MODES = ("conformal", "labelled", "heuristic", "manual")
VERDICTS = ("OK", "NG", "uncertain")
MARGIN_FRACTION = 0.25  # default "uncertain" half-width, in robust standard deviations of the OK scores


@dataclass(frozen=True)
class Calibration:
    """A decision threshold on the aggregate image score and how it was obtained (JSON-ready).

    mode: conformal | labelled | heuristic | manual; threshold: score >= threshold is NG;
    margin: |score - threshold| < margin is "uncertain" (0 = never); n: images it was computed on
    (OK + NG); alpha / confidence: the false-alarm bound and its confidence (conformal; for other
    modes the bound the OK images support at this threshold, when there are OK images); text: the
    guarantee or estimate in words. The rest is detail: counts, k, recall target, confusion matrix.
    """

    mode: str
    threshold: float
    margin: float
    n: int
    alpha: float | None
    confidence: float | None
    text: str
    n_ok: int = 0
    n_ng: int = 0
    k: int | None = None  # conformal: the k-th largest OK score
    expected_false_alarm: float | None = None  # conformal: k / (n + 1), the marginal bound
    needed_for_1pct: int | None = None  # OK images needed for <= 1 % false alarms at this confidence
    recall_target: float | None = None
    confusion: dict | None = None  # {"tp", "fp", "fn", "tn"} on the labelled images
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    false_alarm_rate: float | None = None  # on the OK images given (fraction at or above threshold)
    miss_rate: float | None = None  # on the NG images given
    weights: dict | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Calibration":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["notes"] = tuple(kw.get("notes") or ())
        if kw.get("mode") not in MODES:
            raise ValueError(f"calibration mode must be one of {', '.join(MODES)}, got {kw.get('mode')!r}")
        kw["threshold"] = float(kw["threshold"])
        kw["margin"] = float(kw.get("margin") or 0.0)
        for k in ("n", "alpha", "confidence", "text"):
            kw.setdefault(k, None if k != "n" else 0)
        kw["text"] = kw["text"] or ""
        return cls(**kw)

    def verdict(self, score: float) -> str:
        return verdict(score, self.threshold, self.margin)


# -- verdicts -----------------------------------------------------------------------------------------
def verdict(score: float, threshold: float, margin: float = 0.0) -> str:
    """"OK", "NG" or "uncertain" for an aggregate score.

    >>> verdict(0.70, 0.5), verdict(0.30, 0.5), verdict(0.52, 0.5, margin=0.05), verdict(0.5, 0.5)
    ('NG', 'OK', 'uncertain', 'NG')
    """
    s, t, m = float(score), float(threshold), max(0.0, float(margin or 0.0))
    if not math.isfinite(s):
        raise ValueError(f"the score is {s}: cannot give a verdict")
    if m > 0 and abs(s - t) < m:
        return "uncertain"
    return "NG" if s >= t else "OK"


def verdicts(scores: Iterable[float], threshold: float, margin: float = 0.0) -> list[str]:
    return [verdict(s, threshold, margin) for s in scores]


def confusion(ok_scores: Sequence[float], ng_scores: Sequence[float], threshold: float) -> dict:
    """Counts and rates at `threshold` (score >= threshold is NG; margin ignored: a hard decision).

    >>> c = confusion([0.1, 0.2, 0.6], [0.5, 0.9], 0.45); c["tp"], c["fp"], c["fn"], c["tn"]
    (2, 1, 0, 2)
    """
    ok = np.asarray(ok_scores, np.float64).ravel()
    ng = np.asarray(ng_scores, np.float64).ravel()
    tp, fn = int((ng >= threshold).sum()), int((ng < threshold).sum())
    fp, tn = int((ok >= threshold).sum()), int((ok < threshold).sum())
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if tp else (0.0 if tp + fn and tp + fp else float("nan"))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec, "f1": f1,
            "false_alarm_rate": fp / (fp + tn) if fp + tn else float("nan"),
            "miss_rate": fn / (tp + fn) if tp + fn else float("nan")}


# -- the distribution-free bound --------------------------------------------------------------------
def check_confidence(confidence: float) -> float:
    return 1.0 - _delta(confidence)


def _delta(confidence: float) -> float:
    c = float(confidence)
    if not 0 < c < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    return 1.0 - c


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0 < a < 1:
        raise ValueError(f"alpha (the false-alarm rate to bound) must be between 0 and 1 (e.g. 0.1), got {alpha}")
    return a


def n_needed(alpha: float, confidence: float = 0.95, k: int = 1) -> int:
    """OK images needed so that the k-th largest bounds the false-alarm rate by alpha at `confidence`.

    >>> n_needed(0.10), n_needed(0.01), n_needed(0.05, 0.99)
    (29, 299, 90)
    """
    from scipy.stats import binom

    a, d = check_alpha(alpha), _delta(confidence)
    if k == 1:  # (1 - a)^n <= d, in closed form (then checked, against rounding)
        n = max(1, math.ceil(math.log(d) / math.log1p(-a)))
        while n > 1 and (1 - a) ** (n - 1) <= d:
            n -= 1
        while (1 - a) ** n > d:
            n += 1
        return n
    n = k
    while binom.cdf(k - 1, n, a) > d:
        n += 1
    return n


def far_upper_bound(n_ok: int, n_alarms: int, confidence: float = 0.95) -> float:
    """Upper confidence bound on the false-alarm rate when `n_alarms` of `n_ok` held-out OK images
    score at or above the threshold (exact one-sided binomial / Clopper-Pearson bound).

    >>> round(far_upper_bound(29, 0), 4), round(far_upper_bound(100, 2), 4)
    (0.0981, 0.0616)
    """
    from scipy.stats import beta

    if n_ok < 1:
        return float("nan")
    if n_alarms >= n_ok:
        return 1.0
    return float(beta.ppf(float(confidence), n_alarms + 1, n_ok - n_alarms))


def default_margin(ok_scores: Sequence[float], fraction: float = MARGIN_FRACTION) -> float:
    """The "uncertain" half-width: `fraction` x a robust spread (IQR / 1.349) of the OK scores,
    the standard deviation when the IQR is 0; 0 with fewer than 2 scores. A display choice, not
    part of any guarantee: the guarantee is about the threshold."""
    s = np.asarray(ok_scores, np.float64).ravel()
    if s.size < 2:
        return 0.0
    q75, q25 = np.percentile(s, [75, 25])
    spread = (q75 - q25) / 1.349
    if not spread > 0:
        spread = float(s.std())
    return float(fraction * spread)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.1 else f"{100 * x:.1f} %".replace(".0 %", " %")


def _needed_text(n: int, confidence: float) -> tuple[int, str]:
    need = n_needed(0.01, confidence)
    more = max(0, need - n)
    tail = (f"for at most 1 % false alarms: {need} OK images ({more} more)" if more else
            f"{n} OK images are enough for at most 1 % false alarms")
    return need, tail


def _check_scores(x, what: str) -> np.ndarray:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, np.float64).ravel()
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return a


# -- the three modes ----------------------------------------------------------------------------------
def conformal(ok_scores: Sequence[float], alpha: float = 0.1, confidence: float = 0.95,
              ng_scores: Sequence[float] = (), margin: float | None = None) -> Calibration:
    """Distribution-free threshold from held-out OK scores (module docstring).

    k = the largest k >= 1 with P(Binomial(n, alpha) <= k - 1) <= 1 - confidence; threshold = just
    above the k-th largest OK score. With too few OK images for `alpha` (n < n_needed(alpha)), the
    threshold is just above the largest OK score and `alpha` is the strongest bound n images give.
    `ng_scores`, when given, only add the miss rate at that threshold to the record.

    >>> c = conformal(np.linspace(0, 1, 29)); c.k, round(c.threshold, 6), c.alpha
    (1, 1.0, 0.1)
    """
    from scipy.stats import binom

    s = np.sort(_check_scores(ok_scores, "OK scores"))[::-1]  # descending
    ng = _check_scores(ng_scores, "NG scores")
    a, d = check_alpha(alpha), _delta(confidence)
    n = int(s.size)
    if n == 0:
        raise ValueError("a conformal threshold needs held-out OK (normal) images: mark some queries OK, "
                         "or give a folder of good images")
    notes = []
    ks = np.arange(1, n + 1)
    ok_k = ks[binom.cdf(ks - 1, n, a) <= d]
    if ok_k.size:
        k = int(ok_k.max())
        a_eff = a
    else:  # too few images for this alpha: the maximum, with the best bound it supports
        k = 1
        a_eff = far_upper_bound(n, 0, confidence)
        notes.append(f"{n} OK images are too few for at most {_pct(a)} false alarms at {_pct(confidence)} "
                     f"confidence (that needs {n_needed(a, confidence)})")
    thr = float(np.nextafter(s[k - 1], np.inf))
    need, tail = _needed_text(n, confidence)
    which = "the largest" if k == 1 else f"the {k}{_ordinal(k)} largest"
    text = (f"Conformal threshold from {n} OK images ({which} OK score): at most {_pct(a_eff)} false alarms "
            f"with {_pct(confidence)} confidence (expected at most {_pct(k / (n + 1))}); {tail}.")
    if a_eff > a:
        text += f" For at most {_pct(a)}: {n_needed(a, confidence)} OK images ({n_needed(a, confidence) - n} more)."
    c = confusion(s, ng, thr) if ng.size else None
    if c is not None:
        text += f" On {ng.size} NG images: {c['tp']} caught, {c['fn']} missed."
    return Calibration(
        mode="conformal", threshold=thr, margin=default_margin(s) if margin is None else float(margin),
        n=n + int(ng.size), alpha=float(a_eff), confidence=float(confidence), text=text, n_ok=n, n_ng=int(ng.size),
        k=k, expected_false_alarm=k / (n + 1), needed_for_1pct=need,
        confusion=None if c is None else {x: c[x] for x in ("tp", "fp", "fn", "tn")},
        false_alarm_rate=(k - 1) / n, miss_rate=None if c is None else c["miss_rate"],
        recall=None if c is None else c["recall"], precision=None if c is None else c["precision"],
        notes=tuple(notes))


def _ordinal(k: int) -> str:
    return "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")


def _f1_max_threshold(ok: np.ndarray, ng: np.ndarray) -> float:
    """F1-max threshold, halfway between the chosen score and the next lower score (a margin both
    ways, as the batch report has always done)."""
    from sklearn.metrics import precision_recall_curve

    scores = np.concatenate([ok, ng])
    y = np.concatenate([np.zeros(ok.size, bool), np.ones(ng.size, bool)])
    p, r, t = precision_recall_curve(y, scores)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)[:-1]
    k = int(np.argmax(f1))
    below = scores[scores < t[k]]
    return float((t[k] + below.max()) / 2) if below.size else float(t[k])


def labelled(ok_scores: Sequence[float], ng_scores: Sequence[float], recall: float | None = None,
             confidence: float = 0.95, margin: float | None = None) -> Calibration:
    """F1-max threshold on labelled OK and NG scores, or (recall=r) the highest threshold that
    catches at least a fraction r of the NG images; with its confusion matrix on those images.

    >>> c = labelled([0.1, 0.2, 0.3], [0.6, 0.7]); round(c.threshold, 3), c.confusion
    (0.45, {'tp': 2, 'fp': 0, 'fn': 0, 'tn': 3})
    """
    ok, ng = _check_scores(ok_scores, "OK scores"), _check_scores(ng_scores, "NG scores")
    if ok.size == 0 or ng.size == 0:
        raise ValueError(f"a labelled threshold needs OK and NG images (have {ok.size} OK, {ng.size} NG)")
    if recall is None:
        thr = _f1_max_threshold(ok, ng)
        how = "F1-max threshold"
    else:
        r = float(recall)
        if not 0 < r <= 1:
            raise ValueError(f"recall must be in (0, 1], got {recall}")
        need = math.ceil(r * ng.size - 1e-9)
        ranked = np.sort(ng)[::-1]
        top = ranked[need - 1]  # the need-th highest NG score must be caught
        below = np.concatenate([ok, ng])
        below = below[below < top]
        thr = float((top + below.max()) / 2) if below.size else float(top)
        how = f"threshold for recall >= {_pct(r)}"
    c = confusion(ok, ng, thr)
    n_alarms = c["fp"]
    bound = far_upper_bound(ok.size, n_alarms, confidence)
    text = (f"{how.capitalize()} on {ok.size} OK and {ng.size} NG images: {c['tp']} of {ng.size} NG caught "
            f"(recall {_pct(c['recall'])}), {c['fp']} of {ok.size} OK flagged (false alarms {_pct(c['false_alarm_rate'])}), "
            f"precision {_pct(c['precision']) if c['tp'] + c['fp'] else '–'}. An estimate on these images, "
            f"optimistic with few of them; the OK images alone bound the false-alarm rate by {_pct(bound)} "
            f"at {_pct(confidence)} confidence.")
    return Calibration(
        mode="labelled", threshold=thr, margin=default_margin(ok) if margin is None else float(margin),
        n=int(ok.size + ng.size), alpha=bound, confidence=float(confidence), text=text, n_ok=int(ok.size),
        n_ng=int(ng.size), recall_target=None if recall is None else float(recall),
        confusion={x: c[x] for x in ("tp", "fp", "fn", "tn")}, precision=c["precision"], recall=c["recall"],
        f1=c["f1"], false_alarm_rate=c["false_alarm_rate"], miss_rate=c["miss_rate"],
        needed_for_1pct=n_needed(0.01, confidence))


def heuristic(normal_copy_scores: Sequence[float], anomalous_copy_scores: Sequence[float] = (),
              margin: float | None = None) -> Calibration:
    """The shots-only rule on scores of augmented shot copies: F1-max between anomalous and normal
    copies, or just above the highest normal copy when there are no anomalous copies. No guarantee.

    >>> heuristic([0.1, 0.3], []).threshold > 0.3
    True
    """
    ok = _check_scores(normal_copy_scores, "normal copy scores")
    ng = _check_scores(anomalous_copy_scores, "anomalous copy scores")
    if ok.size == 0:
        raise ValueError("the shots-only threshold is calibrated on augmented copies of the normal shots and "
                         "there are none: give a threshold (e.g. --threshold 0.5) or add a normal shot")
    if ng.size:
        thr = _f1_max_threshold(ok, ng)
        rule = "F1-max between augmented copies of the anomalous and the normal shots"
    else:
        thr = float(np.nextafter(ok.max(), np.inf))
        rule = "just above the highest score of an augmented copy of a normal shot"
    c = confusion(ok, ng, thr)
    text = (f"Heuristic threshold from the shots only ({rule}; {ok.size} normal and {ng.size} anomalous copies). "
            f"No guarantee: the copies are the shots themselves, distorted. Mark OK images (or give a folder "
            f"of good parts) for a threshold with a stated false-alarm rate: {n_needed(0.1)} for 10 %.")
    return Calibration(
        mode="heuristic", threshold=thr, margin=default_margin(ok) if margin is None else float(margin),
        n=int(ok.size + ng.size), alpha=None, confidence=None, text=text, n_ok=int(ok.size), n_ng=int(ng.size),
        confusion={x: c[x] for x in ("tp", "fp", "fn", "tn")}, false_alarm_rate=c["false_alarm_rate"],
        miss_rate=c["miss_rate"] if ng.size else None, notes=("heuristic",))


def manual(threshold: float, margin: float = 0.0, ok_scores: Sequence[float] = (), ng_scores: Sequence[float] = (),
           confidence: float = 0.95) -> Calibration:
    """A threshold the engineer typed (or dragged), with the rates it implies on labelled images."""
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"the threshold must be a finite number, got {threshold}")
    ok, ng = _check_scores(ok_scores, "OK scores"), _check_scores(ng_scores, "NG scores")
    c = confusion(ok, ng, t)
    parts = [f"Threshold {t:.4g} set by hand."]
    bound = None
    if ok.size:
        bound = far_upper_bound(ok.size, c["fp"], confidence)
        parts.append(f"{c['fp']} of {ok.size} OK images flagged; false alarms at most {_pct(bound)} at "
                     f"{_pct(confidence)} confidence.")
    if ng.size:
        parts.append(f"{c['fn']} of {ng.size} NG images missed.")
    return Calibration(mode="manual", threshold=t, margin=max(0.0, float(margin)), n=int(ok.size + ng.size),
                       alpha=bound, confidence=float(confidence) if ok.size else None, text=" ".join(parts),
                       n_ok=int(ok.size), n_ng=int(ng.size), confusion={x: c[x] for x in ("tp", "fp", "fn", "tn")},
                       false_alarm_rate=c["false_alarm_rate"] if ok.size else None,
                       miss_rate=c["miss_rate"] if ng.size else None)


def calibrate(ok_scores: Sequence[float] = (), ng_scores: Sequence[float] = (), *, mode: str = "auto",
              alpha: float = 0.1, confidence: float = 0.95, recall: float | None = None,
              margin: float | None = None) -> Calibration:
    """The calibration for what there is (scores of held-out / labelled images; higher = anomalous).

    mode "auto": conformal when the OK images are enough for `alpha` at `confidence` (the one
    guarantee that can be defended), else labelled when there are OK and NG images (or when a
    `recall` is asked for), else conformal with the strongest bound the OK images give. Without any
    OK image use `heuristic` (shot copies) or `calibrate_engine`.
    """
    ok, ng = _check_scores(ok_scores, "OK scores"), _check_scores(ng_scores, "NG scores")
    if mode == "auto":
        if ok.size and ng.size and (recall is not None or ok.size < n_needed(alpha, confidence)):
            mode = "labelled"
        elif ok.size:
            mode = "conformal"
        else:
            raise ValueError("nothing to calibrate on: give OK (normal) images, or OK and NG images, "
                             "or calibrate on the shots (heuristic)")
    if mode == "conformal":
        return conformal(ok, alpha, confidence, ng_scores=ng, margin=margin)
    if mode == "labelled":
        return labelled(ok, ng, recall=recall, confidence=confidence, margin=margin)
    raise ValueError(f"mode must be auto, conformal or labelled here (heuristic needs the shots: "
                     f"calibrate_engine), got {mode!r}")


# -- engine level: the one place that scores images for a calibration --------------------------------
def aggregate_scores(engine, images: Iterable, weights=None) -> list[float]:
    """Aggregate image scores of `images` (anything `Engine.score` takes) under `weights` (anything
    `Result.aggregate` takes: None, a preset name, a mapping, a `WeightSet`)."""
    return [float(engine.score(img).aggregate(weights).score) for img in images]


def shot_copy_scores(engine, weights=None, images: Mapping[str, object] | None = None,
                     m: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(normal copy scores, anomalous copy scores): the aggregate score, under the weight set's own
    score rule, of m augmented copies of every shot (`fsad_core.tuning.validation_set`,
    leave-one-shot-out where possible). weights: a `WeightSet`, a preset name, a mapping or None."""
    from .aggregate import resolve_weights
    from .tuning import validation_set

    if not any(s.kind == "normal" for s in engine.shots):
        raise ValueError("an automatic threshold is calibrated on augmented copies of the normal shots, and these "
                         "shots are all anomalous: give a threshold (--threshold T, an aggregate score, e.g. 0.5) "
                         "or add a normal shot")
    wset = resolve_weights(weights, list(engine.component_names), strict=False)
    vs = validation_set(engine, m=m, seed=seed, images=images, require_anomalous=False, aggregate=wset)
    agg = np.asarray(vs.aggregate, np.float64)
    y = vs.labels.astype(bool)
    return agg[~y], agg[y]


def calibrate_engine(engine, ok_images: Iterable = (), ng_images: Iterable = (), *,
                     weights=None, mode: str = "auto", alpha: float = 0.1,
                     confidence: float = 0.95, recall: float | None = None, margin: float | None = None,
                     shot_images: Mapping[str, object] | None = None, m: int = 5, seed: int = 0,
                     ok_scores: Sequence[float] = (), ng_scores: Sequence[float] = ()) -> Calibration:
    """Score held-out OK / NG images with `engine` and calibrate (`calibrate`); with none (or
    mode="heuristic"), the shots-only heuristic on augmented copies of the engine's shots.

    ok_scores / ng_scores: aggregate scores already computed (e.g. stored with review labels), used
    together with the images. weights: as `Result.aggregate` takes them (None = the paper preset).
    """
    ok = list(ok_scores) + aggregate_scores(engine, ok_images, weights)
    ng = list(ng_scores) + aggregate_scores(engine, ng_images, weights)
    if mode == "heuristic" or (mode == "auto" and not ok):
        normal, anomalous = shot_copy_scores(engine, weights, images=shot_images, m=m, seed=seed)
        cal = heuristic(normal, anomalous, margin=margin)
        if ng:
            cal = _with_rates(cal, ok, ng)
    elif mode == "manual":
        raise ValueError("a manual threshold is typed, not calibrated: use fsad_core.calibration.manual")
    else:
        cal = calibrate(ok, ng, mode=mode, alpha=alpha, confidence=confidence, recall=recall, margin=margin)
    from dataclasses import replace

    return replace(cal, weights=_weights_record(weights))


def _weights_record(weights) -> dict | None:
    """The weights a calibration was made for, JSON-ready (a WeightSet's own dict, a mapping, a name)."""
    if weights is None:
        return None
    if hasattr(weights, "to_dict"):
        return weights.to_dict()
    if isinstance(weights, str):
        return {"name": weights}
    return {k: float(v) for k, v in weights.items()}


def _with_rates(cal: Calibration, ok: Sequence[float], ng: Sequence[float]) -> Calibration:
    from dataclasses import replace

    c = confusion(ok, ng, cal.threshold)
    return replace(cal, text=cal.text + f" On {len(ng)} NG images given: {c['fn']} missed.", miss_rate=c["miss_rate"])
