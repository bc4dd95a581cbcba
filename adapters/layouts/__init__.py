"""The weight layouts of the frameworks, canonical <-> native, in pure NumPy: one module per framework.

Names, shapes, gate orders, biases, TF's forget_bias folding, activation names and a config inferred from native
shapes, each written once here. The runners (``adapters.pytorch``, ``adapters.tf_cell``, ...) and the file
formats (``adapters.formats``) both map weights through these modules, which import no framework: a mapping is
usable, and tested, where no framework is installed.
"""
