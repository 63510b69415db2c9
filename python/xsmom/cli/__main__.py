import sys

from xsmom.cli import main

sys.exit(main())
