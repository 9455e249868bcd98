"""`python -m sknet ...` (e.g. under torchrun: `torchrun --nproc_per_node=8 -m sknet train ...`)."""

import sys

from sknet.cli.main import main

sys.exit(main())
