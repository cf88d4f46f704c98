/**
 * EM²Q metadata schema: the one source of truth for the Python bindings, the Elasticsearch
 * index mappings, the JSON documents and the MetadataService other languages call.
 *
 * Annotations read by em2q_resources.metadata.schema:
 *   struct  (em2q.index = "<alias>")  the struct is an entity with its own index; its `id`
 *                                      field is the document id.
 *   field   (em2q.search = "text")     keyword with a lowercase normalizer + a `.text` full-text
 *                                      sub-field (titles, descriptions, free names).
 *   field   (em2q.type = "date")       an ISO-8601 timestamp string stored as an ES date.
 *   field   (em2q.nested = "true")     a list of structs queried as units (ES nested type).
 *   field   (em2q.index = "false")     stored in _source, not indexed.
 *   field   (em2q.unit = "µm")         the unit of a number (forms and tables show it).
 *   field   (em2q.identifier = "name") an id or name that becomes a storage key, an index id
 *                                      or a URL: 1-128 of [A-Za-z0-9_.-], starting with a
 *                                      letter or digit, no "..", not ending in "." (refused
 *                                      otherwise, on every surface);
 *                                      "versioned": the same, optionally "<name>@v<version>".
 * Every string is refused when it holds control characters (TAB, LF, CR allowed), lone
 * surrogates or non-characters, and is stored in Unicode NFC.
 * Strings without annotation are exact keywords (ids, URIs, controlled terms);
 * enums are stored by name.
 */

namespace java org.em2q.metadata
namespace py em2q_thrift
namespace js em2q

// ---------------------------------------------------------------- controlled vocabularies

enum MeasurementStatus {
  UPLOADED = 1,      // files committed to storage, document written
  REGISTERED = 2,    // sensor picked it up, partitions created
  PROCESSING = 3,    // runs in flight
  READY = 4,         // standard processing done, QC passed
  FAILED = 5,        // a step or a blocking QC check failed (see status_reason)
}

enum Polarity { POSITIVE = 1, NEGATIVE = 2, MIXED = 3 }

enum IonisationSource {
  MALDI = 1, DESI = 2, SIMS = 3, LAESI = 4, IR_MALDESI = 5, NANO_DESI = 6, LDI = 7,
  MALDI_2 = 8, OTHER_SOURCE = 99,
}

enum Analyzer { ORBITRAP = 1, FTICR = 2, TOF = 3, QTOF = 4, QUADRUPOLE = 5, ION_TRAP = 6, OTHER_ANALYZER = 99 }

enum ImzMLMode { CONTINUOUS = 1, PROCESSED = 2 }

enum ChecksumType { SHA1 = 1, MD5 = 2, SHA256 = 3 }

enum FileRole { IMZML = 1, IBD = 2, OPTICAL_IMAGE = 3, OTHER_FILE = 99 }

enum SampleCondition { HEALTHY = 1, DISEASED = 2, TREATED = 3, CONTROL = 4, WILD_TYPE = 5, KNOCKOUT = 6, OTHER_CONDITION = 99 }

enum SamplePreparation { FRESH_FROZEN = 1, FFPE = 2, OCT_EMBEDDED = 3, GELATIN_EMBEDDED = 4, CELL_CULTURE = 5, OTHER_PREPARATION = 99 }

enum MatrixApplication { SPRAYER = 1, SUBLIMATION = 2, AIRBRUSH = 3, SPOTTING = 4, NONE_APPLIED = 5, OTHER_APPLICATION = 99 }

enum RunStatus { QUEUED = 1, RUNNING = 2, SUCCEEDED = 3, FAILED = 4, CANCELED = 5 }

enum RunEngine { DAGSTER = 1, ARGO = 2, LOCAL = 3 }

// ---------------------------------------------------------------- entities and their parts

struct Project {
  1: required string id (em2q.identifier = "name"),
  2: required string title (em2q.search = "text"),
  3: optional string description (em2q.search = "text"),
  4: optional string owner (em2q.search = "text"),
  5: optional string created_at (em2q.type = "date"),
} (em2q.index = "projects")

/** A study member's group set by hand (a study without design fields, issue 14). */
struct StudyGroup {
  1: required string member_id (em2q.identifier = "name"),
  2: required string group,
}

/** A ROI of a member as a replicate of a group (a ROI-level study, issue 14). */
struct StudyRoi {
  1: required string measurement_id (em2q.identifier = "name"),
  2: required string roi (em2q.identifier = "name"),   // the Roi's name on that measurement
  3: required string group,
}

struct Study {
  1: required string id (em2q.identifier = "name"),
  2: required string project_id (em2q.identifier = "name"),
  3: required string title (em2q.search = "text"),
  4: optional string description (em2q.search = "text"),
  5: optional string created_at (em2q.type = "date"),
  // a study compared (issue 14): its members, the grouping fields and the parameter set
  // whose `study` step values (em2q_msi.parameters.StudyParameters) the comparison uses
  6: optional list<string> member_ids,
  7: optional list<string> design,             // measurement fields, e.g. "sample.condition"
  8: optional string parameter_set (em2q.identifier = "versioned"),
  9: optional string updated_at (em2q.type = "date"),
  10: optional string created_by,
  // groups set by hand, one per member (then `design` is empty): the web's "create a study
  // from these" with a group typed per row; em2q_resources.studies.member_groups reads them
  11: optional list<StudyGroup> manual_groups (em2q.nested = "true"),
  // ROIs as the replicates (then `design` is empty and the members are their measurements):
  // each ROI's mean is one replicate of its group in study_comparison
  12: optional list<StudyRoi> rois (em2q.nested = "true"),
} (em2q.index = "studies")

struct Sample {
  1: required string id (em2q.identifier = "name"),
  2: optional string study_id (em2q.identifier = "name"),
  3: required string organism (em2q.search = "text"),          // e.g. "Mus musculus"
  4: optional string organ (em2q.search = "text"),             // organ or tissue, e.g. "brain"
  5: optional SampleCondition condition,
  6: optional string condition_detail (em2q.search = "text"),
  7: optional SamplePreparation preparation,
  8: optional string matrix (em2q.search = "text"),            // e.g. "DHB", "9-AA"
  9: optional MatrixApplication matrix_application,
  10: optional double section_thickness_um (em2q.unit = "µm"),
} (em2q.index = "samples")

struct Instrument {
  1: required string id (em2q.identifier = "name"),
  2: required string model (em2q.search = "text"),             // e.g. "Q Exactive HF"
  3: optional string vendor (em2q.search = "text"),
  4: required Analyzer analyzer,
  5: optional IonisationSource source,
  6: optional string serial_number,
} (em2q.index = "instruments")

struct MassRange {
  1: required double min_mz (em2q.unit = "m/z"),
  2: required double max_mz (em2q.unit = "m/z"),
}

struct LaserSettings {
  1: optional double wavelength_nm (em2q.unit = "nm"),
  2: optional double frequency_hz (em2q.unit = "Hz"),
  3: optional double spot_size_um (em2q.unit = "µm"),
  4: optional i32 shots_per_pixel,
  5: optional double power_percent (em2q.unit = "%"),
}

struct SpectrometerSettings {
  1: required Polarity polarity,
  2: required IonisationSource source,
  3: required Analyzer analyzer,
  4: optional double resolving_power,          // m/Δm (FWHM) at resolving_power_at_mz
  5: optional double resolving_power_at_mz (em2q.unit = "m/z"),
  6: required MassRange mass_range,
  7: optional double pixel_size_x_um (em2q.unit = "µm"),
  8: optional double pixel_size_y_um (em2q.unit = "µm"),
  9: optional LaserSettings laser,
  10: optional string instrument_id (em2q.identifier = "name"),
}

struct StoredFile {
  1: required FileRole role,
  2: required string uri,
  3: required i64 size_bytes,
  4: required ChecksumType checksum_type,
  5: required string checksum,
}

// The pixel grid is the bounding box of the acquired coordinates: pixels_* pixels on each axis
// from origin_* (the smallest imzML coordinate there); pixel sizes are the file's, else the setup's.
struct ImzMLFacts {
  1: required ImzMLMode mode,
  2: required i32 pixels_x,
  3: required i32 pixels_y,
  4: optional i32 pixels_z = 1,
  5: required i64 spectra_count,
  6: required MassRange mz_range,
  7: optional string uuid,
  8: optional string mz_dtype,
  9: optional string intensity_dtype,
  10: optional i32 origin_x = 1,
  11: optional i32 origin_y = 1,
  12: optional i32 origin_z = 1,
  13: optional double pixel_size_x_um (em2q.unit = "µm"),
  14: optional double pixel_size_y_um (em2q.unit = "µm"),
}

/**
 * Why a measurement is in its status: written with every transition by
 * em2q_resources/lifecycle.py (the one writer of Measurement.status). `kind` and `action` are
 * that module's vocabularies (kind: uploaded, registered, started, qc_passed, validation, qc,
 * run_failed, killed, launch_failed, stalled; action: none, wait, retry, fix_file,
 * change_parameters).
 */
struct StatusReason {
  1: required string kind,
  2: required string message (em2q.search = "text"),   // one line a technician reads
  3: required string actor,                             // upload, sensor, step, launcher, watcher
  4: required string at (em2q.type = "date"),           // when the transition was made
  5: optional string action,                            // the one thing that helps
  6: optional string error_type,                        // root exception class, e.g. ValueError
  7: optional string error_message (em2q.index = "false"),
  8: optional string asset,                             // the step (asset key) it happened in
  9: optional string partition,                         // measurement or measurement|chunk
  10: optional string run_id,                           // Dagster run (or backfill) id
  11: optional string run_url,
  12: optional string previous_status,
}

struct Measurement {
  1: required string id (em2q.identifier = "name"),
  2: required string title (em2q.search = "text"),
  3: optional string description (em2q.search = "text"),
  4: required string operator (em2q.search = "text"),
  5: optional string project_id (em2q.identifier = "name"),
  6: optional string study_id (em2q.identifier = "name"),
  7: optional Sample sample,
  8: required SpectrometerSettings settings,
  9: required MeasurementStatus status,
  10: optional string status_reason (em2q.search = "text"),
  11: optional string acquired_at (em2q.type = "date"),
  12: required string uploaded_at (em2q.type = "date"),
  13: optional string updated_at (em2q.type = "date"),
  14: optional list<StoredFile> files (em2q.nested = "true"),
  15: optional ImzMLFacts facts,
  16: optional list<string> tags,
  17: optional StatusReason status_detail,    // structured status_reason (lifecycle.py)
  18: optional string uploaded_by,             // the signed-in user who registered it (owner)
} (em2q.index = "measurements")

struct SpectraPartition {
  1: required string id,                       // "<measurement_id>/<chunk_index>of<chunk_count>"
  2: required string measurement_id (em2q.identifier = "name"),
  3: required i32 chunk_index,
  4: required i32 chunk_count,
  5: required i64 first_spectrum,              // inclusive, file order
  6: required i64 stop_spectrum,               // exclusive
  7: required string storage_uri,
  8: optional string created_at (em2q.type = "date"),
} (em2q.index = "spectra_partitions")

/** One value of one processing step; exactly one of number/text/numbers is set. */
struct ParameterValue {
  1: required string step,                     // e.g. "peak_picking"
  2: required string name,                     // e.g. "snr_threshold"
  3: optional double number,
  4: optional string text,
  5: optional list<double> numbers,
  6: optional list<string> texts,              // e.g. study.contrasts
}

struct ParameterSet {
  1: required string id (em2q.identifier = "versioned"),  // "<name>@v<version>"
  2: required string name (em2q.identifier = "name"),
  3: required i32 version,
  4: required string author (em2q.search = "text"),
  5: required string created_at (em2q.type = "date"),
  6: optional string comment (em2q.search = "text"),
  7: required list<ParameterValue> values (em2q.nested = "true"),
  8: required string content_hash,             // SHA-256 of the canonical values
} (em2q.index = "parameter_sets")

struct ResultLocation {
  1: required string name,                     // e.g. "mean_spectrum"
  2: required string uri,
  3: optional string sha256,                   // of the file (inputs: what the run read)
  4: optional i64 size,                        // bytes (a folder: of all its files)
}

struct WorkflowRun {
  1: required string id,
  2: required RunEngine engine,
  3: required string run_id,                   // Dagster run id or Argo workflow name
  4: required string workflow,                 // job or asset key
  5: optional string measurement_id (em2q.identifier = "name"),
  6: optional string partition,
  7: optional string parameter_set_id (em2q.identifier = "versioned"),
  8: optional string parameter_set_hash,
  9: optional string code_version,
  10: optional list<ResultLocation> inputs (em2q.nested = "true"),
  11: optional list<ResultLocation> outputs (em2q.nested = "true"),
  12: required RunStatus status,
  13: optional string started_at (em2q.type = "date"),
  14: optional string finished_at (em2q.type = "date"),
  15: optional double duration_s,
  16: optional string error (em2q.search = "text"),
  17: optional string image_digest,            // the container image, when run in a pod
} (em2q.index = "workflow_runs")

/**
 * A published workflow: a named selection of assets (em2q_assets/workflows.py) that admins
 * have made available to technicians. The code defines what a workflow runs; this document
 * records that it may be started, by whom and since when it was published.
 */
struct Workflow {
  1: required string id (em2q.identifier = "name"),  // the workflow's name, e.g. "standard"
  2: required string name (em2q.identifier = "name"),
  3: optional string description (em2q.search = "text"),
  4: required list<string> assets,             // asset keys of the selection
  5: required string published_by,
  6: required string published_at (em2q.type = "date"),
} (em2q.index = "workflows")

/**
 * One feature of a measurement's peak table (the `peak_table` asset, one parameter set), so the
 * catalog can be searched by m/z (em2q_resources/metadata/peak_index.py); written in bulk when
 * the peak table is materialized, replaced when it is materialized again.
 */
struct PeakFeature {
  1: required string id,                       // "<measurement_id>/<parameter_hash[:16]>/<feature index>"
  2: required string measurement_id (em2q.identifier = "name"),
  3: required string parameter_set_id (em2q.identifier = "versioned"),
  4: required string parameter_hash,
  5: required double mz (em2q.unit = "m/z"),
  6: required double frequency,                // share of spectra holding the feature, 0..1
  7: required double mean_intensity,           // summed_intensity / spectra of the measurement
  8: required double summed_intensity,
  9: required double tic_fraction,             // summed_intensity / total ion current, 0..1
} (em2q.index = "peak_features")

/** One QC number of a QC report. */
struct QcMetric {
  1: required string name,                     // e.g. "median_snr"
  2: required double value,
}

/**
 * The QC numbers of one measurement under one parameter set (the `qc_report` asset), with
 * what a control chart groups and orders them by: the instrument and the acquisition time.
 */
struct QcRecord {
  1: required string id,                       // "<measurement_id>/<parameter_set_id>"
  2: required string measurement_id (em2q.identifier = "name"),
  3: required string parameter_set_id (em2q.identifier = "versioned"),
  4: required string instrument,               // instrument_id, else the analyzer's name
  5: required string acquired_at (em2q.type = "date"),  // else the upload time
  6: required list<QcMetric> metrics (em2q.nested = "true"),
  7: optional string recorded_at (em2q.type = "date"),
} (em2q.index = "qc_records")

/**
 * A region of interest drawn on a measurement's image (em2q_resources/rois.py). `geometry` is
 * GeoJSON text (Polygon or MultiPolygon) in image pixel coordinates: x right, y down, pixel
 * (row, column) covering [column, column+1) x [row, row+1); a pixel is inside when its centre
 * is (em2q_msi/spatial.py). Saved by scientists and admins; changed or deleted by its author
 * or an admin (the rules of parameter sets).
 */
struct Roi {
  1: required string id,                               // "<measurement_id>/<name>"
  2: required string measurement_id (em2q.identifier = "name"),
  3: required string name (em2q.identifier = "name"),
  4: optional string colour,                           // CSS "#rrggbb"
  5: required string geometry (em2q.index = "false"),  // GeoJSON, image pixel coordinates
  6: required string author (em2q.search = "text"),
  7: required string created_at (em2q.type = "date"),
  8: optional string updated_at (em2q.type = "date"),
  9: optional i64 pixel_count,                         // pixels of the grid inside it
  10: optional string description (em2q.search = "text"),
} (em2q.index = "rois")

/**
 * The optical (microscopy, H&E) image of a measurement (em2q_resources/optical.py): the file
 * as uploaded and a PNG for display (downsampled when large, `display_scale` = display pixels
 * per image pixel), both under measurements/<id>/optical/ (em2q_resources/results_layout.py).
 * `transform` is the registration, JSON: {"matrix": 2x3 affine taking image pixel (x, y) to
 * MSI pixel coordinates, "landmarks": [[x, y, msi_x, msi_y]], "residuals_px", "rms_px"};
 * absent until registered. One per measurement; a new upload replaces it (and its transform).
 */
struct OpticalImage {
  1: required string id,                                // the measurement id
  2: required string measurement_id (em2q.identifier = "name"),
  3: required string filename (em2q.search = "text"),
  4: required string format,                            // PNG, JPEG, TIFF (Pillow's name)
  5: required i64 width_px,
  6: required i64 height_px,
  7: required string url (em2q.index = "false"),
  8: required string sha256,
  9: required i64 size_bytes,
  10: required string display_url (em2q.index = "false"),
  11: required double display_scale,
  12: required string uploaded_by,
  13: required string uploaded_at (em2q.type = "date"),
  14: optional string transform (em2q.index = "false"),
  15: optional string registered_by,
  16: optional string registered_at (em2q.type = "date"),
} (em2q.index = "optical_images")

// ---------------------------------------------------------------- the service

/** Who a connection acts as (see login); role is technician, scientist or admin. */
struct Principal {
  1: required string user,
  2: required string role,
}

/** A document's position in Elasticsearch's history, for optimistic concurrency. */
struct DocumentVersion {
  1: required i64 seq_no,
  2: required i64 primary_term,
}

struct StoredMeasurement {
  1: required Measurement measurement,
  2: required DocumentVersion version,
}

/** One filter: `terms` (any of), or a `gte`/`lte` range; field is a dotted schema path. */
struct Filter {
  1: required string field,
  2: optional list<string> terms,
  3: optional string gte,
  4: optional string lte,
}

struct SortField {
  1: required string field,
  2: optional bool descending = false,
}

struct SearchRequest {
  1: optional string text,
  2: optional list<Filter> filters,
  3: optional list<string> facets,
  4: optional list<SortField> sort,
  5: optional i32 page_size = 20,
  6: optional string page_token,               // from SearchResult.next_page_token
}

struct FacetBucket {
  1: required string value,
  2: required i64 count,
}

struct MeasurementPage {
  1: required list<Measurement> hits,
  2: required i64 total,
  3: optional map<string, list<FacetBucket>> facets,
  4: optional string next_page_token,
}

exception NotFound { 1: required string entity, 2: required string id }
exception InvalidDocument { 1: required string field, 2: required string message }
exception VersionConflict { 1: required string id, 2: required string message }
exception StoreUnavailable { 1: required string message }
/** The caller is not signed in (login first) or their role may not do this; the message says
    who, which role, what was refused and which role would be needed. */
exception Forbidden { 1: string message }

/**
 * Authentication: with EM2Q_AUTH_MODE=token (or header) a connection first calls login with
 * its API token and then acts as that user for as long as it stays open; every other call
 * before that throws Forbidden. With the default local mode a connection acts as the local
 * user without login. Roles: technicians read, create and update the measurements they
 * registered; scientists also save parameter sets (the author is always the signed-in user:
 * the `author` argument is ignored); admins also delete, publish workflows, record workflow
 * runs and change status, files and facts (em2q_resources/policy.py). File URIs must lie in
 * the platform's storage under measurements/<id>/.
 */
service MetadataService {
  string ping(),
  Principal login(1: string token) throws (4: Forbidden forbidden),

  Measurement createMeasurement(1: Measurement measurement)
    throws (1: InvalidDocument invalid, 2: VersionConflict conflict, 3: StoreUnavailable unavailable,
            4: Forbidden forbidden),
  StoredMeasurement getMeasurement(1: string id)
    throws (1: NotFound not_found, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  StoredMeasurement updateMeasurement(1: Measurement measurement, 2: DocumentVersion expected)
    throws (1: InvalidDocument invalid, 2: VersionConflict conflict, 3: StoreUnavailable unavailable,
            4: Forbidden forbidden),
  void deleteMeasurement(1: string id)
    throws (1: NotFound not_found, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  MeasurementPage searchMeasurements(1: SearchRequest request)
    throws (1: InvalidDocument invalid, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),

  ParameterSet saveParameterSet(1: string name, 2: list<ParameterValue> values,
                                3: string author, 4: string comment)
    throws (1: InvalidDocument invalid, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  ParameterSet getParameterSet(1: string id)
    throws (1: NotFound not_found, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  list<ParameterSet> listParameterSets(1: string name)
    throws (3: StoreUnavailable unavailable, 4: Forbidden forbidden),

  WorkflowRun recordWorkflowRun(1: WorkflowRun run)
    throws (1: InvalidDocument invalid, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  list<WorkflowRun> workflowRunsOf(1: string measurement_id)
    throws (3: StoreUnavailable unavailable, 4: Forbidden forbidden),

  Workflow publishWorkflow(1: Workflow workflow)
    throws (1: InvalidDocument invalid, 3: StoreUnavailable unavailable, 4: Forbidden forbidden),
  list<Workflow> listWorkflows()
    throws (3: StoreUnavailable unavailable, 4: Forbidden forbidden),
}
