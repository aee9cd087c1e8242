"""Option names and defaults of training and evaluation, free of torch.

The CLI builds its parsers (``--help``, ``--version``) from these without loading torch;
app.ml.train and app.ml.evaluate use the same names.
"""

from __future__ import annotations

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
# Detections per image that AP is computed at (COCOeval's usual 100 is too few for cells).
DEFAULT_MAX_DETS = 1000
# Proposals below this score are not shown to reviewers (the predictor's default cut).
DEFAULT_PROPOSAL_SCORE = 0.5
