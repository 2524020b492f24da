"""Dashboard definitions: YAML files saying which panels to draw from which runs.

A definition needs no code. Example (``dashboards/*.yaml`` ship more)::

    title: My sweep against Chinchilla
    law: auto                        # scalelab fit --law: auto (the default), chinchilla, ...
    sources:
      - experiment: my-sweep         # an MLflow experiment of the workspace...
        optuna: {storage: "sqlite:///scalelab-runs/optuna.db", study: my-sweep}
      - csv: ../analysis/data/epoch_chinchilla_svg_extracted_data.csv   # ...or a CSV file
        format: epoch_chinchilla     # runs (project vocabulary) | epoch_chinchilla
        label: Chinchilla (Epoch AI reconstruction)
    planned:                         # sizes the prediction band is carried out to
      - {label: 70B, n_params: 7e10, tokens: 1.4e12}
      - {compute: 1e24}
    panels: [loss_vs_compute, frontier, residuals]

Relative CSV paths are read from the definition's folder. Unknown keys are errors, so a typo
does not silently drop a setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from scalelab.results.row_filter import parse_filter
from scalelab.vocab import DEFAULT_LAW, compute_6nd

PanelKey = Literal[
    "curves_tokens",
    "curves_compute",
    "loss_vs_params",
    "loss_vs_compute",
    "isoflop",
    "frontier",
    "residuals",
    "backtest",
    "optuna_history",
    "optuna_importances",
    "optuna_intermediate",
    "capability",
]
# The one list of panel names: scalelab.dashboard.figures draws each with its function of
# the same name.
ALL_PANELS: tuple[str, ...] = get_args(PanelKey)
OPTUNA_PANELS: tuple[str, ...] = ("optuna_history", "optuna_importances", "optuna_intermediate")
# The panels a fit run carries: everything that needs only the runs and the fit.
FIT_PANELS: tuple[str, ...] = tuple(
    p for p in ALL_PANELS if p not in OPTUNA_PANELS and p not in ("backtest", "capability")
)
# A definition without panels: gets every panel but the capability one, which needs runs
# trained with evaluation suites (eval: in a spec) and is asked for by name.
DEFAULT_PANELS: tuple[str, ...] = tuple(p for p in ALL_PANELS if p != "capability")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptunaStudy(_Strict):
    """The Optuna study of a sweep, for the optimisation-history panels.

    ``study`` is a study name, or a sweep's name: its per-cell studies ``<name>/<cell>`` are
    drawn then. ``storage`` is an Optuna storage URL or a sweep's ``journal:PATH``.
    """

    storage: str = Field(description="Optuna storage URL, e.g. sqlite:///path/optuna.db")
    study: str = Field(description="Study name, or a sweep name for all its cells' studies")
    objective_label: str = "validation loss (nats/token)"
    step_label: str = "tokens seen (as reported to the pruner)"


class Source(_Strict):
    """Runs to draw: an MLflow experiment of the workspace or a CSV file."""

    experiment: str | None = None
    csv: Path | None = None
    label: str | None = None
    format: Literal["runs", "epoch_chinchilla"] = "runs"
    rename: dict[str, str] = Field(
        default_factory=dict, description="CSV column -> vocabulary name"
    )
    query: str | None = Field(
        default=None,
        description="rows to keep: column OP literal joined by and/or/not (never Python)",
    )
    corpus: str | None = None
    tokenizer: str | None = None
    budget_column: str | None = Field(
        default=None, description="column with each run's IsoFLOP budget in FLOPs"
    )
    optuna: OptunaStudy | None = None

    @field_validator("query")
    @classmethod
    def _parsed_query(cls, query: str | None) -> str | None:
        # Parsed here so a definition with a bad (or hostile) filter is refused before any
        # file is read; the filter is never handed to pandas' evaluator.
        if query is not None:
            parse_filter(query)
        return query

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.experiment is None) == (self.csv is None):
            raise ValueError("a source needs exactly one of 'experiment' or 'csv'")
        if self.experiment is not None and (self.rename or self.query or self.format != "runs"):
            raise ValueError("'rename', 'query' and 'format' apply to CSV sources only")
        return self

    @property
    def name(self) -> str:
        """The label shown in legends."""
        if self.label:
            return self.label
        return self.experiment if self.experiment is not None else Path(self.csv).stem


class Planned(_Strict):
    """A planned model: N and D, or a compute budget (its compute-optimal model)."""

    label: str | None = None
    n_params: PositiveFloat | None = None
    tokens: PositiveFloat | None = None
    compute: PositiveFloat | None = None

    @model_validator(mode="after")
    def _complete(self) -> Planned:
        pair = self.n_params is not None and self.tokens is not None
        if pair == (self.compute is not None) or (
            not pair and (self.n_params is not None or self.tokens is not None)
        ):
            raise ValueError("a planned size needs n_params and tokens, or compute alone")
        return self

    @property
    def total_compute(self) -> float:
        if self.compute is not None:
            return float(self.compute)
        return compute_6nd(float(self.n_params), float(self.tokens))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.compute is not None:
            return f"C={self.compute:.3g}"
        return f"N={self.n_params:.3g}, D={self.tokens:.3g}"


class BacktestSettings(_Strict):
    """Backtest panel: cut the runs at C_max/ratio, fit below, predict above."""

    ratios: list[float] = Field(default_factory=lambda: [10.0, 100.0], min_length=1)
    resamples: int = Field(default=50, ge=2)

    @model_validator(mode="after")
    def _ratios(self) -> BacktestSettings:
        if any(r <= 1 for r in self.ratios):
            raise ValueError(f"backtest ratios must be > 1; got {self.ratios}")
        return self


class DashboardDefinition(_Strict):
    """A dashboard: title, sources, law, planned sizes and panels."""

    title: str
    description: str = ""
    sources: list[Source] = Field(min_length=1)
    law: str = DEFAULT_LAW
    exclude_before: float | None = Field(default=None, ge=0.0, lt=1.0)
    level: float = Field(default=0.9, gt=0.0, lt=1.0)
    resamples: int = Field(default=200, ge=2, description="bootstrap resamples of a new fit")
    planned: list[Planned] = Field(default_factory=list)
    backtest: BacktestSettings = Field(default_factory=BacktestSettings)
    panels: list[PanelKey] = Field(default_factory=lambda: list(DEFAULT_PANELS), min_length=1)
    output: str | None = Field(default=None, description="HTML file name [default: <name>.html]")

    @field_validator("output")
    @classmethod
    def _plain_file_name(cls, output: str | None) -> str | None:
        # A definition is data from wherever it was cloned: it names a file inside the
        # workspace's dashboards folder, never a path (the user's own --out may be anywhere).
        if output is not None and (
            not output.strip()
            or output in (".", "..")
            or Path(output).name != output
            or "\\" in output
            or "\x00" in output
        ):
            raise ValueError(
                f"output must be a plain file name (it is written under the workspace's "
                f"dashboards folder); got {output!r}"
            )
        return output

    @field_validator("law")
    @classmethod
    def _known_law(cls, law: str) -> str:
        from scalelab.forecast.forms import check_law_key

        try:
            return check_law_key(law)
        except ValueError as err:  # the field is law:, not the CLI's --law
            raise ValueError(str(err).removeprefix("--law ")) from None


def load_definition(path: str | Path) -> DashboardDefinition:
    """Read and validate a YAML definition; CSV paths become relative to its folder.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) naming the bad field.
    """
    import yaml

    from scalelab import strict_yaml

    path = Path(path)
    try:
        raw = strict_yaml.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ValueError(f"cannot read dashboard definition {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a dashboard definition is a mapping (title, sources, ...)")
    definition = DashboardDefinition.model_validate(raw)
    sources = [
        s.model_copy(update={"csv": (path.parent / s.csv).resolve()})
        if s.csv is not None and not Path(s.csv).is_absolute()
        else s
        for s in definition.sources
    ]
    return definition.model_copy(update={"sources": sources})


def find_definition(name: str | Path, search: list[Path]) -> Path:
    """A definition file: ``name`` as a path, else ``<dir>/<name>[.yaml]`` in ``search``."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in search:
        for candidate in (folder / path, folder / f"{path}.yaml", folder / f"{path}.yml"):
            if candidate.is_file():
                return candidate
    looked = ", ".join(str(f) for f in search)
    raise ValueError(f"no dashboard definition {str(name)!r} (looked in {looked})")
