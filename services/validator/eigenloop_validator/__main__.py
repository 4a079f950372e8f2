import sys

from eigenloop_validator.server import main

sys.exit(main())
