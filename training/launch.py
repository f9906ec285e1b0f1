"""The script ``paddle.distributed.launch`` runs on every GPU: ``kiebeam train`` with the script's flags.

    PYTHONPATH=. python -m paddle.distributed.launch --gpus 0,1 training/launch.py --preset ser_vi_layoutxlm ...

It lives apart from :mod:`training.train` so that the loop does not import the command line that imports it.
"""

from __future__ import annotations

import sys

from training.cli import main

if __name__ == "__main__":  # paddle.distributed.launch takes a script path, not a module
    sys.exit(main(["train", *sys.argv[1:]]))
