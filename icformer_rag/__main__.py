"""`python -m icformer_rag ...` runs the `icformer-rag` command line."""

import sys

from .cli import main

sys.exit(main())
