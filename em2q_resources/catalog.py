"""The asset catalogue: every asset of the platform, declared once.

One :class:`AssetSpec` per asset says what the rest of the platform needs to know about it:
the module holding its step function (named after the asset), its step kind (the pod size, a
row of ``em2q_resources.launcher.STEP_RESOURCES``), its partitioning, its upstream assets,
whether it depends on the parameter set, its QC checks, and whether it is a result people
look at. Everything else that names assets is derived from here: the Dagster definitions
(``em2q_assets.definitions.build_definitions``), the step CLI (``python -m em2q_assets.step``),
the k8s op tags, the Argo WorkflowTemplates, the workflows (:mod:`em2q_resources.workflows`)
and the results reader (``em2q.results``).

Adding an asset is one :class:`AssetSpec` here plus its step function (docs/admin-guide.md).

Dagster-free on purpose (standard library only): the client, the CLI and the web read the
catalogue without importing Dagster; the step functions are named, not imported, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from em2q_resources.lifecycle import Stage


class Partitioning(StrEnum):
    """How an asset is partitioned (``em2q_assets.partitions``)."""

    #: one partition per measurement
    MEASUREMENT = "measurement"
    #: one partition per ``measurement × spectra_chunk`` (chunk i of K of the spectra)
    SPECTRA_CHUNK = "spectra_chunk"
    #: one partition per study (``Catalog.study_assets``): members' results read from storage
    STUDY = "study"


class Automation(StrEnum):
    """When Dagster materializes an asset by itself."""

    #: never by itself: a sensor (new upload, finished ingest) or a person starts it
    ON_REQUEST = "on_request"
    #: as soon as its upstream assets are materialized
    EAGER = "eager"
    #: eagerly, and only when every blocking check upstream passed (QC gates the analysis)
    AFTER_CHECKS = "after_checks"


@dataclass(frozen=True)
class Check:
    """A check the step evaluates on its own result (a Dagster asset check)."""

    name: str
    description: str
    #: a failed blocking check stops the assets downstream
    blocking: bool = True

    @property
    def severity(self) -> str:
        """How a failure shows in Dagster: "error", or "warn" for a check that stops nothing."""
        return "error" if self.blocking else "warn"


@dataclass(frozen=True)
class AssetSpec:
    """One asset of the platform, as every table that names assets needs it."""

    name: str
    #: module holding the step function ``<name>(step, partition, inputs, parameters)``
    step_module: str
    #: step kind: the pod size (a row of ``em2q_resources.launcher.STEP_RESOURCES``)
    kind: str
    description: str
    #: Dagster asset group
    group: str
    partitioning: Partitioning = Partitioning.MEASUREMENT
    #: upstream assets whose manifests the step reads (each an input named after the asset)
    inputs: tuple[str, ...] = ()
    #: upstream assets it waits for without reading them
    after: tuple[str, ...] = ()
    #: results stored per parameter set (under its hash), made with the run's parameter set
    parameter_dependent: bool = False
    checks: tuple[Check, ...] = ()
    #: a measurement-level result the results reader (web, notebook, CLI) lists
    result: bool = False
    automation: Automation = Automation.ON_REQUEST
    #: bumped by hand when the step's output changes for the same input and the same code
    #: (a library upgrade); the version Dagster and the records use is
    #: :meth:`Catalog.code_version`, this plus the digest of the code the step runs
    code_version: str = "1"
    #: libraries shown as the asset's kinds in the Dagster UI
    tools: tuple[str, ...] = ("numpy",)
    #: the ``em2q_msi.steps`` command that can run the step in a process (or pod) of its own
    #: through the ``step_launcher`` resource; ``None``: it always runs in the run's process
    launched_step: str | None = None

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every asset this one depends on: inputs, then the ones it only waits for."""
        return self.inputs + self.after

    @property
    def step_function(self) -> str:
        """``module:function`` of the step (the function is named after the asset)."""
        return f"{self.step_module}:{self.name}"

    @property
    def chunked(self) -> bool:
        return self.partitioning is Partitioning.SPECTRA_CHUNK

    @property
    def per_study(self) -> bool:
        return self.partitioning is Partitioning.STUDY


class UnknownAsset(KeyError):
    """An asset name the catalogue does not declare."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"no asset {name!r}; the catalogue declares {', '.join(known)}")

    def __str__(self) -> str:
        return self.args[0]


class InvalidCatalog(ValueError):
    """A catalogue whose declarations contradict each other (raised when it is built)."""


class Catalog:
    """The declared assets, upstream first, with the tables derived from them.

    Iterating gives the measurement-level assets (what workflows, the step CLI and the Argo
    export run on one measurement); ``studies`` are the study-level assets, partitioned by
    study: they read their members' results from storage (a dynamic study partition cannot be
    mapped onto dynamic measurement partitions), so their upstream are study assets only.
    """

    def __init__(self, assets: Iterable[AssetSpec], studies: Iterable[AssetSpec] = ()) -> None:
        self._assets: dict[str, AssetSpec] = {}
        self._studies: dict[str, AssetSpec] = {}
        for spec in studies:
            if not spec.per_study:
                raise InvalidCatalog(f"study asset {spec.name!r} must be partitioned by study")
            unknown = [u for u in spec.upstream if u not in self._studies]
            if unknown or spec.name in self._studies:
                raise InvalidCatalog(
                    f"study asset {spec.name!r}: declared twice, or depends on "
                    f"{', '.join(unknown)}, not a study asset declared before it"
                )
            self._studies[spec.name] = spec
        for spec in assets:
            if spec.per_study or spec.name in self._studies:
                raise InvalidCatalog(f"asset {spec.name!r}: study assets go in `studies`")
            if spec.name in self._assets:
                raise InvalidCatalog(f"asset {spec.name!r} is declared twice")
            unknown = [u for u in spec.upstream if u not in self._assets]
            if unknown:
                raise InvalidCatalog(
                    f"asset {spec.name!r} depends on {', '.join(unknown)}, which must be "
                    "declared before it (upstream first)"
                )
            if not spec.parameter_dependent and any(
                self._assets[u].parameter_dependent for u in spec.upstream
            ):
                raise InvalidCatalog(
                    f"asset {spec.name!r} depends on a parameter-dependent asset, so it is "
                    "parameter-dependent too: declare parameter_dependent=True"
                )
            if spec.result and spec.chunked:
                raise InvalidCatalog(f"asset {spec.name!r}: results are per measurement")
            self._assets[spec.name] = spec
        roots = [spec.name for spec in self if not spec.upstream]
        if len(roots) != 1:
            raise InvalidCatalog(
                f"one asset without upstream (what an upload starts) is needed, found {roots}"
            )

    def __iter__(self) -> Iterator[AssetSpec]:
        return iter(self._assets.values())

    def __len__(self) -> int:
        return len(self._assets)

    def __contains__(self, name: object) -> bool:
        return name in self._assets

    @property
    def names(self) -> tuple[str, ...]:
        """Every asset name, upstream first."""
        return tuple(self._assets)

    def asset(self, name: str) -> AssetSpec:
        try:
            return self._assets[name]
        except KeyError:
            if name in self._studies:
                return self._studies[name]
            raise UnknownAsset(name, [*self._assets, *self._studies]) from None

    @property
    def study_assets(self) -> tuple[AssetSpec, ...]:
        """The study-level assets, upstream first."""
        return tuple(self._studies.values())

    def with_asset(self, spec: AssetSpec) -> Catalog:
        """A new catalogue with ``spec`` added after the others."""
        if spec.per_study:
            return Catalog(self, [*self._studies.values(), spec])
        return Catalog([*self, spec], self._studies.values())

    def code_version(self, name: str) -> str:
        """The code version of asset ``name``: ``<declared>-<digest of the code its step runs>``
        (:mod:`em2q_resources.code_versions`): Dagster's ``code_version`` of the asset and the
        one its ``WorkflowRun`` records name."""
        from em2q_resources import code_versions

        spec = self.asset(name)
        return f"{spec.code_version}-{code_versions.step_digest(spec.step_module, spec.name)}"

    @property
    def ingest(self) -> str:
        """The one asset without upstream: what a new upload starts."""
        return next(spec.name for spec in self if not spec.upstream)

    @property
    def stage_assets(self) -> dict[Stage, tuple[str, ...]]:
        """The assets each run of a measurement's processing chain materializes, in the
        catalogue's (dependency) order: the ingest, every chunk's, every other
        measurement-level one."""
        from em2q_resources.lifecycle import Stage

        chunked = tuple(spec.name for spec in self if spec.chunked)
        measurement = tuple(
            spec.name
            for spec in self
            if spec.partitioning is Partitioning.MEASUREMENT and spec.name != self.ingest
        )
        return {Stage.INGEST: (self.ingest,), Stage.CHUNKS: chunked, Stage.MEASUREMENT: measurement}

    @property
    def step_kinds(self) -> Mapping[str, str]:
        """``{asset: step kind}``: the k8s op tags and the Argo container sizes."""
        return {spec.name: spec.kind for spec in [*self, *self._studies.values()]}

    @property
    def parameter_dependent(self) -> frozenset[str]:
        """Assets whose results depend on the parameter set (stored under its hash)."""
        return frozenset(spec.name for spec in self if spec.parameter_dependent)

    @property
    def results(self) -> tuple[str, ...]:
        """Measurement-level results a page or notebook shows, upstream first."""
        return tuple(spec.name for spec in self if spec.result)

    def with_upstream(self, name: str) -> tuple[str, ...]:
        """``name`` and every asset it depends on, directly or not, upstream first."""
        wanted = {name}
        for spec in reversed(list(self)):
            if spec.name in wanted:
                wanted.update(spec.upstream)
        self.asset(name)
        return tuple(n for n in self._assets if n in wanted)

    def downstream_of(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` and every asset that depends on one of them, upstream first."""
        found = set(names)
        for spec in self:
            if found.intersection(spec.upstream):
                found.add(spec.name)
        return tuple(n for n in self._assets if n in found)


#: the QC checks of ``qc_report``: blocking, so a failed one stops the analysis
QC_CHECKS = (
    Check("tic_coverage", "Fraction of spectra with a TIC of at least a share of the median TIC."),
    Check("median_snr", "Median over spectra of the base-peak signal-to-noise ratio."),
    Check(
        "empty_pixel_fraction",
        "Share of acquired pixels whose spectrum is empty (pixels outside the scanned area are "
        "not acquired, not empty).",
    ),
    Check(
        "lock_mass_error_ppm",
        "Largest ppm error of the lock masses (passes when none are set).",
    ),
)

#: the study assets' checks: warnings, they stop nothing
STUDY_CHECKS = (
    Check(
        "reference_drift",
        "The rebuilt reference moved an existing feature by more than study.drift_tolerance_ppm "
        "or added one: the members' earlier alignments are stale and are all re-aligned.",
        blocking=False,
    ),
)

STUDY_ASSETS = (
    AssetSpec(
        "study_reference_peaks",
        step_module="em2q_assets.studies",
        kind="summary",
        group="studies",
        partitioning=Partitioning.STUDY,
        checks=STUDY_CHECKS,
        tools=("numpy", "elasticsearch"),
        description="The study's reference peak list: each member's own peak list, clustered "
        "within study.tolerance_ppm, kept when in study.min_frequency of the members.",
    ),
    AssetSpec(
        "aligned_features",
        step_module="em2q_assets.studies",
        kind="summary",
        group="studies",
        partitioning=Partitioning.STUDY,
        inputs=("study_reference_peaks",),
        tools=("numpy", "scipy", "zarr"),
        description="Each member's pixels × features matrix (CSR, in Zarr) on the reference, "
        "with its normalised measurement-level means; cached per member and reference.",
    ),
    AssetSpec(
        "study_comparison",
        step_module="em2q_assets.studies",
        kind="summary",
        group="studies",
        partitioning=Partitioning.STUDY,
        inputs=("study_reference_peaks", "aligned_features"),
        tools=("numpy", "scipy", "pandas"),
        description="Per feature and contrast: fold change, test on measurement-level means, "
        "Benjamini–Hochberg q-value, effect size; PCA of the members.",
    ),
    AssetSpec(
        "study_segmentation",
        step_module="em2q_assets.spatial",
        kind="summary",
        group="studies",
        partitioning=Partitioning.STUDY,
        inputs=("aligned_features",),
        tools=("numpy", "scikit-learn", "zarr"),
        description="One segmentation of every member's pixels on the aligned features (the "
        "parameter set's segmentation values): the same segment is the same tissue in every "
        "member; per member its segment map, per segment its top features.",
    ),
)

#: the QC trend check of ``qc_trends``: a warning naming each QC number outside its instrument's
#: control limits (rolling baseline ± 3σ, ``em2q_msi.qc_trends``); it stops nothing
QC_TREND_CHECKS = (
    Check(
        "qc_control_limits",
        "Every QC number lies within its instrument's control limits (the last measurements' "
        "mean ± 3σ); a warning names each metric outside them.",
        blocking=False,
    ),
)

CATALOG = Catalog(
    [
        AssetSpec(
            "raw_measurement",
            step_module="em2q_assets.measurements",
            kind="ingest",
            group="ingest",
            tools=("imzml", "elasticsearch"),
            code_version="2",
            result=True,
            description="The uploaded imzML/ibd pair, validated; its facts written to the catalog.",
        ),
        AssetSpec(
            "spectra_chunks",
            step_module="em2q_assets.spectra",
            kind="chunk",
            group="spectra",
            partitioning=Partitioning.SPECTRA_CHUNK,
            inputs=("raw_measurement",),
            launched_step="chunk",
            description="Chunk i of {chunk_count} of the raw spectra, with its TIC and mean sums.",
        ),
        AssetSpec(
            "preprocessed_chunks",
            step_module="em2q_assets.spectra",
            kind="preprocess",
            group="spectra",
            partitioning=Partitioning.SPECTRA_CHUNK,
            inputs=("spectra_chunks",),
            parameter_dependent=True,
            tools=("numpy", "numba"),
            description="Smoothed, baseline-corrected spectra's peaks and QC metrics per "
            "spectrum, for the run's parameter set.",
        ),
        AssetSpec(
            "mean_spectrum",
            step_module="em2q_assets.summaries",
            kind="summary",
            group="results",
            inputs=("raw_measurement", "spectra_chunks"),
            automation=Automation.EAGER,
            result=True,
            description="Mean of all raw spectra (processed data: on 5-ppm bins).",
        ),
        AssetSpec(
            "tic_image",
            step_module="em2q_assets.summaries",
            kind="summary",
            group="results",
            inputs=("raw_measurement", "spectra_chunks"),
            automation=Automation.EAGER,
            code_version="2",
            result=True,
            description="Total ion current per pixel, as an array and an image.",
        ),
        AssetSpec(
            "qc_report",
            step_module="em2q_assets.quality",
            kind="qc",
            group="quality",
            inputs=("raw_measurement", "preprocessed_chunks", "mean_spectrum"),
            parameter_dependent=True,
            checks=QC_CHECKS,
            automation=Automation.EAGER,
            result=True,
            description="QC verdict with the numbers behind it; blocking checks gate further "
            "analysis.",
        ),
        AssetSpec(
            "qc_trends",
            step_module="em2q_assets.quality",
            kind="qc",
            group="quality",
            inputs=("qc_report",),
            parameter_dependent=True,
            checks=QC_TREND_CHECKS,
            automation=Automation.EAGER,
            tools=("numpy", "elasticsearch"),
            description="The measurement's QC numbers in its instrument's control charts "
            "(rolling baseline ± 3σ over time); a warning when one is outside the limits.",
        ),
        AssetSpec(
            "peak_table",
            step_module="em2q_assets.summaries",
            kind="summary",
            group="results",
            inputs=("preprocessed_chunks",),
            after=("qc_report",),
            parameter_dependent=True,
            automation=Automation.AFTER_CHECKS,
            tools=("numpy", "scipy"),
            result=True,
            description="Peaks of all spectra binned into features: the feature × spectrum matrix.",
        ),
        AssetSpec(
            "ion_images",
            step_module="em2q_assets.summaries",
            kind="summary",
            group="results",
            inputs=("raw_measurement", "spectra_chunks", "peak_table"),
            parameter_dependent=True,
            automation=Automation.AFTER_CHECKS,
            code_version="2",
            result=True,
            description="Ion images of the parameter set's m/z list (else the most frequent "
            "features).",
        ),
        AssetSpec(
            "segmentation",
            step_module="em2q_assets.spatial",
            kind="summary",
            group="results",
            inputs=("raw_measurement", "spectra_chunks", "peak_table"),
            parameter_dependent=True,
            automation=Automation.AFTER_CHECKS,
            tools=("numpy", "scikit-learn"),
            result=True,
            description="Segments of the pixels (PCA + k-means or Gaussian mixture, k by Calinski–Harabasz) "
            "on the peak table: map, mean spectra, distinguishing m/z.",
        ),
    ],
    STUDY_ASSETS,
)

#: the asset a new upload starts (the new-measurements sensor's target)
INGEST_ASSET: str = CATALOG.ingest
#: ``{asset: step kind}``
STEP_KINDS: Mapping[str, str] = CATALOG.step_kinds
#: assets whose results are stored per parameter set
PARAMETER_DEPENDENT_ASSETS: frozenset[str] = CATALOG.parameter_dependent
#: measurement-level results a page or notebook shows, upstream first
RESULT_ASSETS: tuple[str, ...] = CATALOG.results


def asset(name: str) -> AssetSpec:
    """The declaration of one asset of :data:`CATALOG` (:class:`UnknownAsset` otherwise)."""
    return CATALOG.asset(name)
