"""MaskLoop: instance-segmentation annotation with a Mask R-CNN in the loop."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("maskloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
