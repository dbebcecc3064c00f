"""Sampling autoregressive image models one sub-pixel at a time, naively or from caches.

An autoregressive image model draws its ``D`` sub-pixels in order, each from a distribution that
depends on the values drawn before it. :func:`sample_in_order` runs that loop once for every
model; what changes between methods is only how the parameters of the next sub-pixel are
computed, by a :class:`StepState`:

- ``naive`` (:class:`FullPass`): the whole network over the whole image at every step — ``D``
  full passes, what most libraries do;
- ``cached``: each model's own state keeps the activations that later steps reuse and computes only
  what the next sub-pixel needs (Paine et al. 2016, "Fast Wavenet Generation Algorithm";
  Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models"). Each lives
  beside its model: ``models/autoregressive/pixelcnn_cache.py``, ``gated_pixelcnn_cache.py``,
  ``wavenet_cache.py``, ``rnn_cache.py`` and ``made_cache.py``; this package imports nothing from
  the models.

Every value is drawn by the model's ``draw`` from one uniform number per image and sub-pixel taken
from the same generator in the same order, so both methods return the same images for the same
seed (up to a floating-point tie at a CDF boundary, which the tests have never met).
"""

from densitylab.sampling.loop import METHODS, CachedState, FullPass, StepState, sample_in_order

__all__ = ["METHODS", "CachedState", "FullPass", "StepState", "sample_in_order"]
