"""Adapters: one module per framework layout, translating weights, states and gradients to and from the
canonical layout (``reference.layout``) and running the framework natively.

No framework is imported here: each adapter imports its framework when it first runs.
"""

import os

# TF's tf.compat.v1 cells live in tf_keras, which TensorFlow uses only when this is set before its first
# import, in every process (xdist workers included). Setting it here, before any adapter can import TF,
# covers every process that reaches TensorFlow through this package; it does not stop `import keras` from
# being Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
