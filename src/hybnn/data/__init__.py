"""Data: IDX reader, named sources, tasks, deterministic splits and input preparation."""

from hybnn.data.dataset import Dataset
from hybnn.data.idx import read_idx
from hybnn.data.prep import PREPS, prepare
from hybnn.data.sources import BUILTIN_SOURCES, load_idx_pair, load_npz, load_source
from hybnn.data.splits import stratified_split, train_test
from hybnn.data.tasks import PAPER_TASKS, select_task, task_classes

__all__ = [
    "BUILTIN_SOURCES",
    "PAPER_TASKS",
    "PREPS",
    "Dataset",
    "load_idx_pair",
    "load_npz",
    "load_source",
    "prepare",
    "read_idx",
    "select_task",
    "stratified_split",
    "task_classes",
    "train_test",
]
