"""A fit that answers: the fitted law with its bootstrap, allocation, the benchmark's
form-error model and the range of the runs it saw, and the answers it gives (the loss of a
planned model, the compute-optimal model at a budget, the compute a loss needs), each with
its calibrated interval, warnings and the checks of ``scalelab.forecast.support``.

``scalelab fit``/``predict``/``backtest``, dashboards, a sweep's closing fit and the studies
answer through :func:`fit_runs` and :meth:`Fit.answer`; ``scalelab.results.fits`` only stores
and reads these records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from scalelab.forecast.allocation import AllocationFit, compute_optimal
from scalelab.forecast.averaging import fit_average
from scalelab.forecast.bootstrap import BootstrapResult, bootstrap
from scalelab.forecast.calibration import FormError, stored_form_error
from scalelab.forecast.chooser import Choice, choose_form
from scalelab.forecast.fit import fit_law
from scalelab.forecast.forms import (
    FORMS,
    check_law_key,
    checkpoint_points,
    form_points,
    law_for_key,
)
from scalelab.forecast.intervals import Prediction
from scalelab.forecast.laws import Law
from scalelab.forecast.runs import prepare_runs
from scalelab.forecast.support import absurd_allocation, beaten_by_a_run, undominated_runs
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import AUTO_LAW, DEFAULT_LAW, compute_6nd

pd = lazy_module("pandas")

# Past this factor beyond the largest fitted compute a prediction is flagged as extrapolating.
EXTRAPOLATION_WARN = 1000.0
SCHEMA_VERSION = 1

_SYMBOL = {"n_params": "N", "tokens": "D", "compute": "C"}
_FLAG = {"n_params": "--params", "tokens": "--tokens", "compute": "--compute"}


@dataclass(frozen=True)
class Answer:
    """The answer to one query: its inputs, predictions with intervals, and warnings."""

    question: str
    inputs: dict[str, float]
    outputs: dict[str, Prediction]
    extrapolation: float
    warnings: list[str] = field(default_factory=list)
    calibration: dict[str, float] | None = None  # the form-error term that widened the loss
    unsupported: list[str] = field(default_factory=list)  # why the runs contradict the answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration,
            "question": self.question,
            "inputs": self.inputs,
            "predictions": {k: v.to_dict() for k, v in self.outputs.items()},
            "extrapolation": self.extrapolation
            if math.isfinite(self.extrapolation)
            else str(self.extrapolation),
            "warnings": self.warnings,
            "supported": not self.unsupported,
            "unsupported": self.unsupported,
        }

    def lines(self) -> list[str]:
        """Human-readable lines, one per predicted quantity."""
        units = {
            "loss": "nats/token",
            "compute": "FLOPs",
            "n_params": "parameters",
            "tokens": "tokens",
        }
        given = ", ".join(f"{_SYMBOL.get(k, k)}={v:.4g}" for k, v in self.inputs.items())
        out = [f"at {given}:"]
        for name, p in self.outputs.items():
            label = {"n_params": "N_opt", "tokens": "D_opt"}.get(name, name)
            out.append(
                f"  {label:>8} {p.value:.5g} {units.get(name, '')}  "
                f"({p.level:.0%} {p.kind} interval {p.lo:.4g} to {p.hi:.4g})"
            )
        if self.calibration is not None:
            c = self.calibration
            what = "compute" if self.question == "compute_for_loss" else "loss"
            out.append(
                f"  the {what} interval includes the law-form error measured on the forecasting "
                f"benchmark: {c['per_decade']:.3g} (log) per decade x {c['decades']:.2f} decades"
            )
        out += [f"  NOT SUPPORTED by the fitted runs: {why}" for why in self.unsupported]
        return out


@dataclass(frozen=True)
class Fit:
    """A fitted law with its bootstrap, allocation and the range of the data it saw: what
    every answer needs, without refitting."""

    experiment: str
    law_key: str
    boot: BootstrapResult
    data: dict[str, Any]
    allocation: AllocationFit | None = None
    run_id: str | None = None
    created: str = ""
    # Added by issue 12 (records written before read with these defaults): the law asked
    # for (``auto`` or a key), what auto chose and why, and the benchmark's form-error term.
    requested: str = ""
    choice: Choice | None = None
    form_error: FormError | None = None

    @property
    def law(self) -> Law:
        return self.boot.fit.law

    @property
    def key(self) -> str:
        """The law as asked for (``auto`` or a law key): what the fit is filed under."""
        return self.requested or self.law_key

    @property
    def exclude_before(self) -> float | None:
        return self.data.get("exclude_before")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "experiment": self.experiment,
            "law_key": self.law_key,
            "law": self.law.to_dict(),
            "run_id": self.run_id,
            "created": self.created,
            "data": self.data,
            "bootstrap": self.boot.to_dict(),
            "allocation": None if self.allocation is None else self.allocation.to_dict(),
            "requested": self.key,
            "choice": None if self.choice is None else self.choice.to_dict(),
            "form_error": None if self.form_error is None else self.form_error.to_dict(),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Fit:
        if payload.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"fit record has schema {payload.get('schema')!r}; this version "
                f"reads {SCHEMA_VERSION}: refit with scalelab fit"
            )
        alloc = payload.get("allocation")
        return cls(
            experiment=payload["experiment"],
            law_key=payload["law_key"],
            boot=BootstrapResult.from_dict(payload["bootstrap"]),
            data=dict(payload["data"]),
            allocation=None if alloc is None else AllocationFit.from_dict(alloc),
            run_id=payload.get("run_id"),
            created=payload.get("created", ""),
            requested=payload.get("requested", ""),
            choice=None if payload.get("choice") is None else Choice.from_dict(payload["choice"]),
            form_error=None
            if payload.get("form_error") is None
            else FormError.from_dict(payload["form_error"]),
        )

    def recalibrated(self) -> Fit:
        """This fit with the form-error model the package ships now for its form: a record
        made before the benchmark was rerun answers with today's calibration, not its own."""
        current = stored_form_error(self.law_key)
        return self if current == self.form_error else replace(self, form_error=current)

    def param_table(self) -> pd.DataFrame:
        """Estimate, interval and standard error of each law parameter."""
        return self.boot.param_intervals()

    def summary_lines(self) -> list[str]:
        """The law, its parameters with intervals and the compute-optimal allocation."""
        level = self.boot.level
        lines = [
            str(self.law),
            f"  fitted to {self.data['n_points']} points from {self.data['n_runs']} runs "
            f"({self.data['source']}), compute {self.data['min_compute']:.3g} to "
            f"{self.data['max_compute']:.3g} FLOPs; {self.boot.n_resamples} bootstrap "
            f"resamples, {self.boot.n_failed} failed",
            f"  {'param':>8} {'estimate':>11}  {level:.0%} interval",
        ]
        for name, row in self.param_table().iterrows():
            lines.append(f"  {name:>8} {row.estimate:11.5g}  [{row.lo:.5g}, {row.hi:.5g}]")
        fit = self.boot.fit
        lines.append(
            f"  log-residual RMSE {fit.residuals['rmse']:.4g}, mean |relative error| "
            f"{fit.residuals['mean_abs_rel']:.3%}"
        )
        if self.allocation is not None:
            s = self.allocation.summary()
            lines.append("  compute-optimal allocation (C = 6·N·D):")
            lines.append(
                f"    N_opt(C) = {self.allocation.n_coef:.4g}·C^{self.allocation.a:.4f}"
                f"  (a in [{s.loc['a', 'lo']:.4f}, {s.loc['a', 'hi']:.4f}])"
            )
            lines.append(
                f"    D_opt(C) = {self.allocation.d_coef:.4g}·C^{self.allocation.b:.4f}"
                f"  (b in [{s.loc['b', 'lo']:.4f}, {s.loc['b', 'hi']:.4f}])"
            )
            at = self.allocation.at([self.data["max_compute"]]).iloc[0]
            lines.append(
                f"    at the largest fitted C = {at.compute:.3g}: N_opt {at.n_params:.3g}"
                f", D_opt {at.tokens:.3g}, {at.tokens_per_param:.3g} tokens/parameter"
            )
        lines += [f"  warning: {w}" for w in self.boot.warnings]
        return lines

    def _extrapolation(self, variable: str, value: float) -> tuple[float, list[str]]:
        top = float(self.data[f"max_{variable}"])
        ratio = value / top if math.isfinite(value) else math.inf
        if ratio > EXTRAPOLATION_WARN:
            what = {"compute": "compute", "n_params": "N", "tokens": "D"}[variable]
            return ratio, [
                f"extrapolates {ratio:.3g}x past the largest fitted {what} "
                f"({top:.3g}); the interval assumes the law still holds there"
            ]
        bottom = float(self.data.get(f"min_{variable}", math.nan))
        if value > 0 and bottom / value > EXTRAPOLATION_WARN:  # e.g. --params 1e-300
            what = {"compute": "compute", "n_params": "N", "tokens": "D"}[variable]
            return ratio, [
                f"{what} {value:.3g} is {bottom / value:.3g}x below the smallest fitted "
                f"({bottom:.3g}); the law was not fitted there and its answer means little"
            ]
        return ratio, []

    def answer(
        self,
        *,
        params: float | None = None,
        tokens: float | None = None,
        compute: float | None = None,
        loss: float | None = None,
        level: float | None = None,
    ) -> Answer:
        """Predict the loss of a model (``params``/``tokens``), the compute-optimal model and
        its loss at ``compute``, or the compute needed to reach ``loss``."""
        given = {
            k: v
            for k, v in (
                ("n_params", params),
                ("tokens", tokens),
                ("compute", compute),
                ("loss", loss),
            )
            if v is not None
        }
        if not given:
            raise ValueError("give --params and --tokens, --compute, or --loss")
        answer = self._answer(given, level)
        # The fit's own warnings (a parameter at its bound, E not identified) belong to every
        # answer it gives, not only to the fit's summary.
        fit_warnings = [f"fit: {w}" for w in self.boot.warnings]
        return replace(
            answer,
            warnings=[*answer.warnings, *fit_warnings],
            unsupported=self._unsupported(answer),
        )

    def _answer(self, given: dict[str, float], level: float | None) -> Answer:
        params, tokens = given.get("n_params"), given.get("tokens")
        compute, loss = given.get("compute"), given.get("loss")
        for name, value in given.items():
            if not (math.isfinite(value) and value > 0):
                flag = _FLAG.get(name, "--loss")
                raise ValueError(f"{flag} must be positive and finite; got {value:g}")
        if loss is not None:
            if len(given) > 1:
                raise ValueError("--loss cannot be combined with --params, --tokens or --compute")
            return self._compute_for_loss(loss, level)
        if compute is not None:
            if params is not None or tokens is not None:
                raise ValueError("give --compute alone, or --params with --tokens; not both")
            return self._compute_optimal(compute, level)
        if (
            self.choice is not None
            and self.law.variables == ("compute",)
            and params is not None
            and tokens is not None
        ):
            # --law auto chose a law of C for these runs: it forecasts the compute-optimal
            # frontier, which is the loss of the planned N and D only if they are near-optimal.
            c = compute_6nd(params, tokens)
            answer = self._compute_optimal(c, level)
            note = (
                f"law auto chose {self.law_key}, a law of C: this is the loss of the "
                f"compute-optimal model at C = 6·N·D = {c:.3g}; N and D trained off the "
                "optimum reach a higher loss (--law chinchilla_no_e answers for N and D)"
            )
            return replace(answer, warnings=[note, *answer.warnings])
        return self._loss(given, level)

    def _unsupported(self, answer: Answer) -> list[str]:
        """Reasons the fitted runs contradict ``answer`` (``scalelab.forecast.support``)."""
        reasons = []
        runs, rmse = self.data.get("frontier"), float(self.boot.fit.residuals["rmse"])
        predicted = answer.outputs.get("loss")
        if predicted is not None and answer.question == "loss":
            inputs = answer.inputs
            if "n_params" in inputs and "tokens" in inputs:
                where = {"n_params": inputs["n_params"], "tokens": inputs["tokens"]}
            else:
                where = {"compute": inputs["compute"]} if "compute" in inputs else {}
            if where:
                reasons.append(beaten_by_a_run(runs, predicted.value, rmse=rmse, **where))
        if predicted is not None and answer.question == "compute_optimal":
            compute = answer.inputs["compute"]
            reasons.append(beaten_by_a_run(runs, predicted.value, rmse=rmse, compute=compute))
        if "n_params" in answer.outputs and self.allocation is not None:
            n_opt, d_opt = answer.outputs["n_params"].value, answer.outputs["tokens"].value
            reasons.append(absurd_allocation(n_opt, d_opt, self.allocation.a, self.allocation.b))
        return [r for r in reasons if r]

    def _needs_compute_law(self, why: str) -> None:
        variables = self.law.variables
        if variables not in (("n_params", "tokens"), ("compute",)):
            raise ValueError(f"the {self.law_key} law is a law of {_SYMBOL[variables[0]]}{why}")

    def _compute_for_loss(self, loss: float, level: float | None) -> Answer:
        """The compute (and its compute-optimal N and D) a loss needs."""
        self._needs_compute_law(" alone: it cannot tell the compute a loss needs")
        needs, calibration = self._calibrated_compute(
            self.boot.compute_for_loss(loss, level=level), loss
        )
        outputs = {"compute": needs}
        needed = float(outputs["compute"].value)
        if self.allocation is not None and math.isfinite(needed):
            outputs["n_params"] = self.allocation.n_opt(needed, level=level)
            outputs["tokens"] = self.allocation.tokens_opt(needed, level=level)
        ratio, warnings = self._extrapolation("compute", needed)
        if not math.isfinite(needed):
            warnings = [
                f"loss {loss:g} is at or below the law's floor "
                f"{self.law.asymptote():.4g}: no compute reaches it"
            ]
        return Answer("compute_for_loss", {"loss": loss}, outputs, ratio, warnings, calibration)

    def _compute_optimal(self, compute: float, level: float | None) -> Answer:
        """The compute-optimal N and D at ``compute`` and their loss."""
        self._needs_compute_law(f": give {_FLAG[self.law.variables[0]]}")
        outputs: dict[str, Prediction] = {}
        if self.allocation is not None:
            outputs["n_params"] = self.allocation.n_opt(compute, level=level)
            outputs["tokens"] = self.allocation.tokens_opt(compute, level=level)
        outputs["loss"], calibration = self._calibrated(
            self.boot.predict(compute=compute, level=level), compute
        )
        ratio, warnings = self._extrapolation("compute", compute)
        return Answer(
            "compute_optimal", {"compute": compute}, outputs, ratio, warnings, calibration
        )

    def _loss(self, given: dict[str, float], level: float | None) -> Answer:
        """The loss of a model of the inputs the law reads (N and D, or one of them)."""
        variables = self.law.variables
        if variables == ("compute",):
            raise ValueError("the compute law is a law of C: give --compute")
        missing = [_FLAG[v] for v in variables if v not in given]
        extra = [_FLAG[v] for v in given if v not in variables]
        if missing or extra:
            needs = " and ".join(_FLAG[v] for v in variables)
            raise ValueError(
                f"the {self.law_key} law needs {needs}"
                + (f"; {', '.join(extra)} does not apply" if extra else "")
            )
        inputs = {v: float(given[v]) for v in variables}
        prediction = self.boot.predict(**inputs, level=level)
        if variables == ("n_params", "tokens"):
            c = compute_6nd(inputs["n_params"], inputs["tokens"])
            inputs["compute"] = c
            ratio, warnings = self._extrapolation("compute", c)
        else:
            ratio, warnings = self._extrapolation(variables[0], inputs[variables[0]])
        calibration = None
        if "compute" in inputs:
            prediction, calibration = self._calibrated(prediction, inputs["compute"])
        return Answer("loss", inputs, {"loss": prediction}, ratio, warnings, calibration)

    def _calibrated(
        self, prediction: Prediction, compute: float
    ) -> tuple[Prediction, dict[str, float] | None]:
        """The loss interval combined with the benchmark's form error for this distance of
        extrapolation (``scalelab.forecast.calibration``); unchanged without one."""
        if self.form_error is None:
            return prediction, None
        decades = math.log10(compute / float(self.data["max_compute"]))
        if decades <= 0:
            return prediction, None
        k = self.form_error.per_decade(decades, prediction.level)
        lo, hi = self.form_error.widen(
            prediction.value, prediction.lo, prediction.hi, decades, prediction.level
        )
        widened = replace(prediction, lo=float(lo), hi=float(hi))
        return widened, {"per_decade": k, "decades": decades}

    def _calibrated_compute(
        self, needed: Prediction, loss: float
    ) -> tuple[Prediction, dict[str, float] | None]:
        """The compute interval for reaching ``loss`` widened as the loss intervals are: the
        computes at which the calibrated loss band's lower and upper edges reach ``loss``
        (an upper edge that never does leaves the interval open: ``hi = inf``)."""
        top = float(self.data["max_compute"])
        value = float(needed.value)
        if self.form_error is None or not math.isfinite(value) or value <= top:
            return needed, None
        grid = np.geomspace(top, value * 1e6, 600)
        band = self.boot.predict(compute=grid, level=needed.level)
        decades = np.log10(grid / top)
        lo, hi = self.form_error.widen(band.value, band.lo, band.hi, decades, needed.level)
        c_lo = _first_below(grid, lo, loss)
        c_hi = _first_below(grid, hi, loss)
        widened = replace(needed, lo=min(float(needed.lo), c_lo), hi=max(float(needed.hi), c_hi))
        decades = math.log10(value / top)
        return widened, {
            "per_decade": self.form_error.per_decade(decades, needed.level),
            "decades": decades,
        }


def _first_below(grid: np.ndarray, edge: np.ndarray, loss: float) -> float:
    """The first compute of ``grid`` where ``edge`` falls to ``loss`` (log-interpolated
    between grid points); ``inf`` if it never does, ``grid[0]`` if it starts below."""
    below = np.flatnonzero(edge <= loss)
    if not len(below):
        return math.inf
    i = int(below[0])
    if i == 0:
        return float(grid[0])
    x0, x1 = math.log(grid[i - 1]), math.log(grid[i])
    y0, y1 = math.log(edge[i - 1]), math.log(edge[i])
    t = (math.log(loss) - y0) / (y1 - y0) if y1 != y0 else 1.0
    return float(math.exp(x0 + t * (x1 - x0)))


def _what_to_fit(
    runs: pd.DataFrame, curves: pd.DataFrame | None, law: str, exclude_before: float | None
) -> tuple[str, pd.DataFrame, Choice | None, FormError | None]:
    """(form name, points, auto's choice, the benchmark's form-error model) for ``fit_runs``."""
    if law == AUTO_LAW:
        # The same checks as a fit of every run, whatever form is chosen: a frontier form
        # sees one run per budget and would hide, e.g., a CSV's duplicated rows.
        read = [c for c in ("n_params", "tokens", "compute") if c in runs]
        prepare_runs(runs, read, context="the runs")
        has_curves = curves is not None and not curves.empty
        choice = choose_form(runs, has_curves=has_curves)
        form = choice.form
    else:
        choice, form = None, FORMS[law]
    # Checkpoints the user asked for (the record's cache key) or the form's own; else an
    # average's runs (each member takes its own points) or the form's points.
    cut = form.exclude_before if exclude_before is None else exclude_before
    if cut is not None:
        what = "--exclude-before" if exclude_before is not None else f"the {form.name} form"
        points = checkpoint_points(runs, curves, cut, what=what)
    elif form.members:
        points = runs
    else:
        points = form_points(form, runs, curves)
    return form.name, points, choice, stored_form_error(form.name)


def fit_runs(
    runs: pd.DataFrame,
    *,
    law: str = DEFAULT_LAW,
    curves: pd.DataFrame | None = None,
    exclude_before: float | None = None,
    n_resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
    n_jobs: int = 2,
    experiment: str = "",
    source: str = "runs",
    fingerprint: str = "",
) -> Fit:
    """Fit form ``law`` (a name of ``scalelab.forecast.forms.FORMS``, or ``auto``) to the
    runs, bootstrap it and allocate compute.

    ``auto`` takes the default the forecasting benchmark chose (``choose_form``) and stores
    the choice and its reason. Loss intervals of a form the benchmark measured (every form it
    scores, and ``auto``) are widened by its form-error model when answering.
    """
    check_law_key(law)
    name, points, choice, form_error = _what_to_fit(runs, curves, law, exclude_before)
    how = {"n_resamples": n_resamples, "level": level, "seed": seed, "n_jobs": n_jobs}
    try:
        if FORMS[name].members:
            boot = fit_average(FORMS[name], points, curves, **how)
        else:
            boot = bootstrap(fit_law(points, law_for_key(name, runs)), points, **how)
    except RuntimeError as err:  # the optimiser failed on these data: report it, not a crash
        raise ValueError(f"the {name} fit to {source} failed: {err}") from err
    allocation = None
    if boot.law.variables == ("n_params", "tokens") and not FORMS[name].members:
        try:
            allocation = compute_optimal(boot)
        except (ArithmeticError, ValueError):
            # A fit whose optimum collapses (an exponent at zero) has no allocation to give.
            allocation = None
    data = {
        "source": source,
        "fingerprint": fingerprint,
        "exclude_before": exclude_before,
        "n_runs": int(runs["run_id"].nunique()) if "run_id" in runs else len(runs),
        "n_points": len(points),
        "min_compute": float(points["compute"].min()),
        "max_compute": float(points["compute"].max()),
        "max_n_params": float(points["n_params"].max()) if "n_params" in points else math.nan,
        "max_tokens": float(points["tokens"].max()) if "tokens" in points else math.nan,
        "frontier": undominated_runs(points),
    }
    return Fit(
        experiment=experiment,
        law_key=name,
        boot=boot,
        data=data,
        allocation=allocation,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        requested=law,
        choice=choice,
        form_error=form_error,
    )
