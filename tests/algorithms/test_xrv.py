"""The torchxrayvision adapter: export locally saved random weights, run them as Radsight does.

Needs torch (the train extra) for the export; the real-radiograph tests need the shared
data (``../shared/data`` or ``$RADSIGHT_SHARED_DATA``) and skip without it.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import random
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from radsight.algorithms.contract import ImageInput, NotAnalysable, StudyInput
from radsight.algorithms.registry import Registry
from radsight.algorithms.xrv import (
    CODES,
    ENV_VAR,
    TorchXRayVisionAlgorithm,
    op_norm,
    preprocess,
    to_xrv_range,
)
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import ConfigError
from radsight.pipeline.inputs import study_input_from
from radsight.results.report import AnalysisReport
from tests._limits import LIMITS

try:  # the export needs torch (the train extra); the runtime tests do not
    import torch

    from radsight_train.__main__ import main as train_main
    from radsight_train.xrv import export as xe
except ImportError:
    torch = xe = train_main = None  # type: ignore[assignment]
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch: pip install -e .[train]")

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()
KERMANY_NATIVE = DATA / "cxr" / "kermany-pediatric-pneumonia-224" / "val_native" / "PNEUMONIA"
ADULT = DATA / "cxr" / "covid-qu-ex-adult" / "images" / "test" / "Non-COVID"
needs_data = pytest.mark.skipif(
    not KERMANY_NATIVE.is_dir() or not ADULT.is_dir(),
    reason=f"chest radiograph data not found under {DATA / 'cxr'} (set RADSIGHT_SHARED_DATA)",
)
NAME = "xrv-densenet121-res224-all"


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def _image(pixels: np.ndarray, uid: str = "2.25.1", **kw: object) -> ImageInput:
    kw = {"modality": "DX", "body_part_examined": "CHEST", "view_position": "PA"} | kw
    return ImageInput("2.25.9", "2.25.9.1", uid, "1.2.840.10008.5.1.4.1.1.1.1", pixels, **kw)  # type: ignore[arg-type]


def _study(*images: ImageInput) -> StudyInput:
    return StudyInput("2.25.9", "cxr", images)


# --- torchxrayvision's own preprocessing, as its code reads -------------------------------


def _xrv_reference(pixels: np.ndarray, maxval: float) -> np.ndarray:
    """``xrv.utils.normalize`` -> ``XRayCenterCrop`` -> ``XRayResizer(224)``."""
    img = (2 * (pixels.astype(np.float32) / maxval) - 1.0) * 1024  # xrv.utils.normalize
    img = img[None, :, :]
    _, y, x = img.shape  # XRayCenterCrop.crop_center
    crop_size = np.min([y, x])
    startx = x // 2 - (crop_size // 2)
    starty = y // 2 - (crop_size // 2)
    img = img[:, starty : starty + crop_size, startx : startx + crop_size]
    try:  # XRayResizer: skimage.transform.resize(img, (1, 224, 224), mode="constant", ...)
        from skimage.transform import resize  # type: ignore[import-not-found]

        return resize(img, (1, 224, 224), mode="constant", preserve_range=True)[0]
    except ImportError:  # what that call does in scikit-image 0.26, step by step
        ndi = pytest.importorskip("scipy.ndimage")
        square = img[0]
        factor = square.shape[0] / 224
        if factor > 1:
            sigma = (factor - 1) / 2
            square = ndi.gaussian_filter(square, sigma, cval=0, mode="grid-constant")
        out = ndi.zoom(square, 1 / factor, order=1, mode="grid-constant", cval=0, grid_mode=True)
        lo, hi = float(img.min()), float(img.max())
        if not lo <= 0 <= hi and out.min() <= 0 <= out.max():
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        return np.clip(out, lo, hi)


def _synthetic_8bit(rows: int, cols: int) -> np.ndarray:
    pixels = make_radiograph(rows=rows, columns=cols, bits_stored=12).pixel_array
    return np.round(pixels / 4095 * 255).astype(np.float32)


@pytest.mark.parametrize(("rows", "cols"), [(512, 512), (600, 437), (1500, 1800), (150, 190)])
def test_preprocessing_is_torchxrayvisions(rows: int, cols: int) -> None:
    pixels = _synthetic_8bit(rows, cols)
    canvas, crop = preprocess(pixels, 224)
    assert canvas.shape == (224, 224) and canvas.dtype == np.float32
    assert (crop.side, crop.left, crop.top) == (
        min(rows, cols),
        cols // 2 - min(rows, cols) // 2,
        rows // 2 - min(rows, cols) // 2,
    )
    np.testing.assert_allclose(canvas, _xrv_reference(pixels, 255), atol=0.05)


@needs_data
def test_preprocessing_of_real_radiographs_is_torchxrayvisions() -> None:
    for path in (sorted(KERMANY_NATIVE.glob("*"))[0], sorted(ADULT.glob("*.png"))[0]):
        pixels = _gray(path)
        np.testing.assert_allclose(preprocess(pixels)[0], _xrv_reference(pixels, 255), atol=0.05)


def test_intensity_scale_follows_bit_depth() -> None:
    eight = np.array([[0, 255], [51, 204]], np.float32)
    np.testing.assert_allclose(to_xrv_range(eight), (2 * eight / 255 - 1) * 1024, rtol=1e-6)
    twelve = np.array([[0, 4095], [100, 300]], np.float32)  # xrv.utils.read_xray_dcm
    np.testing.assert_allclose(to_xrv_range(twelve, 12), (2 * twelve / 4095 - 1) * 1024)
    # a 12-bit image that happens to stay under 256 is still scaled by its bit depth
    dark = np.array([[0, 200], [10, 20]], np.float32)
    np.testing.assert_allclose(to_xrv_range(dark, 12), (2 * dark / 4095 - 1) * 1024)
    # values a Modality LUT moved out of [0, 2**bits - 1] are stretched end to end
    rescaled = np.array([[-1000.0, 3000.0], [1000.0, 0.0]], np.float32)
    assert to_xrv_range(rescaled, 12).min() == -1024 and to_xrv_range(rescaled, 12).max() == 1024


def test_op_norm_puts_each_operating_point_at_one_half() -> None:
    t = np.array([0.2, 0.05, np.nan])
    np.testing.assert_allclose(op_norm(np.array([0.2, 0.05, 0.9]), t), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(op_norm(np.array([0.0, 1.0, 0.1]), t), [0.0, 1.0, 0.5])
    # torchxrayvision's formula on either side of the threshold
    np.testing.assert_allclose(op_norm(np.array([0.1, 0.525]), t[:2]), [0.25, 0.75])


@needs_torch
def test_old_torchvision_key_names_are_mapped() -> None:
    t = torch.zeros(1)
    state = {
        "module.features.denseblock1.denselayer1.norm.1.weight": t,
        "features.denseblock1.denselayer1.conv.2.weight": t,
        "features.norm5.bias": t,
        "op_threshs": t,
    }
    assert set(xe.normalise_keys(state)) == {
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer1.conv2.weight",
        "features.norm5.bias",
    }


# --- export of locally saved random weights -----------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random DenseNet-121 weights saved as torchxrayvision releases them (a whole pickled
    model whose class cannot be imported here) and as a plain state_dict."""
    torch.manual_seed(0)
    model = xe.DenseNet121().eval()
    folder = tmp_path_factory.mktemp("xrv-weights")
    torch.save(model.state_dict(), folder / "state_dict.pt")
    module = types.ModuleType("xrv_release_fixture")
    model.__class__ = type("DenseNet", (xe.DenseNet121,), {"__module__": module.__name__})
    module.DenseNet = model.__class__  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        torch.save(model, folder / "release.pt")
        # the pre-1.6 format some released files still use
        torch.save(model, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    finally:
        del sys.modules[module.__name__]
    return {name: folder / f"{name}.pt" for name in ("state_dict", "release", "legacy")}


@pytest.fixture(scope="module")
def model_dir(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xrv-model")
    torch.set_num_threads(2)
    argv = ["export-xrv", "--weights-file", str(weights["release"]), "--out", str(out)]
    assert train_main(argv + ["--study-types", "cxr,flg"]) == 0
    return out


@pytest.fixture(scope="module")
def reference_model(weights: dict[str, Path]) -> xe.DenseNet121:
    model = xe.DenseNet121().eval()
    model.load_state_dict(torch.load(weights["state_dict"], weights_only=True))
    return model


@needs_torch
@pytest.mark.parametrize("kind", ["release", "legacy"])
def test_a_pickled_release_model_reads_without_its_classes(weights, kind: str) -> None:
    release, plain = xe.read_state_dict(weights[kind]), xe.read_state_dict(weights["state_dict"])
    assert set(release) == set(plain) == set(xe.DenseNet121().state_dict())
    assert all(torch.equal(release[k], plain[k]) for k in plain)


@needs_torch
def test_export_writes_onnx_and_a_description(model_dir: Path, weights) -> None:
    config = json.loads((model_dir / "xrv.json").read_text())
    assert (config["name"], config["version"], config["study_types"]) == (
        NAME,
        "1.0.0",
        ["cxr", "flg"],
    )
    assert config["pathologies"] == list(xe.PATHOLOGIES)
    assert config["op_threshs"] == list(xe.CATALOGUE["densenet121-res224-all"][1])
    assert config["input"]["size"] == 224 and config["input"]["range"] == [-1024.0, 1024.0]
    assert config["weights_url"].startswith("https://github.com/mlmed/torchxrayvision/")
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "xrv.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    logits, cam = session.run(None, {"image": np.zeros((2, 1, 224, 224), np.float32)})
    assert logits.shape == (2, 18) and cam.shape == (2, 18, 7, 7)
    np.testing.assert_allclose(cam.mean(axis=(2, 3)), logits, atol=1e-4)


@needs_torch
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a torch file"), "is not a torch weights file"),
        (lambda p: torch.save({"classifier.weight": torch.zeros(14, 1024)}, p), "(18, 1024)"),
        (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p), "no classifier.weight"),
    ],
)
def test_bad_weights_files_get_a_clear_error(tmp_path: Path, make, message: str, capsys) -> None:
    path = tmp_path / "w.pt"
    make(path)
    with pytest.raises(SystemExit) as exc:
        train_main(["export-xrv", "--weights-file", str(path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "xrv.json").exists()


@needs_torch
def test_unknown_weights_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(xe.ExportError, match="unknown weights 'densenet121-res224-foo'"):
        xe.fetch_weights("densenet121-res224-foo", tmp_path)


# --- the download code, against a real HTTP server on localhost ----------------------------


@pytest.fixture
def http_server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    handler = type(
        "Handler",
        (http.server.SimpleHTTPRequestHandler,),
        {"log_message": lambda *a: None},
    )
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@needs_torch
def test_download_lands_whole_and_missing_files_are_reported(http_server, tmp_path) -> None:
    served, base = http_server
    payload = random.Random(285).randbytes(300_000)  # replayable, incompressible
    (served / "w.pt").write_bytes(payload)
    dest = tmp_path / "cache" / "w.pt"
    assert xe.download(base + "w.pt", dest).read_bytes() == payload
    assert not dest.with_name("w.pt.part").exists()
    with pytest.raises(xe.ExportError, match="404.*--weights-file"):
        xe.download(base + "missing.pt", tmp_path / "cache" / "missing.pt")
    assert not (tmp_path / "cache" / "missing.pt").exists()


@needs_torch
def test_cached_weights_are_not_downloaded_again(tmp_path: Path, monkeypatch) -> None:
    filename = xe.CATALOGUE["densenet121-res224-rsna"][0]
    (tmp_path / filename).write_bytes(b"cached")
    monkeypatch.setattr("radsight_train.xrv.export._xrv", lambda: None)
    monkeypatch.setattr(
        "radsight_train.xrv.export.download", lambda *a: pytest.fail("downloaded again")
    )
    assert xe.fetch_weights("densenet121-res224-rsna", tmp_path) == tmp_path / filename


# --- the algorithm, through the contract --------------------------------------------------


@needs_torch
@needs_data
def test_algorithm_gives_the_torch_models_probabilities(model_dir, reference_model) -> None:
    algorithm = TorchXRayVisionAlgorithm(model_dir)
    assert (algorithm.name, algorithm.version, algorithm.study_types) == (
        NAME,
        "1.0.0",
        ("cxr", "flg"),
    )
    path = sorted(KERMANY_NATIVE.glob("*"))[0]
    pixels = _gray(path)
    study = _study(_image(pixels, uid="2.25.5"))
    algorithm.check(study)
    analysis = algorithm.analyse(study)
    keys = [f.key for f in analysis.findings]
    assert keys == [p.lower().replace("_", "-").replace(" ", "-") for p in xe.PATHOLOGIES]
    assert "lung-opacity" in keys and "pleural-thickening" in keys
    assert algorithm.finding_spec("pneumonia").code == CODES["Pneumonia"]
    # torch, on torchxrayvision's own preprocessing, then xrv's sigmoid + op_norm
    x = torch.from_numpy(_xrv_reference(pixels, 255).astype(np.float32)[None, None])
    with torch.no_grad():
        probs = torch.sigmoid(reference_model(x))[0].numpy().astype(np.float64)
    thresholds = np.array(xe.CATALOGUE["densenet121-res224-all"][1], dtype=np.float64)
    expected = op_norm(probs, thresholds)
    got = np.array([f.probability for f in analysis.findings])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert analysis.study_score == max(got)
    rows, cols = pixels.shape
    side = min(rows, cols)
    # one candidate area per pathology and image, with the image's probability; the
    # report marks those of the positive findings (at torchxrayvision's point, 0.5)
    report = AnalysisReport.from_analysis(algorithm, analysis)
    for finding, reported in zip(analysis.findings, report.findings, strict=True):
        (candidate,) = finding.regions
        assert candidate.probability == finding.probability
        assert reported.regions == ((candidate,) if finding.probability >= 0.5 else ())
        for region in finding.regions:
            x0, y0, x1, y1 = region.bounds()
            assert region.sop_instance_uid == "2.25.5" and region.points[0] == region.points[-1]
            # inside the central square the model reads
            assert (cols - side) // 2 <= x0 < x1 <= (cols + side) // 2 + 1
            assert 0 <= y0 < y1 <= rows


@needs_torch
def test_weights_trained_for_fewer_pathologies_report_only_those(model_dir, tmp_path) -> None:
    config = json.loads((model_dir / "xrv.json").read_text())
    config["op_threshs"] = list(xe.CATALOGUE["densenet121-res224-rsna"][1])
    config["name"] = "xrv-densenet121-res224-rsna"
    (tmp_path / "xrv.json").write_text(json.dumps(config))
    (tmp_path / "xrv.onnx").symlink_to(model_dir / "xrv.onnx")
    algorithm = TorchXRayVisionAlgorithm(tmp_path)
    assert [f.key for f in algorithm.findings] == ["pneumonia", "lung-opacity"]
    analysis = algorithm.analyse(_study(_image(_synthetic_8bit(400, 400))))
    assert [f.key for f in analysis.findings] == ["pneumonia", "lung-opacity"]


@needs_torch
def test_input_checks_refuse_with_a_reason(model_dir) -> None:
    algorithm = TorchXRayVisionAlgorithm(model_dir)
    with pytest.raises(NotAnalysable, match="lateral view"):
        algorithm.check(_study(_image(_synthetic_8bit(300, 300), view_position="LL")))
    with pytest.raises(NotAnalysable, match="blank"):
        algorithm.analyse(_study(_image(np.zeros((300, 300), np.float32))))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "xrv.json does not exist"),
        (lambda d: (d / "xrv.json").write_text("{"), "not valid JSON"),
        (lambda d: (d / "xrv.json").write_text('{"format": "other"}'), "radsight-xrv/1"),
    ],
)
def test_a_bad_model_directory_is_a_config_error(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(ConfigError, match=message):
        TorchXRayVisionAlgorithm(tmp_path)


@needs_torch
def test_registered_only_when_configured(model_dir, monkeypatch, caplog) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with caplog.at_level(logging.ERROR):
        assert NAME not in Registry.from_entry_points().names()
    assert not caplog.records
    monkeypatch.setenv(ENV_VAR, str(model_dir))
    load_settings()  # the variable is not mistaken for an unknown setting
    registry = Registry.from_entry_points()
    assert {NAME, "radsight-cxr"} <= registry.names()
    assert registry.resolve(NAME).findings[0].key == "atelectasis"
    monkeypatch.setenv(ENV_VAR, str(model_dir / "nowhere"))
    with caplog.at_level(logging.ERROR):
        assert NAME not in Registry.from_entry_points().names()
    assert "xrv.json does not exist" in caplog.text


# --- the whole pipeline: ingest, route, analyse, SR + SC ----------------------------------


@needs_torch
def test_pipeline_runs_it_and_encodes_the_results(model_dir, tmp_path, monkeypatch) -> None:
    from radsight.ingest.accept import accept_instance
    from radsight.pipeline.assembly import assemble_once
    from radsight.pipeline.routing import parse_rules
    from radsight.pipeline.runner import run_one
    from radsight.runtime import Runtime
    from radsight.store import results as resultstore
    from radsight.store import tenants
    from radsight.store.scope import Scope

    monkeypatch.setenv(ENV_VAR, str(model_dir))
    registry = Registry.from_entry_points()
    settings = load_settings(None, data_dir=tmp_path / "d", quiet_periods={"cxr": 0.01})
    rt = Runtime.open(settings)
    with rt.db.session() as s:
        org = tenants.create_organisation(s, "Org", "Region").id
    ds = make_radiograph(study_instance_uid=generate_uid(), bits_stored=12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(rt, buf.getvalue(), organisation_id=org)
    rules = parse_rules(
        f'version: "1"\nrules: [{{name: xrv, study_types: [cxr], algorithms: [{NAME}]}}]'
    )
    time.sleep(0.05)
    assert assemble_once(rt, registry, rules) == 1
    assert run_one(rt, registry, "test-worker")
    with rt.db.session() as s:
        (result,) = resultstore.list_results(s, scope=Scope.ALL)
        assert (result.algorithm_name, result.status) == (NAME, "analysed")
        report, keys = result.report, [o.storage_key for o in result.objects]
        roles = [o.role for o in result.objects]
    assert roles == ["sr", "sc"]
    assert len(report["findings"]) == 18
    assert {f["code"]["scheme"] for f in report["findings"]} == {"SCT", "99RADSIGHT"}
    # the same numbers as the algorithm gives on the same decoded study
    direct = TorchXRayVisionAlgorithm(model_dir).analyse(study_input_from([ds], "cxr", **LIMITS))
    assert report["study_score"] == pytest.approx(direct.study_score, abs=1e-6)
    outputs = [pydicom.dcmread(io.BytesIO(rt.files.get(k))) for k in keys]
    sr = next(o for o in outputs if o.Modality == "SR")
    codes = {str(e.value) for e in sr.iterall() if e.keyword == "CodeValue"}
    # dcmtk reads the SR as a valid structured report, private codes and all
    from tests.results._sources import dsrdump, read_strict, to_bytes

    dump = dsrdump(to_bytes(read_strict(to_bytes(sr))))
    assert "Atelectasis" in dump and "Lung opacity" in dump
    assert {"46621007", "RS-XRV-OPACITY"} <= codes
    # and a Secondary Capture of the image with the marks drawn
    assert any(o.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" for o in outputs)
