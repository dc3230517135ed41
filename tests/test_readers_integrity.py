"""The readers never lose or invent data silently (issue 12): one test group per class of damage.

1. empty or half-copied entity and sessions files; 2. the fast path accepting what JSON rejects;
3. RecursionError; 4. results depending on neighbours and chunk_lines; 5. names that are not UTF-8;
6. a last line cut short; 7. compressed and unreadable files; then the minor points.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_readers import (
    assert_plays_equal,
    block_bytes,
    csv_session,
    person_line,
    plays_frame,
    session_line,
    track_line,
    write_csv,
    write_idomaar,
    write_lines,
)

from thirtymusic_utils.data import readers
from thirtymusic_utils.data.readers import (
    MAX_UNKNOWN_SHARE,
    DataFormatError,
    ReadWarning,
    detect_layout,
    read_artists,
    read_plays,
    scan_plays,
)


def small_idomaar(folder: Path, n_tracks: int = 20) -> Path:
    """Tracks 0..n-1 by artists 0..n-1 (one each), every track played once by user 1 or 2."""
    return write_idomaar(
        folder,
        [person_line(a, f"Artist {a}") for a in range(n_tracks)],
        [track_line(t, [t]) for t in range(n_tracks)],
        [session_line(s, 1000 + s, 1 + s % 2, [2 * s, 2 * s + 1]) for s in range(n_tracks // 2)],
    )


def small_csv(folder: Path, n: int = 20) -> Path:
    return write_csv(
        folder,
        [f"{a};Artist+{a}" for a in range(n)],
        [csv_session(s, 1000 + s, 1 + s % 2, [2 * s, 2 * s + 1]) for s in range(n // 2)],
    )


def small_hetrec(folder: Path, n: int = 20) -> Path:
    write_lines(
        folder / "artists.dat",
        ["id\tname\turl\tpictureURL"] + [f"{a}\tArtist {a}\thttp://x/{a}\tp" for a in range(n)],
    )
    write_lines(
        folder / "user_artists.dat",
        ["userID\tartistID\tweight"] + [f"{1 + a % 2}\t{a}\t{a + 1}" for a in range(n)],
    )
    return folder


def keep_lines(path: Path, n: int) -> None:
    """Keep the first ``n`` lines of ``path`` (a copy cut short at a line boundary)."""
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:n]))


# --------------------------------------------------------------------------------------------------
# 1. Empty and half-copied files


EMPTY_CASES = {
    "idomaar persons": ("idomaar", "entities/persons.idomaar", b""),
    "idomaar tracks": ("idomaar", "entities/tracks.idomaar", b""),
    "idomaar sessions": ("idomaar", "relations/sessions.idomaar", b""),
    "idomaar sessions, blank lines": ("idomaar", "relations/sessions.idomaar", b"\n \n"),
    "csv persons": ("csv", "entities/persons.csv", b"ID;Name\n"),
    "csv sessions": (
        "csv",
        "relations/sessions_short.csv",
        b"ID;UserId;Type;Timestamp;ArtistsID\n",
    ),
    "hetrec artists": ("hetrec", "artists.dat", b"id\tname\turl\tpictureURL\n"),
    "hetrec plays": ("hetrec", "user_artists.dat", b"userID\tartistID\tweight\r\n"),
}
MAKERS = {"idomaar": small_idomaar, "csv": small_csv, "hetrec": small_hetrec}


@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
def test_an_empty_file_is_an_error_or_a_warning(tmp_path: Path, case: str) -> None:
    layout, rel, content = EMPTY_CASES[case]
    folder = MAKERS[layout](tmp_path / "d")
    (folder / rel).write_bytes(content)
    name = Path(rel).name
    with pytest.raises(DataFormatError, match=rf"^{re.escape(name)}: .*no records to read"):
        scan_plays(folder, layout=layout)
    with pytest.warns(ReadWarning, match=rf"^{re.escape(name)}: .*no records to read"):
        scan = scan_plays(folder, layout=layout, errors="skip")
    assert scan.report.empty_files == 1
    assert scan.plays.attrs["report"]["empty_files"] == 1  # in chapter 01's counts table
    if name in ("persons.idomaar", "persons.csv", "artists.dat"):
        with pytest.raises(DataFormatError, match="no records to read"):
            read_artists(folder, layout=layout)


def test_a_tracks_file_cut_in_half_is_an_error_with_the_share(tmp_path: Path) -> None:
    folder = small_idomaar(tmp_path / "d", n_tracks=40)
    keep_lines(folder / "entities" / "tracks.idomaar", 20)
    with pytest.raises(DataFormatError) as info:
        read_plays(folder)
    assert info.value.path.name == "tracks.idomaar" and info.value.line is None
    assert re.search(r"looks truncated: 50% of the plays \(20 of 40\) name tracks", str(info.value))
    with pytest.warns(ReadWarning, match=r"tracks.idomaar: looks truncated: 50%"):
        df = read_plays(folder, errors="skip")
    assert df.attrs["report"]["plays_unknown_track"] == 20
    assert int(df["plays"].sum()) == 20
    # the caller may accept more
    assert len(read_plays(folder, max_unknown_share=0.5)) == 20


def test_a_persons_file_cut_in_half_is_an_error(tmp_path: Path) -> None:
    folder = small_idomaar(tmp_path / "d", n_tracks=40)
    keep_lines(folder / "entities" / "persons.idomaar", 10)
    with pytest.raises(
        DataFormatError, match=r"^persons.idomaar: looks truncated: 75% of the artist"
    ):
        read_plays(folder)
    csv = small_csv(tmp_path / "c", 40)
    keep_lines(csv / "entities" / "persons.csv", 11)  # the header and 10 artists
    with pytest.raises(DataFormatError, match=r"^persons.csv: looks truncated: 75%"):
        read_plays(csv)
    het = small_hetrec(tmp_path / "h", 40)
    keep_lines(het / "artists.dat", 21)
    with pytest.raises(DataFormatError, match=r"^artists.dat: looks truncated"):
        read_plays(het)


def test_the_unknown_share_threshold_is_inclusive(tmp_path: Path) -> None:
    """One play in 20 (5%) to a missing track is accepted by default, two (10%) are not."""
    assert MAX_UNKNOWN_SHARE == 0.05
    folder = small_idomaar(tmp_path / "d", n_tracks=20)
    keep_lines(folder / "entities" / "tracks.idomaar", 19)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning either
        assert read_plays(folder).attrs["report"]["plays_unknown_track"] == 1
    keep_lines(folder / "entities" / "tracks.idomaar", 18)
    with pytest.raises(DataFormatError, match="10% of the plays"):
        read_plays(folder)
    with pytest.raises(ValueError, match="max_unknown_share"):
        read_plays(folder, max_unknown_share=2)


# --------------------------------------------------------------------------------------------------
# 2. The fast path accepts only what the JSON parser accepts


FAST_PATH_LIES = {
    "letter inside a track id": ('"type":"track","id":11,', '"type":"track","id":1x1,'),
    "letter after a value": ('"playratio":1.00,', '"playratio":1.0x,'),
    "leading zero in a track id": ('"type":"track","id":11,', '"type":"track","id":011,'),
    "duplicate id key": ('"type":"track","id":11,', '"type":"track","id":11,"id":12,'),
    "object nested in a value": ('"action":"play"}', '"action":{"type":"track","id":12}}'),
    "second subjects key": ("]}", '],"subjects":[{"type":"user","id":9}]}'),
    "numtracks not JSON": ('{"numtracks":2,', '{"numtracks":2x,'),
}


@pytest.mark.parametrize("case", sorted(FAST_PATH_LIES))
def test_the_fast_path_rejects_what_json_rejects(tmp_path: Path, case: str) -> None:
    old, new = FAST_PATH_LIES[case]
    good = session_line(5, 1005, 3, [11, 12])
    assert old in good
    bad = good.replace(old, new, 1)
    persons = [person_line(1, "A"), person_line(2, "B")]
    tracks = [track_line(11, [1]), track_line(12, [2])]
    sessions = [session_line(1, 1001, 3, [11]), bad, session_line(2, 1002, 3, [12])]
    folder = write_idomaar(tmp_path / "d", persons, tracks, sessions)
    try:
        parsed = readers._slow_session(bad.encode())
    except readers._LineError:
        parsed = None
    got = []
    for chunk_lines in (1, 100_000):  # alone in its block, or beside the other lines
        try:
            got.append(scan_plays(folder, chunk_lines=chunk_lines).plays)
        except DataFormatError as e:
            assert (e.path.name, e.line) == ("sessions.idomaar", 2)
            got.append(None)
    if parsed is None:  # JSON rejects it: so must the reader, alone or not
        assert got == [None, None]
    else:  # a legal variant (duplicate keys: the last wins): read as json reads it
        assert got[0] is not None and got[1] is not None
        pd.testing.assert_frame_equal(got[0], got[1])
        users_tracks = Counter({(3, 1): 1, (3, 2): 1})
        for t in parsed[3]:
            users_tracks[(parsed[2], {11: 1, 12: 2}[t])] += 1
        assert_plays_equal(got[0], plays_frame(users_tracks))


def test_the_id_252x237305_of_the_issue(tmp_path: Path) -> None:
    bad = session_line(5, 1005, 3, [252]).replace('"id":252,', '"id":252x237305,')
    folder = write_idomaar(
        tmp_path / "d",
        [person_line(1, "A"), person_line(2, "B")],
        [track_line(252, [1]), track_line(7, [2])],
        [session_line(1, 1001, 3, [7]), bad],
    )
    with pytest.raises(DataFormatError, match=r"^sessions.idomaar:2: linked JSON is not valid"):
        read_plays(folder)
    df = read_plays(folder, errors="skip", max_unknown_share=1)
    assert_plays_equal(df, plays_frame(Counter({(3, 2): 1})))  # nothing credited to artist 1
    assert df.attrs["report"]["skipped_lines_sessions"] == 1


# --------------------------------------------------------------------------------------------------
# 3. Every exception from parsing a line is a DataFormatError


def deep_session(depth: int = 5000) -> str:
    good = session_line(9, 1009, 3, [11])
    return good.replace('"playratio":1.00', '"playratio":' + "[" * depth + "]" * depth)


@pytest.mark.parametrize("chunk_lines", [1, 100_000])
def test_deeply_nested_json_is_a_data_format_error(tmp_path: Path, chunk_lines: int) -> None:
    ordinary_bad = session_line(8, 1008, 3, [11])[:-10]
    sessions = [session_line(1, 1001, 3, [11]), deep_session(), ordinary_bad]
    folder = write_idomaar(tmp_path / "d", [person_line(1, "A")], [track_line(11, [1])], sessions)
    with pytest.raises(DataFormatError) as info:
        scan_plays(folder, chunk_lines=chunk_lines)
    assert (info.value.path.name, info.value.line) == ("sessions.idomaar", 2)
    assert "nested too deeply" in info.value.reason
    scan = scan_plays(folder, chunk_lines=chunk_lines, errors="skip")
    assert scan.report.skipped_by_file["sessions"] == 2
    assert_plays_equal(scan.plays, plays_frame(Counter({(3, 1): 1})))


def test_an_unexpected_exception_in_a_parser_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_idomaar(
        tmp_path / "d",
        [person_line(1, "A"), person_line(2, "B")],
        [track_line(11, [1])],
        [session_line(1, 1001, 3, [11])],
    )

    def broken(line: bytes, strict: bool = True):
        raise KeyError("boom")

    monkeypatch.setattr(readers, "_fast_persons", lambda lines, names: None)
    monkeypatch.setattr(readers, "_slow_person", broken)
    with pytest.raises(DataFormatError, match=r"^persons.idomaar:1: .*KeyError"):
        read_plays(folder)


# --------------------------------------------------------------------------------------------------
# 4. The result depends neither on the neighbours nor on chunk_lines


def test_skip_counts_do_not_depend_on_chunk_lines(tmp_path: Path) -> None:
    """A line the old fast path accepted alone (252x...) next to an ordinary bad line."""
    lie = session_line(2, 1002, 3, [11]).replace('"id":11,', '"id":11x5,')
    bad = session_line(3, 1003, 4, [11])[:-5]
    sessions = [session_line(1, 1001, 3, [11]), lie, bad, session_line(4, 1004, 4, [11])]
    folder = write_idomaar(tmp_path / "d", [person_line(1, "A")], [track_line(11, [1])], sessions)
    scans = [scan_plays(folder, errors="skip", chunk_lines=c) for c in (1, 2, 3, 100_000)]
    with block_bytes(100):
        scans.append(scan_plays(folder, errors="skip"))
    for scan in scans:
        assert scan.report.skipped_by_file["sessions"] == 2
        pd.testing.assert_frame_equal(scan.plays, scans[0].plays)
        pd.testing.assert_frame_equal(scan.sessions, scans[0].sessions)
    assert scans[0].sessions["session_id"].tolist() == [1, 4]
    for c in (1, 100_000):
        with pytest.raises(DataFormatError) as info:
            scan_plays(folder, chunk_lines=c)
        assert info.value.line == 2


# --------------------------------------------------------------------------------------------------
# 5. Names that are not valid UTF-8


def latin1_folder(tmp_path: Path, layout: str, escaped: bool) -> tuple[Path, str, int]:
    """A folder whose second artist is named 'Björk' in Latin-1 (raw, or URL-encoded %F6)."""
    raw = b"Bj%F6rk" if escaped else b"Bj\xf6rk"
    if layout == "idomaar":
        folder = small_idomaar(tmp_path / "d", 4)
        path = folder / "entities" / "persons.idomaar"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = b'person\t1\t-1\t{"MBID":null, "name":"' + raw + b'"}\t{}\n'
        return _write(path, lines), "persons.idomaar", 2
    if layout == "csv":
        folder = small_csv(tmp_path / "d", 4)
        path = folder / "entities" / "persons.csv"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[2] = b"1;" + raw + b"\n"
        return _write(path, lines), "persons.csv", 3
    folder = small_hetrec(tmp_path / "d", 4)
    path = folder / "artists.dat"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b"1\t" + raw + b"\thttp://x\tp\n"
    return _write(path, lines), "artists.dat", 3


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path.parent.parent if path.parent.name == "entities" else path.parent


@pytest.mark.parametrize(
    ("layout", "escaped"),
    [
        ("idomaar", False),
        ("idomaar", True),
        ("csv", False),
        ("csv", True),
        ("hetrec", False),
    ],  # fmt: skip
)
def test_names_not_utf8_alike_in_every_form(tmp_path: Path, layout: str, escaped: bool) -> None:
    folder, name, line = latin1_folder(tmp_path, layout, escaped)
    for read in (read_artists, read_plays):
        with pytest.raises(DataFormatError) as info:
            read(folder, layout=layout)
        assert (info.value.path.name, info.value.line) == (name, line)
        assert "not valid UTF-8" in info.value.reason
    artists = read_artists(folder, layout=layout, errors="skip")
    assert artists["name"].tolist()[1] == "Bj\ufffdrk"
    assert artists["name"].tolist()[0] == "Artist 0"
    assert artists.attrs["report"]["not_utf8_lines"] == 1
    assert artists.attrs["report"]["skipped_lines"] == 0
    plays = read_plays(folder, layout=layout, errors="skip")
    assert plays.attrs["report"]["not_utf8_lines"] == 1
    assert plays.attrs["report"]["plays_unknown_artist"] == 0  # the artist is kept


def test_valid_utf8_names_stay_on_the_fast_path(tmp_path: Path) -> None:
    folder = write_idomaar(
        tmp_path / "d",
        [person_line(1, "Sigur Rós"), person_line(2, "Björk")],
        [track_line(11, [1]), track_line(12, [2])],
        [session_line(1, 1001, 3, [11, 12])],
    )
    path = folder / "entities" / "persons.idomaar"
    path.write_bytes(path.read_bytes().replace(b"Bj%C3%B6rk", "Björk".encode()))  # raw UTF-8
    df = read_artists(folder)
    assert df["name"].tolist() == ["Sigur Rós", "Björk"]
    assert df.attrs["report"]["slow_path_lines"] == 0 and df.attrs["report"]["not_utf8_lines"] == 0


# --------------------------------------------------------------------------------------------------
# 6. A last line without a newline


CUT_CASES = {
    "csv sessions, list cut between ids": (
        "csv",
        "relations/sessions_short.csv",
        b"99;1;event.session;2000;3,4",
        12,
    ),
    "csv sessions, empty list": (
        "csv",
        "relations/sessions_short.csv",
        b"99;1;event.session;2000;",
        12,
    ),
    "csv persons": ("csv", "entities/persons.csv", b"77;Artis", 22),
    "hetrec plays": ("hetrec", "user_artists.dat", b"1\t3\t5", 22),
    "hetrec artists": ("hetrec", "artists.dat", b"77\tArtist\thttp://x/", 22),
}


@pytest.mark.parametrize("case", sorted(CUT_CASES))
def test_a_last_line_without_newline_may_be_cut(tmp_path: Path, case: str) -> None:
    layout, rel, last, lineno = CUT_CASES[case]
    folder = MAKERS[layout](tmp_path / "d")
    reference = scan_plays(folder)
    path = folder / rel
    path.write_bytes(path.read_bytes() + last)
    with pytest.raises(DataFormatError) as info:
        scan_plays(folder)
    assert (info.value.path.name, info.value.line) == (Path(rel).name, lineno)
    assert "does not end with a newline" in info.value.reason
    with pytest.warns(ReadWarning, match="1 malformed line skipped"):
        scan = scan_plays(folder, errors="skip")
    assert scan.report.possibly_truncated_lines == 1
    assert scan.report.skipped_lines == 1
    pd.testing.assert_frame_equal(scan.plays, reference.plays)
    # the same line with its newline is read
    path.write_bytes(path.read_bytes() + b"\n")
    assert scan_plays(folder).report.possibly_truncated_lines == 0


def test_a_last_line_that_can_be_checked_is_read(tmp_path: Path) -> None:
    folder = small_csv(tmp_path / "c")
    path = folder / "relations" / "sessions_short.csv"
    path.write_bytes(path.read_bytes() + b'99;1;event.session;2000;"3,4"')  # the quote closes it
    assert scan_plays(folder).report.sessions_read == 11
    path.write_bytes(path.read_bytes()[:-1])  # now cut inside the quotes
    with pytest.raises(DataFormatError, match=r"^sessions_short.csv:12: ArtistsID entry 1"):
        scan_plays(folder)
    crlf = small_hetrec(tmp_path / "h")
    path = crlf / "user_artists.dat"
    path.write_bytes(path.read_bytes() + b"1\t3\t5\r")  # a CRLF file cut after the CR
    assert scan_plays(crlf).report.plays_read == sum(range(1, 21)) + 5
    ido = small_idomaar(tmp_path / "i")
    path = ido / "relations" / "sessions.idomaar"
    text = path.read_bytes()
    path.write_bytes(text[:-1])  # the JSON shows the line is whole
    assert scan_plays(ido).report.sessions_read == 10
    path.write_bytes(text[:-3])  # and that it is not
    with pytest.raises(DataFormatError, match=r"^sessions.idomaar:10: linked JSON is truncated"):
        scan_plays(ido)


# --------------------------------------------------------------------------------------------------
# 7. Compressed and unreadable files


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize("layout", ["idomaar", "csv", "hetrec"])
def test_compressed_files_are_read_transparently(tmp_path: Path, layout: str, suffix: str) -> None:
    plain = MAKERS[layout](tmp_path / "plain")
    packed = MAKERS[layout](tmp_path / "packed")
    for path in [p for p in packed.rglob("*") if p.is_file()]:
        path.with_name(path.name + suffix).write_bytes(COMPRESSORS[suffix](path.read_bytes()))
        path.unlink()
    assert detect_layout(packed) == layout
    a, b = scan_plays(plain), scan_plays(packed, chunk_lines=3)
    pd.testing.assert_frame_equal(a.plays, b.plays)
    if a.sessions is not None:
        pd.testing.assert_frame_equal(a.sessions, b.sessions)
    pd.testing.assert_frame_equal(read_artists(plain), read_artists(packed))


def test_a_gz_sessions_file_alone_is_found_and_read(tmp_path: Path, capsys) -> None:
    folder = small_idomaar(tmp_path / "d")
    expected = read_plays(folder)
    path = folder / "relations" / "sessions.idomaar"
    (folder / "relations" / "sessions.idomaar.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    pd.testing.assert_frame_equal(read_plays(folder, progress=True), expected)
    assert "sessions.idomaar.gz" in capsys.readouterr().err


def test_missing_files_mention_the_compressed_forms(tmp_path: Path) -> None:
    folder = small_idomaar(tmp_path / "d")
    (folder / "relations" / "sessions.idomaar").unlink()
    with pytest.raises(FileNotFoundError, match=r"\.gz, \.bz2 or \.xz"):
        read_plays(folder, layout="idomaar")
    with pytest.raises(DataFormatError, match=r"\.gz, \.bz2 or \.xz"):
        detect_layout(folder)


UNREADABLE = {
    "gzip bytes under the plain name": (
        lambda data: gzip.compress(data),
        r"gzip-compressed data: name it sessions.idomaar.gz",
    ),
    "bzip2 bytes under the plain name": (lambda data: bz2.compress(data), r"bzip2-compressed"),
    "xz bytes under the plain name": (lambda data: lzma.compress(data), r"xz-compressed"),
    "CR-only line endings": (lambda data: data.replace(b"\n", b"\r"), r"CR-only line endings"),
    "UTF-16": (lambda data: data.decode().encode("utf-16"), r"UTF-16"),
    "a zip archive": (lambda data: b"PK\x03\x04" + data, r"zip archive"),
    "binary": (lambda data: b"\x00\x01\x02" * 100, r"binary data"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_unreadable_bytes_say_what_they_look_like(tmp_path: Path, case: str, errors: str) -> None:
    transform, message = UNREADABLE[case]
    folder = small_idomaar(tmp_path / "d")
    path = folder / "relations" / "sessions.idomaar"
    path.write_bytes(transform(path.read_bytes()))
    with pytest.raises(DataFormatError, match=rf"^sessions.idomaar: .*{message}"):
        read_plays(folder, errors=errors)


@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_a_file_of_which_nothing_can_be_read_is_an_error(tmp_path: Path, errors: str) -> None:
    folder = small_idomaar(tmp_path / "d")
    csv = small_csv(tmp_path / "c")
    # the CSV sessions under the idomaar name: every line is malformed
    (folder / "relations" / "sessions.idomaar").write_bytes(
        (csv / "relations" / "sessions_short.csv").read_bytes()
    )
    with pytest.raises(DataFormatError, match=r"^sessions.idomaar:1: expected 5 fields"):
        read_plays(folder)
    with pytest.raises(DataFormatError, match=r"^sessions.idomaar: not one of its 11 lines could"):
        read_plays(folder, errors="skip")


@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_a_corrupt_or_cut_compressed_file_is_an_error(tmp_path: Path, errors: str) -> None:
    folder = small_idomaar(tmp_path / "d", n_tracks=2000)
    path = folder / "relations" / "sessions.idomaar"
    data = gzip.compress(path.read_bytes())
    path.unlink()
    gz = folder / "relations" / "sessions.idomaar.gz"
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataFormatError, match=r"^sessions.idomaar.gz(:\d+)?: .*(cut short|decompress)"
    ):
        read_plays(folder, errors=errors)
    gz.write_bytes(b"not gzip at all\n")
    with pytest.raises(DataFormatError, match=r"^sessions.idomaar.gz: .*cannot be decompressed"):
        read_plays(folder, errors=errors)


# --------------------------------------------------------------------------------------------------
# Minor points


def test_numtracks_is_checked_against_the_objects(tmp_path: Path) -> None:
    good = session_line(2, 1002, 3, [11, 11])
    sessions = [session_line(1, 1001, 3, [11]), good.replace('"numtracks":2', '"numtracks":3')]
    folder = write_idomaar(tmp_path / "d", [person_line(1, "A")], [track_line(11, [1])], sessions)
    scans = [scan_plays(folder)]
    with block_bytes(10):
        scans.append(scan_plays(folder))
    (folder / "relations" / "sessions.idomaar").write_text(
        "\n".join(s.replace(" {", "\t{", 1) for s in sessions) + "\n"  # the slow path
    )
    scans.append(scan_plays(folder))
    assert scans[-1].report.slow_path_lines == 2
    for scan in scans:
        assert scan.report.numtracks_mismatch == 1
        assert scan.plays.attrs["report"]["numtracks_mismatch"] == 1
        assert_plays_equal(scan.plays, plays_frame(Counter({(3, 1): 3})))


def test_extra_csv_person_fields_are_an_error(tmp_path: Path) -> None:
    folder = small_csv(tmp_path / "c", 4)
    path = folder / "entities" / "persons.csv"
    path.write_bytes(path.read_bytes().replace(b"1;Artist+1\n", b"1;Artist+1;extra\n"))
    with pytest.raises(DataFormatError, match=r"^persons.csv:3: expected 2 ';'-separated fields"):
        read_artists(folder)
    path.write_bytes(path.read_bytes().replace(b"1;Artist+1;extra\n", b'1;"Artist;1"\n'))
    assert read_artists(folder)["name"].tolist()[1] == "Artist;1"  # inside quotes: the name's


def test_a_long_csv_line_on_the_slow_path(tmp_path: Path) -> None:
    artists = list(range(5, 200_000, 3))
    sessions = [csv_session(1, 1, 7, artists), "2;x;event.session;2;1"]
    folder = write_csv(tmp_path / "c", [f"{a};A" for a in range(200_000)], sessions)
    df = read_plays(folder, errors="skip")
    assert df.attrs["report"]["slow_path_lines"] == 2
    assert df["artist_id"].tolist() == artists and set(df["plays"]) == {1}


def test_permission_denied_names_the_folder_of_the_form_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = small_csv(tmp_path / "c", 4)
    real = Path.is_file

    def is_file(self: Path) -> bool:
        if self.parent.name == "entities":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(PermissionError) as info:
        detect_layout(folder)
    message = str(info.value)
    assert "CSV form" in message and "entities/persons.csv" in message
    assert "idomaar" not in message


def test_the_report_has_the_new_counts_for_chapter_01(tmp_path: Path) -> None:
    report = scan_plays(small_idomaar(tmp_path / "d")).plays.attrs["report"]
    for key in ("numtracks_mismatch", "not_utf8_lines", "possibly_truncated_lines", "empty_files"):
        assert report[key] == 0
    assert all(isinstance(v, int | str) for v in report.values())
    assert np.int64(report["sessions_read"]) == 10


def test_worker_processes_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large files have their fast path run in worker processes: the same plays and errors."""
    folder = small_idomaar(tmp_path / "d", n_tracks=400)
    path = folder / "relations" / "sessions.idomaar"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[150] = lines[150].replace(b'"id":', b'"id":x', 1)
    path.write_bytes(b"".join(lines))
    expected = scan_plays(folder, errors="skip")
    assert expected.report.skipped_lines == 1 and expected.report.sessions_read == 199
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 10_000)
    monkeypatch.setenv("THIRTYMUSIC_READ_WORKERS", "1")
    with block_bytes(2000):  # many blocks in flight, one of them bad
        got = scan_plays(folder, chunk_lines=50, errors="skip")
    pd.testing.assert_frame_equal(got.plays, expected.plays)
    pd.testing.assert_frame_equal(got.sessions, expected.sessions)
    got_counts, want_counts = got.report.as_dict(), expected.report.as_dict()
    assert 0 < got_counts.pop("slow_path_lines") < 50  # only the bad line's block went slow
    want_counts.pop("slow_path_lines")
    assert got_counts == want_counts


@pytest.mark.parametrize("form", ["plain", "no final newline", "gzip"])
def test_worker_processes_name_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Workers that read their own spans of the file (plain files) or get the bytes (compressed
    ones) report a bad line by the same number, and read the same plays, as one process."""
    folder = small_idomaar(tmp_path / "d", n_tracks=400)
    path = folder / "relations" / "sessions.idomaar"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[163] = lines[163].replace(b'"id":', b'"id":x', 1)
    data = b"".join(lines)
    if form == "no final newline":
        data = data.rstrip(b"\n")
    if form == "gzip":
        path.unlink()
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as one:
        scan_plays(folder)
    expected = scan_plays(folder, errors="skip")
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 10_000)
    monkeypatch.setenv("THIRTYMUSIC_READ_WORKERS", "1")
    with block_bytes(1500):
        with pytest.raises(DataFormatError) as many:
            scan_plays(folder)
        got = scan_plays(folder, errors="skip")
    assert one.value.line == many.value.line == 164
    assert str(one.value) == str(many.value)
    pd.testing.assert_frame_equal(got.plays, expected.plays)
    assert got.report.skipped_lines == expected.report.skipped_lines == 1


class _NeverDone:
    """A worker's future that is never done before it is asked for: the main process must then
    run the fast path on the spans that follow it."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def done(self) -> bool:
        return False

    def result(self):
        return self.fn(*self.args)


def test_blocks_the_main_process_takes_while_the_worker_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the worker always busy, the main process parses the later spans itself: the same plays,
    sessions and counts, in file order."""
    folder = small_idomaar(tmp_path / "d", n_tracks=400)
    path = folder / "relations" / "sessions.idomaar"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[120] = lines[120].replace(b'"id":', b'"id":x', 1)
    path.write_bytes(b"".join(lines))
    expected = scan_plays(folder, errors="skip")
    taken = []

    class CountingDone(readers._DoneSpan):
        def __init__(self, fd, start, end, fast) -> None:
            taken.append(end - start)
            super().__init__(fd, start, end, fast)

    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 10_000)
    monkeypatch.setenv("THIRTYMUSIC_READ_WORKERS", "1")
    monkeypatch.setattr(readers, "_submit", lambda pool, fn, *args: _NeverDone(fn, *args))
    monkeypatch.setattr(readers, "_DoneSpan", CountingDone)
    with block_bytes(2000):
        got = scan_plays(folder, errors="skip")
    assert len(taken) > 10  # most blocks were the main process's own
    pd.testing.assert_frame_equal(got.plays, expected.plays)
    pd.testing.assert_frame_equal(got.sessions, expected.sessions)
    got_counts, want_counts = got.report.as_dict(), expected.report.as_dict()
    got_counts.pop("slow_path_lines"), want_counts.pop("slow_path_lines")
    assert got_counts == want_counts and got.report.skipped_lines == 1
