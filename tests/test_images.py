import io

import numpy as np
import pytest
from PIL import Image

from defect_model.photos.images import ImageError, fit_to_square, load_image, prepare_array


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
    monkeypatch.setattr("defect_model.photos.images.MAX_PIXELS", 1000)
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


# -- issue 16 item 3: memory per photo, by its bytes per pixel -------------------------------------------------
def test_a_16_bit_8000x7999_png_is_reduced_without_gigabytes_of_memory(tmp_path):
    """A 124 KB 16-bit PNG of 64 megapixels took +1.55 GB of memory (and 18 s) to load."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from hostile_corpus import sixteen_bit_png

    path = tmp_path / "deep.png"
    path.write_bytes(sixteen_bit_png(8000, 7999))
    code = ("import json, resource, sys\n"
            "from defect_model.photos.images import load_image\n"
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
            "before = peak()\n"
            "photo = load_image(sys.argv[1])\n"
            "print(json.dumps([photo.mode, photo.info.get('reduced_from'), peak() - before]))\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=root, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    mode, reduced_from, growth_mb = json.loads(out)
    assert mode == "RGB" and reduced_from == [8000, 7999]  # reduced, and it says from what
    assert growth_mb < 400, f"+{growth_mb} MB to load one photo"


def test_a_jpeg_over_the_memory_budget_is_decoded_at_a_smaller_scale(monkeypatch):
    from PIL import JpegImagePlugin

    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, *args: drafts.append(args) or original(self, *args))
    monkeypatch.setattr("defect_model.photos.images.MAX_DECODED_BYTES", 200_000)
    photo = load_image(_png_bytes(Image.new("RGB", (600, 400), (90, 60, 30)), "JPEG"), name="wide.jpg")
    assert photo.size == (300, 200) and photo.info["reduced_from"] == (600, 400)
    assert drafts  # scaled by the JPEG decoder itself, not after decoding in full


def test_a_16_bit_photo_counts_two_bytes_per_pixel_and_is_reduced(monkeypatch):
    monkeypatch.setattr("defect_model.photos.images.MAX_DECODED_BYTES", 100_000)
    array = (np.arange(200 * 200).reshape(200, 200) * 1.5).astype(np.uint16)
    photo = load_image(_png_bytes(Image.fromarray(array)), name="deep.png")  # 80 KB decoded, 120 KB as RGB
    assert photo.mode == "RGB" and photo.size == (100, 100) and photo.info["reduced_from"] == (200, 200)
    values = np.asarray(photo)[:, :, 0]
    assert values.min() < 5 and values.max() > 200  # still scaled by its 16 bits, not clipped


def test_a_png_too_large_to_decode_within_the_budget_is_refused(monkeypatch):
    monkeypatch.setattr("defect_model.photos.images.MAX_DECODED_BYTES", 100_000)
    with pytest.raises(ImageError, match=r"big.png: the photo is 400x400 RGBA.*0.6 MB decoded.*Resize it"):
        load_image(_png_bytes(Image.new("RGBA", (400, 400))), name="big.png")


# -- issue 16 item 9: deep photos scaled by the bit depth the file declares -----------------------------------
def _deep_png(values: np.ndarray, significant_bits: int | None = None) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if significant_bits:
        info.add(b"sBIT", bytes([significant_bits]))
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


TWELVE_BIT_RAMP = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)


def test_twelve_bit_camera_data_with_a_png_sbit_chunk_fills_the_range():
    """12-bit data stored as it comes (0..4095) in a 16-bit PNG came out near black (max 16 of 255)."""
    photo = load_image(_deep_png(TWELVE_BIT_RAMP, significant_bits=12), "cam.png")
    values = np.asarray(photo)[:, :, 0]
    assert values.min() == 0 and values.max() == 255
    assert "4095 as white" in photo.info["depth_note"] and "sBIT" in photo.info["depth_note"]


def test_twelve_bit_data_in_a_tiff_is_scaled_by_its_max_sample_value():
    buffer = io.BytesIO()
    Image.fromarray(TWELVE_BIT_RAMP).save(buffer, "TIFF", tiffinfo={281: 4095})
    photo = load_image(buffer.getvalue(), "cam.tif")
    assert np.asarray(photo).max() == 255 and "MaxSampleValue 4095" in photo.info["depth_note"]


def test_a_dark_sixteen_bit_frame_stays_dark_and_the_note_says_why():
    """A 16-bit frame whose brightest pixel is 200 was taken for 8-bit data and shown bright."""
    photo = load_image(_deep_png(np.full((16, 16), 200, np.uint16)), "dark.png")
    assert np.asarray(photo).max() <= 1
    note = photo.info["depth_note"]
    assert "65535 as white" in note and "looks dark" in note and "sBIT" in note  # what was done, what to do


def test_values_beyond_the_declared_bits_mean_the_photo_was_spread_over_sixteen():
    """The PNG standard asks writers to spread 12-bit values over 16 bits; then 65535 is white."""
    spread = (TWELVE_BIT_RAMP.astype(np.uint32) * 65535 // 4095).astype(np.uint16)
    photo = load_image(_deep_png(spread, significant_bits=12), "spread.png")
    assert np.asarray(photo).max() == 255 and "span all 16 bits" in photo.info["depth_note"]


def test_eight_bit_photos_carry_no_depth_note():
    assert "depth_note" not in load_image(_png_bytes(Image.new("L", (8, 8), 90), "PNG")).info
