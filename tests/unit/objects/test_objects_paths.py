import pytest

from aifactory.objects import S3Error
from aifactory.objects.posix.paths import check_bucket_name, check_key, key_path, safe_prefix_dir


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "a/../../b",
        "a/./b",
        "./a",
        "a//b",
        "/abs",
        "a\0b",
        "",
        "x/.aifactory-tmp-1234",
        ".aifactory-meta",
        "a/" + "n" * 256,
        "k" * 1025,
    ],
)
def test_hostile_keys_are_rejected_with_s3_errors(key: str) -> None:
    with pytest.raises(S3Error) as caught:
        check_key(key)
    assert caught.value.code in ("InvalidArgument", "KeyTooLongError")
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.txt", "dir/", "ünï/cödé €", "a+b=c&d", ".hidden", "a..b"]
)
def test_ordinary_keys_pass_and_stay_inside(key: str) -> None:
    check_key(key)
    assert key_path("/root/bucket", key).startswith("/root/bucket/")


@pytest.mark.parametrize(
    "name", ["ab", "Upper", "-lead", "a..b", "192.168.1.1", ".aifactory", "x" * 64]
)
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as caught:
        check_bucket_name(name)
    assert caught.value.code == "InvalidBucketName"


def test_listing_prefixes_cannot_climb_out() -> None:
    assert safe_prefix_dir("a/b/c") == "a/b"
    assert safe_prefix_dir("abc") == ""
    assert safe_prefix_dir("../x") is None
    assert safe_prefix_dir("a/../../x/") is None
