import sys

from eigenloop_toolenv.server import main

sys.exit(main())
