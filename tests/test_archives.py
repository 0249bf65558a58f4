import io
import stat
import zipfile

import pytest

from defect_model.photos.archives import ArchiveError, extract_zip, read_zip_members


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


# -- issue 16: limits from the central directory, damaged zips, Windows names, fresh staging ------------------
import time  # noqa: E402

from hostile_corpus import (DEFLATE64, ENCRYPTED, UTF8_NAMES, Member, class_zip, many_members_zip,  # noqa: E402
                            photo, raw_zip, small_members_bomb)


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_300000_member_zip_is_refused_in_well_under_a_second(tmp_path):
    data = many_members_zip(300_000)
    for read in (lambda: read_zip_members(data, name="many.zip"),
                 lambda: extract_zip(data, tmp_path / "many", name="many.zip")):
        started = time.perf_counter()
        with pytest.raises(ArchiveError, match="many.zip: 300000 files and folders is more than the limit of 20000"):
            read()
        assert time.perf_counter() - started < 0.5
    assert list(tmp_path.iterdir()) == []


def test_many_small_members_that_expand_far_are_refused_before_extracting(tmp_path):
    data = small_members_bomb(300)  # 300 members of 1 MiB zeros each: 300 MiB from 0.3 MB, none over 10 MB
    started = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"bomb.zip: .*300 MB.*zip bomb"):
        extract_zip(data, tmp_path / "bomb", name="bomb.zip")
    with pytest.raises(ArchiveError, match=r"bomb.zip: .*zip bomb"):
        read_zip_members(data, name="bomb.zip")
    assert time.perf_counter() - started < 0.5
    assert list(tmp_path.iterdir()) == []


def test_the_total_size_is_bounded_before_extracting(tmp_path):
    data = raw_zip([Member(b"ok/%d.png" % i, b"x" * 1000) for i in range(10)])
    with pytest.raises(ArchiveError, match=r"big.zip: .*more than the limit"):
        extract_zip(data, tmp_path / "big", name="big.zip", max_total_bytes=5000)
    with pytest.raises(ArchiveError, match=r"big.zip: .*more than the limit"):
        read_zip_members(data, name="big.zip", max_total_bytes=5000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("member, words", [
    (Member(b"ok/a.png", b"photo bytes", crc=12345), r"'ok/a.png' is damaged \(bad CRC"),
    (Member(b"ok/a.png", b"photo bytes", flags=ENCRYPTED), "'ok/a.png' is encrypted.*without a password"),
    (Member(b"ok/a.png", b"photo bytes", method=DEFLATE64), "'ok/a.png' is compressed with Deflate64.*Deflate"),
    (Member(b"ok/\xff\xfe.png", b"photo bytes", flags=UTF8_NAMES), "not valid UTF-8.*Create the zip again"),
])
def test_damaged_encrypted_and_unsupported_zips_are_clear_errors(tmp_path, member, words):
    good = [Member(b"ok/b.png", photo("ok", 1)), Member(b"pit/c.png", photo("pit", 2))]
    data = raw_zip(good + [member])
    with pytest.raises(ArchiveError, match=f"damaged.zip: .*{words}"):
        read_zip_members(data, name="damaged.zip")
    with pytest.raises(ArchiveError, match=f"damaged.zip: .*{words}"):
        extract_zip(data, tmp_path / "set", name="damaged.zip")
    assert list(tmp_path.iterdir()) == []  # nothing half-extracted is left behind


def test_windows_backslash_names_are_read_as_folders(tmp_path):
    out = extract_zip(class_zip("set", separator="\\"), tmp_path / "win", name="win.zip")
    assert _files(out) == ["ok/0.png", "ok/1.png", "ok/2.png", "pit/0.png", "pit/1.png", "pit/2.png"]
    names = [member for member, _ in read_zip_members(class_zip("set", separator="\\"), name="win.zip")]
    assert names[0] == "set/ok/0.png"
    with pytest.raises(ArchiveError, match=r"win.zip: member '\.\.\\\\evil.png' points outside"):
        extract_zip(raw_zip([Member(b"..\\evil.png", b"x")]), tmp_path / "evil", name="win.zip")


def test_an_empty_class_folder_in_the_zip_is_kept_so_the_scan_can_name_it(tmp_path):
    data = raw_zip([Member(b"ok/a.png", b"1"), Member(b"ok/b.png", b"2"), Member(b"pit/")])
    out = extract_zip(data, tmp_path / "set", name="set.zip")
    assert (out / "pit").is_dir() and _files(out) == ["ok/a.png", "ok/b.png"]


def test_a_leftover_partial_folder_is_never_reused(tmp_path):
    ghost = tmp_path / "mine.partial" / "ghost"
    ghost.mkdir(parents=True)
    (ghost / "x.png").write_bytes(photo())
    out = extract_zip(class_zip(), tmp_path / "mine", name="good.zip")
    assert sorted(p.name for p in out.iterdir()) == ["ok", "pit"]
    failed = raw_zip([Member(b"ok/a.png", photo()), Member(b"rust/b.png", b"bytes", crc=1)])
    with pytest.raises(ArchiveError):
        extract_zip(failed, tmp_path / "other", name="bad.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "mine.partial"]  # the failed one left nothing
