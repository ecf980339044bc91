"""advsweep's study library: what one trial runs (data, models, training, attacks, evaluators)."""

__version__ = "0.1.0"
