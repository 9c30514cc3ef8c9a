"""Speed and memory of radsight-cxr against a DenseNet-121 peer, same input, same run.

Both models run in ONNX Runtime on one thread. Per image: decode the file, preprocess (the
platform's numpy path), infer; radsight-cxr also runs its TB head (numpy) and turns its
maps into regions. The peer is the torchxrayvision architecture (DenseNet-121, 1 grey
channel, 224 px, 18 outputs) with random weights, built in plain torch and exported once to
``bench/out/densenet121.onnx`` by a subprocess, so this process never imports torch and its
peak memory is the worker's.

    python bench/bench_cxr.py [--images 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
CXR_ONNX = REPO / "src" / "radsight" / "algorithms" / "cxr" / "cxr.onnx"
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or REPO / ".." / "shared" / "data").resolve()

DENSENET_EXPORT = r"""
import sys, torch
from torch import nn
import torch.nn.functional as F

class Layer(nn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.n1, self.c1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.n2 = nn.BatchNorm2d(bn_size * growth)
        self.c2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)
    def forward(self, x):
        y = self.c1(F.relu(self.n1(x)))
        return torch.cat([x, self.c2(F.relu(self.n2(y)))], 1)

class DenseNet121(nn.Module):
    def __init__(self, blocks=(6, 12, 24, 16), growth=32, init=64, classes=18):
        super().__init__()
        mods = [nn.Conv2d(1, init, 7, 2, 3, bias=False), nn.BatchNorm2d(init), nn.ReLU(True),
                nn.MaxPool2d(3, 2, 1)]
        c = init
        for i, n in enumerate(blocks):
            for _ in range(n):
                mods.append(Layer(c, growth))
                c += growth
            if i < len(blocks) - 1:
                mods += [nn.BatchNorm2d(c), nn.ReLU(True), nn.Conv2d(c, c // 2, 1, bias=False),
                         nn.AvgPool2d(2, 2)]
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU(True)]
        self.features = nn.Sequential(*mods)
        self.classifier = nn.Linear(c, classes)
    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))

torch.manual_seed(0)
m = DenseNet121().eval()
print(sum(p.numel() for p in m.parameters()))
torch.onnx.export(m, (torch.zeros(1, 1, 224, 224),), sys.argv[1], input_names=["image"],
                  output_names=["logits"], opset_version=17, dynamo=False)
"""


def build_densenet(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", DENSENET_EXPORT, str(path)], check=True)


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sorted((DATA / "cxr" / "covid-qu-ex-adult" / "images" / "test").glob("*/*.png"))
    native = sorted((DATA / "cxr" / "kermany-pediatric-pneumonia-224" / "val_native").glob("*/*"))
    if not files:
        print(f"no chest radiographs under {DATA}; set RADSIGHT_SHARED_DATA", file=sys.stderr)
        return 2
    files = files[:: max(1, len(files) // args.images)][: args.images]
    densenet_path = OUT / "densenet121.onnx"
    build_densenet(densenet_path)

    import onnxruntime as ort

    from radsight.algorithms.contract import ImageInput
    from radsight.algorithms.cxr import predict_image
    from radsight.algorithms.cxr.preprocess import preprocess

    def radsight_once(path: Path) -> None:
        image = ImageInput("1", "1", "1", "1", decode(path), modality="DX")
        predict_image(image)

    peer: ort.InferenceSession

    def densenet_once(path: Path) -> None:
        canvas, _ = preprocess(decode(path), 224)
        peer.run(None, {"image": canvas[None, None]})

    def timed(fn, paths) -> list[float]:
        fn(paths[0])  # warm-up: session creation and first-run allocations
        out = []
        for _ in range(args.repeats):
            for p in paths:
                t0 = time.perf_counter()
                fn(p)
                out.append((time.perf_counter() - t0) * 1000)
        return out

    rs = timed(radsight_once, files)
    rs_native = timed(radsight_once, native) if native else []
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    peer = ort.InferenceSession(str(densenet_path), options, providers=["CPUExecutionProvider"])
    dn = timed(densenet_once, files)
    dn_native = timed(densenet_once, native) if native else []
    print(
        f"images: {len(files)} x {args.repeats} (256 px PNG), {len(native)} x {args.repeats} "
        f"native JPEG (up to 1776 px); ONNX Runtime {ort.__version__}, 1 thread"
    )
    print(
        f"model file: radsight-cxr {CXR_ONNX.stat().st_size / 2**20:.2f} MiB, "
        f"densenet-121 {densenet_path.stat().st_size / 2**20:.2f} MiB"
    )
    for label, a, b in (("256 px PNG", rs, dn), ("native JPEG", rs_native, dn_native)):
        if not a:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{label}: radsight-cxr median {ma:.1f} ms (p95 {np.percentile(a, 95):.1f}), "
            f"densenet-121 median {mb:.1f} ms (p95 {np.percentile(b, 95):.1f}), "
            f"ratio {mb / ma:.1f}x"
        )
    print(
        f"peak RSS of this process after the radsight-cxr runs (before the peer ran): "
        f"{rss_mib:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
