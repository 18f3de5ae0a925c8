import sys

from minicp.cli import main

sys.exit(main())
