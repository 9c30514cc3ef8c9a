"""Export torchxrayvision DenseNet-121 weights as a Radsight model directory (ONNX + JSON).

``python -m radsight_train export-xrv --weights densenet121-res224-all --out DIR`` downloads
the named weights (or reads ``--weights-file``), loads them into a DenseNet-121, exports it
to ``DIR/xrv.onnx`` and writes ``DIR/xrv.json`` (pathologies, operating points, the
torchxrayvision preprocessing). :class:`radsight.algorithms.xrv.TorchXRayVisionAlgorithm`
then runs that directory with ONNX Runtime only.

torchxrayvision (Cohen et al., MIDL 2022; Apache-2.0; github.com/mlmed/torchxrayvision) is
used when it is importable: its own ``get_weights`` downloads into its own cache
(``~/.torchxrayvision/models_data``). It needs torchvision, so without it this module
downloads the same URLs into the same cache itself, and reads the weights with a plain
torch DenseNet-121 whose parameter names are torchxrayvision's.

Only the DenseNet-121 weights (224 px, 18 outputs) are supported; the 512-px ResNet-50
weights and the baseline models are not.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: torchxrayvision's ``datasets.default_pathologies``: the order of the 18 outputs
PATHOLOGIES = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)
RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_SUFFIX = "densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
_N = None
#: torchxrayvision 1.5.7 ``models.model_urls``: weights file and per-output operating
#: thresholds; an output with no threshold is one those weights were not trained for
CATALOGUE: dict[str, tuple[str, tuple[float | None, ...]]] = {
    "densenet121-res224-all": (
        f"nih-pc-chex-mimic_ch-google-openi-kaggle-{_SUFFIX}",
        (0.07422872, 0.038290843, 0.09814756, 0.0098118475, 0.023601074, 0.0022490358,
         0.010060724, 0.103246614, 0.056810737, 0.026791653, 0.050318155, 0.023985857,
         0.01939503, 0.042889766, 0.053369623, 0.035975814, 0.20204692, 0.05015312),
    ),
    "densenet121-res224-nih": (
        f"nih-{_SUFFIX}",
        (0.039117552, 0.0034529066, 0.11396341, 0.0057298196, 0.00045666535, 0.0018880932,
         0.012037827, 0.038744126, 0.0037213727, 0.014730946, 0.016149804, 0.054241467,
         0.037198864, 0.0004403434, _N, _N, _N, _N),
    ),
    "densenet121-res224-pc": (
        f"pc-{_SUFFIX}",
        (0.031012505, 0.013347598, 0.081435576, 0.001262615, 0.002587246, 0.0035944257,
         0.0023071, 0.055412333, 0.044385884, 0.042766232, 0.043258056, 0.037629247,
         0.005658899, 0.0091741895, _N, 0.026507627, _N, _N),
    ),
    "densenet121-res224-chex": (
        f"chex-{_SUFFIX}",
        (0.1988969, 0.05710573, _N, 0.0531293, 0.1435217, _N, _N, 0.27212676, 0.07749717,
         _N, 0.19712369, _N, _N, _N, 0.09932402, 0.09273402, 0.3270967, 0.10888247),
    ),
    "densenet121-res224-rsna": (
        f"kaggle-{_SUFFIX}",
        (_N, _N, _N, _N, _N, _N, _N, _N, 0.13486601, _N, _N, _N, _N, _N, _N, _N,
         0.13511065, _N),
    ),
    "densenet121-res224-mimic_nb": (
        f"mimic_nb-{_SUFFIX}",
        (0.08558747, 0.011884617, _N, 0.0040595434, 0.010733786, _N, _N, 0.118761964,
         0.022924708, _N, 0.06358637, _N, _N, _N, 0.022143636, 0.017476924, 0.1258702,
         0.014020768),
    ),
    "densenet121-res224-mimic_ch": (
        f"mimic_ch-{_SUFFIX}",
        (0.09121389, 0.010573786, _N, 0.005023008, 0.003698257, _N, _N, 0.08001232,
         0.037242252, _N, 0.05006329, _N, _N, _N, 0.019866971, 0.03823637, 0.11303808,
         0.0069147074),
    ),
}  # fmt: skip
SIZE = 224
FORMAT = "radsight-xrv/1"


class ExportError(Exception):
    """The weights could not be fetched, read or exported (the message says why)."""


def default_cache_dir() -> Path:
    """torchxrayvision's cache (``utils.get_cache_dir``), shared with it."""
    return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


# --- the network: torchxrayvision's DenseNet-121, parameter for parameter -----------------


class _DenseLayer(nn.Sequential):
    def __init__(self, n_in: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(n_in))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(n_in, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], 1)


class _Transition(nn.Sequential):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(n_in))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(n_in, n_out, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet121(nn.Module):
    """``xrv.models.DenseNet`` (torchvision's densenet121 with 1 input channel): the same
    module tree, so torchxrayvision's state_dict keys load as they are."""

    def __init__(self, num_classes: int = len(PATHOLOGIES), growth: int = 32) -> None:
        super().__init__()
        feats: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(64),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, stride=2, padding=1),
        )
        n = 64
        for i, layers in enumerate((6, 12, 24, 16)):
            block = nn.Sequential()
            for j in range(layers):
                block.add_module(f"denselayer{j + 1}", _DenseLayer(n + j * growth, growth, 4))
            feats[f"denseblock{i + 1}"] = block
            n += layers * growth
            if i != 3:
                feats[f"transition{i + 1}"] = _Transition(n, n // 2)
                n //= 2
        feats["norm5"] = nn.BatchNorm2d(n)
        self.features = nn.Sequential(feats)
        self.classifier = nn.Linear(n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, as ``xrv.models.DenseNet`` before its sigmoid and ``op_norm``."""
        out = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


class _ForExport(nn.Module):
    """Logits and class activation maps: ``cam[k]`` is the classifier applied to each 7x7
    feature cell, so the mean of ``cam[k]`` over the cells is logit ``k`` exactly."""

    def __init__(self, net: DenseNet121) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.relu(self.net.features(x))
        w, b = self.net.classifier.weight, self.net.classifier.bias
        cam = torch.einsum("kc,nchw->nkhw", w, feats) + b[None, :, None, None]
        return cam.mean(dim=(2, 3)), cam


# --- fetching and reading weights ---------------------------------------------------------


def _xrv() -> Any:
    try:
        import torchxrayvision  # type: ignore[import-not-found]
    except Exception:  # absent, or present without torchvision / scikit-image
        return None
    return torchxrayvision


def download(url: str, dest: Path, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present), so a
    broken transfer never leaves a file that looks complete."""
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with httpx.stream(
            "GET", url, headers=headers, follow_redirects=True, timeout=timeout_s
        ) as response:
            if response.status_code == 416:  # the .part does not fit the server's file
                part.unlink()
                return download(url, dest, timeout_s)
            response.raise_for_status()
            mode = "ab" if response.status_code == 206 else "wb"
            with open(part, mode) as f:
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
    except httpx.HTTPError as exc:
        raise ExportError(
            f"could not download {url}: {exc}. Without internet access, download it "
            f"elsewhere and pass --weights-file"
        ) from exc
    os.replace(part, dest)
    return dest


def fetch_weights(name: str, cache_dir: Path | None = None) -> Path:
    """The local file of torchxrayvision weights ``name``, downloaded once into the cache."""
    if name not in CATALOGUE:
        raise ExportError(f"unknown weights {name!r}; known: {', '.join(CATALOGUE)}")
    xrv = _xrv()
    if xrv is not None:  # torchxrayvision's own URL table, cache and downloader
        return Path(xrv.models.get_weights(name, str(cache_dir) if cache_dir else None))
    filename, _ = CATALOGUE[name]
    local = (cache_dir or default_cache_dir()) / filename
    if not local.is_file():
        log.info("downloading %s to %s", RELEASE + filename, local)
        download(RELEASE + filename, local)
    return local


class _Stub:
    """Stands in for a class whose module cannot be imported (torchvision's or
    torchxrayvision's DenseNet in a pickled model) and keeps its state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (state, slotstate)
            state = state[0] or {}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            log.debug("unpickling %s.%s as a stub", module, name)
            return type(name, (_Stub,), {"__module__": "radsight_train.xrv.export._stubs"})


class _StubPickle:
    """A ``pickle_module`` for :func:`torch.load` that tolerates missing classes."""

    Unpickler = _StubUnpickler
    __name__ = "radsight_train.xrv.export._StubPickle"

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _StubUnpickler(f, **kwargs).load()


def _walk(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(obj, "__dict__", {})
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach()
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out)


_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's old ``norm.1`` names become ``norm1``; a DataParallel ``module.``
    prefix and torchxrayvision's ``op_threshs`` buffer go."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key == "op_threshs":
            continue
        m = _OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a torchxrayvision weights file.

    The released files are whole pickled models (``torch.save(model)``); a plain
    ``state_dict`` file works too. Unpickling runs code from the file: only read weights
    from a source you trust (torchxrayvision's own loader does the same).
    """
    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist")
    raw = path.read_bytes()
    try:
        obj: Any = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:
        try:
            obj = torch.load(
                io.BytesIO(raw),
                map_location="cpu",
                weights_only=False,
                pickle_module=_StubPickle,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise ExportError(f"{path} is not a torch weights file: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict):
        state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    else:
        state = {}
        _walk(obj, "", state)
    if not state:
        raise ExportError(f"{path} holds no tensors (found a {type(obj).__name__})")
    return normalise_keys(state)


def load_model(state: dict[str, torch.Tensor]) -> DenseNet121:
    weight = state.get("classifier.weight")
    if weight is None or weight.ndim != 2:
        raise ExportError("the weights have no classifier.weight: not a DenseNet")
    if tuple(weight.shape) != (len(PATHOLOGIES), 1024):
        raise ExportError(
            f"classifier.weight has shape {tuple(weight.shape)}; a torchxrayvision "
            f"DenseNet-121 has ({len(PATHOLOGIES)}, 1024)"
        )
    model = DenseNet121()
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            "the weights do not fit a torchxrayvision DenseNet-121: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


# --- export -------------------------------------------------------------------------------


def export(
    out: Path,
    weights: str = "densenet121-res224-all",
    weights_file: Path | None = None,
    version: str = "1.0.0",
    study_types: tuple[str, ...] = ("cxr",),
    cache_dir: Path | None = None,
) -> dict:
    """Write ``out/xrv.onnx`` and ``out/xrv.json``; return the JSON written."""
    if weights not in CATALOGUE:
        raise ExportError(f"unknown weights {weights!r}; known: {', '.join(CATALOGUE)}")
    path = weights_file or fetch_weights(weights, cache_dir)
    model = load_model(read_state_dict(Path(path)))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "xrv.onnx"
    wrapped = _ForExport(model).eval()
    x = torch.zeros(1, 1, SIZE, SIZE)
    torch.onnx.export(
        wrapped,
        (x,),
        str(onnx_path),
        input_names=["image"],
        output_names=["logits", "cam"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "cam": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    _check_export(wrapped, onnx_path)
    _, thresholds = CATALOGUE[weights]
    xrv = _xrv()
    config = {
        "format": FORMAT,
        "model": onnx_path.name,
        "name": f"xrv-{weights}",
        "version": version,
        "weights": weights,
        "weights_url": RELEASE + CATALOGUE[weights][0],
        "weights_file": Path(path).name,
        "weights_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "study_types": list(study_types),
        "pathologies": list(PATHOLOGIES),
        # outputs these weights were not trained for have no threshold and are not reported
        "op_threshs": list(thresholds),
        "input": {
            "size": SIZE,
            "range": [-1024.0, 1024.0],
            "crop": "center square (xrv.datasets.XRayCenterCrop)",
            "resize": "skimage.transform.resize, order 1, anti-aliasing, mode constant "
            "(xrv.datasets.XRayResizer)",
        },
        "outputs": {
            "logits": "[batch, 18] logits; probability = op_norm(sigmoid(logit))",
            "cam": "[batch, 18, 7, 7] per-cell logits whose mean is the logit",
        },
        "exported_with": {
            "torch": torch.__version__,
            "torchxrayvision": getattr(xrv, "__version__", None),
        },
        "licence": "torchxrayvision code: Apache-2.0; weights: trained on public data sets "
        "whose terms carry over (research use); see github.com/mlmed/torchxrayvision",
    }
    (out / "xrv.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("exported %s (%.1f MiB) and xrv.json", onnx_path, onnx_path.stat().st_size / 2**20)
    return config


def _check_export(model: nn.Module, onnx_path: Path) -> None:
    """ONNX Runtime must give torch's logits on a real-looking input."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.uniform(-1024, 1024, (1, 1, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": x})[0]
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(got - expected).max())
    if not math.isfinite(err) or err > 1e-3 * scale:
        raise ExportError(f"ONNX export differs from torch by {err:g} (logit scale {scale:g})")
