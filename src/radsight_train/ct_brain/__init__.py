"""Brain CT haemorrhage model (``ct_brain.onnx``): training and evaluation."""
