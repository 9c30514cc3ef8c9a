"""Chest CT lesion model (``ct_chest.onnx``): training and evaluation."""
