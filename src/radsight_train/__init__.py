"""Training and evaluation of Radsight's built-in models (torch; a training extra only).

The platform itself never imports this package: it runs the exported ONNX models.
"""

from radsight.config import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_INSTANCE_PIXELS

#: decode limits of offline training and evaluation, on files a researcher chose: the
#: server's defaults (their one definition is radsight.config)
OFFLINE_LIMITS = {
    "max_frame_pixels": DEFAULT_MAX_FRAME_PIXELS,
    "max_instance_pixels": DEFAULT_MAX_INSTANCE_PIXELS,
}
