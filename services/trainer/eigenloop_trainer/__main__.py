"""The trainer service: runs training stages (SFT, user-model SFT, GRPO) submitted over gRPC."""

import sys

from eigenloop_trainer.server import main

sys.exit(main())
