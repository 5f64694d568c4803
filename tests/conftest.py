"""Hypothesis profiles and the devices every op test runs on.

`ci` (the default) keeps the suite within minutes on 2 cores and draws the same examples
every run; the long, freshly random search is `HYPOTHESIS_PROFILE=thorough python -m
pytest`. A failure prints a `@reproduce_failure` blob to replay it.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=12,
    derandomize=True,  # the same examples on every run: CI never fails by the luck of a draw
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEVICES = (
    ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])
)


@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    return request.param
