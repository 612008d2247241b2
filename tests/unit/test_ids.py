import pytest_llem


def test_x():
    assert pytest_llem.__file__
