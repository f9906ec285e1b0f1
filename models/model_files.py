"""File names inside KIE model folders (checkpoints and exports), in a module light enough for workers."""

STATE_FILE = "model_state.pdparams"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
