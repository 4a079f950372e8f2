import sys

from eigenloop_user_sim.server import main

sys.exit(main())
