"""Names of projects, artifacts and aliases, entry paths and version specs (artfs._names)."""

from __future__ import annotations

import pytest

from artfs import InvalidName, InvalidPath, Spec, parse_spec
from artfs._names import check_alias, check_name, check_path, is_version, join_path, parse_version

# --------------------------------------------------------------------------------------------
# project / artifact names
# --------------------------------------------------------------------------------------------

GOOD_NAMES = ["cycling", "bike-dataset", "bike_dataset", "Bike.Dataset.2", "_private", "0", "a", "9lives",
              "x" * 128, "a.b-c_d"]
BAD_NAMES = [
    "", "bad..name", ".hidden", "-x", "a/b", "a b", "a\x00b", "x" * 129, "été", "a:b", "a\\b",
    "abc\n", "\nabc", "a\tb", "..", ".", "*", None, 3, b"bytes",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_project_and_artifact_names(name):
    assert check_name(name, "project") == name
    assert check_name(name, "artifact") == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_project_and_artifact_names(name):
    with pytest.raises(InvalidName):
        check_name(name, "project")


def test_invalid_name_message_says_what_and_which():
    with pytest.raises(InvalidName, match=r"invalid artifact 'bad\.\.name'"):
        check_name("bad..name", "artifact")


# --------------------------------------------------------------------------------------------
# aliases
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["latest", "best", "prod", "v", "vx", "version2", "release-1.0", "v1a", "V"])
def test_valid_aliases(alias):
    assert check_alias(alias) == alias


@pytest.mark.parametrize(
    "alias",
    ["v12", "v0", "v1", "v01", "v007", "draft", "", "bad..name", ".hidden", "-x", "a/b", "best\n", "x" * 129,
     None, ["best"]],
)
def test_invalid_aliases(alias):
    with pytest.raises(InvalidName):
        check_alias(alias)


def test_alias_that_looks_like_a_version_says_so():
    with pytest.raises(InvalidName, match="look like a version"):
        check_alias("v12")
    with pytest.raises(InvalidName, match="reserved"):
        check_alias("draft")


# --------------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------------

def test_versions():
    assert is_version("v0") and is_version("v12") and is_version("v100")
    for s in ("v", "v01", "V1", "1", "v-1", "v1.0", "v1\n", "latest", ""):
        assert not is_version(s), s
    assert parse_version("v12") == 12
    with pytest.raises(InvalidName):
        parse_version("v1\n")


# --------------------------------------------------------------------------------------------
# entry paths
# --------------------------------------------------------------------------------------------

GOOD_PATHS = [
    "a", "a/b/c.txt", "données/été.txt", "日本/ファイル", "emoji-😀.bin", "...", "a/.hidden", "a b/c d",
    "back\\slash", "x" * 255, "/".join(["d"] * 50) + "/f", "a/b..c", "..a", "a..",
]
BAD_PATHS = [
    "", "../x", "a/../b", "a/..", "..", ".", "./a", "a/./b", "/abs", "/etc/passwd", "a//b", "a/", "/",
    "a\x00b", "\x00", b"a/\xffb", "bad-\udcff-surrogate", "x" * 256, "a/" + "y" * 256, None, 5,
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_valid_entry_paths(path):
    assert check_path(path) == path


def test_utf8_bytes_paths_are_decoded():
    assert check_path("données/été.txt".encode()) == "données/été.txt"


@pytest.mark.parametrize("path", BAD_PATHS)
def test_invalid_entry_paths(path):
    with pytest.raises(InvalidPath):
        check_path(path)


def test_invalid_path_messages_name_the_problem():
    with pytest.raises(InvalidPath, match="absolute"):
        check_path("/etc/passwd")
    with pytest.raises(InvalidPath, match="NUL"):
        check_path("a\x00b")
    with pytest.raises(InvalidPath, match="UTF-8"):
        check_path(b"\xff\xfe")
    with pytest.raises(InvalidPath, match=r"'\.\.'"):
        check_path("../x")


def test_join_path():
    assert join_path(None, "a/b") == "a/b"
    assert join_path("", "a") == "a"
    assert join_path("images", "cat.png") == "images/cat.png"
    assert join_path("/images/", "cat.png") == "images/cat.png"
    with pytest.raises(InvalidPath):
        join_path("images", "../../etc/passwd")
    with pytest.raises(InvalidPath):
        join_path("..", "x")


# --------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------

def test_parse_spec_forms():
    assert parse_spec("cycling/bike-dataset") == Spec("cycling", "bike-dataset", None, None)
    assert parse_spec("cycling/bike-dataset", need_ref=True) == Spec("cycling", "bike-dataset", None, "latest")
    assert parse_spec("cycling/bike-dataset:v3") == Spec("cycling", "bike-dataset", 3, None)
    assert parse_spec("cycling/bike-dataset:best") == Spec("cycling", "bike-dataset", None, "best")
    assert parse_spec("cycling/bike-dataset:latest").alias == "latest"
    assert parse_spec("bike-dataset:v0", default_project="cycling") == Spec("cycling", "bike-dataset", 0, None)
    assert str(parse_spec("p/a:v3")) == "p/a:v3"
    assert str(parse_spec("p/a")) == "p/a:latest"
    assert parse_spec("p/a:v3").ref == "v3"
    assert parse_spec("p/a:best").ref == "best"


@pytest.mark.parametrize(
    "spec",
    ["", "bike-dataset", "p/a:", "p/a:draft", "p/a:v01", "p/a/b", "p/a:b/c", "/a", "p/", "p/.a", "-p/a",
     "p/a:best\n", "p/a:v1:v2", "bad..p/a", "p/a:../x"],
)
def test_parse_spec_rejects(spec):
    with pytest.raises(InvalidName):
        parse_spec(spec)
