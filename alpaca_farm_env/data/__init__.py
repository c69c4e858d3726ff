"""AlpacaFarm data: the evaluation set with Davinci003 references, instruction splits, preferences, model outputs."""
from .loader import (
    DATA_DIR_ENV,
    EVAL_DATASET_COUNTS,
    OFFLINE_SUBSTITUTES,
    PREFERENCE_SETS,
    REFERENCES,
    SPLITS,
    DataFormatError,
    DataNotFoundError,
    describe,
    list_annotated_models,
    load_annotations_file,
    load_eval_set,
    load_gpt4_annotations,
    load_model_outputs,
    load_preference,
    load_prompts,
    load_split,
    parse_preference,
    read_records,
    resolve_data_dir,
)
from .prompts import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, format_prompt
from .rows import EVAL_SPLIT, SPLIT_CHOICES, load_rows

__all__ = [
    "DATA_DIR_ENV", "EVAL_DATASET_COUNTS", "OFFLINE_SUBSTITUTES", "PREFERENCE_SETS", "REFERENCES", "SPLITS",
    "DataFormatError", "DataNotFoundError", "describe", "list_annotated_models", "load_annotations_file",
    "load_eval_set", "load_gpt4_annotations", "load_model_outputs", "load_preference", "load_prompts", "load_split",
    "parse_preference", "read_records", "resolve_data_dir", "PROMPT_NO_INPUT", "PROMPT_WITH_INPUT", "format_prompt",
    "EVAL_SPLIT", "SPLIT_CHOICES", "load_rows",
]
