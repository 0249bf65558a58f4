"""What the camera sees, in a few numbers per photo: brightness, contrast and size.

Computed the same way for inspected photos (logged with each inspection) and for a run's validation photos
(the reference the Monitor page compares the log with), so the two are comparable.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

STAT_COLUMNS = ("brightness", "contrast", "width", "height")
STATS_SIDE = 256  # brightness and contrast from a copy at most this big: the same numbers, far less work


def photo_stats(photo: Image.Image) -> dict[str, float]:
    """Mean (brightness) and standard deviation (contrast) of the grey levels, 0-255, and the photo's size in
    pixels (as taken: before a huge photo was reduced to fit in memory)."""
    width, height = photo.info.get("reduced_from", photo.size)
    small = photo.copy()
    small.thumbnail((STATS_SIDE, STATS_SIDE), Image.BILINEAR)
    grey = np.asarray(small.convert("L"), dtype=np.float64)
    return {"brightness": round(float(grey.mean()), 3), "contrast": round(float(grey.std()), 3),
            "width": int(width), "height": int(height)}
