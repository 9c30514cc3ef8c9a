"""Chest radiograph model (``cxr.onnx``): training, the TB head, evaluation."""
