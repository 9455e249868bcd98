"""`python -m sknet ...` (e.g. under torchrun: `torchrun --nproc_per_node=8 -m sknet train ...`)."""

import sys

from sknet_launch import main  # the same first instructions as the `sknet` command

sys.exit(main())
