"""A small deterministic algorithm for tests and the demo: it marks the brightest region.

It is not a medical device and finds nothing clinical. It exists so that the whole
pipeline (routing, jobs, SR, SC, delivery) can be exercised with a result that is known in
advance: the probability is a fixed function of how much the brightest 1/8-size block
stands out from the image, and the region is that block.
"""

from __future__ import annotations

import numpy as np

from radsight.algorithms.contract import (
    Algorithm,
    Analysis,
    Code,
    Finding,
    FindingSpec,
    NotAnalysable,
    Region,
    StudyInput,
)

BRIGHT_REGION = Code("RS-BRIGHT", "99RADSIGHT", "Bright region (test finding)")


class BrightRegionAlgorithm(Algorithm):
    name = "radsight-bright-region"
    version = "1.0.0"
    study_types = ("cxr", "flg", "mmg", "ct-chest", "ct-brain")
    findings = (FindingSpec("bright-region", BRIGHT_REGION, threshold=0.5),)
    study_threshold = 0.5
    time_limit_s = 60.0
    description = "Deterministic test algorithm: marks the brightest block of each image."

    def check(self, study: StudyInput) -> None:
        if not study.images:
            raise NotAnalysable("the study has no images with pixel data")
        for image in study.images:
            if min(image.pixels.shape) < 16:
                raise NotAnalysable(f"image {image.sop_instance_uid} is smaller than 16 pixels")
            if float(np.ptp(image.pixels)) == 0.0:
                raise NotAnalysable(f"image {image.sop_instance_uid} is blank (one value)")

    def analyse(self, study: StudyInput) -> Analysis:
        best_p = 0.0
        regions = []
        for image in study.images:
            p, region = _brightest_block(image.pixels, image.sop_instance_uid, image.frame_number)
            regions.append((p, region))
            best_p = max(best_p, p)
        marked = tuple(r for p, r in regions if p >= 0.5) or tuple(
            r for p, r in regions if p == best_p
        )
        return Analysis(findings=(Finding("bright-region", best_p, marked),), study_score=best_p)


def _brightest_block(
    pixels: np.ndarray, sop_instance_uid: str, frame_number: int | None
) -> tuple[float, Region]:
    img = pixels.astype(np.float64)
    rows, cols = img.shape
    bh, bw = max(rows // 8, 1), max(cols // 8, 1)
    # block means on a grid of half-block steps
    best = (-np.inf, 0, 0)
    for y in range(0, rows - bh + 1, max(bh // 2, 1)):
        for x in range(0, cols - bw + 1, max(bw // 2, 1)):
            m = img[y : y + bh, x : x + bw].mean()
            if m > best[0]:
                best = (m, y, x)
    mean, std = img.mean(), img.std() or 1.0
    contrast = (best[0] - mean) / std
    probability = float(1.0 / (1.0 + np.exp(-(contrast - 1.2) * 2.5)))
    _, y, x = best
    region = Region.box(sop_instance_uid, x, y, x + bw, y + bh, frame_number)
    return round(probability, 6), region
