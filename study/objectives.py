"""Training objectives: how a model's outputs become a loss and class probabilities.

Every model outputs one logit per class, so predictions (argmax) and the gradient attacks
(cross-entropy on the logits) work the same for all of them. What differs per model is the
loss it is trained with and what its outputs mean as probabilities:

* ``cross_entropy``: softmax probabilities (logreg, mlp, maxout, cnn).
* ``hinge``: a binary margin classifier f(x) = logit_1 - logit_0, trained with the mean of
  max(0, 1 - y f(x)) for y in {-1, +1} (linear-svm); probabilities are the softmax of the two
  logits, sigmoid(f), used only where a confidence is reported.
* ``one_vs_rest``: every class output is a probability of its own, p_k = exp(logit_k) with
  logit_k <= 0, trained with a binary cross-entropy per class (rbf). These need not sum to 1,
  so a model can be unsure of every class: Goodfellow's low confidence far from the data.
* ``triplet``: a metric-learning model (study.models.Triplet) trained with a triplet loss on its
  embedding; its logits (negative squared distances to the class centroids of its training
  embeddings) give softmax probabilities like any classifier's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def hinge(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    f = logits[:, 1] - logits[:, 0]
    return F.relu(1 - (2 * y - 1).to(f) * f).mean()


def one_vs_rest(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    target = F.one_hot(y, logits.shape[1]).to(logits)
    log_p = logits.clamp(max=-1e-6)  # log p_k; p = 1 exactly would make log(1 - p) infinite
    log_not_p = torch.log(-torch.expm1(log_p))
    return -(target * log_p + (1 - target) * log_not_p).sum(1).mean()


LOSSES = {"cross_entropy": cross_entropy, "hinge": hinge, "one_vs_rest": one_vs_rest}


def of(model: torch.nn.Module) -> str:
    """The objective a built model was registered with (study.models.build sets it)."""
    return getattr(model, "objective", "cross_entropy")


def training_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """J(x, y), the loss a model is trained with on a batch: its objective on its logits, or a
    triplet model's triplet loss on its embedding."""
    if of(model) == "triplet":
        return model.triplet_loss(model.embed(x), y)
    return LOSSES[of(model)](model(x), y)


def probabilities(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    if of(model) == "one_vs_rest":
        return logits.clamp(max=0).exp()
    return logits.softmax(1)
