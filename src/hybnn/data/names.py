"""Names the data layer accepts, importable without numpy (the CLI's flags use them)."""

PAPER_TASKS = ("0v1", "2v3", "4v5", "6v7", "8v9")  # the HyBNN paper's five pair tasks
PREPS = ("unit", "centered")  # input preparations, see hybnn.data.prep
SPLITS = ("train", "test", "all")
DEFAULT_SOURCE = "mnist-5k"
ARRAYS_SOURCE = "arrays"  # the source an artifact records when trained on in-memory arrays
CIFAR10_PREFIX = "cifar10:"  # --data cifar10:DIR: binary-version files (data.cifar)
FOLDER_PREFIX = "folder:"  # --data folder:DIR: a subfolder of images per class (data.folder)
