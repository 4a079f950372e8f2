import sys

from eigenloop_inference.server import main

sys.exit(main())
