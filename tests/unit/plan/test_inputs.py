import os

import pytest

from pipeline.media.source import video_id_for
from pipeline.plan.inputs import InputError, expand_inputs


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_directories_are_searched_recursively_for_videos(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "sub" / "b.MKV")
    touch(tmp_path / "sub" / "notes.txt")
    videos, warnings = expand_inputs([str(tmp_path)])
    assert [os.path.basename(v.path) for v in videos] == ["a.mp4", "b.MKV"]
    assert warnings == []


def test_list_files_resolve_relative_to_the_list_and_skip_comments(tmp_path):
    touch(tmp_path / "clips" / "a.mp4")
    listing = touch(
        tmp_path / "clips" / "list.txt",
        b"# backlog\na.mp4\n\n" + str(tmp_path / "clips" / "a.mp4").encode(),
    )
    videos, _ = expand_inputs([f"@{listing}"])
    assert len(videos) == 1  # the same file twice is processed once


def test_bad_files_are_reported_not_raised(tmp_path):
    """An empty file, or a list entry that is missing, is a video to report in videos.parquet."""
    touch(tmp_path / "empty.mp4", b"")
    listing = tmp_path / "list.txt"
    listing.write_text("missing.mp4\n")
    videos, _ = expand_inputs([f"@{listing}", str(tmp_path / "empty.mp4")])
    assert [v.error for v in videos] == ["file not found", "empty file (0 bytes)"]


@pytest.mark.parametrize(
    "typed, hint",
    [
        ("clip.mpp4", "(did you mean {tmp}/clip.mp4?)"),
        ("other.mp4", "(no such file)"),
        ("nowhere/clip.mp4", "(no such folder: {tmp}/nowhere)"),
    ],
)
def test_a_named_input_that_does_not_exist_is_a_mistake_in_the_command(tmp_path, typed, hint):
    touch(tmp_path / "clip.mp4")
    with pytest.raises(InputError) as raised:
        expand_inputs([str(tmp_path / "clip.mp4"), str(tmp_path / typed)])
    assert str(raised.value) == f"input not found: {tmp_path / typed} " + hint.format(tmp=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_reported(tmp_path):
    path = touch(tmp_path / "locked.mp4")
    path.chmod(0)
    (video,), _ = expand_inputs([str(path)])
    assert "permission denied" in video.error


def test_empty_directory_alone_is_a_usage_error(tmp_path):
    with pytest.raises(InputError, match="no video files"):
        expand_inputs([str(tmp_path)])


def test_empty_directory_beside_videos_is_a_warning(tmp_path):
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "a.mp4")
    videos, warnings = expand_inputs([str(tmp_path / "empty"), str(tmp_path / "a.mp4")])
    assert len(videos) == 1 and "no video files in directory" in warnings[0]


def test_video_id_is_a_hash_safe_as_a_file_name():
    for name in ["../x.mp4", "a b'\"c.mp4", "line\nbreak.mp4", "вид.mp4"]:
        vid = video_id_for(os.path.abspath(name))
        assert len(vid) == 16 and all(c in "0123456789abcdef" for c in vid)


def test_path_objects_are_accepted_like_strings(tmp_path):
    from pipeline.plan.inputs import expand_inputs

    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    videos, _ = expand_inputs([video, str(video)])
    assert [v.path for v in videos] == [str(video)]


def test_one_file_given_three_ways_is_one_video(tmp_path):
    """The identity rule: a local file's real path. Through a symlink, a path with '..', and an
    @list entry relative to the list, it is the same video (one id, processed once)."""
    from pipeline.plan.inputs import expand_inputs

    (tmp_path / "videos" / "sub").mkdir(parents=True)
    real = tmp_path / "videos" / "cam.mp4"
    real.write_bytes(b"x" * 10)
    link = tmp_path / "shortcut.mp4"
    link.symlink_to(real)
    listing = tmp_path / "videos" / "list.txt"
    listing.write_text("cam.mp4\n")
    sources, _ = expand_inputs(
        [str(link), str(tmp_path / "videos" / "sub" / ".." / "cam.mp4"), f"@{listing}"]
    )
    assert len(sources) == 1 and sources[0].path == str(real)
    assert sources[0].video_id == video_id_for(str(real)) == video_id_for(str(link))


def test_object_identity_ignores_credentials_and_query():
    from pipeline.media.source import canonical_location

    ids = {
        video_id_for(u)
        for u in (
            "s3://bucket/cams/a.mp4",
            "s3://KEY:SECRET@bucket/cams/a.mp4",
            "s3://bucket/cams/a.mp4?versionId=3&X-Amz-Signature=abc",
        )
    }
    assert len(ids) == 1
    assert canonical_location("s3://KEY:SECRET@bucket/cams/a.mp4?x=1") == "s3://bucket/cams/a.mp4"
    assert video_id_for("s3://bucket/cams/b.mp4") not in ids


def test_object_keys_typed_with_spaces_are_the_escaped_keys():
    from pipeline.locations import InvalidUri, filesystem_from_uri
    from pipeline.media.source import canonical_location

    assert video_id_for("s3://b/cams/clip 1.mp4") == video_id_for("s3://b/cams/clip%201.mp4")
    assert canonical_location("s3://b/cams/clip 1.mp4") == "s3://b/cams/clip%201.mp4"
    fs, path = filesystem_from_uri("s3://b/cams/clip 1.mp4?region=us-east-1")
    assert path == "b/cams/clip 1.mp4"
    with pytest.raises(InvalidUri) as err:
        filesystem_from_uri("s3://KEY:SECRET@b/x.mp4?region=us-east-1&bad=%zz")
    assert "SECRET" not in str(err.value)


def test_the_id_set_agrees_with_a_python_set():
    """Random ids, ids that share their low bits, id 0 and the largest, repeats, and many merges
    of the recent ids into the sorted ones."""
    import random

    from pipeline.plan.inputs import IdSet

    rng = random.Random(7)
    keys = [rng.getrandbits(64) for _ in range(3000)]
    keys += [(i << 40) | 5 for i in range(1, 200)]  # one slot for all of them, at any table size
    keys += [0, 0, 1, 2**64 - 1]
    keys += rng.sample(keys, 500)  # repeats
    rng.shuffle(keys)
    ids, reference = IdSet(recent=8), set()
    for key in keys:
        assert ids.add(key) == (key not in reference)
        reference.add(key)
    assert len(ids) == len(reference)
    assert not any(ids.add(key) for key in reference)
