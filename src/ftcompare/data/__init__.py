"""The data stage: fetch a hub dataset (or model) where there is network, prepare the
splits once (checked, carved, cached by their settings), tokenize them once into Arrow
files, and batch them. `jobs` holds the stage's rule jobs.
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "batching": (
        "GROUP_WINDOW_BATCHES IGNORED_LABEL TokenizedData TokenizedSplit TrainBatching bucket_rows collate "
        "epoch_batches eval_batches load_tokenized longest_first padded_width"
    ),
    "fetch": "FETCHED_FROM fetch_dataset fetch_model",
    "jobs": "fetch_data_job fetch_model_job fetched_splits prepare_data_job tokenize_job",
    "splits": (
        "ACLIMDB_CLASSES CSV_ENCODING DataError ONE_TEXT_COLUMN PREPARED_METADATA PreparedData SPLITS check_labels "
        "check_size check_texts check_utf8 describe_source hub_splits label_values prepare prepared_label_names "
        "prepared_text_columns read_csv roles settings_used text_columns_or_default unread_keys write_prepared"
    ),
    "tokenization": "encode encode_pairs load_tokenizer tokenize_splits uses_segment_ids",
    "tokenized": "check_tokenized_length tokenization_meta tokenized_text_columns",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
