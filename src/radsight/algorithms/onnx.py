"""One ONNX Runtime session per model file and process, shared by the built-in algorithms.

Sessions are created on first use (importing an algorithm stays cheap) and run on one
thread: a worker process analyses one study at a time, and more workers, not more threads,
scale it out (docs/scale-out.md).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_sessions: dict[str, Any] = {}


def load_session(model_path: Path | str) -> Any:
    """The process's ONNX Runtime session for ``model_path``, created on first call."""
    key = str(Path(model_path).resolve())
    session = _sessions.get(key)
    if session is None:
        with _lock:
            session = _sessions.get(key)
            if session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(key, options, providers=["CPUExecutionProvider"])
                _sessions[key] = session
    return session
