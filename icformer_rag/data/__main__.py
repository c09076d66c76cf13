"""`python -m icformer_rag.data build|distill|counterfactual|sources ...`: the same as `icformer-rag data ...`
(the commands are defined in :mod:`icformer_rag.cli.data`)."""

import sys

from icformer_rag.cli import main

sys.exit(main(["data", *sys.argv[1:]]))
