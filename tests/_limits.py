"""The decode limits a test passes where a server passes its settings (the defaults)."""

from radsight.config import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_INSTANCE_PIXELS

LIMITS = {
    "max_frame_pixels": DEFAULT_MAX_FRAME_PIXELS,
    "max_instance_pixels": DEFAULT_MAX_INSTANCE_PIXELS,
}
