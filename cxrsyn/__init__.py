"""cxrsyn: can synthetic chest X-rays train a real diagnostic model?

Stages, one subpackage each: ``generate`` (prompt grid, generators, phantom), ``data`` (dataset folders,
DataModule), ``models`` (timm backbone inside a LightningModule), ``training`` (the run), ``evaluation``
(predictions and metrics).
"""

__version__ = "0.1.0"
