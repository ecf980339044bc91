"""How a spec's `search:` becomes Ray Tune's search algorithm, scheduler and search space.

The one piece written here is ``FinalResultOptunaSearch``: Tune's OptunaSearch, told only a
trial's *final* metrics (after its evaluation), and recording the Optuna study's Pareto trials
in the results folder so compaction can mark them.
"""

from __future__ import annotations

import json

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from study import fsio, planning
from study.spec import StudySpec

PARETO_FILE = "optuna-pareto.json"
# Only a trial's last report, written after its rows, carries this key (study.trial.run_trial).
FINAL_MARKER = "rows"


def param_space(spec: StudySpec) -> dict:
    """Tune domains for the training axes. Optuna has no grid: there a grid is a categorical."""
    grid = tune.choice if spec.search.kind == "optuna" else tune.grid_search
    domain = {
        "grid": grid,
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    choices = planning.tune_choices(spec)
    return {
        n: a.values[0] if a.kind == "value" else domain[a.kind](list(choices[n]) if n in choices else a.values)
        for n, a in spec.train.items()
    }


class FinalResultOptunaSearch(OptunaSearch):
    """OptunaSearch that sees only final results, and writes the study's Pareto trials.

    Tune's OptunaSearch tells Optuna whatever a trial reported last. Our trials report
    per-epoch metrics while training, and a trial a scheduler stops never reports its
    robustness metrics: Optuna must count it as pruned, not as complete with early numbers.
    After every completion the Pareto set (``study.best_trials``, the non-dominated complete
    trials; the best one for a single objective) is written to ``<results>/optuna-pareto.json``
    with our trial ids, so it survives the driver and ``--resume``.
    """

    def __init__(self, *args, results_uri: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.results_uri = results_uri
        self.advsweep_ids: dict[int, str] = {}  # Optuna trial number -> our trial_id

    def on_trial_result(self, trial_id: str, result: dict):
        pass  # intermediate values are for Optuna's pruners; a Tune scheduler does the stopping

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        final = bool(result) and not error and FINAL_MARKER in result
        if final:
            self.advsweep_ids[self._ot_trials[trial_id].number] = result["advsweep_trial_id"]
        super().on_trial_complete(trial_id, result if final else None, error)
        self._write_pareto()

    def _write_pareto(self) -> None:
        states = [t.state.name for t in self._ot_study.get_trials(deepcopy=False)]
        best = self._ot_study.best_trials if "COMPLETE" in states else []
        doc = {
            "metric": self.metric if isinstance(self.metric, list) else [self.metric],
            "mode": self.mode if isinstance(self.mode, list) else [self.mode],
            "trials": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"),
            "pareto": [{"trial_id": self.advsweep_ids[t.number], "optuna_number": t.number, "values": t.values} for t in best],
        }
        fs, base = fsio.resolve(self.results_uri)
        fsio.write_atomic(fs, fsio.join(base, PARETO_FILE), json.dumps(doc, indent=2).encode())


def read_pareto(results_uri: str) -> set[str] | None:
    """Our trial ids in the Optuna study's Pareto set, or None when no Optuna search wrote one."""
    fs, base = fsio.resolve(results_uri)
    path = fsio.join(base, PARETO_FILE)
    if not fsio.exists(fs, path):
        return None
    return {t["trial_id"] for t in json.loads(fsio.read_bytes(fs, path))["pareto"]}


def search_algorithm(spec: StudySpec, results_uri: str):
    s = spec.search
    if s.kind == "optuna":
        return FinalResultOptunaSearch(metric=s.metric, mode=s.mode, seed=spec.seed, results_uri=results_uri)
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=s.max_concurrent or 0)


def scheduler(spec: StudySpec):
    sched = spec.search.scheduler
    if sched is None:
        return None
    # Never stop a trial on its final report (epoch == epochs): its rows are written by then,
    # and a stop there would only hide them from the searcher. Hence max_t one past the last epoch.
    return ASHAScheduler(
        time_attr="epoch",
        metric=sched.metric,
        mode=sched.mode,
        max_t=planning.max_epochs(spec) + 1,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )


def tune_config(spec: StudySpec, results_uri: str) -> tune.TuneConfig:
    s = spec.search
    sched = scheduler(spec)
    # Searcher and scheduler carry their own metrics; Tune refuses a second one in TuneConfig.
    plain = s.kind != "optuna" and sched is None
    return tune.TuneConfig(
        num_samples=s.num_samples,
        search_alg=search_algorithm(spec, results_uri),
        scheduler=sched,
        metric=s.metric if plain else None,
        mode=s.mode if plain else None,
        # Tune applies this limit to Searchers only; BasicVariantGenerator takes its own (above).
        max_concurrent_trials=s.max_concurrent if s.kind == "optuna" else None,
        reuse_actors=True,
    )
