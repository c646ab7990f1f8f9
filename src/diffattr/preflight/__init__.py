"""Checks run once before any job: everything the config alone decides when the workflow is parsed
(config_files, config_checks), and the files and GPU the jobs to run need just before the first job
starts (inputs; never in dry runs, which need no data)."""

from diffattr.preflight.config_checks import (
    DATASETS,
    DIGITS_CLASS_SIZES,
    IMAGE_SIZES,
    check_config,
    check_planted,
    per_class,
    unet_parameters,
)
from diffattr.preflight.config_files import (
    DRY_RUN_NOTICE,
    check_overlays,
    is_dry_run,
    load_yaml_file,
    main,
    replace_sections,
    workspace_config,
)
from diffattr.preflight.inputs import (
    INCEPTION_FILE,
    SNAPSHOT_PARTS,
    check_machine,
    check_writable,
    model_weights,
    needed_files,
)

__all__ = [
    "DATASETS",
    "DIGITS_CLASS_SIZES",
    "DRY_RUN_NOTICE",
    "IMAGE_SIZES",
    "INCEPTION_FILE",
    "SNAPSHOT_PARTS",
    "check_config",
    "check_machine",
    "check_overlays",
    "check_planted",
    "check_writable",
    "is_dry_run",
    "load_yaml_file",
    "main",
    "model_weights",
    "needed_files",
    "per_class",
    "replace_sections",
    "unet_parameters",
    "workspace_config",
]
