import sys

from crossflow.cli import main

sys.exit(main())
