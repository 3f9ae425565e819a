"""Nearest-class-mean classification (Mensink et al., TPAMI 2013) of the frozen global embedding.

Each class is represented by the mean of its L2-normalised training features; a test image takes the class whose
mean is the most cosine-similar. No hyper-parameter is selected. Matrices use it as ``evaluations: {ncm: {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import normalize

from patchbench.benchmark.evaluations import EvalResult, Evaluation, register_evaluation


@dataclass(frozen=True)
class NcmSettings:
    """``l2_normalize``: L2-normalise the features before taking class means (cosine geometry)."""

    l2_normalize: bool = True


@register_evaluation("ncm")
class NearestClassMean(Evaluation):
    settings_class = NcmSettings
    reads = "global"
    needs = frozenset({"labels"})
    description = "nearest class mean of the global embedding (plugin example)"

    def run(self, inputs) -> EvalResult:
        prepare = normalize if self.settings.l2_normalize else np.asarray
        train = prepare(np.asarray(inputs.features("train"), dtype=np.float64))
        test = prepare(np.asarray(inputs.features("test"), dtype=np.float64))
        classifier = NearestCentroid().fit(train, inputs.labels("train"))
        accuracy = float((classifier.predict(test) == inputs.labels("test")).mean())
        return EvalResult(metrics={"top1": accuracy},
                          protocol=f"nearest class mean of the {inputs.readout} features (Euclidean on "
                                   f"{'L2-normalised' if self.settings.l2_normalize else 'raw'} features)",
                          probe_hparams={}, selection_rule="none: no hyper-parameter")
