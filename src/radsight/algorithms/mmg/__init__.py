"""Built-in mammography algorithm (docs/models/mmg.md).

A screening study has four views: left and right breast, CC and MLO. Each image's
laterality and view are read from its header (:mod:`radsight.algorithms.mmg.views`). Each
image is prepared (:mod:`radsight.algorithms.mmg.preprocess`: breast found, chest wall put
on the left) and run through ``mmg.onnx``, a fixed difference-of-Gaussian filter bank that
gives blob features and response maps; logistic regressions in ``mmg.json`` (fitted by
``python -m radsight_train mmg``) turn the image's features and their difference to the
other breast (same view) into probabilities:

- per image: a suspicion probability (head ``abnormal``) and one per kind of finding
  (mass, calcification cluster, architectural distortion / asymmetry), with up to three
  marks (CIRCLE SCOORD): the mark candidates of :mod:`radsight.algorithms.mmg.features`
  (blob and density maxima on a 512-px canvas) ranked by the ranker in ``mmg.json``, which
  compares each with the same place in the other breast; without a ranker (or a
  candidate) the strongest blob responses of the filter bank;
- per breast: the highest image probability over that breast's views (findings
  ``suspicion-left`` and ``suspicion-right``); the candidate regions are each view's top
  mark with that view's probability, and for each kind each image's top mark with the
  image's probability of that kind (one per finding and image); the platform marks those
  at the operating point in force (:mod:`radsight.operating_points`);
- per study: the highest breast probability (the worklist score and verdict).

Input checks refuse, with a reason, what the model cannot read: not MG, for-processing
(raw detector) images, tomosynthesis, unknown laterality or view, unusable pixels, no breast
in the image. Images of the study that pass are still read when others are refused.

Measured accuracy is modest (image AUROC 0.65 and the top mark on the lesion in 43 % of
abnormal images, in patient-pair cross-validation on mini-MIAS film mammograms): read the
model card before relying on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radsight.algorithms.checks import grey_frame_problem, usable_images
from radsight.algorithms.contract import (
    Algorithm,
    Analysis,
    Code,
    Finding,
    FindingSpec,
    ImageInput,
    NotAnalysable,
    Region,
    StudyInput,
)
from radsight.algorithms.evidence import load_evidence
from radsight.algorithms.mmg.features import (
    CANDIDATE_FEATURES,
    Breast,
    analyse_breast,
    candidates,
)
from radsight.algorithms.mmg.preprocess import BreastFrame, prepare_with_breast
from radsight.algorithms.mmg.views import (
    TOMOSYNTHESIS_SOP_CLASSES,
    VIEWS,
    laterality,
    presentation_intent,
    view,
)
from radsight.algorithms.onnx import load_session

__all__ = [
    "CALCIFICATION",
    "DISTORTION",
    "MASS",
    "ImagePrediction",
    "MammographyAlgorithm",
    "check_image",
    "predict_image",
    "predict_images",
    "ranked_marks",
]

MODEL_DIR = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((MODEL_DIR / "mmg.json").read_text())

MASS = Code("4147007", "SCT", "Mass")
CALCIFICATION = Code("129769006", "SCT", "Calcification Cluster")
DISTORTION = Code("129792006", "SCT", "Architectural distortion of breast")
SUSPICION_LEFT = Code("RS-MMG-L", "99RADSIGHT", "Suspicious abnormality, left breast")
SUSPICION_RIGHT = Code("RS-MMG-R", "99RADSIGHT", "Suspicious abnormality, right breast")
KIND_CODES = {"mass": MASS, "calcification": CALCIFICATION, "distortion-asymmetry": DISTORTION}

MIN_SIDE = 256
BREAST_BODY_PARTS = frozenset({"BREAST", "MAMMA", "MAMMO"})
#: share of the image the breast must cover: less is a marker, a phantom or an empty field
MIN_BREAST_FRACTION = 0.05


def _get_session(model_path: Path) -> Any:
    """The ONNX Runtime session of ``model_path`` (one per process, one thread)."""
    return load_session(model_path)


def check_image(image: ImageInput) -> str | None:
    """The reason this image cannot be analysed, or None if it can."""
    uid = image.sop_instance_uid
    modality = (image.modality or "").upper()
    if modality != "MG":
        return f"image {uid}: modality {modality or 'missing'} is not mammography (MG expected)"
    body_part = (image.body_part_examined or "").strip().upper()
    if body_part and body_part not in BREAST_BODY_PARTS:
        return f"image {uid}: body part examined is {body_part}, not the breast"
    if image.sop_class_uid in TOMOSYNTHESIS_SOP_CLASSES:
        return f"image {uid} is breast tomosynthesis; the model reads 2-D mammograms only"
    if presentation_intent(image.sop_class_uid, image.attributes) == "FOR PROCESSING":
        return (
            f"image {uid} is a FOR PROCESSING (raw detector) image; send the FOR "
            "PRESENTATION image the unit makes from it"
        )
    side = laterality(image.image_laterality, image.attributes)
    if side not in ("L", "R"):
        what = "both breasts (B)" if side == "B" else "missing"
        return f"image {uid}: laterality is {what}; one breast per image (L or R) is needed"
    v = view(image.view_position, image.attributes)
    # no view at all (digitised film often has none) is read as "view unknown"; a view that
    # is named and is not a mammography view (a calibration projection) is refused
    if v and v not in VIEWS:
        return f"image {uid}: view {v} is not a mammography view (CC, MLO, ...)"
    return grey_frame_problem(image, MIN_SIDE)


@dataclass(frozen=True)
class Mark:
    #: the filter scale that found it (canvas pixels)
    sigma: float
    #: for ordering: the mark ranker's score (logit), or without a ranker the blob response
    response: float
    #: centre (column, row) and radius in source pixels
    x: float
    y: float
    radius: float

    def region(self, image: ImageInput, probability: float | None = None) -> Region:
        """The mark as a circle on ``image``; ``probability`` is that view's own (the
        finding's is the highest over the breast's or the study's views)."""
        return Region(
            image.sop_instance_uid,
            "CIRCLE",
            ((self.x, self.y), (self.x + self.radius, self.y)),
            image.frame_number,
            probability,
        )


@dataclass(frozen=True)
class ImageFeatures:
    """What the ONNX model says about one image, before the contralateral comparison."""

    image: ImageInput
    laterality: str
    view: str
    features: np.ndarray
    #: blob marks per scale group, strongest first: "all", "mass", "calcification" (the
    #: fallback when there is no mark ranker or no candidate)
    marks: dict[str, tuple[Mark, ...]]
    frame: BreastFrame
    breast_fraction: float
    #: the 512-px analysis for the ranked marks (:mod:`radsight.algorithms.mmg.features`)
    breast: Breast | None = None


@dataclass(frozen=True)
class ImagePrediction:
    """One image's probabilities (with its contralateral breast) and marks."""

    laterality: str
    view: str
    #: suspicion probability of the image (the ``abnormal`` head)
    probability: float
    #: per kind (mass, calcification, distortion-asymmetry): its head's probability
    kinds: dict[str, float]
    #: marks per kind, best first
    marks: dict[str, tuple[Mark, ...]]
    frame: BreastFrame
    breast_fraction: float

    @property
    def top_mark(self) -> Mark | None:
        return self.marks["all"][0] if self.marks.get("all") else None


#: which filter scales each kind's marks come from (indices into CONFIG["sigmas"])
_MARK_SCALES = {"all": (0, 1, 2, 3), "mass": (2, 3), "calcification": (0,)}
_KIND_MARKS = {"mass": "mass", "calcification": "calcification", "distortion-asymmetry": "all"}


def _marks(maps: np.ndarray, frame: BreastFrame, scales: tuple[int, ...]) -> tuple[Mark, ...]:
    """Strongest blob responses (non-maximum suppression on the 1/4 maps) as source circles."""
    size = CONFIG["input"]["size"]
    rc = CONFIG["region"]
    sigmas = CONFIG["sigmas"]
    chosen = maps[list(scales)]
    best = chosen.max(axis=0)
    scale_of = np.asarray(scales)[chosen.argmax(axis=0)]
    cell = size / best.shape[-1]
    rows, cols = np.mgrid[0 : best.shape[0], 0 : best.shape[1]]
    work = best.copy()
    out: list[Mark] = []
    top = float(best.max())
    for _ in range(rc["max_regions"]):
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        value = float(work[r, c])
        if value <= 0 or (out and value < rc["relative_level"] * top):
            break
        sigma = float(sigmas[int(scale_of[r, c])])
        radius = rc["radius_per_sigma"] * sigma
        x, y = frame.to_source((c + 0.5) * cell, (r + 0.5) * cell)
        out.append(Mark(sigma, value, float(x), float(y), float(radius * frame.scale())))
        work[(rows - r) ** 2 + (cols - c) ** 2 <= (2 * radius / cell + 1) ** 2] = -np.inf
    return tuple(out)


def image_features(image: ImageInput) -> ImageFeatures:
    """Preprocess one image and run the ONNX model: features and candidate marks."""
    size = CONFIG["input"]["size"]
    pixels = image.pixels
    canvas, breast, frame = prepare_with_breast(
        pixels, size, CONFIG["input"]["percentile_low"], CONFIG["input"]["percentile_high"]
    )
    features, maps = _get_session(MODEL_DIR / CONFIG["model"]).run(
        None, {"image": canvas[None, None], "breast": breast[None, None]}
    )
    maps = maps[0].astype(np.float64)
    return ImageFeatures(
        image=image,
        laterality=laterality(image.image_laterality, image.attributes),
        view=view(image.view_position, image.attributes),
        features=features[0].astype(np.float64),
        marks={group: _marks(maps, frame, scales) for group, scales in _MARK_SCALES.items()},
        frame=frame,
        breast_fraction=frame.breast_fraction,
        breast=analyse_breast(pixels) if frame.breast_fraction >= MIN_BREAST_FRACTION else None,
    )


#: views that show the pectoral muscle in the upper chest-wall corner, as the MLO views the
#: mark ranker was fitted on do
PECTORAL_VIEWS = frozenset({"MLO", "ML", "LM", "LMO"})
#: the ranker's position term that only means something on those views
MLO_POSITION_COLUMNS = [CANDIDATE_FEATURES.index(name) for name in ("top_chest_wall_corner",)]


def ranked_marks(
    own: ImageFeatures, other: ImageFeatures, ranker: dict[str, Any]
) -> tuple[Mark, ...]:
    """The image's mark candidates ranked by the ranker (a logistic regression over
    ``features.CANDIDATE_FEATURES``, with the other breast's image), best first."""
    breast = own.breast
    if breast is None or not breast.candidates:
        return ()
    rows = candidates(breast, other.breast if other is not own else None)
    mean = np.array(ranker["mean"])
    if own.view not in PECTORAL_VIEWS:
        # the ranker learnt where lesions lie on MLO views (the pectoral muscle fills the
        # upper chest-wall corner); on a CC view that corner is breast tissue: the corner
        # term is set to its training mean (no effect)
        rows[:, MLO_POSITION_COLUMNS] = mean[MLO_POSITION_COLUMNS]
    z = ((rows - mean) / np.array(ranker["scale"])) @ np.array(ranker["coef"]) + float(
        ranker["intercept"]
    )
    scale = breast.frame.scale()
    out = []
    for j in np.argsort(-z, kind="stable")[: CONFIG["region"]["max_regions"]]:
        cand = breast.candidates[int(j)]
        x, y = breast.to_source(cand.x, cand.y)
        out.append(Mark(cand.sigma, float(z[j]), x, y, float(cand.radius * scale)))
    return tuple(out)


def _head(name: str, x: np.ndarray, heads: dict[str, Any]) -> float:
    h = heads[name]
    z = float(((x - np.array(h["mean"])) / np.array(h["scale"])) @ np.array(h["coef"]))
    return float(1.0 / (1.0 + np.exp(-(z + h["intercept"]))))


def contralateral(own: ImageFeatures, others: list[ImageFeatures]) -> ImageFeatures:
    """The other breast's image to compare with: the same view if there is one, else any
    view of the other breast, else the image itself (no comparison: differences 0)."""
    other = [o for o in others if o.laterality != own.laterality]
    same_view = [o for o in other if o.view == own.view]
    return (same_view or other or [own])[0]


def predict_images(
    images: list[ImageInput], heads: dict[str, Any] | None = None
) -> list[tuple[ImageInput, ImagePrediction]]:
    """Probabilities and marks for images of one study (compared with the other breast)."""
    heads = heads or CONFIG["heads"]
    feats = [image_features(image) for image in images]
    cols = [CONFIG["outputs"]["features"].index(name) for name in CONFIG["design"]]
    out = []
    # an image with no breast in it is refused later: it cannot stand for the other breast
    with_breast = [f for f in feats if f.breast_fraction >= MIN_BREAST_FRACTION]
    for f in feats:
        other = contralateral(f, with_breast)
        x = np.r_[f.features[cols], f.features[cols] - other.features[cols]]
        kinds = {kind: round(_head(kind, x, heads), 6) for kind in CONFIG["kinds"]}
        marks = {"all": f.marks["all"]} | {k: f.marks[_KIND_MARKS[k]] for k in CONFIG["kinds"]}
        ranked = ranked_marks(f, other, heads["ranker"]) if "ranker" in heads else ()
        if ranked:
            # one ranked list serves every kind: the ranker was fitted on all lesion classes
            marks = {"all": ranked} | {k: ranked for k in CONFIG["kinds"]}
        prediction = ImagePrediction(
            laterality=f.laterality,
            view=f.view,
            probability=round(_head("abnormal", x, heads), 6),
            kinds=kinds,
            marks=marks,
            frame=f.frame,
            breast_fraction=f.breast_fraction,
        )
        out.append((f.image, prediction))
    return out


def predict_image(image: ImageInput) -> ImagePrediction:
    """One image on its own (no other breast to compare with)."""
    return predict_images([image])[0][1]


class MammographyAlgorithm(Algorithm):
    """Screening mammography: suspicion per breast and per study, lesions marked as circles."""

    name = "radsight-mmg"
    version = "1.1.0"
    study_types: tuple[str, ...] = ("mmg",)
    time_limit_s = 60.0
    description = (
        "Blob filter bank + bilateral logistic regressions: suspicion per breast and study, "
        "mass, calcification cluster, distortion / asymmetry on 2-D for-presentation "
        "mammograms, marked as circles ranked by a candidate regression. Weak baseline "
        "(mini-MIAS film, AUROC 0.65, top mark on the lesion 43 %): see docs/models/mmg.md. "
        "Not a diagnosis."
    )

    def shipped_evidence(self) -> dict | None:
        """The model card's cross-validated figures (docs/models/mmg.md)."""
        return load_evidence(Path(__file__).with_name("evidence.json"), self.name, self.version)

    def __init__(self, heads: dict[str, Any] | None = None) -> None:
        t = CONFIG["thresholds"]
        #: logistic heads (default: the shipped ones in mmg.json; evaluation passes a fold's)
        self.heads = heads
        self.study_threshold = float(t["study"])
        self.findings = (
            FindingSpec("suspicion-left", SUSPICION_LEFT, threshold=self.study_threshold),
            FindingSpec("suspicion-right", SUSPICION_RIGHT, threshold=self.study_threshold),
            *(FindingSpec(k, KIND_CODES[k], threshold=float(t[k])) for k in CONFIG["kinds"]),
        )

    def _analysable(self, study: StudyInput) -> list[ImageInput]:
        return usable_images(study, check_image)

    def check(self, study: StudyInput) -> None:
        self._analysable(study)

    def predictions(self, study: StudyInput) -> list[tuple[ImageInput, ImagePrediction]]:
        """Each usable image with its prediction (images with no breast found are dropped)."""
        out, reasons = [], []
        for image, prediction in predict_images(self._analysable(study), self.heads):
            if prediction.breast_fraction < MIN_BREAST_FRACTION:
                reasons.append(
                    f"image {image.sop_instance_uid}: no breast found "
                    f"({prediction.breast_fraction:.0%} of the image)"
                )
                continue
            out.append((image, prediction))
        if not out:
            raise NotAnalysable("; ".join(reasons))
        return out

    def analyse(self, study: StudyInput) -> Analysis:
        predictions = self.predictions(study)
        findings = []
        breast_scores = {}
        for side, key in (("L", "suspicion-left"), ("R", "suspicion-right")):
            mine = [(im, p) for im, p in predictions if p.laterality == side]
            if not mine:
                continue
            score = max(p.probability for _, p in mine)
            breast_scores[side] = score
            # each view's top mark with that view's probability: the platform marks the
            # views at the operating point in force
            regions = tuple(
                p.top_mark.region(im, p.probability) for im, p in mine if p.top_mark is not None
            )
            findings.append(Finding(key, round(score, 6), regions))
        for spec in self.findings[2:]:
            score = max(p.kinds[spec.key] for _, p in predictions)
            regions = tuple(
                m.region(im, p.kinds[spec.key])
                for im, p in predictions
                # the kind's top mark only: the SC draws and labels every marked region,
                # and one per kind and image keeps the capture readable (and fast)
                for m in p.marks[spec.key][:1]
            )
            findings.append(Finding(spec.key, round(score, 6), regions))
        return Analysis(findings=tuple(findings), study_score=round(max(breast_scores.values()), 6))
