"""`python -m dpg …` = the `dpg` command; what torchrun runs: `torchrun --nproc_per_node N -m dpg train CONFIG`."""

from dpg.cli import main

raise SystemExit(main())
