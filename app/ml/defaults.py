"""Option names and defaults of training, evaluation and inference, free of torch.

The CLI builds its parsers (``--help``, ``--version``) from these without loading torch;
app.ml.train and app.ml.evaluate use the same names.
"""

from __future__ import annotations

from enum import StrEnum

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
# Detections per image that AP is computed at (COCOeval's usual 100 is too few for cells).
DEFAULT_MAX_DETS = 1000
# Proposals below this score are not shown to reviewers (the predictor's default cut).
DEFAULT_PROPOSAL_SCORE = 0.5
# Peak learning rate of `maskloop train` (AdamW, fine-tuning a trained model on reviewed
# images). Measured with the loop benchmark on a project unlike the base model's data:
# 1e-3 lowered AP after the first round of a few images, 3e-4 raised it every round.
FINE_TUNE_LR = 3e-4
# Passes over the done images and images per step of `maskloop train` and the Train dialog.
FINE_TUNE_EPOCHS = 10
FINE_TUNE_BATCH_SIZE = 2


class Precision(StrEnum):
    """Inference precision a user asks for; ``auto`` is resolved per device by
    :func:`app.ml.precision.resolve_dtype`."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
