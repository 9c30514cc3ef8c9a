"""Mammography model (``mmg.onnx`` + ``mmg.json``): the filter bank, the heads, the mark
ranker, training with patient-pair cross-validation, evaluation."""
