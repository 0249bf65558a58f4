import io

import numpy as np
import pytest
from PIL import Image

from defect_model.images import ImageError, fit_to_square, load_image, prepare_array


def _png_bytes(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    assert load_image(_png_bytes(image, fmt)).mode == "RGB"


def test_sixteen_bit_photo_keeps_its_contrast():
    array = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    image = load_image(Image.fromarray(array))
    values = np.asarray(image)[:, :, 0]
    assert values.min() == 0 and values.max() >= 250  # not clipped to white
    assert len(np.unique(values)) > 200


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(_png_bytes(image, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (20, 40)


def test_truncated_file_is_a_clear_error(tmp_path):
    data = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*(damaged|truncated)"):
        load_image(path)


def test_not_an_image_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(ImageError, match="notes.png: this is not an image"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr("defect_model.images.MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        load_image(_png_bytes(Image.new("L", (100, 100))), name="big.png")


def test_non_square_photo_is_not_stretched_when_padding_or_cropping():
    # A 600x200 photo with a white square in the middle: padding and cropping keep it square.
    photo = Image.new("RGB", (600, 200), (0, 0, 0))
    photo.paste((255, 255, 255), (250, 50, 350, 150))
    for mode in ("pad", "crop"):
        out = np.asarray(fit_to_square(photo, 60, mode))[:, :, 0] > 128
        rows, cols = np.nonzero(out)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert abs(height - width) <= 1, mode
    stretched = np.asarray(fit_to_square(photo, 60, "stretch"))[:, :, 0] > 128
    rows, cols = np.nonzero(stretched)
    assert np.ptp(rows) > 2 * np.ptp(cols)  # stretch squashes it: only on explicit request


def test_prepare_array_shape():
    array = prepare_array(Image.new("RGB", (33, 17)), 32, "pad")
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
