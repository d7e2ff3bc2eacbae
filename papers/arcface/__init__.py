"""Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (CVPR 2019; the journal
version adds sub-center ArcFace, first in "Sub-center ArcFace", ECCV 2020).

ArcFace adds the margin to the angle of the target class, ``s cos(theta_y + m)``, where CosFace subtracts it
from the cosine and normalized softmax has none. Sub-center ArcFace gives each class K sub-centers; a sample
needs to be close to one of them only, so under label noise a dominant sub-center collects the clean
samples and the others the noisy ones.

Everything this paper needs lives in ``common/``: the ``normface``, ``cosface``, ``arcface`` and
``subcenter_arcface`` heads, symmetric label noise (``common.data.transforms``), the retrieval and
verification metrics and the dominant sub-center analysis of the evaluation. This package holds
``paper.yaml``, its section of ``params.yaml``, and ``report.py`` (the sub-center table).
"""
