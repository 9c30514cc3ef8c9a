"""Training and evaluation of Radsight's built-in models (torch; a training extra only).

The platform itself never imports this package: it runs the exported ONNX models.
"""
