import sys

from eigenloop_generator.server import main

sys.exit(main())
