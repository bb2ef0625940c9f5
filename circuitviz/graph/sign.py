"""The sign convention every edge score follows, in words (written into every circuit file).

A module of its own, free of torch, so that files written by the dashboard and by the engine carry
the same sentence.
"""

SIGN_CONVENTION = (
    "score(u->d) = mean over examples of the sum over scored positions of "
    "(a_u(baseline) - a_u(clean)) . dm/dx_d, with the gradient taken on the clean input (EAP) or "
    "averaged along the interpolation path (EAP-IG): a first-order estimate of "
    "m(edge u->d patched to its baseline) - m(clean). Negative means the edge raises the metric on "
    "clean inputs (for logit_diff: it helps the correct answer); positive means it lowers it. "
    "Selection ranks edges by |score| unless told otherwise."
)
