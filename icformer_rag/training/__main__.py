"""`python -m icformer_rag.training [--field value ...]`: train a compressor, the same as `icformer-rag train`
(the options are defined in :mod:`icformer_rag.cli.train`)."""

import sys

from icformer_rag.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
