"""Datasets for siamface: image decoding, identity folders, splits, verification pairs, one-shot tasks.

Everything here works on paths and integer index arrays; ImageStore decodes a dataset once into memory.
"""

from siamface.data.folders import (
    IMAGE_EXTS,
    ImageRecord,
    data_root,
    filter_identities,
    group_array,
    identities,
    label_array,
    omniglot_drawer,
    scan_folder,
)
from siamface.data.images import decode_image, image_from_array, load_image
from siamface.data.oneshot import (
    OMNIGLOT_RUN_ALPHABETS,
    OMNIGLOT_VAL_ALPHABETS,
    OneShotTask,
    make_oneshot_tasks,
    read_omniglot_runs,
)
from siamface.data.pairs import (
    Pair,
    check_exists,
    check_pairable,
    pair_identities,
    read_csv_pairs,
    read_lfw_pairs,
    read_lfw_people,
    read_lfw_people_folds,
    sample_pairs,
)
from siamface.data.splits import Split, assert_disjoint, split_identities
from siamface.data.store import ImageStore

__all__ = [
    "IMAGE_EXTS",
    "OMNIGLOT_RUN_ALPHABETS",
    "OMNIGLOT_VAL_ALPHABETS",
    "ImageRecord",
    "ImageStore",
    "data_root",
    "OneShotTask",
    "Pair",
    "Split",
    "assert_disjoint",
    "check_exists",
    "check_pairable",
    "filter_identities",
    "group_array",
    "identities",
    "image_from_array",
    "label_array",
    "decode_image",
    "load_image",
    "make_oneshot_tasks",
    "omniglot_drawer",
    "pair_identities",
    "read_csv_pairs",
    "read_lfw_pairs",
    "read_lfw_people",
    "read_lfw_people_folds",
    "read_omniglot_runs",
    "sample_pairs",
    "scan_folder",
    "split_identities",
]
