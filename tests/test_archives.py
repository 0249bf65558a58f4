import io
import stat
import zipfile

import pytest

from defect_model.archives import ArchiveError, extract_zip, read_zip_members


def _zip(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            if isinstance(data, zipfile.ZipInfo):
                archive.writestr(data, b"target")
            else:
                archive.writestr(name, data)
    return buffer.getvalue()


def test_extract_unwraps_a_single_top_folder(tmp_path):
    data = _zip([("set/ok/a.png", b"1"), ("set/pit/b.png", b"2"), ("__MACOSX/set/._a.png", b"x")])
    out = extract_zip(data, tmp_path / "mine")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["ok/a.png", "pit/b.png"]


@pytest.mark.parametrize("entries, words", [
    ([("../evil.png", b"1")], "outside"),
    ([("/abs/evil.png", b"1")], "outside"),
])
def test_paths_outside_the_target_are_refused(tmp_path, entries, words):
    with pytest.raises(ArchiveError, match=words):
        extract_zip(_zip(entries), tmp_path / "x", name="bad.zip")
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "evil.png").exists()


def test_links_are_refused(tmp_path):
    link = zipfile.ZipInfo("ok/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ArchiveError, match="bad.zip: member 'ok/link.png' is a symbolic link"):
        extract_zip(_zip([("ok/link.png", link)]), tmp_path / "x", name="bad.zip")


def test_limits_and_damage_are_clear(tmp_path):
    with pytest.raises(ArchiveError, match="more than the limit of 2"):
        read_zip_members(_zip([("a", b"1"), ("b", b"2"), ("c", b"3")]), max_files=2)
    with pytest.raises(ArchiveError, match="notzip.zip: this is not a valid .zip"):
        read_zip_members(b"PK but not really", name="notzip.zip")
    bomb = _zip([("big.png", b"\0" * (50 * 1024**2))])
    with pytest.raises(ArchiveError, match="zip bomb"):
        read_zip_members(bomb)
