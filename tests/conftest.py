"""Shared test setup. TF's legacy cells need TF_USE_LEGACY_KERAS=1 before TensorFlow's first import in every
process; xdist workers inherit the environment of the process that starts them."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
