"""Shared by the env tests: ``no_warnings(fn, *args)`` calls fn and fails on any warning it raises."""

import warnings

import pytest


@pytest.fixture
def no_warnings():
    def call(fn, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args, **kwargs)
        assert not caught, [str(w.message) for w in caught]
        return result

    return call
