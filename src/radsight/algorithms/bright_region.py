"""A small deterministic algorithm for tests and the demo: it marks the brightest region.

It is not a medical device and finds nothing clinical. It exists so that the whole
pipeline (routing, jobs, SR, SC, delivery) can be exercised with a result that is known in
advance: the probability is a fixed function of how much a 1/8-size block stands out from
the blocks around it and from the image as a whole, and the region is that block. Each
image gives one candidate region with its own probability; the finding's is the highest.
"""

from __future__ import annotations

from pathlib import Path

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
from radsight.algorithms.evidence import load_evidence

#: its shipped evidence: ``python -m radsight_train evidence radsight-bright-region
#: --synthetic 400 --out <this file>``
EVIDENCE = Path(__file__).with_name("bright_region.evidence.json")
BRIGHT_REGION = Code("RS-BRIGHT", "99RADSIGHT", "Bright region (test finding)")


class BrightRegionAlgorithm(Algorithm):
    name = "radsight-bright-region"
    version = "1.0.0"
    study_types = ("cxr", "flg", "mmg", "ct-chest", "ct-brain")
    findings = (FindingSpec("bright-region", BRIGHT_REGION, threshold=0.5),)
    study_threshold = 0.5
    time_limit_s = 60.0
    description = "Deterministic test algorithm: marks the brightest block of each image."

    def shipped_evidence(self) -> dict | None:
        """A calibration test on 400 synthetic studies (the domain it is a test for)."""
        return load_evidence(EVIDENCE, self.name, self.version)

    def check(self, study: StudyInput) -> None:
        if not study.images:
            raise NotAnalysable("the study has no images with pixel data")
        for image in study.images:
            if min(image.pixels.shape) < 16:
                raise NotAnalysable(f"image {image.sop_instance_uid} is smaller than 16 pixels")
            if float(np.ptp(image.pixels)) == 0.0:
                raise NotAnalysable(f"image {image.sop_instance_uid} is blank (one value)")

    def analyse(self, study: StudyInput) -> Analysis:
        # one candidate per image (its brightest block, with that image's probability);
        # the platform marks those at the operating point in force
        regions = tuple(
            _brightest_block(image.pixels, image.sop_instance_uid, image.frame_number)
            for image in study.images
        )
        best_p = max((r.probability or 0.0 for r in regions), default=0.0)
        return Analysis(findings=(Finding("bright-region", best_p, regions),), study_score=best_p)


def _brightest_block(pixels: np.ndarray, sop_instance_uid: str, frame_number: int | None) -> Region:
    """The block that stands out most from the blocks around it (a local contrast), with
    its probability."""
    img = pixels.astype(np.float64)
    rows, cols = img.shape
    bh, bw = max(rows // 8, 1), max(cols // 8, 1)
    sy, sx = max(bh // 2, 1), max(bw // 2, 1)
    ys = list(range(0, rows - bh + 1, sy))
    xs = list(range(0, cols - bw + 1, sx))
    means = np.array([[img[y : y + bh, x : x + bw].mean() for x in xs] for y in ys])
    padded = np.pad(means, 2, mode="edge")
    # the ring of blocks one block-width away (two half-block steps) in 8 directions
    ring = np.mean(
        [
            padded[2 + dy : 2 + dy + len(ys), 2 + dx : 2 + dx + len(xs)]
            for dy in (-2, 0, 2)
            for dx in (-2, 0, 2)
            if (dy, dx) != (0, 0)
        ],
        axis=0,
    )
    # stand out from the neighbours and from the image as a whole
    contrast = np.minimum(means - ring, means - img.mean()) / (img.std() or 1.0)
    iy, ix = np.unravel_index(int(np.argmax(contrast)), contrast.shape)
    probability = float(1.0 / (1.0 + np.exp(-(contrast[iy, ix] - 0.8) * 5.0)))
    y, x = ys[iy], xs[ix]
    return Region.box(
        sop_instance_uid, x, y, x + bw, y + bh, frame_number, probability=round(probability, 6)
    )
