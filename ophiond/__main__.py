"""``python -m ophiond`` runs the daemon in the foreground."""

from ophiond.daemon import main

raise SystemExit(main())
